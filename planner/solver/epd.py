"""The ``epd`` topology: encoder-only vLLM instances (``--mm-encoder-only``) in front of aggregated language-model
(LM) replicas, the embeddings passed through node-local shared memory (ECExampleConnector).

Shape of a deployment: ``replicas`` identical units, each one pod on one node: one LM replica (TP GPUs) and
``encoders`` single-GPU encoder instances of the same GPU type (the connector moves files, so both sides must
share a tmpfs: same node, counted within ``gpus_per_node``), and the routing proxy. vLLM calls 1 encoder per LM
replica ("1e1pd") stable; more per replica is beyond what vLLM calls stable, and the plan says so.

Model, per unit at its share of the load (Poisson at rate / replicas):

* encoders: a multi-server FCFS queue (``ApiQueue``: Erlang C with Allen-Cunneen's (1 + cs2) / 2; its wait
  percentiles from ``frontend.wait_quantile_ms``) whose service is the request's ``StepCost.vision_ms`` on one GPU
  (ViT + projector and the call's host work), at utilisation <= ``max_load``;
* transfer: save + load of each image's embeddings (visual tokens x LM hidden x 2 bytes) from the engine
  catalog's measured tmpfs table (run27);
* LM: the aggregated screen (``space.screen_config``) on the workload with its images already encoded
  (``encoded_share`` 0: no ViT time, the visual tokens still prefilled) and the TTFT/e2e SLOs less the encoder
  path's delay at the same statistic (percentiles summed: conservative).

Search: for each LM configuration in order of its cost bound, the fewest LM replicas meeting the SLOs with the
encoders' unavoidable delay (encode + transfer, no wait) bound the replicas from below; the encoders per replica
are the fewest under the load ceiling and that count + 1 (the wait falls fast), each brought to a fixed point
(the LM replicas for the wait at their own share). Cost = (LM GPUs + encoders) x price. Checked by
``planner.load.simulator.encoder_pool``. One workload, Poisson or trace arrivals, objective ``cost``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from planner.catalog.schema import GpuSpec
from planner.core.errors import PlannerError
from planner.core.stats import Percentiles
from planner.load.analytic.api_queue import ApiQueue
from planner.solver.candidate import Candidate, Screening, SimCheck, Solution, describe
from planner.solver.frontend import wait_quantile_ms
from planner.solver.request import SolveRequest, offered
from planner.spec.config import ResolvedConfig, resolve
from planner.spec.shape import RequestShape

STATS = ("mean", "p50", "p90", "p95", "p99")
VERIFY_ROUNDS = 6
"""Times an epd deployment the simulator rejects comes back with one more unit (LM replica + its encoders)."""
STABLE_ENCODERS_PER_REPLICA = 1
"""vLLM's docs call 1E1PD / 1E1P1D the stable shapes of encoder disaggregation."""
FIXED_POINT_ROUNDS = 8


def encoded_view(shape: RequestShape) -> RequestShape:
    """The request as the LM instance of an epd deployment sees it: images already encoded elsewhere (no ViT time);
    the visual tokens are still prompt tokens it prefills."""
    out = replace(shape, encoded_share=0.0)
    if shape.classes:
        out = replace(out, classes=tuple((p, replace(c, encoded_share=0.0)) for p, c in shape.classes))
    return out


def _quantile(points: list[tuple[float, float]], q: float) -> float:
    """The q-quantile (0..1) of a discrete distribution of (probability, value) points."""
    acc = 0.0
    for p, v in sorted(points, key=lambda t: t[1]):
        acc += p
        if acc >= q - 1e-12:
            return v
    return max(v for _, v in points)


@dataclass(frozen=True)
class EncoderSide:
    """The encoder path of a request: its encoder instance (one GPU) and, over the requests that use it, the
    distribution of (encode ms, transfer ms)."""

    cfg: ResolvedConfig
    share: float
    """Fraction of requests that go through an encoder (they have images not already in the LM's prefix cache)."""
    points: tuple[tuple[float, float, float], ...]
    """(probability among those requests, encode ms, transfer ms)."""

    @property
    def hold_ms(self) -> float:
        return sum(p * e for p, e, _ in self.points)

    @property
    def transfer_ms(self) -> float:
        return sum(p * t for p, _, t in self.points)

    def queue(self, encoders: int) -> ApiQueue:
        m = self.hold_ms
        second = sum(p * e * e for p, e, _ in self.points)
        cs2 = max(0.0, second - m * m) / (m * m) if m > 0 else 0.0
        return ApiQueue(servers=encoders, hold_ms=m, cs2=cs2)

    def load(self, encoders: int, rate_per_s: float) -> float:
        """Fraction of the encoders' time busy at ``rate_per_s`` requests/s (all requests, images or not)."""
        return rate_per_s * self.share * self.hold_ms * 1e-3 / encoders

    def fewest(self, rate_per_s: float, max_load: float) -> int:
        """Fewest encoders at most ``max_load`` busy."""
        return max(1, math.ceil(rate_per_s * self.share * self.hold_ms * 1e-3 / max_load - 1e-9))

    def delay(self, encoders: int | None, rate_per_s: float) -> Percentiles:
        """Wait + encode + transfer of a request, per statistic (a percentile: of the requests that use the
        encoders, wait and the rest summed: conservative). ``encoders`` None: as many as never make one wait."""
        if not self.points or self.share <= 0:
            return Percentiles.constant(0.0)
        rest = [(p, e + t) for p, e, t in self.points]
        q = self.queue(encoders) if encoders is not None else None
        lam = rate_per_s * self.share
        vals: dict[str, float] = {}
        for s in STATS:
            w = wait_quantile_ms(q, lam, s) if q is not None else 0.0
            if s == "mean":
                vals[s] = self.share * (w + sum(p * v for p, v in rest))  # over all requests
            else:
                vals[s] = w + _quantile(rest, float(s[1:]) / 100)
        return Percentiles(**vals)


def encoder_side(cfg: ResolvedConfig, cost: Any, shape: RequestShape) -> EncoderSide:
    """The encoder path of ``shape``'s requests on encoder instance ``cfg`` (``cost``: its ``StepCost``)."""
    from planner.catalog.loader import load_engine
    from planner.perf.ec_transfer import request_transfer_ms

    spec = load_engine().encoder_transfer
    if spec is None:
        raise PlannerError("the engine catalog has no encoder_transfer table: epd cannot be modelled")
    classes = shape.classes or ((1.0, shape),)
    pts: list[tuple[float, float, float]] = []
    for p, c in classes:
        if c.images <= 0 or c.visual_tokens <= 0 or c.encoded_share <= 0:
            continue
        enc = cost.vision_ms(c.images, c.encoder_patches, c.vit_sequences)
        pts.append((p * c.encoded_share, enc, request_transfer_ms(spec, cfg.model, c.visual_tokens, c.images)))
    share = sum(p for p, _, _ in pts)
    return EncoderSide(cfg, share, tuple((p / share, e, t) for p, e, t in pts) if share > 0 else ())


@dataclass(frozen=True)
class EpdCandidate:
    workload: str
    shape: RequestShape
    lm: Candidate
    """The LM replicas (``lm.replicas`` units), predicted on the encoded view with the reduced SLOs."""
    encoders: int
    """Encoder instances per LM replica (each one GPU of the LM's type, on its node)."""
    encoder_cfg: ResolvedConfig
    encode_ms: float
    """Mean encoder service of a request that uses the encoders."""
    transfer_ms: float
    """Mean save + load of such a request's embeddings."""
    encoder_load: float
    """Fraction of each unit's encoders busy."""
    encoder_delay: Percentiles
    """Wait + encode + transfer (per statistic)."""
    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    simulated: SimCheck | None = None

    @property
    def replicas(self) -> int:
        return self.lm.replicas

    @property
    def encoder_gpus(self) -> int:
        return self.replicas * self.encoders

    @property
    def gpus(self) -> int:
        return self.lm.gpus + self.encoder_gpus

    @property
    def cost_per_hour(self) -> float:
        return self.gpus * self.lm.cfg.gpu.price.price_usd_per_gpu_hour

    def describe(self) -> str:
        return (f"{self.replicas} x (LM {describe(self.lm.cfg)}, seqs {self.lm.cfg.max_num_seqs} + {self.encoders} "
                f"encoder GPU(s))")


@dataclass
class EpdOutcome:
    best: EpdCandidate | None
    note: str
    evaluated: int = 0
    notes: list[str] = field(default_factory=list)
    binding: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def _combine(lm: Percentiles, d: Percentiles) -> Percentiles:
    return Percentiles(**{s: float(getattr(lm, s)) + float(getattr(d, s)) for s in STATS})


class EpdSearch:
    """The epd search of one workload (see the module docstring)."""

    def __init__(self, req: SolveRequest) -> None:
        from planner.catalog.loader import load_engine

        self.req = req
        self.w = req.workloads[0]
        self.kind, self.total = offered(self.w)
        self.engine = load_engine()
        self._costs: dict[Any, Any] = {}
        self._cal: dict[str, Any] = {}
        self._spaces: dict[tuple[Any, ...], Any] = {}
        self._lm: dict[tuple[Any, ...], Candidate | None] = {}
        self._enc: dict[tuple[Any, ...], EncoderSide] = {}
        self.shape: RequestShape | None = None
        """The request as an aggregated replica sees it (images encoded there): one per workload, the same for every
        configuration (``solver.configs`` shapes it once)."""
        self.evaluated = 0
        self.notes: list[str] = []

    # -- the LM side through the aggregated screen

    def _space(self, gpu: GpuSpec, delay: Percentiles | None) -> Any:
        from planner.solver.space import Space

        slos = []
        for s in self.req.slos_on(self.w.name, gpu.name):
            cut = float(getattr(delay, s.stat)) if delay is not None and s.metric in ("ttft", "e2e") else 0.0
            slos.append(replace(s, limit_ms=s.limit_ms - cut))
        key = (gpu.name, tuple((s.key, round(s.limit_ms, 3)) for s in slos))
        if key in self._spaces:
            return self._spaces[key]
        if any(s.limit_ms <= 0 for s in slos):
            self._spaces[key] = None
            return None
        sub = replace(self.req, gpus=[gpu], slos=slos, workload_slos={}, uncalibrated_margin=0.0,
                      topologies=("aggregated",), verify=False)
        space = Space(sub, {self.w.name: Screening()}, minimal=True, step_costs=self._costs,
                      calibrations=self._cal)  # step costs shared across SLO budgets
        if self.shape is None and space.configs[self.w.name]:
            self.shape = space.configs[self.w.name][0].shape
        space.configs[self.w.name] = [replace(c, shape=encoded_view(c.shape)) for c in space.configs[self.w.name]]
        self._spaces[key] = space
        return space

    def configs(self, gpu: GpuSpec) -> list[Any]:
        space = self._space(gpu, None)
        return [] if space is None else list(space.configs[self.w.name])

    def lm(self, gpu: GpuSpec, index: int, delay: Percentiles) -> Candidate | None:
        """The fewest-replica LM candidate of configuration ``index`` with the SLOs less ``delay``."""
        space = self._space(gpu, delay)
        if space is None:
            return None
        key = (id(space), index)
        if key not in self._lm:
            self.evaluated += 1
            c = next(x for x in space.configs[self.w.name] if x.index == index)
            cands = space.candidates(c)
            self._lm[key] = min(cands, key=lambda k: (k.cost_per_hour, k.cfg.max_num_seqs)) if cands else None
        return self._lm[key]

    def encoder(self, c: Any) -> EncoderSide:
        """The encoder side of configuration ``c``: one GPU of its type, its precision, no speculation."""
        key = (c.gpu, c.base.precision)
        if key not in self._enc:
            from planner.catalog.loader import load_calibration
            from planner.load.analytic import build_step_cost

            cfg = resolve(replace(c.base, tp=1, pp=1, speculative=None, max_num_seqs=1), self.engine)
            if cfg.gpu.name not in self._cal:
                self._cal[cfg.gpu.name] = load_calibration(cfg.gpu.name)
            cost = build_step_cost(cfg, self._cal[cfg.gpu.name])
            assert self.shape is not None  # set with the configurations
            self._enc[key] = encoder_side(cfg, cost, self.shape)
        return self._enc[key]

    # -- one configuration

    def _unit(self, gpu: GpuSpec, c: Any, enc: EncoderSide, k: int, r: int) -> EpdCandidate | None:
        """Fixed point of (LM replicas, encoder delay) for ``k`` encoders per replica, from ``r`` replicas (a lower
        bound): the LM sized for the delay at its share, until the count holds."""
        prev: Candidate | None = None
        for _ in range(FIXED_POINT_ROUNDS):
            rate = self.total / r
            if enc.load(k, rate) > self.req.max_load:
                r = max(r, math.ceil(self.total * enc.share * enc.hold_ms * 1e-3 / (self.req.max_load * k)))
                rate = self.total / r
            d = enc.delay(k, rate)
            if not all(math.isfinite(float(getattr(d, s))) for s in STATS):
                return None
            cand = self.lm(gpu, c.index, d)
            if cand is None:
                return None
            if cand.replicas <= r:
                # A count below r: the r replicas (prev, sized for a stricter budget; or more replicas than the LM
                # needs, their prediction at its higher share: conservative) meet the SLOs with this delay.
                lm = cand if cand.replicas == r else replace(prev or cand, replicas=r)
                return self._candidate(lm, enc, k, d)
            prev, r = cand, cand.replicas
        return None

    def _candidate(self, lm: Candidate, enc: EncoderSide, k: int, d: Percentiles) -> EpdCandidate:
        pred = lm.prediction
        assert self.shape is not None
        return EpdCandidate(self.w.name, self.shape, lm, k, enc.cfg, enc.hold_ms, enc.transfer_ms,
                            enc.load(k, self.total / lm.replicas), d, _combine(pred.ttft, d), pred.tpot,
                            _combine(pred.e2e, d))

    def config_best(self, gpu: GpuSpec, c: Any) -> EpdCandidate | None:
        room = gpu.gpus_per_node - c.lb_gpus
        if room < 1 or c.base.pp != 1:
            return None
        enc = self.encoder(c)
        if enc.share <= 0:
            return None
        base = self.lm(gpu, c.index, enc.delay(None, self.total))
        if base is None:
            return None
        r0 = base.replicas
        k0 = enc.fewest(self.total / r0, self.req.max_load)
        best: EpdCandidate | None = None
        for k in sorted({min(k0, room), min(k0 + 1, room)}):
            got = self._unit(gpu, c, enc, k, r0)
            if got is not None and (best is None or got.cost_per_hour < best.cost_per_hour - 1e-9):
                best = got
        if best is not None and best.encoders > 1:  # fewer encoders at the replicas found, if the delay allows
            k1 = enc.fewest(self.total / best.replicas, self.req.max_load)
            if k1 < best.encoders:
                got = self._unit(gpu, c, enc, k1, best.replicas)
                if got is not None and got.cost_per_hour < best.cost_per_hour - 1e-9:
                    best = got
        return best

    def within_budget(self, c: EpdCandidate) -> bool:
        b = self.req.budget
        lim = b.limit(c.lm.cfg.gpu.name)
        if lim is None or c.gpus > lim:
            return False
        return b.max_usd_per_hour is None or c.cost_per_hour <= b.max_usd_per_hour + 1e-9

    def best(self) -> EpdCandidate | None:
        """The cheapest epd candidate over every allowed GPU type (configurations in order of their bound: one
        LM replica + one encoder)."""
        todo: list[tuple[float, int, GpuSpec, Any]] = []
        for gpu in self.req.gpus:
            if self.req.budget.limit(gpu.name) is None:
                continue
            for c in self.configs(gpu):
                todo.append(((c.lb_gpus + 1) * c.price, c.index, gpu, c))
        todo.sort(key=lambda t: (t[0], t[1]))
        best: EpdCandidate | None = None
        for lb, _, gpu, c in todo:
            if best is not None and lb >= best.cost_per_hour - 1e-9:
                break
            try:
                got = self.config_best(gpu, c)
            except PlannerError as exc:
                self.notes.append(f"epd {describe(c.base)}: {exc}")
                continue
            if got is not None and self.within_budget(got) and (best is None
                                                                 or got.cost_per_hour < best.cost_per_hour - 1e-9):
                best = got
        return best


def simulate_epd_candidate(req: SolveRequest, c: EpdCandidate, seed: int = 0) -> SimCheck:
    """One unit of ``c`` (LM replica + its encoders) at its share of the load through the epd simulator."""
    from planner.catalog.loader import load_calibration, load_engine
    from planner.load.analytic import build_step_cost
    from planner.load.run import to_percentiles
    from planner.load.simulator import build_requests
    from planner.load.simulator.encoder_pool import simulate_epd
    from planner.load.slo_check import broken, meets
    from planner.perf.ec_transfer import request_transfer_ms

    w = req.workloads[0]
    kind, total = offered(w)
    n = req.sim_requests
    lm_cfg = c.lm.cfg
    lm_cost = build_step_cost(lm_cfg, load_calibration(lm_cfg.gpu.name))
    enc_cost = build_step_cost(c.encoder_cfg, load_calibration(c.encoder_cfg.gpu.name))
    reqs = build_requests(lm_cfg, w, lm_cost, n, seed)
    if not req.frontend_queue:
        reqs = replace(reqs, api_ms=None)
    enc_reqs = build_requests(c.encoder_cfg, w, enc_cost, n, seed)  # the same draws: the encoder's ViT time
    sample = w.sample(n, seed)
    images = np.array([len(i) for i in sample.images])
    spec = load_engine().encoder_transfer
    assert spec is not None
    transfer = np.array([request_transfer_ms(spec, lm_cfg.model, float(v), int(m)) if e > 0 else 0.0
                         for v, m, e in zip(enc_reqs.enc_tokens.tolist(), images.tolist(),
                                            enc_reqs.vision_ms.tolist())])
    if w.arrival == "trace" and w.trace_s and not w.rate_per_s:
        arrival, rate, trace = "trace", None, tuple(w.trace_s[:: c.replicas])
    else:
        arrival, rate, trace = "poisson", total / c.replicas, None
    res = simulate_epd(lm_cost, lm_cfg, reqs, c.lm.memory.kv_capacity_tokens, enc_reqs.vision_ms, transfer,
                       c.encoders, arrival, rate, trace, seed=seed)
    slos = req.slos_on(w.name, lm_cfg.gpu.name)
    sim = SimCheck(ttft=to_percentiles(res.ttft_ms), tpot=to_percentiles(res.tpot_ms), e2e=to_percentiles(res.e2e_ms),
                   requests=n, seed=seed, saturated=res.saturated, requests_per_s=res.lm.requests_per_s, meets=False)
    return replace(sim, meets=meets(sim, slos), failed=broken(sim, slos))


def _grow(c: EpdCandidate, total: float) -> EpdCandidate:
    """One more unit (its prediction kept at the old share: conservative)."""
    r = c.replicas + 1
    return replace(c, lm=replace(c.lm, replicas=r), encoder_load=c.encoder_load * (r - 1) / r, simulated=None)


def search_epd(req: SolveRequest, upper_usd_per_hour: float) -> EpdOutcome:
    """The cheapest epd deployment (whatever its cost; chosen only when cheaper than ``upper_usd_per_hour``),
    checked by the epd simulator when ``req.verify``."""
    import time

    from planner.catalog.engine_support import encoder_only_problem

    t0 = time.perf_counter()
    from planner.solver.disagg import not_searched

    why = not_searched(req, "epd", "epd simulator")
    if why is not None:
        return EpdOutcome(None, why)
    w = req.workloads[0]
    if not w.images and not w.images_per_request_dist:
        return EpdOutcome(None, "epd not searched: the workload has no images (nothing for an encoder pool to do)")
    why = encoder_only_problem(req.model_of(w.name))
    if why is not None:
        return EpdOutcome(None, f"epd not searched: {why}")
    search = EpdSearch(req)
    best = search.best()
    notes = list(search.notes)
    if best is None:
        return EpdOutcome(None, "no epd deployment meets the SLOs (encoders on the LM replica's node)",
                          search.evaluated, notes, wall_s=time.perf_counter() - t0)
    if req.verify:
        for _ in range(VERIFY_ROUNDS + 1):
            sim = simulate_epd_candidate(req, best)
            best = replace(best, simulated=sim)
            if sim.meets:
                break
            notes.append(f"epd {best.describe()} passed the analytic screen but the simulator gives {sim.failed}: "
                         f"one more unit")
            best = _grow(best, search.total)
            if not search.within_budget(best):
                return EpdOutcome(None, "the simulator rejected the cheapest epd deployment and one more unit is "
                                        "over the budget", search.evaluated, notes, wall_s=time.perf_counter() - t0)
        else:
            return EpdOutcome(None, "the simulator rejected every epd deployment tried", search.evaluated, notes,
                              wall_s=time.perf_counter() - t0)
    if best.encoders > STABLE_ENCODERS_PER_REPLICA:
        notes.append(f"epd: {best.encoders} encoders per LM replica is beyond what vLLM calls stable (1E1PD)")
    return EpdOutcome(best, "", search.evaluated, notes, epd_binding(req, best), time.perf_counter() - t0)


def epd_binding(req: SolveRequest, c: EpdCandidate) -> list[str]:
    """What binds: the SLO or load ceiling with the least headroom, with the encoder path's share."""
    w = req.workloads[0]
    rows: list[tuple[float, str]] = []
    for s in req.slos_on(w.name, c.lm.cfg.gpu.name):
        v = float(getattr(getattr(c, s.metric), s.stat))
        part = f" (encoder path {float(getattr(c.encoder_delay, s.stat)):.1f} ms)" if s.metric != "tpot" else ""
        rows.append((1 - v / s.limit_ms, f"{s.key} {v:.1f} ms of {s.limit_ms:g} ms{part}"))
    rows.append((req.max_load - c.encoder_load, f"encoder load {c.encoder_load:.0%} (ceiling {req.max_load:.0%})"))
    rows.sort(key=lambda t: t[0])
    head = rows[0]
    return [f"epd: {head[1]} binds ({head[0]:.0%} headroom); {c.replicas} LM replica(s) with {c.encoders} encoder "
            f"GPU(s) each"]


def with_epd(req: SolveRequest, sol: Solution) -> Solution:
    """``sol`` (aggregated, maybe with pd) with the epd search's outcome; epd is the answer when it is cheaper than
    the answer so far (or the only topology asked)."""
    only = req.topologies == ("epd",)
    feasible = sol.status != "infeasible"
    if sol.topology == "pd" and sol.disagg is not None and sol.disagg.best is not None:
        upper = sol.disagg.best.cost_per_hour
    else:
        upper = sum(c.cost_per_hour for c in sol.chosen) if feasible and not only else math.inf
    out = search_epd(req, upper)
    wall = sol.wall_s + out.wall_s
    if out.best is None:
        if only:
            return Solution("infeasible", [], [], [], f"epd: {out.note}", "", sol.screening, wall,
                            sol.notes + out.notes, sol.disagg, "aggregated", epd=out)
        return replace(sol, wall_s=wall, epd=out, notes=sol.notes + out.notes)
    if out.best.cost_per_hour < upper - 1e-9:
        status = sol.status if feasible else "feasible"
        return replace(sol, status=status, wall_s=wall, epd=out, topology="epd",  # type: ignore[arg-type]
                       binding=out.binding, notes=sol.notes + out.notes)
    return replace(sol, wall_s=wall, epd=out, notes=sol.notes + out.notes)
