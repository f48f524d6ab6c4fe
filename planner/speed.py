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

from planner.catalog.schema import Calibration, GpuSpec, PrecisionTable
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

    @property
    def total_s(self) -> float:
        return self.time_s * self.count


@dataclass(frozen=True)
class StepTime:
    ops: tuple[Op, ...]

    @property
    def time_ms(self) -> float:
        return sum(op.total_s for op in self.ops) * 1e3

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
        self.latency = cal.value("kernel_latency_us") * 1e-6

    def _op(self, name: str, flops: float, nbytes: float, peak: float, compute_eff: float,
            mem_eff: float, count: int = 1) -> Op:
        t_c = flops / (peak * compute_eff) if flops else 0.0
        t_m = nbytes / (self.bw * mem_eff)
        body = max(t_c, t_m)
        bound = "compute" if t_c >= t_m else "memory"
        if self.latency > body:
            bound = "latency"
        return Op(name, flops, nbytes, self.latency + body, bound, count)

    def wave_efficiency(self, m: int, n: int) -> float:
        tiles = math.ceil(m / self.cal.value("gemm_tile_m")) * math.ceil(n / self.cal.value("gemm_tile_n"))
        waves = math.ceil(tiles / self.sms)
        return tiles / (waves * self.sms)

    def gemm(self, name: str, m: int, n: int, k: int, precision: str, precisions: PrecisionTable,
             count: int = 1) -> Op:
        """Y[m, n] = X[m, k] @ W[k, n] with W stored at ``precision``."""
        p = precisions.precisions[precision]  # type: ignore[index]
        w_bytes = k * n * (p.bytes_per_weight + p.scale_bytes_per_weight)
        nbytes = m * k * p.activation_bytes + w_bytes + m * n * ACT
        flops = 2.0 * m * n * k
        peak, eff = self._peak(precision)
        eff *= self.wave_efficiency(m, n)
        return self._op(name, flops, nbytes, peak, eff, self.cal.value("gemm_memory_efficiency"), count)

    def _peak(self, precision: str) -> tuple[float, float]:
        g, c = self.gpu, self.cal
        if precision == "fp8" and g.fp8_dense_tflops:
            return g.fp8_dense_tflops * 1e12, c.value("fp8_gemm_compute_efficiency")
        if precision == "int8" and g.int8_dense_tops:
            return g.int8_dense_tops * 1e12, c.value("int8_gemm_compute_efficiency")
        if precision == "int4":
            return g.bf16_dense_tflops * 1e12, c.value("int4_gemm_compute_efficiency")
        return g.bf16_dense_tflops * 1e12, c.value("gemm_compute_efficiency")

    def elementwise(self, name: str, nbytes: float, count: int = 1) -> Op:
        return self._op(name, 0.0, nbytes, 1.0, 1.0, self.cal.value("elementwise_memory_efficiency"), count)

    def attention_prefill(self, name: str, q_tokens: int, kv_tokens: int, heads: int, kv_heads: int,
                          head_dim: int, causal: bool, kv_bytes: int, count: int = 1) -> Op:
        # QK^T and PV: 2 GEMMs of 2*q*kv*d FLOPs per head; causal keeps the
        # lower triangle (about half when q == kv).
        pairs: float = q_tokens * kv_tokens
        if causal:
            pairs = q_tokens * kv_tokens - q_tokens * (q_tokens - 1) / 2
        flops = 4.0 * pairs * heads * head_dim
        nbytes = (q_tokens * heads * head_dim * 2 * ACT) + kv_tokens * kv_heads * head_dim * 2 * kv_bytes
        eff = self.cal.value("attention_prefill_compute_efficiency")
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
        body = op.time_s - self.latency
        return Op(op.name, op.flops * times, op.bytes * times, self.latency + body * times, op.bound, count)

    def allreduce(self, name: str, nbytes: float, n: int, count: int = 1) -> Op:
        link = self.gpu.interconnect
        bw = link.bandwidth_gb_per_s * 1e9 * self.cal.value("allreduce_bus_efficiency")
        steps = 2 * (n - 1)
        t = steps * self.cal.value("allreduce_latency_us") * 1e-6 + (2 * (n - 1) / n) * nbytes / bw
        return Op(name, 0.0, nbytes, t, "link", count)


def _linear_ops(rf: Roofline, cfg: ServingConfig, precisions: PrecisionTable, m: int,
                prefix: str) -> list[Op]:
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
    if cfg.precision in ("fp8", "int8"):
        # Dynamic per-token activation quantisation before each W8A8 GEMM input.
        ops.append(rf.elementwise(f"{prefix}act_quant", m * d.hidden_size * (ACT + 1) * 2, n_layers * 2))
    return ops


def _elementwise_ops(rf: Roofline, cfg: ServingConfig, m: int, prefix: str) -> list[Op]:
    d = cfg.model.decoder
    h = d.hidden_size
    inter = d.intermediate_size // cfg.tp
    n = d.num_layers
    return [
        # Two fused residual-add + RMSNorm per layer: read x and residual, write both.
        rf.elementwise(f"{prefix}add_rmsnorm", 4 * m * h * ACT, 2 * n),
        rf.elementwise(f"{prefix}rotary", 2 * m * (d.num_attention_heads + d.num_kv_heads) * d.head_dim
                       // cfg.tp * ACT, n),
        rf.elementwise(f"{prefix}silu_mul", 3 * m * inter * ACT, n),
    ]


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
                 cached_tokens: int = 0) -> StepTime:
    """One request's prompt (text + visual tokens) prefilled alone.

    ``cached_tokens`` of the prompt hit the prefix cache: they are attended to
    but not recomputed.
    """
    d = cfg.model.decoder
    m = max(1, prompt_tokens - cached_tokens)
    kv_heads = kv_heads_per_gpu(d.num_kv_heads, cfg.tp)
    heads = d.num_attention_heads // cfg.tp
    kv_b = 1 if cfg.kv_cache_dtype == "fp8" else 2
    ops = _linear_ops(rf, cfg, precisions, m, "")
    ops += _elementwise_ops(rf, cfg, m, "")
    full = full_attention_layers(d)
    sliding = d.num_sliding_window_layers
    if full:
        ops.append(rf.attention_prefill("attention", m, prompt_tokens, heads, kv_heads, d.head_dim, True,
                                        kv_b, full))
    if sliding:
        window = min(prompt_tokens, d.sliding_window or prompt_tokens)
        ops.append(rf.attention_prefill("attention_sliding", m, window, heads, kv_heads, d.head_dim, False,
                                        kv_b, sliding))
    ops.append(rf.elementwise("kv_cache_write", m * kv_heads * d.head_dim * 2 * kv_b, full + sliding))
    ops += _tp_ops(rf, cfg, m, "")
    ops += _pp_ops(rf, cfg, m, "")
    ops.append(_lm_head(rf, cfg, 1, precisions, ""))
    return StepTime(tuple(ops))


def decode_step(rf: Roofline, cfg: ServingConfig, precisions: PrecisionTable, batch: int,
                context: int) -> StepTime:
    """One decode step of ``batch`` sequences each holding ``context`` tokens."""
    d = cfg.model.decoder
    kv_heads = kv_heads_per_gpu(d.num_kv_heads, cfg.tp)
    heads = d.num_attention_heads // cfg.tp
    kv_b = 1 if cfg.kv_cache_dtype == "fp8" else 2
    ops = _linear_ops(rf, cfg, precisions, batch, "")
    ops += _elementwise_ops(rf, cfg, batch, "")
    full = full_attention_layers(d)
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


def vision_encode(rf: Roofline, cfg: ServingConfig, precisions: PrecisionTable, patches: int,
                  images: int) -> StepTime:
    """Encode ``images`` images totalling ``patches`` ViT tokens (bf16 ViT).

    vLLM's default ``mm_encoder_tp_mode=weights`` shards the ViT like the
    decoder (split GEMMs + all-reduces); ``data`` replicates it and splits
    the images across the TP ranks.
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
        rf.elementwise("vit_norm_act", (4 * d + 3 * inter) * patches * ACT, n),
    ]
    if v.window_attention is not None:
        full = len(v.window_attention.full_attention_layers)
        win = min(v.window_attention.window_patches, per_image)
        windows = math.ceil(patches / win)
        one = rf.attention_prefill("vit_attention_window", win, win, heads, heads, hd, False, ACT)
        ops.append(rf.repeat(one, windows, n - full))
        img = rf.attention_prefill("vit_attention_full", per_image, per_image, heads, heads, hd, False, ACT)
        ops.append(rf.repeat(img, max(images, 1), full))
    else:
        img = rf.attention_prefill("vit_attention", per_image, per_image, heads, heads, hd, False, ACT)
        ops.append(rf.repeat(img, max(images, 1), n))
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
    return StepTime(tuple(ops))


def engine_overhead_ms(cal: Calibration, running_seqs: int) -> float:
    """CPU time per engine step (scheduling, input prep, sampling, detokenising)."""
    return cal.value("engine_step_overhead_ms") + cal.value("engine_per_seq_overhead_ms") * running_seqs
