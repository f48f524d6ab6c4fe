"""Model catalog, batch A: Qwen2/2.5/3-VL, LLaVA, InternVL3 and four text LLMs.

Each entry must load, resolve by id and short name, and describe a model whose
parameter count, computed by hand from the config.json numbers, lands within 3%
of the published total. Where a public dump of the checkpoint gives the exact
tensor total, the hand count must reproduce it exactly once the few tensors the
schema does not describe are added back. KV bytes per token are checked against
the fact sheet (shared/reference/vlm-facts.md, table 1.2, column "KV B/token").
"""

from __future__ import annotations

import pytest

from planner.catalog.loader import load_models
from planner.catalog.schema import DecoderSpec, ModelSpec, VisionSpec

MODELS_A = [
    "Qwen/Qwen2-VL-2B-Instruct",
    "Qwen/Qwen2-VL-7B-Instruct",
    "Qwen/Qwen2-VL-72B-Instruct",
    "Qwen/Qwen2.5-VL-3B-Instruct",
    "Qwen/Qwen2.5-VL-32B-Instruct",
    "Qwen/Qwen2.5-VL-72B-Instruct",
    "Qwen/Qwen3-VL-2B-Instruct",
    "Qwen/Qwen3-VL-8B-Instruct",
    "Qwen/Qwen3-VL-32B-Instruct",
    "Qwen/Qwen3-VL-30B-A3B-Instruct",
    "Qwen/Qwen3-VL-235B-A22B-Instruct",
    "llava-hf/llava-1.5-7b-hf",
    "llava-hf/llava-1.5-13b-hf",
    "llava-hf/llava-v1.6-mistral-7b-hf",
    "llava-hf/llava-onevision-qwen2-7b-ov-hf",
    "OpenGVLab/InternVL3-1B",
    "OpenGVLab/InternVL3-8B",
    "OpenGVLab/InternVL3-38B",
    "OpenGVLab/InternVL3-78B",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "Qwen/Qwen3-8B",
    "Qwen/Qwen3-32B",
]

TEXT_ONLY = {
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "Qwen/Qwen3-8B",
    "Qwen/Qwen3-32B",
}


def model(name: str) -> ModelSpec:
    return load_models().get(name)


# --------------------------------------------------------------------------- hand count


def decoder_params(d: DecoderSpec) -> int:
    """Embeddings + per-layer attention (with biases and q/k norms) + MLP or MoE + norms + lm_head."""
    h = d.hidden_size
    q_out = d.num_attention_heads * d.head_dim
    kv_out = d.num_kv_heads * d.head_dim
    attn = h * q_out + 2 * h * kv_out + q_out * h
    if d.qkv_bias:
        attn += q_out + 2 * kv_out
    if d.qk_norm:
        attn += 2 * d.head_dim  # RMSNorm weights of q_norm and k_norm (per head_dim)
    mats = 3 if d.gated_mlp else 2
    dense_mlp = mats * h * d.intermediate_size
    mlp_total = d.num_layers * dense_mlp
    if d.moe is not None:
        m = d.moe
        moe_mlp = m.num_experts * mats * h * m.moe_intermediate_size + h * m.num_experts  # experts + router
        if m.shared_expert_intermediate_size:
            moe_mlp += mats * h * m.shared_expert_intermediate_size + h  # shared expert + its gate
        n_moe = m.num_moe_layers if m.num_moe_layers is not None else d.num_layers
        mlp_total = n_moe * moe_mlp + (d.num_layers - n_moe) * dense_mlp
    norms = d.num_layers * 2 * h + h  # input/post-attention norms + final norm
    embeddings = d.vocab_size * h * (1 if d.tie_word_embeddings else 2)  # lm_head unless tied
    return embeddings + d.num_layers * attn + mlp_total + norms + d.extra_params


def vision_params(v: VisionSpec) -> int:
    """ViT (patch conv, qkv/proj with biases, MLP with biases, two LayerNorms) + projector."""
    if v.params is not None:
        tower = v.params
    else:
        d, i = v.hidden_size, v.intermediate_size
        patch = v.num_channels * v.temporal_patch_size * v.patch_size**2 * d
        attn = 4 * d * d + 4 * d
        mlp = (3 * d * i + 2 * i + d) if v.gated_mlp else (2 * d * i + i + d)
        tower = patch + v.num_layers * (attn + mlp + 4 * d)
    p = v.projector
    if p.params is not None:
        proj = p.params
    elif p.hidden_dim is None:
        proj = p.input_dim * p.output_dim + p.output_dim
    else:
        proj = p.input_dim * p.hidden_dim + p.hidden_dim + p.hidden_dim * p.output_dim + p.output_dim
    return tower + proj


def total_params(m: ModelSpec) -> int:
    return decoder_params(m.decoder) + (vision_params(m.vision) if m.vision is not None else 0)


def kv_bytes_per_token_bf16(d: DecoderSpec) -> int:
    return 2 * d.num_layers * d.num_kv_heads * d.head_dim * 2


# --------------------------------------------------------------------------- loading and lookup


@pytest.mark.parametrize("name", MODELS_A)
def test_entry_loads_and_resolves_by_id_case_and_short_name(name: str) -> None:
    index = load_models()
    spec = index.get(name)
    assert spec.name == name
    assert index.get(name.upper()).name == name
    assert index.get(name.lower()).name == name
    short = name.split("/", 1)[1]
    assert index.get(short).name == name
    assert index.get(short.lower()).name == name


@pytest.mark.parametrize("name", MODELS_A)
def test_kind_vision_and_quantized_precisions_are_consistent(name: str) -> None:
    spec = model(name)
    if name in TEXT_ONLY:
        assert spec.kind == "llm" and spec.vision is None and spec.visual_tokens is None
    else:
        assert spec.kind == "vlm" and spec.vision is not None and spec.visual_tokens is not None
    assert set(spec.quantized_checkpoints) <= {"fp8", "int8", "int4"}
    assert all(s.retrieved == "2026-11-26" for s in spec.sources)


# --------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name", MODELS_A)
def test_hand_count_is_within_3_percent_of_published(name: str) -> None:
    spec = model(name)
    assert spec.published_params_b is not None
    computed_b = total_params(spec) / 1e9
    assert computed_b == pytest.approx(spec.published_params_b, rel=0.03)


# Exact totals from public dumps of the checkpoints (summed safetensors tensor sizes;
# gogongxt/python scripts/models/*.md, and total_size/2 of the Qwen2-VL-2B safetensors
# index in whalefal1/ASR-LLM-TTS-Pipeline-with-live2d). The second number adds back the
# tensors the schema does not describe.
EXACT_TOTALS = {
    # Qwen2-VL merger ln_q: LayerNorm(1280) weight + bias.
    "Qwen/Qwen2-VL-2B-Instruct": (4_417_971_200 // 2, 2 * 1280),
    # Qwen3-VL: learned pos_embed Embedding(2304, 1152) + patch-conv bias (1152).
    "Qwen/Qwen3-VL-8B-Instruct": (8_767_123_696, 2304 * 1152 + 1152),
    "Qwen/Qwen3-VL-30B-A3B-Instruct": (31_070_754_032, 2304 * 1152 + 1152),
    "Qwen/Qwen3-VL-235B-A22B-Instruct": (235_670_022_896, 2304 * 1152 + 1152),
    "meta-llama/Llama-3.1-8B-Instruct": (8_030_261_248, 0),
    "meta-llama/Llama-3.1-70B-Instruct": (70_553_706_496, 0),
    "Qwen/Qwen3-8B": (8_190_735_360, 0),
    "Qwen/Qwen3-32B": (32_762_123_264, 0),
}


@pytest.mark.parametrize("name", sorted(EXACT_TOTALS))
def test_hand_count_reproduces_exact_checkpoint_total(name: str) -> None:
    exact, not_in_schema = EXACT_TOTALS[name]
    assert total_params(model(name)) + not_in_schema == exact


def test_qwen3_vl_projector_counts_main_and_three_deepstack_mergers() -> None:
    # Module printout of Qwen3-VL-8B: merger = LayerNorm(1152) + Linear(4608, 4608) + Linear(4608, 4096);
    # deepstack_merger_list (0-2) = 3 x [LayerNorm(4608) + Linear(4608, 4608) + Linear(4608, 4096)];
    # every Linear has a bias.
    main = 2 * 1152 + (4608 * 4608 + 4608) + (4608 * 4096 + 4096)
    deepstack = 3 * (2 * 4608 + (4608 * 4608 + 4608) + (4608 * 4096 + 4096))
    assert model("Qwen/Qwen3-VL-8B-Instruct").vision.projector.params == main + deepstack
    # 30B-A3B projects to its 2048-wide decoder instead.
    main_30b = 2 * 1152 + (4608 * 4608 + 4608) + (4608 * 2048 + 2048)
    deepstack_30b = 3 * (2 * 4608 + (4608 * 4608 + 4608) + (4608 * 2048 + 2048))
    assert model("Qwen/Qwen3-VL-30B-A3B-Instruct").vision.projector.params == main_30b + deepstack_30b


def test_moe_active_parameters_match_the_a3b_and_a22b_names() -> None:
    # Qwen3-30B-A3B / Qwen3-235B-A22B model cards: 3.3B / 22B activated parameters (language model).
    # Active = decoder total - (num_experts - top_k) idle experts in every layer.
    cases = [("Qwen/Qwen3-VL-30B-A3B-Instruct", 3.3), ("Qwen/Qwen3-VL-235B-A22B-Instruct", 22.0)]
    for name, active_b in cases:
        d = model(name).decoder
        idle_experts = (d.moe.num_experts - d.moe.top_k) * 3 * d.hidden_size * d.moe.moe_intermediate_size
        active = decoder_params(d) - d.num_layers * idle_experts
        assert active / 1e9 == pytest.approx(active_b, rel=0.05)


# --------------------------------------------------------------------------- layers vLLM runs


@pytest.mark.parametrize(
    "name", ["llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf", "llava-hf/llava-v1.6-mistral-7b-hf"]
)
def test_llava_clip_records_the_layers_vllm_builds(name: str) -> None:
    # CLIP ViT-L/14-336 has 24 layers; vision_feature_layer = -2, so vLLM builds 24 + (-2) + 1 = 23.
    assert model(name).vision.num_layers == 24 + (-2) + 1


def test_llava_onevision_keeps_26_siglip_layers() -> None:
    # llava-hf's SigLIP vision_config has 26 of the 27 so400m layers; vision_feature_layer = -1 runs all 26.
    assert model("llava-hf/llava-onevision-qwen2-7b-ov-hf").vision.num_layers == 26 + (-1) + 1


# --------------------------------------------------------------------------- KV cache


# Fact sheet table 1.2, "KV B/token (bf16, all layers)", rows whose src is V.
KV_FACT_SHEET_V = {
    "Qwen/Qwen2-VL-7B-Instruct": 57_344,
    "Qwen/Qwen2-VL-72B-Instruct": 327_680,
    "Qwen/Qwen2.5-VL-3B-Instruct": 36_864,
    "Qwen/Qwen2.5-VL-72B-Instruct": 327_680,
    "Qwen/Qwen3-VL-2B-Instruct": 114_688,
    "llava-hf/llava-1.5-7b-hf": 524_288,
}

# Rows marked K in the fact sheet whose configs were verified from public copies for this batch:
# 2 (K and V) * layers * kv_heads * head_dim * 2 bytes.
KV_VERIFIED_COPIES = {
    "Qwen/Qwen3-VL-8B-Instruct": 2 * 36 * 8 * 128 * 2,  # 147,456
    "Qwen/Qwen3-VL-32B-Instruct": 2 * 64 * 8 * 128 * 2,  # 262,144
    "Qwen/Qwen3-VL-30B-A3B-Instruct": 2 * 48 * 4 * 128 * 2,  # 98,304
    "Qwen/Qwen3-VL-235B-A22B-Instruct": 2 * 94 * 4 * 128 * 2,  # 192,512
    "Qwen/Qwen2.5-VL-32B-Instruct": 2 * 64 * 8 * 128 * 2,  # 262,144
    "OpenGVLab/InternVL3-1B": 2 * 24 * 2 * 64 * 2,  # 12,288
    "meta-llama/Llama-3.1-8B-Instruct": 2 * 32 * 8 * 128 * 2,  # 131,072
    "Qwen/Qwen3-32B": 2 * 64 * 8 * 128 * 2,  # 262,144
}


@pytest.mark.parametrize("name", sorted(KV_FACT_SHEET_V.keys() | KV_VERIFIED_COPIES.keys()))
def test_kv_bytes_per_token_bf16(name: str) -> None:
    expected = KV_FACT_SHEET_V.get(name, KV_VERIFIED_COPIES.get(name))
    assert kv_bytes_per_token_bf16(model(name).decoder) == expected
