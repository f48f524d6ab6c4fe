"""Attention speed: the prefill efficiency, per-tile overhead and softmax cost; the decode memory efficiency.

Prefill attention is compute-bound but runs in waves of padded query tiles with a softmax cost per score, so
three constants are fitted jointly over every prefill timing of the GPU (long causal sequences, batched short
ones, the vision towers' own shapes). Decode attention reads the KV cache: a latency plus bytes at a fraction of
HBM bandwidth, fitted over the fastest kernel per shape (what vLLM's FlashAttention decode and the validation
script pick).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.calibrate.fit.fitted import Fitted, LogFit, calibration_with, log_fit, mape_pct, usable
from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import GpuSpec
from planner.perf.roofline import Roofline

ATTENTION_CONSTANTS = ("attention_prefill_compute_efficiency", "attention_prefill_overhead_tokens",
                       "attention_softmax_head_dims")
"""The constants ``fit_attention`` fits jointly (their dataset is every file that fed it)."""

def _attention_points(mb: dict[str, Any], se: dict[str, Any] | None,
                      vs: dict[str, Any] | None) -> list[tuple[int, int, int, int, bool, int, float]]:
    """(seq, heads, kv_heads, head_dim, causal, batch, seconds) of every prefill-attention timing of one GPU:
    the microbench's default-backend SDPA (causal GQA and ViT), ``shape_effects.py``'s batched short sequences
    and ``vit_shapes.py``'s vision-tower shapes (harness layout)."""
    pts = [(p["seq"], p["q_heads"], p["kv_heads"], p["head_dim"], bool(p["causal"]), p["batch"], p["time_us"] * 1e-6)
           for p in mb.get("attn_prefill", {}).get("points", []) if usable(p) and p["backend"] == p["default_backend"]]
    for src, key in ((se, "attn_batched"), (vs, "attn")):
        for p in (src or {}).get(key, {}).get("points", []):
            if usable(p):
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
    fit = log_fit(names, [0.8, 100.0, 60.0], ([0.05, 0.0, 0.0], [1.0, 2000.0, 1000.0]), predict, meas)
    kinds = ["default-backend SDPA prefill (causal GQA and ViT, seq 128..16384)"]
    if se and se.get("attn_batched"):
        kinds.append("batched short sequences (shape_effects.py)")
    if vs and vs.get("attn"):
        kinds.append("vision-tower shapes in the harness's layout (vit_shapes.py: 1-4 images of 256-4096 tokens, "
                     "head dims 64/72/80, 64-token windows)")
    how = ("joint log least squares over " + "; ".join(kinds) + " with query tiles padded to 128 rows and waves of "
           "one tile per SM; efficiency bounded by 1")
    return fit.fitted(names, how, len(pts), mape_pct(predict(fit.values), meas))



def _decode_best(mb: dict[str, Any]) -> list[dict[str, Any]]:
    """Fastest form/backend per decode-attention shape."""
    best: dict[tuple[int, ...], dict[str, Any]] = {}
    for p in mb["attn_decode"]["points"]:
        if not usable(p):
            continue
        key = (p["batch"], p["context"], p["q_heads"], p["kv_heads"], p["head_dim"])
        if key not in best or p["time_us"] < best[key]["time_us"]:
            best[key] = p
    return list(best.values())


def fit_attn_decode(mb: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    """``attention_decode_memory_efficiency`` and ``attention_decode_half_bytes``: latency + (bytes + half) /
    (HBM x eff) over the fastest form and backend per decode shape."""
    pts = _decode_best(mb)
    meas = np.array([p["time_us"] * 1e-6 for p in pts])

    def predict(v: dict[str, float]) -> np.ndarray:
        rf = Roofline(gpu, calibration_with(base, v))
        return np.array([rf.attention_decode("a", p["batch"], p["context"], p["q_heads"], p["kv_heads"],
                                             p["head_dim"], 2).time_s for p in pts])

    names = ["attention_decode_memory_efficiency", "attention_decode_half_bytes"]
    # half_bytes fitted in MB for conditioning.
    scaled = log_fit(names, [0.8, 1.0], ([0.1, 0.0], [1.0, 1000.0]),
                      lambda x: predict({names[0]: x[names[0]], names[1]: x[names[1]] * 1e6}), meas)
    v = {names[0]: scaled.values[names[0]], names[1]: scaled.values[names[1]] * 1e6}
    flags = {n: (b.times(1e6) if n == names[1] else b) for n, b in scaled.at_bound.items()}
    how = ("log least squares of latency + (bytes + half)/(HBM x eff) over the fastest SDPA decode kernel per "
           "shape (batch 1..256, context 256..32768)")
    return LogFit(v, flags).fitted(names, how, len(pts), mape_pct(predict(v), meas))


