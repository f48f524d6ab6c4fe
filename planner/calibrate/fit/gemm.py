"""GEMM speed: the compute and memory efficiencies of each precision, the output tile, the unaligned-shape penalty.

The speed model costs a GEMM as a roofline with wave quantisation (``speed.Roofline.gemm``): the last partial wave
of output tiles costs a whole wave, which is why small-M decode GEMMs cannot be fitted with one efficiency. So
the compute efficiency is fitted on large-M (compute-bound) GEMMs first, then the memory side on all of them.

Inputs: ``microbench.py``'s ``gemm`` section (bf16, fp8, int8; M = 1..16384 on decoder and ViT shapes),
``vit_shapes.py``'s GEMMs with bias, ``shape_effects.py``'s aligned/unaligned pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.calibrate.fit.fitted import Fitted, LogFit, calibration_with, log_fit, mape_pct, usable
from planner.catalog.calibration_schema import Calibration
from planner.catalog.loader import load_precisions
from planner.catalog.schema import GpuSpec
from planner.perf.roofline import Roofline

TILE_CANDIDATES = ((64, 128), (128, 128), (128, 256), (256, 128))
"""Output-tile shapes of the Hopper GEMM kernels cuBLAS/CUTLASS pick from."""


def _gemm_points(mb: dict[str, Any], dtype: str) -> list[dict[str, Any]]:
    return [p for p in mb["gemm"]["points"] if usable(p) and p["dtype"] == dtype]


def _gemm_predict(gpu: GpuSpec, base: Calibration, pts: list[dict[str, Any]], precision: str,
                  v: dict[str, float]) -> np.ndarray:
    rf = Roofline(gpu, calibration_with(base, v))
    prec = load_precisions()
    return np.array([rf.gemm("g", int(p.get("m_padded_to") or p["M"]), p["N"], p["K"], precision, prec).time_s
                     for p in pts])


COMPUTE_BOUND_MIN_M = 2048
"""GEMMs with at least this many rows fit the compute efficiency: on every measured shape they are compute-bound
and their last partial wave costs a few percent at most, so the efficiency is not confounded with the
memory side or with wave quantisation."""


def _fit_compute_then_memory(gpu: GpuSpec, cal: Calibration, pts: list[dict[str, Any]], precision: str,
                             compute_name: str, memory_name: str | None) -> LogFit:
    """Compute efficiency on the large-M GEMMs, then (bf16 only) memory efficiency on all with it fixed."""
    big = [p for p in pts if p["M"] >= COMPUTE_BOUND_MIN_M]
    fit = log_fit([compute_name], [0.6], ([0.05], [1.0]), lambda x: _gemm_predict(gpu, cal, big, precision, x),
                  np.array([p["time_us"] * 1e-6 for p in big]))
    if memory_name is not None:
        meas = np.array([p["time_us"] * 1e-6 for p in pts])
        v = fit.values
        fit = fit.merged(log_fit([memory_name, "gemm_latency_us"], [0.8, 3.0], ([0.2, 0.0], [1.0, 20.0]),
                                 lambda x: _gemm_predict(gpu, cal, pts, precision, {**v, **x}), meas))
    return fit


def fit_gemm_bf16(mb: dict[str, Any], gpu: GpuSpec, base: Calibration,
                  vs: dict[str, Any] | None = None) -> dict[str, Fitted]:
    """bf16 compute and memory efficiency, per-kernel latency and output tile, over the microbench's bf16 GEMMs
    and (with ``vs``) the vision towers' GEMMs with bias: one fit per candidate tile, the tile with the least
    MAPE kept."""
    pts = _gemm_points(mb, "bf16") + [p for p in (vs or {}).get("gemm", {}).get("points", []) if usable(p)]
    meas = np.array([p["time_us"] * 1e-6 for p in pts])
    names = ["gemm_compute_efficiency", "gemm_memory_efficiency"]
    best: tuple[float, LogFit] | None = None
    for tm, tn in TILE_CANDIDATES:
        tiled = calibration_with(base, {"gemm_tile_m": tm, "gemm_tile_n": tn})
        fit = _fit_compute_then_memory(gpu, tiled, pts, "bf16", *names)
        err = mape_pct(_gemm_predict(gpu, tiled, pts, "bf16", fit.values), meas)
        if best is None or err < best[0]:
            best = (err, fit.merged(LogFit({"gemm_tile_m": tm, "gemm_tile_n": tn})))
    assert best is not None
    err, fit = best
    how = ("wave-quantised roofline over bf16 GEMMs (torch.mm, cuBLAS; with vit_shapes.py also F.linear with bias "
           "at the vision towers' shapes), M = 1..16384: compute efficiency by log least squares on M >= "
           f"{COMPUTE_BOUND_MIN_M}, then memory efficiency and the per-kernel latency on all M; tile chosen among "
           f"{', '.join(f'{a}x{b}' for a, b in TILE_CANDIDATES)} by MAPE over all points (the MAPE given)")
    return fit.fitted([*names, "gemm_latency_us", "gemm_tile_m", "gemm_tile_n"], how, len(pts), err)


def fit_gemm_quant(mb: dict[str, Any], gpu: GpuSpec, base: Calibration, dtype: str, precision: str,
                   name: str) -> dict[str, Fitted]:
    """The compute efficiency ``name`` of a quantised GEMM kernel (``dtype`` in the microbench): the memory side,
    tiles and latency are the bf16 fit's, as the same cuBLAS/CUTLASS tiling serves both."""
    pts = _gemm_points(mb, dtype)
    if not pts:
        return {}
    meas = np.array([p["time_us"] * 1e-6 for p in pts])
    fit = _fit_compute_then_memory(gpu, base, pts, precision, name, None)
    err = mape_pct(_gemm_predict(gpu, base, pts, precision, fit.values), meas)
    how = (f"log least squares over {dtype} GEMMs with M >= {COMPUTE_BOUND_MIN_M} (memory efficiency, tiles and "
           "latency shared with bf16; the MAPE is over all M)"
           + ("; M < 32 timed padded to 32 (m_padded_to)" if precision == "int8" else ""))
    return fit.fitted([name], how, len(pts), err)


def fit_shape_effects(se: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    """From ``shape_effects.py``'s file: the unaligned-GEMM penalty (direct: median ratio of the TFLOP/s of the
    true shape to the same GEMM padded to multiples of 64, over shapes with N or K not a multiple of 8). Its
    batched-attention timings feed ``fit_attention`` when they come from the same GPU."""
    out: dict[str, Fitted] = {}
    on = f" (measured on {se.get('provenance', {}).get('gpu_name', 'an unnamed GPU')})"
    pts = [p for p in se.get("gemm_align", {}).get("points", []) if usable(p)]
    ratios = []
    for t in (p for p in pts if p["variant"] == "true" and (p["N"] % 8 or p["K"] % 8)):
        pad = [q for q in pts if q["variant"] == "pad64" and q["shape_of"] == t["shape_of"]]
        if pad:
            ratios.append(t["tflops"] / pad[0]["tflops"])
    if ratios:
        out["gemm_unaligned_efficiency"] = Fitted(
            float(np.median(ratios)), "direct: median TFLOP/s ratio of bf16 GEMMs with N or K not a multiple of 8 "
            "to the same GEMM padded to multiples of 64 (M = 1024..16384)" + on, len(ratios),
            float(np.std(ratios) / np.median(ratios) * 100))
    return out


