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

When no plan exists, the explanation names the binding constraint with
numbers and the nearest relaxation (``Infeasibility``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ortools.sat.python import cp_model

from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_precisions
from planner.catalog.schema import GpuSpec, KvCacheDtype, ModelSpec, Precision
from planner.deployment import ServingConfig, resolve
from planner.errors import PlannerError
from planner.estimate import Percentiles, RequestShape, request_shape
from planner.load.analytic import LoadPrediction, build_step_cost, predict
from planner.memory import MemoryBreakdown, memory_breakdown
from planner.request import Budget, Slo
from planner.vision_tokens import image_tokens
from planner.workload import Workload

Objective = Literal["cost", "gpus", "latency"]
TP_CHOICES = (1, 2, 4, 8)
SEQ_CHOICES = (8, 16, 32, 64, 128, 256)
MAX_REPLICAS = 256


@dataclass(frozen=True)
class SolveRequest:
    model: ModelSpec
    workloads: list[Workload]
    slos: list[Slo]
    budget: Budget
    gpus: list[GpuSpec]
    """GPU types allowed (catalog, restricted by --gpus, with price overrides)."""
    precisions: list[Precision] = field(default_factory=lambda: ["bf16", "fp8", "int8", "int4"])
    kv_cache_dtypes: list[KvCacheDtype] = field(default_factory=lambda: ["auto", "fp8"])
    objective: Objective = "cost"
    max_replicas: int = MAX_REPLICAS


@dataclass(frozen=True)
class Candidate:
    workload: str
    cfg: ServingConfig
    shape: RequestShape
    replicas: int
    memory: MemoryBreakdown
    prediction: LoadPrediction
    """Per replica, at its share of the load."""

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


def _milli(usd: float) -> int:
    """USD -> integer milli-USD: the single float-to-integer scaling of the model."""
    return int(round(usd * 1000))


def meets(pred: LoadPrediction, slos: list[Slo]) -> bool:
    if pred.saturated:
        return False
    for s in slos:
        p: Percentiles = getattr(pred, s.metric)
        if getattr(p, s.stat) > s.limit_ms:
            return False
    return True


def _max_model_len(model: ModelSpec, shape: RequestShape) -> int:
    need = shape.prompt_tokens + shape.output_tokens
    return min(model.decoder.max_position_embeddings, math.ceil(need / 1024) * 1024)


def _mm_options(model: ModelSpec, workload: Workload) -> tuple[dict[str, int], dict[str, object]]:
    """--limit-mm-per-prompt and a processor cap matching the planned images
    (otherwise vLLM reserves encoder memory for its largest image)."""
    rule = model.visual_tokens
    if rule is None:
        return {}, {}
    limit = {"image": max(1, len(workload.images))}
    if not workload.images:
        return {"image": 0}, {}
    if rule.rule in ("qwen2_vl", "qwen3_vl"):
        sizes = [image_tokens(rule, i.width, i.height) for i in workload.images]
        return limit, {"max_pixels": max(t.resized_width * t.resized_height for t in sizes)}
    if rule.rule == "internvl":
        tiles = [image_tokens(rule, i.width, i.height).num_tiles for i in workload.images]
        return limit, {"max_dynamic_patch": max(1, max(tiles) - (1 if max(tiles) > 1 else 0))}
    return limit, {}


def _desc(cfg: ServingConfig) -> str:
    return f"{cfg.tp * cfg.pp} x {cfg.gpu.name} {cfg.precision}" + (" kv-fp8" if cfg.kv_cache_dtype == "fp8" else "")


def _replicas_for(cost_pred, workload: Workload, slos: list[Slo], max_replicas: int
                  ) -> tuple[int, LoadPrediction] | None:
    """Fewest replicas whose per-replica share of the load meets every SLO.

    Latency is non-decreasing in the per-replica load, so the count is the
    first r that meets the SLOs. The search starts at the capacity bound
    ceil(rate / max_requests_per_s) and gallops up, then bisects back.
    """
    if workload.arrival == "single":
        pred = cost_pred("single", None, None)
        return (1, pred) if meets(pred, slos) else None
    total: float = float(workload.concurrency or 1) if workload.arrival == "closed" else (workload.rate_per_s or 0.0)

    def at(r: int) -> LoadPrediction:
        if workload.arrival == "closed":
            return cost_pred("closed", None, math.ceil(total / r))
        return cost_pred("poisson", total / r, None)

    first = at(1)
    if meets(first, slos):
        return 1, first
    lo = 1  # known bad
    hi = max(2, math.ceil(total / first.max_requests_per_s)) if workload.arrival == "poisson" else 2
    limit = min(max_replicas, int(total)) if workload.arrival == "closed" else max_replicas
    hi = min(hi, limit)
    pred = at(hi)
    while not meets(pred, slos):
        if hi >= limit:
            return None
        lo, hi = hi, min(limit, hi * 2)
        pred = at(hi)
    best = (hi, pred)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        p = at(mid)
        if meets(p, slos):
            hi, best = mid, (mid, p)
        else:
            lo = mid
    return best


def candidates_for(req: SolveRequest, workload: Workload, screen: Screening) -> list[Candidate]:
    engine = load_engine()
    precisions = load_precisions()
    model = req.model
    limit_mm, mm_opts = _mm_options(model, workload)
    out: list[Candidate] = []
    for gpu in req.gpus:
        cap = req.budget.limit(gpu.name)
        if cap is None:
            continue
        cal = load_calibration(gpu.name)
        for precision in req.precisions:
            if precision not in gpu.precisions:
                continue
            if precision in ("int4", "int8") and precision not in model.quantized_checkpoints:
                # vLLM cannot quantize to W4A16/W8A8 at load time: a checkpoint must exist.
                note = f"{precision}: no known pre-quantized checkpoint of {model.name}"
                if note not in screen.unsupported:
                    screen.unsupported.append(note)
                continue
            for kv in req.kv_cache_dtypes:
                if kv not in gpu.kv_cache_dtypes:
                    continue
                for tp, pp in _parallel_choices(model, gpu):
                    base = ServingConfig(model=model, gpu=gpu, tp=tp, pp=pp, precision=precision,
                                         kv_cache_dtype=kv, limit_images_per_prompt=limit_mm.get("image"),
                                         mm_processor_options=mm_opts)
                    try:
                        shape = request_shape(base, workload)
                        base = ServingConfig(**{**base.__dict__, "max_model_len": _max_model_len(model, shape)})
                        out.extend(_screen_config(req, workload, base, shape, engine, precisions, cal, screen))
                    except PlannerError as exc:
                        screen.unsupported.append(f"{_desc(base)}: {exc}")
    return out


def _parallel_choices(model: ModelSpec, gpu: GpuSpec) -> list[tuple[int, int]]:
    heads = model.decoder.num_attention_heads
    tps = [t for t in TP_CHOICES if t <= gpu.gpus_per_node and heads % t == 0]
    choices = [(t, 1) for t in tps]
    # Pipeline stages across nodes once a node is full.
    if gpu.gpus_per_node in tps:
        choices += [(gpu.gpus_per_node, 2)]
    return choices


def _screen_config(req: SolveRequest, workload: Workload, base: ServingConfig, shape: RequestShape, engine,
                   precisions, cal, screen: Screening) -> list[Candidate]:
    """All max_num_seqs choices of one (GPU, precision, KV dtype, TP, PP).

    The step-time model does not depend on max_num_seqs, so it is built once;
    nor does a lone request's latency, so a config whose lone request already
    misses an SLO is dropped before any load is modelled.
    """
    out: list[Candidate] = []
    cost = None
    for seqs in SEQ_CHOICES:
        cfg = resolve(ServingConfig(**{**base.__dict__, "max_num_seqs": seqs}), engine)
        mem = memory_breakdown(cfg, engine, precisions)
        if seqs == SEQ_CHOICES[0]:
            _note_memory(screen, cfg, mem)
        if not mem.fits:
            continue
        screen.memory_fits += 1
        if cost is None:
            cost = build_step_cost(cfg, cal)

        def cost_pred(arrival: str, rate: float | None, conc: int | None,
                      cost=cost, cfg=cfg, mem=mem) -> LoadPrediction:
            return predict(cost, cfg, shape, arrival, rate, conc, mem.kv_capacity_tokens)

        if seqs == SEQ_CHOICES[0] or not out:
            alone = cost_pred("single", None, None)
            for s in req.slos:
                value = float(getattr(getattr(alone, s.metric), s.stat))
                if s.key not in screen.best or value < screen.best[s.key][0]:
                    screen.best[s.key] = (value, _desc(cfg))
            if not meets(alone, req.slos):
                return out
        found = _replicas_for(cost_pred, workload, req.slos, req.max_replicas)
        if found is None:
            continue
        replicas, pred = found
        out.append(Candidate(workload.name, cfg, shape, replicas, mem, pred))
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
    def key(c: Candidate) -> tuple:
        return (c.gpus, c.prediction.ttft.p95, c.cfg.precision, c.cfg.kv_cache_dtype, c.cfg.tp, c.cfg.pp,
                c.cfg.max_num_seqs)

    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in cands:
        groups.setdefault((c.workload, c.cfg.gpu.name), []).append(c)
    kept: list[Candidate] = []
    for _, group in sorted(groups.items()):
        group.sort(key=key)
        if objective != "latency":
            kept.append(group[0])
            continue
        best_ttft = math.inf
        for c in group:
            if c.prediction.ttft.p95 < best_ttft:
                kept.append(c)
                best_ttft = c.prediction.ttft.p95
    return kept


def assign(workloads: list[str], cands: list[Candidate], budget: Budget, objective: Objective
           ) -> tuple[str, list[Candidate]]:
    """Stage 2: CP-SAT picks one candidate per workload."""
    model = cp_model.CpModel()
    x = {i: model.new_bool_var(f"x{i}") for i in range(len(cands))}
    for w in workloads:
        idx = [i for i, c in enumerate(cands) if c.workload == w]
        if not idx:
            return "infeasible", []
        model.add_exactly_one(x[i] for i in idx)
    for gpu in sorted({c.cfg.gpu.name for c in cands}):
        limit = budget.limit(gpu)
        if limit is None:
            continue
        model.add(sum(cands[i].gpus * x[i] for i in x if cands[i].cfg.gpu.name == gpu) <= limit)
    cost = [_milli(c.cost_per_hour) for c in cands]
    if budget.max_usd_per_hour is not None:
        model.add(sum(cost[i] * x[i] for i in x) <= _milli(budget.max_usd_per_hour))
    if objective == "cost":
        weights = cost
    elif objective == "gpus":
        # GPUs first, cost as the tie-break.
        weights = [c.gpus * 10**9 + k for c, k in zip(cands, cost)]
    else:
        weights = [int(c.prediction.ttft.p95 * 1000) for c in cands]
    model.minimize(sum(weights[i] * x[i] for i in x))
    solver = cp_model.CpSolver()
    solver.parameters.random_seed = 0
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = 10.0
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return "infeasible", []
    chosen = [cands[i] for i in x if solver.value(x[i])]
    order = {w: k for k, w in enumerate(workloads)}
    chosen.sort(key=lambda c: order[c.workload])
    return ("optimal" if status == cp_model.OPTIMAL else "feasible"), chosen


def solve(req: SolveRequest) -> Solution:
    import time

    t0 = time.perf_counter()
    screens: dict[str, Screening] = {}
    all_cands: list[Candidate] = []
    for w in req.workloads:
        screens[w.name] = Screening()
        all_cands.extend(candidates_for(req, w, screens[w.name]))
    kept = prune(all_cands, req.objective)
    names = [w.name for w in req.workloads]
    status, chosen = assign(names, kept, req.budget, req.objective)
    if status == "infeasible":
        explanation, relaxation = explain_infeasible(req, screens, kept)
        return Solution("infeasible", [], [], [], explanation, relaxation, screens, time.perf_counter() - t0)
    binding = binding_constraints(req, chosen, kept)
    alternatives = _alternatives(chosen, all_cands)
    return Solution(status, chosen, alternatives, binding, "", "", screens,  # type: ignore[arg-type]
                    time.perf_counter() - t0)


def _alternatives(chosen: list[Candidate], cands: list[Candidate], n: int = 3) -> list[Candidate]:
    """Cheapest candidates on other GPU types or precisions than the chosen one (first workload)."""
    if not chosen:
        return []
    c0 = chosen[0]
    best: dict[tuple[str, str], Candidate] = {}
    for c in cands:
        if c.workload != c0.workload:
            continue
        k = (c.cfg.gpu.name, c.cfg.precision)
        if k == (c0.cfg.gpu.name, c0.cfg.precision):
            continue
        if k not in best or (c.cost_per_hour, c.prediction.ttft.p95) < (best[k].cost_per_hour,
                                                                          best[k].prediction.ttft.p95):
            best[k] = c
    return sorted(best.values(), key=lambda c: (c.cost_per_hour, c.prediction.ttft.p95, c.cfg.gpu.name))[:n]


def binding_constraints(req: SolveRequest, chosen: list[Candidate], kept: list[Candidate]) -> list[str]:
    out: list[str] = []
    for c in chosen:
        if req.slos:
            head = sorted(((s.limit_ms - c.metric(s.key)) / s.limit_ms, s) for s in req.slos)[0]
            room, s = head
            out.append(f"{c.workload}: {s.key} {c.metric(s.key):.1f} ms of {s.limit_ms:g} ms "
                       f"({room * 100:.0f}% headroom) is the tightest SLO; {c.replicas} replica(s) needed")
        cheapest = min((k for k in kept if k.workload == c.workload), key=lambda k: k.cost_per_hour)
        if cheapest.cost_per_hour < c.cost_per_hour - 1e-9:
            out.append(f"{c.workload}: budget/inventory: the cheapest option ({cheapest.gpus} x "
                       f"{cheapest.cfg.gpu.name}, ${cheapest.cost_per_hour:.2f}/h) does not fit the budget")
    return out


def explain_infeasible(req: SolveRequest, screens: dict[str, Screening], kept: list[Candidate]) -> tuple[str, str]:
    for w in req.workloads:
        s = screens[w.name]
        if s.memory_fits == 0:
            if s.largest_replica_gib == 0:
                return (f"no allowed GPU supports the requested precisions "
                        f"({', '.join(req.precisions)}) for {req.model.name}",
                        "allow more GPU types or precisions (--gpus / --precisions)")
            return (f"memory: weights need {s.smallest_weights_gib:.0f} GiB at {s.smallest_weights_config} "
                    f"(plus KV cache and activations); the largest allowed replica has {s.largest_replica_desc}",
                    "allow larger GPUs or more of them per replica, or a lower precision (--precisions int4)")
        options = [k for k in kept if k.workload == w.name]
        if not options:
            worst = None
            for slo in req.slos:
                best = s.best.get(slo.key)
                if best and best[0] > slo.limit_ms:
                    worst = (slo, best)
                    break
            if worst:
                slo, (value, where) = worst
                return (f"latency: the lowest achievable {slo.metric} {slo.stat} is {value:.0f} ms "
                        f"> {slo.limit_ms:g} ms (best: {where}, one request alone)",
                        f"relax the SLO to {slo.key}={math.ceil(value * 1.05)}ms")
            return (f"load: no configuration serves workload '{w.name}' within the SLOs with at most "
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
    relax = "raise the budget to " + ", ".join(f"{n}x{g}" for g, n in need.items())
    if req.budget.max_usd_per_hour is not None:
        relax += f" and ${math.ceil(cheapest_cost * 100) / 100:g}/h"
    return msg, relax


def default_gpus(prices: dict[str, float] | None = None) -> list[GpuSpec]:
    from planner.resolve import with_price

    out = []
    for g in load_gpus():
        out.append(with_price(g, prices[g.name], "user override") if prices and g.name in prices else g)
    return out
