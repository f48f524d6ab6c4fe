"""One request with the engine to itself, as a load prediction (``planner.perf.lone``'s latency)."""

from __future__ import annotations

from planner.core.stats import Percentiles
from planner.load.analytic.curves import Curves
from planner.load.analytic.prediction import LoadPrediction
from planner.perf.lone import lone_request, prefill_alone_ms
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape


def predict_single(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, cur: Curves) -> LoadPrediction:
    """The lone request's latency, constant; its throughput one request per e2e."""
    lone = lone_request(cost, cfg, shape)
    e2e = lone.e2e_ms
    return LoadPrediction(ttft=Percentiles.constant(lone.ttft_ms), tpot=Percentiles.constant(lone.tpot_ms),
                          e2e=Percentiles.constant(e2e), requests_per_s=1e3 / e2e,
                          output_tokens_per_s=shape.output_tokens * 1e3 / e2e, saturated=False,
                          max_requests_per_s=cur.max_rate, mean_batch=1.0)


def alone_ms(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, vision_ms: float) -> float:
    """A request's encoder call and prefill with the engine to itself."""
    return vision_ms + prefill_alone_ms(cost, cfg, shape)
