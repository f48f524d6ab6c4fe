"""The analytic model's entry point: one replica, one request shape, one arrival process."""

from __future__ import annotations

from dataclasses import replace

from planner.load.analytic.api_queue import ApiQueue, with_frontend
from planner.load.analytic.closed import predict_closed
from planner.load.analytic.curves import curves
from planner.load.analytic.lone import predict_single
from planner.load.analytic.poisson import predict_poisson
from planner.load.analytic.prediction import LoadPrediction
from planner.load.analytic.waves import predict_waves
from planner.perf.frontend import shape_frontend_ms
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape


def predict(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, arrival: str, rate_per_s: float | None,
            concurrency: int | None, kv_capacity_tokens: int, api_queue: bool = True) -> LoadPrediction:
    """Latency percentiles and throughput of ONE replica of ``cfg`` serving ``shape``.

    ``arrival``: 'single' (one request alone), 'poisson' (``rate_per_s``;
    'trace' is taken as Poisson at the given rate) or 'closed'
    (``concurrency`` clients with zero think time). ``api_queue`` False: no API-server queue (the engine alone,
    the front end a delay only).
    """
    cur = curves(cost, cfg, shape, kv_capacity_tokens)
    waves = None
    api = ApiQueue.of(cost, cfg, shape) if api_queue else ApiQueue(servers=1, hold_ms=0.0, cs2=0.0)
    if arrival == "single" or (arrival == "closed" and concurrency == 1):
        pred = predict_single(cost, cfg, shape, cur)
    elif arrival in ("poisson", "trace"):
        if rate_per_s is None or rate_per_s <= 0:
            raise ValueError("poisson arrival needs a positive rate_per_s")
        pred = predict_poisson(cost, cfg, shape, cur, float(rate_per_s), api)
    elif arrival == "closed":
        if concurrency is None or concurrency < 1:
            raise ValueError("closed-loop arrival needs concurrency >= 1")
        waves = predict_waves(cost, cfg, shape, cur, int(concurrency), cfg.async_scheduling,
                              shape_frontend_ms(cost.cal, shape))
        pred = waves or predict_closed(cost, cfg, shape, cur, int(concurrency))
    else:
        raise ValueError(f"arrival '{arrival}' is not single, poisson or closed")
    pred = with_frontend(pred, shape_frontend_ms(cost.cal, shape), closed=arrival in ("single", "closed"))
    if arrival == "closed" and (concurrency or 1) > 1 and (not waves or pred.requests_per_s >= 0.98 * api.max_rate):
        # (Waves model the API servers' input work in front of the engine; their capacity still caps the loop.)
        pred = api.closed_loop(pred, int(concurrency or 1))
    if pred.requests_per_s > api.max_rate:  # saturated by the API servers, or a loop they slow down
        slow = api.max_rate / pred.requests_per_s
        pred = replace(pred, requests_per_s=api.max_rate, output_tokens_per_s=pred.output_tokens_per_s * slow)
    return replace(pred, max_requests_per_s=min(pred.max_requests_per_s, api.max_rate))
