"""Fit the speed model's constants to a GPU's microbenchmarks (numpy/scipy only).

Input: a JSON written by ``planner/calibrate/microbench.py`` (sections
``launch``, ``hbm``, ``gemm``, ``attn_prefill``, ``attn_decode``,
``elementwise``) and optionally one with an ``allreduce`` section (several
GPUs). Output: a ``Calibration`` (``catalogs/calibration/vllm-0.33-<gpu>.yaml``)
whose fitted constants each carry provenance: method, dataset file, number of
points, MAPE of the fitted model on those points, date.

The fit evaluates the planner's own op formulas (``planner.perf.speed.Roofline``),
so each constant means exactly what the model does with it. Few parameters,
each physical; least squares on log(time) (relative errors):

* ``graph_launch_gap_us``, ``eager_launch_us``: read directly from ``launch``
  (GPU time per kernel inside a 1000-kernel CUDA graph; host time to launch
  one kernel while the GPU is busy).
* ``kernel_latency_us`` + ``elementwise_memory_efficiency``: device-to-device
  copies (``hbm``, buffers up to 256 MiB: larger copies run slower on these
  cards for a reason not established, see the measurements README) as
  ``latency + bytes / (bandwidth x eff)``.
* ``gemm_compute_efficiency``, ``gemm_memory_efficiency``, ``gemm_tile_m/n``:
  bf16 GEMMs over M = 1..16384 on decoder/ViT shapes, roofline with wave
  quantisation; the tile is picked from a few CUTLASS/cuBLAS tile shapes by
  the same criterion (a discrete choice, not a free parameter).
* ``fp8_gemm_compute_efficiency`` (``fp8_e4m3_fastacc``: fast accumulation,
  as vLLM's CUTLASS W8A8 kernel and the validation script run),
  ``int8_gemm_compute_efficiency`` (``torch._int_mm``; M < 32 is padded to 32
  by the kernel and fitted at the padded M): only the compute efficiency, the
  memory side is shared with bf16.
* ``int4_gemm_compute_efficiency``: NOT fitted. The device had no Marlin/
  Machete kernel; torch's tinygemm int4 kernel is a different (much slower at
  M > 8) implementation, so the default is kept.
* ``attention_prefill_compute_efficiency``, ``attention_prefill_overhead_tokens``,
  ``attention_softmax_head_dims``: jointly, over SDPA with the default backend
  (cuDNN on H100/H200): causal GQA and non-causal ViT shapes, batched short
  sequences and the vision towers' own shapes when those files are given.
* ``attention_decode_memory_efficiency``, ``attention_decode_half_bytes``:
  the fastest form/backend per decode shape (what the validation script and
  vLLM's FlashAttention decode pick); the model
  ``latency + (bytes + half) / (bandwidth x eff)`` is linear in bytes.
* ``allreduce_latency_us``, ``allreduce_bus_efficiency``: NCCL all-reduce
  inside a CUDA graph (``graph_time_us``, how vLLM replays decode), ring model
  ``latency + 2(n-1)/n x bytes / (link x eff)``.

Everything else (``p2p_latency_us``, engine overheads, int4) is copied from
the base (default) calibration with its note.

Usage::

    python -m planner.calibrate.fit MICROBENCH.json [--allreduce AR.json] [--gpu NAME] --out FILE.yaml
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import ArrayLike
from scipy.optimize import least_squares

from planner.catalog.loader import catalog_root, load_calibration, load_gpus, load_precisions
from planner.catalog.schema import Calibration, Constant, FitInfo, GpuSpec, Source
from planner.core.errors import PlannerError, RequestError
from planner.perf.kernels import Kernels
from planner.perf.roofline import Roofline

COPY_MAX_BUFFER_BYTES = 256 * 1024**2
"""Largest copy buffer used for the bandwidth fit (see module docstring)."""
TILE_CANDIDATES = ((64, 128), (128, 128), (128, 256), (256, 128))
"""Output-tile shapes of the Hopper GEMM kernels cuBLAS/CUTLASS pick from."""


@dataclass(frozen=True)
class Fitted:
    """One fitted constant before it becomes a catalog ``Constant``."""

    value: float
    method: str
    n_points: int
    mape_pct: float | None


def calibration_with(base: Calibration, values: dict[str, float]) -> Calibration:
    """``base`` with some constant values replaced (no validation: used inside the fit loop)."""
    consts = dict(base.constants)
    for k, v in values.items():
        consts[k] = Constant.model_construct(value=float(v), unit=consts[k].unit, fit=None, note=None)
    return Calibration.model_construct(schema_version=1, gpu=base.gpu, engine=base.engine, calibrated=False,
                                       constants=consts, sources=base.sources)


def mape_pct(pred: ArrayLike, meas: ArrayLike) -> float:
    p, m = np.asarray(pred, float), np.asarray(meas, float)
    return float(np.mean(np.abs(p - m) / m) * 100.0)


def _log_fit(names: list[str], x0: list[float], bounds: tuple[list[float], list[float]],
             predict: Callable[[dict[str, float]], np.ndarray], measured: np.ndarray) -> dict[str, float]:
    """Least squares on log(predicted) - log(measured) over the named parameters."""
    def resid(x: np.ndarray) -> np.ndarray:
        return np.log(predict(dict(zip(names, x)))) - np.log(measured)

    res = least_squares(resid, np.asarray(x0, float), bounds=bounds, x_scale="jac", diff_step=1e-4)
    return dict(zip(names, (float(v) for v in res.x)))


# --------------------------------------------------------------------------- sections


def fit_launch(mb: dict[str, Any]) -> dict[str, Fitted]:
    la = mb["launch"]
    return {
        "graph_launch_gap_us": Fitted(float(la["graph_us_per_kernel"]),
                                      "direct: GPU time per kernel of a 1000-kernel CUDA graph of 1-element adds", 1,
                                      None),
        "eager_launch_us": Fitted(float(la["eager_launch_cpu_us_per_kernel"]),
                                  "direct: host time per eager launch while the GPU is busy", 1, None),
    }


def _ok(p: dict[str, Any]) -> bool:
    return "time_us" in p and "skipped" not in p and "error" not in p


EAGER_ELEMENTWISE = {"rmsnorm": (1, 1.0), "add_rmsnorm": (2, 6 / 5), "silu_mul": (2, 5 / 3)}
"""Eager torch implementation of the microbench's elementwise ops: (kernels, traffic / the recorded ideal fused
traffic). F.rms_norm is one fused kernel; add + rms_norm reads x, r, writes s (add), reads s, writes y (norm):
6 hidden-size units against the fused 5; SiLU(a) * b writes SiLU(a) then reads it again: 5 units against 3."""


SIMPLE_ELEMENTWISE = ("add", "mul", "gelu", "gelu_tanh", "sigmoid", "mul_scalar")
"""vit_shapes.py's one-kernel, vectorised elementwise ops (LayerNorm and the broadcast multiply are slower
kernels; the reference ViT profile counts them on their own)."""

L2_THRESHOLDS = tuple(float(mb) * 2**20 for mb in (8, 12, 16, 24, 32, 40, 48, 64))
"""Candidate per-kernel traffic below which an elementwise kernel runs L2-resident."""


def _kind_fit(gpu: GpuSpec, base: Calibration, pts: list[tuple[float, int, float]], kind: str,
              names: list[str], x0: list[float]) -> tuple[dict[str, float], float]:
    """Latency and efficiency of one kind of non-GEMM kernel: (bytes, kernels, seconds) points timed cold."""
    meas = np.array([t for _, _, t in pts])

    def predict(v: dict[str, float]) -> np.ndarray:
        rf = Roofline(gpu, calibration_with(base, v))
        if kind == "simple":
            return np.array([rf.elementwise("e", b, 1, k, resident=False).time_s for b, k, _ in pts])
        return np.array([rf.kernels("e", Kernels(k, 1.0, kind), b).time_s for b, k, _ in pts])

    v = _log_fit(names, x0, ([0.0, 0.1], [20.0, 1.0]), predict, meas)
    return v, mape_pct(predict(v), meas)


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
    vs_ew = [p for p in (vs or {}).get("elementwise", {}).get("points", []) if _ok(p)]
    ew = [p for p in vs_ew if p["op"] in SIMPLE_ELEMENTWISE]
    simple: list[tuple[float, int, float]] = [
        (float(p["bytes_moved"]), 1, p["time_us"] * 1e-6) for p in mb["hbm"]["points"]
        if _ok(p) and p["op"] == "copy" and p["bytes_buffer"] <= COPY_MAX_BUFFER_BYTES]
    norm: list[tuple[float, int, float]] = [
        (float(p["bytes_moved"]), 1, p["time_us"] * 1e-6) for p in mb["hbm"]["points"]
        if _ok(p) and p["op"] == "sum_fp32" and p["bytes_buffer"] <= COPY_MAX_BUFFER_BYTES]
    broadcast: list[tuple[float, int, float]] = []
    for p in mb.get("elementwise", {}).get("points", []):
        if _ok(p) and p.get("variant") == "eager" and p.get("op") in ("rmsnorm", "silu_mul"):
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
                  for p in (vs or {}).get("transposed", {}).get("points", []) if _ok(p) and p["mode"] == "cold"]
    out: dict[str, Fitted] = {}
    names = ["kernel_latency_us", "elementwise_memory_efficiency"]
    v, err = _kind_fit(gpu, base, simple, "simple", names, [1.0, 0.8])
    how = ("joint log least squares of kernels x latency + bytes/(HBM x eff) over simple elementwise kernels "
           f"timed with rotating buffers: device copies <= {COPY_MAX_BUFFER_BYTES >> 20} MiB"
           + ("; vit_shapes.py's add, mul, GELU (exact, tanh), sigmoid, scalar multiply on [M, d]" if ew else ""))
    out.update({n: Fitted(v[n], how, len(simple), err) for n in names})
    base = calibration_with(base, v)
    for kind, pts, desc in (("norm", norm, "fp32 sum reductions, eager F.rms_norm"
                             + (", F.layer_norm (vit_shapes.py)" if vs_ew else "")),
                            ("broadcast", broadcast, "eager SiLU*mul on strided halves (2 kernels)"
                             + (", vit_shapes.py's [M, d] x [d] multiply" if vs_ew else "")),
                            ("transposed", transposed, "vit_shapes.py's .contiguous() of and add to a transposed "
                             "[M, d] view")):
        if len(pts) < 3:
            continue
        names_k = [f"{kind}_kernel_latency_us", f"{kind}_memory_efficiency"]
        vk, errk = _kind_fit(gpu, base, pts, kind, names_k, [2.0, 0.6])
        how_k = f"joint log least squares of latency + bytes/(HBM x eff) over {desc}, rotating buffers"
        out.update({n: Fitted(vk[n], how_k, len(pts), errk) for n in names_k})
    v = {k: f.value for k, f in out.items()}
    hot = [(float(p["bytes"]), 1, p["time_us"] * 1e-6) for p in ew if p["mode"] == "hot"]
    if hot:
        cal = calibration_with(base, v)
        hot_meas = np.array([t for _, _, t in hot])
        best: tuple[float, float, float] | None = None
        for thr in L2_THRESHOLDS:
            under = [h for h in hot if h[0] <= thr]
            if len(under) < 3:
                continue
            cal_t = calibration_with(cal, {"l2_resident_bytes": thr})

            def pred_hot(y: dict[str, float], u: list[tuple[float, int, float]] = under,
                         c: Calibration = cal_t) -> np.ndarray:
                rf_y = Roofline(gpu, calibration_with(c, y))
                return np.array([rf_y.elementwise("e", b, 1, k).time_s for b, k, _ in u])

            x = _log_fit(["elementwise_l2_efficiency"], [1.5], ([0.5], [10.0]), pred_hot,
                         np.array([t for _, _, t in under]))
            full = calibration_with(cal_t, x)
            rf = Roofline(gpu, full)
            err = mape_pct([rf.elementwise("e", b, 1, k).time_s for b, k, _ in hot], hot_meas)
            if best is None or err < best[0]:
                best = (err, thr, x["elementwise_l2_efficiency"])
        if best is not None:
            err, thr, eff = best
            how_l2 = ("vit_shapes.py's simple elementwise ops on [M, d] timed hot (one buffer set): threshold chosen "
                      f"among {', '.join(str(int(t) >> 20) for t in L2_THRESHOLDS)} MiB by MAPE over all "
                      f"{len(hot)} hot points, efficiency by log least squares on those under it (latency and HBM "
                      "efficiency held)")
            out["elementwise_l2_efficiency"] = Fitted(eff, how_l2, len(hot), err)
            out["l2_resident_bytes"] = Fitted(thr, how_l2, len(hot), err)
    return out


def fit_quant(qo: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    """``quant_latency_us`` and ``quant_memory_efficiency``: quant_ops.py's whole dynamic fp8 quantisation of
    one [M, K] bf16 tensor (abs-max, scale, divide-and-cast), latency + input bytes / (HBM x eff)."""
    pts = [(float(p["input_bytes"]), 1, p["time_us"] * 1e-6) for p in qo.get("points", [])
           if _ok(p) and p["piece"] == "whole"]
    if len(pts) < 3:
        return {}
    names = ["quant_latency_us", "quant_memory_efficiency"]
    v, err = _kind_fit(gpu, base, pts, "quant", names, [8.0, 0.2])
    how = ("log least squares of latency + input bytes/(HBM x eff) over quant_ops.py's eager dynamic fp8 "
           "quantisation of [M, K] bf16 tensors, M = 1..8192, K = 2048..14336, rotating buffers")
    return {n: Fitted(v[n], how, len(pts), err) for n in names}


def _gemm_points(mb: dict[str, Any], dtype: str) -> list[dict[str, Any]]:
    return [p for p in mb["gemm"]["points"] if _ok(p) and p["dtype"] == dtype]


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
                             compute_name: str, memory_name: str | None) -> dict[str, float]:
    """Compute efficiency on the large-M GEMMs, then (bf16 only) memory efficiency on all with it fixed."""
    big = [p for p in pts if p["M"] >= COMPUTE_BOUND_MIN_M]
    v = _log_fit([compute_name], [0.6], ([0.05], [1.0]), lambda x: _gemm_predict(gpu, cal, big, precision, x),
                 np.array([p["time_us"] * 1e-6 for p in big]))
    if memory_name is not None:
        meas = np.array([p["time_us"] * 1e-6 for p in pts])
        v.update(_log_fit([memory_name, "gemm_latency_us"], [0.8, 3.0], ([0.2, 0.0], [1.0, 20.0]),
                          lambda x: _gemm_predict(gpu, cal, pts, precision, {**v, **x}), meas))
    return v


def fit_gemm_bf16(mb: dict[str, Any], gpu: GpuSpec, base: Calibration,
                  vs: dict[str, Any] | None = None) -> dict[str, Fitted]:
    pts = _gemm_points(mb, "bf16") + [p for p in (vs or {}).get("gemm", {}).get("points", []) if _ok(p)]
    meas = np.array([p["time_us"] * 1e-6 for p in pts])
    names = ["gemm_compute_efficiency", "gemm_memory_efficiency"]
    best: tuple[float, dict[str, float]] | None = None
    for tm, tn in TILE_CANDIDATES:
        tiled = calibration_with(base, {"gemm_tile_m": tm, "gemm_tile_n": tn})
        v = _fit_compute_then_memory(gpu, tiled, pts, "bf16", *names)
        err = mape_pct(_gemm_predict(gpu, tiled, pts, "bf16", v), meas)
        if best is None or err < best[0]:
            best = (err, {**v, "gemm_tile_m": tm, "gemm_tile_n": tn})
    assert best is not None
    err, v = best
    how = ("wave-quantised roofline over bf16 GEMMs (torch.mm, cuBLAS; with vit_shapes.py also F.linear with bias "
           "at the vision towers' shapes), M = 1..16384: compute efficiency by log least squares on M >= "
           f"{COMPUTE_BOUND_MIN_M}, then memory efficiency and the per-kernel latency on all M; tile chosen among "
           f"{', '.join(f'{a}x{b}' for a, b in TILE_CANDIDATES)} by MAPE over all points (the MAPE given)")
    return {n: Fitted(v[n], how, len(pts), err) for n in [*names, "gemm_latency_us", "gemm_tile_m", "gemm_tile_n"]}


def fit_gemm_quant(mb: dict[str, Any], gpu: GpuSpec, base: Calibration, dtype: str, precision: str,
                   name: str) -> dict[str, Fitted]:
    pts = _gemm_points(mb, dtype)
    if not pts:
        return {}
    meas = np.array([p["time_us"] * 1e-6 for p in pts])
    v = _fit_compute_then_memory(gpu, base, pts, precision, name, None)
    err = mape_pct(_gemm_predict(gpu, base, pts, precision, v), meas)
    how = (f"log least squares over {dtype} GEMMs with M >= {COMPUTE_BOUND_MIN_M} (memory efficiency, tiles and "
           "latency shared with bf16; the MAPE is over all M)"
           + ("; M < 32 timed padded to 32 (m_padded_to)" if precision == "int8" else ""))
    return {name: Fitted(v[name], how, len(pts), err)}


def _attention_points(mb: dict[str, Any], se: dict[str, Any] | None,
                      vs: dict[str, Any] | None) -> list[tuple[int, int, int, int, bool, int, float]]:
    """(seq, heads, kv_heads, head_dim, causal, batch, seconds) of every prefill-attention timing of one GPU:
    the microbench's default-backend SDPA (causal GQA and ViT), ``shape_effects.py``'s batched short sequences
    and ``vit_shapes.py``'s vision-tower shapes (harness layout)."""
    pts = [(p["seq"], p["q_heads"], p["kv_heads"], p["head_dim"], bool(p["causal"]), p["batch"], p["time_us"] * 1e-6)
           for p in mb.get("attn_prefill", {}).get("points", []) if _ok(p) and p["backend"] == p["default_backend"]]
    for src, key in ((se, "attn_batched"), (vs, "attn")):
        for p in (src or {}).get(key, {}).get("points", []):
            if _ok(p):
                pts.append((p["seq"], p["heads"], p["heads"], p["head_dim"], False, p["batch"], p["time_us"] * 1e-6))
    return pts


def fit_attention(mb: dict[str, Any], gpu: GpuSpec, base: Calibration, se: dict[str, Any] | None = None,
                  vs: dict[str, Any] | None = None) -> dict[str, Fitted]:
    """``attention_prefill_compute_efficiency``, ``attention_prefill_overhead_tokens`` and
    ``attention_softmax_head_dims`` jointly, by log least squares over every prefill-attention timing of this
    GPU (``speed.Roofline.attention_prefill``: padded query tiles, waves of tiles, softmax and per-row costs).
    The efficiency is bounded by 1 (QK^T and PV cannot beat the tensor-core peak)."""
    pts = _attention_points(mb, se, vs)
    if not pts:
        return {}
    meas = np.array([p[-1] for p in pts])

    def predict(v: dict[str, float]) -> np.ndarray:
        rf = Roofline(gpu, calibration_with(base, v))
        return np.array([rf.attention_prefill("a", s, s, h, kh, hd, c, 2, batch=b).time_s
                         for s, h, kh, hd, c, b, _ in pts])

    names = ["attention_prefill_compute_efficiency", "attention_prefill_overhead_tokens",
             "attention_softmax_head_dims"]
    v = _log_fit(names, [0.8, 100.0, 60.0], ([0.05, 0.0, 0.0], [1.0, 2000.0, 1000.0]), predict, meas)
    kinds = ["default-backend SDPA prefill (causal GQA and ViT, seq 128..16384)"]
    if se and se.get("attn_batched"):
        kinds.append("batched short sequences (shape_effects.py)")
    if vs and vs.get("attn"):
        kinds.append("vision-tower shapes in the harness's layout (vit_shapes.py: 1-4 images of 256-4096 tokens, "
                     "head dims 64/72/80, 64-token windows)")
    how = ("joint log least squares over " + "; ".join(kinds) + " with query tiles padded to 128 rows and waves of "
           "one tile per SM; efficiency bounded by 1")
    err = mape_pct(predict(v), meas)
    return {n: Fitted(v[n], how, len(pts), err) for n in names}


def fit_shape_effects(se: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    """From ``shape_effects.py``'s file: the unaligned-GEMM penalty (direct: median ratio of the TFLOP/s of the
    true shape to the same GEMM padded to multiples of 64, over shapes with N or K not a multiple of 8). Its
    batched-attention timings feed ``fit_attention`` when they come from the same GPU."""
    out: dict[str, Fitted] = {}
    on = f" (measured on {se.get('provenance', {}).get('gpu_name', 'an unnamed GPU')})"
    pts = [p for p in se.get("gemm_align", {}).get("points", []) if _ok(p)]
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


FRONTEND_PROCESSORS = {"qwen2_vl_fast": None, "siglip_fast": 729}
"""The preprocess_bench.py processors fitted: Qwen2-VL's processes the image at (nearly) native resolution
(its pixel_values rows are 14x14 patches), SigLIP's resizes it to 384x384 (729 patches)."""


def fit_frontend(pp: dict[str, Any]) -> dict[str, Fitted]:
    """``frontend_ms_per_input_megapixel`` (JPEG decode + resize, per megapixel sent) and
    ``frontend_ms_per_processed_megapixel`` (normalise and patchify, per megapixel the vision tower sees): non-negative
    least squares on relative error over ``preprocess_bench.py``'s decode + fast-processor times, single thread."""
    rows, y = [], []
    for p in pp["points"]:
        for name, fixed_patches in FRONTEND_PROCESSORS.items():
            if f"{name}_ms" not in p:
                continue
            patches = fixed_patches or p[f"{name}_pixel_values"][0]
            rows.append([p["megapixels"], patches * 14 * 14 / 1e6])
            y.append(p["decode_ms"] + p[f"{name}_ms"])
    a, t = np.array(rows), np.array(y)
    from scipy.optimize import nnls

    coef, _ = nnls(a / t[:, None], np.ones(len(t)))
    err = mape_pct(a @ coef, t)
    cpu = pp.get("provenance", {}).get("cpu_model", "an unnamed CPU")
    how = (f"non-negative least squares (relative error) of decode + processor time on input and processed megapixels, "
           f"Qwen2-VL and SigLIP fast processors, one thread of {cpu}")
    return {"frontend_ms_per_input_megapixel": Fitted(float(coef[0]), how, len(t), err),
            "frontend_ms_per_processed_megapixel": Fitted(float(coef[1]), how, len(t), err)}


def _decode_best(mb: dict[str, Any]) -> list[dict[str, Any]]:
    """Fastest form/backend per decode-attention shape."""
    best: dict[tuple[int, ...], dict[str, Any]] = {}
    for p in mb["attn_decode"]["points"]:
        if not _ok(p):
            continue
        key = (p["batch"], p["context"], p["q_heads"], p["kv_heads"], p["head_dim"])
        if key not in best or p["time_us"] < best[key]["time_us"]:
            best[key] = p
    return list(best.values())


def fit_attn_decode(mb: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    pts = _decode_best(mb)
    meas = np.array([p["time_us"] * 1e-6 for p in pts])

    def predict(v: dict[str, float]) -> np.ndarray:
        rf = Roofline(gpu, calibration_with(base, v))
        return np.array([rf.attention_decode("a", p["batch"], p["context"], p["q_heads"], p["kv_heads"],
                                             p["head_dim"], 2).time_s for p in pts])

    names = ["attention_decode_memory_efficiency", "attention_decode_half_bytes"]
    # half_bytes fitted in MB for conditioning.
    scaled = _log_fit(names, [0.8, 1.0], ([0.1, 0.0], [1.0, 1000.0]),
                      lambda x: predict({names[0]: x[names[0]], names[1]: x[names[1]] * 1e6}), meas)
    v = {names[0]: scaled[names[0]], names[1]: scaled[names[1]] * 1e6}
    how = ("log least squares of latency + (bytes + half)/(HBM x eff) over the fastest SDPA decode kernel per "
           "shape (batch 1..256, context 256..32768)")
    err = mape_pct(predict(v), meas)
    return {n: Fitted(v[n], how, len(pts), err) for n in names}


def fit_allreduce(ar: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
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
    v = _log_fit(names, x0, (lo, hi), predict, meas)
    how = (f"log least squares of latency + ring bytes over NCCL all-reduce inside a CUDA graph, {ws} GPUs, "
           f"{pts[0]['bytes']}..{pts[-1]['bytes']} bytes")
    return {n: Fitted(v[n], how, len(pts), mape_pct(predict(v), meas)) for n in names}


# --------------------------------------------------------------------------- engine level (vllm bench serve)

BENCH_FIELDS = ("completed", "total_input_tokens", "total_output_tokens", "mean_tpot_ms", "max_concurrency",
                "request_throughput", "mean_ttft_ms")
"""Fields of a ``vllm bench serve --save-result`` JSON that the engine fit reads (see ``read_vllm_bench``)."""


@dataclass(frozen=True)
class BenchRun:
    """One ``vllm bench serve --save-result`` file, reduced to what the engine fit needs."""

    path: str
    completed: int
    mean_prompt_tokens: float
    mean_output_tokens: float
    mean_tpot_ms: float
    mean_ttft_ms: float
    concurrency: float
    """Mean running requests: ``max_concurrency`` when the run capped it and sent as fast as it could
    (``request_rate`` inf), else Little's law: request_throughput x mean time in the system."""
    model_id: str | None


def read_vllm_bench(path: Path) -> BenchRun:
    """Read the summary fields of one ``vllm bench serve --save-result`` file.

    Format: the ``result_json`` dict that ``vllm/benchmarks/serve.py`` (vllm-project/vllm) writes: setup
    (``model_id``, ``num_prompts``, ``request_rate`` (a number or the string ``"inf"``), ``burstiness``,
    ``max_concurrency`` (null when uncapped)) merged with the benchmark result (``completed``, ``failed``,
    ``total_input_tokens``, ``total_output_tokens``, ``request_throughput``, ``output_throughput``, and for each
    selected metric ``mean_/median_/std_/p<N>_{ttft,tpot,itl,e2el}_ms``; the per-request lists ``input_lens``,
    ``output_lens``, ``ttfts``, ``itls`` only with ``--save-detailed``, so they are not required here).
    """
    from planner.core.inputs import parse_json, read_text

    data = parse_json(read_text(path, "bench file"), f"bench file {path} (expected 'vllm bench serve --save-result')",
                      allow_nan=True)
    if not isinstance(data, dict):
        raise RequestError(f"{path}: expected a JSON object as 'vllm bench serve --save-result' writes")
    need = ("completed", "total_input_tokens", "total_output_tokens", "mean_tpot_ms", "mean_ttft_ms")
    missing = [k for k in need if not isinstance(data.get(k), (int, float)) or isinstance(data.get(k), bool)]
    if missing:
        raise RequestError(f"{path}: lacks {', '.join(missing)} (run 'vllm bench serve' with --save-result and "
                           "the default --percentile-metrics ttft,tpot,itl)")
    bad = [f"{k}={str(data[k])[:30]}" for k in (*need, "request_throughput", "max_concurrency")
           if isinstance(data.get(k), (int, float)) and not isinstance(data[k], bool)
           and not (-1 < abs(data[k]) < 1e15 and math.isfinite(data[k]) and data[k] >= 0)]
    if bad:
        raise RequestError(f"{path}: {', '.join(bad)} (every measured value must be a finite number >= 0)")
    done = int(data["completed"])
    if done <= 0:
        raise RequestError(f"{path}: completed is {done}; nothing to fit")
    prompt = data["total_input_tokens"] / done
    out = data["total_output_tokens"] / done
    cap = data.get("max_concurrency")
    rate = data.get("request_rate")
    unbounded = rate in (None, "inf") or (isinstance(rate, float) and math.isinf(rate))
    if isinstance(cap, (int, float)) and unbounded:
        conc = float(min(cap, done))
    else:
        thr = data.get("request_throughput")
        if not isinstance(thr, (int, float)):
            raise RequestError(f"{path}: needs max_concurrency or request_throughput to tell the batch size")
        e2e_ms = data["mean_ttft_ms"] + data["mean_tpot_ms"] * max(out - 1.0, 0.0)
        conc = max(1.0, thr * e2e_ms / 1e3)
    return BenchRun(str(path), done, prompt, out, float(data["mean_tpot_ms"]), float(data["mean_ttft_ms"]), conc,
                    data.get("model_id"))


@dataclass(frozen=True)
class EngineFit:
    engine_step_overhead_ms: float
    mape_pct: float
    """Of the predicted mean TPOT with the fitted overhead, over the runs."""
    scale: float | None
    """Least-squares slope of measured (TPOT - overhead terms) on predicted GPU time: a check of the speed model
    (1 = the GPU times agree); None with fewer than two runs of different batch sizes."""
    rows: list[dict[str, float]]


def predicted_tpot_parts_ms(cfg: Any, cal: Calibration, run: BenchRun) -> tuple[float, float]:
    """(GPU ms per decode step incl. the prefills spread over it, per-sequence engine ms) for one run.

    Steady state of continuous batching with ``B`` running requests: every step decodes ``B`` sequences holding on
    average ``prompt + output / 2`` tokens, and ``B / output`` prompts start per step, whose prefill GPU time lands
    in some step (chunked prefill), so it is spread over the steps as ``(B / output) x prefill``."""
    from planner.perf.steps import decode_step, prefill_step

    rf = Roofline(cfg.gpu, cal)
    prec = load_precisions()
    b = max(1, round(run.concurrency))
    ctx = int(run.mean_prompt_tokens + run.mean_output_tokens / 2)
    dec = decode_step(rf, cfg, prec, b, ctx).time_ms
    pre = prefill_step(rf, cfg, prec, int(run.mean_prompt_tokens)).time_ms
    gpu = dec + b / max(run.mean_output_tokens, 1.0) * pre
    return gpu, cal.value("engine_per_seq_overhead_ms") * b


def fit_engine_overhead(cfg: Any, cal: Calibration, runs: Sequence[BenchRun]) -> EngineFit:
    """Solve measured mean TPOT = GPU step time + engine_step_overhead + per-seq x B for the overhead
    (least squares over the runs: the mean residual), floored at 0."""
    parts = [predicted_tpot_parts_ms(cfg, cal, r) for r in runs]
    resid = [r.mean_tpot_ms - g - s for r, (g, s) in zip(runs, parts)]
    over = max(0.0, float(np.mean(resid)))
    pred = [g + s + over for g, s in parts]
    err = mape_pct(pred, [r.mean_tpot_ms for r in runs])
    scale = None
    gpus = np.array([g for g, _ in parts])
    if len(runs) >= 2 and np.ptp(gpus) > 0.05 * gpus.mean():
        y = np.array([r.mean_tpot_ms - s for r, (_, s) in zip(runs, parts)])
        slope, _ = np.polyfit(gpus, y, 1)
        scale = float(slope)
    rows = [{"concurrency": r.concurrency, "prompt_tokens": r.mean_prompt_tokens, "output_tokens": r.mean_output_tokens,
             "measured_tpot_ms": r.mean_tpot_ms, "gpu_ms": g, "per_seq_ms": s, "predicted_tpot_ms": p}
            for r, (g, s), p in zip(runs, parts, pred)]
    return EngineFit(over, err, scale, rows)


def calibration_with_engine_fit(cal: Calibration, fit: EngineFit, files: Sequence[str], fitted_on: str) -> Calibration:
    """``cal`` with ``engine_step_overhead_ms`` replaced by the fitted value and its provenance."""
    consts = dict(cal.constants)
    old = consts["engine_step_overhead_ms"]
    consts["engine_step_overhead_ms"] = Constant(
        value=round(fit.engine_step_overhead_ms, 4), unit=old.unit, note=None,
        fit=FitInfo(method="mean residual of measured mean TPOT - predicted GPU step time (decode at the run's "
                           "concurrency + its prefills spread over the steps) - per-sequence overhead",
                    dataset=", ".join(files), n_points=len(files), mape_pct=round(fit.mape_pct, 2),
                    fitted_on=fitted_on))
    srcs = [*cal.sources, Source(kind="fitted", title=f"engine overhead fitted on vllm bench serve results: "
                                 f"{', '.join(files)}", retrieved=fitted_on)]
    return Calibration(gpu=cal.gpu, engine=cal.engine, calibrated=cal.calibrated, constants=consts, sources=srcs)


# --------------------------------------------------------------------------- driver


def gpu_for(mb: dict[str, Any], name: str | None = None) -> GpuSpec:
    """The catalog GPU of a microbench file (its nvidia-smi name), or ``name``."""
    gpus = load_gpus()
    if name:
        return gpus.get(name)
    smi = str(mb.get("provenance", {}).get("gpu_name", ""))
    memory_mib = mb.get("provenance", {}).get("nvidia_smi", {}).get("memory_total_mib")
    words = smi.upper().replace("NVIDIA", "").split()
    form = next((f for f in ("PCIE", "NVL") if f in words), "SXM")  # "H100 80GB HBM3" is the SXM part
    for g in gpus:
        name = g.name.upper()
        same_memory = memory_mib is None or abs(g.memory_total_mib - float(memory_mib)) / g.memory_total_mib < 0.03
        form_ok = form in name or (form == "SXM" and "PCIE" not in name and "NVL" not in name)
        if words and name.startswith(words[0]) and same_memory and form_ok:
            return g
    raise RequestError(f"cannot tell which catalog GPU '{smi}' is; pass --gpu with a name from 'vlmplan catalog gpus'")


def _merge_sections(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Several result files of one script as one: each section's points pooled, the first provenance kept."""
    out: dict[str, Any] = {"provenance": files[0].get("provenance", {}) if files else {}}
    for f in files:
        for name, sec in f.items():
            if isinstance(sec, dict) and "points" in sec:
                out.setdefault(name, {"points": []})["points"] += sec["points"]
    return out


def _gpu_name(data: dict[str, Any]) -> str | None:
    return data.get("provenance", {}).get("gpu_name")


def fit_all(mb: dict[str, Any], gpu: GpuSpec, ar: dict[str, Any] | None = None,
            base: Calibration | None = None, se: dict[str, Any] | None = None,
            vs: dict[str, Any] | None = None, qo: dict[str, Any] | None = None) -> dict[str, Fitted]:
    """Every fittable constant, in dependency order (later fits use earlier values)."""
    cal = base or load_calibration("default")
    out: dict[str, Fitted] = {}

    def step(found: dict[str, Fitted]) -> None:
        nonlocal cal
        out.update(found)
        cal = calibration_with(cal, {k: f.value for k, f in found.items()})

    if "launch" in mb:
        step(fit_launch(mb))
    if "hbm" in mb:
        step(fit_elementwise(mb, gpu, cal, vs))
    if qo is not None:
        step(fit_quant(qo, gpu, cal))
    if "gemm" in mb:
        step(fit_gemm_bf16(mb, gpu, cal, vs))
        step(fit_gemm_quant(mb, gpu, cal, "fp8_e4m3_fastacc", "fp8", "fp8_gemm_compute_efficiency"))
        step(fit_gemm_quant(mb, gpu, cal, "int8", "int8", "int8_gemm_compute_efficiency"))
    if se is not None:
        step(fit_shape_effects(se, gpu, cal))
    same_gpu = se is not None and _gpu_name(se) == _gpu_name(mb)
    step(fit_attention(mb, gpu, cal, se if same_gpu else None, vs))
    if "attn_decode" in mb:
        step(fit_attn_decode(mb, gpu, cal))
    if ar is not None and "allreduce" in ar:
        step(fit_allreduce(ar, gpu, cal))
    return out


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(catalog_root().parent))
    except ValueError:
        return str(path)


def build_calibration(gpu: GpuSpec, fitted: dict[str, Fitted], datasets: dict[str, str],
                      base: Calibration | None = None, fitted_on: str | None = None,
                      extra_sources: Sequence[Source] = ()) -> Calibration:
    """A ``calibrated: true`` Calibration: fitted constants with provenance, the rest from ``base``.

    ``datasets`` maps a constant to the file(s) it was fitted on."""
    base = base or load_calibration("default")
    day = fitted_on or _dt.date.today().isoformat()
    consts: dict[str, Constant] = {}
    for name, c in base.constants.items():
        f = fitted.get(name)
        if f is None:
            why = NOT_FITTED.get(name, "not in the microbenchmarks")
            note = (c.note + "; " if c.note else "") + f"not fitted ({why}): default kept"
            consts[name] = Constant(value=c.value, unit=c.unit, fit=c.fit, note=note if c.fit is None else c.note)
            continue
        value = round(f.value, 4) if abs(f.value) < 1e3 else round(f.value, -2)
        mape = round(f.mape_pct, 2) if f.mape_pct is not None else None
        consts[name] = Constant(value=value, unit=c.unit, note=None,
                                fit=FitInfo(method=f.method, dataset=datasets[name], n_points=f.n_points,
                                            mape_pct=mape, fitted_on=day))
    srcs = [Source(kind="fitted", title=f"planner/calibrate/fit.py on {', '.join(sorted(set(datasets.values())))}",
                   retrieved=day), *extra_sources]
    return Calibration(gpu=gpu.name, engine=base.engine, calibrated=True, constants=consts, sources=srcs)


SIBLING_TRANSFER = {
    "allreduce_hop_latency_us": "as is",
    "elementwise_l2_efficiency": "bandwidth",
    "l2_resident_bytes": "as is",
    "transposed_kernel_latency_us": "as is",
    "transposed_memory_efficiency": "bandwidth",
    "quant_latency_us": "as is",
    "quant_memory_efficiency": "bandwidth",
}
"""Constants a GPU without its own run may take from a sibling of the same die (H100 and H200: GH100, same SMs,
clocks, 50 MB L2 and NVLink 4, different HBM): latencies (also the all-reduce's growth per GPU) and the L2 size as
they are;
efficiencies of kernels not bound by HBM (L2-resident, uncoalesced, casting) converted so that the absolute
bandwidth stays the same (x sibling HBM / this GPU's HBM)."""


def sibling_calibration(name: str) -> Calibration:
    """The fitted calibration of catalog GPU ``name`` (an error if it has none)."""
    gpu = load_gpus().get(name)
    cal = load_calibration(gpu.name)
    if not cal.calibrated or cal.gpu != gpu.name:
        raise RequestError(f"--sibling {name}: {gpu.name} has no fitted calibration to transfer from")
    return cal


def transfer_from_sibling(fitted: dict[str, Fitted], datasets: dict[str, str], gpu: GpuSpec,
                          sibling: Calibration) -> None:
    """Add the ``SIBLING_TRANSFER`` constants that ``fitted`` lacks, from ``sibling`` (a fitted calibration)."""
    sib_gpu = load_gpus().get(sibling.gpu)
    for name, how in SIBLING_TRANSFER.items():
        c = sibling.constants.get(name)
        if name in fitted or c is None or c.fit is None:
            continue
        value = c.value
        if how == "bandwidth":
            value *= sib_gpu.hbm_bandwidth_gb_per_s / gpu.hbm_bandwidth_gb_per_s
        note = (f"transferred from {sibling.gpu} (same die; {c.value:g} there"
                + (f", x {sib_gpu.hbm_bandwidth_gb_per_s:g}/{gpu.hbm_bandwidth_gb_per_s:g} GB/s to keep the absolute "
                   "bandwidth" if how == "bandwidth" else "") + "), fitted there by: " + c.fit.method)
        fitted[name] = Fitted(value, note, c.fit.n_points, c.fit.mape_pct)
        datasets[name] = c.fit.dataset


ATTENTION_CONSTANTS = ("attention_prefill_compute_efficiency", "attention_prefill_overhead_tokens",
                       "attention_softmax_head_dims")

NOT_FITTED = {
    "transposed_kernel_latency_us": "no vit_shapes.py transposed run of this GPU",
    "transposed_memory_efficiency": "no vit_shapes.py transposed run of this GPU",
    "quant_latency_us": "no quant_ops.py run of this GPU",
    "quant_memory_efficiency": "no quant_ops.py run of this GPU",
    "elementwise_l2_efficiency": "no vit_shapes.py run of this GPU (hot vs rotating buffers)",
    "l2_resident_bytes": "no vit_shapes.py run of this GPU (hot vs rotating buffers)",
    "int4_gemm_compute_efficiency": "the device had no Marlin/Machete W4A16 kernel; torch's tinygemm int4 kernel "
                                    "in the microbench is a different implementation (slow above M = 8)",
    "allreduce_latency_us": "no multi-GPU run of this GPU",
    "allreduce_hop_latency_us": "no all-reduce run of this GPU over more than one ring size",
    "allreduce_bus_efficiency": "no multi-GPU run of this GPU",
    "p2p_latency_us": "no pipeline-parallel measurement",
    "engine_step_overhead_ms": "engine-level: fit it with 'vlmplan calibrate fit --bench' on vllm bench serve results",
    "engine_per_seq_overhead_ms": "engine-level, not measured",
}
"""Why a constant kept its default, written into its note."""


def calibration_yaml(cal: Calibration, header: str = "") -> str:
    data = cal.model_dump(mode="json", exclude_none=True)
    text = yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True)
    return "".join(f"# {line}\n" for line in header.splitlines()) + text


def fit_files(microbench: Path, allreduce: Path | None = None, gpu_name: str | None = None,
              base: Calibration | None = None, fitted_on: str | None = None,
              shape_effects: Path | None = None, vit_shapes: Sequence[Path] = (),
              quant_ops: Path | None = None, sibling: Calibration | None = None) -> Calibration:
    mb = json.loads(microbench.read_text())
    ar = json.loads(allreduce.read_text()) if allreduce else None
    se = json.loads(shape_effects.read_text()) if shape_effects else None
    vs = _merge_sections([json.loads(p.read_text()) for p in vit_shapes]) if vit_shapes else None
    qo = json.loads(quant_ops.read_text()) if quant_ops else None
    gpu = gpu_for(mb, gpu_name)
    fitted = fit_all(mb, gpu, ar, base, se, vs, qo)
    datasets = {k: _rel(microbench) for k in fitted}
    attention = [_rel(microbench)]
    if shape_effects:
        if "gemm_unaligned_efficiency" in datasets:
            datasets["gemm_unaligned_efficiency"] = _rel(shape_effects)
        if se is not None and _gpu_name(se) == _gpu_name(mb):
            attention.append(_rel(shape_effects))
    if vit_shapes:
        vs_files = ", ".join(_rel(p) for p in vit_shapes)
        attention.append(vs_files)
        for k in ("elementwise_l2_efficiency", "l2_resident_bytes", "broadcast_kernel_latency_us",
                  "broadcast_memory_efficiency", "transposed_kernel_latency_us", "transposed_memory_efficiency"):
            if k in datasets:
                datasets[k] = vs_files
        for k in ("kernel_latency_us", "elementwise_memory_efficiency", "norm_kernel_latency_us",
                  "norm_memory_efficiency", "gemm_compute_efficiency", "gemm_memory_efficiency", "gemm_latency_us",
                  "gemm_tile_m", "gemm_tile_n"):
            if k in datasets:
                datasets[k] = f"{_rel(microbench)}, {vs_files}"
    if quant_ops:
        for k in ("quant_latency_us", "quant_memory_efficiency"):
            if k in datasets:
                datasets[k] = _rel(quant_ops)
    for k in ATTENTION_CONSTANTS:
        if k in datasets:
            datasets[k] = ", ".join(attention)
    if allreduce:
        for k in ("allreduce_latency_us", "allreduce_bus_efficiency", "allreduce_hop_latency_us"):
            if k in datasets:
                datasets[k] = _rel(allreduce)
    if sibling is not None:
        transfer_from_sibling(fitted, datasets, gpu, sibling)
    day = fitted_on or str(mb.get("provenance", {}).get("utc_date", ""))[:10] or None
    return build_calibration(gpu, fitted, datasets, base, day)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fit vlmplan speed-model constants to microbenchmarks")
    ap.add_argument("microbench", type=Path)
    ap.add_argument("--allreduce", type=Path, default=None)
    ap.add_argument("--gpu", default=None, help="catalog GPU name (default: from the file's nvidia-smi name)")
    ap.add_argument("--shape-effects", type=Path, default=None,
                    help="shape_effects.py output (unaligned GEMMs, batched attention); may come from a sibling GPU")
    ap.add_argument("--vit-shapes", type=Path, action="append", default=[],
                    help="vit_shapes.py output of the same GPU (repeatable: the sections of all files are pooled)")
    ap.add_argument("--quant-ops", type=Path, default=None,
                    help="quant_ops.py output of the same GPU (the reference's dynamic fp8 quantisation)")
    ap.add_argument("--sibling", default=None,
                    help="fitted calibration of a GPU with the same die (catalog name, e.g. H100-SXM-80GB): the "
                         "constants this GPU has no run for are transferred from it (SIBLING_TRANSFER)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        cal = fit_files(args.microbench, args.allreduce, args.gpu, shape_effects=args.shape_effects,
                        vit_shapes=args.vit_shapes, quant_ops=args.quant_ops,
                        sibling=sibling_calibration(args.sibling) if args.sibling else None)
    except (PlannerError, OSError, ValueError) as e:
        print(f"error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    text = calibration_yaml(cal, f"Fitted by: python -m planner.calibrate.fit {args.microbench}"
                            + (f" --allreduce {args.allreduce}" if args.allreduce else "")
                            + (f" --shape-effects {args.shape_effects}" if args.shape_effects else "")
                            + "".join(f" --vit-shapes {p}" for p in args.vit_shapes)
                            + (f" --quant-ops {args.quant_ops}" if args.quant_ops else "")
                            + (f" --sibling {args.sibling}" if args.sibling else ""))
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    for name, c in cal.constants.items():
        if c.fit is not None:
            mape = f"{c.fit.mape_pct:.1f}%" if c.fit.mape_pct is not None else "-"
            print(f"{name:40s} {c.value:>12g} {c.unit:40s} MAPE {mape:>6s} n={c.fit.n_points}",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["BenchRun", "EngineFit", "Fitted", "build_calibration", "calibration_with", "calibration_with_engine_fit",
           "calibration_yaml", "fit_all", "fit_engine_overhead", "fit_files", "gpu_for", "mape_pct", "read_vllm_bench"]
