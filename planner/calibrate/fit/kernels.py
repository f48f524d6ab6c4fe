"""Per-kernel costs outside GEMM and attention: launch gaps, the elementwise kernel kinds, fp8 quantisation.

A decode step launches hundreds of small kernels, so their fixed latency matters as much as their bandwidth. The
speed model costs each kind of kernel (``speed.Kernels.kind``) as ``latency + bytes / (HBM x efficiency)``; this
module fits that pair per kind from kernels timed with rotating buffers (inputs from HBM, as most kernels of a
large step see them), then the L2-resident speed of kernels whose input the previous kernel left in L2.

Inputs: ``microbench.py``'s ``launch``, ``hbm`` and ``elementwise`` sections, ``vit_shapes.py``'s
``elementwise`` and ``transposed`` sections, ``quant_ops.py``'s points.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.calibrate.fit.fitted import Fitted, LogFit, calibration_with, log_fit, mape_pct, usable
from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import GpuSpec
from planner.core.units import MIB
from planner.perf.kernels import Kernels
from planner.perf.roofline import Roofline

Points = list[tuple[float, int, float]]
"""(bytes moved, kernels, seconds) of one timed op."""

COPY_MAX_BUFFER_BYTES = 256 * 1024**2
"""Largest copy buffer used for the bandwidth fit: larger copies run slower on the H100 and H200 for a reason not
established (catalogs/calibration/measurements/README.md, caveats)."""

EAGER_ELEMENTWISE = {"rmsnorm": (1, 1.0), "add_rmsnorm": (2, 6 / 5), "silu_mul": (2, 5 / 3)}
"""Eager torch implementation of the microbench's elementwise ops: (kernels, traffic / the recorded ideal fused
traffic). F.rms_norm is one fused kernel; add + rms_norm reads x, r, writes s (add), reads s, writes y (norm):
6 hidden-size units against the fused 5; SiLU(a) * b writes SiLU(a) then reads it again: 5 units against 3."""


SIMPLE_ELEMENTWISE = ("add", "mul", "gelu", "gelu_tanh", "sigmoid", "mul_scalar")
"""vit_shapes.py's one-kernel, vectorised elementwise ops (LayerNorm and the broadcast multiply are slower
kernels; the reference ViT profile counts them on their own)."""

L2_THRESHOLDS = tuple(float(mb) * MIB for mb in (8, 12, 16, 24, 32, 40, 48, 64))
"""Candidate per-kernel traffic below which an elementwise kernel runs L2-resident."""


def fit_launch(mb: dict[str, Any]) -> dict[str, Fitted]:
    """``graph_launch_gap_us`` and ``eager_launch_us``, read directly from the microbench's ``launch`` section: GPU
    time per kernel inside a 1000-kernel CUDA graph, host time to launch one kernel while the GPU is busy."""
    la = mb["launch"]
    return {
        "graph_launch_gap_us": Fitted(float(la["graph_us_per_kernel"]),
                                      "direct: GPU time per kernel of a 1000-kernel CUDA graph of 1-element adds", 1,
                                      None),
        "eager_launch_us": Fitted(float(la["eager_launch_cpu_us_per_kernel"]),
                                  "direct: host time per eager launch while the GPU is busy", 1, None),
    }


def _kind_fit(gpu: GpuSpec, base: Calibration, pts: Points, kind: str,
              names: list[str], x0: list[float]) -> tuple[LogFit, float]:
    """Latency and efficiency of one kind of non-GEMM kernel: (bytes, kernels, seconds) points timed cold."""
    meas = np.array([t for _, _, t in pts])

    def predict(v: dict[str, float]) -> np.ndarray:
        rf = Roofline(gpu, calibration_with(base, v))
        if kind == "simple":
            return np.array([rf.elementwise("e", b, 1, k, resident=False).time_s for b, k, _ in pts])
        return np.array([rf.kernels("e", Kernels(k, 1.0, kind), b).time_s for b, k, _ in pts])

    fit = log_fit(names, x0, ([0.0, 0.1], [20.0, 1.0]), predict, meas)
    return fit, mape_pct(predict(fit.values), meas)


def _cold_points(mb: dict[str, Any], vs: dict[str, Any] | None, vs_ew: list[dict[str, Any]],
                 ew: list[dict[str, Any]]) -> dict[str, Points]:
    """The cold (rotating-buffer) timings of each kernel kind, from the microbench and, with ``vs``, vit_shapes.py;
    ``vs_ew`` are vit_shapes.py's usable elementwise points, ``ew`` the simple ones among them."""
    simple: Points = [
        (float(p["bytes_moved"]), 1, p["time_us"] * 1e-6) for p in mb["hbm"]["points"]
        if usable(p) and p["op"] == "copy" and p["bytes_buffer"] <= COPY_MAX_BUFFER_BYTES]
    norm: Points = [
        (float(p["bytes_moved"]), 1, p["time_us"] * 1e-6) for p in mb["hbm"]["points"]
        if usable(p) and p["op"] == "sum_fp32" and p["bytes_buffer"] <= COPY_MAX_BUFFER_BYTES]
    broadcast: Points = []
    for p in mb.get("elementwise", {}).get("points", []):
        if usable(p) and p.get("variant") == "eager" and p.get("op") in ("rmsnorm", "silu_mul"):
            kernels, traffic = EAGER_ELEMENTWISE[p["op"]]
            # SiLU and the multiply run on the strided halves of [T, 2I]: PyTorch's generic kernel (run11).
            (norm if p["op"] == "rmsnorm" else broadcast).append((p["bytes"] * traffic, kernels,
                                                                  p["time_us"] * 1e-6))
    simple += [(float(p["bytes"]), 1, p["time_us"] * 1e-6) for p in ew if p["mode"] == "cold"]
    norm += [(float(p["bytes"]), 1, p["time_us"] * 1e-6) for p in vs_ew
             if p["op"] == "layer_norm" and p["mode"] == "cold"]
    broadcast += [(float(p["bytes"]), 1, p["time_us"] * 1e-6) for p in vs_ew
                  if p["op"] == "mul_vector" and p["mode"] == "cold"]
    transposed = [(float(p["bytes"]), 1, p["time_us"] * 1e-6)
                  for p in (vs or {}).get("transposed", {}).get("points", []) if usable(p) and p["mode"] == "cold"]
    return {"simple": simple, "norm": norm, "broadcast": broadcast, "transposed": transposed}


def _fit_cold(gpu: GpuSpec, base: Calibration, pts: dict[str, Points], with_ew: bool,
              with_vs: bool) -> dict[str, Fitted]:
    """Latency and HBM efficiency of the simple kernels, then of each other kind (3 points at least) with the
    simple values in place."""
    out: dict[str, Fitted] = {}
    names = ["kernel_latency_us", "elementwise_memory_efficiency"]
    fit, err = _kind_fit(gpu, base, pts["simple"], "simple", names, [1.0, 0.8])
    how = ("joint log least squares of kernels x latency + bytes/(HBM x eff) over simple elementwise kernels "
           f"timed with rotating buffers: device copies <= {COPY_MAX_BUFFER_BYTES >> 20} MiB"
           + ("; vit_shapes.py's add, mul, GELU (exact, tanh), sigmoid, scalar multiply on [M, d]" if with_ew else ""))
    out.update(fit.fitted(names, how, len(pts["simple"]), err))
    base = calibration_with(base, fit.values)
    for kind, desc in (("norm", "fp32 sum reductions, eager F.rms_norm"
                        + (", F.layer_norm (vit_shapes.py)" if with_vs else "")),
                       ("broadcast", "eager SiLU*mul on strided halves (2 kernels)"
                        + (", vit_shapes.py's [M, d] x [d] multiply" if with_vs else "")),
                       ("transposed", "vit_shapes.py's .contiguous() of and add to a transposed [M, d] view")):
        if len(pts[kind]) < 3:
            continue
        names_k = [f"{kind}_kernel_latency_us", f"{kind}_memory_efficiency"]
        fit_k, errk = _kind_fit(gpu, base, pts[kind], kind, names_k, [2.0, 0.6])
        how_k = f"joint log least squares of latency + bytes/(HBM x eff) over {desc}, rotating buffers"
        out.update(fit_k.fitted(names_k, how_k, len(pts[kind]), errk))
    return out


def _fit_l2(gpu: GpuSpec, cal: Calibration, hot: Points) -> dict[str, Fitted]:
    """``elementwise_l2_efficiency`` and ``l2_resident_bytes`` from the simple ops timed hot: for each candidate
    threshold, the efficiency by log least squares on the points under it; the threshold with the least MAPE over
    all hot points wins (a discrete choice, not a free parameter)."""
    hot_meas = np.array([t for _, _, t in hot])
    best: tuple[float, float, LogFit] | None = None
    for thr in L2_THRESHOLDS:
        under = [h for h in hot if h[0] <= thr]
        if len(under) < 3:
            continue
        cal_t = calibration_with(cal, {"l2_resident_bytes": thr})

        def pred_hot(y: dict[str, float], u: Points = under, c: Calibration = cal_t) -> np.ndarray:
            rf_y = Roofline(gpu, calibration_with(c, y))
            return np.array([rf_y.elementwise("e", b, 1, k).time_s for b, k, _ in u])

        x = log_fit(["elementwise_l2_efficiency"], [1.5], ([0.5], [10.0]), pred_hot,
                    np.array([t for _, _, t in under]))
        rf = Roofline(gpu, calibration_with(cal_t, x.values))
        err = mape_pct([rf.elementwise("e", b, 1, k).time_s for b, k, _ in hot], hot_meas)
        if best is None or err < best[0]:
            best = (err, thr, x)
    if best is None:
        return {}
    err, thr, fit = best
    how_l2 = ("vit_shapes.py's simple elementwise ops on [M, d] timed hot (one buffer set): threshold chosen "
              f"among {', '.join(str(int(t) >> 20) for t in L2_THRESHOLDS)} MiB by MAPE over all "
              f"{len(hot)} hot points, efficiency by log least squares on those under it (latency and HBM "
              "efficiency held)")
    return fit.merged(LogFit({"l2_resident_bytes": thr})).fitted(
        ["elementwise_l2_efficiency", "l2_resident_bytes"], how_l2, len(hot), err)


def fit_elementwise(mb: dict[str, Any], gpu: GpuSpec, base: Calibration,
                    vs: dict[str, Any] | None = None) -> dict[str, Fitted]:
    """Per-kernel latency and bandwidth efficiency of each kind of non-GEMM kernel (``speed.Kernels.kind``), by
    log least squares over kernels timed with rotating buffers (inputs from HBM):

    * ``simple``: device copies and, with ``vs``, vit_shapes.py's add, mul, GELU (exact, tanh), sigmoid and
      scalar multiply on [M, d];
    * ``norm``: fp32 sum reductions, eager F.rms_norm and, with ``vs``, F.layer_norm;
    * ``broadcast``: eager SiLU*mul on the strided halves of [T, 2I] (two kernels and their traffic) and, with
      ``vs``, a [M, d] tensor times a [d] vector;
    * ``transposed`` (``vs`` only): a copy of, and an add to, a transposed [M, d] view.

    Then, with ``vs``, ``elementwise_l2_efficiency`` and ``l2_resident_bytes`` over the simple ops timed 'hot'
    (one buffer set, as a forward pass leaves a kernel's input in L2): the threshold chosen among
    ``L2_THRESHOLDS`` by MAPE over all hot points, the efficiency by log least squares on those under it."""
    vs_ew = [p for p in (vs or {}).get("elementwise", {}).get("points", []) if usable(p)]
    ew = [p for p in vs_ew if p["op"] in SIMPLE_ELEMENTWISE]
    out = _fit_cold(gpu, base, _cold_points(mb, vs, vs_ew, ew), bool(ew), bool(vs_ew))
    hot = [(float(p["bytes"]), 1, p["time_us"] * 1e-6) for p in ew if p["mode"] == "hot"]
    if hot:
        out.update(_fit_l2(gpu, calibration_with(base, {k: f.value for k, f in out.items()}), hot))
    return out


def fit_quant(qo: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    """``quant_latency_us`` and ``quant_memory_efficiency``: quant_ops.py's whole dynamic fp8 quantisation of
    one [M, K] bf16 tensor (abs-max, scale, divide-and-cast), latency + input bytes / (HBM x eff)."""
    pts = [(float(p["input_bytes"]), 1, p["time_us"] * 1e-6) for p in qo.get("points", [])
           if usable(p) and p["piece"] == "whole"]
    if len(pts) < 3:
        return {}
    names = ["quant_latency_us", "quant_memory_efficiency"]
    fit, err = _kind_fit(gpu, base, pts, "quant", names, [8.0, 0.2])
    how = ("log least squares of latency + input bytes/(HBM x eff) over quant_ops.py's eager dynamic fp8 "
           "quantisation of [M, K] bf16 tensors, M = 1..8192, K = 2048..14336, rotating buffers")
    return fit.fitted(names, how, len(pts), err)
