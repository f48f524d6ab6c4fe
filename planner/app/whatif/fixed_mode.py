"""Fixed mode: the scenario's one configuration per point, through the memory model and the analytic load model
(``planner.load.analytic``) of one replica, or the simulator.

Points reuse the resolved config, memory breakdown, step-cost tables and request shapes of earlier points, so a
rate or image sweep of 1,000 points builds the step-cost tables once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from planner.app.whatif.base_case import Base, arrival_of, point_slos, point_workload
from planner.app.whatif.rows import empty_row, fill_config, fill_memory, fill_prediction, num, slo_verdict
from planner.core.errors import PlannerError, RequestError
from planner.spec.workload import Workload

if TYPE_CHECKING:
    from planner.spec.config import ResolvedConfig


@dataclass
class _ConfigEntry:
    """One resolved configuration of the sweep: built once, shared by every point that lands on it."""

    cfg: ResolvedConfig | None = None
    mem: Any = None
    cost: Any = None
    error: str = ""


SIM_REQUESTS = 2000
"""Requests per simulated point (``load="simulate"``): the warm-up and drain are left out of the statistics."""


class FixedEvaluator:
    """Memory + load model of one configuration per point, with caches shared across points.

    ``load``: 'analytic' (``planner.load.analytic``, representative request) or 'simulate' (the discrete-event
    simulator of ``planner.load.simulator`` over ``SIM_REQUESTS`` requests sampled from the workload's
    distributions, seed 0; the saturation throughput still comes from the analytic model).
    """

    def __init__(self, base: Base, load: str = "analytic") -> None:
        from planner.catalog.loader import load_engine, load_precisions

        if load not in ("analytic", "simulate"):
            raise RequestError(f"load model '{load}' is not analytic or simulate")
        self.load = load
        self.base = base
        self.engine = load_engine()
        self.precisions = load_precisions()
        self.configs: dict[tuple, _ConfigEntry] = {}
        self.shapes: dict[tuple, Any] = {}
        self.preds: dict[tuple, Any] = {}

    def _config(self, point: dict[str, Any]) -> tuple[tuple, _ConfigEntry]:
        c = self.base.scenario.config
        assert c is not None
        key = (point.get("gpu", c.gpu), int(point.get("tp", c.tp)), c.pp, point.get("precision", c.precision),
               point.get("kv", c.kv_cache_dtype), point.get("context", c.max_model_len),
               point.get("batch", c.max_num_seqs))
        hit = self.configs.get(key)
        if hit is not None:
            return key, hit
        entry = _ConfigEntry()
        try:
            entry = self._build(key)
        except PlannerError as exc:
            entry.error = str(exc)
        self.configs[key] = entry
        return key, entry

    def _build(self, key: tuple) -> _ConfigEntry:
        from planner.load.analytic import build_step_cost
        from planner.perf.memory import memory_breakdown
        from planner.spec.config import ServingConfig, resolve
        from planner.spec.lookup import resolve_gpu

        gpu_name, tp, pp, precision, kv, max_len, seqs = key
        c = self.base.scenario.config
        assert c is not None
        gpu = resolve_gpu(gpu_name, self.base.prices)
        batched = c.max_num_batched_tokens
        if batched is not None and seqs is not None and batched < seqs:
            batched = seqs
        asked = ServingConfig(model=self.base.model, gpu=gpu, tp=tp, pp=pp, precision=precision, kv_cache_dtype=kv,
                              max_model_len=max_len, max_num_seqs=seqs, max_num_batched_tokens=batched,
                              gpu_memory_utilization=c.gpu_memory_utilization,
                              mm_encoder_tp_mode=c.mm_encoder_tp_mode, limit_images_per_prompt=c.limit_images,
                              mm_processor_options=dict(c.mm_processor_kwargs), api_server_count=c.api_server_count)
        cfg = resolve(asked, self.engine)
        mem = memory_breakdown(cfg, self.engine, self.precisions)
        cost = build_step_cost(cfg) if mem.fits else None
        return _ConfigEntry(cfg=cfg, mem=mem, cost=cost)

    def _shape(self, cfg: ResolvedConfig, wl: Workload) -> Any:
        from planner.spec.shape import request_shape

        key = (id(cfg.model), tuple(sorted((k, repr(v)) for k, v in cfg.mm_processor_options.items())),
               tuple((i.width, i.height) for i in wl.images), wl.prompt_tokens, wl.output_tokens,
               wl.prefix_cache_hit)
        hit = self.shapes.get(key)
        if hit is None:
            hit = request_shape(cfg, wl)
            self.shapes[key] = hit
        return hit

    def evaluate(self, point: dict[str, Any]) -> dict[str, Any]:
        """The point's row: configuration, memory and shape, then the load model's latency and the verdict."""
        base = self.base
        wl = point_workload(base, point)
        row = empty_row(base, point, wl)
        key, entry = self._config(point)
        if entry.error:
            row.update(status="unsupported", binding=f"unsupported: {entry.error}")
            return row
        cfg, mem = entry.cfg, entry.mem
        assert cfg is not None
        fill_config(row, cfg)
        row["gpus"] = cfg.num_gpus
        row["replicas"] = 1
        fill_memory(row, mem)
        try:
            shape = self._shape(cfg, wl)
        except PlannerError as exc:
            row.update(status="unsupported", binding=f"unsupported: {exc}")
            return row
        row["visual_tokens"] = shape.visual_tokens
        cost_per_hour = cfg.num_gpus * cfg.gpu.price.price_usd_per_gpu_hour
        row["cost_per_hour"] = num(cost_per_hour)
        if not mem.fits:
            row.update(status="does not fit", binding=f"memory: {mem.reason}")
            return row
        need = shape.prompt_tokens + shape.output_tokens
        if need > cfg.max_model_len:
            row.update(status="too long", binding=f"context: the request needs {need:,} tokens > max_model_len "
                                                  f"{cfg.max_model_len:,}")
            return row
        pred = self._predict(key, entry, shape, wl)
        fill_prediction(row, pred, 1, cost_per_hour)
        row.update(self._verdict(point, wl, pred, cfg, cost_per_hour))
        return row

    def _predict(self, key: tuple, entry: _ConfigEntry, shape: Any, wl: Workload) -> Any:
        """The point's latency from the load model (cached per configuration, shape and load)."""
        from planner.load.analytic import predict

        arrival, rate, conc = arrival_of(wl)
        pkey = (key, shape, arrival, rate, conc)
        pred = self.preds.get(pkey)
        if pred is None:
            assert entry.cfg is not None
            pred = predict(entry.cost, entry.cfg, shape, arrival, rate, conc, entry.mem.kv_capacity_tokens)
            self.preds[pkey] = pred
        if self.load == "simulate":
            skey = (pkey, repr(wl.model_dump(exclude={"name", "rate_per_s", "concurrency", "arrival"})))
            sim = self.preds.get(skey)
            if sim is None:
                sim = _simulate(entry, wl, arrival, rate, conc, pred.max_requests_per_s)
                self.preds[skey] = sim
            pred = sim
        return pred

    def _verdict(self, point: dict[str, Any], wl: Workload, pred: Any, cfg: ResolvedConfig, cost_per_hour: float
                 ) -> dict[str, Any]:
        """Status and binding line: saturated, over budget, missing an SLO, or ok (with the binding SLO or the
        load as a share of capacity)."""
        arrival, rate, conc = arrival_of(wl)
        ok, binding = slo_verdict(pred, point_slos(self.base, point))
        if pred.saturated:
            offered = f"{rate:g} req/s" if arrival == "poisson" else f"{conc} clients"
            return dict(status="saturated", binding=f"load: {offered} exceeds the capacity of "
                                                    f"{pred.max_requests_per_s:.3g} req/s")
        budget_msg = _budget_verdict(self.base, cfg, cost_per_hour)
        if budget_msg:
            return dict(status="over budget", binding=budget_msg)
        if not ok:
            return dict(status="misses slo", binding=binding)
        if not binding and arrival == "poisson" and rate:
            cap = pred.max_requests_per_s
            binding = f"load: {rate / cap * 100:.0f}% of capacity ({cap:.3g} req/s)"
        return dict(feasible=True, status="ok", binding=binding)


def _simulate(entry: _ConfigEntry, wl: Workload, arrival: str, rate: float | None, conc: int | None,
              max_requests_per_s: float) -> Any:
    """A LoadPrediction from the discrete-event simulator (percentiles of the measured requests)."""
    from planner.core.stats import Percentiles
    from planner.load.analytic import LoadPrediction
    from planner.load.simulator import build_requests, percentiles, simulate

    assert entry.cfg is not None
    reqs = build_requests(entry.cfg, wl, entry.cost, SIM_REQUESTS, seed=0)
    res = simulate(entry.cost, reqs, entry.mem.kv_capacity_tokens, arrival, rate, conc, seed=0)

    def pct(x: Any) -> Percentiles:
        return Percentiles(**percentiles(x))

    return LoadPrediction(ttft=pct(res.ttft_ms), tpot=pct(res.tpot_ms), e2e=pct(res.e2e_ms),
                          requests_per_s=res.requests_per_s, output_tokens_per_s=res.output_tokens_per_s,
                          saturated=bool(res.saturated), max_requests_per_s=max_requests_per_s,
                          mean_batch=res.mean_batch)


def _budget_verdict(base: Base, cfg: ResolvedConfig, cost_per_hour: float) -> str:
    limit = base.budget.limit(cfg.gpu.name)
    if limit is None:
        return f"budget: {cfg.gpu.name} is not in the budget ({base.budget.describe()})"
    if cfg.num_gpus > limit:
        return f"budget: {cfg.num_gpus} x {cfg.gpu.name} > {limit} allowed"
    cap = base.budget.max_usd_per_hour
    if cap is not None and cost_per_hour > cap + 1e-9:
        return f"budget: ${cost_per_hour:.2f}/h > ${cap:g}/h"
    return ""
