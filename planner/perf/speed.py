"""Per-op roofline speed model: vision encoder, prefill, decode step.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.catalog.schema import Calibration, GpuSpec, PrecisionTable, VisionSpec
from planner.perf.memory import kv_heads_per_gpu
from planner.spec.config import ServingConfig
from planner.spec.modeldesc import decoder_layers, full_attention_layers
from planner.spec.shape import RequestShape

ACT = 2  # bytes of a 16-bit activation


@dataclass(frozen=True)
class Op:
    name: str
    flops: float
    bytes: float
    time_s: float
    bound: str
    """``compute``, ``memory``, ``latency`` (kernel floor) or ``link``."""
    count: int = 1
    """How many times the op runs per step (layers)."""
    kernels: int = 1
    """Kernel launches per run of the op (each pays the fixed per-kernel cost)."""

    @property
    def total_s(self) -> float:
        return self.time_s * self.count


@dataclass(frozen=True)
class StepTime:
    ops: tuple[Op, ...]
    eager_launch_s: float = 0.0
    """CPU time to launch one kernel when the step runs eagerly (no CUDA graph);
    0 for steps replayed from CUDA graphs. An eager step takes the longer of
    its GPU time and the CPU time to launch its kernels."""

    @property
    def gpu_ms(self) -> float:
        return sum(op.total_s for op in self.ops) * 1e3

    @property
    def num_kernels(self) -> int:
        return sum(op.kernels * op.count for op in self.ops)

    @property
    def time_ms(self) -> float:
        return max(self.gpu_ms, self.num_kernels * self.eager_launch_s * 1e3)

    @property
    def flops(self) -> float:
        return sum(op.flops * op.count for op in self.ops)

    @property
    def bytes(self) -> float:
        return sum(op.bytes * op.count for op in self.ops)

    @property
    def bound(self) -> str:
        """Whichever of compute or memory accounts for more of the step's time."""
        compute = sum(op.total_s for op in self.ops if op.bound == "compute")
        other = sum(op.total_s for op in self.ops if op.bound != "compute")
        return "compute" if compute > other else "memory"


class Roofline:
    """The GPU's ceilings and efficiencies, bound to one calibration."""

    def __init__(self, gpu: GpuSpec, cal: Calibration) -> None:
        self.gpu = gpu
        self.cal = cal
        self.bw = gpu.hbm_bandwidth_gb_per_s * 1e9
        self.sms = gpu.num_sms or 108
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

    def _op(self, name: str, flops: float, nbytes: float, peak: float, compute_eff: float,
            mem_eff: float, count: int = 1, kernels: int = 1, latency: float | None = None) -> Op:
        t_c = flops / (peak * compute_eff) if flops else 0.0
        t_m = nbytes / (self.bw * mem_eff)
        body = max(t_c, t_m)
        bound = "compute" if t_c >= t_m else "memory"
        fixed = (self.gemm_latency if latency is None else latency) * kernels
        if fixed > body:
            bound = "latency"
        return Op(name, flops, nbytes, fixed + body, bound, count, kernels)

    def wave_efficiency(self, m: int, n: int) -> float:
        tiles = math.ceil(m / self._tile_m) * math.ceil(n / self._tile_n)
        waves = math.ceil(tiles / self.sms)
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
        row_tiles = math.ceil(rows / self._tile_m)
        tiles = groups * row_tiles * math.ceil(n / self._tile_n)
        waves = math.ceil(tiles / self.sms)
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
        return self._op(name, 0.0, nbytes, 1.0, 1.0, self._l2_eff if resident else self._ew_eff, count,
                        kernels, self.latency)

    def kernels(self, name: str, k: Kernels, unit_bytes: float, count: int = 1) -> Op:
        """The non-GEMM work ``k`` (``k.bytes`` units of ``unit_bytes``), ``count`` times."""
        nbytes = k.bytes * unit_bytes
        if k.kind == "simple":
            return self.elementwise(name, nbytes, count, k.kernels)
        lat, eff = self._kinds[k.kind]
        return self._op(name, 0.0, nbytes, 1.0, 1.0, eff, count, k.kernels, lat)

    def attention_prefill(self, name: str, q_tokens: int, kv_tokens: int, heads: int, kv_heads: int,
                          head_dim: int, causal: bool, kv_bytes: int, count: int = 1, batch: int = 1) -> Op:
        """``batch`` independent sequences of ``q_tokens`` queries over ``kv_tokens`` keys in one kernel
        (a ViT's windows or images), ``count`` times (layers)."""
        # QK^T and PV: 2 GEMMs of 2*q*kv*d FLOPs per head; causal keeps the
        # lower triangle (about half when q == kv).
        pairs: float = q_tokens * kv_tokens
        if causal:
            pairs = q_tokens * kv_tokens - q_tokens * (q_tokens - 1) / 2
        flops = 4.0 * pairs * heads * head_dim * batch
        work, tiles = attention_prefill_tiles(self.cal, pairs, q_tokens, heads, head_dim, causal)
        work, tiles = work * batch, tiles * batch
        nbytes = batch * ((q_tokens * heads * head_dim * 2 * ACT) + kv_tokens * kv_heads * head_dim * 2 * kv_bytes)
        eff = self.cal.value("attention_prefill_compute_efficiency") * (flops / work if work else 1.0) \
            * attention_wave_efficiency(tiles, self.sms)
        return self._op(name, flops, nbytes, self.gpu.bf16_dense_tflops * 1e12, eff,
                        self.cal.value("elementwise_memory_efficiency"), count)

    def attention_decode(self, name: str, batch: int, context: int, heads: int, kv_heads: int,
                         head_dim: int, kv_bytes: int, count: int = 1) -> Op:
        kv_read = batch * context * kv_heads * head_dim * 2 * kv_bytes
        nbytes = kv_read + batch * heads * head_dim * 2 * ACT
        flops = 4.0 * batch * context * heads * head_dim
        half = self.cal.value("attention_decode_half_bytes")
        eff = self.cal.value("attention_decode_memory_efficiency") * nbytes / (nbytes + half)
        return self._op(name, flops, nbytes, self.gpu.bf16_dense_tflops * 1e12, 1.0, eff, count)

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


def attention_head_dim(head_dim: int) -> int:
    """Head dimension the fused attention kernels compute with: padded up to a multiple of 64.

    Measured (``attn_batched`` and ``attn``, non-causal SDPA, default cuDNN backend, H100 and H200): head dims
    72, 80 and 96 take as long as 128; FlashAttention likewise instantiates kernels for a few head dims only
    and pads the rest."""
    return 64 * math.ceil(head_dim / 64)


def attention_prefill_work(cal: Calibration, pairs: Any, q_tokens: Any, heads: int, head_dim: int) -> Any:
    """Prefill attention's work in FLOP-equivalents at the kernel's efficiency (scalars or numpy arrays).

    Per (query, key) pair and head: QK^T and PV at the padded head dim, plus the softmax (exp, max, rescale),
    whose cost does not shrink with the head dim: ``attention_softmax_head_dims`` head dims' worth (measured:
    head dim 64 takes 0.70x the time of 128, not 0.5x). Per query row: a fixed cost worth
    ``attention_prefill_overhead_tokens`` keys (loading Q, the epilogue, writing O), which makes short
    sequences (a ViT's 64-token windows) run far below peak."""
    per_pair, per_query = attention_work_coefficients(cal, heads, head_dim)
    return per_pair * pairs + per_query * q_tokens


def attention_work_coefficients(cal: Calibration, heads: int, head_dim: int) -> tuple[float, float]:
    """FLOP-equivalents of prefill attention per (query, key) pair and per query row (``attention_prefill_work``
    is ``pairs x the first + queries x the second``)."""
    per_pair = 4.0 * heads * (attention_head_dim(head_dim) + cal.value("attention_softmax_head_dims"))
    return per_pair, per_pair * cal.value("attention_prefill_overhead_tokens")


def attention_prefill_tiles(cal: Calibration, pairs: Any, q_tokens: Any, heads: int, head_dim: int,
                            causal: bool = True) -> tuple[Any, Any]:
    """(work, query tiles) of one sequence's prefill attention (scalars or numpy arrays, q_tokens > 0).

    The kernel computes whole 128-row query tiles (a 1,025-token image is 9 tiles, the last of one row), and
    with a causal mask computes the diagonal blocks whole before masking them."""
    tile_q = cal.value("attention_tile_q")
    q_pad = np.ceil(np.asarray(q_tokens, dtype=float) / tile_q) * tile_q
    computed = pairs + q_tokens * tile_q / 2 if causal else pairs
    work = attention_prefill_work(cal, computed * q_pad / q_tokens, q_pad, heads, head_dim)
    return work, heads * q_pad / tile_q


def attention_wave_efficiency(tiles: Any, sms: int) -> Any:
    """Share of the GPU busy over a kernel of ``tiles`` equal query tiles, one per SM at a time (scalar or
    numpy array): the last wave runs partly empty. Measured: 16 heads x 1,024 tokens (128 tiles of 128 rows,
    one wave on 132 SMs) take 15 us, 1,025 tokens (144 tiles, two waves) 30 us (run10, H100)."""
    waves = np.ceil(np.maximum(tiles, 1) / sms)
    return np.maximum(tiles, 1) / (waves * sms)


@dataclass(frozen=True)
class Kernels:
    """Kernel launches and bytes moved by one piece of non-GEMM work, per layer.

    ``bytes`` is in units named by the field that holds it (e.g. hidden-state
    elements m x h at 16 bits)."""

    kernels: int
    bytes: float
    kind: str = "simple"
    """``simple`` (vectorised unary/binary ops, copies: L2-resident when small), ``norm`` (normalisations and
    reductions), ``broadcast`` (PyTorch's generic kernel for strided or broadcast operands), ``transposed``
    (the generic kernel reading a transposed operand: uncoalesced) or ``quant`` (one
    tensor's whole dynamic fp8 quantisation: abs-max, scale, divide-and-cast, counted as one "kernel"); each
    kind has its own measured per-kernel latency and bandwidth efficiency."""


@dataclass(frozen=True)
class KernelProfile:
    """How an implementation splits the non-GEMM work of a layer into kernels.

    These are counts read off the implementation's source, not fitted numbers.
    ``VLLM`` is what vLLM 0.33 runs (fused CUDA ops and torch.compile fusions);
    ``TORCH_REFERENCE`` is the plain-PyTorch model of
    ``planner/calibrate/validation_models.py`` that the accuracy benchmark
    measured, so that the benchmark checks the op physics, not the fusions.
    """

    name: str
    norms: Kernels
    """Both RMSNorms of a layer (with the residual adds where fused); bytes in units of m x hidden x 2."""
    residual: Kernels
    """Residual adds not fused into the norms; units of m x hidden x 2."""
    rotary: Kernels
    """Rotary embedding of q and k; bytes in units of the q+k activations."""
    qk_norm: Kernels
    """Per-head q/k RMSNorm (Qwen3, Gemma 3); units of the q+k activations."""
    act: Kernels
    """Gated activation; bytes in units of m x intermediate x 2."""
    kv_write: Kernels
    """Writing the step's K and V into the cache; units of the K+V bytes."""
    attn_layout: Kernels
    """Layout copies around prefill attention; units of m x q_heads x head_dim x 2."""
    act_quant_per_layer: Kernels
    """W8A8 dynamic activation quantisation per layer; units of m x hidden x 2 (or, with
    ``act_quant_every_input``, of one GEMM input m x K x 2, summed over the layer's GEMM inputs)."""
    vit_norms: Kernels
    """A ViT block's two norms; units of n x width x 2."""
    vit_residual: Kernels
    """A ViT block's residual adds; units of n x width x 2."""
    vit_strided_residual: Kernels
    """A block's residual adds and copies when the residual stream keeps the patch convolution's transposed
    layout (no class token is concatenated, which would make it contiguous): units of n x width x 2."""
    vit_act: dict[str, Kernels]
    """A ViT block's activation by kind (``VisionSpec.activation``; key ``default`` for unknown);
    units of n x intermediate x 2."""
    vit_layer_scale: Kernels
    """Layer-scale multiplies (InternViT's ls1/ls2) of a block; units of n x width x 2."""
    act_quant_every_input: bool = False
    """True: every GEMM input (qkv, o, gate_up, down) is quantised by kernels of its own, so the traffic scales
    with each input's width K (the down projection's input is the intermediate size, not the hidden size)."""


VLLM = KernelProfile(
    name="vllm",
    # fused_add_rms_norm twice: reads x and residual, writes both.
    norms=Kernels(2, 8.0, "norm"),
    residual=Kernels(0, 0.0),
    # rotary_embedding: in place on q and k.
    rotary=Kernels(1, 2.0),
    qk_norm=Kernels(2, 2.0, "norm"),
    # silu_and_mul: reads gate and up, writes the product.
    act=Kernels(1, 3.0),
    # reshape_and_cache_flash: reads K, V, writes the cache.
    kv_write=Kernels(1, 2.0),
    attn_layout=Kernels(0, 0.0),
    # torch.compile fuses the quantisation into the norm (qkv, gate_up inputs) and
    # into silu_and_mul (down input); the attention output is quantised on its own.
    act_quant_per_layer=Kernels(1, 1.5, "norm"),
    # two LayerNorm/RMSNorm (read, write) + two residual adds (read two, write one).
    vit_norms=Kernels(2, 4.0, "norm"),
    vit_residual=Kernels(2, 6.0),
    vit_strided_residual=Kernels(2, 6.0),
    # one fused kernel (GELU, QuickGELU or SiluAndMul): reads its input, writes the output.
    vit_act={"default": Kernels(1, 2.0), "silu_gated": Kernels(1, 3.0)},
    vit_layer_scale=Kernels(2, 4.0, "broadcast"),
)

TORCH_REFERENCE = KernelProfile(
    name="torch-reference",
    # Kinds as the torch profiler shows them (run11, H100, torch 2.11): ops on strided views or broadcast
    # operands take PyTorch's generic (non-vectorised) kernel, here the "broadcast" kind.
    # F.rms_norm twice (one layer-norm kernel each: read + write) and two residual adds (read two, write one).
    norms=Kernels(2, 4.0, "norm"),
    residual=Kernels(2, 6.0),
    # rotate-half on a q/k view: x*cos (broadcast cos), neg of a half, cat, addcmul.
    rotary=Kernels(4, 8.0, "broadcast"),
    # F.rms_norm then a multiply by the weight.
    qk_norm=Kernels(2, 4.0, "norm"),
    # F.silu on the gate half (a strided view), then a multiply by the up half.
    act=Kernels(2, 5.0, "broadcast"),
    # two copy_ into the head-major cache (strided).
    kv_write=Kernels(2, 2.0, "broadcast"),
    # none: the cuDNN kernel writes its output in the layout the transpose + reshape asks for (run10, run11).
    attn_layout=Kernels(0, 0.0),
    # per GEMM input, four kernels (run11): abs-max reduction, two on the fp32 scale, divide-and-cast through
    # PyTorch's casting kernel; timed together per input by quant_ops.py (run12), in units of the 2-byte input.
    # Four GEMM inputs a layer (the "kernels" count inputs: eager launches are 4x more).
    act_quant_per_layer=Kernels(4, 4.0, "quant"),
    # F.layer_norm twice (read + write), two residual adds.
    vit_norms=Kernels(2, 4.0, "norm"),
    vit_residual=Kernels(2, 6.0),
    # conv patches without a class token (SigLIP): flatten(2).transpose(1, 2) leaves the residual stream
    # transposed, so both adds take the generic kernel and each norm first copies it contiguous (the torch
    # profiler's op list of the reference tower, H100): 2 adds (3 units) + 2 copies (2 units), reading the
    # transposed stream.
    vit_strided_residual=Kernels(4, 10.0, "transposed"),
    # F.gelu (exact or tanh): one vectorised kernel; quick-GELU x * sigmoid(1.702 x): scalar multiply, sigmoid,
    # multiply (2 + 2 + 3 units); SiLU(gate) * up on strided halves, as the decoder's.
    vit_act={"default": Kernels(1, 2.0), "quick_gelu": Kernels(3, 7.0),
             "silu_gated": Kernels(2, 5.0, "broadcast")},
    # x * ls (a [width] vector) after attention and after the MLP.
    vit_layer_scale=Kernels(2, 4.0, "broadcast"),
    act_quant_every_input=True,
)


def _linear_ops(rf: Roofline, cfg: ServingConfig, precisions: PrecisionTable, m: int,
                prefix: str, profile: KernelProfile = VLLM) -> list[Op]:
    """Projection GEMMs of all layers for ``m`` tokens (per GPU: split by TP)."""
    d = cfg.model.decoder
    tp = cfg.tp
    kv_heads = kv_heads_per_gpu(d.num_kv_heads, tp)
    q_cols = d.num_attention_heads * d.head_dim // tp
    qkv_n = q_cols + 2 * kv_heads * d.head_dim
    n_layers = d.num_layers
    ops = [
        rf.gemm(f"{prefix}qkv_proj", m, qkv_n, d.hidden_size, cfg.precision, precisions, n_layers),
        rf.gemm(f"{prefix}o_proj", m, d.hidden_size, q_cols, cfg.precision, precisions, n_layers),
    ]
    moe = d.moe
    layers = decoder_layers(d)
    n_moe = sum(1 for layer in layers if layer.mlp_linear != layer.mlp_active_linear)
    n_dense = n_layers - n_moe
    if n_dense:
        inter = d.intermediate_size // tp
        up_n = (2 if d.gated_mlp else 1) * inter
        ops.append(rf.gemm(f"{prefix}gate_up_proj", m, up_n, d.hidden_size, cfg.precision, precisions, n_dense))
        ops.append(rf.gemm(f"{prefix}down_proj", m, d.hidden_size, inter, cfg.precision, precisions, n_dense))
    if moe is not None and n_moe:
        # Each token visits top_k experts; with m tokens spread over E experts the experts touched are
        # min(E, m * top_k), each seeing m * top_k / touched rows, all in one fused kernel whose tiles share
        # the waves (timing each expert as its own GEMM made a step of 1,024 tokens cost 59 ms, of 1,025
        # tokens 31 ms).
        touched = min(moe.num_experts, m * moe.top_k)
        rows = max(1, math.ceil(m * moe.top_k / touched))
        inter = moe.moe_intermediate_size // tp
        ops.append(rf.grouped_gemm(f"{prefix}expert_gate_up", touched, rows, 2 * inter, d.hidden_size,
                                   cfg.precision, precisions, n_moe))
        ops.append(rf.grouped_gemm(f"{prefix}expert_down", touched, rows, d.hidden_size, inter, cfg.precision,
                                   precisions, n_moe))
        ops.append(rf.gemm(f"{prefix}router", m, moe.num_experts, d.hidden_size, "bf16", precisions, n_moe))
        if moe.shared_expert_intermediate_size:
            s = moe.shared_expert_intermediate_size // tp
            ops.append(rf.gemm(f"{prefix}shared_gate_up", m, 2 * s, d.hidden_size, cfg.precision,
                               precisions, n_moe))
            ops.append(rf.gemm(f"{prefix}shared_down", m, d.hidden_size, s, cfg.precision, precisions, n_moe))
    q = profile.act_quant_per_layer
    if cfg.precision in ("fp8", "int8") and q.kernels:
        # Dynamic per-token activation quantisation of the W8A8 GEMM inputs.
        width: float = d.hidden_size
        if profile.act_quant_every_input:
            # Mean input width of the layer's four GEMMs (qkv, o, gate_up, down); MoE layers quantise the
            # expert inputs (hidden) and the expert down inputs (top_k x moe width).
            down_k = d.intermediate_size // tp if n_dense == n_layers or moe is None else (
                moe.top_k * moe.moe_intermediate_size // tp)
            width = (2 * d.hidden_size + q_cols + down_k) / 4
        ops.append(rf.kernels(f"{prefix}act_quant", q, m * width * ACT, n_layers))
    return ops


def _elementwise_ops(rf: Roofline, cfg: ServingConfig, m: int, prefix: str,
                     profile: KernelProfile = VLLM) -> list[Op]:
    d = cfg.model.decoder
    h = d.hidden_size
    inter = d.intermediate_size // cfg.tp
    n = d.num_layers
    qk = m * (d.num_attention_heads + d.num_kv_heads) * d.head_dim // cfg.tp * ACT
    p = profile
    ops = [
        rf.kernels(f"{prefix}norms", p.norms, m * h * ACT, n),
        rf.kernels(f"{prefix}rotary", p.rotary, qk, n),
        rf.kernels(f"{prefix}activation", p.act, m * inter * ACT, n),
    ]
    if p.residual.kernels:
        ops.append(rf.kernels(f"{prefix}residual_add", p.residual, m * h * ACT, n))
    if d.qk_norm:
        ops.append(rf.kernels(f"{prefix}qk_norm", p.qk_norm, qk, n))
    return ops


def _tp_ops(rf: Roofline, cfg: ServingConfig, m: int, prefix: str) -> list[Op]:
    if cfg.tp == 1:
        return []
    d = cfg.model.decoder
    return [rf.allreduce(f"{prefix}allreduce", m * d.hidden_size * ACT, cfg.tp, 2 * d.num_layers)]


def _pp_ops(rf: Roofline, cfg: ServingConfig, m: int, prefix: str) -> list[Op]:
    if cfg.pp == 1:
        return []
    d = cfg.model.decoder
    link = cfg.gpu.interconnect.bandwidth_gb_per_s * 1e9
    t = rf.cal.value("p2p_latency_us") * 1e-6 + m * d.hidden_size * ACT / link
    return [Op(f"{prefix}pp_handoff", 0.0, m * d.hidden_size * ACT, t, "link", cfg.pp - 1)]


def _lm_head(rf: Roofline, cfg: ServingConfig, rows: int, precisions: PrecisionTable, prefix: str) -> Op:
    d = cfg.model.decoder
    return rf.gemm(f"{prefix}lm_head", rows, d.vocab_size // cfg.tp, d.hidden_size, "bf16", precisions)


def prefill_step(rf: Roofline, cfg: ServingConfig, precisions: PrecisionTable, prompt_tokens: int,
                 cached_tokens: int = 0, profile: KernelProfile = VLLM) -> StepTime:
    """One request's prompt (text + visual tokens) prefilled alone.

    ``cached_tokens`` of the prompt hit the prefix cache: they are attended to
    but not recomputed. vLLM runs prefill under piecewise CUDA graphs, so no
    eager launch cost is added.
    """
    d = cfg.model.decoder
    m = max(1, prompt_tokens - cached_tokens)
    kv_heads = kv_heads_per_gpu(d.num_kv_heads, cfg.tp)
    heads = d.num_attention_heads // cfg.tp
    kv_b = 1 if cfg.kv_cache_dtype == "fp8" else 2
    ops = _linear_ops(rf, cfg, precisions, m, "", profile)
    ops += _elementwise_ops(rf, cfg, m, "", profile)
    full = full_attention_layers(d)
    sliding = d.num_sliding_window_layers
    lay = profile.attn_layout
    if lay.kernels:
        ops.append(rf.kernels("attention_layout", lay, m * heads * d.head_dim * ACT, full + sliding))
    if full:
        ops.append(rf.attention_prefill("attention", m, prompt_tokens, heads, kv_heads, d.head_dim, True,
                                        kv_b, full))
    if sliding:
        window = min(prompt_tokens, d.sliding_window or prompt_tokens)
        ops.append(rf.attention_prefill("attention_sliding", m, window, heads, kv_heads, d.head_dim, False,
                                        kv_b, sliding))
    ops.append(_kv_write(rf, cfg, m, full + sliding, profile))
    ops += _tp_ops(rf, cfg, m, "")
    ops += _pp_ops(rf, cfg, m, "")
    ops.append(_lm_head(rf, cfg, 1, precisions, ""))
    return StepTime(tuple(ops))


def _kv_write(rf: Roofline, cfg: ServingConfig, m: int, layers: int, profile: KernelProfile) -> Op:
    d = cfg.model.decoder
    kv_b = 1 if cfg.kv_cache_dtype == "fp8" else 2
    kv = m * kv_heads_per_gpu(d.num_kv_heads, cfg.tp) * d.head_dim * 2 * kv_b
    return rf.kernels("kv_cache_write", profile.kv_write, kv, layers)


def decode_step(rf: Roofline, cfg: ServingConfig, precisions: PrecisionTable, batch: int,
                context: int, profile: KernelProfile = VLLM) -> StepTime:
    """One decode step of ``batch`` sequences each holding ``context`` tokens
    (replayed from a CUDA graph, as vLLM does)."""
    d = cfg.model.decoder
    kv_heads = kv_heads_per_gpu(d.num_kv_heads, cfg.tp)
    heads = d.num_attention_heads // cfg.tp
    kv_b = 1 if cfg.kv_cache_dtype == "fp8" else 2
    ops = _linear_ops(rf, cfg, precisions, batch, "", profile)
    ops += _elementwise_ops(rf, cfg, batch, "", profile)
    full = full_attention_layers(d)
    ops.append(_kv_write(rf, cfg, batch, full + d.num_sliding_window_layers, profile))
    if full:
        ops.append(rf.attention_decode("attention", batch, context, heads, kv_heads, d.head_dim, kv_b, full))
    if d.num_sliding_window_layers:
        window = min(context, d.sliding_window or context)
        ops.append(rf.attention_decode("attention_sliding", batch, window, heads, kv_heads, d.head_dim, kv_b,
                                       d.num_sliding_window_layers))
    if d.cross_attention_layers and cfg.model.visual_tokens is not None:
        from planner.catalog.vision_tokens import max_image_tokens

        states = max_image_tokens(cfg.model.visual_tokens, cfg.mm_processor_options).cross_attention_tokens
        ops.append(rf.attention_decode("cross_attention", batch, states, heads, kv_heads, d.head_dim, kv_b,
                                       len(d.cross_attention_layers)))
    ops += _tp_ops(rf, cfg, batch, "")
    ops += _pp_ops(rf, cfg, batch, "")
    ops.append(_lm_head(rf, cfg, batch, precisions, ""))
    return StepTime(tuple(ops))


def vit_has_rotary(v: VisionSpec) -> bool:
    """Whether the ViT applies rotary position embeddings to q and k in every block.

    The Qwen2-VL / Qwen2.5-VL / Qwen3-VL towers (the ones that embed 2-frame patches,
    ``temporal_patch_size`` 2) use 2D RoPE; the CLIP/SigLIP/InternViT towers add learned
    absolute position embeddings once. (Pixtral and Llama 4 also use 2D RoPE; the catalog
    schema has no field that tells them apart yet, so their ViTs are counted without it.)"""
    return v.temporal_patch_size > 1


def vit_activation(profile: KernelProfile, v: VisionSpec) -> Kernels:
    """The kernels of ``v``'s MLP activation under ``profile``."""
    key = "silu_gated" if v.gated_mlp else (v.activation or "default")
    return profile.vit_act.get(key, profile.vit_act["default"])


def vision_encode(rf: Roofline, cfg: ServingConfig, precisions: PrecisionTable, patches: int,
                  images: int, profile: KernelProfile = VLLM, eager: bool = True,
                  sequences: int | None = None) -> StepTime:
    """Encode ``images`` images totalling ``patches`` ViT tokens (bf16 ViT) in ``sequences`` attention
    sequences (default: one per image).

    A tiled encoder (InternVL, LLaVA-NeXT, Idefics3, Phi-3.5-vision, MiniCPM-V...) encodes each tile and
    thumbnail as its own image: its linear layers run over all ``patches``, but attention is quadratic per
    sequence (``patches / sequences`` tokens each), not over the image's patches as one sequence
    (``RequestShape.encoder_sequences``).

    vLLM's default ``mm_encoder_tp_mode=weights`` shards the ViT like the
    decoder (split GEMMs + all-reduces); ``data`` replicates it and splits
    the sequences (images, tiles) across the TP ranks. vLLM 0.33 runs the encoder eagerly, so a
    small image is bound by the CPU launching its kernels.
    """
    v = cfg.model.vision
    if v is None or patches <= 0:
        return StepTime(())
    seqs = max(1, sequences if sequences is not None else images)
    split = cfg.tp if cfg.mm_encoder_tp_mode == "weights" else 1
    if cfg.mm_encoder_tp_mode == "data" and cfg.tp > 1:
        ranks = min(cfg.tp, seqs)
        patches = math.ceil(patches / ranks)
        seqs = math.ceil(seqs / ranks)
    d = v.hidden_size
    n = v.num_layers
    heads = v.num_heads // split if v.num_heads % split == 0 else v.num_heads
    hd = d // v.num_heads
    inter = v.intermediate_size // split
    per_seq = max(1, patches // seqs)
    patch_k = v.num_channels * v.temporal_patch_size * v.patch_size**2
    # Conv patches without a class token leave the residual stream in the convolution's transposed layout.
    strided = v.temporal_patch_size == 1 and not v.class_token
    residual = profile.vit_strided_residual if strided else profile.vit_residual
    ops = [
        rf.gemm("vit_patch_embed", patches, d, patch_k, "bf16", precisions),
        rf.gemm("vit_qkv", patches, 3 * d // split, d, "bf16", precisions, n),
        rf.gemm("vit_o", patches, d, d // split, "bf16", precisions, n),
        rf.gemm("vit_mlp_up", patches, (2 if v.gated_mlp else 1) * inter, d, "bf16", precisions, n),
        rf.gemm("vit_mlp_down", patches, d, inter, "bf16", precisions, n),
        rf.kernels("vit_norms", profile.vit_norms, patches * d * ACT, n),
        rf.kernels("vit_residual_add", residual, patches * d * ACT, n),
        rf.kernels("vit_activation", vit_activation(profile, v), patches * inter * ACT, n),
    ]
    if v.layer_scale:
        ops.append(rf.kernels("vit_layer_scale", profile.vit_layer_scale, patches * d * ACT, n))
    if vit_has_rotary(v):
        qk = 2 * patches * (heads * hd) * ACT
        ops.append(rf.kernels("vit_rotary", profile.rotary, qk, n))
    if v.window_attention is not None:
        full = len(v.window_attention.full_attention_layers)
        win = min(v.window_attention.window_patches, per_seq)
        windows = math.ceil(patches / win)
        ops.append(rf.attention_prefill("vit_attention_window", win, win, heads, heads, hd, False, ACT,
                                        n - full, batch=windows))
        ops.append(rf.attention_prefill("vit_attention_full", per_seq, per_seq, heads, heads, hd, False, ACT,
                                        full, batch=seqs))
    else:
        ops.append(rf.attention_prefill("vit_attention", per_seq, per_seq, heads, heads, hd, False, ACT, n,
                                        batch=seqs))
    p = v.projector
    rows = max(1, patches * p.output_dim // max(1, p.input_dim) if p.kind == "resampler" else
               patches * d // p.input_dim)
    if p.hidden_dim:
        ops.append(rf.gemm("projector_fc1", rows, p.hidden_dim, p.input_dim, "bf16", precisions))
        ops.append(rf.gemm("projector_fc2", rows, p.output_dim, p.hidden_dim, "bf16", precisions))
    else:
        ops.append(rf.gemm("projector", rows, p.output_dim, p.input_dim, "bf16", precisions))
    if split > 1:
        ops.append(rf.allreduce("vit_allreduce", patches * d * ACT, split, 2 * n))
    return StepTime(tuple(ops), eager_launch_s=rf.eager_launch if eager else 0.0)


def frontend_ms(cal: Calibration, input_megapixels: float, processed_megapixels: float, images: int = 0) -> float:
    """Time from the client's send to the engine's queue, and from the engine's first token back to the
    client, that no engine step holds: the request's fixed path (HTTP, tokenising, hand-off to the engine,
    streaming the token back: ``request_latency_ms``) plus the API server's CPU on its images (decode, resize,
    normalise, patchify: a fixed part per image and a part per megapixel). Part of TTFT and e2e. Modelled as
    a delay per request, not a queue: at high image rates one API-server process can saturate first
    (vLLM's --api-server-count)."""
    return (cal.value("request_latency_ms") + cal.value("frontend_ms_per_image") * images
            + cal.value("frontend_ms_per_input_megapixel") * input_megapixels
            + cal.value("frontend_ms_per_processed_megapixel") * processed_megapixels)


def api_server_ms(cal: Calibration, input_tokens: Any, output_tokens: Any, images: Any, input_megapixels: Any) -> Any:
    """How long one request holds one API-server process (vLLM's ``--api-server-count`` processes, each one
    Python event loop): tokenising its prompt, decoding and preprocessing its images, streaming its output tokens
    back (scalars, or numpy arrays of one value per request). The load models queue requests for these processes
    (first come, first served); at low load the wait is nil and the request's latency outside the engine is
    ``frontend_ms``'s; near saturation the queue caps the replica's throughput at
    ``api_server_count / api_server_ms`` (planner.calibrate.api_server)."""
    return (cal.value("api_server_ms_per_request")
            + cal.value("api_server_ms_per_input_token") * input_tokens
            + cal.value("api_server_ms_per_output_token") * output_tokens
            + cal.value("api_server_ms_per_image") * images
            + cal.value("api_server_ms_per_megapixel") * input_megapixels)


def vision_call_host_ms(cal: Calibration, images: int) -> float:
    """The engine's host work around one vision-encoder call (input layout, position ids, the model runner's
    bookkeeping; fitted from real serving): it holds the engine step like the GPU work does, once per call
    however many images the call encodes. 0 without images."""
    return cal.value("vision_call_overhead_ms") if images > 0 else 0.0


def engine_overhead_ms(cal: Calibration, running_seqs: int) -> float:
    """CPU time per engine step (scheduling, input prep, sampling, detokenising)."""
    return cal.value("engine_step_overhead_ms") + cal.value("engine_per_seq_overhead_ms") * running_seqs


def shape_frontend_ms(cal: Calibration, shape: RequestShape) -> float:
    """The request's time outside the engine: its fixed path and the API server's image work
    (``speed.frontend_ms``)."""
    return frontend_ms(cal, shape.input_megapixels, shape.processed_megapixels, shape.images)
