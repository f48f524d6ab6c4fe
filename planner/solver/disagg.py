"""The ``pd`` topology: a prefill pool and a decode pool, each with its own GPU type, precision, TP and replica
count, the KV cache pulled from one to the other (vLLM's NIXL connector). Searched for the lowest cost that meets
the SLOs, then checked by the coupled-pool simulator (``planner.load.simulator.pools``).

How one pd deployment is predicted (analytic screen, per pool with the same model as an aggregated replica):

* the prefill pool serves the workload with one output token (``predict`` on that shape): its TTFT;
* the decode pool serves requests whose prompt is already computed but for its last token (the shape with
  ``P - 1`` tokens taken as already done, no images), with its KV capacity scaled so the transferred tokens count
  against it: its TPOT, and the TTFT of that one-token step;
* TTFT = prefill TTFT + transfer + decode TTFT + the request's image work again (the decode instance's API server
  processes the whole request), percentile by percentile (a sum of percentiles: conservative);
  e2e = TTFT + (output - 1) x TPOT, likewise.

Transfer: each decode GPU pulls its share of the KV of ``P - 1`` tokens over one GPU's link: NVLink/PCIe/xGMI
(``interconnect``) when both pools are of one GPU type and fit in one node, else the scale-out network
(``network_gb_per_s_per_gpu``; a GPU without a sourced value is not paired across nodes).

Search: pool configurations in order of their lower bound (one replica's GPUs x price); a pair is only evaluated
while its bound is below the best cost so far, starting from the aggregated optimum (a pd plan must be strictly
cheaper to be chosen), so a problem where pd cannot win costs a few comparisons. One workload, Poisson or trace
arrivals, objective ``cost``; anything else is said in the outcome's note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from planner.catalog.loader import load_engine, load_precisions
from planner.catalog.schema import GpuSpec
from planner.core.errors import PlannerError
from planner.core.stats import Percentiles
from planner.load.analytic import LoadPrediction, predict
from planner.load.slo_check import meets
from planner.perf.frontend import shape_frontend_ms
from planner.perf.memory import MemoryBreakdown, kv_bytes_per_token, memory_breakdown
from planner.solver.candidate import Screening, SimCheck, Solution, describe
from planner.solver.configs import Config, configs
from planner.solver.replicas import replicas_for
from planner.solver.request import SEQ_CHOICES, SolveRequest, offered
from planner.spec.config import ResolvedConfig, resolve
from planner.spec.shape import RequestShape
from planner.spec.slo import Slo

TOPOLOGIES = ("aggregated", "pd", "epd")
DEFAULT_TOPOLOGIES = ("aggregated",)
"""``solve`` searches aggregated deployments only unless asked (``--topologies aggregated,pd``): the pd model is
new and checked against the simulator only, not against a real disaggregated server (docs/disaggregation.md)."""
VERIFY_ROUNDS = 8
"""Times a pd deployment the simulator rejects comes back with one more replica in the pool that missed."""
SIM_REQUESTS_CAP = 48000


@dataclass(frozen=True)
class PoolChoice:
    role: str
    cfg: ResolvedConfig
    replicas: int
    memory: MemoryBreakdown
    prediction: LoadPrediction
    """One replica at its share of the load (prefill: TTFT of the one-token request; decode: TPOT)."""

    @property
    def gpus(self) -> int:
        return self.replicas * self.cfg.num_gpus

    @property
    def cost_per_hour(self) -> float:
        return self.gpus * self.cfg.gpu.price.price_usd_per_gpu_hour

    def describe(self) -> str:
        return f"{self.replicas} x ({describe(self.cfg)}, seqs {self.cfg.max_num_seqs})"


@dataclass(frozen=True)
class PdCandidate:
    workload: str
    shape: RequestShape
    prefill: PoolChoice
    decode: PoolChoice
    link: str
    link_gb_per_s: float
    transfer_ms: float
    """Mean KV transfer time of one request."""
    transfer_bytes_per_gpu: float
    """Mean bytes one decode GPU pulls per request."""
    link_load: float
    """Fraction of a decode GPU's link the transfers keep busy."""
    prefill_held_kv_tokens: float
    """KV tokens a prefill replica holds for requests waiting to be pulled (Little's law): its extra memory."""
    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    simulated: SimCheck | None = None

    @property
    def gpus(self) -> int:
        return self.prefill.gpus + self.decode.gpus

    @property
    def cost_per_hour(self) -> float:
        return self.prefill.cost_per_hour + self.decode.cost_per_hour

    def describe(self) -> str:
        return f"prefill {self.prefill.describe()} + decode {self.decode.describe()}"


@dataclass
class PdOutcome:
    best: PdCandidate | None
    note: str
    evaluated: int = 0
    notes: list[str] = field(default_factory=list)
    binding: list[str] = field(default_factory=list)


def _decode_shape(shape: RequestShape) -> RequestShape:
    """A request as the decode engine sees it: its prompt computed but for the last token, no images."""
    def one(s: RequestShape) -> RequestShape:
        P = s.prompt_tokens
        return replace(s, text_tokens=P, visual_tokens=0, encoder_patches=0, encoder_sequences=0, images=0,
                       cached_tokens=max(0, P - 1), input_megapixels=0.0, processed_megapixels=0.0, classes=())
    out = one(shape)
    if shape.classes:
        out = replace(out, classes=tuple((p, one(c)) for p, c in shape.classes))
    return out


def _prefill_shape(shape: RequestShape) -> RequestShape:
    out = replace(shape, output_tokens=1, classes=())
    if shape.classes:
        out = replace(out, classes=tuple((p, replace(c, output_tokens=1)) for p, c in shape.classes))
    return out


def _decode_kv(shape: RequestShape, kv_capacity: int) -> int:
    """The analytic model takes cached tokens as shared blocks; transferred ones are not: scale the capacity so its
    sequences-per-cache count is the true one."""
    P, L = shape.prompt_tokens, max(0, shape.output_tokens - 1)
    ctx = P + 1 + L / 2
    return int(kv_capacity * max(1.0, ctx - max(0, P - 1) + 8) / (ctx + 8))


def link_between(pg: GpuSpec, p_gpus: int, dg: GpuSpec, d_gpus: int) -> tuple[str, float, float] | None:
    """(what, GB/s per GPU, latency ms) of the path a KV cache takes; None when none is known."""
    if pg.name == dg.name and p_gpus + d_gpus <= pg.gpus_per_node:
        return (f"{pg.interconnect.kind} within one node", pg.interconnect.bandwidth_gb_per_s,
                pg.interconnect.latency_us * 1e-3)
    a, b = pg.network_gb_per_s_per_gpu, dg.network_gb_per_s_per_gpu
    if a is None or b is None:
        return None
    return "network between nodes", float(min(a, b)), 0.0


class PdSearch:
    """The pd search of one workload (see the module docstring)."""

    def __init__(self, req: SolveRequest) -> None:
        self.req = req
        self.w = req.workloads[0]
        self.engine = load_engine()
        self.precisions = load_precisions()
        self.kind, self.total = offered(self.w)
        self.screen = Screening()
        # Pools are planned without drafts (the aggregated candidates keep theirs: adding pd to the topologies
        # must never make the answer dearer).
        self.cfgs = [c for c in configs(req, self.w, self.screen) if c.base.pp == 1 and c.base.speculative is None]
        self.shape: RequestShape = self.cfgs[0].shape if self.cfgs else RequestShape(0, 0, 0, 0, 1, 0)
        self._costs: dict[object, object] = {}
        self._decode: dict[int, PoolChoice | None] = {}
        self._prefill: dict[tuple[int, float], PoolChoice | None] = {}
        self.evaluated = 0
        self._ppred: dict[tuple[object, ...], LoadPrediction] = {}

    def step_cost(self, cfg: ResolvedConfig):  # type: ignore[no-untyped-def]
        from planner.catalog.loader import load_calibration
        from planner.load.analytic import build_step_cost

        key = cfg.cache_key(ignore=("max_num_seqs",))
        if key not in self._costs:
            self._costs[key] = build_step_cost(cfg, load_calibration(cfg.gpu.name))
        return self._costs[key]

    # -- pools

    def decode(self, c: Config) -> PoolChoice | None:
        """Fewest decode replicas (over max_num_seqs) meeting the TPOT SLOs within the load ceiling."""
        if c.index in self._decode:
            return self._decode[c.index]
        self.evaluated += 1
        slos = [s for s in self.req.slos_on(self.w.name, c.gpu) if s.metric == "tpot"]
        shape = _decode_shape(c.shape)
        best: PoolChoice | None = None
        try:
            for seqs in reversed(SEQ_CHOICES):
                cfg = resolve(replace(c.base, max_num_seqs=seqs), self.engine)
                mem = memory_breakdown(cfg, self.engine, self.precisions)
                if not mem.fits:
                    continue
                cost = self.step_cost(cfg)
                kv = _decode_kv(c.shape, mem.kv_capacity_tokens)

                def pred(arrival: str, rate: float | None, conc: int | None, cost=cost, cfg=cfg, kv=kv
                         ) -> LoadPrediction:  # type: ignore[no-untyped-def]
                    return predict(cost, cfg, shape, arrival, rate, conc, kv)

                cap = best.replicas - 1 if best is not None else self.req.max_replicas
                found = replicas_for(pred, self.w, slos, cap, self.req.max_load) if cap >= 1 else None
                if found is None:
                    if best is not None:
                        break  # fewer slots did not need fewer replicas: fewer still will not either
                    continue
                best = PoolChoice("decode", cfg, found[0], mem, found[1])
        except PlannerError as exc:
            self.screen.unsupported.append(f"decode {describe(c.base)}: {exc}")
            best = None
        self._decode[c.index] = best
        return best

    def prefill(self, c: Config, ttft_budget: list[Slo]) -> PoolChoice | None:
        """Fewest prefill replicas meeting the TTFT budget left by the transfer and the decoder."""
        key = (c.index, tuple((s.stat, round(s.limit_ms, 3)) for s in ttft_budget))
        if key in self._prefill:
            return self._prefill[key]  # type: ignore[index]
        self.evaluated += 1
        out: PoolChoice | None = None
        if all(s.limit_ms > 0 for s in ttft_budget):
            try:
                shape = _prefill_shape(c.shape)
                cfg0 = resolve(replace(c.base, max_num_seqs=SEQ_CHOICES[-1]), self.engine)
                uncached = max(1, c.shape.prompt_tokens - c.shape.cached_tokens)
                per_step = math.ceil(cfg0.max_num_batched_tokens / uncached)
                seqs = next((s for s in SEQ_CHOICES if s >= per_step), SEQ_CHOICES[-1])
                cfg = resolve(replace(c.base, max_num_seqs=seqs), self.engine)
                mem = memory_breakdown(cfg, self.engine, self.precisions)
                if mem.fits:
                    cost = self.step_cost(cfg)

                    def pred(arrival: str, rate: float | None, conc: int | None) -> LoadPrediction:
                        k = (c.index, arrival, rate, conc)
                        if k not in self._ppred:
                            self._ppred[k] = predict(cost, cfg, shape, arrival, rate, conc, mem.kv_capacity_tokens)
                        return self._ppred[k]

                    found = replicas_for(pred, self.w, ttft_budget, self.req.max_replicas, self.req.max_load)
                    if found is not None:
                        out = PoolChoice("prefill", cfg, found[0], mem, found[1])
            except PlannerError as exc:
                self.screen.unsupported.append(f"prefill {describe(c.base)}: {exc}")
        self._prefill[key] = out  # type: ignore[index]
        return out

    # -- pairs

    def _transfer(self, p: Config | PoolChoice, d: PoolChoice, p_gpus: int) -> tuple[str, float, float, float] | None:
        """(link, GB/s per GPU, mean transfer ms, bytes per decode GPU) of one request's KV."""
        pg = p.cfg.gpu if isinstance(p, PoolChoice) else p.base.gpu
        link = link_between(pg, p_gpus, d.cfg.gpu, d.gpus)
        if link is None:
            return None
        what, gbps, lat_ms = link
        bytes_gpu = max(0, self.shape.prompt_tokens - 1) * kv_bytes_per_token(d.cfg)
        return what, gbps, lat_ms + bytes_gpu / (gbps * 1e9) * 1e3, float(bytes_gpu)

    def _ttft_budget(self, c: Config, d: PoolChoice, transfer_ms: float) -> list[Slo]:
        extra = self._extra_front(c)
        return [replace(s, limit_ms=s.limit_ms - transfer_ms - extra - float(getattr(d.prediction.ttft, s.stat)))
                for s in self.req.slos_on(self.w.name, c.gpu) if s.metric == "ttft"]

    def _extra_front(self, c: Config) -> float:
        cal = self.step_cost(resolve(replace(c.base, max_num_seqs=SEQ_CHOICES[0]), self.engine)).cal  # type: ignore[attr-defined]
        return shape_frontend_ms(cal, c.shape) - shape_frontend_ms(cal, _decode_shape(c.shape))

    def pair(self, pc: Config, d: PoolChoice) -> PdCandidate | None:
        """The cheapest prefill pool of configuration ``pc`` for decode pool ``d``, and the pair's prediction."""
        first = self._transfer(pc, d, pc.lb_gpus)
        if first is None:
            first = self._transfer(pc, d, 10**6)  # across nodes
            if first is None:
                return None
        p = self.prefill(pc, self._ttft_budget(pc, d, first[2]))
        if p is None:
            return None
        t = self._transfer(p, d, p.gpus)
        if t is None:
            return None
        if t[2] > first[2] + 1e-9:  # the pools do not fit in one node: size the prefill for the network
            p = self.prefill(pc, self._ttft_budget(pc, d, t[2]))
            if p is None or (t := self._transfer(p, d, p.gpus)) is None:  # type: ignore[assignment]
                return None
        what, gbps, xfer_ms, bytes_gpu = t
        rate = self.total
        load = rate / d.replicas * bytes_gpu / (gbps * 1e9)
        if load > self.req.max_load:
            return None
        held = rate / p.replicas * xfer_ms * 1e-3 * pc.shape.prompt_tokens
        if held > p.memory.kv_capacity_tokens:
            return None
        extra = self._extra_front(pc)
        L = max(0, pc.shape.output_tokens - 1)

        def add(*ps: Percentiles, const: float = 0.0, scale: tuple[float, ...] = ()) -> Percentiles:
            sc = scale or (1.0,) * len(ps)
            return Percentiles(**{k: const + sum(f * getattr(x, k) for f, x in zip(sc, ps))
                                  for k in ("mean", "p50", "p90", "p95", "p99")})

        ttft = add(p.prediction.ttft, d.prediction.ttft, const=xfer_ms + extra)
        e2e = add(ttft, d.prediction.tpot, scale=(1.0, float(L)))
        cand = PdCandidate(self.w.name, pc.shape, p, d, what, gbps, xfer_ms, bytes_gpu, load, held, ttft,
                           d.prediction.tpot, e2e)
        e2e_slos = [s for s in self.req.slos_on(self.w.name, pc.gpu) if s.metric == "e2e"]
        if e2e_slos and not all(float(getattr(e2e, s.stat)) <= s.limit_ms for s in e2e_slos):
            return None
        if not self._within_budget(cand):
            return None
        return cand

    def _within_budget(self, c: PdCandidate) -> bool:
        b = self.req.budget
        use: dict[str, int] = {}
        for pool in (c.prefill, c.decode):
            use[pool.cfg.gpu.name] = use.get(pool.cfg.gpu.name, 0) + pool.gpus
        for g, n in use.items():
            lim = b.limit(g)
            if lim is None or n > lim:
                return False
        return b.max_usd_per_hour is None or c.cost_per_hour <= b.max_usd_per_hour + 1e-9

    def best(self, upper: float) -> PdCandidate | None:
        """The cheapest pd candidate strictly below ``upper`` USD/h (None: none is)."""
        if not self.cfgs:
            return None
        by_lb = sorted(self.cfgs, key=lambda c: (c.lb_cost, c.index))
        min_lb = by_lb[0].lb_cost
        best: PdCandidate | None = None
        for dc in by_lb:
            if dc.lb_cost + min_lb >= upper - 1e-9:
                break
            d = self.decode(dc)
            if d is None or d.cost_per_hour + min_lb >= upper - 1e-9:
                continue
            for pc in by_lb:
                if d.cost_per_hour + pc.lb_cost >= upper - 1e-9:
                    break
                cand = self.pair(pc, d)
                if cand is not None and cand.cost_per_hour < upper - 1e-9:
                    best, upper = cand, cand.cost_per_hour
        return best


def _simulate(req: SolveRequest, search: PdSearch, c: PdCandidate, seed: int = 0) -> SimCheck:
    """The coupled-pool simulation of the whole pd deployment."""
    from planner.load.run import to_percentiles
    from planner.load.simulator import build_requests
    from planner.load.simulator.pools import Pool, simulate_pd
    from planner.load.slo_check import broken
    from planner.solver.verify import peak_in_system

    w = search.w
    pcost, dcost = search.step_cost(c.prefill.cfg), search.step_cost(c.decode.cfg)
    n = int(min(SIM_REQUESTS_CAP, req.sim_requests * max(1, c.prefill.replicas, c.decode.replicas)))
    reqs = build_requests(c.prefill.cfg, w, pcost, n, seed)  # type: ignore[arg-type]
    kvb = kv_bytes_per_token(c.decode.cfg)
    xfer = np.maximum(reqs.prompt - 1, 0) * kvb / (c.link_gb_per_s * 1e9) * 1e3 + (c.transfer_ms - max(
        0, c.shape.prompt_tokens - 1) * kvb / (c.link_gb_per_s * 1e9) * 1e3)
    arrival = "trace" if w.arrival == "trace" and w.trace_s and not w.rate_per_s else "poisson"
    out = simulate_pd(Pool(pcost, c.prefill.cfg, c.prefill.memory.kv_capacity_tokens, c.prefill.replicas),  # type: ignore[arg-type]
                      Pool(dcost, c.decode.cfg, c.decode.memory.kv_capacity_tokens, c.decode.replicas),  # type: ignore[arg-type]
                      reqs, arrival, search.total if arrival == "poisson" else None,
                      tuple(w.trace_s or ()) if arrival == "trace" else None, seed=seed, transfer_ms=xfer)
    res = out.result
    slos = req.slos_on(w.name, c.prefill.cfg.gpu.name)
    tslos = [s for s in slos if s.metric != "tpot"] + [s for s in req.slos_on(w.name, c.decode.cfg.gpu.name)
                                                        if s.metric == "tpot"]
    return SimCheck(ttft=to_percentiles(res.ttft_ms), tpot=to_percentiles(res.tpot_ms), e2e=to_percentiles(res.e2e_ms),
                    requests=n, seed=seed, saturated=res.saturated, requests_per_s=res.requests_per_s,
                    meets=meets(res, tslos), failed=broken(res, tslos),
                    peak_in_system=peak_in_system(res.arrival_s, res.finish_s), preemptions=res.preemptions)


def _grow(search: PdSearch, c: PdCandidate, sim: SimCheck) -> PdCandidate:
    """One more replica in the pool whose metric the simulation missed (TPOT: decode; otherwise prefill)."""
    if sim.failed.startswith("tpot"):
        d = c.decode
        r = d.replicas + 1
        cost = search.step_cost(d.cfg)
        kv = _decode_kv(c.shape, d.memory.kv_capacity_tokens)
        pred = predict(cost, d.cfg, _decode_shape(c.shape), "poisson", search.total / r, None, kv)  # type: ignore[arg-type]
        return replace(c, decode=replace(d, replicas=r, prediction=pred), simulated=None)
    p = c.prefill
    r = p.replicas + 1
    cost = search.step_cost(p.cfg)
    pred = predict(cost, p.cfg, _prefill_shape(c.shape), "poisson", search.total / r, None,  # type: ignore[arg-type]
                   p.memory.kv_capacity_tokens)
    return replace(c, prefill=replace(p, replicas=r, prediction=pred), simulated=None)


def not_searched(req: SolveRequest, topology: str, simulator: str) -> str | None:
    """Why a disaggregated ``topology`` is not searched for ``req`` (None: it is): one workload, the cost objective
    and open-loop arrivals, what its ``simulator`` serves."""
    if len(req.workloads) != 1:
        return f"{topology} not searched: one workload per solve in this version (a fleet is aggregated)"
    if req.objective != "cost":
        return f"{topology} not searched: objective '{req.objective}' ({topology} is searched for cost only)"
    arrival = req.workloads[0].arrival
    if arrival not in ("poisson", "trace"):
        return (f"{topology} not searched: '{arrival}' arrivals (the {simulator} serves open-loop Poisson or trace "
                f"arrivals only)")
    return None


def search_pd(req: SolveRequest, upper_usd_per_hour: float) -> PdOutcome:
    """The cheapest pd deployment strictly cheaper than ``upper_usd_per_hour`` (the best aggregated plan's cost;
    ``inf`` when there is none), checked by the coupled-pool simulator when ``req.verify``."""
    why = not_searched(req, "pd", "coupled-pool simulator")
    if why is not None:
        return PdOutcome(None, why)
    search = PdSearch(req)
    upper = upper_usd_per_hour
    best = search.best(upper)
    notes: list[str] = []
    if best is None:
        why = ("no pd deployment is cheaper than the aggregated plan" if math.isfinite(upper)
               else "no pd deployment meets the SLOs")
        return PdOutcome(None, why, search.evaluated)
    if req.verify:
        for _ in range(VERIFY_ROUNDS + 1):
            sim = _simulate(req, search, best)
            best = replace(best, simulated=sim)
            if sim.meets:
                break
            notes.append(f"pd {best.describe()} passed the analytic screen but the simulator gives {sim.failed}: "
                         f"one more replica in the pool that missed")
            best = _grow(search, best, sim)
            if best.cost_per_hour >= upper - 1e-9 or not search._within_budget(best):
                return PdOutcome(None, "the simulator rejected the cheapest pd deployment and one with more "
                                       "replicas is no cheaper than the aggregated plan", search.evaluated, notes)
        else:
            return PdOutcome(None, "the simulator rejected every pd deployment tried", search.evaluated, notes)
    return PdOutcome(best, "", search.evaluated, notes, pd_binding(req, best))


def pd_binding(req: SolveRequest, c: PdCandidate) -> list[str]:
    """Which pool binds: the pool whose SLO (or load ceiling) has the least headroom, with numbers."""
    w = req.workloads[0]
    kind, total = offered(w)
    rows: list[tuple[float, str]] = []
    for s in req.slos_on(w.name, c.prefill.cfg.gpu.name):
        if s.metric == "ttft":
            v = float(getattr(c.ttft, s.stat))
            part = float(getattr(c.prefill.prediction.ttft, s.stat))
            rows.append((1 - v / s.limit_ms, f"prefill pool: {s.key} {v:.1f} ms of {s.limit_ms:g} ms (prefill "
                                              f"{part:.1f} ms + KV transfer {c.transfer_ms:.2f} ms over {c.link} at "
                                              f"{c.link_gb_per_s:g} GB/s + decoder's first step and request path)"))
        if s.metric == "e2e":
            v = float(getattr(c.e2e, s.stat))
            rows.append((1 - v / s.limit_ms, f"both pools: {s.key} {v:.1f} ms of {s.limit_ms:g} ms"))
    for s in req.slos_on(w.name, c.decode.cfg.gpu.name):
        if s.metric == "tpot":
            v = float(getattr(c.tpot, s.stat))
            rows.append((1 - v / s.limit_ms, f"decode pool: {s.key} {v:.2f} ms of {s.limit_ms:g} ms"))
    for pool in (c.prefill, c.decode):
        load = total / pool.replicas / pool.prediction.max_requests_per_s
        rows.append((req.max_load - load, f"{pool.role} pool: load {load:.0%} of its saturation "
                                          f"({pool.prediction.max_requests_per_s:.2f} req/s per replica; ceiling "
                                          f"{req.max_load:.0%})"))
    rows.sort(key=lambda r: r[0])
    head, *_ = rows
    return [f"pd: {head[1]} binds ({head[0]:.0%} headroom); {c.prefill.replicas} prefill and {c.decode.replicas} "
            f"decode replica(s)"]


def with_pd(req: SolveRequest, agg: Solution) -> Solution:
    """``agg`` (the aggregated answer) with the pd search's outcome; the answer's topology is pd when a pd
    deployment is cheaper (or the only one, or the only topology asked)."""
    import time

    t0 = time.perf_counter()
    only_pd = "aggregated" not in req.topologies
    feasible = agg.status != "infeasible"
    upper = sum(c.cost_per_hour for c in agg.chosen) if feasible and not only_pd else math.inf
    out = search_pd(req, upper)
    wall = agg.wall_s + time.perf_counter() - t0
    if out.best is None:
        if only_pd:
            return Solution("infeasible", [], [], [], f"pd: {out.note}", "", agg.screening, wall,
                            agg.notes + out.notes, out, "aggregated")
        return replace(agg, wall_s=wall, disagg=out, notes=agg.notes + out.notes)
    status = agg.status if feasible else "feasible"
    return replace(agg, status=status, wall_s=wall, disagg=out, topology="pd",  # type: ignore[arg-type]
                   binding=out.binding, notes=agg.notes + out.notes)
