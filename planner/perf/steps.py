"""The decoder's engine steps as ops: one request's prefill, and a decode step of a batch.

``prefill_step`` and ``decode_step`` list every op of a forward pass (projection GEMMs or MoE experts,
elementwise kernels, attention, KV-cache writes, TP all-reduces, PP hand-offs, the lm_head) on the per-op
roofline, so that a report can say which op bounds a step. ``StepCost`` reads its fast tables off them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import PrecisionTable
from planner.perf.kernels import VLLM, KernelProfile
from planner.perf.memory import kv_heads_per_gpu
from planner.perf.ops import ACT, Op, StepTime
from planner.perf.roofline import Roofline
from planner.spec.config import ResolvedConfig
from planner.spec.modeldesc import decoder_layers, full_attention_layers


def _linear_ops(rf: Roofline, cfg: ResolvedConfig, precisions: PrecisionTable, m: int,
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
        if isinstance(m, np.ndarray):  # StepCost's tables: every token count at once
            touched = np.minimum(moe.num_experts, m * moe.top_k)
            rows = np.maximum(1, np.ceil(m * moe.top_k / touched))
        else:
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


def _elementwise_ops(rf: Roofline, cfg: ResolvedConfig, m: int, prefix: str,
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


def _tp_ops(rf: Roofline, cfg: ResolvedConfig, m: int, prefix: str) -> list[Op]:
    if cfg.tp == 1:
        return []
    d = cfg.model.decoder
    return [rf.allreduce(f"{prefix}allreduce", m * d.hidden_size * ACT, cfg.tp, 2 * d.num_layers)]


def _pp_ops(rf: Roofline, cfg: ResolvedConfig, m: int, prefix: str) -> list[Op]:
    if cfg.pp == 1:
        return []
    d = cfg.model.decoder
    link = cfg.gpu.interconnect.bandwidth_gb_per_s * 1e9
    t = rf.cal.value("p2p_latency_us") * 1e-6 + m * d.hidden_size * ACT / link
    return [Op(f"{prefix}pp_handoff", 0.0, m * d.hidden_size * ACT, t, "link", cfg.pp - 1)]


def _lm_head(rf: Roofline, cfg: ResolvedConfig, rows: int, precisions: PrecisionTable, prefix: str) -> Op:
    d = cfg.model.decoder
    return rf.gemm(f"{prefix}lm_head", rows, d.vocab_size // cfg.tp, d.hidden_size, "bf16", precisions)


def prefill_step(rf: Roofline, cfg: ResolvedConfig, precisions: PrecisionTable, prompt_tokens: int,
                 cached_tokens: int = 0, profile: KernelProfile = VLLM) -> StepTime:
    """One request's prompt (text + visual tokens) prefilled alone.

    ``cached_tokens`` of the prompt hit the prefix cache: they are attended to
    but not recomputed. vLLM runs prefill under piecewise CUDA graphs, so no
    eager launch cost is added.
    """
    d = cfg.model.decoder
    m = max(1, prompt_tokens - cached_tokens)
    heads, kv_heads, kv_b = _head_layout(cfg)
    ops = _linear_ops(rf, cfg, precisions, m, "", profile) + _elementwise_ops(rf, cfg, m, "", profile)
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


def _head_layout(cfg: ResolvedConfig) -> tuple[int, int, int]:
    """(query heads, KV heads, KV bytes per element) of one GPU's share of the decoder's attention."""
    d = cfg.model.decoder
    return (d.num_attention_heads // cfg.tp, kv_heads_per_gpu(d.num_kv_heads, cfg.tp),
            cfg.kv_bytes_per_element)


def _kv_write(rf: Roofline, cfg: ResolvedConfig, m: int, layers: int, profile: KernelProfile) -> Op:
    d = cfg.model.decoder
    kv = m * kv_heads_per_gpu(d.num_kv_heads, cfg.tp) * d.head_dim * 2 * cfg.kv_bytes_per_element
    return rf.kernels("kv_cache_write", profile.kv_write, kv, layers)


def decode_step(rf: Roofline, cfg: ResolvedConfig, precisions: PrecisionTable, batch: Any,
                context: int, profile: KernelProfile = VLLM) -> StepTime:
    """One decode step of ``batch`` sequences each holding ``context`` tokens
    (replayed from a CUDA graph, as vLLM does). ``batch`` may be an integer array: every op's time is then an
    array, one entry per batch size, equal to the scalar evaluation's (``StepCost``'s tables)."""
    d = cfg.model.decoder
    heads, kv_heads, kv_b = _head_layout(cfg)
    ops = _linear_ops(rf, cfg, precisions, batch, "", profile) + _elementwise_ops(rf, cfg, batch, "", profile)
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



def engine_overhead_ms(cal: Calibration, running_seqs: int) -> float:
    """CPU time per engine step (scheduling, input prep, sampling, detokenising)."""
    return cal.value("engine_step_overhead_ms") + cal.value("engine_per_seq_overhead_ms") * running_seqs

