"""`vlmplan solve`: the cheapest deployment that meets the SLOs, proven optimal by CP-SAT.

Two stages.

1. **Candidates** (per workload). For every allowed GPU type, weight
   precision, KV-cache dtype, TP x PP and ``max_num_seqs``, the memory model
   says whether one replica fits and the analytic load model (screening) says
   the highest request rate one replica serves within every SLO. The replicas
   needed follow: ``ceil(rate / rate_per_replica)`` (or, for closed-loop
   clients, the fewest replicas whose share of clients meets the SLOs). Within
   one GPU type every GPU costs the same, so for the cost and GPU objectives
   a candidate is dominated by any other of the same type with fewer GPUs;
   only the fewest-GPU candidate per (workload, GPU type) survives (ties:
   lower p95 TTFT). For the latency objective the (GPUs, p95 TTFT) Pareto
   front per type survives.

2. **Assignment** (CP-SAT). Notation: W workloads, C_w candidates of workload
   w, x[w,c] in {0,1} picks candidate c for w; g(c) GPUs of type t(c);
   k(c) cost in milli-USD per hour (the one place floats become integers:
   ``_milli``); I_t the inventory of type t; B the cost cap::

       minimise    sum_{w,c} k(c) x[w,c]         (objective cost; gpus: g(c); latency: p95 TTFT in us)
       subject to  sum_c x[w,c] = 1               for every w
                   sum_{w,c: t(c)=t} g(c) x[w,c] <= I_t   for every GPU type t
                   sum_{w,c} k(c) x[w,c] <= B

   Solved with a fixed seed and one worker, so the same input gives the
   same plan; the status is ``optimal`` when CP-SAT proves it.

**Lazy evaluation (bounds).** Building a configuration's step-cost tables
and modelling its load is the expensive part, so for the cost and GPU
objectives configurations are evaluated only when they can matter. A
configuration (GPU type t, precision, KV dtype, TP x PP) needs at least
``tp * pp`` GPUs (one replica), so a (workload, GPU type) group whose
evaluated configurations already gave a candidate with fewer GPUs than any
unevaluated one is *settled*: its best candidate is exact. Unsettled groups
enter CP-SAT as one optimistic option (the lower bound: ``tp * pp`` GPUs of
the cheapest unevaluated level), a relaxation of the true problem. When the
relaxed optimum uses only settled groups it is feasible for the true
problem, hence optimal; otherwise the optimistic groups it picked are
evaluated one level further and CP-SAT runs again. The best alternatives, the
cheapest plan per workload and the infeasibility explanation are found the
same way (best-first over lower bounds). Every query needs only the
fewest-replica candidates of a configuration, so its max_num_seqs choices are
searched from the largest and each replica search is capped at the best count
so far. The result equals full enumeration
(``candidates_for`` + ``prune`` + ``assign``; ties between equal-GPU
candidates of one type break on p95 TTFT in both).

**Simulator check** (``SolveRequest.verify``). The chosen deployments are
re-run through the discrete-event simulator (``planner.load.simulator``) at
their per-replica share of the load. One whose simulated percentiles break
an SLO is rejected (that configuration may return with one replica more)
and CP-SAT re-solves, for at most ``verify_rounds`` rounds.

When no plan exists, the explanation names the binding constraint with
numbers and the nearest relaxation (``Infeasibility``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_precisions
from planner.catalog.schema import GpuSpec, KvCacheDtype, ModelSpec, Precision
from planner.catalog.vision_tokens import image_tokens
from planner.core.errors import PlannerError, RequestError
from planner.core.stats import Percentiles
from planner.load.analytic import MAX_LOAD, LoadPrediction, build_step_cost, meets_slos, predict
from planner.perf.memory import MemoryBreakdown, memory_breakdown
from planner.spec.config import ServingConfig, resolve
from planner.spec.shape import RequestShape, request_shape
from planner.spec.slo import Budget, Slo
from planner.spec.workload import Workload

if TYPE_CHECKING:
    from planner.load.simulator import SimResult

Objective = Literal["cost", "gpus", "latency"]
TP_CHOICES = (1, 2, 4, 8)
SEQ_CHOICES = (8, 16, 32, 64, 128, 256)
MAX_REPLICAS = 256
SIM_REQUESTS = 12000
"""Requests the final simulator check runs per replica: at 80% load 2,000 read the TTFT p95 9% low with a 7.4%
spread between seeds (Qwen2.5-VL-7B, H100); 12,000 are unbiased within 1% and spread 1.7%."""
SIM_QUICK_REQUESTS = 3000
SIM_QUICK_MARGIN = 0.75
"""The check first runs ``SIM_QUICK_REQUESTS``; when every SLO then sits below ``SIM_QUICK_MARGIN`` of its limit
that settles it, else the full run decides. At 80% load 3,000 requests read the TTFT p95 7.7% low with a 5.3%
spread (8 seeds; lowest -15%; TPOT p95 -3.2%, spread 8.1%), so a reading under 0.75 x the limit is under it
in truth by more than two spreads (``bench_load.py``, run length)."""
VERIFY_ROUNDS = 20
"""Rounds of simulator checks and re-solves. Poisson workloads rarely need a second; a bursty trace (screened as
Poisson at its mean rate) can need one per configuration cheaper than the answer: 13 for 40 requests in 0.2 s
every 10 s (tests/unit/test_solver.py)."""


@dataclass(frozen=True)
class SolveRequest:
    model: ModelSpec
    """The model of every workload not named in ``models``."""
    workloads: list[Workload]
    slos: list[Slo]
    """SLOs of every workload not named in ``workload_slos``."""
    budget: Budget
    gpus: list[GpuSpec]
    """GPU types allowed (catalog, restricted by --gpus, with price overrides)."""
    precisions: list[Precision] = field(default_factory=lambda: ["bf16", "fp8", "int8", "int4"])
    kv_cache_dtypes: list[KvCacheDtype] = field(default_factory=lambda: ["auto", "fp8"])
    objective: Objective = "cost"
    max_replicas: int = MAX_REPLICAS
    models: dict[str, ModelSpec] = field(default_factory=dict)
    """Workload name -> its model, where it differs from ``model`` (a fleet of several models)."""
    workload_slos: dict[str, list[Slo]] = field(default_factory=dict)
    """Workload name -> its own SLOs, replacing ``slos`` for that workload."""
    verify: bool = False
    """Re-check the chosen deployments with the simulator (the CLI turns this on)."""
    sim_requests: int = SIM_REQUESTS
    verify_rounds: int = VERIFY_ROUNDS
    max_load: float = MAX_LOAD
    """A replica's offered Poisson rate may reach at most this fraction of its saturation throughput."""
    uncalibrated_margin: float = 0.0
    """SLO limits on uncalibrated GPUs are multiplied by 1 - this (the CLI passes the catalog's default,
    catalogs/calibration/validation_status.yaml: uncalibrated_slo_margin)."""
    max_model_len: int | Literal["workload", "model"] = "workload"
    """--max-model-len of every deployment: 'workload' (its longest request plus template room), 'model' (the
    model's own context) or a number of tokens (at least the workload's longest request)."""

    def model_of(self, workload: str) -> ModelSpec:
        return self.models.get(workload, self.model)

    def slos_of(self, workload: str) -> list[Slo]:
        return self.workload_slos.get(workload, self.slos)

    def slos_on(self, workload: str, gpu: str) -> list[Slo]:
        """The SLOs a deployment on ``gpu`` must meet: tighter by ``uncalibrated_margin`` where the GPU's speed
        model is uncalibrated (its errors may be tens of percent)."""
        slos = self.slos_of(workload)
        if self.uncalibrated_margin <= 0 or not _uncalibrated(gpu):
            return slos
        return [replace(s, limit_ms=s.limit_ms * (1 - self.uncalibrated_margin)) for s in slos]


@dataclass(frozen=True)
class SimCheck:
    """The simulator's view of one replica of a chosen deployment at its share of the load."""

    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    """ms."""
    requests: int
    seed: int
    saturated: bool
    requests_per_s: float
    """Of one replica."""
    meets: bool
    failed: str = ""
    """The first SLO it breaks, in words (empty when it meets them all)."""
    peak_in_system: int = 0
    """Most requests ever waiting or running at once: below max_num_seqs, the slot limit never bound."""
    preemptions: int = 0
    """Requests the engine evicted from the KV cache (vLLM's recompute preemption) during the run."""


@dataclass(frozen=True)
class Candidate:
    workload: str
    cfg: ServingConfig
    shape: RequestShape
    replicas: int
    memory: MemoryBreakdown
    prediction: LoadPrediction
    """Per replica, at its share of the load."""
    simulated: SimCheck | None = None

    @property
    def gpus(self) -> int:
        return self.replicas * self.cfg.num_gpus

    @property
    def cost_per_hour(self) -> float:
        return self.gpus * self.cfg.gpu.price.price_usd_per_gpu_hour

    def metric(self, slo_key: str) -> float:
        metric, stat = slo_key.split("_")
        p: Percentiles = getattr(self.prediction, metric)
        return float(getattr(p, stat))

    @property
    def ident(self) -> tuple[str, str, str, str, int, int, int | None, int]:
        """What makes it this deployment (for rejection and caching)."""
        c = self.cfg
        return (self.workload, c.gpu.name, c.precision, c.kv_cache_dtype, c.tp, c.pp, c.max_num_seqs, self.replicas)


@dataclass
class Screening:
    """What stage 1 saw, for explaining infeasibility."""

    memory_fits: int = 0
    smallest_weights_gib: float = math.inf
    smallest_weights_config: str = ""
    largest_replica_gib: float = 0.0
    largest_replica_desc: str = ""
    best: dict[str, tuple[float, str]] = field(default_factory=dict)
    """SLO key -> (lowest value seen on any memory-feasible config, where)."""
    unsupported: list[str] = field(default_factory=list)
    missing_checkpoints: list[str] = field(default_factory=list)
    """Precisions (int4, int8) dropped because no pre-quantized checkpoint of the model is known."""
    evaluated: int = 0
    """Configurations (GPU, precision, KV dtype, TP x PP) whose load was modelled."""
    skipped: int = 0
    """Configurations the bounds showed could not matter (never evaluated)."""


@dataclass(frozen=True)
class Solution:
    status: Literal["optimal", "feasible", "infeasible"]
    chosen: list[Candidate]
    alternatives: list[Candidate]
    binding: list[str]
    explanation: str
    relaxation: str
    screening: dict[str, Screening]
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    """What the solver did that the user should know (simulator rejections)."""


def _milli(usd: float) -> int:
    """USD -> integer milli-USD: the single float-to-integer scaling of the model."""
    return int(round(usd * 1000))


def meets(pred: LoadPrediction, slos: list[Slo]) -> bool:
    return meets_slos(pred, slos)


TEMPLATE_ROOM_TOKENS = 256
"""Context reserved beyond the workload's counted tokens for the chat template (system prompt, role and
image markers: ~20 tokens for Qwen2.5-VL's default template, ~30 for Llama 3's), so a request at the
workload's largest size is never rejected for exceeding --max-model-len. A planning margin, not a model
constant: it changes no prediction (vLLM's KV budget does not depend on max_model_len)."""


def _max_model_len(model: ModelSpec, workload: Workload, base: ServingConfig) -> int:
    """The workload's longest request (largest prompt, most images at the largest size, longest output) plus
    template room, rounded up to a multiple of 1024, capped at the model's context."""
    visual = 0
    if workload.max_images and model.visual_tokens is not None:
        rule = model.visual_tokens
        per_image = max(image_tokens(rule, i.width, i.height, base.mm_processor_options).llm_tokens
                        for i in workload.image_sizes)
        visual = workload.max_images * per_image
    need = workload.max_prompt_tokens + visual + workload.max_output_tokens + TEMPLATE_ROOM_TOKENS
    return min(model.decoder.max_position_embeddings, math.ceil(need / 1024) * 1024)


def _chosen_max_model_len(choice: int | str, model: ModelSpec, workload: Workload, base: ServingConfig) -> int:
    """The deployment's --max-model-len for the user's choice (``SolveRequest.max_model_len``)."""
    need = _max_model_len(model, workload, base)
    top = model.decoder.max_position_embeddings
    if choice == "workload":
        return need
    if choice == "model":
        return top
    assert isinstance(choice, int)
    if choice > top:
        raise RequestError(f"--max-model-len {choice} is above {model.name}'s context ({top:,} tokens)")
    if choice < need:
        raise RequestError(f"--max-model-len {choice} is below workload '{workload.name}''s longest request "
                           f"({need:,} tokens with template room): vLLM would reject those requests")
    return choice


def _mm_options(model: ModelSpec, workload: Workload) -> tuple[dict[str, int], dict[str, object]]:
    """--limit-mm-per-prompt and a processor cap matching the planned images
    (otherwise vLLM reserves encoder memory for its largest image)."""
    rule = model.visual_tokens
    if rule is None:
        return {}, {}
    if not workload.max_images:
        return {"image": 0}, {}
    limit = {"image": workload.max_images}
    if rule.rule in ("qwen2_vl", "qwen3_vl"):
        sizes = [image_tokens(rule, i.width, i.height) for i in workload.image_sizes]
        return limit, {"max_pixels": max(t.resized_width * t.resized_height for t in sizes)}
    if rule.rule == "internvl":
        tiles = [image_tokens(rule, i.width, i.height).num_tiles for i in workload.image_sizes]
        return limit, {"max_dynamic_patch": max(1, max(tiles) - (1 if max(tiles) > 1 else 0))}
    return limit, {}


def _desc(cfg: ServingConfig) -> str:
    return f"{cfg.tp * cfg.pp} x {cfg.gpu.name} {cfg.precision}" + (" kv-fp8" if cfg.kv_cache_dtype == "fp8" else "")


def _uncalibrated(gpu: str) -> bool:
    from planner.catalog.loader import calibration_status

    return calibration_status(gpu)[0] == "uncalibrated"


def _offered(workload: Workload) -> tuple[str, float]:
    """('closed', clients) or ('poisson', requests/s); a trace is taken as Poisson at its mean rate."""
    if workload.arrival == "closed":
        return "closed", float(workload.concurrency or 1)
    if workload.arrival == "trace":
        return "poisson", float(workload.rate_per_s or workload.trace_rate_per_s or 0.0)
    return "poisson", float(workload.rate_per_s or 0.0)


def _replicas_for(cost_pred, workload: Workload, slos: list[Slo], max_replicas: int, max_load: float = 1.0,
                  hint: int | None = None) -> tuple[int, LoadPrediction] | None:
    """Fewest replicas (at most ``max_replicas``) whose per-replica share of the load meets every SLO and, for
    Poisson arrivals, stays within ``max_load`` of the replica's saturation throughput.

    Latency is non-decreasing in the per-replica load, so the count is the
    first r that meets the SLOs. The search starts at the capacity bound
    ceil(rate / (max_load x max_requests_per_s)) and gallops up, then bisects back. With ``hint`` (the count
    a sibling configuration needed) it tries that count and the one below first: usually the answer is there.
    """
    if workload.arrival == "single":
        pred = cost_pred("single", None, None)
        return (1, pred) if meets(pred, slos) else None
    kind, total = _offered(workload)

    def at(r: int) -> LoadPrediction:
        if kind == "closed":
            return cost_pred("closed", None, math.ceil(total / r))
        return cost_pred("poisson", total / r, None)

    def ok(r: int, p: LoadPrediction) -> bool:
        return meets(p, slos) and (kind == "closed" or total / r <= max_load * p.max_requests_per_s + 1e-12)

    first = at(1)
    if ok(1, first):
        return 1, first
    if max_replicas <= 1:
        return None
    hi = max(2, math.ceil(total / (max_load * first.max_requests_per_s))) if kind == "poisson" else 2
    # Known bad: one replica, and (Poisson) every count below the capacity bound, whose load is over the ceiling.
    lo = hi - 1 if kind == "poisson" else 1
    limit = min(max_replicas, int(total)) if kind == "closed" else max_replicas
    hi = min(hi, limit)
    if hi <= lo:
        return None

    def first_ok(lo: int, hi: int, best: tuple[int, LoadPrediction]) -> tuple[int, LoadPrediction]:
        """Bisect: ``lo`` fails, ``best`` (at ``hi``) passes."""
        while hi - lo > 1:
            mid = (lo + hi) // 2
            p = at(mid)
            if ok(mid, p):
                hi, best = mid, (mid, p)
            else:
                lo = mid
        return best

    if hint is not None and lo < hint <= limit and hint > hi:
        pred = at(hint)
        if ok(hint, pred):
            below = at(hint - 1) if hint - 1 > lo else None
            if below is None or not ok(hint - 1, below):
                return hint, pred
            return first_ok(lo, hint - 1, (hint - 1, below))
        lo = hint
        hi = min(limit, hint * 2)
        if hi <= lo:
            return None
    pred = at(hi)
    while not ok(hi, pred):
        if hi >= limit:
            return None
        lo, hi = hi, min(limit, hi * 2)
        pred = at(hi)
    return first_ok(lo, hi, (hi, pred))


# --------------------------------------------------------------------------- configurations


@dataclass
class _Config:
    """One (workload, GPU type, precision, KV dtype, TP x PP): all its max_num_seqs choices are evaluated at once."""

    index: int
    workload: Workload
    base: ServingConfig
    shape: RequestShape
    price: float

    @property
    def gpu(self) -> str:
        return self.base.gpu.name

    @property
    def lb_gpus(self) -> int:
        """No candidate of this configuration uses fewer GPUs (one replica)."""
        return self.base.tp * self.base.pp

    @property
    def lb_cost(self) -> float:
        return self.lb_gpus * self.price


def _parallel_choices(model: ModelSpec, gpu: GpuSpec) -> list[tuple[int, int]]:
    from planner.catalog.engine_support import tp_problem

    # TP sizes vLLM can start the model at (heads, KV heads and MLP width divide as it requires).
    tps = [t for t in TP_CHOICES if t <= gpu.gpus_per_node and tp_problem(model, t) is None]
    choices = [(t, 1) for t in tps]
    # Pipeline stages across nodes once a node is full.
    if gpu.gpus_per_node in tps:
        choices += [(gpu.gpus_per_node, 2)]
    return choices


def _configs(req: SolveRequest, workload: Workload, screen: Screening, start: int = 0) -> list[_Config]:
    """Every configuration of one workload the request allows (cheap: nothing is modelled yet)."""
    model = req.model_of(workload.name)
    limit_mm, mm_opts = _mm_options(model, workload)
    out: list[_Config] = []
    shape: RequestShape | None = None
    max_len = 0
    for gpu in req.gpus:
        if req.budget.limit(gpu.name) is None:
            continue
        for precision in req.precisions:
            if precision not in gpu.precisions:
                continue
            if precision in ("int4", "int8") and precision not in model.quantized_checkpoints:
                # vLLM cannot quantize to W4A16/W8A8 at load time: a checkpoint must exist.
                note = f"{precision}: no known pre-quantized checkpoint of {model.name}"
                if note not in screen.unsupported:
                    screen.unsupported.append(note)
                    screen.missing_checkpoints.append(precision)
                continue
            for kv in req.kv_cache_dtypes:
                if kv not in gpu.kv_cache_dtypes:
                    continue
                for tp, pp in _parallel_choices(model, gpu):
                    base = ServingConfig(model=model, gpu=gpu, tp=tp, pp=pp, precision=precision,
                                         kv_cache_dtype=kv, limit_images_per_prompt=limit_mm.get("image"),
                                         mm_processor_options=mm_opts)
                    if shape is None:
                        # The request's tokens depend on the model and its processor options only.
                        try:
                            shape = request_shape(base, workload)
                        except PlannerError as exc:
                            screen.unsupported.append(f"{workload.name}: {exc}")
                            return []
                        max_len = _chosen_max_model_len(req.max_model_len, model, workload, base)
                    base = replace(base, max_model_len=max_len)
                    out.append(_Config(start + len(out), workload, base, shape, gpu.price.price_usd_per_gpu_hour))
    return out


class _Space:
    """Configurations of every workload, evaluated on demand and cached (step costs shared between
    workloads serving the same model with the same engine settings)."""

    def __init__(self, req: SolveRequest, screens: dict[str, Screening], minimal: bool = False) -> None:
        self.req = req
        self.screens = screens
        self.minimal = minimal
        """Keep, per configuration, only its fewest-replica candidates (all the cost and GPU objectives use);
        the replica search of each max_num_seqs choice is then capped at the best count found so far."""
        self.engine = load_engine()
        self.precisions = load_precisions()
        self.configs: dict[str, list[_Config]] = {}
        n = 0
        for w in req.workloads:
            self.configs[w.name] = _configs(req, w, screens[w.name], n)
            n += len(self.configs[w.name])
        self.workloads = {w.name: w for w in req.workloads}
        self._cands: dict[int, list[Candidate]] = {}
        self._costs: dict[tuple[Any, ...], Any] = {}
        self._cal: dict[str, Any] = {}
        self.rejected: set[tuple[Any, ...]] = set()
        self._extra: dict[int, list[Candidate]] = {}

    # -- evaluation

    def step_cost(self, cfg: ServingConfig) -> Any:
        """``StepCost`` of a resolved config; independent of max_num_seqs below the token budget."""
        key = (id(cfg.model), cfg.gpu.name, cfg.precision, cfg.kv_cache_dtype, cfg.tp, cfg.pp, cfg.max_model_len,
               cfg.max_num_batched_tokens, max(cfg.max_num_batched_tokens or 0, cfg.max_num_seqs or 0),
               cfg.gpu_memory_utilization, cfg.mm_encoder_tp_mode, cfg.limit_images_per_prompt,
               tuple(sorted((k, repr(v)) for k, v in cfg.mm_processor_options.items())))
        hit = self._costs.get(key)
        if hit is None:
            if cfg.gpu.name not in self._cal:
                self._cal[cfg.gpu.name] = load_calibration(cfg.gpu.name)
            hit = build_step_cost(cfg, self._cal[cfg.gpu.name])
            self._costs[key] = hit
        return hit

    def evaluated(self, c: _Config) -> bool:
        return c.index in self._cands

    def candidates(self, c: _Config) -> list[Candidate]:
        """Candidates of one configuration, evaluating it first if needed; rejected ones left out."""
        if c.index not in self._cands:
            self._cands[c.index] = self._evaluate(c)
        out = self._cands[c.index] + self._extra.get(c.index, [])
        if not self.rejected:
            return out
        return [k for k in out if k.ident not in self.rejected]

    def all_candidates(self, workload: str) -> list[Candidate]:
        return [k for c in self.configs[workload] for k in self.candidates(c)]

    def _evaluate(self, c: _Config) -> list[Candidate]:
        screen = self.screens[c.workload.name]
        screen.evaluated += 1
        try:
            return _screen_config(self, c, screen)
        except PlannerError as exc:
            screen.unsupported.append(f"{_desc(c.base)}: {exc}")
            return []

    def reject(self, cand: Candidate, check: Any = None) -> None:
        """Leave ``cand`` out from now on, and with it the same configuration and replica count at fewer slots
        (``max_num_seqs``: fewer can only queue more), or at any slot count when its simulation never filled its
        slots. The configuration comes back with more replicas: with
        ``check`` (candidate -> SimCheck), the fewest the simulator accepts (galloping up from one more, then
        bisecting), already checked; without, one more, to be checked when chosen."""
        self.rejected.add(cand.ident)
        cfgx = next(c for c in self.configs[cand.workload]
                    if c.gpu == cand.cfg.gpu.name and c.base.precision == cand.cfg.precision
                    and c.base.kv_cache_dtype == cand.cfg.kv_cache_dtype and c.base.tp == cand.cfg.tp
                    and c.base.pp == cand.cfg.pp)
        seqs = cand.cfg.max_num_seqs or 0
        # More slots change nothing if the simulation never filled them.
        unbound = check is not None and check(cand).peak_in_system < seqs
        for k in self._cands.get(cfgx.index, []) + self._extra.get(cfgx.index, []):
            if k.replicas == cand.replicas and ((k.cfg.max_num_seqs or 0) <= seqs or unbound):
                self.rejected.add(k.ident)
        w = self.workloads[cand.workload]
        kind, total = _offered(w)
        limit = min(self.req.max_replicas, int(total)) if kind == "closed" else self.req.max_replicas
        if w.arrival == "single" or cand.replicas + 1 > limit:
            return
        cost = self.step_cost(cand.cfg)

        def at(r: int) -> Candidate:
            pred = predict(cost, cand.cfg, cand.shape, kind, total / r if kind == "poisson" else None,
                           math.ceil(total / r) if kind == "closed" else None, cand.memory.kv_capacity_tokens)
            return replace(cand, replicas=r, prediction=pred, simulated=None)

        more = at(cand.replicas + 1)
        if check is not None:
            found = self._fewest_accepted(cand.replicas, limit, at, check)
            if found is None:
                return
            more = found
        if more.ident not in self.rejected:
            self._extra.setdefault(cfgx.index, []).append(more)

    @staticmethod
    def _fewest_accepted(bad: int, limit: int, at: Any, check: Any) -> Candidate | None:
        """The fewest replicas above ``bad`` (at most ``limit``) the simulator accepts, with its check attached."""
        hi = bad + 1
        step = 1
        while True:
            k = at(hi)
            sim = check(k)
            if sim.meets:
                best = replace(k, simulated=sim)
                break
            if hi >= limit:
                return None
            bad, step = hi, step * 2
            hi = min(limit, hi + step)
        while hi - bad > 1:
            mid = (bad + hi) // 2
            k = at(mid)
            sim = check(k)
            if sim.meets:
                hi, best = mid, replace(k, simulated=sim)
            else:
                bad = mid
        return best

    # -- best-first queries over lower bounds

    def _group_best(self, configs: list[_Config], key: Any, lb: Any) -> tuple[Candidate | None, float | None]:
        """Best candidate (by ``key``) among the evaluated configurations and the lowest bound ``lb`` of the
        unevaluated ones (None when all are evaluated)."""
        best: Candidate | None = None
        low: float | None = None
        for c in configs:
            if self.evaluated(c):
                for k in self.candidates(c):
                    if best is None or key(k) < key(best):
                        best = k
            else:
                b = lb(c)
                low = b if low is None else min(low, b)
        return best, low

    def _evaluate_level(self, configs: list[_Config], lb: Any, level: float) -> None:
        for c in configs:
            if not self.evaluated(c) and lb(c) <= level + 1e-9:
                self.candidates(c)

    def settle(self, configs: list[_Config], key: Any, lb: Any, first: Any) -> Candidate | None:
        """The best candidate of ``configs`` by ``key`` (whose first element ``first`` is bounded below by ``lb``),
        evaluating configurations in order of their bound until no unevaluated one could match it."""
        while True:
            best, low = self._group_best(configs, key, lb)
            if low is None or (best is not None and first(best) < low - 1e-9):
                return best
            self._evaluate_level(configs, lb, low)

    def cheapest(self, workload: str) -> Candidate | None:
        """The lowest-cost candidate of a workload on any GPU type (None: it has none at all)."""
        return self.settle(self.configs[workload], lambda k: (k.cost_per_hour, k.gpus, _prune_key(k)),
                           lambda c: c.lb_cost, lambda k: k.cost_per_hour)


def _prune_key(c: Candidate) -> tuple[Any, ...]:
    return (c.gpus, c.prediction.ttft.p95, c.cfg.precision, c.cfg.kv_cache_dtype, c.cfg.tp, c.cfg.pp,
            c.cfg.max_num_seqs, c.replicas)


def candidates_for(req: SolveRequest, workload: Workload, screen: Screening) -> list[Candidate]:
    """Every candidate of one workload (full enumeration, no bounds)."""
    space = _Space(replace(req, workloads=[workload]), {workload.name: screen})
    return space.all_candidates(workload.name)


def _screen_config(space: _Space, c: _Config, screen: Screening) -> list[Candidate]:
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
    cfg0 = resolve(replace(c.base, max_num_seqs=SEQ_CHOICES[0]), space.engine)
    mem0 = memory_breakdown(cfg0, space.engine, space.precisions)
    _note_memory(screen, cfg0, mem0)
    if not mem0.fits:
        return []
    screen.memory_fits += 1
    cost = space.step_cost(cfg0)
    alone = predict(cost, cfg0, shape, "single", None, None, mem0.kv_capacity_tokens)
    for s in slos:
        value = float(getattr(getattr(alone, s.metric), s.stat))
        if s.key not in screen.best or value < screen.best[s.key][0]:
            screen.best[s.key] = (value, _desc(cfg0))
    if not meets(alone, slos):
        return []
    out: list[Candidate] = []
    cap = req.max_replicas
    for seqs in (reversed(SEQ_CHOICES) if space.minimal else SEQ_CHOICES):
        if seqs == SEQ_CHOICES[0]:
            cfg, mem = cfg0, mem0
        else:
            cfg = resolve(replace(c.base, max_num_seqs=seqs), space.engine)
            mem = memory_breakdown(cfg, space.engine, space.precisions)
        if not mem.fits:
            continue

        def cost_pred(arrival: str, rate: float | None, conc: int | None,
                      cost=cost, cfg=cfg, mem=mem) -> LoadPrediction:
            return predict(cost, cfg, shape, arrival, rate, conc, mem.kv_capacity_tokens)

        found = _replicas_for(cost_pred, workload, slos, cap, req.max_load, hint=out[-1].replicas if out else None)
        if found is None:
            continue
        replicas, pred = found
        out.append(Candidate(workload.name, cfg, shape, replicas, mem, pred))
        if space.minimal:
            cap = min(cap, replicas)
    if space.minimal:
        best = min(k.replicas for k in out) if out else 0
        out = [k for k in out if k.replicas == best]
    out.sort(key=lambda k: k.cfg.max_num_seqs or 0)
    return out


def _note_memory(screen: Screening, cfg: ServingConfig, mem: MemoryBreakdown) -> None:
    weights_gib = mem.weights_bytes * cfg.num_gpus / 2**30
    if weights_gib < screen.smallest_weights_gib:
        screen.smallest_weights_gib = weights_gib
        screen.smallest_weights_config = cfg.precision
    replica_gib = mem.total_bytes * cfg.num_gpus / 2**30
    if replica_gib > screen.largest_replica_gib:
        screen.largest_replica_gib = replica_gib
        screen.largest_replica_desc = f"{cfg.num_gpus} x {mem.total_bytes / 2**30:.0f} GiB ({cfg.gpu.name})"


def prune(cands: list[Candidate], objective: Objective) -> list[Candidate]:
    """Keep, per (workload, GPU type), the fewest-GPU candidate (cost/gpus
    objectives) or the (GPUs, p95 TTFT) Pareto front (latency objective).
    Ties break on a fixed key, so the result is deterministic."""
    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in cands:
        groups.setdefault((c.workload, c.cfg.gpu.name), []).append(c)
    kept: list[Candidate] = []
    for _, group in sorted(groups.items()):
        group.sort(key=_prune_key)
        if objective != "latency":
            kept.append(group[0])
            continue
        best_ttft = math.inf
        for c in group:
            if c.prediction.ttft.p95 < best_ttft:
                kept.append(c)
                best_ttft = c.prediction.ttft.p95
    return kept


@dataclass(frozen=True)
class _Option:
    """What CP-SAT sees of one choice: an exact candidate, or a lower bound for an unsettled group."""

    workload: str
    gpu: str
    gpus: int
    cost_per_hour: float
    ttft_p95_ms: float
    candidate: Candidate | None


def _option(c: Candidate) -> _Option:
    return _Option(c.workload, c.cfg.gpu.name, c.gpus, c.cost_per_hour, c.prediction.ttft.p95, c)


def _assign_options(workloads: list[str], opts: list[_Option], budget: Budget, objective: Objective
                    ) -> tuple[str, list[_Option]]:
    """The CP-SAT model of the module docstring, written as a ``CpModelProto`` and solved by CP-SAT's own solve
    wrapper (the same solver as ``cp_model.CpSolver``, without the Python modelling layer's pandas import)."""
    from ortools.sat.python import cp_model_helper as cmh

    lines = [f"variables {{ domain: [0, 1] name: \"x{i}\" }}" for i in range(len(opts))]
    for w in workloads:
        idx = [i for i, o in enumerate(opts) if o.workload == w]
        if not idx:
            return "infeasible", []
        lines.append(f"constraints {{ exactly_one {{ literals: [{', '.join(map(str, idx))}] }} }}")

    def linear(idx: list[int], coeffs: list[int], limit: int) -> str:
        return (f"constraints {{ linear {{ vars: [{', '.join(map(str, idx))}] "
                f"coeffs: [{', '.join(map(str, coeffs))}] domain: [0, {limit}] }} }}")

    for gpu in sorted({o.gpu for o in opts}):
        limit = budget.limit(gpu)
        if limit is None:
            continue
        idx = [i for i, o in enumerate(opts) if o.gpu == gpu]
        lines.append(linear(idx, [opts[i].gpus for i in idx], limit))
    cost = [_milli(o.cost_per_hour) for o in opts]
    if budget.max_usd_per_hour is not None:
        lines.append(linear(list(range(len(opts))), cost, _milli(budget.max_usd_per_hour)))
    if objective == "cost":
        weights = cost
    elif objective == "gpus":
        # GPUs first, cost as the tie-break.
        weights = [o.gpus * 10**9 + k for o, k in zip(opts, cost)]
    else:
        weights = [int(o.ttft_p95_ms * 1000) for o in opts]
    lines.append(f"objective {{ vars: [{', '.join(map(str, range(len(opts))))}] "
                 f"coeffs: [{', '.join(map(str, weights))}] }}")
    model = cmh.CpModelProto()
    if not model.parse_text_format("\n".join(lines)):
        raise AssertionError("CP-SAT model did not parse")  # a bug, not an input error
    params = cmh.SatParameters()
    params.parse_text_format("random_seed: 0 num_workers: 1 max_time_in_seconds: 10.0")
    wrapper = cmh.SolveWrapper()
    wrapper.set_parameters(params)
    response = wrapper.solve(model)
    status = response.status
    if status not in (cmh.CpSolverStatus.OPTIMAL, cmh.CpSolverStatus.FEASIBLE):
        return "infeasible", []
    values = list(response.solution)
    chosen = [opts[i] for i in range(len(opts)) if values[i]]
    order = {w: k for k, w in enumerate(workloads)}
    chosen.sort(key=lambda o: order[o.workload])
    return ("optimal" if status == cmh.CpSolverStatus.OPTIMAL else "feasible"), chosen


def assign(workloads: list[str], cands: list[Candidate], budget: Budget, objective: Objective
           ) -> tuple[str, list[Candidate]]:
    """Stage 2: CP-SAT picks one candidate per workload."""
    status, chosen = _assign_options(workloads, [_option(c) for c in cands], budget, objective)
    return status, [o.candidate for o in chosen if o.candidate is not None]


def _optimise(space: _Space) -> tuple[str, list[Candidate], list[Candidate]]:
    """Stage 2 over lazily evaluated groups; returns (status, chosen, kept) where ``kept`` holds, per workload,
    the candidates the explanation and the binding report need (the cheapest of each workload)."""
    req = space.req
    names = [w.name for w in req.workloads]
    if req.objective == "latency":
        kept = prune([k for n in names for k in space.all_candidates(n)], "latency")
        status, chosen = assign(names, kept, req.budget, req.objective)
        return status, chosen, kept
    groups: dict[tuple[str, str], list[_Config]] = {}
    for n in names:
        for c in space.configs[n]:
            groups.setdefault((n, c.gpu), []).append(c)

    def lb(c: _Config) -> float:
        return float(c.lb_gpus)

    while True:
        opts: list[_Option] = []
        pending: dict[int, tuple[list[_Config], float]] = {}
        for (n, gpu), cfgs in sorted(groups.items()):
            best, low = space._group_best(cfgs, _prune_key, lb)
            if low is None or (best is not None and best.gpus < low - 1e-9):
                if best is not None:
                    opts.append(_option(best))
                continue
            # Unsettled: one optimistic option, a lower bound of the group's true best.
            g = int(low)
            opt = _Option(n, gpu, g, g * cfgs[0].price, 0.0, None)
            pending[id(opt)] = (cfgs, low)
            opts.append(opt)
        status, picked = _assign_options(names, opts, req.budget, req.objective)
        if status == "infeasible":
            return "infeasible", [], []
        lazy = [o for o in picked if o.candidate is None]
        if not lazy:
            chosen = [o.candidate for o in picked if o.candidate is not None]
            return status, chosen, []
        for o in lazy:
            cfgs, low = pending[id(o)]
            space._evaluate_level(cfgs, lb, low)


def _simulate(space: _Space, c: Candidate) -> SimCheck:
    """One replica of ``c`` at its share of the workload, through the discrete-event simulator."""
    from planner.load.run import meets as sim_meets
    from planner.load.run import to_percentiles
    from planner.load.simulator import build_requests, percentiles, simulate

    req = space.req
    w = space.workloads[c.workload]
    slos = req.slos_on(c.workload, c.cfg.gpu.name)
    cost = space.step_cost(c.cfg)
    seed = 0
    kind, total = _offered(w)
    n = req.sim_requests
    trace: tuple[float, ...] = ()
    if w.arrival == "single":
        arrival, rate, conc = "single", None, None
        n = min(n, 200)
    elif kind == "closed":
        conc = math.ceil(total / c.replicas)
        arrival, rate, n = "closed", None, int(min(20000, max(n, 8 * conc)))
    elif w.arrival == "trace" and w.trace_s and not w.rate_per_s:
        # This replica's share of the trace itself (round-robin over the replicas), bursts and lulls included:
        # the analytic screen took it as Poisson at its mean rate.
        arrival, rate, conc = "trace", None, None
        trace = tuple(w.trace_s[:: c.replicas])
    else:
        arrival, rate, conc = "poisson", total / c.replicas, None

    def run(k: int) -> SimResult:
        reqs = build_requests(c.cfg, w, cost, k, seed)
        return simulate(cost, reqs, c.memory.kv_capacity_tokens, arrival, rate, conc,
                        trace if arrival == "trace" else None, seed=seed, cfg=c.cfg)

    res = None
    if arrival == "poisson" and n > SIM_QUICK_REQUESTS:
        quick = run(SIM_QUICK_REQUESTS)
        if _clear_margin(quick, slos, SIM_QUICK_MARGIN):
            res, n = quick, SIM_QUICK_REQUESTS
    if res is None:
        res = run(n)
    ok = sim_meets(res, slos)
    failed = ""
    if not ok:
        if res.saturated:
            failed = "saturated (the queue grows without bound)"
        else:
            data = {"ttft": res.ttft_ms, "tpot": res.tpot_ms, "e2e": res.e2e_ms}
            for s in slos:
                value = percentiles(data[s.metric])[s.stat]
                if not value <= s.limit_ms:
                    failed = f"{s.key} {value:.1f} ms > {s.limit_ms:g} ms"
                    break
    return SimCheck(ttft=to_percentiles(res.ttft_ms), tpot=to_percentiles(res.tpot_ms),
                    e2e=to_percentiles(res.e2e_ms), requests=n, seed=seed, saturated=res.saturated,
                    requests_per_s=res.requests_per_s, meets=ok, failed=failed,
                    peak_in_system=_peak_in_system(res.arrival_s, res.finish_s), preemptions=res.preemptions)


def _peak_in_system(arrival: Any, finish: Any) -> int:
    """Most requests between arrival and finish at any instant (a finish and an arrival at the same instant:
    the finish first)."""
    import numpy as np

    t = np.concatenate([arrival, finish])
    step = np.concatenate([np.ones(len(arrival)), -np.ones(len(finish))])
    order = np.lexsort((step, t))
    return int(np.max(np.cumsum(step[order]))) if len(t) else 0


def _clear_margin(res: SimResult, slos: list[Slo], margin: float) -> bool:
    """Not saturated, and every SLO's simulated value below ``margin`` x its limit."""
    from planner.load.simulator import percentiles

    if res.saturated:
        return False
    data = {"ttft": res.ttft_ms, "tpot": res.tpot_ms, "e2e": res.e2e_ms}
    return all(percentiles(data[s.metric])[s.stat] <= margin * s.limit_ms for s in slos)


def solve(req: SolveRequest) -> Solution:
    import time

    t0 = time.perf_counter()
    names = [w.name for w in req.workloads]
    if len(set(names)) != len(names):
        from planner.core.errors import RequestError

        dup = sorted({n for n in names if names.count(n) > 1})
        raise RequestError(f"workload names must be unique (got '{dup[0]}' twice)")
    screens = {w.name: Screening() for w in req.workloads}
    space = _Space(req, screens, minimal=req.objective != "latency")
    notes: list[str] = []
    sims: dict[tuple[Any, ...], SimCheck] = {}

    def check(c: Candidate) -> SimCheck:
        if c.ident not in sims:
            sims[c.ident] = c.simulated if c.simulated is not None else _simulate(space, c)
        return sims[c.ident]

    status = "infeasible"
    chosen: list[Candidate] = []
    kept: list[Candidate] = []
    exhausted = False
    for round_ in range(req.verify_rounds + 1):
        status, chosen, kept = _optimise(space)
        if status == "infeasible" or not req.verify:
            break
        checked, bad = [], []
        for c in chosen:
            sim = check(c)
            checked.append(replace(c, simulated=sim))
            if not sim.meets:
                bad.append(c)
        chosen = checked
        if not bad:
            break
        for c in bad:
            notes.append(f"{c.workload}: {c.replicas} x {_desc(c.cfg)} (max_num_seqs {c.cfg.max_num_seqs}) passed the "
                         f"analytic screen but the simulator gives {sims[c.ident].failed}: rejected, re-solved")
            space.reject(c, check)
        if round_ == req.verify_rounds:
            status, chosen, exhausted = "infeasible", [], True
    for n in names:
        screens[n].skipped = len(space.configs[n]) - screens[n].evaluated
    if status == "infeasible":
        if exhausted:
            explanation = (f"simulation: the simulator rejected each of the {len(notes)} deployments the analytic "
                           f"model chose in {req.verify_rounds + 1} rounds")
            relaxation = "relax the SLOs or raise the budget (the analytic screen is optimistic here)"
            bursty = [w.name for w in req.workloads if w.arrival == "trace" and w.trace_s and not w.rate_per_s]
            if bursty:
                relaxation = (f"the analytic screen takes the trace of {', '.join(bursty)} as Poisson at its mean "
                              f"rate, the simulator replays its bursts: give --rate at the burst rate to size for "
                              f"them, or relax the SLOs")
        else:
            kept = [k for n in names if (k := space.cheapest(n)) is not None]
            explanation, relaxation = explain_infeasible(req, screens, kept)
            if explanation.startswith("budget") and req.budget.inventory:
                anywhere = _cheapest_anywhere(req)
                if anywhere is not None and anywhere.chosen:
                    parts = ", ".join(f"{c.gpus} x {c.cfg.gpu.name}" for c in anywhere.chosen)
                    total = sum(c.cost_per_hour for c in anywhere.chosen)
                    relaxation += f"; cheapest on any catalog GPU: {parts} (${total:.2f}/h)"
        return Solution("infeasible", [], [], [], explanation, relaxation, screens, time.perf_counter() - t0, notes)
    if not kept:
        kept = [k for n in names if (k := space.cheapest(n)) is not None]
    binding = binding_constraints(req, chosen, kept)
    alternatives = _lazy_alternatives(space, chosen)
    return Solution(status, chosen, alternatives, binding, "", "", screens,  # type: ignore[arg-type]
                    time.perf_counter() - t0, notes)


def _alternative_group(c0: Candidate, gpu: str, precision: str) -> tuple[str, str] | None:
    """What an alternative stands for: another GPU type (its best precision), or another precision on the
    chosen GPU type; None for the chosen (GPU, precision) itself. One alternative per group, so the list
    shows other GPU types rather than three precisions of the same card."""
    if gpu != c0.cfg.gpu.name:
        return (gpu, "*")
    return None if precision == c0.cfg.precision else (gpu, precision)


def _lazy_alternatives(space: _Space, chosen: list[Candidate], n: int = 3) -> list[Candidate]:
    """Cheapest candidates on other GPU types or precisions than the chosen one (first workload), best-first
    over the configurations' cost bounds: the groups of ``_alternative_group`` are settled in order of cost."""
    if not chosen:
        return []
    c0 = chosen[0]
    groups: dict[tuple[str, str], list[_Config]] = {}
    for c in space.configs[c0.workload]:
        k = _alternative_group(c0, c.gpu, c.base.precision)
        if k is not None:
            groups.setdefault(k, []).append(c)

    def key(k: Candidate) -> tuple[float, float]:
        return (k.cost_per_hour, k.prediction.ttft.p95)

    def lb(c: _Config) -> float:
        return c.lb_cost

    out: list[Candidate] = []
    while groups and len(out) < n:
        # Unsettled groups sort before settled ones of the same cost: they could still tie.
        heads: list[tuple[tuple[float, int, float, str], tuple[str, str], Candidate | None, float | None]] = []
        for g, cfgs in list(groups.items()):
            best, low = space._group_best(cfgs, key, lb)
            if best is None and low is None:
                del groups[g]  # evaluated, no candidate
            elif low is not None and (best is None or best.cost_per_hour >= low - 1e-9):
                heads.append(((low, 0, 0.0, g[0]), g, None, low))
            elif best is not None:
                heads.append(((best.cost_per_hour, 1, best.prediction.ttft.p95, g[0]), g, best, None))
        if not heads:
            break
        heads.sort(key=lambda h: h[0])
        _, g, best, low = heads[0]
        if best is None:
            assert low is not None
            space._evaluate_level(groups[g], lb, low)
            continue
        out.append(best)
        del groups[g]
    return out


def _alternatives(chosen: list[Candidate], cands: list[Candidate], n: int = 3) -> list[Candidate]:
    """Cheapest candidates on other GPU types or precisions than the chosen one (first workload)."""
    if not chosen:
        return []
    c0 = chosen[0]
    best: dict[tuple[str, str], Candidate] = {}
    for c in cands:
        if c.workload != c0.workload:
            continue
        k = _alternative_group(c0, c.cfg.gpu.name, c.cfg.precision)
        if k is None:
            continue
        if k not in best or (c.cost_per_hour, c.prediction.ttft.p95) < (best[k].cost_per_hour,
                                                                          best[k].prediction.ttft.p95):
            best[k] = c
    return sorted(best.values(), key=lambda c: (c.cost_per_hour, c.prediction.ttft.p95, c.cfg.gpu.name))[:n]


def binding_constraints(req: SolveRequest, chosen: list[Candidate], kept: list[Candidate]) -> list[str]:
    out: list[str] = []
    for c in chosen:
        slos = req.slos_on(c.workload, c.cfg.gpu.name)
        if slos:
            head = sorted(((s.limit_ms - c.metric(s.key)) / s.limit_ms, s.key, s) for s in slos)[0]
            room, _, s = head
            margin = ""
            if slos != req.slos_of(c.workload):
                margin = (f" (the SLO less a {req.uncalibrated_margin:.0%} margin: {c.cfg.gpu.name}'s speed model is "
                          f"uncalibrated)")
            out.append(f"{c.workload}: {s.key} {c.metric(s.key):.1f} ms of {s.limit_ms:g} ms{margin} "
                       f"({room * 100:.0f}% headroom) is the tightest SLO; {c.replicas} replica(s) needed"
                       + _why_replicas(req, c, slos))
        tail = _tail_shaper(c)
        if tail:
            out.append(f"{c.workload}: tail: {tail}")
        options = [k for k in kept if k.workload == c.workload]
        if not options:
            continue
        cheapest = min(options, key=lambda k: k.cost_per_hour)
        if cheapest.cost_per_hour < c.cost_per_hour - 1e-9:
            out.append(f"{c.workload}: budget/inventory: the cheapest option ({cheapest.gpus} x "
                       f"{cheapest.cfg.gpu.name}, ${cheapest.cost_per_hour:.2f}/h) does not fit the budget")
    return out


TAIL_RATIO = 2.0
"""Simulated TTFT p99 over p95 above which the binding line calls the tail out (a queue's exponential tail has
p99 / p95 = 1.5; twice p95 means something else, slots or KV blocks, holds requests back)."""


def _tail_shaper(c: Candidate) -> str:
    """What shapes the chosen deployment's tail beyond the SLO it was sized for, with numbers: requests of the
    planned length that fit in the KV cache at once (when fewer than max_num_seqs), preemptions, and a simulated
    TTFT p99 far above its p95. Empty when none does."""
    sim = c.simulated
    parts: list[str] = []
    per_request = c.shape.prompt_tokens + c.shape.output_tokens
    fit = c.memory.kv_capacity_tokens // max(1, per_request)
    seqs = c.cfg.max_num_seqs or 0
    kv_bound = fit < seqs
    if kv_bound:
        parts.append(f"the KV cache holds {c.memory.kv_capacity_tokens:,} tokens, {fit} requests of "
                     f"{per_request:,} tokens at once, fewer than max_num_seqs {seqs}: it caps the batch")
    if sim is not None and sim.preemptions:
        parts.append(f"{sim.preemptions} preemption(s) in {sim.requests:,} simulated requests (KV cache full)")
    if sim is not None and sim.ttft.p95 > 0 and sim.ttft.p99 > TAIL_RATIO * sim.ttft.p95:
        parts.append(f"simulated TTFT p99 {sim.ttft.p99:,.0f} ms is {sim.ttft.p99 / sim.ttft.p95:.1f}x its p95 "
                     f"{sim.ttft.p95:,.0f} ms" + (" (requests wait for KV space)" if kv_bound or sim.preemptions
                                                  else ""))
    if not parts or (len(parts) == 1 and kv_bound and sim is not None and sim.peak_in_system <= fit):
        return ""  # the KV bound never bit: the simulated load never held that many requests
    return "; ".join(parts)


def _why_replicas(req: SolveRequest, c: Candidate, slos: list[Slo]) -> str:
    """Why one replica fewer would not do (Poisson workloads): it saturates, or it would run above the load
    ceiling, or an SLO breaks, or (the analytic model content with it) the simulator's check rejected it."""
    w = next((x for x in req.workloads if x.name == c.workload), None)
    if c.replicas <= 1 or w is None or w.arrival == "single":
        return ""
    kind, total = _offered(w)
    if kind != "poisson":
        return ""
    fewer = c.replicas - 1
    cap = c.prediction.max_requests_per_s
    if total / fewer >= cap:
        return f" (capacity: one replica saturates at {cap:.3g} req/s)"
    if total / fewer > req.max_load * cap:
        return (f" (load: with {fewer}, each would run at {total / fewer / cap:.0%} of its {cap:.3g} req/s "
                f"saturation; max load {req.max_load:.0%})")
    cost = build_step_cost(c.cfg, load_calibration(c.cfg.gpu.name))
    pred = predict(cost, c.cfg, c.shape, "poisson", total / fewer, None, c.memory.kv_capacity_tokens)
    for s in slos:
        value = float(getattr(getattr(pred, s.metric), s.stat))
        if value > s.limit_ms:
            return f" (with {fewer}, {s.key} would be {value:.1f} ms)"
    return f" (with {fewer}, the simulator's check failed)"


def explain_infeasible(req: SolveRequest, screens: dict[str, Screening], kept: list[Candidate]) -> tuple[str, str]:
    for w in req.workloads:
        s = screens[w.name]
        model = req.model_of(w.name)
        label = f"{w.name}: " if len(req.workloads) > 1 else ""
        if s.memory_fits == 0:
            if s.largest_replica_gib == 0:
                if s.missing_checkpoints and set(s.missing_checkpoints) == set(req.precisions):
                    missing = "/".join(s.missing_checkpoints)
                    return (f"{label}{missing}: no known pre-quantized checkpoint of {model.name} (vLLM cannot "
                            f"quantize to int4/int8 at load time)",
                            "allow bf16 or fp8 (--precisions bf16,fp8), or give a quantized checkpoint's config.json "
                            "with --model")
                return (f"{label}no allowed GPU supports the requested precisions "
                        f"({', '.join(req.precisions)}) for {model.name}",
                        "allow more GPU types or precisions (--gpus / --precisions)")
            return (f"{label}memory: weights need {s.smallest_weights_gib:.0f} GiB at {s.smallest_weights_config} "
                    f"(plus KV cache and activations); the largest allowed replica has {s.largest_replica_desc}",
                    "allow larger GPUs or more of them per replica, or a lower precision (--precisions int4)")
        options = [k for k in kept if k.workload == w.name]
        if not options:
            worst = None
            for slo in req.slos_of(w.name):
                best = s.best.get(slo.key)
                if best and best[0] > slo.limit_ms:
                    worst = (slo, best)
                    break
            if worst:
                slo, (value, where) = worst
                return (f"{label}latency: the lowest achievable {slo.metric} {slo.stat} is {value:.0f} ms "
                        f"> {slo.limit_ms:g} ms (best: {where}, one request alone)",
                        f"relax the SLO to {slo.key}={math.ceil(value * 1.05)}ms")
            return (f"{label}load: no configuration serves workload '{w.name}' within the SLOs with at most "
                    f"{req.max_replicas} replicas", "relax the SLOs or lower the rate")
    # Every workload has options: the budget is what binds.
    need: dict[str, int] = {}
    cheapest_cost = 0.0
    parts = []
    for w in req.workloads:
        cheapest = min((k for k in kept if k.workload == w.name), key=lambda k: (k.cost_per_hour, k.gpus))
        need[cheapest.cfg.gpu.name] = need.get(cheapest.cfg.gpu.name, 0) + cheapest.gpus
        cheapest_cost += cheapest.cost_per_hour
    for gpu, n in need.items():
        have = req.budget.limit(gpu)
        parts.append(f"{n} x {gpu}" + (f" > {have}" if have is not None and n > have else ""))
    msg = f"budget: the cheapest feasible plan needs {', '.join(parts)} (${cheapest_cost:.2f}/h)"
    if req.budget.max_usd_per_hour is not None and cheapest_cost > req.budget.max_usd_per_hour:
        msg += f" > ${req.budget.max_usd_per_hour:g}/h"
    # Only what binds: GPU counts over the inventory, and the hourly limit when the plan costs more.
    raise_ = [f"{n}x{g}" for g, n in need.items() if (have := req.budget.limit(g)) is not None and n > have]
    if req.budget.max_usd_per_hour is not None and cheapest_cost > req.budget.max_usd_per_hour:
        raise_.append(f"${math.ceil(cheapest_cost * 100) / 100:g}/h")
    relax = "raise the budget to " + " and ".join(raise_) if raise_ else "raise the budget"
    return msg, relax


def _cheapest_anywhere(req: SolveRequest) -> Solution | None:
    """The cheapest plan on any catalog GPU with no budget (prices as the request has them): the relaxation across
    budgets and GPU types when the budget binds."""
    from planner.spec.slo import Budget

    given = {g.name for g in req.gpus}
    gpus = [g for g in default_gpus() if g.name not in given] + list(req.gpus)
    sol = solve(replace(req, budget=Budget(), gpus=gpus, verify=False))
    return sol if sol.status != "infeasible" else None


def default_gpus(prices: dict[str, float] | None = None) -> list[GpuSpec]:
    from planner.spec.lookup import with_price

    out = []
    for g in load_gpus():
        out.append(with_price(g, prices[g.name], "user override") if prices and g.name in prices else g)
    return out
