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
* Decode attention is a bandwidth-bound read of the KV cache whose
  efficiency rises with the bytes each layer reads (``half_bytes``).
* Tensor parallelism adds two all-reduces per layer (ring: 2(n-1)/n of the
  message over the link, plus 2(n-1) latency steps); pipeline parallelism a
  hand-off per stage.

Times are GPU times of one step of one replica; the engine's CPU time per step
is ``engine_overhead_ms``, kept apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.catalog.schema import Calibration, GpuSpec, PrecisionTable, VisionSpec
from planner.deployment import ServingConfig
from planner.memory import kv_heads_per_gpu
from planner.modeldesc import decoder_layers, full_attention_layers

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
        self.latency = (cal.value("kernel_latency_us") + cal.value("graph_launch_gap_us")) * 1e-6
        self.eager_launch = cal.value("eager_launch_us") * 1e-6
        # Read once: the GEMM formula runs tens of thousands of times per solve.
        self._tile_m = cal.value("gemm_tile_m")
        self._tile_n = cal.value("gemm_tile_n")
        self._gemm_mem_eff = cal.value("gemm_memory_efficiency")
        self._unaligned_eff = cal.value("gemm_unaligned_efficiency")
        self._peaks = {prec: self._peak(prec) for prec in ("bf16", "fp16", "fp8", "int8", "int4")}

    def _op(self, name: str, flops: float, nbytes: float, peak: float, compute_eff: float,
            mem_eff: float, count: int = 1, kernels: int = 1) -> Op:
        t_c = flops / (peak * compute_eff) if flops else 0.0
        t_m = nbytes / (self.bw * mem_eff)
        body = max(t_c, t_m)
        bound = "compute" if t_c >= t_m else "memory"
        if self.latency * kernels > body:
            bound = "latency"
        return Op(name, flops, nbytes, self.latency * kernels + body, bound, count, kernels)

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

    def _peak(self, precision: str) -> tuple[float, float]:
        g, c = self.gpu, self.cal
        if precision == "fp8" and g.fp8_dense_tflops:
            return g.fp8_dense_tflops * 1e12, c.value("fp8_gemm_compute_efficiency")
        if precision == "int8" and g.int8_dense_tops:
            return g.int8_dense_tops * 1e12, c.value("int8_gemm_compute_efficiency")
        if precision == "int4":
            return g.bf16_dense_tflops * 1e12, c.value("int4_gemm_compute_efficiency")
        return g.bf16_dense_tflops * 1e12, c.value("gemm_compute_efficiency")

    def elementwise(self, name: str, nbytes: float, count: int = 1, kernels: int = 1) -> Op:
        return self._op(name, 0.0, nbytes, 1.0, 1.0, self.cal.value("elementwise_memory_efficiency"), count,
                        kernels)

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
        # The kernel computes with the padded head dim, and each query tile pays a fixed cost worth
        # ``attention_prefill_overhead_tokens`` keys (loading Q, the softmax epilogue, writing O): short
        # sequences (a ViT's 64-token windows) run far below peak. Fewer query tiles than SMs (one short
        # prompt) leave SMs idle; above that, the tail of the last wave is not modelled (the kernels
        # schedule tiles dynamically and several fit an SM).
        work = 4.0 * (pairs + self.cal.value("attention_prefill_overhead_tokens") * q_tokens) * heads \
            * attention_head_dim(head_dim) * batch
        tiles = batch * heads * math.ceil(q_tokens / self.cal.value("attention_tile_q"))
        nbytes = batch * ((q_tokens * heads * head_dim * 2 * ACT) + kv_tokens * kv_heads * head_dim * 2 * kv_bytes)
        eff = self.cal.value("attention_prefill_compute_efficiency") * (flops / work if work else 1.0) \
            * min(1.0, tiles / self.sms)
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

    def repeat(self, op: Op, times: int, count: int) -> Op:
        """``op`` done ``times`` times inside one kernel (experts of a fused MoE,
        windows of a varlen attention): the work scales, the launch does not."""
        fixed = self.latency * op.kernels
        body = op.time_s - fixed
        return Op(op.name, op.flops * times, op.bytes * times, fixed + body * times, op.bound, count, op.kernels)

    def allreduce(self, name: str, nbytes: float, n: int, count: int = 1) -> Op:
        """Ring all-reduce of ``nbytes`` over ``n`` GPUs: a fixed latency per all-reduce plus the ring's
        2(n-1)/n x bytes over the link's bus bandwidth. The latency does not grow with n: NCCL's own tuning
        model is base latency + steps x per-hop latency with a per-hop NVLink latency under 1 us, and the
        measured small all-reduces inside CUDA graphs cost ~10 us on 2 and on 4 H100s alike (TP=2 and TP=4
        decode steps, catalogs/calibration/measurements/h100-sxm-80gb/run5_*)."""
        link = self.gpu.interconnect
        bw = link.bandwidth_gb_per_s * 1e9 * self.cal.value("allreduce_bus_efficiency")
        t = self.cal.value("allreduce_latency_us") * 1e-6 + (2 * (n - 1) / n) * nbytes / bw
        return Op(name, 0.0, nbytes, t, "link", count)


def gemm_aligned(n: int, k: int, element_bytes: float) -> bool:
    """Whether cuBLAS can use its fast (16-byte aligned, TMA) kernels: N and K rows a multiple of 16
    bytes. Qwen2.5-VL's ViT MLP (3420 wide) is not: measured 3-4x slower (``gemm_unaligned_efficiency``)."""
    elems = max(1, round(16 / max(element_bytes, 1)))
    return n % elems == 0 and k % elems == 0


def attention_head_dim(head_dim: int) -> int:
    """Head dimension the fused attention kernels compute with: padded up to a multiple of 64.

    Measured (microbench ``attn_prefill``, non-causal, H100 and H200, default cuDNN backend): head
    dims 72 and 80 run at 0.84x and 0.89x the TFLOP/s of head dim 64 (counting their true FLOPs),
    i.e. as if computing with 128; FlashAttention likewise instantiates kernels for a few head dims
    only and pads the rest. Prefill attention FLOPs are counted at the padded size."""
    return 64 * math.ceil(head_dim / 64)


@dataclass(frozen=True)
class Kernels:
    """Kernel launches and bytes moved by one piece of non-GEMM work, per layer.

    ``bytes`` is in units named by the field that holds it (e.g. hidden-state
    elements m x h at 16 bits)."""

    kernels: int
    bytes: float


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
    """Both RMSNorms and residual adds of a layer; bytes in units of m x hidden x 2."""
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
    vit_block: Kernels
    """A ViT block's norms, residual adds and layout copies; units of n x width x 2."""
    vit_act: Kernels
    """A ViT block's activation; units of n x intermediate x 2."""
    act_quant_every_input: bool = False
    """True: every GEMM input (qkv, o, gate_up, down) is quantised by kernels of its own, so the traffic scales
    with each input's width K (the down projection's input is the intermediate size, not the hidden size)."""


VLLM = KernelProfile(
    name="vllm",
    # fused_add_rms_norm twice: reads x and residual, writes both.
    norms=Kernels(2, 8.0),
    # rotary_embedding: in place on q and k.
    rotary=Kernels(1, 2.0),
    qk_norm=Kernels(2, 2.0),
    # silu_and_mul: reads gate and up, writes the product.
    act=Kernels(1, 3.0),
    # reshape_and_cache_flash: reads K, V, writes the cache.
    kv_write=Kernels(1, 2.0),
    attn_layout=Kernels(0, 0.0),
    # torch.compile fuses the quantisation into the norm (qkv, gate_up inputs) and
    # into silu_and_mul (down input); the attention output is quantised on its own.
    act_quant_per_layer=Kernels(1, 1.5),
    # two LayerNorm/RMSNorm + two residual adds.
    vit_block=Kernels(4, 10.0),
    vit_act=Kernels(1, 3.0),
)

TORCH_REFERENCE = KernelProfile(
    name="torch-reference",
    # F.rms_norm twice (read+write) and two residual adds (read two, write one).
    norms=Kernels(4, 10.0),
    # rotate-half: x*cos, neg, cat, addcmul.
    rotary=Kernels(4, 8.0),
    # F.rms_norm then a multiply by the weight.
    qk_norm=Kernels(2, 4.0),
    # F.silu on the gate half, then a multiply by the up half.
    act=Kernels(2, 5.0),
    # two copy_ into the cache (K and V).
    kv_write=Kernels(2, 2.0),
    # output transpose + reshape copy.
    attn_layout=Kernels(1, 2.0),
    # per GEMM input, 4 kernels (measurements README): amax = vector_norm(ord=inf, dtype=float32), which
    # casts X to fp32 first (reads 2, writes 4 bytes an element) and reduces it (reads 4); clamp (a scalar);
    # divide-and-cast (reads 2, writes 1). In units of the 2-byte input: 3 + 2 + 1.5 = 6.5; four GEMM
    # inputs a layer.
    act_quant_per_layer=Kernels(16, 26.0),
    # two norms, two residual adds, q/k/v/o layout copies.
    vit_block=Kernels(8, 18.0),
    vit_act=Kernels(2, 5.0),
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
        # Each token visits top_k experts; with m tokens spread over E experts
        # the experts touched are min(E, m * top_k) and each sees m*top_k/E rows.
        touched = min(moe.num_experts, m * moe.top_k)
        rows = max(1, math.ceil(m * moe.top_k / touched))
        inter = moe.moe_intermediate_size // tp
        up = rf.gemm(f"{prefix}expert_gate_up", rows, 2 * inter, d.hidden_size, cfg.precision, precisions)
        down = rf.gemm(f"{prefix}expert_down", rows, d.hidden_size, inter, cfg.precision, precisions)
        ops.append(rf.repeat(up, touched, n_moe))
        ops.append(rf.repeat(down, touched, n_moe))
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
        ops.append(rf.elementwise(f"{prefix}act_quant", q.bytes * m * width * ACT, n_layers, q.kernels))
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
        rf.elementwise(f"{prefix}norms_residual", p.norms.bytes * m * h * ACT, n, p.norms.kernels),
        rf.elementwise(f"{prefix}rotary", p.rotary.bytes * qk, n, p.rotary.kernels),
        rf.elementwise(f"{prefix}activation", p.act.bytes * m * inter * ACT, n, p.act.kernels),
    ]
    if d.qk_norm:
        ops.append(rf.elementwise(f"{prefix}qk_norm", p.qk_norm.bytes * qk, n, p.qk_norm.kernels))
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
        ops.append(rf.elementwise("attention_layout", lay.bytes * m * heads * d.head_dim * ACT, full + sliding,
                                  lay.kernels))
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
    return rf.elementwise("kv_cache_write", profile.kv_write.bytes * kv, layers, profile.kv_write.kernels)


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
        from planner.vision_tokens import max_image_tokens

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


def vision_encode(rf: Roofline, cfg: ServingConfig, precisions: PrecisionTable, patches: int,
                  images: int, profile: KernelProfile = VLLM, eager: bool = True) -> StepTime:
    """Encode ``images`` images totalling ``patches`` ViT tokens (bf16 ViT).

    vLLM's default ``mm_encoder_tp_mode=weights`` shards the ViT like the
    decoder (split GEMMs + all-reduces); ``data`` replicates it and splits
    the images across the TP ranks. vLLM 0.33 runs the encoder eagerly, so a
    small image is bound by the CPU launching its kernels.
    """
    v = cfg.model.vision
    if v is None or patches <= 0:
        return StepTime(())
    split = cfg.tp if cfg.mm_encoder_tp_mode == "weights" else 1
    if cfg.mm_encoder_tp_mode == "data" and cfg.tp > 1:
        patches = math.ceil(patches / min(cfg.tp, max(images, 1)))
    d = v.hidden_size
    n = v.num_layers
    heads = v.num_heads // split if v.num_heads % split == 0 else v.num_heads
    hd = d // v.num_heads
    inter = v.intermediate_size // split
    per_image = max(1, patches // max(images, 1))
    patch_k = v.num_channels * v.temporal_patch_size * v.patch_size**2
    ops = [
        rf.gemm("vit_patch_embed", patches, d, patch_k, "bf16", precisions),
        rf.gemm("vit_qkv", patches, 3 * d // split, d, "bf16", precisions, n),
        rf.gemm("vit_o", patches, d, d // split, "bf16", precisions, n),
        rf.gemm("vit_mlp_up", patches, (2 if v.gated_mlp else 1) * inter, d, "bf16", precisions, n),
        rf.gemm("vit_mlp_down", patches, d, inter, "bf16", precisions, n),
        rf.elementwise("vit_norms_residual", profile.vit_block.bytes * patches * d * ACT, n,
                       profile.vit_block.kernels),
        rf.elementwise("vit_activation", profile.vit_act.bytes * patches * inter * ACT, n,
                       profile.vit_act.kernels if v.gated_mlp else 1),
    ]
    if vit_has_rotary(v):
        qk = 2 * patches * (heads * hd) * ACT
        ops.append(rf.elementwise("vit_rotary", profile.rotary.bytes * qk, n, profile.rotary.kernels))
    if v.window_attention is not None:
        full = len(v.window_attention.full_attention_layers)
        win = min(v.window_attention.window_patches, per_image)
        windows = math.ceil(patches / win)
        ops.append(rf.attention_prefill("vit_attention_window", win, win, heads, heads, hd, False, ACT,
                                        n - full, batch=windows))
        ops.append(rf.attention_prefill("vit_attention_full", per_image, per_image, heads, heads, hd, False, ACT,
                                        full, batch=max(images, 1)))
    else:
        ops.append(rf.attention_prefill("vit_attention", per_image, per_image, heads, heads, hd, False, ACT, n,
                                        batch=max(images, 1)))
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


def frontend_ms(cal: Calibration, input_megapixels: float, processed_megapixels: float) -> float:
    """CPU time of the API server on a request's images before the engine sees it (decode, resize, normalise
    and patchify): part of TTFT and e2e, not of any engine step. Modelled as a delay per request, not a queue:
    at high image rates one API-server process can saturate first (vLLM's --api-server-count)."""
    return (cal.value("frontend_ms_per_input_megapixel") * input_megapixels
            + cal.value("frontend_ms_per_processed_megapixel") * processed_megapixels)


def engine_overhead_ms(cal: Calibration, running_seqs: int) -> float:
    """CPU time per engine step (scheduling, input prep, sampling, detokenising)."""
    return cal.value("engine_step_overhead_ms") + cal.value("engine_per_seq_overhead_ms") * running_seqs
