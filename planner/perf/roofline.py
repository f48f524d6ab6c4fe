"""The per-op roofline: GEMMs, non-GEMM kernels, attention and collectives, each costed in FLOPs and bytes.

Each op of a step is counted in FLOPs and bytes moved. Its time is::

    kernel_latency + max(flops / (peak x compute_eff), bytes / (bandwidth x memory_eff))

where the efficiencies come from the GPU's calibration file (catalogs/calibration)
and depend on the op's shape:

* GEMM compute efficiency is scaled by wave quantisation: an M x N output in
  ``tile_m x tile_n`` tiles runs in ceil(tiles / SMs) waves, and a last,
  partial wave wastes the idle SMs. A GEMM with M = 16 is memory-bound on its
  weights; one with M = 300 on 132 SMs loses to the partial wave.
* int4 W4A16 reads half-byte weights but computes on 16-bit tensor cores
  after dequantising (its own efficiency); fp8/int8 W8A8 use the 8-bit peak and
  add a per-token activation-quantisation pass.
* Prefill attention runs query tiles of 128 rows, one per SM at a time: its
  work is the (query, key) pairs at the padded head dim plus a softmax cost
  and a fixed cost per query row, and a last, partial wave of tiles wastes SMs
  as a GEMM's does.
* Non-GEMM kernels (norms, adds, activations, copies) are costed by kind
  (``Kernels.kind``): vectorised, norm/reduction, PyTorch's generic strided
  kernel, transposed reads, fp8 quantisation, each with its own measured
  latency and bandwidth; a vectorised kernel whose traffic fits in L2 runs at
  L2 speed.
* Decode attention is a bandwidth-bound read of the KV cache whose
  efficiency rises with the bytes each layer reads (``half_bytes``).
* Tensor parallelism adds two all-reduces per layer (ring: 2(n-1)/n of the
  message over the link, plus a latency that grows with the GPU count);
  pipeline parallelism a hand-off per stage.

Times are GPU times of one step of one replica; the engine's CPU time per step
is ``engine_overhead_ms``, kept apart.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import GpuSpec, PrecisionTable
from planner.perf.attention import AttentionCost, prefill_pairs
from planner.perf.kernels import Kernels
from planner.perf.ops import ACT, Op


class Roofline:
    """The GPU's ceilings and efficiencies, bound to one calibration."""

    def __init__(self, gpu: GpuSpec, cal: Calibration) -> None:
        self.gpu = gpu
        self.cal = cal
        self.bw = gpu.hbm_bandwidth_gb_per_s * 1e9
        self.sms = gpu.num_sms
        # Fixed cost of one kernel on the GPU: its ramp-up/tail plus the gap between
        # consecutive kernels of a CUDA graph.
        gap = cal.value("graph_launch_gap_us")
        self.latency = (cal.value("kernel_latency_us") + gap) * 1e-6
        # Tensor-core kernels (GEMMs, attention) ramp up and drain longer than an elementwise kernel.
        self.gemm_latency = (cal.value("gemm_latency_us") + gap) * 1e-6
        self._ew_eff = cal.value("elementwise_memory_efficiency")
        self._l2_eff = cal.value("elementwise_l2_efficiency")
        self._l2_bytes = cal.value("l2_resident_bytes")
        self._kinds = {
            "norm": ((cal.value("norm_kernel_latency_us") + gap) * 1e-6, cal.value("norm_memory_efficiency")),
            "broadcast": ((cal.value("broadcast_kernel_latency_us") + gap) * 1e-6,
                          cal.value("broadcast_memory_efficiency")),
            "transposed": ((cal.value("transposed_kernel_latency_us") + gap) * 1e-6,
                           cal.value("transposed_memory_efficiency")),
            "quant": (cal.value("quant_latency_us") * 1e-6, cal.value("quant_memory_efficiency")),
        }
        self.eager_launch = cal.value("eager_launch_us") * 1e-6
        # Read once: the GEMM formula runs tens of thousands of times per solve.
        self._tile_m = cal.value("gemm_tile_m")
        self._tile_n = cal.value("gemm_tile_n")
        self._gemm_mem_eff = cal.value("gemm_memory_efficiency")
        self._unaligned_eff = cal.value("gemm_unaligned_efficiency")
        self._peaks = {prec: self._peak(prec) for prec in ("bf16", "fp16", "fp8", "int8", "int4")}
        self._attention: dict[tuple[int, int, int, int], AttentionCost] = {}

    def _op(self, name: str, flops: Any, nbytes: Any, peak: float, compute_eff: Any,
            mem_eff: Any, count: int = 1, kernels: int = 1, latency: float | None = None) -> Op:
        """One op on the roofline. With arrays (one entry per token count: ``StepCost``'s tables) the times are
        arrays too, computed entry by entry with the same floating-point operations, and ``bound`` is 'mixed'."""
        fixed = (self.gemm_latency if latency is None else latency) * kernels
        if isinstance(flops, np.ndarray) or isinstance(nbytes, np.ndarray) or isinstance(compute_eff, np.ndarray):
            with np.errstate(divide="ignore", invalid="ignore"):
                t_ca = np.where(flops != 0, flops / (peak * compute_eff), 0.0)
            return Op(name, flops, nbytes, fixed + np.maximum(t_ca, nbytes / (self.bw * mem_eff)), "mixed", count,
                      kernels)
        t_c = flops / (peak * compute_eff) if flops else 0.0
        t_m = nbytes / (self.bw * mem_eff)
        body = max(t_c, t_m)
        bound = "compute" if t_c >= t_m else "memory"
        if fixed > body:
            bound = "latency"
        return Op(name, flops, nbytes, fixed + body, bound, count, kernels)

    def wave_efficiency(self, m: Any, n: int) -> Any:
        ceil = np.ceil if isinstance(m, np.ndarray) else math.ceil
        tiles = ceil(m / self._tile_m) * math.ceil(n / self._tile_n)
        waves = ceil(tiles / self.sms)
        return tiles / (waves * self.sms)

    def gemm(self, name: str, m: int, n: int, k: int, precision: str, precisions: PrecisionTable,
             count: int = 1) -> Op:
        """Y[m, n] = X[m, k] @ W[k, n] with W stored at ``precision``."""
        p = precisions.precisions[precision]  # type: ignore[index]
        w_bytes = k * n * (p.bytes_per_weight + p.scale_bytes_per_weight)
        nbytes = m * k * p.activation_bytes + w_bytes + m * n * ACT
        flops = 2.0 * m * n * k
        peak, eff = self._peaks.get(precision) or self._peak(precision)
        eff *= self.wave_efficiency(m, n)
        if not gemm_aligned(n, k, p.activation_bytes):
            eff *= self._unaligned_eff
        return self._op(name, flops, nbytes, peak, eff, self._gemm_mem_eff, count)

    def grouped_gemm(self, name: str, groups: int, rows: int, n: int, k: int, precision: str,
                     precisions: PrecisionTable, count: int = 1) -> Op:
        """``groups`` GEMMs of ``rows`` x ``n`` x ``k`` in one kernel (a fused MoE's experts): the tiles of all
        groups share the waves, and each group's last row tile is padded (8 rows of an expert still cost a
        64-row tile)."""
        p = precisions.precisions[precision]  # type: ignore[index]
        w_bytes = groups * k * n * (p.bytes_per_weight + p.scale_bytes_per_weight)
        nbytes = groups * rows * (k * p.activation_bytes + n * ACT) + w_bytes
        flops = 2.0 * groups * rows * n * k
        peak, eff = self._peaks.get(precision) or self._peak(precision)
        ceil = np.ceil if isinstance(rows, np.ndarray) else math.ceil
        row_tiles = ceil(rows / self._tile_m)
        tiles = groups * row_tiles * math.ceil(n / self._tile_n)
        waves = ceil(tiles / self.sms)
        eff *= tiles / (waves * self.sms) * rows / (row_tiles * self._tile_m)
        if not gemm_aligned(n, k, p.activation_bytes):
            eff *= self._unaligned_eff
        return self._op(name, flops, nbytes, peak, eff, self._gemm_mem_eff, count)

    def _peak(self, precision: str) -> tuple[float, float]:
        g, c = self.gpu, self.cal
        if precision == "fp8" and g.fp8_dense_tflops:
            return g.fp8_dense_tflops * 1e12, c.value("fp8_gemm_compute_efficiency")
        if precision == "int8" and g.int8_dense_tops:
            return g.int8_dense_tops * 1e12, c.value("int8_gemm_compute_efficiency")
        if precision == "int4":
            return g.bf16_dense_tflops * 1e12, c.value("int4_gemm_compute_efficiency")
        return g.bf16_dense_tflops * 1e12, c.value("gemm_compute_efficiency")

    def elementwise(self, name: str, nbytes: float, count: int = 1, kernels: int = 1,
                    resident: bool | None = None) -> Op:
        """``kernels`` memory-bound kernels moving ``nbytes`` together. A kernel whose traffic fits in L2
        (``l2_resident_bytes``) finds its input there, written by the kernel before it in the forward pass,
        and runs at L2 speed (measured: hot vs rotating buffers, vit_shapes.py); ``resident`` overrides."""
        if resident is None:
            resident = nbytes / max(kernels, 1) <= self._l2_bytes
        eff = np.where(resident, self._l2_eff, self._ew_eff) if isinstance(resident, np.ndarray) else (
            self._l2_eff if resident else self._ew_eff)
        return self._op(name, 0.0, nbytes, 1.0, 1.0, eff, count, kernels, self.latency)

    def kernels(self, name: str, k: Kernels, unit_bytes: float, count: int = 1) -> Op:
        """The non-GEMM work ``k`` (``k.bytes`` units of ``unit_bytes``), ``count`` times."""
        nbytes = k.bytes * unit_bytes
        if k.kind == "simple":
            return self.elementwise(name, nbytes, count, k.kernels)
        lat, eff = self._kinds[k.kind]
        return self._op(name, 0.0, nbytes, 1.0, 1.0, eff, count, k.kernels, lat)

    def attention(self, heads: int, kv_heads: int, head_dim: int, kv_bytes: int) -> AttentionCost:
        """The attention formula (``planner.perf.attention``) for one head layout on this GPU, built once."""
        key = (heads, kv_heads, head_dim, kv_bytes)
        cost = self._attention.get(key)
        if cost is None:
            cost = self._attention[key] = AttentionCost(self.gpu, self.cal, self.gemm_latency, self.sms, heads,
                                                        kv_heads, head_dim, kv_bytes)
        return cost

    def attention_prefill(self, name: str, q_tokens: int, kv_tokens: int, heads: int, kv_heads: int,
                          head_dim: int, causal: bool, kv_bytes: int, count: int = 1, batch: int = 1) -> Op:
        """``batch`` independent sequences of ``q_tokens`` queries over ``kv_tokens`` keys in one kernel
        (a ViT's windows or images), ``count`` times (layers)."""
        # QK^T and PV: 2 GEMMs of 2*q*kv*d FLOPs per head; causal keeps the lower triangle (about half when
        # q == kv).
        pairs = prefill_pairs(kv_tokens - q_tokens, q_tokens) if causal else q_tokens * kv_tokens
        flops = 4.0 * pairs * heads * head_dim * batch
        nbytes = batch * ((q_tokens * heads * head_dim * 2 * ACT) + kv_tokens * kv_heads * head_dim * 2 * kv_bytes)
        parts = self.attention(heads, kv_heads, head_dim, kv_bytes).prefill_parts(q_tokens, pairs, kv_tokens,
                                                                                 causal, batch)
        return self._attention_op(name, flops, nbytes, parts, count)

    def attention_decode(self, name: str, batch: int, context: int, heads: int, kv_heads: int,
                         head_dim: int, kv_bytes: int, count: int = 1) -> Op:
        """``batch`` sequences each reading ``context`` tokens of KV cache, ``count`` times (layers)."""
        nbytes = batch * context * kv_heads * head_dim * 2 * kv_bytes + batch * heads * head_dim * 2 * ACT
        flops = 4.0 * batch * context * heads * head_dim
        parts = self.attention(heads, kv_heads, head_dim, kv_bytes).decode_parts(batch, batch * context)
        return self._attention_op(name, flops, nbytes, parts, count)

    def _attention_op(self, name: str, flops: float, nbytes: float, parts: tuple[float, float],
                      count: int) -> Op:
        t_c, t_m = parts
        if isinstance(t_c, np.ndarray) or isinstance(t_m, np.ndarray):
            return Op(name, flops, nbytes, self.gemm_latency + np.maximum(t_c, t_m) * 1e-3, "mixed", count)
        body = max(t_c, t_m) * 1e-3
        bound = "latency" if self.gemm_latency > body else "compute" if t_c >= t_m else "memory"
        return Op(name, flops, nbytes, self.gemm_latency + body, bound, count)

    def allreduce(self, name: str, nbytes: float, n: int, count: int = 1) -> Op:
        """Ring all-reduce of ``nbytes`` over ``n`` GPUs: a fixed latency plus the ring's 2(n-1)/n x bytes over
        the link's bus bandwidth. The latency is ``allreduce_latency_us`` on 2 GPUs and grows by
        ``allreduce_hop_latency_us`` per further GPU (NCCL inside a CUDA graph, 4 KiB: 9.0 us on 2 H200s, 16.1 us
        on 4, run15-x4_allreduce.json)."""
        link = self.gpu.interconnect
        bw = link.bandwidth_gb_per_s * 1e9 * self.cal.value("allreduce_bus_efficiency")
        lat = self.cal.value("allreduce_latency_us") + self.cal.value("allreduce_hop_latency_us") * max(0, n - 2)
        t = lat * 1e-6 + (2 * (n - 1) / n) * nbytes / bw
        return Op(name, 0.0, nbytes, t, "link", count)


def gemm_aligned(n: int, k: int, element_bytes: float) -> bool:
    """Whether cuBLAS can use its fast (16-byte aligned, TMA) kernels: N and K rows a multiple of 16
    bytes. Qwen2.5-VL's ViT MLP (3420 wide) is not: measured 3-4x slower (``gemm_unaligned_efficiency``)."""
    elems = max(1, round(16 / max(element_bytes, 1)))
    return n % elems == 0 and k % elems == 0
