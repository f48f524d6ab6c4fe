"""What the analytic load model predicts for one replica, and the helpers its callers share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from planner.catalog.calibration_schema import Calibration
from planner.catalog.loader import load_calibration, load_precisions
from planner.core.stats import Percentiles
from planner.perf.speculative import make_step_cost
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig

INF = Percentiles(mean=math.inf, p50=math.inf, p90=math.inf, p95=math.inf, p99=math.inf)


MAX_LOAD = 0.85
"""Default ceiling on a replica's offered Poisson load, as a fraction of its saturation throughput (the solver
sizes replicas to it; ``vlmplan estimate`` flags a load above it). Headroom for bursts and rate forecasts, and
the range where this model is checked: within 10% of the simulator on all 160 test points up to 80% of
saturation and on all but two (both pessimistic) of 40 points at 85%; at 90% its TPOT p95 is up to 14% and
TTFT p95 up to 12% optimistic (docs/validation/load.md)."""


@dataclass(frozen=True)
class LoadPrediction:
    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    """ms."""
    requests_per_s: float
    output_tokens_per_s: float
    saturated: bool
    """Offered load >= capacity: percentiles are then inf."""
    max_requests_per_s: float
    """Saturation throughput of one replica for this request shape."""
    mean_batch: float
    """Mean running sequences."""


def meets_slos(pred: LoadPrediction, slos: list[Any]) -> bool:
    """Not saturated, and every SLO (``metric`` ttft/tpot/e2e, ``stat``, ``limit_ms``) within its limit."""
    if pred.saturated:
        return False
    return all(getattr(getattr(pred, s.metric), s.stat) <= s.limit_ms for s in slos)


def build_step_cost(cfg: ResolvedConfig, calibration: Calibration | None = None) -> StepCost:
    """Step-time tables of a resolved ``cfg`` (see ``deployment.resolve``)."""
    cal = calibration or load_calibration(cfg.gpu.name)
    return make_step_cost(cfg, cal, load_precisions())
