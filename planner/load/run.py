"""`vlmplan estimate` under load: simulate the workload, find the saturation throughput and the SLO headroom."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import PrecisionTable
from planner.core.stats import Percentiles
from planner.load.analytic import MAX_LOAD, predict
from planner.load.simulator import build_requests, percentiles, simulate
from planner.load.slo_check import meets
from planner.load.summary import LoadSummary
from planner.perf.speculative import make_step_cost
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape
from planner.spec.workload import Workload

POISSON_REQUESTS = 12000
"""Requests simulated for an open-loop estimate. Near saturation a short run is both noisy and optimistic: for
Qwen2.5-VL-7B on an H100 at 80% load (8 seeds each), 2,000 requests read the TTFT p95 9% below the 145.6 ms of
long runs with a 7.4% spread; 12,000 within 0.5%, spread 1.7% (tests/benchmarks/bench_load.py, run length)."""
SLO_SEARCH_REQUESTS = 8000
SLO_SEARCH_TOL = 0.015
"""The SLO rate search stops when its bracket is narrower than this fraction of the rate."""


@dataclass(frozen=True)
class LoadRun:
    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    requests_per_s: float
    output_tokens_per_s: float
    note: str
    summary: LoadSummary


def default_requests(workload: Workload) -> int:
    """Requests to simulate: enough for stable p99s, a few cycles of a closed loop."""
    if workload.arrival == "closed":
        return int(min(20000, max(2000, 8 * (workload.concurrency or 1))))
    if workload.arrival == "trace" and workload.trace_s:
        return max(len(workload.trace_s), 2000)
    return POISSON_REQUESTS


def to_percentiles(x: np.ndarray) -> Percentiles:
    p = percentiles(x)
    if any(math.isnan(v) for v in p.values()):
        return Percentiles.constant(0.0)
    return Percentiles(**p)


def saturation_throughput(cost: StepCost, reqs_for: Any, kv_capacity_tokens: int, shape: RequestShape,
                          seed: int) -> float:
    """Requests/s of the replica with every slot busy: a closed loop of as many clients as it holds
    (max_num_seqs, or the KV cache at the requests' final context; more would only queue or thrash
    the KV cache with preemptions)."""
    cfg = cost.cfg
    final = shape.prompt_tokens + shape.output_tokens + 16
    clients = max(1, min(cfg.max_num_seqs, int(kv_capacity_tokens // final)))
    n = int(min(20000, max(2000, 4 * clients)))
    res = simulate(cost, reqs_for(n), kv_capacity_tokens, "closed", concurrency=clients, seed=seed)
    return res.requests_per_s


def run_load(cfg: ResolvedConfig, cal: Calibration, precisions: PrecisionTable, workload: Workload,
             shape: RequestShape, kv_capacity_tokens: int, slos: list[Any], requests: int | None,
             seed: int) -> LoadRun:
    """Simulate ``workload`` on one replica of the resolved ``cfg``."""
    cost = make_step_cost(cfg, cal, precisions)
    n = requests or default_requests(workload)
    cache: dict[int, Any] = {}

    def reqs_for(k: int) -> Any:
        if k not in cache:
            cache[k] = build_requests(cfg, workload, cost, k, seed)
        return cache[k]

    res = simulate(cost, reqs_for(n), kv_capacity_tokens, workload.arrival, workload.rate_per_s,
                   workload.concurrency, workload.trace_s, seed=seed)
    sat_rate = saturation_throughput(cost, reqs_for, kv_capacity_tokens, shape, seed)
    analytic = predict(cost, cfg, shape, "single", None, None, kv_capacity_tokens)
    met = max_rate = max_conc = None
    if slos:
        met = meets(res, slos)
        if workload.arrival in ("poisson", "trace"):
            guess = _analytic_max_rate(cost, cfg, shape, kv_capacity_tokens, slos)
            max_rate = _slo_max_rate(cost, reqs_for, kv_capacity_tokens, slos, sat_rate, seed, guess)
        elif workload.arrival == "closed":
            max_conc = _slo_max_concurrency(cost, reqs_for, kv_capacity_tokens, slos, seed,
                                            hi=max(2, 2 * cfg.max_num_seqs))
    what = {"poisson": f"Poisson {workload.rate_per_s:g} req/s" if workload.rate_per_s else "Poisson",
            "closed": f"{workload.concurrency} closed-loop clients",
            "trace": f"trace of {len(workload.trace_s or ())} arrivals"}[workload.arrival]
    note = f"simulated: {what}, {n} requests, seed {seed}"
    if res.saturated:
        note += f"; SATURATED (capacity ~{sat_rate:.3g} req/s): the queue grows, percentiles depend on run length"
    summary = LoadSummary(
        method="simulator", arrival=workload.arrival, rate_per_s=workload.rate_per_s,
        concurrency=workload.concurrency, requests_simulated=n, seed=seed, saturated=res.saturated,
        saturation_requests_per_s=sat_rate, analytic_max_requests_per_s=analytic.max_requests_per_s,
        mean_batch=res.mean_batch, preemptions=res.preemptions,
        slos=tuple(s.describe() if hasattr(s, "describe") else str(s) for s in slos),
        slo_met=met, slo_max_rate_per_s=max_rate, slo_max_concurrency=max_conc,
        offered_load=(workload.rate_per_s / sat_rate if workload.arrival in ("poisson", "trace")
                      and workload.rate_per_s and sat_rate > 0 else None),
        max_load=MAX_LOAD,
    )
    return LoadRun(ttft=to_percentiles(res.ttft_ms), tpot=to_percentiles(res.tpot_ms),
                   e2e=to_percentiles(res.e2e_ms), requests_per_s=res.requests_per_s,
                   output_tokens_per_s=res.output_tokens_per_s, note=note, summary=summary)


def _analytic_max_rate(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, kv: int, slos: list[Any]) -> float:
    """The analytic model's highest Poisson rate meeting the SLOs (bisection, about 1 ms a step); 0 if none."""
    top = predict(cost, cfg, shape, "single", None, None, kv).max_requests_per_s
    lo, hi = 0.0, top
    for _ in range(30):
        mid = (lo + hi) / 2
        if mid <= 0:
            break
        if meets(predict(cost, cfg, shape, "poisson", mid, None, kv), slos):
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-3 * top:
            break
    return lo


def _slo_max_rate(cost: StepCost, reqs_for: Any, kv: int, slos: list[Any], sat_rate: float, seed: int,
                  guess: float = 0.0) -> float:
    """Highest Poisson rate whose simulation meets the SLOs: bisection (same seed at every rate: common random
    numbers), bracketed first around the analytic model's answer ``guess`` (within 10% of the simulator's
    percentiles on its test grid), until the bracket is narrower than ``SLO_SEARCH_TOL``. 0 when even a light
    load misses the SLOs."""
    reqs = reqs_for(SLO_SEARCH_REQUESTS)

    def ok(rate: float) -> bool:
        return meets(simulate(cost, reqs, kv, "poisson", rate_per_s=rate, seed=seed), slos)

    lo, hi = 0.0, sat_rate
    if 0 < guess < sat_rate:
        a, b = 0.8 * guess, min(sat_rate, 1.25 * guess)
        if ok(a):
            lo = a
            if b < sat_rate and ok(b):
                lo = b
            else:
                hi = b
        else:
            hi = a
    if lo <= 0:
        probe = 0.02 * sat_rate
        if probe >= hi or not ok(probe):
            return 0.0
        lo = probe
    for _ in range(12):
        if hi - lo <= SLO_SEARCH_TOL * hi:
            break
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _slo_max_concurrency(cost: StepCost, reqs_for: Any, kv: int, slos: list[Any], seed: int, hi: int) -> int:
    """Most closed-loop clients meeting the SLOs (0: not even one)."""

    def ok(c: int) -> bool:
        n = int(min(20000, max(SLO_SEARCH_REQUESTS, 6 * c)))
        return meets(simulate(cost, reqs_for(n), kv, "closed", concurrency=c, seed=seed), slos)

    if not ok(1):
        return 0
    lo = 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo
