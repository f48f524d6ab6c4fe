"""Import of local Hugging Face config.json files (``--model PATH``).

Fixtures are public copies of real config files (tests/fixtures/hf_configs/README.md
says where each came from). Expected numbers are read from the fixture file itself or
written out with the transformers class default / published rule they come from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from planner.catalog.hf_import import (
    SUPPORTED_MODEL_TYPES,
    detect_checkpoint_precision,
    load_model_from_path,
    read_quantization,
)
from planner.catalog.loader import load_models
from planner.catalog.schema import ModelSpec
from planner.core.errors import CatalogError, UnsupportedError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hf_configs"


def _cfg(name: str, file: str = "config.json") -> dict[str, Any]:
    return json.loads((FIXTURES / name / file).read_text())


def _load(name: str) -> ModelSpec:
    return load_model_from_path(FIXTURES / name)


def _write(tmp_path: Path, cfg: dict[str, Any], pre: dict[str, Any] | None = None, folder: str = "m") -> Path:
    d = tmp_path / folder
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg))
    if pre is not None:
        (d / "preprocessor_config.json").write_text(json.dumps(pre))
    return d


def _catalog(name: str) -> ModelSpec:
    """The catalog entry, or a skip while catalogs/models/ does not have it yet (written in parallel)."""
    try:
        return load_models().get(name)
    except CatalogError as exc:
        pytest.skip(f"catalog entry {name} not available yet: {exc}")


def _assert_text_dims(m: ModelSpec, text: dict[str, Any]) -> None:
    d = m.decoder
    assert d.hidden_size == text["hidden_size"]
    assert d.num_layers == text["num_hidden_layers"]
    assert d.num_attention_heads == text["num_attention_heads"]
    assert d.num_kv_heads == text["num_key_value_heads"]
    assert d.intermediate_size == text["intermediate_size"]
    assert d.vocab_size == text["vocab_size"]
    assert d.max_position_embeddings == text["max_position_embeddings"]


# --------------------------------------------------------------------------- Qwen-VL family


def test_qwen2_5_vl_7b_matches_its_config_and_preprocessor():
    cfg, pre = _cfg("qwen2.5-vl-7b-instruct"), _cfg("qwen2.5-vl-7b-instruct", "preprocessor_config.json")
    m = _load("qwen2.5-vl-7b-instruct")
    assert m.kind == "vlm" and m.hf_architecture == "Qwen2_5_VLForConditionalGeneration"
    assert m.name == "qwen2.5-vl-7b-instruct"  # no _name_or_path in the file: the folder name
    _assert_text_dims(m, cfg)
    d = m.decoder
    assert d.family == "qwen2" and d.qkv_bias and not d.qk_norm  # Qwen2 q/k/v projections carry biases
    assert d.head_dim == 3584 // 28 == 128
    assert d.tie_word_embeddings is False and d.sliding_window is None  # use_sliding_window: false
    v, vc = m.vision, cfg["vision_config"]
    assert v is not None
    assert (v.num_layers, v.hidden_size, v.num_heads, v.intermediate_size) == (32, 1280, 16, 3420)
    assert v.gated_mlp and v.patch_size == 14 and v.temporal_patch_size == 2
    assert v.window_attention is not None
    assert v.window_attention.window_patches == (vc["window_size"] // vc["patch_size"]) ** 2 == 64
    assert v.window_attention.full_attention_layers == [7, 15, 23, 31]
    # PatchMerger: 2x2 patches of 1280 -> 5120 -> out_hidden_size 3584.
    assert (v.projector.kind, v.projector.input_dim, v.projector.output_dim) == ("merger", 1280 * 2 * 2, 3584)
    assert m.visual_tokens is not None and m.visual_tokens.rule == "qwen2_vl"
    assert m.visual_tokens.params == {
        "patch_size": 14,
        "merge_size": 2,
        "min_pixels": pre["min_pixels"],
        "max_pixels": pre["max_pixels"],
    }
    assert m.sources[0].kind == "config" and m.sources[0].title == f"local {FIXTURES / 'qwen2.5-vl-7b-instruct'}"


def test_qwen2_5_vl_7b_equals_catalog_entry():
    cat = _catalog("Qwen/Qwen2.5-VL-7B-Instruct")
    m = _load("qwen2.5-vl-7b-instruct")
    assert m.decoder == cat.decoder
    assert m.vision == cat.vision
    assert m.visual_tokens == cat.visual_tokens


def test_qwen2_5_vl_32b_awq_fills_vision_defaults_and_reports_int4():
    m = _load("qwen2.5-vl-32b-instruct-awq")
    v = m.vision
    assert v is not None
    # The file gives hidden 1280 / intermediate 3456 / out 5120 only; Qwen2_5_VLVisionConfig defaults give
    # depth 32, num_heads 16, patch 14, window 112, full-attention blocks [7, 15, 23, 31].
    assert (v.num_layers, v.num_heads, v.patch_size, v.intermediate_size) == (32, 16, 14, 3456)
    assert v.window_attention is not None and v.window_attention.window_patches == (112 // 14) ** 2
    assert v.projector.output_dim == 5120
    assert detect_checkpoint_precision(FIXTURES / "qwen2.5-vl-32b-instruct-awq") == "int4"
    q = read_quantization(FIXTURES / "qwen2.5-vl-32b-instruct-awq")
    assert q is not None and (q.method, q.bits, q.group_size) == ("awq", 4, 128)
    assert m.quantized_checkpoints == {"int4": m.name}
    # No preprocessor_config.json beside it: the shipped Qwen defaults 3136 / 12845056.
    assert m.visual_tokens is not None
    assert (m.visual_tokens.params["min_pixels"], m.visual_tokens.params["max_pixels"]) == (56 * 56, 28 * 28 * 16384)


def test_qwen2_5_vl_32b_matches_catalog_architecture():
    cat = _catalog("Qwen/Qwen2.5-VL-32B-Instruct")
    m = _load("qwen2.5-vl-32b-instruct-awq")
    assert m.decoder == cat.decoder
    assert m.vision == cat.vision


def test_qwen3_vl_8b_reads_text_config_and_size_budget():
    cfg = _cfg("qwen3-vl-8b-instruct")
    m = _load("qwen3-vl-8b-instruct")
    _assert_text_dims(m, cfg["text_config"])
    d = m.decoder
    assert d.family == "qwen3" and d.qk_norm and not d.qkv_bias and d.head_dim == 128
    assert d.tie_word_embeddings is False  # top-level key, the text_config has none
    v = m.vision
    assert v is not None
    assert (v.num_layers, v.hidden_size, v.intermediate_size, v.patch_size) == (27, 1152, 4304, 16)
    w, merged, out = 1152, 1152 * 4, 4096
    merger_mlp = merged * merged + merged + merged * out + out
    # main merger (LayerNorm 1152) + 3 DeepStack mergers (LayerNorm 4608), per the module printout of the report
    assert v.projector.params == 2 * w + merger_mlp + 3 * (2 * merged + merger_mlp)
    assert m.visual_tokens is not None and m.visual_tokens.rule == "qwen3_vl"
    assert m.visual_tokens.params == {"patch_size": 16, "merge_size": 2, "min_pixels": 65536, "max_pixels": 16777216}


def test_qwen3_vl_8b_equals_catalog_entry():
    cat = _catalog("Qwen/Qwen3-VL-8B-Instruct")
    m = _load("qwen3-vl-8b-instruct")
    assert m.decoder == cat.decoder
    assert m.visual_tokens == cat.visual_tokens
    assert m.vision is not None and cat.vision is not None
    assert m.vision.model_dump(exclude={"encoder"}) == cat.vision.model_dump(exclude={"encoder"})


def test_qwen3_vl_defaults_without_preprocessor(tmp_path):
    path = _write(tmp_path, _cfg("qwen3-vl-8b-instruct"))
    m = load_model_from_path(path / "config.json")  # a file path works as well as the folder
    assert m.visual_tokens is not None
    assert (m.visual_tokens.params["min_pixels"], m.visual_tokens.params["max_pixels"]) == (65536, 16777216)


def test_min_max_pixels_win_over_size(tmp_path):
    pre = {"min_pixels": 200704, "max_pixels": 1003520, "size": {"shortest_edge": 3136, "longest_edge": 12845056}}
    m = load_model_from_path(_write(tmp_path, _cfg("qwen2.5-vl-7b-instruct"), pre))
    assert m.visual_tokens is not None
    assert (m.visual_tokens.params["min_pixels"], m.visual_tokens.params["max_pixels"]) == (200704, 1003520)


def test_qwen2_vl_constructed_config(tmp_path):
    # CONSTRUCTED (no verbatim qwen2_vl config.json was found): vision block as quoted in public code for
    # Qwen2-VL-2B, text dims of that model.
    cfg = {
        "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl", "hidden_size": 1536,
        "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
        "vocab_size": 151936, "max_position_embeddings": 32768, "tie_word_embeddings": True,
        "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                          "hidden_size": 1536, "spatial_merge_size": 2, "spatial_patch_size": 14,
                          "temporal_patch_size": 2},
    }  # fmt: skip
    m = load_model_from_path(_write(tmp_path, cfg))
    v = m.vision
    assert v is not None
    assert v.intermediate_size == 1280 * 4 and v.hidden_size == 1280 and not v.gated_mlp
    assert (v.projector.input_dim, v.projector.output_dim) == (5120, 1536)
    assert m.decoder.tie_word_embeddings and m.decoder.qkv_bias and m.decoder.head_dim == 1536 // 12
    assert m.visual_tokens is not None and m.visual_tokens.params["min_pixels"] == 3136


# --------------------------------------------------------------------------- LLaVA, Mllama, Gemma 3, InternVL


def test_llava_1_5_fills_llama_defaults():
    cfg = _cfg("llava-1.5-7b-hf")
    m = _load("llava-1.5-7b-hf")
    d = m.decoder
    # text_config names only max_position_embeddings and vocab_size: LlamaConfig defaults give the 7B shape.
    assert (d.hidden_size, d.intermediate_size, d.num_layers, d.num_attention_heads) == (4096, 11008, 32, 32)
    assert d.num_kv_heads == 32  # num_key_value_heads None -> num_attention_heads
    assert d.head_dim == 4096 // 32
    assert d.vocab_size == cfg["text_config"]["vocab_size"] == 32064
    assert d.max_position_embeddings == 4096 and d.tie_word_embeddings is False and d.family == "llama"
    v = m.vision
    assert v is not None
    # vision_feature_layer -2: vLLM builds CLIP up to layer 24 - 2 + 1 = 23.
    assert (v.num_layers, v.hidden_size, v.num_heads, v.intermediate_size) == (24 - 2 + 1, 1024, 16, 4096)
    assert (v.projector.kind, v.projector.input_dim, v.projector.hidden_dim, v.projector.output_dim) == (
        "mlp",
        1024,
        4096,
        4096,
    )
    assert m.visual_tokens is not None and m.visual_tokens.rule == "llava"
    assert m.visual_tokens.params == {"image_size": 336, "patch_size": 14}  # (336 / 14)^2 = 576 tokens


def test_llava_1_5_equals_catalog_entry():
    cat = _catalog("llava-hf/llava-1.5-7b-hf")
    m = _load("llava-1.5-7b-hf")
    assert m.decoder == cat.decoder
    assert m.visual_tokens == cat.visual_tokens
    assert m.vision is not None and cat.vision is not None
    assert m.vision.model_dump(exclude={"encoder"}) == cat.vision.model_dump(exclude={"encoder"})


def test_llava_vision_config_defaults(tmp_path):
    base = {"model_type": "llava", "text_config": {"model_type": "llama"}}
    # No vision_config: LlavaConfig's own default (CLIP ViT-L/14-336).
    m = load_model_from_path(_write(tmp_path, base, folder="a"))
    assert m.vision is not None and (m.vision.hidden_size, m.vision.patch_size) == (1024, 14)
    assert m.visual_tokens is not None and m.visual_tokens.params["image_size"] == 336
    # A vision_config that names only its type: CLIPVisionConfig class defaults (768 wide, patch 32, 224 px),
    # which is what transformers (and so vLLM) builds from such a file.
    m = load_model_from_path(
        _write(tmp_path, {**base, "vision_config": {"model_type": "clip_vision_model"}}, folder="b")
    )
    assert m.vision is not None and (m.vision.hidden_size, m.vision.patch_size, m.vision.num_layers) == (768, 32, 11)
    assert m.visual_tokens is not None and m.visual_tokens.params == {"image_size": 224, "patch_size": 32}


def test_mllama_11b_cross_attention_and_tiles():
    cfg = _cfg("llama-3.2-11b-vision")
    m = _load("llama-3.2-11b-vision")
    _assert_text_dims(m, cfg["text_config"])
    d = m.decoder
    assert d.family == "mllama" and d.cross_attention_layers == [3, 8, 13, 18, 23, 28, 33, 38]
    # 8 extra embedding rows + per cross layer q/k norms (2 x head_dim) and two gates.
    assert d.extra_params == 8 * 4096 + 8 * (2 * 128 + 2) == 34832
    assert m.vllm_supported is False  # MllamaForConditionalGeneration left vLLM after 0.10.2
    v = m.vision
    assert v is not None and v.num_layers == 32 + 8 and v.num_heads == 16
    assert (v.projector.kind, v.projector.input_dim, v.projector.output_dim) == ("linear", 7680, 4096)
    assert m.visual_tokens is not None
    assert m.visual_tokens.params == {"tile_size": cfg["vision_config"]["image_size"], "patch_size": 14, "max_tiles": 4}


def test_mllama_decoder_equals_catalog_entry():
    # The fixture is the base checkpoint; the catalog holds the Instruct one (same architecture).
    cat = _catalog("meta-llama/Llama-3.2-11B-Vision-Instruct")
    m = _load("llama-3.2-11b-vision")
    assert m.decoder == cat.decoder
    assert m.vision is not None and cat.vision is not None
    assert m.vision.model_dump(
        include={"num_layers", "hidden_size", "num_heads", "intermediate_size", "projector"}
    ) == (cat.vision.model_dump(include={"num_layers", "hidden_size", "num_heads", "intermediate_size", "projector"}))


def test_gemma3_4b_fills_gemma3_text_defaults():
    m = _load("gemma-3-4b-it")
    d = m.decoder
    # The file gives hidden 2560, intermediate 10240, 34 layers, window 1024; Gemma3TextConfig defaults give
    # 8 heads, 4 KV heads, head_dim 256 (not 2560 / 8 = 320), vocab 262208, 131072 positions, tied embeddings.
    assert (d.hidden_size, d.intermediate_size, d.num_layers) == (2560, 10240, 34)
    assert (d.num_attention_heads, d.num_kv_heads, d.head_dim) == (8, 4, 256)
    assert (d.vocab_size, d.max_position_embeddings, d.tie_word_embeddings) == (262208, 131072, True)
    assert d.qk_norm and d.family == "gemma3"
    # sliding_window_pattern 6: layer i is global when (i + 1) % 6 == 0 -> 5 of 34 global, 29 local.
    assert d.sliding_window == 1024 and d.num_sliding_window_layers == 34 - 34 // 6 == 29
    assert m.visual_tokens is not None and m.visual_tokens.rule == "gemma3"
    assert m.visual_tokens.params == {
        "image_size": 896,
        "patch_size": 14,
        "tokens_per_image": 256,
        "do_pan_and_scan": False,
        "pan_and_scan_min_crop_size": 256,
        "pan_and_scan_max_num_crops": 4,
        "pan_and_scan_min_ratio_to_activate": 1.2,
    }


def test_gemma3_12b_reads_given_heads():
    cfg = _cfg("gemma-3-12b-it")["text_config"]
    d = _load("gemma-3-12b-it").decoder
    assert (d.num_attention_heads, d.num_kv_heads) == (cfg["num_attention_heads"], cfg["num_key_value_heads"])
    assert d.num_sliding_window_layers == 48 - 48 // 6 == 40


@pytest.mark.parametrize(
    ("fixture", "name"), [("gemma-3-4b-it", "google/gemma-3-4b-it"), ("gemma-3-12b-it", "google/gemma-3-12b-it")]
)
def test_gemma3_equals_catalog_entry(fixture, name):
    cat = _catalog(name)
    m = _load(fixture)
    assert m.decoder == cat.decoder
    assert m.vision is not None and cat.vision is not None
    assert m.vision.model_dump(exclude={"encoder"}) == cat.vision.model_dump(exclude={"encoder"})


def test_internvl_chat_38b_awq():
    cfg = _cfg("internvl3-38b-awq")
    path = FIXTURES / "internvl3-38b-awq"
    m = load_model_from_path(path)
    _assert_text_dims(m, cfg["llm_config"])
    assert m.name == "internvl3-38b-awq"  # _name_or_path is a local training path, not a hub id
    assert m.decoder.family == "qwen2" and m.decoder.qkv_bias and m.trust_remote_code
    v = m.vision
    assert v is not None
    assert (v.num_layers, v.hidden_size, v.num_heads, v.intermediate_size) == (45, 3200, 25, 12800)
    # pixel shuffle 0.5: 2x2 tokens of 3200 -> 12800, then MLP to the LLM width.
    assert (v.projector.input_dim, v.projector.hidden_dim, v.projector.output_dim) == (3200 * 4, 5120, 5120)
    assert m.visual_tokens is not None and m.visual_tokens.params == {
        "tile_size": 448,
        "patch_size": 14,
        "downsample_ratio": 0.5,
        "min_tiles": 1,
        "max_tiles": 12,
        "use_thumbnail": True,
    }
    # quantization_config sits inside llm_config.
    assert detect_checkpoint_precision(path) == "int4"


def test_internvl_38b_equals_catalog_architecture():
    cat = _catalog("OpenGVLab/InternVL3-38B")
    m = _load("internvl3-38b-awq")
    assert m.decoder == cat.decoder
    assert m.visual_tokens == cat.visual_tokens
    assert m.vision is not None and cat.vision is not None
    assert m.vision.model_dump(exclude={"encoder"}) == cat.vision.model_dump(exclude={"encoder"})


def test_phi3_5_vision():
    m = _load("phi-3.5-vision-instruct")
    assert m.name == "Phi-3.5-vision-instruct"  # _name_or_path of the file
    assert m.trust_remote_code and m.decoder.family == "phi3"
    assert m.decoder.head_dim == 3072 // 32 == 96
    assert m.decoder.sliding_window is None  # 262144 >= max_position_embeddings 131072
    v = m.vision
    assert v is not None and v.num_layers == 24 - 2 + 1  # img_processor layer_idx -2
    # Linear(4 x 1024 -> 3072) + Linear(3072 -> 3072) with biases, plus two 4096-wide separators.
    assert v.projector.params == 4096 * 3072 + 3072 + 3072 * 3072 + 3072 + 2 * 4096
    assert m.visual_tokens is not None and m.visual_tokens.params == {"crop_size": 336, "num_crops": 4}


# --------------------------------------------------------------------------- text LLMs and MoE


def test_llama_3_1_8b():
    cfg = _cfg("llama-3.1-8b-instruct")
    m = _load("llama-3.1-8b-instruct")
    assert m.kind == "llm" and m.vision is None and m.visual_tokens is None
    _assert_text_dims(m, cfg)
    assert m.decoder.head_dim == 4096 // 32 and not m.decoder.qkv_bias and m.decoder.moe is None


def test_qwen3_8b_and_its_head_dim_default(tmp_path):
    cfg = _cfg("qwen3-8b")
    m = _load("qwen3-8b")
    _assert_text_dims(m, cfg)
    assert m.decoder.qk_norm and not m.decoder.qkv_bias and m.decoder.head_dim == 128
    # Without head_dim, Qwen3Config's default 128 applies, not hidden // heads (5120 // 64 = 80).
    edited = {k: v for k, v in cfg.items() if k != "head_dim"} | {"hidden_size": 5120, "num_attention_heads": 64}
    assert load_model_from_path(_write(tmp_path, edited)).decoder.head_dim == 128


@pytest.mark.parametrize(
    ("fixture", "name"),
    [("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct"), ("qwen3-8b", "Qwen/Qwen3-8B")],
)
def test_text_llm_equals_catalog_entry(fixture, name):
    assert _load(fixture).decoder == _catalog(name).decoder


def test_mixtral_moe():
    cfg = _cfg("mixtral-8x7b-v0.1")
    d = _load("mixtral-8x7b-v0.1").decoder
    assert d.moe is not None
    assert (d.moe.num_experts, d.moe.top_k) == (cfg["num_local_experts"], cfg["num_experts_per_tok"]) == (8, 2)
    assert d.moe.moe_intermediate_size == cfg["intermediate_size"] and d.moe.shared_expert_intermediate_size == 0
    assert d.moe.num_moe_layers is None and d.sliding_window is None  # sliding_window: null


def test_qwen_moe_sparse_step_and_dense_layers(tmp_path):
    cfg = _cfg("qwen1.5-moe-a2.7b")
    d = _load("qwen1.5-moe-a2.7b").decoder
    assert d.moe is not None and d.qkv_bias
    assert (d.moe.num_experts, d.moe.top_k, d.moe.moe_intermediate_size) == (60, 4, 1408)
    assert d.moe.shared_expert_intermediate_size == 5632 and d.moe.num_moe_layers is None
    # decoder_sparse_step 2: layers 1, 3, ..., 23 are MoE (12 of 24).
    d2 = load_model_from_path(_write(tmp_path, cfg | {"decoder_sparse_step": 2}, folder="a")).decoder
    assert d2.moe is not None and d2.moe.num_moe_layers == 12
    # mlp_only_layers [0, 1]: 22 MoE layers.
    d3 = load_model_from_path(_write(tmp_path, cfg | {"mlp_only_layers": [0, 1]}, folder="b")).decoder
    assert d3.moe is not None and d3.moe.num_moe_layers == 22


def test_llama4_scout_moe_and_chunked_attention(tmp_path):
    cfg = _cfg("llama-4-scout-17b-16e-instruct")
    m = _load("llama-4-scout-17b-16e-instruct")
    d = m.decoder
    assert d.family == "llama4" and d.intermediate_size == cfg["text_config"]["intermediate_size_mlp"] == 16384
    assert d.moe is not None
    assert (d.moe.num_experts, d.moe.top_k, d.moe.moe_intermediate_size) == (16, 1, 8192)
    assert d.moe.shared_expert_intermediate_size == 8192 and d.moe.num_moe_layers is None
    # no_rope_layers absent: every 4th layer is a global NoPE layer, the other 36 use 8192-token chunks.
    assert d.sliding_window == 8192 and d.num_sliding_window_layers == 48 - 48 // 4 == 36
    assert m.visual_tokens is not None and m.visual_tokens.params == {
        "tile_size": 336,
        "patch_size": 14,
        "max_tiles": 16,
        "pixel_shuffle_ratio": 0.5,
    }
    text = cfg["text_config"] | {"interleave_moe_layer_step": 2}
    d2 = load_model_from_path(_write(tmp_path, cfg | {"text_config": text})).decoder
    assert d2.moe is not None and d2.moe.num_moe_layers == 24  # Maverick-style: every 2nd layer


def test_llama4_scout_equals_catalog_decoder():
    cat = _catalog("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    d, c = _load("llama-4-scout-17b-16e-instruct").decoder, cat.decoder
    assert d.moe is not None and c.moe is not None
    # num_moe_layers: None and num_layers both mean "every layer".
    assert (c.moe.num_moe_layers or d.num_layers) == (d.moe.num_moe_layers or d.num_layers)
    assert d.model_dump(exclude={"moe"}) == c.model_dump(exclude={"moe"})
    assert d.moe.model_dump(exclude={"num_moe_layers"}) == c.moe.model_dump(exclude={"num_moe_layers"})


# --------------------------------------------------------------------------- other VLM families (defaults)


def test_mistral3_without_sub_configs_is_mistral_small_24b(tmp_path):
    # Mistral3Config's default text/vision configs are Mistral-Small-3.1-24B.
    m = load_model_from_path(_write(tmp_path, {"model_type": "mistral3"}))
    d = m.decoder
    assert (d.hidden_size, d.num_layers, d.intermediate_size, d.head_dim, d.vocab_size) == (
        5120,
        40,
        32768,
        128,
        131072,
    )
    v = m.vision
    assert v is not None and v.gated_mlp and v.patch_size == 14
    # RMSNorm(1024) + merger Linear(4 x 1024 -> 1024) + Linear(1024 -> 5120) + Linear(5120 -> 5120), no biases.
    assert v.projector.params == 1024 + 4 * 1024 * 1024 + 1024 * 5120 + 5120 * 5120 == 35652608
    assert m.visual_tokens is not None
    assert m.visual_tokens.params == {"patch_size": 14, "merge_size": 2, "max_image_size": 1540}
    cat = _catalog("mistralai/Mistral-Small-3.1-24B-Instruct-2503")
    assert d == cat.decoder and m.visual_tokens == cat.visual_tokens


def test_llava_with_pixtral_vision(tmp_path):
    # Shape of the HF-format Pixtral-12B (mistral-community/pixtral-12b), which reads the last ViT layer.
    cfg = {"model_type": "llava", "vision_config": {"model_type": "pixtral"}, "vision_feature_layer": -1,
           "text_config": {"model_type": "mistral", "hidden_size": 5120, "num_hidden_layers": 40,
                           "head_dim": 128, "vocab_size": 131072}}  # fmt: skip
    m = load_model_from_path(_write(tmp_path, cfg))
    assert m.visual_tokens is not None and m.visual_tokens.rule == "pixtral"
    # PixtralVisionConfig defaults: patch 16, image 1024; no patch merger.
    assert m.visual_tokens.params == {"patch_size": 16, "merge_size": 1, "max_image_size": 1024}
    assert m.vision is not None and m.vision.gated_mlp and m.vision.num_layers == 24


def test_llava_onevision_defaults(tmp_path):
    m = load_model_from_path(_write(tmp_path, {"model_type": "llava_onevision"}))
    v = m.vision
    # LlavaOnevisionConfig default vision: SigLIP so400m/14 @384 with 26 layers; text default qwen2.
    assert v is not None and (v.num_layers, v.hidden_size, v.intermediate_size, v.patch_size) == (26, 1152, 4304, 14)
    assert m.decoder.family == "qwen2" and m.decoder.qkv_bias
    assert m.visual_tokens is not None and m.visual_tokens.params["max_num_patches"] == 9  # anyres_max_9
    assert [384, 2304] in m.visual_tokens.params["grid_pinpoints"]


@pytest.mark.parametrize(
    ("model_type", "image", "scale", "tokens"),
    [("idefics3", 364, 2, (364 // 14) ** 2 // 4), ("smolvlm", 384, 3, (384 // 14) ** 2 // 9)],
)
def test_idefics3_family_tokens_per_tile(tmp_path, model_type, image, scale, tokens):
    vc = {
        "hidden_size": 1152,
        "image_size": image,
        "patch_size": 14,
        "num_hidden_layers": 27,
        "intermediate_size": 4304,
    }
    m = load_model_from_path(_write(tmp_path, {"model_type": model_type, "scale_factor": scale, "vision_config": vc}))
    assert m.visual_tokens is not None and m.visual_tokens.rule == "idefics3"
    # Idefics3 169 and SmolVLM 81 tokens per tile; longest edge default 4 x tile (1456 / 1536).
    assert m.visual_tokens.params == {
        "tile_size": image,
        "longest_edge": 4 * image,
        "tokens_per_tile": tokens,
        "patch_size": 14,
    }
    assert m.vision is not None and m.vision.projector.input_dim == 1152 * scale**2


def test_internvl_hf_format_defaults(tmp_path):
    m = load_model_from_path(
        _write(tmp_path, {"model_type": "internvl", "text_config": {"model_type": "qwen2", "hidden_size": 896}})
    )
    v = m.vision
    # InternVLVisionConfig defaults: InternViT-300M (24 x 1024, patch 14, 448 px).
    assert v is not None and (v.num_layers, v.hidden_size, v.projector.input_dim) == (24, 1024, 4096)
    assert m.visual_tokens is not None and m.visual_tokens.params["max_tiles"] == 12


def test_minicpmv_qwen2_based(tmp_path):
    cfg = {"model_type": "minicpmv", "architectures": ["MiniCPMV"], "hidden_size": 3584, "intermediate_size": 18944,
           "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 151666,
           "max_window_layers": 28, "query_num": 64,
           "slice_config": {"max_slice_nums": 9, "patch_size": 14, "scale_resolution": 448},
           "vision_config": {"hidden_size": 1152, "image_size": 980, "intermediate_size": 4304,
                             "num_hidden_layers": 27, "num_attention_heads": 16, "patch_size": 14}}  # fmt: skip
    m = load_model_from_path(_write(tmp_path, cfg))
    assert m.decoder.family == "qwen2" and m.decoder.qkv_bias and m.trust_remote_code
    assert m.vision is not None and m.vision.projector.kind == "resampler"
    assert m.visual_tokens is not None
    assert m.visual_tokens.params == {"slice_size": 448, "max_slice_nums": 9, "query_num": 64, "patch_size": 14}


def test_every_supported_type_loads_from_defaults_or_flat_keys(tmp_path):
    flat = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 4, "num_attention_heads": 16,
            "num_key_value_heads": 16, "vocab_size": 1000}  # fmt: skip
    for i, model_type in enumerate(SUPPORTED_MODEL_TYPES):
        cfg = {"model_type": model_type, **flat}
        if model_type == "internvl_chat":
            cfg["llm_config"] = {"model_type": "qwen2", **flat}
        m = load_model_from_path(_write(tmp_path, cfg, folder=str(i)))
        assert (m.kind == "vlm") == (m.vision is not None) == (m.visual_tokens is not None), model_type


# --------------------------------------------------------------------------- quantization


def _with_quant(tmp_path: Path, qc: dict[str, Any]) -> Path:
    return _write(tmp_path, _cfg("llama-3.1-8b-instruct") | {"quantization_config": qc})


def _ct(num_bits: int, kind: str, group_size: int | None = None) -> dict[str, Any]:
    # compressed-tensors layout as written by llm-compressor (config_groups -> weights).
    weights = {"num_bits": num_bits, "type": kind, "strategy": "group" if group_size else "channel",
               "group_size": group_size, "symmetric": True}  # fmt: skip
    return {"quant_method": "compressed-tensors", "format": "pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}}}  # fmt: skip


@pytest.mark.parametrize(
    ("qc", "expected"),
    [
        (_ct(4, "int", 128), "int4"),  # W4A16
        (_ct(8, "int"), "int8"),  # W8A8 / W8A16
        (_ct(8, "float"), "fp8"),  # FP8-Dynamic
        ({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}, "int4"),
        ({"quant_method": "gptq", "bits": 8, "group_size": 128}, "int8"),
        ({"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}, "fp8"),
    ],
)
def test_detect_checkpoint_precision(tmp_path, qc, expected):
    path = _with_quant(tmp_path, qc)
    assert detect_checkpoint_precision(path) == expected
    assert load_model_from_path(path).quantized_checkpoints == {expected: "m"}


def test_unquantized_checkpoint_has_no_precision():
    assert detect_checkpoint_precision(FIXTURES / "llama-3.1-8b-instruct") is None
    assert read_quantization(FIXTURES / "qwen3-vl-8b-instruct") is None


def test_compressed_tensors_group_size_is_reported(tmp_path):
    q = read_quantization(_with_quant(tmp_path, _ct(4, "int", 128)))
    assert q is not None and (q.method, q.bits, q.group_size, q.precision) == ("compressed-tensors", 4, 128, "int4")


@pytest.mark.parametrize(
    "qc",
    [_ct(4, "float", 16), {"quant_method": "bitsandbytes", "load_in_4bit": True}, {"quant_method": "gptq", "bits": 3}],
)
def test_unmodelled_quantization_is_refused_in_one_line(tmp_path, qc):
    with pytest.raises(UnsupportedError) as err:
        detect_checkpoint_precision(_with_quant(tmp_path, qc))
    assert "\n" not in str(err.value) and "not supported" in str(err.value)


# --------------------------------------------------------------------------- errors


def _one_line_error(path: Path, names_families: bool = True) -> str:
    with pytest.raises(CatalogError) as err:
        load_model_from_path(path)
    message = str(err.value)
    assert "\n" not in message
    if names_families:
        assert "supported model_type values: llama" in message and "internvl_chat" in message
    return message


def test_missing_file(tmp_path):
    message = _one_line_error(tmp_path / "nowhere" / "config.json")
    assert "nowhere" in message and "no such config file" in message


def test_folder_without_config(tmp_path):
    assert str(tmp_path / "config.json") in _one_line_error(tmp_path)


def test_garbage_json(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama", ')
    message = _one_line_error(tmp_path)
    assert "config.json" in message and "not valid JSON" in message and "line 1" in message


def test_json_that_is_not_an_object(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    assert "expected a JSON object, got list" in _one_line_error(tmp_path)


def test_unsupported_model_type(tmp_path):
    message = _one_line_error(_write(tmp_path, {"model_type": "bert", "hidden_size": 768}))
    assert "unsupported model_type 'bert'" in message and "config.json" in message


def test_missing_model_type(tmp_path):
    assert "model_type" in _one_line_error(_write(tmp_path, {"hidden_size": 4096}))


def test_missing_hidden_size(tmp_path):
    cfg = {k: v for k, v in _cfg("llama-3.1-8b-instruct").items() if k != "hidden_size"}
    message = _one_line_error(_write(tmp_path, cfg))
    assert "model_type 'llama'" in message and "lacks required key(s) hidden_size" in message


def test_internvl_chat_without_llm_config(tmp_path):
    cfg = {k: v for k, v in _cfg("internvl3-38b-awq").items() if k != "llm_config"}
    assert "llm_config" in _one_line_error(_write(tmp_path, cfg))


def test_wrongly_typed_value(tmp_path):
    message = _one_line_error(_write(tmp_path, _cfg("qwen3-8b") | {"num_hidden_layers": "36"}), names_families=False)
    assert "num_hidden_layers" in message and "integer" in message


def test_bad_preprocessor_json(tmp_path):
    d = _write(tmp_path, _cfg("qwen2.5-vl-7b-instruct"))
    (d / "preprocessor_config.json").write_text("{")
    assert "preprocessor_config.json" in _one_line_error(d)


def test_folder_copy_keeps_preprocessor(tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(FIXTURES / "qwen2.5-vl-7b-instruct", dst)
    assert load_model_from_path(dst / "config.json").visual_tokens == _load("qwen2.5-vl-7b-instruct").visual_tokens
