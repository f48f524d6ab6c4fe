"""Parameter counts of a model, by group, from its catalog spec.

Groups matter because they are stored and sharded differently:
``decoder_linear`` (quantized in W8A8/W4A16 checkpoints, split by TP),
``embedding`` and ``lm_head`` (16-bit, vocab-parallel), ``decoder_other``
(norms, routers: 16-bit, replicated), ``vision`` (16-bit ViT + projector).
The counting follows the module layout of the Hugging Face implementations.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.catalog.schema import DecoderSpec, ModelSpec, VisionSpec


@dataclass(frozen=True)
class LayerParams:
    """Parameters of one decoder layer."""

    attention_linear: int
    """q, k, v, o projections (with biases where the model has them)."""
    mlp_linear: int
    """Dense MLP, or all experts + shared expert of a MoE layer."""
    mlp_active_linear: int
    """MLP weights one token touches (top-k experts + shared expert)."""
    other: int
    """Norms, q/k norms, router, gates."""


@dataclass(frozen=True)
class ParamCounts:
    decoder_linear: int
    decoder_active_linear: int
    """Linear weights one token reads (differs from decoder_linear for MoE)."""
    embedding: int
    lm_head: int
    """0 when tied to the embedding."""
    decoder_other: int
    vision: int

    @property
    def total(self) -> int:
        return self.decoder_linear + self.embedding + self.lm_head + self.decoder_other + self.vision


def attention_linear_params(d: DecoderSpec) -> int:
    q = d.hidden_size * d.num_attention_heads * d.head_dim
    kv = 2 * d.hidden_size * d.num_kv_heads * d.head_dim
    o = d.num_attention_heads * d.head_dim * d.hidden_size
    bias = (d.num_attention_heads + 2 * d.num_kv_heads) * d.head_dim if d.qkv_bias else 0
    return q + kv + o + bias


def mlp_params(hidden: int, intermediate: int, gated: bool) -> int:
    return (3 if gated else 2) * hidden * intermediate


def _layer_norm_params(d: DecoderSpec) -> int:
    # input + post-attention RMSNorm; gemma3 adds pre/post feed-forward norms.
    norms = 4 if d.family.startswith("gemma") else 2
    qk = 2 * d.head_dim if d.qk_norm else 0
    return norms * d.hidden_size + qk


def dense_layer(d: DecoderSpec) -> LayerParams:
    mlp = mlp_params(d.hidden_size, d.intermediate_size, d.gated_mlp)
    return LayerParams(attention_linear_params(d), mlp, mlp, _layer_norm_params(d))


def moe_layer(d: DecoderSpec) -> LayerParams:
    assert d.moe is not None
    m = d.moe
    expert = mlp_params(d.hidden_size, m.moe_intermediate_size, True)
    shared = mlp_params(d.hidden_size, m.shared_expert_intermediate_size, True)
    router = d.hidden_size * m.num_experts
    return LayerParams(
        attention_linear=attention_linear_params(d),
        mlp_linear=m.num_experts * expert + shared,
        mlp_active_linear=m.top_k * expert + shared,
        other=_layer_norm_params(d) + router,
    )


def cross_attention_layer(d: DecoderSpec) -> LayerParams:
    """Mllama cross-attention layer: q/k/v/o from hidden (vision states are
    projected to ``hidden_size`` first), q/k norms, two tanh gates, MLP."""
    base = dense_layer(d)
    return LayerParams(base.attention_linear, base.mlp_linear, base.mlp_active_linear, base.other + 2)


def num_moe_layers(d: DecoderSpec) -> int:
    if d.moe is None:
        return 0
    return d.num_layers if d.moe.num_moe_layers is None else d.moe.num_moe_layers


def decoder_layers(d: DecoderSpec) -> tuple[LayerParams, ...]:
    """Per-layer parameters in order (index = layer id). Cached: the speed model asks for them on every step
    it times, and a DecoderSpec is immutable."""
    hit = _LAYERS.get(id(d))
    if hit is None or hit[0] is not d:
        if len(_LAYERS) > 512:
            _LAYERS.clear()
        hit = _LAYERS[id(d)] = (d, _decoder_layers(d))
    return hit[1]


_LAYERS: dict[int, tuple[DecoderSpec, tuple[LayerParams, ...]]] = {}
"""By object identity (a DecoderSpec holds lists, so it is not hashable); the spec is kept alive with its entry."""


def _decoder_layers(d: DecoderSpec) -> tuple[LayerParams, ...]:
    cross = set(d.cross_attention_layers)
    n_moe = num_moe_layers(d)
    layers: list[LayerParams] = []
    for i in range(d.num_layers):
        if i in cross:
            layers.append(cross_attention_layer(d))
        elif d.moe is not None and _is_moe_layer(i, d.num_layers, n_moe):
            layers.append(moe_layer(d))
        else:
            layers.append(dense_layer(d))
    return tuple(layers)


def _is_moe_layer(i: int, num_layers: int, n_moe: int) -> bool:
    """MoE layers spread evenly (every layer, or every k-th layer ending with the last)."""
    if n_moe >= num_layers:
        return True
    step = num_layers // n_moe
    return (i + 1) % step == 0


def vision_params(v: VisionSpec) -> int:
    if v.params is not None:
        return v.params
    d = v.hidden_size
    attn = 4 * d * d + 4 * d
    mlp = mlp_params(d, v.intermediate_size, v.gated_mlp) + v.intermediate_size + d
    norms = 4 * d
    patch = v.num_channels * v.temporal_patch_size * v.patch_size**2 * d
    return v.num_layers * (attn + mlp + norms) + patch + projector_params(v)


def projector_params(v: VisionSpec) -> int:
    p = v.projector
    if p.params is not None:
        return p.params
    if p.kind == "linear" or p.hidden_dim is None:
        return p.input_dim * p.output_dim + p.output_dim
    norm = 2 * p.input_dim if p.kind == "merger" else 0
    return norm + p.input_dim * p.hidden_dim + p.hidden_dim + p.hidden_dim * p.output_dim + p.output_dim


def param_counts(m: ModelSpec) -> ParamCounts:
    d = m.decoder
    layers = decoder_layers(d)
    linear = sum(layer.attention_linear + layer.mlp_linear for layer in layers)
    active = sum(layer.attention_linear + layer.mlp_active_linear for layer in layers)
    embed = d.vocab_size * d.hidden_size + d.extra_params
    head = 0 if d.tie_word_embeddings else d.vocab_size * d.hidden_size
    other = sum(layer.other for layer in layers) + d.hidden_size  # + final norm
    vision = vision_params(m.vision) if m.vision is not None else 0
    return ParamCounts(linear, active, embed, head, other, vision)


def self_attention_layers(d: DecoderSpec) -> int:
    """Layers that keep a per-token KV cache (all but cross-attention layers)."""
    return d.num_layers - len(d.cross_attention_layers)


def full_attention_layers(d: DecoderSpec) -> int:
    """Self-attention layers whose KV grows with the whole context."""
    return self_attention_layers(d) - d.num_sliding_window_layers
