"""NCCL all-reduce inside a CUDA graph, as vLLM replays tensor-parallel decode steps.

Ring model ``latency + hops x hop latency + 2(n-1)/n x bytes / (link x efficiency)``: the per-hop latency is only
identifiable from runs over more than one ring size (microbench.py ``--only allreduce`` on 4 GPUs runs 2 and 4).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.calibrate.fit.fitted import Fitted, calibration_with, log_fit, mape_pct
from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import GpuSpec
from planner.perf.roofline import Roofline


def fit_allreduce(ar: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    """Latency and bus efficiency (and the latency per extra GPU, given several ring sizes) over the all-reduces
    timed inside a CUDA graph (``graph_time_us``): eager timings include launch overhead vLLM does not pay."""
    pts = [p for p in ar["allreduce"]["points"] if p.get("graph_time_us")]
    if not pts:
        return {}
    meas = np.array([p["graph_time_us"] * 1e-6 for p in pts])

    def predict(v: dict[str, float]) -> np.ndarray:
        rf = Roofline(gpu, calibration_with(base, v))
        return np.array([rf.allreduce("ar", p["bytes"], p["world_size"]).time_s for p in pts])

    ws = sorted({p["world_size"] for p in pts})
    names = ["allreduce_latency_us", "allreduce_bus_efficiency"]
    x0, lo, hi = [10.0, 0.7], [0.1, 0.05], [200.0, 1.5]
    if len(ws) > 1:
        # Several ring sizes: the growth of the latency with the GPU count is identifiable.
        names, x0, lo, hi = names + ["allreduce_hop_latency_us"], x0 + [2.0], lo + [0.0], hi + [50.0]
    fit = log_fit(names, x0, (lo, hi), predict, meas)
    how = (f"log least squares of latency + ring bytes over NCCL all-reduce inside a CUDA graph, {ws} GPUs, "
           f"{pts[0]['bytes']}..{pts[-1]['bytes']} bytes")
    return fit.fitted(names, how, len(pts), mape_pct(predict(fit.values), meas))

