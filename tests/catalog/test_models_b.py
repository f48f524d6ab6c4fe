"""Model catalog entries, batch B: Mllama, Pixtral/Mistral3, Gemma 3, Phi-3.5-V, Idefics3/SmolVLM,
MiniCPM-V 2.6 and Llama 4 Scout.

Every expectation below is transcribed from a public copy of the model's config.json (or the
transformers / vLLM module code for the parts config.json does not spell out); the entry's
``sources`` say which copy. The parameter counts are hand computations from those config numbers,
compared with the total the model card publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from planner.catalog.loader import load_models
from planner.catalog.schema import ModelSpec


@dataclass(frozen=True)
class Vit:
    """A vision tower in the terms of its modules."""

    layers: int
    d: int
    mlp: int
    patch: int
    positions: int
    """Rows of the learned position table (0 for RoPE-only towers)."""
    gated: bool = False
    attn_bias: bool = True
    mlp_bias: bool = True
    norm_per_dim: int = 2
    """2 for LayerNorm (weight + bias), 1 for RMSNorm."""
    conv_bias: bool = True
    cls_token: bool = False
    pre_norm: bool = False
    post_norm: bool = True
    extra: int = 0
    """Parameters outside the generic stack (tile embeddings, gates), written out per model."""


@dataclass(frozen=True)
class Cfg:
    """Decoder numbers of config.json (text_config), plus the vision tower and projector counts."""

    layers: int
    h: int
    nq: int
    nkv: int
    hd: int
    inter: int
    vocab: int
    tie: bool
    max_pos: int
    vit: Vit
    projector: int
    """Projector parameters, written out as arithmetic per model."""
    norms_per_layer: int = 2
    qkv_bias: bool = False
    qk_norm_weights: bool = False
    """q_norm / k_norm with a weight of head_dim each (Gemma 3). Llama 4's L2 norm has none."""
    extra_embed_rows: int = 0
    cross: tuple[int, ...] = ()
    moe: tuple[int, int, int, int] | None = None
    """(experts, top_k, expert width, shared-expert width)."""
    sliding_window: int | None = None
    sliding_layers: int = 0
    rule: str = ""
    rule_params: dict = field(default_factory=dict)


def vit_params(v: Vit) -> int:
    """Vision tower parameters: patch embedding, position table, transformer layers, norms."""
    attn = 4 * v.d * v.d + (4 * v.d if v.attn_bias else 0)
    if v.gated:
        mlp = 3 * v.d * v.mlp + ((2 * v.mlp + v.d) if v.mlp_bias else 0)
    else:
        mlp = 2 * v.d * v.mlp + ((v.mlp + v.d) if v.mlp_bias else 0)
    layer = attn + mlp + 2 * v.norm_per_dim * v.d
    patch = 3 * v.patch * v.patch * v.d + (v.d if v.conv_bias else 0)
    norms = (v.pre_norm + v.post_norm) * v.norm_per_dim * v.d
    return v.layers * layer + patch + v.positions * v.d + (v.d if v.cls_token else 0) + norms + v.extra


def decoder_params(c: Cfg) -> int:
    """Text model parameters: embeddings, self-attention layers, cross-attention layers, lm_head."""
    q, kv = c.nq * c.hd, c.nkv * c.hd
    attn = c.h * q + 2 * c.h * kv + q * c.h
    if c.qkv_bias:
        attn += q + 2 * kv
    if c.qk_norm_weights:
        attn += 2 * c.hd
    if c.moe is None:
        mlp = 3 * c.h * c.inter
    else:
        experts, _top_k, width, shared = c.moe
        mlp = experts * 3 * c.h * width + 3 * c.h * shared + c.h * experts  # routed + shared + router
    self_layer = attn + mlp + c.norms_per_layer * c.h
    # Mllama cross-attention layer: q/k/v/o, q_norm + k_norm (head_dim each), attention and MLP tanh
    # gates, a dense SwiGLU MLP and two RMSNorms.
    cross_layer = (c.h * q + 2 * c.h * kv + q * c.h) + 2 * c.hd + 2 + 3 * c.h * c.inter + 2 * c.h
    n_cross = len(c.cross)
    embed = (c.vocab + c.extra_embed_rows) * c.h
    lm_head = 0 if c.tie else c.vocab * c.h
    return (c.layers - n_cross) * self_layer + n_cross * cross_layer + embed + lm_head + c.h


def total_params(c: Cfg) -> int:
    return decoder_params(c) + vit_params(c.vit) + c.projector


SIGLIP = dict(layers=27, d=1152, mlp=4304, patch=14)
CLIP_L = dict(layers=24, d=1024, mlp=4096, patch=14)

# Mllama vision tower: 32 local + 8 global layers (the global ones carry 2 tanh gates each) with
# bias-free attention, 1601 = (560/14)^2 + 1 patches per tile, 9 aspect-ratio ids x 4 tiles.
MLLAMA_VIT = Vit(
    layers=40,
    d=1280,
    mlp=5120,
    patch=14,
    positions=1601,
    attn_bias=False,
    conv_bias=False,
    cls_token=True,
    pre_norm=True,
    post_norm=True,
    extra=9 * 4 * 1601 * 1280 + 1 + 2 * (9 * 4 * 1280 + 1) + 8 * 2,  # tile pos-emb + gates + tile emb
)
MLLAMA_RULE = {"tile_size": 560, "patch_size": 14, "max_tiles": 4}
GEMMA_RULE = {
    "image_size": 896,
    "patch_size": 14,
    "tokens_per_image": 256,
    "do_pan_and_scan": False,
    "pan_and_scan_min_crop_size": 256,
    "pan_and_scan_max_num_crops": 4,
    "pan_and_scan_min_ratio_to_activate": 1.2,
}


def gemma(layers: int, h: int, nq: int, nkv: int, hd: int, inter: int) -> Cfg:
    """Gemma 3: tied embeddings, 4 norms per layer, q/k norms, layer i global iff (i + 1) % 6 == 0."""
    return Cfg(
        layers=layers,
        h=h,
        nq=nq,
        nkv=nkv,
        hd=hd,
        inter=inter,
        vocab=262208,
        tie=True,
        max_pos=131072,
        norms_per_layer=4,
        qk_norm_weights=True,
        sliding_window=1024,
        sliding_layers=sum(1 for i in range(layers) if (i + 1) % 6 != 0),
        vit=Vit(**SIGLIP, positions=(896 // 14) ** 2),
        projector=1152 * h + 1152,  # RMSNorm(1152) + Linear(1152 -> h), no bias
        rule="gemma3",
        rule_params=GEMMA_RULE,
    )


EXPECTED: dict[str, Cfg] = {
    # Llama 3.2 Vision: cross layers at range(3, total, 5) (transformers convert_mllama_weights_to_hf).
    "meta-llama/Llama-3.2-11B-Vision-Instruct": Cfg(
        layers=40,
        h=4096,
        nq=32,
        nkv=8,
        hd=128,
        inter=14336,
        vocab=128256,
        tie=False,
        max_pos=131072,
        extra_embed_rows=8,
        cross=tuple(range(3, 40, 5)),
        vit=MLLAMA_VIT,
        projector=7680 * 4096 + 4096,
        rule="mllama",
        rule_params=MLLAMA_RULE,
    ),
    "meta-llama/Llama-3.2-90B-Vision-Instruct": Cfg(
        layers=100,
        h=8192,
        nq=64,
        nkv=8,
        hd=128,
        inter=28672,
        vocab=128256,
        tie=False,
        max_pos=131072,
        extra_embed_rows=8,
        cross=tuple(range(3, 100, 5)),
        vit=MLLAMA_VIT,
        projector=7680 * 8192 + 8192,
        rule="mllama",
        rule_params=MLLAMA_RULE,
    ),
    # Pixtral-ViT: bias-free, RMSNorm, SwiGLU, 2D RoPE (no position table), ln_pre only.
    "mistralai/Pixtral-12B-2409": Cfg(
        layers=40,
        h=5120,
        nq=32,
        nkv=8,
        hd=128,
        inter=14336,
        vocab=131072,
        tie=False,
        max_pos=1024000,
        vit=Vit(
            layers=24,
            d=1024,
            mlp=4096,
            patch=16,
            positions=0,
            gated=True,
            attn_bias=False,
            mlp_bias=False,
            norm_per_dim=1,
            conv_bias=False,
            pre_norm=True,
            post_norm=False,
        ),
        projector=1024 * 5120 + 5120 + 5120 * 5120 + 5120,  # adapter w_in / w_out with bias
        rule="pixtral",
        rule_params={"patch_size": 16, "merge_size": 1, "max_image_size": 1024},
    ),
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503": Cfg(
        layers=40,
        h=5120,
        nq=32,
        nkv=8,
        hd=128,
        inter=32768,
        vocab=131072,
        tie=False,
        max_pos=131072,
        vit=Vit(
            layers=24,
            d=1024,
            mlp=4096,
            patch=14,
            positions=0,
            gated=True,
            attn_bias=False,
            mlp_bias=False,
            norm_per_dim=1,
            conv_bias=False,
            pre_norm=True,
            post_norm=False,
        ),
        # RMSNorm + 2x2 patch merger (4096 -> 1024) + Linear(1024 -> 5120) + Linear(5120 -> 5120), no bias
        projector=1024 + 4 * 1024 * 1024 + 1024 * 5120 + 5120 * 5120,
        rule="pixtral",
        rule_params={"patch_size": 14, "merge_size": 2, "max_image_size": 1540},
    ),
    "google/gemma-3-4b-it": gemma(34, 2560, 8, 4, 256, 10240),
    "google/gemma-3-12b-it": gemma(48, 3840, 16, 8, 256, 15360),
    "google/gemma-3-27b-it": gemma(62, 5376, 32, 16, 128, 21504),
    # Phi-3.5-vision: whole CLIP ViT-L/14-336 (577 positions incl. CLS, pre and post LayerNorm).
    "microsoft/Phi-3.5-vision-instruct": Cfg(
        layers=32,
        h=3072,
        nq=32,
        nkv=32,
        hd=96,
        inter=8192,
        vocab=32064,
        tie=False,
        max_pos=131072,
        vit=Vit(
            **CLIP_L,
            positions=577,
            conv_bias=False,
            cls_token=True,
            pre_norm=True,
        ),
        projector=4096 * 3072 + 3072 + 3072 * 3072 + 3072 + 2 * 4096,  # MLP + glb_GN/sub_GN
        rule="phi3v",
        rule_params={"crop_size": 336, "num_crops": 4},
    ),
    # Idefics3 connector: pixel shuffle scale 2 (4 * 1152 = 4608) -> Linear(4608 -> 4096), no bias.
    "HuggingFaceM4/Idefics3-8B-Llama3": Cfg(
        layers=32,
        h=4096,
        nq=32,
        nkv=8,
        hd=128,
        inter=14336,
        vocab=128259,
        tie=False,
        max_pos=131072,
        vit=Vit(**SIGLIP, positions=(364 // 14) ** 2),
        projector=4 * 1152 * 4096,
        rule="idefics3",
        rule_params={"tile_size": 364, "longest_edge": 1456, "tokens_per_tile": 169, "patch_size": 14},
    ),
    # SmolVLM: pixel shuffle scale 3 (9 * 1152 = 10368) -> Linear(10368 -> 2048), no bias.
    "HuggingFaceTB/SmolVLM-Instruct": Cfg(
        layers=24,
        h=2048,
        nq=32,
        nkv=32,
        hd=64,
        inter=8192,
        vocab=49155,
        tie=False,
        max_pos=16384,
        vit=Vit(**SIGLIP, positions=(384 // 14) ** 2),
        projector=9 * 1152 * 2048,
        rule="idefics3",
        rule_params={"tile_size": 384, "longest_edge": 1536, "tokens_per_tile": 81, "patch_size": 14},
    ),
    # MiniCPM-V 2.6: Qwen2 (qkv bias) + SigLIP with a 980/14 = 70x70 position table + resampler.
    "openbmb/MiniCPM-V-2_6": Cfg(
        layers=28,
        h=3584,
        nq=28,
        nkv=4,
        hd=128,
        inter=18944,
        vocab=151666,
        tie=False,
        max_pos=32768,
        qkv_bias=True,
        vit=Vit(**SIGLIP, positions=70 * 70),
        # query + kv_proj + MultiheadAttention (in_proj, out_proj) + 3 LayerNorms + proj
        projector=64 * 3584
        + 1152 * 3584
        + (3 * 3584 * 3584 + 3 * 3584)
        + (3584 * 3584 + 3584)
        + 3 * 2 * 3584
        + 3584 * 3584,
        rule="minicpmv",
        rule_params={"slice_size": 448, "max_slice_nums": 9, "query_num": 64, "patch_size": 14},
    ),
    # Llama 4 Scout: every layer MoE (16 experts, top-1, shared expert), no_rope_layers [1, 1, 1, 0] x 12.
    "meta-llama/Llama-4-Scout-17B-16E-Instruct": Cfg(
        layers=48,
        h=5120,
        nq=40,
        nkv=8,
        hd=128,
        inter=16384,
        vocab=202048,
        tie=False,
        max_pos=10485760,
        moe=(16, 1, 8192, 8192),
        sliding_window=8192,
        sliding_layers=sum([1, 1, 1, 0] * 12),
        # Unfold patch linear without bias (588 x 1408), CLS, (336/14)^2 + 1 = 577 positions.
        vit=Vit(
            layers=34,
            d=1408,
            mlp=5632,
            patch=14,
            positions=577,
            conv_bias=False,
            cls_token=True,
            pre_norm=True,
        ),
        projector=5632 * 4096 + 4096 * 4096 + 4096 * 5120,  # adapter fc1, fc2, multi_modal_projector
        rule="llama4",
        rule_params={"tile_size": 336, "patch_size": 14, "max_tiles": 16, "pixel_shuffle_ratio": 0.5},
    ),
}

IDS = list(EXPECTED)


@pytest.fixture(scope="module")
def models():
    return load_models()


@pytest.mark.parametrize("model_id", IDS)
def test_entry_loads_and_resolves(models, model_id: str) -> None:
    spec = models.get(model_id)
    assert isinstance(spec, ModelSpec)
    assert spec.name == model_id
    assert models.get(model_id.upper()) is spec
    assert models.get(model_id.lower()) is spec
    assert models.get(model_id.split("/", 1)[1]) is spec
    assert spec.kind == "vlm"
    assert spec.sources, "every entry cites its sources"


def test_pixtral_hf_format_repo_is_an_alias(models) -> None:
    assert models.get("mistral-community/pixtral-12b").name == "mistralai/Pixtral-12B-2409"


@pytest.mark.parametrize("model_id", IDS)
def test_decoder_matches_config(models, model_id: str) -> None:
    d, c = models.get(model_id).decoder, EXPECTED[model_id]
    assert (d.num_layers, d.hidden_size, d.num_attention_heads, d.num_kv_heads, d.head_dim) == (
        c.layers,
        c.h,
        c.nq,
        c.nkv,
        c.hd,
    )
    assert (d.vocab_size, d.tie_word_embeddings, d.max_position_embeddings) == (c.vocab, c.tie, c.max_pos)
    assert d.qkv_bias == c.qkv_bias
    assert d.cross_attention_layers == list(c.cross)
    assert (d.sliding_window, d.num_sliding_window_layers) == (c.sliding_window, c.sliding_layers)
    if c.moe is None:
        assert d.moe is None
        assert d.intermediate_size == c.inter
    else:
        experts, top_k, width, shared = c.moe
        assert d.moe is not None
        assert (d.moe.num_experts, d.moe.top_k) == (experts, top_k)
        assert (d.moe.moe_intermediate_size, d.moe.shared_expert_intermediate_size) == (width, shared)
        assert d.moe.num_moe_layers in (None, c.layers)


@pytest.mark.parametrize("model_id", IDS)
def test_vision_and_projector_match_config(models, model_id: str) -> None:
    v, c = models.get(model_id).vision, EXPECTED[model_id]
    assert v is not None
    assert (v.num_layers, v.hidden_size, v.intermediate_size, v.patch_size, v.gated_mlp) == (
        c.vit.layers,
        c.vit.d,
        c.vit.mlp,
        c.vit.patch,
        c.vit.gated,
    )
    assert v.hidden_size % v.num_heads == 0
    if v.params is not None:  # computed tower counts in the entry must equal the hand count
        assert v.params == vit_params(c.vit)
    if v.projector.params is not None:
        assert v.projector.params == c.projector
    else:  # the generic linear / 2-layer MLP formula must then reproduce the projector (bias aside)
        p = v.projector
        generic = p.input_dim * (p.hidden_dim or p.output_dim) + (p.hidden_dim or 0) * p.output_dim
        assert abs(generic - c.projector) <= p.output_dim + (p.hidden_dim or 0)


@pytest.mark.parametrize("model_id", IDS)
def test_visual_token_rule(models, model_id: str) -> None:
    vt, c = models.get(model_id).visual_tokens, EXPECTED[model_id]
    assert vt is not None
    assert vt.rule == c.rule
    assert vt.params == c.rule_params


@pytest.mark.parametrize("model_id", IDS)
def test_hand_count_matches_published_total(models, model_id: str) -> None:
    spec = models.get(model_id)
    assert spec.published_params_b is not None
    total_b = total_params(EXPECTED[model_id]) / 1e9
    assert total_b == pytest.approx(spec.published_params_b, rel=0.03)


def test_hand_count_spot_values() -> None:
    # Gemma 3 4B non-embedding decoder: 34 x (q 2560*2048 + k,v 2*2560*1024 + o 2048*2560
    # + q/k norms 2*256 + 4 norms 4*2560 + GeGLU 3*2560*10240) + final norm = 3209M, as the
    # Gemma 3 report's "non-embedding 3,209M".
    g4 = EXPECTED["google/gemma-3-4b-it"]
    assert decoder_params(g4) - 262208 * 2560 == 34 * 94382592 + 2560
    # SigLIP-so400m@896: 27 x 15239504 + patch 678528 + 4096 x 1152 positions + post LN = 416.9M.
    assert vit_params(g4.vit) == 27 * 15239504 + 678528 + 4096 * 1152 + 2304
    # Llama 4 Scout text: 48 x (attention 62914560 + 16 experts 2013265920 + shared 125829120
    # + router 81920 + norms 10240) + 2 x 202048 x 5120 + final norm.
    scout = EXPECTED["meta-llama/Llama-4-Scout-17B-16E-Instruct"]
    assert decoder_params(scout) == 48 * 2202101760 + 2 * 1034485760 + 5120


@pytest.mark.parametrize(
    ("model_id", "kv_bytes_per_token"),
    [
        # 2 (K and V) x self-attention layers x kv heads x head_dim x 2 bytes (bf16).
        ("meta-llama/Llama-3.2-11B-Vision-Instruct", 2 * 32 * 8 * 128 * 2),  # 40 - 8 cross layers
        ("meta-llama/Llama-3.2-90B-Vision-Instruct", 2 * 80 * 8 * 128 * 2),  # 100 - 20 cross layers
        ("mistralai/Pixtral-12B-2409", 2 * 40 * 8 * 128 * 2),
        ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", 2 * 40 * 8 * 128 * 2),
        ("google/gemma-3-4b-it", 2 * 34 * 4 * 256 * 2),
        ("google/gemma-3-12b-it", 2 * 48 * 8 * 256 * 2),
        ("google/gemma-3-27b-it", 2 * 62 * 16 * 128 * 2),
        ("microsoft/Phi-3.5-vision-instruct", 2 * 32 * 32 * 96 * 2),
        ("HuggingFaceM4/Idefics3-8B-Llama3", 2 * 32 * 8 * 128 * 2),
        ("HuggingFaceTB/SmolVLM-Instruct", 2 * 24 * 32 * 64 * 2),
        ("openbmb/MiniCPM-V-2_6", 2 * 28 * 4 * 128 * 2),
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", 2 * 48 * 8 * 128 * 2),
    ],
)
def test_kv_bytes_per_token_bf16(models, model_id: str, kv_bytes_per_token: int) -> None:
    d = models.get(model_id).decoder
    self_layers = d.num_layers - len(d.cross_attention_layers)
    assert 2 * self_layers * d.num_kv_heads * d.head_dim * 2 == kv_bytes_per_token


@pytest.mark.parametrize(
    "model_id", ["meta-llama/Llama-3.2-11B-Vision-Instruct", "meta-llama/Llama-3.2-90B-Vision-Instruct"]
)
def test_mllama_specifics(models, model_id: str) -> None:
    spec = models.get(model_id)
    d = spec.decoder
    # vLLM dropped MllamaForConditionalGeneration after v0.10.2.
    assert spec.vllm_supported is False
    assert any("0.10.2" in (s.notes or "") for s in spec.sources)
    # extra_params: 8 learnable embedding rows + per cross layer q_norm/k_norm (2 x 128) and 2 gates.
    assert d.extra_params == 8 * d.hidden_size + len(d.cross_attention_layers) * (2 * 128 + 2)
    # Cross-attention layers sit every 5th layer starting at 3: 32 + 8 and 80 + 20.
    assert d.cross_attention_layers == list(range(3, d.num_layers, 5))
    assert len(d.cross_attention_layers) * 5 == d.num_layers


def test_remote_code_models(models) -> None:
    remote = {m for m in IDS if models.get(m).trust_remote_code}
    assert remote == {"microsoft/Phi-3.5-vision-instruct", "openbmb/MiniCPM-V-2_6"}


@pytest.mark.parametrize("model_id", IDS)
def test_quantized_checkpoint_ids_name_the_base_model(models, model_id: str) -> None:
    spec = models.get(model_id)
    # Quantized repos are named after the base repo (or an alias: Pixtral's are made from the HF-format
    # mistral-community/pixtral-12b).
    bases = tuple(n.split("/", 1)[1].lower() for n in [spec.name, *spec.aliases])
    for precision, repo in spec.quantized_checkpoints.items():
        org, name = repo.split("/", 1)
        assert org in {"RedHatAI", "neuralmagic"}
        assert name.lower().startswith(bases)
        suffix = {"fp8": "fp8-dynamic", "int8": "quantized.w8a8", "int4": "quantized.w4a16"}[precision]
        assert name.lower().endswith(suffix)
