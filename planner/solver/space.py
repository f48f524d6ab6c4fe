"""The lazy search space: configurations of every workload, modelled on demand and cached.

Building a configuration's step-cost tables and modelling its load is the expensive part of a solve, so a
configuration is evaluated only when a query needs it. The queries go best-first over lower bounds
(``group_best``, ``evaluate_level``, ``settle``): a group of configurations is settled once its best evaluated
candidate beats the bound of every unevaluated one.

A configuration's bound starts at one replica (``Config.lb_gpus``). Before it is modelled it is raised by its
capacity (``replica_bound``: the fewest replicas whose share of a Poisson rate stays within the load ceiling of
its saturation throughput, read off the step-cost curves without a load model run), so a configuration that
cannot beat the best found so far on capacity alone is never modelled.

The simulator's rejections live here too (``reject``): a rejected deployment leaves the space, and its
configuration comes back with more replicas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any, TypeVar

from planner.catalog.loader import load_calibration, load_engine, load_precisions
from planner.core.errors import PlannerError
from planner.core.units import GIB
from planner.load.analytic import LoadPrediction, build_step_cost, predict
from planner.load.analytic.api_queue import ApiQueue
from planner.load.analytic.curves import curves, slots
from planner.load.slo_check import meets, observed
from planner.perf.hostcpu import engine_vcpus, offered_vcpus
from planner.perf.memory import MemoryBreakdown, memory_breakdown
from planner.perf.stepcost import StepCost
from planner.solver.candidate import Candidate, Screening, SimCheck, describe, prune_key
from planner.solver.configs import Config, configs
from planner.solver.frontend import FrontEnd, decide
from planner.solver.replicas import fewest, replicas_for
from planner.solver.request import SEQ_CHOICES, SolveRequest, offered, replica_limit
from planner.spec.config import ResolvedConfig, resolve
from planner.spec.shape import RequestShape

K = TypeVar("K")
Check = Callable[[Candidate], SimCheck]
"""A candidate -> the simulator's check of one of its replicas."""


class Space:
    """Configurations of every workload, evaluated on demand and cached (step costs shared between
    workloads serving the same model with the same engine settings)."""

    def __init__(self, req: SolveRequest, screens: dict[str, Screening], minimal: bool = False,
                 step_costs: dict[tuple[Hashable, ...], StepCost] | None = None,
                 calibrations: dict[str, Any] | None = None) -> None:
        self.req = req
        self.screens = screens
        self.minimal = minimal
        """Keep, per configuration, only its fewest-replica candidates (all the cost and GPU objectives use);
        the replica search of each max_num_seqs choice is then capped at the best count found so far."""
        self.engine = load_engine()
        self.precisions = load_precisions()
        self.configs: dict[str, list[Config]] = {}
        n = 0
        for w in req.workloads:
            self.configs[w.name] = configs(req, w, screens[w.name], n)
            n += len(self.configs[w.name])
        self.workloads = {w.name: w for w in req.workloads}
        self._cands: dict[int, list[Candidate]] = {}
        self._costs: dict[tuple[Hashable, ...], StepCost] = {} if step_costs is None else step_costs
        """Step costs by config key; a caller that builds several spaces over the same configurations (the epd
        search, one per SLO budget) passes one dict to all."""
        self._cal: dict[str, Any] = {} if calibrations is None else calibrations
        self.rejected: set[tuple[Any, ...]] = set()
        self._extra: dict[int, list[Candidate]] = {}
        self._replicas_lb: dict[int, int] = {}
        """Per configuration, the capacity bound on its replicas (``replica_bound``), once computed."""
        self._sized: dict[tuple[int, int], tuple[ResolvedConfig, MemoryBreakdown]] = {}

    # -- evaluation

    def step_cost(self, cfg: ResolvedConfig) -> StepCost:
        """``StepCost`` of a config, shared by the configs that differ only in max_num_seqs: its tables span the
        token budget, which ``resolve`` keeps >= max_num_seqs, and not on the API servers. The calibration is the
        GPU's (in the key)."""
        key = cfg.cache_key(ignore=("max_num_seqs", "api_server_count"))
        hit = self._costs.get(key)
        if hit is None:
            if cfg.gpu.name not in self._cal:
                self._cal[cfg.gpu.name] = load_calibration(cfg.gpu.name)
            hit = build_step_cost(cfg, self._cal[cfg.gpu.name])
            self._costs[key] = hit
        return hit

    def sized(self, c: Config, max_num_seqs: int) -> tuple[ResolvedConfig, MemoryBreakdown]:
        """``c`` resolved at ``max_num_seqs``, and its memory."""
        key = (c.index, max_num_seqs)
        hit = self._sized.get(key)
        if hit is None:
            cfg = resolve(replace(c.base, max_num_seqs=max_num_seqs), self.engine)
            hit = self._sized[key] = (cfg, memory_breakdown(cfg, self.engine, self.precisions))
        return hit

    def evaluated(self, c: Config) -> bool:
        return c.index in self._cands

    # -- lower bounds

    def lb_gpus(self, c: Config) -> float:
        """No candidate of ``c`` uses fewer GPUs: ``tp * pp`` times its replica bound (1 until refined)."""
        return float(c.lb_gpus * self._replicas_lb.get(c.index, 1))

    def lb_cost(self, c: Config) -> float:
        return self.lb_gpus(c) * c.price

    def refine(self, c: Config) -> bool:
        """Raise ``c``'s bound to its capacity bound (``replica_bound``); False when it was already refined."""
        if c.index in self._replicas_lb:
            return False
        self._replicas_lb[c.index] = replica_bound(self, c)
        return True

    def candidates(self, c: Config) -> list[Candidate]:
        """Candidates of one configuration, evaluating it first if needed; rejected ones left out."""
        if c.index not in self._cands:
            self._cands[c.index] = self._evaluate(c)
        out = self._cands[c.index] + self._extra.get(c.index, [])
        if not self.rejected:
            return out
        return [k for k in out if k.ident not in self.rejected]

    def all_candidates(self, workload: str) -> list[Candidate]:
        return [k for c in self.configs[workload] for k in self.candidates(c)]

    def _evaluate(self, c: Config) -> list[Candidate]:
        screen = self.screens[c.workload.name]
        screen.evaluated += 1
        try:
            return screen_config(self, c, screen)
        except PlannerError as exc:
            screen.unsupported.append(f"{describe(c.base)}: {exc}")
            return []

    def front_end(self, cfg: ResolvedConfig, shape: RequestShape) -> FrontEnd:
        """The API-server side of ``cfg`` serving ``shape`` (``solver.frontend``)."""
        return FrontEnd.of(self.step_cost(cfg).cal, self.engine.host, cfg, shape)

    # -- the simulator's rejections

    def reject(self, cand: Candidate, check: Check | None = None) -> None:
        """Leave ``cand`` out from now on, and with it the same configuration and replica count at fewer slots
        (``max_num_seqs``: fewer can only queue more), or at any slot count when its simulation never filled its
        slots. The configuration comes back with more replicas: with
        ``check``, the fewest the simulator accepts (``replicas.fewest`` from one more), already checked;
        without, one more, to be checked when chosen."""
        self.rejected.add(cand.ident)
        home = self.config_of(cand)
        seqs = cand.cfg.max_num_seqs
        # More slots change nothing if the simulation never filled them.
        unbound = check is not None and check(cand).peak_in_system < seqs
        for k in self._cands.get(home.index, []) + self._extra.get(home.index, []):
            if k.replicas == cand.replicas and (k.cfg.max_num_seqs <= seqs or unbound):
                self.rejected.add(k.ident)
        w = self.workloads[cand.workload]
        limit = replica_limit(w, self.req.max_replicas)
        if w.arrival == "single" or cand.replicas + 1 > limit:
            return
        more = self._more_replicas(cand, limit, check)
        if more is not None and more.ident not in self.rejected:
            self._extra.setdefault(home.index, []).append(more)

    def config_of(self, cand: Candidate) -> Config:
        """The configuration a candidate belongs to."""
        c = cand.cfg
        return next(x for x in self.configs[cand.workload]
                    if x.gpu == c.gpu.name and x.base.precision == c.precision
                    and x.base.kv_cache_dtype == c.kv_cache_dtype and x.base.tp == c.tp and x.base.pp == c.pp)

    def _more_replicas(self, cand: Candidate, limit: int, check: Check | None) -> Candidate | None:
        """``cand``'s deployment with more replicas: one more (``check`` None), else the fewest the simulator
        accepts up to ``limit`` (None: not even ``limit``)."""
        cost = self.step_cost(cand.cfg)
        kind, total = offered(self.workloads[cand.workload])
        fe = self.front_end(cand.cfg, cand.shape)
        slos = self.req.slos_on(cand.workload, cand.cfg.gpu.name)

        def at(r: int) -> Candidate:
            n, pred = decide(cost, cand.cfg, cand.shape, fe, kind, total / r if kind == "poisson" else None,
                             math.ceil(total / r) if kind == "closed" else None, cand.memory.kv_capacity_tokens,
                             slos, self.req.max_load, self.req.frontend_queue)
            return replace(cand, cfg=replace(cand.cfg, api_server_count=n), replicas=r, prediction=pred,
                           simulated=None)

        if check is None:
            return at(cand.replicas + 1)

        def accepted(r: int) -> Candidate | None:
            k = at(r)
            sim = check(k)
            return replace(k, simulated=sim) if sim.meets else None

        # Steps of 2, 4, 8, ...: a rejection usually needs one or two replicas more, rarely dozens.
        found = fewest(accepted, cand.replicas, cand.replicas + 1, limit, step=2)
        return None if found is None else found[1]

    # -- best-first queries over lower bounds

    def group_best(self, group: list[Config], key: Callable[[Candidate], K],
                   lb: Callable[[Config], float]) -> tuple[Candidate | None, float | None]:
        """Best candidate (by ``key``) among the evaluated configurations and the lowest bound ``lb`` of the
        unevaluated ones (None when all are evaluated)."""
        best: Candidate | None = None
        low: float | None = None
        for c in group:
            if self.evaluated(c):
                for k in self.candidates(c):
                    if best is None or key(k) < key(best):  # type: ignore[operator]
                        best = k
            else:
                b = lb(c)
                low = b if low is None else min(low, b)
        return best, low

    def evaluate_level(self, group: list[Config], lb: Callable[[Config], float], level: float) -> None:
        """Evaluate every unevaluated configuration whose bound is at most ``level``; one whose refined bound
        (``refine``) rises above the level is left for a later query."""
        for c in group:
            if not self.evaluated(c) and lb(c) <= level + 1e-9:
                if self.refine(c) and lb(c) > level + 1e-9:
                    continue
                self.candidates(c)

    def settle(self, group: list[Config], key: Callable[[Candidate], K], lb: Callable[[Config], float],
               first: Callable[[Candidate], float]) -> Candidate | None:
        """The best candidate of ``group`` by ``key`` (whose first element ``first`` is bounded below by ``lb``),
        evaluating configurations in order of their bound until no unevaluated one could match it."""
        while True:
            best, low = self.group_best(group, key, lb)
            if low is None or (best is not None and first(best) < low - 1e-9):
                return best
            self.evaluate_level(group, lb, low)

    def cheapest(self, workload: str) -> Candidate | None:
        """The lowest-cost candidate of a workload on any GPU type (None: it has none at all)."""
        return self.settle(self.configs[workload], lambda k: (k.cost_per_hour, k.gpus, prune_key(k)),
                           self.lb_cost, lambda k: k.cost_per_hour)


def replica_bound(space: Space, c: Config) -> int:
    """The fewest replicas any candidate of ``c`` can have, from capacity alone: under Poisson arrivals the replica
    search (``replicas_for``) accepts r replicas only when rate / r is within ``max_load`` of the replica's
    saturation throughput, which the analytic model takes as the smaller of the step-cost curves' lambda_max and
    the API servers' capacity (``predict``'s ``max_requests_per_s``). The largest such throughput over the
    ``max_num_seqs`` choices that fit (the one with the most ``slots``), with the most API servers the replica's
    CPUs hold, bounds every choice.
    1 for closed loops and single requests, and when the configuration fails before any load is modelled (it is
    then evaluated, to say why)."""
    w = c.workload
    kind, total = offered(w)
    if w.arrival == "single" or kind == "closed" or total <= 0:
        return 1
    req = space.req
    choices = (req.max_num_seqs,) if req.max_num_seqs is not None else SEQ_CHOICES
    best = 0.0
    try:
        cfg0, mem0 = space.sized(c, SEQ_CHOICES[0])
        if not mem0.fits:  # (then no choice fits: screen_config)
            return 1
        cost = space.step_cost(cfg0)  # shared by the max_num_seqs choices, as in screen_config
        api = math.inf
        if req.frontend_queue:
            servers = max(1, space.front_end(cfg0, c.shape).most)
            api = ApiQueue.of(cost, replace(cfg0, api_server_count=servers), c.shape).max_rate
        fit = [(cfg, mem) for cfg, mem in (space.sized(c, seqs) for seqs in choices) if mem.fits]
        if fit:
            # The curves of the choices differ only in how many slots they reach (``slots``): the most slots, the
            # highest lambda_max.
            cfg, mem = max(fit, key=lambda s: slots(s[0], c.shape, s[1].kv_capacity_tokens))
            best = min(curves(cost, cfg, c.shape, mem.kv_capacity_tokens).max_rate, api)
    except PlannerError:
        return 1
    if best <= 0 or not math.isfinite(total / best):
        return 1
    return max(1, math.ceil(total / (req.max_load * best) - 1e-9))


def screen_config(space: Space, c: Config, screen: Screening) -> list[Candidate]:
    """All max_num_seqs choices of one (GPU, precision, KV dtype, TP, PP).

    The step-time model does not depend on max_num_seqs, so it is built once;
    nor does a lone request's latency, so a config whose lone request already
    misses an SLO is dropped before any load is modelled. Memory grows with
    max_num_seqs: when the smallest choice does not fit, none does.
    With ``space.minimal`` the choices run from the largest (usually the
    fewest replicas) and each later search stops at the best count so far.
    """
    req, workload, shape = space.req, c.workload, c.shape
    slos = req.slos_on(workload.name, c.gpu)
    cfg0, mem0 = space.sized(c, SEQ_CHOICES[0])
    _note_memory(screen, cfg0, mem0)
    if not mem0.fits:
        return []
    screen.memory_fits += 1
    cost = space.step_cost(cfg0)
    alone = predict(cost, cfg0, shape, "single", None, None, mem0.kv_capacity_tokens)
    for s in slos:
        value = observed(alone, s)
        if s.key not in screen.best or value < screen.best[s.key][0]:
            screen.best[s.key] = (value, describe(cfg0))
    if not meets(alone, slos):
        return []
    fe = space.front_end(cfg0, shape)
    if req.frontend_queue and fe.most == 0:
        host = space.engine.host
        assert host is not None
        need = engine_vcpus(host, cfg0) + fe.vcpus_per_server
        screen.unsupported.append(
            f"{describe(cfg0)}: host CPUs: a replica needs {need:.1f} vCPUs (engine {engine_vcpus(host, cfg0):g} + one "
            f"API server {fe.vcpus_per_server:.1f}) > the {offered_vcpus(cfg0):g} its node offers")
        return []
    out: list[Candidate] = []
    cap = req.max_replicas
    choices = (req.max_num_seqs,) if req.max_num_seqs is not None else SEQ_CHOICES
    for seqs in (reversed(choices) if space.minimal else choices):
        if seqs == SEQ_CHOICES[0]:
            cfg, mem = cfg0, mem0
        else:
            cfg, mem = space.sized(c, seqs)
        if not mem.fits:
            continue

        servers: dict[tuple[str, float | None, int | None], int] = {}

        def cost_pred(arrival: str, rate: float | None, conc: int | None,
                      cost: StepCost = cost, cfg: ResolvedConfig = cfg, mem: MemoryBreakdown = mem,
                      servers: dict[tuple[str, float | None, int | None], int] = servers) -> LoadPrediction:
            n, pred = decide(cost, cfg, shape, fe, arrival, rate, conc, mem.kv_capacity_tokens, slos, req.max_load,
                             req.frontend_queue)
            servers[(arrival, rate, conc)] = n
            return pred

        found = replicas_for(cost_pred, workload, slos, cap, req.max_load, hint=out[-1].replicas if out else None)
        if found is None:
            continue
        replicas, pred = found
        kind, total = offered(workload)
        key = (("single", None, None) if workload.arrival == "single"
               else ("closed", None, math.ceil(total / replicas)) if kind == "closed"
               else ("poisson", total / replicas, None))
        cfg = replace(cfg, api_server_count=servers.get(key, 1))
        out.append(Candidate(workload.name, cfg, shape, replicas, mem, pred))
        if space.minimal:
            cap = min(cap, replicas)
    if space.minimal:
        best = min(k.replicas for k in out) if out else 0
        out = [k for k in out if k.replicas == best]
    out.sort(key=lambda k: k.cfg.max_num_seqs)
    return out


def _note_memory(screen: Screening, cfg: ResolvedConfig, mem: MemoryBreakdown) -> None:
    """Remember the smallest weights and the largest replica seen, for the memory explanation."""
    weights_gib = mem.weights_bytes * cfg.num_gpus / GIB
    if weights_gib < screen.smallest_weights_gib:
        screen.smallest_weights_gib = weights_gib
        screen.smallest_weights_config = cfg.precision
    replica_gib = mem.total_bytes * cfg.num_gpus / GIB
    if replica_gib > screen.largest_replica_gib:
        screen.largest_replica_gib = replica_gib
        screen.largest_replica_desc = f"{cfg.num_gpus} x {mem.total_bytes / GIB:.0f} GiB ({cfg.gpu.name})"
