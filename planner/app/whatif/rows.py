"""One row per point: the columns every mode fills, in one fixed order, and the SLO verdict in words."""

from __future__ import annotations

import math
from typing import Any

from planner.app.whatif.base_case import Base, arrival_of, image_label, point_slos
from planner.app.whatif.vary import COLUMN, point_label
from planner.core.units import GIB
from planner.load.slo_check import tightest
from planner.spec.config import ResolvedConfig
from planner.spec.slo import Slo
from planner.spec.workload import Workload


def num(x: float | None, nd: int = 4) -> float | None:
    """A JSON-friendly number: rounded, None for a missing or infinite value (a saturated queue)."""
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), nd)


def empty_row(base: Base, point: dict[str, Any], wl: Workload) -> dict[str, Any]:
    """A point's row before it is evaluated: every column present (CSV and JSON keep one shape), the point's own
    values filled in."""
    arrival, rate, conc = arrival_of(wl)
    row: dict[str, Any] = {
        "point": point_label(point),
        "mode": "fixed" if base.fixed else "solve",
        "model": base.model.name,
        "workload": point.get("workload", wl.name),
        "topology": point.get("topology", "aggregated"),
        "gpu": "", "gpus": None, "tp": None, "pp": None, "replicas": None, "precision": "",
        "kv_cache_dtype": "", "max_model_len": None, "max_num_seqs": None,
        "prompt_tokens": wl.prompt_tokens, "visual_tokens": None, "output_tokens": wl.output_tokens,
        "image": image_label(wl), "arrival": arrival, "rate_per_s": rate, "concurrency": conc,
        "slo": "+".join(f"{s.key}={s.limit_ms:g}ms" for s in point_slos(base, point)),
        "feasible": False, "status": "", "binding": "",
        "cost_per_hour": None, "cost_per_1k_requests": None, "requests_per_s": None, "max_requests_per_s": None,
        "output_tokens_per_s": None, "saturated": None, "mean_batch": None, "calibration": "",
    }
    for metric in ("ttft", "tpot", "e2e"):
        for stat in ("p50", "p95", "p99"):
            row[f"{metric}_{stat}_ms"] = None
    for k in ("weights_gib", "kv_cache_gib", "activations_gib", "overhead_gib", "total_gib", "usable_gib",
              "gpu_memory_gib", "kv_capacity_tokens"):
        row[k] = None
    for dim in ("gpu", "precision", "kv", "tp", "context", "batch"):
        if dim in point:
            row[COLUMN[dim]] = point[dim]
    return row


def fill_prediction(row: dict[str, Any], pred: Any, replicas: int, cost_per_hour: float) -> None:
    for metric in ("ttft", "tpot", "e2e"):
        p = getattr(pred, metric)
        for stat in ("p50", "p95", "p99"):
            row[f"{metric}_{stat}_ms"] = num(getattr(p, stat), 3)
    rps = pred.requests_per_s * replicas
    row["requests_per_s"] = num(rps)
    row["max_requests_per_s"] = num(pred.max_requests_per_s * replicas)
    row["output_tokens_per_s"] = num(pred.output_tokens_per_s * replicas, 2)
    row["saturated"] = bool(pred.saturated)
    row["mean_batch"] = num(pred.mean_batch, 2)
    row["cost_per_hour"] = num(cost_per_hour)
    row["cost_per_1k_requests"] = num(cost_per_hour / (rps * 3.6)) if rps > 0 and not pred.saturated else None


def fill_memory(row: dict[str, Any], mem: Any) -> None:
    row["weights_gib"] = num(mem.weights_bytes / GIB, 3)
    row["kv_cache_gib"] = num(max(mem.kv_cache_bytes, 0) / GIB, 3)
    row["activations_gib"] = num(mem.activations_bytes / GIB, 3)
    row["overhead_gib"] = num(mem.overhead_bytes / GIB, 3)
    row["total_gib"] = num(mem.total_used_bytes / GIB, 3)
    row["usable_gib"] = num(mem.requested_bytes / GIB, 3)
    row["gpu_memory_gib"] = num(mem.total_bytes / GIB, 3)
    row["kv_capacity_tokens"] = int(mem.kv_capacity_tokens)


def fill_config(row: dict[str, Any], cfg: ResolvedConfig) -> None:
    from planner.catalog.loader import calibration_status

    row.update(gpu=cfg.gpu.name, tp=cfg.tp, pp=cfg.pp, precision=cfg.precision, kv_cache_dtype=cfg.kv_cache_dtype,
               max_model_len=cfg.max_model_len, max_num_seqs=cfg.max_num_seqs,
               calibration=calibration_status(cfg.gpu.name)[0])


def slo_verdict(pred: Any, slos: list[Slo]) -> tuple[bool, str]:
    """(all met, the binding SLO in words: the violated one furthest over, else the one with least headroom)."""
    head = tightest(pred, slos)
    if head is None:
        return True, ""
    room, s, value = head
    if room < 0:
        return False, f"slo: {s.key} {value:,.1f} ms > {s.limit_ms:g} ms"
    return True, f"slo: {s.key} {value:,.1f} ms of {s.limit_ms:g} ms ({room * 100:.0f}% headroom)"
