"""The one attention formula: the time of one attention layer's kernel on one GPU.

Every caller costs attention here: the per-op roofline (``Roofline.attention_prefill`` / ``attention_decode``,
for the decoder's prefill and decode steps and the ViT), and ``StepCost``, which the analytic load model and the
simulator use for mixed chunked-prefill steps. The formulas take Python numbers (the simulator's inner loop,
where a numpy call would cost more than the arithmetic) or numpy arrays (the analytic model's curves, runs of
decode steps) alike, so there is no second, vectorised copy to keep in step.

**Decode** is a read of the KV cache whose bandwidth efficiency rises with the bytes a layer reads::

    latency + max(flops / peak, (bytes + half_bytes) / (bandwidth x efficiency))

linear in the context the batch holds (``context`` tokens over ``num_decode`` sequences).

**Prefill** runs query tiles of ``attention_tile_q`` rows, one per SM at a time. Its work, in FLOP-equivalents
at the kernel's efficiency, is per (query, key) pair and head QK^T and PV at the padded head dim
(``attention_head_dim``) plus the softmax, whose cost does not shrink with the head dim
(``attention_softmax_head_dims`` head dims' worth: head dim 64 takes 0.70x the time of 128, not 0.5x), and per
query row a fixed cost worth ``attention_prefill_overhead_tokens`` keys (loading Q, the epilogue, writing O),
which makes short sequences (a ViT's 64-token windows) run far below peak. The kernel computes whole query tiles
(a 1,025-token image is 9 tiles, the last of one row), with a causal mask computes the diagonal blocks whole
before masking them, and a last, partial wave of tiles leaves SMs idle (16 heads x 1,024 tokens: 128 tiles, one
wave on 132 SMs, 15 us; 1,025 tokens: 144 tiles, two waves, 30 us; run10, H100)::

    latency + max(work / (peak x efficiency x wave share), bytes / (bandwidth x efficiency))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import GpuSpec
from planner.perf.ops import ACT


def attention_head_dim(head_dim: int) -> int:
    """Head dimension the fused attention kernels compute with: padded up to a multiple of 64.

    Measured (``attn_batched`` and ``attn``, non-causal SDPA, default cuDNN backend, H100 and H200): head dims
    72, 80 and 96 take as long as 128; FlashAttention likewise instantiates kernels for a few head dims only
    and pads the rest."""
    return 64 * math.ceil(head_dim / 64)


class AttentionCost:
    """Per-layer attention times of one head layout (heads, KV heads, head dim per GPU) on one GPU under one
    calibration, in ms. The coefficients are folded once so that a call is a handful of multiplications."""

    def __init__(self, gpu: GpuSpec, cal: Calibration, latency_s: float, sms: int, heads: int, kv_heads: int,
                 head_dim: int, kv_bytes: int) -> None:
        peak = gpu.bf16_dense_tflops * 1e12
        bw = gpu.hbm_bandwidth_gb_per_s * 1e9
        self.heads = heads
        self.sms = sms
        self.latency_ms = latency_s * 1e3
        """Fixed cost of one attention kernel (the tensor-core kernels' ramp-up and drain)."""
        # Decode, per context token and per sequence.
        mem = cal.value("attention_decode_memory_efficiency") * bw
        self.decode_flop_ms = 4.0 * heads * head_dim / peak * 1e3
        self.decode_kv_ms = kv_heads * head_dim * 2 * kv_bytes / mem * 1e3
        self.decode_q_ms = heads * head_dim * 2 * ACT / mem * 1e3
        self.decode_half_ms = cal.value("attention_decode_half_bytes") / mem * 1e3
        # Prefill: work per pair and per query row, and bytes per query and per key token.
        self.ms_per_work = 1e3 / (peak * cal.value("attention_prefill_compute_efficiency"))
        self.tile_q = cal.value("attention_tile_q")
        self.per_pair = 4.0 * heads * (attention_head_dim(head_dim) + cal.value("attention_softmax_head_dims"))
        self.per_query = self.per_pair * cal.value("attention_prefill_overhead_tokens")
        emem = cal.value("elementwise_memory_efficiency") * bw
        self.prefill_q_ms = heads * head_dim * 2 * ACT / emem * 1e3
        self.prefill_kv_ms = kv_heads * head_dim * 2 * kv_bytes / emem * 1e3

    def decode_parts(self, num_decode: Any, context: Any) -> tuple[Any, Any]:
        """(compute, memory) ms of one layer's decode attention: ``num_decode`` sequences holding ``context``
        tokens in all (numbers or arrays)."""
        return (self.decode_flop_ms * context,
                self.decode_kv_ms * context + (self.decode_q_ms * num_decode + self.decode_half_ms))

    def decode_ms(self, num_decode: Any, context: Any) -> Any:
        """One layer's decode attention (ms), kernel latency included."""
        c, m = self.decode_parts(num_decode, context)
        if isinstance(c, np.ndarray) or isinstance(m, np.ndarray):
            return self.latency_ms + np.maximum(c, m)
        return self.latency_ms + (c if c >= m else m)  # the simulator's inner loop: no call to max

    def prefill_parts(self, q_tokens: Any, pairs: Any, kv_tokens: Any, causal: bool = True,
                      batch: int = 1) -> tuple[Any, Any]:
        """(compute, memory) ms of one layer's prefill attention: ``batch`` sequences of ``q_tokens`` queries
        (> 0), each with ``pairs`` (query, key) pairs and ``kv_tokens`` keys read (numbers or arrays)."""
        ceil = np.ceil if isinstance(q_tokens, np.ndarray) else math.ceil
        tq = self.tile_q
        q_pad = ceil(q_tokens / tq) * tq
        tiles = self.heads * q_pad / tq * batch
        waves = tiles / (ceil(tiles / self.sms) * self.sms)
        scale = q_pad / q_tokens * self.ms_per_work / waves
        diag = q_tokens * tq / 2 if causal else 0.0
        fixed = self.per_query * q_pad * self.ms_per_work / waves
        compute = (self.per_pair * (pairs + diag) * scale + fixed) * batch
        return compute, (self.prefill_q_ms * q_tokens + self.prefill_kv_ms * kv_tokens) * batch

    def prefill_ms(self, q_tokens: Any, pairs: Any, kv_tokens: Any, causal: bool = True, batch: int = 1) -> Any:
        """One layer's prefill attention (ms), kernel latency included."""
        return self.latency_ms + _larger(*self.prefill_parts(q_tokens, pairs, kv_tokens, causal, batch))


def _larger(a: Any, b: Any) -> Any:
    """The larger of two numbers, or elementwise of arrays (the builtin is 20x faster on numbers)."""
    return np.maximum(a, b) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else max(a, b)


def prefill_pairs(done: Any, chunk: Any) -> Any:
    """Causal attention pairs of a ``chunk`` of queries after ``done`` tokens already in the KV cache: each
    query attends every earlier token and itself."""
    return chunk * (done + chunk) - chunk * (chunk - 1) / 2
