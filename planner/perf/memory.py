"""GPU memory of one replica, per GPU, to vLLM 0.33's accounting.

vLLM (``gpu_worker.determine_available_memory``) reserves
``requested = gpu_memory_utilization x total`` per GPU, runs a profiling
forward pass at ``max_num_batched_tokens`` (plus a dummy encoder pass over the
largest images for VLMs), and gives the KV cache what is left::

    kv_cache = requested - weights - peak_activations - non_torch - cudagraph

then ``num_blocks = kv_cache // (block_size x kv_bytes_per_token)``. The
server refuses to start when ``kv_cache <= 0`` or when one request of
``max_model_len`` tokens cannot fit in the blocks.

Every figure here is per GPU, for the most loaded pipeline stage (the first
stage holds the embedding and the vision tower, the last the lm_head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.catalog.schema import EngineSpec, PrecisionTable
from planner.catalog.vision_tokens import max_image_tokens
from planner.core.units import GIB, MIB
from planner.spec.config import ResolvedConfig
from planner.spec.modeldesc import (
    decoder_layers,
    full_attention_layers,
    param_counts,
)

ACT_BYTES = 2  # activations stay 16-bit between kernels, whatever the weight precision


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per GPU (the most loaded pipeline stage)."""

    total_bytes: int
    """Driver-reported memory of one GPU."""
    requested_bytes: int
    """gpu_memory_utilization x total."""
    weights_bytes: int
    decoder_weights_bytes: int
    vision_weights_bytes: int
    activations_bytes: int
    """Peak of the profiling run: max(decoder pass, encoder pass) + encoder cache."""
    decoder_activation_bytes: int
    encoder_activation_bytes: int
    encoder_cache_bytes: int
    overhead_bytes: int
    """Non-torch allocations (cuBLAS, NCCL) plus CUDA graphs."""
    kv_cache_bytes: int
    """What the KV cache gets (may be negative: does not fit)."""
    kv_bytes_per_token: int
    """Per GPU, one token in every full-attention layer of this stage."""
    sliding_kv_bytes_per_token: int
    """Per GPU, one token in every sliding-window layer of this stage (held up to the window)."""
    cross_attention_kv_bytes_per_image: int
    """Mllama: the fixed cross-attention KV of one image at its maximal tiles."""
    kv_capacity_tokens: int
    """Tokens of context the KV cache holds (vLLM's 'GPU KV cache size')."""
    max_model_len: int
    fits: bool
    reason: str
    """Empty when it fits; otherwise why not, with numbers."""

    @property
    def total_used_bytes(self) -> int:
        return self.weights_bytes + self.activations_bytes + self.overhead_bytes + max(self.kv_cache_bytes, 0)


def kv_heads_per_gpu(num_kv_heads: int, tp: int) -> int:
    """KV heads each GPU stores: heads split by TP, replicated once TP > heads."""
    return max(1, math.ceil(num_kv_heads / tp))


def _stage_share(count: int, pp: int) -> int:
    """Items of ``count`` on the most loaded of ``pp`` stages."""
    return math.ceil(count / pp)


def kv_bytes_per_token_per_layer(cfg: ResolvedConfig) -> int:
    d = cfg.model.decoder
    return 2 * kv_heads_per_gpu(d.num_kv_heads, cfg.tp) * d.head_dim * cfg.kv_bytes_per_element


def kv_bytes_per_token(cfg: ResolvedConfig) -> int:
    """Per GPU, summed over the full-attention layers of the most loaded stage."""
    return _stage_share(full_attention_layers(cfg.model.decoder), cfg.pp) * kv_bytes_per_token_per_layer(cfg)


def sliding_kv_bytes_per_token(cfg: ResolvedConfig) -> int:
    d = cfg.model.decoder
    return _stage_share(d.num_sliding_window_layers, cfg.pp) * kv_bytes_per_token_per_layer(cfg)


def kv_bytes_per_sequence(cfg: ResolvedConfig, context_tokens: int, images: int = 0) -> int:
    """Per GPU KV of one sequence holding ``context_tokens`` (sliding layers
    capped at their window) plus Mllama's fixed cross-attention KV per image."""
    d = cfg.model.decoder
    window = d.sliding_window or 0
    full = kv_bytes_per_token(cfg) * context_tokens
    sliding = sliding_kv_bytes_per_token(cfg) * min(context_tokens, window)
    return full + sliding + images * cross_attention_kv_bytes_per_image(cfg)


def cross_attention_kv_bytes_per_image(cfg: ResolvedConfig) -> int:
    d = cfg.model.decoder
    if not d.cross_attention_layers or cfg.model.visual_tokens is None:
        return 0
    states = max_image_tokens(cfg.model.visual_tokens, cfg.mm_processor_options).cross_attention_tokens
    layers = _stage_share(len(d.cross_attention_layers), cfg.pp)
    return layers * kv_bytes_per_token_per_layer(cfg) * states


def weights_bytes(cfg: ResolvedConfig, precisions: PrecisionTable) -> tuple[int, int]:
    """(decoder, vision) weight bytes on one GPU of the most loaded stage."""
    model = cfg.model
    d = model.decoder
    p = precisions.precisions[cfg.precision]
    quant_bytes = p.bytes_per_weight + p.scale_bytes_per_weight
    layers = decoder_layers(d)
    # KV projections are replicated when TP exceeds the KV heads.
    kv_rep = kv_heads_per_gpu(d.num_kv_heads, cfg.tp) * cfg.tp / d.num_kv_heads
    per_layer = []
    for layer in layers:
        kv_part = 2 * d.hidden_size * d.num_kv_heads * d.head_dim
        linear = layer.attention_linear + layer.mlp_linear + kv_part * (kv_rep - 1)
        per_layer.append(linear * quant_bytes / cfg.tp + layer.other * 2)
    layers_per_stage = _stage_share(len(layers), cfg.pp)
    stage_layers = max(
        sum(per_layer[i : i + layers_per_stage]) for i in range(0, len(layers), layers_per_stage)
    )
    counts = param_counts(model)
    embed = counts.embedding * 2 / cfg.tp
    head = counts.lm_head * 2 / cfg.tp
    # First stage holds the embedding (and the lm_head too when tied or pp == 1).
    ends = embed + head if cfg.pp == 1 else max(embed, head)
    decoder = int(stage_layers + ends) + draft_weights_bytes(cfg)
    vision_div = cfg.tp if cfg.mm_encoder_tp_mode == "weights" else 1
    vision = int(counts.vision * 2 / vision_div)
    return decoder, vision


def decoder_activation_bytes(cfg: ResolvedConfig, engine: EngineSpec) -> int:
    """Peak of the profiling forward pass over ``max_num_batched_tokens`` tokens.

    Live at the MLP peak: residual + normed input (2 x hidden), gate_up output
    (2 x intermediate / tp) and its activation (intermediate / tp). For MoE,
    each token's top-k expert rows. Plus the sampler's fp32 logits for
    ``max_num_seqs`` sequences over the full vocabulary.
    """
    d = cfg.model.decoder
    tokens = cfg.max_num_batched_tokens
    inter = d.intermediate_size
    if d.moe is not None:
        inter = max(inter, d.moe.top_k * d.moe.moe_intermediate_size + d.moe.shared_expert_intermediate_size)
    mlp = 2 * d.hidden_size + 3 * inter / cfg.tp
    attn = 2 * d.hidden_size + (2 * d.num_attention_heads + 2 * d.num_kv_heads) * d.head_dim / cfg.tp
    per_token = max(mlp, attn) * ACT_BYTES
    logits = cfg.max_num_seqs * d.vocab_size * engine.logits_bytes_per_element
    return int(tokens * per_token + logits * engine.sampler_logits_copies)


def encoder_profile(cfg: ResolvedConfig) -> tuple[int, int, int]:
    """(encoder activation peak, encoder cache bytes, images per profiling batch)
    of vLLM's dummy encoder pass (encoder_budget.py / compute_mm_encoder_budget)."""
    model = cfg.model
    v = model.vision
    if v is None or model.visual_tokens is None or cfg.limit_images_per_prompt == 0:
        return 0, 0, 0
    item = max_image_tokens(model.visual_tokens, cfg.mm_processor_options)
    per_item = max(item.llm_tokens, 1)
    items_per_prompt = max(1, min(cfg.images_per_prompt, cfg.max_model_len // per_item))
    budget = max(cfg.max_num_batched_tokens, per_item)
    items = max(1, min(budget // per_item, cfg.max_num_seqs * items_per_prompt))
    patches = items * item.encoder_patches
    div = cfg.tp if cfg.mm_encoder_tp_mode == "weights" else 1
    mlp_width = (3 if v.gated_mlp else 2) * v.intermediate_size / div
    per_patch = (2 * v.hidden_size + max(mlp_width, 4 * v.hidden_size / div)) * ACT_BYTES
    activation = int(patches * per_patch)
    cache = int(budget * model.decoder.hidden_size * ACT_BYTES)
    return activation, cache, items


def overhead_bytes(cfg: ResolvedConfig, engine: EngineSpec) -> int:
    non_torch = engine.non_torch_gib_tp1 if cfg.num_gpus == 1 else engine.non_torch_gib_tp_multi
    return int((non_torch + engine.cudagraph_gib) * GIB)


def draft_weights_bytes(cfg: ResolvedConfig) -> int:
    """A speculative draft's weights on one GPU: bf16, split over TP like the target's (vLLM's default
    draft_tensor_parallel_size); 0 without a draft checkpoint."""
    spec = cfg.speculative
    return int(spec.draft_params_b * 1e9 * 2 / cfg.tp) if spec is not None and spec.draft_params_b else 0


def draft_kv_bytes_per_token(cfg: ResolvedConfig) -> int:
    """KV-cache bytes per token of a speculative draft's layers (EAGLE heads keep their own cache)."""
    spec = cfg.speculative
    return kv_bytes_per_token_per_layer(cfg) * spec.draft_layers if spec is not None else 0


def memory_breakdown(cfg: ResolvedConfig, engine: EngineSpec, precisions: PrecisionTable) -> MemoryBreakdown:
    """Per-GPU memory of a resolved config (``planner.spec.config.resolve``)."""
    total = cfg.gpu.memory_total_mib * MIB
    util = cfg.gpu_memory_utilization
    requested = math.ceil(total * util)
    dec_w, vis_w = weights_bytes(cfg, precisions)
    dec_act = decoder_activation_bytes(cfg, engine)
    enc_act, enc_cache, _ = encoder_profile(cfg)
    activations = max(dec_act, enc_act) + enc_cache
    overhead = overhead_bytes(cfg, engine)
    kv_cache = requested - dec_w - vis_w - activations - overhead
    per_token = kv_bytes_per_token(cfg) + draft_kv_bytes_per_token(cfg)
    max_len = cfg.max_model_len
    # Sliding-window layers hold at most `window` tokens of a sequence: spread
    # their cost over a max_model_len sequence to express capacity in tokens.
    window = min(cfg.model.decoder.sliding_window or 0, max_len)
    effective = per_token + sliding_kv_bytes_per_token(cfg) * window / max_len
    block = engine.block_size_tokens
    capacity = 0
    if kv_cache > 0 and effective > 0:
        capacity = int(kv_cache // (block * effective)) * block
    seq_need = kv_bytes_per_sequence(cfg, max_len, images=1 if cfg.model.decoder.cross_attention_layers else 0)
    reason = ""
    if kv_cache <= 0:
        reason = (
            f"no memory left for the KV cache: {_gib(requested)} GiB usable ({util:.2f} x {_gib(total)} GiB) "
            f"< weights {_gib(dec_w + vis_w)} + activations {_gib(activations)} + overhead {_gib(overhead)} GiB"
        )
    elif seq_need > kv_cache:
        reason = (
            f"one {max_len}-token request needs {_gib(seq_need)} GiB of KV cache but only "
            f"{_gib(kv_cache)} GiB is left ({capacity} tokens); lower max-model-len"
        )
    return MemoryBreakdown(
        total_bytes=total,
        requested_bytes=requested,
        weights_bytes=dec_w + vis_w,
        decoder_weights_bytes=dec_w,
        vision_weights_bytes=vis_w,
        activations_bytes=activations,
        decoder_activation_bytes=dec_act,
        encoder_activation_bytes=enc_act,
        encoder_cache_bytes=enc_cache,
        overhead_bytes=overhead,
        kv_cache_bytes=kv_cache,
        kv_bytes_per_token=per_token,
        sliding_kv_bytes_per_token=sliding_kv_bytes_per_token(cfg),
        cross_attention_kv_bytes_per_image=cross_attention_kv_bytes_per_image(cfg),
        kv_capacity_tokens=capacity,
        max_model_len=max_len,
        fits=not reason,
        reason=reason,
    )


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"
