"""Build a ModelSpec from a local Hugging Face ``config.json`` (``--model PATH``).

PATH is a ``config.json`` or a folder holding one; a ``preprocessor_config.json``
beside it supplies the image-processor settings (pixel budgets, tile counts).
Nothing is fetched: keys the file leaves out take the value the transformers
config class would give them (e.g. Gemma 3's ``head_dim`` 256, LLaVA-1.5's
``text_config`` that names only the vocabulary, Qwen2.5-VL's vision
``depth``), so the spec matches what vLLM builds from the same file.

Class defaults were read from the transformers 5.24 config classes
(``models/*/configuration_*.py``) and, for remote-code models (InternVL chat,
MiniCPM-V, Phi-3-vision), from the configs those repos ship.

Pre-quantized checkpoints are recognised from ``quantization_config`` (at the
top level or inside ``text_config`` / ``llm_config``): see
:func:`detect_checkpoint_precision` and :func:`read_quantization`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.catalog.schema import (
    DecoderSpec,
    ModelSpec,
    MoeSpec,
    Precision,
    ProjectorSpec,
    Source,
    VisionSpec,
    VisualTokenRule,
    VisualTokenRuleName,
    WindowAttention,
)
from planner.core.errors import CatalogError, UnsupportedError

Cfg = dict[str, Any]

TEXT_MODEL_TYPES = (
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe",
    "gemma", "gemma2", "gemma3_text", "phi3",
)  # fmt: skip
VLM_MODEL_TYPES = (
    "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "llava", "llava_next", "llava_onevision",
    "mllama", "mistral3", "internvl", "internvl_chat", "gemma3", "phi3_v", "idefics3", "smolvlm",
    "minicpmv", "llama4",
)  # fmt: skip
SUPPORTED_MODEL_TYPES = TEXT_MODEL_TYPES + VLM_MODEL_TYPES
_SUPPORTED = ", ".join(SUPPORTED_MODEL_TYPES) + " (pixtral = llava with a pixtral vision_config)"

_REQUIRED_TEXT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
"""Keys a flat (top-level) text config must give: a file without them is not a real checkpoint config."""

_REMOTE_CODE_TYPES = frozenset({"internvl_chat", "minicpmv", "phi3_v"})

_DEFAULT_ARCHITECTURE = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM",
    "qwen2": "Qwen2ForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM", "phi3": "Phi3ForCausalLM",
    "qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
    "llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration", "mllama": "MllamaForConditionalGeneration",
    "mistral3": "Mistral3ForConditionalGeneration", "internvl": "InternVLForConditionalGeneration",
    "internvl_chat": "InternVLChatModel", "gemma3": "Gemma3ForConditionalGeneration",
    "phi3_v": "Phi3VForCausalLM", "idefics3": "Idefics3ForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration", "minicpmv": "MiniCPMV",
    "llama4": "Llama4ForConditionalGeneration",
}  # fmt: skip


# --------------------------------------------------------------------------- file reading


def _config_file(path: Path) -> Path:
    """The config.json that PATH names (the file itself, or the one inside the folder)."""
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise CatalogError(
            f"{file}: no such config file (pass a Hugging Face config.json or a folder holding one; "
            f"supported model_type values: {_SUPPORTED})"
        )
    return file


_ZERO_OK = {"extra_params", "shared_expert_intermediate_size", "num_sliding_window_layers"}
"""Sizes of a model that may be 0; every other number of a ModelSpec is a positive, finite size."""


def _check_sizes(file: Path, data: Any, where: str = "") -> None:
    """Zero, negative or non-finite sizes (num_attention_heads: 0, patch_size: 0, ...) are refused: vLLM could not
    load such a model and the planner would divide by them."""
    if isinstance(data, dict):
        for k, v in data.items():
            _check_sizes(file, v, f"{where}.{k}" if where else str(k))
    elif isinstance(data, (list, tuple)):
        for i, v in enumerate(data):
            _check_sizes(file, v, f"{where}[{i}]")
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        key = where.rsplit(".", 1)[-1]
        ok = math.isfinite(data) and (data >= 0 if key in _ZERO_OK else data > 0)
        if not ok:
            raise CatalogError(f"{file}: {where} = {data} is not a usable size (it must be a finite number "
                               f"{'>= 0' if key in _ZERO_OK else '> 0'}); check the config's fields")


def _read_json(file: Path) -> Cfg:
    from planner.core.errors import RequestError
    from planner.core.inputs import parse_json, read_text

    try:
        data = parse_json(read_text(file, "model config"), f"model config {file}", allow_nan=True)
    except RequestError as exc:
        raise CatalogError(f"{exc}; supported model_type values: {_SUPPORTED}") from None
    if not isinstance(data, dict):
        raise CatalogError(
            f"{file}: expected a JSON object, got {type(data).__name__}; supported model_type values: {_SUPPORTED}"
        )
    return data


def _preprocessor(config_file: Path) -> Cfg:
    """preprocessor_config.json beside the config, or {} when there is none."""
    file = config_file.parent / "preprocessor_config.json"
    return _read_json(file) if file.is_file() else {}


# --------------------------------------------------------------------------- typed access


_POSITIVE = frozenset({
    "attention_heads", "depth", "embed_dim", "head_dim", "hidden_size", "image_size", "intermediate_size",
    "max_position_embeddings", "merge_size", "num_attention_heads", "num_heads", "num_hidden_layers",
    "num_key_value_heads", "patch_size", "spatial_merge_size", "temporal_patch_size", "vocab_size",
    "num_experts_per_tok", "out_hidden_size", "projector_output_dim", "vision_output_dim", "moe_intermediate_size",
})
"""Sizes that must be >= 1 when a config.json gives them (0 would divide by zero, or be silently replaced)."""


class _Reader:
    """Typed look-ups in one config dict, with errors that name the file and the key."""

    def __init__(self, file: Path, where: str = "", pp_file: Path | None = None) -> None:
        self.file = file
        self.where = where
        self.pp_file = pp_file

    def pre(self) -> _Reader:
        """A reader for preprocessor_config.json values (errors name that file)."""
        return _Reader(self.pp_file or self.file)

    def _fail(self, key: str, value: object, expected: str) -> CatalogError:
        return CatalogError(f"{self.file}: key '{self.where}{key}' must be {expected}, got {value!r}")

    def opt_int(self, cfg: Cfg, key: str, default: int | None) -> int | None:
        value = cfg.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or int(value) != value:
            raise self._fail(key, value, "an integer")
        if key in _POSITIVE and value < 1:
            raise self._fail(key, value, "a positive integer")
        return int(value)

    def req_int(self, cfg: Cfg, key: str, default: int) -> int:
        value = self.opt_int(cfg, key, default)
        return default if value is None else value

    def num(self, cfg: Cfg, key: str, default: float) -> float:
        value = cfg.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._fail(key, value, "a number")
        return float(value)

    def flag(self, cfg: Cfg, key: str, default: bool) -> bool:
        value = cfg.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, value, "true or false")
        return value

    def obj(self, cfg: Cfg, key: str) -> Cfg:
        value = cfg.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._fail(key, value, "an object")
        return value

    def int_list(self, cfg: Cfg, key: str, default: list[int] | None) -> list[int] | None:
        value = cfg.get(key, default)
        if value is None:
            return None
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise self._fail(key, value, "a list of integers")
        return list(value)

    def side(self, cfg: Cfg, key: str, default: int) -> int:
        """An image/patch size given as an int, [h, w] or {"height": h, "width": w} (square assumed)."""
        value = cfg.get(key, default)
        if value is None:
            return default
        if isinstance(value, dict):
            value = value.get("height", value.get("longest_edge", default))
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self._fail(key, value, "a positive integer size")
        return value


# --------------------------------------------------------------------------- text decoder


@dataclass(frozen=True)
class _TextDefaults:
    """transformers class defaults of one text config type (used for keys the file leaves out)."""

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None
    """None: equal to num_attention_heads."""
    head_dim: int | None
    """None: hidden_size // num_attention_heads."""
    max_position_embeddings: int
    tie_word_embeddings: bool
    bias_key: str | None
    """Config key switching q/k/v biases on; None where the modeling code always has them (Qwen2)."""
    bias_default: bool
    qk_norm: bool


def _td(family: str, *values: Any) -> _TextDefaults:
    return _TextDefaults(family, *values)


# vocab, hidden, intermediate, layers, heads, kv heads, head_dim, max positions, tie, bias key, bias, qk norm
_TEXT_DEFAULTS: dict[str, _TextDefaults] = {
    "llama": _td("llama", 32000, 4096, 11008, 32, 32, None, None, 2048, False, "attention_bias", False, False),
    "mistral": _td("mistral", 32000, 4096, 14336, 32, 32, 8, None, 131072, False, "attention_bias", False, False),
    "ministral3": _td("mistral", 131072, 4096, 14336, 32, 32, 8, None, 131072, False, None, False, False),
    "mixtral": _td("mixtral", 32000, 4096, 14336, 32, 32, 8, None, 131072, False, None, False, False),
    "qwen2": _td("qwen2", 151936, 4096, 22016, 32, 32, 32, None, 32768, False, None, True, False),
    "qwen2_moe": _td("qwen2_moe", 151936, 2048, 5632, 24, 16, 16, None, 32768, False, "qkv_bias", True, False),
    "qwen3": _td("qwen3", 151936, 4096, 22016, 32, 32, 32, 128, 32768, False, "attention_bias", False, True),
    "qwen3_moe": _td("qwen3_moe", 151936, 2048, 6144, 24, 32, 4, None, 32768, False, "attention_bias", False, True),
    "gemma": _td("gemma", 256000, 3072, 24576, 28, 16, 16, 256, 8192, True, "attention_bias", False, False),
    "gemma2": _td("gemma2", 256000, 2304, 9216, 26, 8, 4, 256, 8192, True, "attention_bias", False, False),
    "gemma3_text": _td("gemma3", 262208, 2304, 9216, 26, 8, 4, 256, 131072, True, "attention_bias", False, True),
    "phi3": _td("phi3", 32064, 3072, 8192, 32, 32, None, None, 4096, False, None, False, False),
    "mllama_text_model": _td("mllama", 128256, 4096, 14336, 40, 32, 8, None, 131072, False, None, False, False),
    # intermediate_size here is the dense MLP (intermediate_size_mlp); the expert width is read separately.
    "llama4_text": _td("llama4", 202048, 5120, 16384, 48, 40, 8, 128, 131072, False, "attention_bias", False, True),
    "qwen2_vl_text": _td("qwen2", 152064, 8192, 29568, 80, 64, 8, None, 32768, False, None, True, False),
    "qwen2_5_vl_text": _td("qwen2", 152064, 8192, 29568, 80, 64, 8, None, 32768, False, None, True, False),
    "qwen3_vl_text": _td("qwen3", 151936, 4096, 22016, 32, 32, 32, 128, 128000, False, "attention_bias", False, True),
    "qwen3_vl_moe_text": _td(
        "qwen3_moe", 151936, 2048, 5632, 24, 16, 16, None, 128000, False, "attention_bias", False, True
    ),
    # InternLM2 (remote code, InternVL chat models): bias defaults to true in its config class.
    "internlm2": _td("internlm2", 103168, 4096, 11008, 32, 32, None, None, 2048, False, "bias", True, False),
}

_MISTRAL3_TEXT_DEFAULT: Cfg = {
    "model_type": "mistral", "head_dim": 128, "hidden_size": 5120, "intermediate_size": 32768,
    "max_position_embeddings": 131072, "num_attention_heads": 32, "num_hidden_layers": 40,
    "num_key_value_heads": 8, "sliding_window": None, "vocab_size": 131072,
}  # fmt: skip
"""Mistral3Config's text_config when the file gives none (Mistral-Small-3.1-24B)."""

_ARCH_TO_TEXT_TYPE = {
    "Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama", "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe", "InternLM2ForCausalLM": "internlm2", "MistralForCausalLM": "mistral",
}  # fmt: skip


@dataclass(frozen=True)
class _Text:
    cfg: Cfg
    type: str
    nested: bool
    where: str
    """Key prefix for error messages ("text_config.", "llm_config." or "")."""


def _text_part(cfg: Cfg, model_type: str, r: _Reader) -> _Text:
    """The dict holding the language model's keys, and its config type."""
    if model_type in TEXT_MODEL_TYPES:
        return _Text(cfg, model_type, False, "")
    if model_type in ("qwen2_vl", "qwen2_5_vl", "phi3_v", "minicpmv"):
        if model_type in ("qwen2_vl", "qwen2_5_vl") and isinstance(cfg.get("text_config"), dict):
            tc = cfg["text_config"]
            return _Text(tc, f"{model_type}_text", True, "text_config.")
        if model_type == "qwen2_vl" or model_type == "qwen2_5_vl":
            return _Text(cfg, f"{model_type}_text", False, "")
        if model_type == "phi3_v":
            return _Text(cfg, "phi3", False, "")
        return _Text(cfg, _minicpmv_text_type(cfg), False, "")
    if model_type == "internvl_chat":
        if not isinstance(cfg.get("llm_config"), dict):
            raise CatalogError(
                f"{r.file}: model_type 'internvl_chat' config lacks required key(s) llm_config; "
                f"supported model_type values: {_SUPPORTED}"
            )
        llm = cfg["llm_config"]
        archs = llm.get("architectures") or []
        ttype = llm.get("model_type") or (_ARCH_TO_TEXT_TYPE.get(archs[0]) if archs else None) or "internlm2"
        return _Text(llm, ttype, False, "llm_config.")
    default_type = {
        "qwen3_vl": "qwen3_vl_text", "qwen3_vl_moe": "qwen3_vl_moe_text", "llava": "llama", "llava_next": "llama",
        "llava_onevision": "qwen2", "mllama": "mllama_text_model", "mistral3": "mistral", "internvl": "qwen2",
        "gemma3": "gemma3_text", "idefics3": "llama", "smolvlm": "llama", "llama4": "llama4_text",
    }[model_type]  # fmt: skip
    tc = r.obj(cfg, "text_config")
    if not tc and model_type == "mistral3":
        tc = dict(_MISTRAL3_TEXT_DEFAULT)
    ttype = tc.get("model_type") or default_type
    if model_type in ("qwen3_vl", "qwen3_vl_moe", "mllama", "llama4", "gemma3"):
        ttype = default_type  # the nested type names vary across saves ("qwen3_vl", "mllama_text_model", ...)
    return _Text(tc, ttype, True, "text_config.")


def _minicpmv_text_type(cfg: Cfg) -> str:
    """MiniCPM-V 2.6 is built on Qwen2 (its config carries Qwen2 keys); 2.5 and earlier on Llama."""
    return "qwen2" if "max_window_layers" in cfg or cfg.get("version") == 2.6 else "llama"


def _check_required(text: _Text, model_type: str, r: _Reader) -> None:
    if text.nested:
        return  # composite configs: the sub-config class fills what the file leaves out
    missing = [f"{text.where}{k}" for k in _REQUIRED_TEXT_KEYS if text.cfg.get(k) is None]
    if missing:
        raise CatalogError(
            f"{r.file}: model_type '{model_type}' config lacks required key(s) {', '.join(missing)}; "
            f"supported model_type values: {_SUPPORTED}"
        )


def _decoder(text: _Text, root: Cfg, r: _Reader) -> DecoderSpec:
    d = _TEXT_DEFAULTS.get(text.type)
    if d is None:
        raise CatalogError(
            f"{r.file}: unsupported language-model type '{text.type}' in {text.where or 'config'} "
            f"(supported: {', '.join(sorted(_TEXT_DEFAULTS))}); supported model_type values: {_SUPPORTED}"
        )
    tr = _Reader(r.file, text.where)
    tc = text.cfg
    hidden = tr.req_int(tc, "hidden_size", d.hidden_size)
    layers = tr.req_int(tc, "num_hidden_layers", d.num_hidden_layers)
    heads = tr.req_int(tc, "num_attention_heads", d.num_attention_heads)
    if "num_key_value_heads" in tc:
        kv = tr.opt_int(tc, "num_key_value_heads", None) or heads
    else:
        kv = d.num_key_value_heads or heads
    if tc.get("head_dim") is not None:
        head_dim = tr.req_int(tc, "head_dim", 0)
    elif "head_dim" not in tc and d.head_dim is not None:
        head_dim = d.head_dim
    else:
        head_dim = hidden // heads
    dense_key = "intermediate_size_mlp" if text.type == "llama4_text" else "intermediate_size"
    intermediate = tr.req_int(tc, dense_key, d.intermediate_size)
    max_pos = tr.req_int(tc, "max_position_embeddings", d.max_position_embeddings)
    if "tie_word_embeddings" in tc:
        tie = tr.flag(tc, "tie_word_embeddings", d.tie_word_embeddings)
    elif text.nested or text.where:
        tie = r.flag(root, "tie_word_embeddings", d.tie_word_embeddings)
    else:
        tie = d.tie_word_embeddings
    qkv_bias = d.bias_default if d.bias_key is None else tr.flag(tc, d.bias_key, d.bias_default)
    qk_norm = tr.flag(tc, "use_qk_norm", d.qk_norm) if text.type == "llama4_text" else d.qk_norm
    window, n_window = _sliding_window(tc, text.type, layers, max_pos, tr)
    cross = tr.int_list(tc, "cross_attention_layers", None) or []
    if text.type == "mllama_text_model" and not cross:
        cross = [3, 8, 13, 18, 23, 28, 33, 38]
    extra = 0
    if text.type == "mllama_text_model":
        # 8 extra embedding rows (image tokens) + per cross-attention layer q/k norms and two tanh gates.
        extra = 8 * hidden + len(cross) * (2 * head_dim + 2)
    try:
        return DecoderSpec(
            family=d.family,
            num_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            num_kv_heads=kv,
            head_dim=head_dim,
            intermediate_size=intermediate,
            vocab_size=tr.req_int(tc, "vocab_size", d.vocab_size),
            tie_word_embeddings=tie,
            max_position_embeddings=max_pos,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            moe=_moe(tc, text.type, layers, tr),
            sliding_window=window,
            num_sliding_window_layers=n_window,
            cross_attention_layers=cross,
            extra_params=extra,
        )
    except ValueError as exc:  # pydantic ValidationError subclasses ValueError
        raise CatalogError(f"{r.file}: inconsistent text config ({_first_error(exc)})") from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
        return f"{loc}: {first.get('msg')}"
    return str(exc).splitlines()[0]


def _sliding_window(tc: Cfg, ttype: str, layers: int, max_pos: int, r: _Reader) -> tuple[int | None, int]:
    """(window or chunk size, number of layers that use it)."""
    layer_types = tc.get("layer_types")
    if not isinstance(layer_types, list) or len(layer_types) != layers:
        layer_types = None
    if ttype in ("gemma2", "gemma3_text"):
        window = r.opt_int(tc, "sliding_window", 4096)
        if window is None:
            return None, 0
        if layer_types is not None:
            return window, sum(1 for t in layer_types if t == "sliding_attention")
        pattern = 2 if ttype == "gemma2" else r.req_int(tc, "sliding_window_pattern", 6)
        return window, sum(1 for i in range(layers) if (i + 1) % pattern)
    if ttype == "llama4_text":
        chunk = r.opt_int(tc, "attention_chunk_size", 8192)
        if chunk is None:
            return None, 0
        if layer_types is not None:
            return chunk, sum(1 for t in layer_types if t == "chunked_attention")
        interval = r.req_int(tc, "no_rope_layer_interval", 4)
        no_rope = r.int_list(tc, "no_rope_layers", None)
        if not no_rope:
            no_rope = [int((i + 1) % interval != 0) for i in range(layers)]
        # 1 = a RoPE layer, which uses chunked attention; 0 = a NoPE layer with global attention.
        return chunk, sum(1 for v in no_rope[:layers] if v)
    if ttype in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "qwen2_vl_text", "qwen2_5_vl_text"):
        if not r.flag(tc, "use_sliding_window", False):
            return None, 0
        window = r.opt_int(tc, "sliding_window", 4096)
        if window is None:
            return None, 0
        if layer_types is not None:
            return window, sum(1 for t in layer_types if t == "sliding_attention")
        first = r.req_int(tc, "max_window_layers", 28)
        return window, max(0, layers - first)
    if ttype in ("mistral", "mixtral", "phi3", "ministral3"):
        window = r.opt_int(tc, "sliding_window", 4096 if ttype == "mistral" else None)
        if window is not None and window < max_pos:
            return window, layers
    return None, 0


def _moe(tc: Cfg, ttype: str, layers: int, r: _Reader) -> MoeSpec | None:
    if ttype == "mixtral":
        return MoeSpec(
            num_experts=r.req_int(tc, "num_local_experts", 8),
            top_k=r.req_int(tc, "num_experts_per_tok", 2),
            moe_intermediate_size=r.req_int(tc, "intermediate_size", 14336),
        )
    if ttype in ("qwen2_moe", "qwen3_moe", "qwen3_vl_moe_text"):
        d = {"qwen2_moe": (60, 4, 1408), "qwen3_moe": (128, 8, 768), "qwen3_vl_moe_text": (60, 4, 1408)}[ttype]
        experts = r.req_int(tc, "num_experts", d[0])
        step = r.req_int(tc, "decoder_sparse_step", 1)
        dense_only = set(r.int_list(tc, "mlp_only_layers", None) or [])
        n_moe = sum(1 for i in range(layers) if i not in dense_only and experts > 0 and (i + 1) % step == 0)
        if n_moe == 0:
            return None
        shared = r.req_int(tc, "shared_expert_intermediate_size", 5632) if ttype == "qwen2_moe" else 0
        return MoeSpec(
            num_experts=experts,
            top_k=r.req_int(tc, "num_experts_per_tok", d[1]),
            moe_intermediate_size=r.req_int(tc, "moe_intermediate_size", d[2]),
            shared_expert_intermediate_size=shared,
            num_moe_layers=None if n_moe == layers else n_moe,
        )
    if ttype == "llama4_text":
        step = r.req_int(tc, "interleave_moe_layer_step", 1)
        moe_layers = r.int_list(tc, "moe_layers", None)
        n_moe = len(moe_layers) if moe_layers is not None else len(range(step - 1, layers, step))
        expert = r.req_int(tc, "intermediate_size", 8192)
        return MoeSpec(
            num_experts=r.req_int(tc, "num_local_experts", 16),
            top_k=r.req_int(tc, "num_experts_per_tok", 1),
            moe_intermediate_size=expert,
            shared_expert_intermediate_size=expert,
            num_moe_layers=None if n_moe == layers else n_moe,
        )
    return None


# --------------------------------------------------------------------------- vision tower + token rule


@dataclass(frozen=True)
class _Vit:
    """A plain ViT's dimensions, with transformers' class defaults for missing keys."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    patch: int
    image: int


_VIT_DEFAULTS: dict[str, _Vit] = {
    # layers, hidden, heads, intermediate, patch, image
    "clip_vision_model": _Vit(12, 768, 12, 3072, 32, 224),
    "siglip_vision_model": _Vit(12, 768, 12, 3072, 16, 224),
    "pixtral": _Vit(24, 1024, 16, 4096, 16, 1024),
    "internvl_vision": _Vit(24, 1024, 16, 4096, 14, 448),
    "intern_vit_6b": _Vit(48, 3200, 25, 12800, 14, 224),
    "idefics3_vision": _Vit(12, 1152, 16, 3072, 32, 224),
    "smolvlm_vision": _Vit(12, 1152, 16, 3072, 32, 224),
    "llama4_vision_model": _Vit(34, 768, 16, 5632, 14, 448),
}

_FAMILY_VISION_WHEN_ABSENT: dict[str, tuple[str, _Vit]] = {
    # Composite config's own default vision_config (used only when the file has no vision_config).
    "llava": ("clip_vision_model", _Vit(24, 1024, 16, 4096, 14, 336)),
    "llava_next": ("clip_vision_model", _Vit(24, 1024, 16, 4096, 14, 336)),
    "llava_onevision": ("siglip_vision_model", _Vit(26, 1152, 16, 4304, 14, 384)),
    "mistral3": ("pixtral", _Vit(24, 1024, 16, 4096, 14, 1540)),
}

_VIT_NAMES = {
    "clip_vision_model": "CLIP ViT",
    "siglip_vision_model": "SigLIP ViT",
    "pixtral": "Pixtral-ViT (2D RoPE, SwiGLU)",
    "internvl_vision": "InternViT",
    "intern_vit_6b": "InternViT",
    "idefics3_vision": "SigLIP ViT",
    "smolvlm_vision": "SigLIP ViT",
    "llama4_vision_model": "Llama 4 ViT",
}


def _vit(vc: Cfg, vtype: str, r: _Reader, absent: _Vit | None = None) -> _Vit:
    """Read a plain ViT config: ``absent`` when the file has no vision_config, else class defaults per key."""
    if not vc and absent is not None:
        return absent
    d = _VIT_DEFAULTS[vtype]
    return _Vit(
        layers=r.req_int(vc, "num_hidden_layers", d.layers),
        hidden=r.req_int(vc, "hidden_size", d.hidden),
        heads=r.req_int(vc, "num_attention_heads", d.heads),
        intermediate=r.req_int(vc, "intermediate_size", d.intermediate),
        patch=r.side(vc, "patch_size", d.patch),
        image=r.side(vc, "image_size", d.image),
    )


def _vit_name(vtype: str, v: _Vit) -> str:
    base = _VIT_NAMES.get(vtype, vtype)
    return f"{base} {v.layers}L/{v.hidden}d patch{v.patch} @{v.image}px"


def _vision_spec(name: str, v: _Vit, projector: ProjectorSpec, gated: bool = False, **kw: Any) -> VisionSpec:
    return VisionSpec(
        encoder=name,
        num_layers=v.layers,
        hidden_size=v.hidden,
        num_heads=v.heads,
        intermediate_size=v.intermediate,
        gated_mlp=gated,
        patch_size=v.patch,
        projector=projector,
        **kw,
    )


def _pixels(pp: Cfg, default_min: int, default_max: int, r: _Reader) -> tuple[int, int]:
    """Qwen-VL pixel budget: min_pixels/max_pixels win over size.shortest_edge/longest_edge (as in transformers)."""
    size = r.obj(pp, "size")
    lo = pp.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels") or default_min
    hi = pp.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels") or default_max
    for key, value in (("min_pixels", lo), ("max_pixels", hi)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CatalogError(f"{r.file}: preprocessor '{key}' must be a positive integer, got {value!r}")
    return lo, hi


def _qwen_vl(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: _Reader) -> tuple[VisionSpec, VisualTokenRule]:
    vr = _Reader(r.file, "vision_config.")
    vc = r.obj(cfg, "vision_config")
    pr = r.pre()
    merge = vr.req_int(vc, "spatial_merge_size", 2)
    temporal = vr.req_int(vc, "temporal_patch_size", 2)
    layers = vr.req_int(vc, "depth", 32 if model_type != "qwen3_vl" else 27)
    heads = vr.req_int(vc, "num_heads", 16)
    window = None
    projector_params = None
    rule: VisualTokenRuleName
    if model_type == "qwen2_vl":
        width = vr.req_int(vc, "embed_dim", 1280)
        mlp = int(width * vr.num(vc, "mlp_ratio", 4.0))
        patch = vr.req_int(vc, "patch_size", 14)
        out = vr.req_int(vc, "hidden_size", 3584)
        gated, name = False, "Qwen2-VL ViT (2D RoPE, QuickGELU)"
        rule, lo_hi = "qwen2_vl", (3136, 12845056)
    elif model_type == "qwen2_5_vl":
        width = vr.req_int(vc, "hidden_size", 3584)
        mlp = vr.req_int(vc, "intermediate_size", 3420)
        patch = vr.req_int(vc, "patch_size", 14)
        out = vr.req_int(vc, "out_hidden_size", 3584)
        gated, name = True, "Qwen2.5-VL ViT (window attention, SwiGLU, RMSNorm)"
        rule, lo_hi = "qwen2_vl", (3136, 12845056)
        window_px = vr.req_int(vc, "window_size", 112)
        full = vr.int_list(vc, "fullatt_block_indexes", [7, 15, 23, 31]) or []
        window = WindowAttention(window_patches=max(1, (window_px // patch) ** 2), full_attention_layers=full)
    else:  # qwen3_vl, qwen3_vl_moe
        width = vr.req_int(vc, "hidden_size", 1152)
        mlp = vr.req_int(vc, "intermediate_size", 4304)
        patch = vr.req_int(vc, "patch_size", 16)
        out = vr.req_int(vc, "out_hidden_size", 3584)
        deepstack = vr.int_list(vc, "deepstack_visual_indexes", [8, 16, 24]) or []
        gated, name = False, f"Qwen3-VL ViT (DeepStack {deepstack})"
        rule, lo_hi = "qwen3_vl", (65536, 16777216)
        merged = width * merge**2
        # Main merger: LayerNorm(width) + Linear(merged, merged) + Linear(merged, out), with biases;
        # each DeepStack merger has the same MLP after a LayerNorm(merged).
        mlp_params = merged * merged + merged + merged * out + out
        projector_params = 2 * width + mlp_params + len(deepstack) * (2 * merged + mlp_params)
    merged = width * merge**2
    projector = ProjectorSpec(
        kind="merger", input_dim=merged, hidden_dim=merged, output_dim=out, params=projector_params
    )
    vision = VisionSpec(
        encoder=name,
        num_layers=layers,
        hidden_size=width,
        num_heads=heads,
        intermediate_size=mlp,
        gated_mlp=gated,
        patch_size=patch,
        temporal_patch_size=temporal,
        window_attention=window,
        projector=projector,
    )
    lo, hi = _pixels(pp, *lo_hi, pr)
    params = {
        "patch_size": pr.req_int(pp, "patch_size", patch),
        "merge_size": pr.req_int(pp, "merge_size", merge),
        "min_pixels": lo,
        "max_pixels": hi,
    }
    return vision, VisualTokenRule(rule=rule, params=params)


def _layers_used(total: int, feature_layer: object) -> int:
    """ViT layers vLLM builds: up to the deepest layer whose features are read (``vision_feature_layer``).

    LLaVA-1.5 reads layer -2 of 24, so 23 layers are loaded; -1 (or no setting) keeps them all."""
    indices = feature_layer if isinstance(feature_layer, list) else [feature_layer]
    deepest = [total + i if i < 0 else i for i in indices if isinstance(i, int) and not isinstance(i, bool)]
    return max(1, min(total, max(deepest) + 1)) if deepest else total


def _llava_projector(cfg: Cfg, vit: _Vit, text_hidden: int, r: _Reader) -> ProjectorSpec:
    """LlavaMultiModalProjector: Linear(vision x feature layers -> text) + GELU + Linear(text -> text)."""
    layers = cfg.get("vision_feature_layer", -2)
    n_layers = len(layers) if isinstance(layers, list) else 1
    return ProjectorSpec(kind="mlp", input_dim=vit.hidden * n_layers, hidden_dim=text_hidden, output_dim=text_hidden)


def _anyres_max(value: object) -> int:
    match = re.fullmatch(r"anyres_max_(\d+)", str(value or ""))
    return int(match.group(1)) if match else 9


def _llava(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: _Reader) -> tuple[VisionSpec, VisualTokenRule]:
    vc = r.obj(cfg, "vision_config")
    vr = _Reader(r.file, "vision_config.")
    absent_type, absent = _FAMILY_VISION_WHEN_ABSENT[model_type]
    vtype = vc.get("model_type") or absent_type
    if vtype not in _VIT_DEFAULTS:
        raise CatalogError(
            f"{r.file}: unsupported vision_config.model_type '{vtype}' for model_type '{model_type}' "
            f"(supported: clip_vision_model, siglip_vision_model, pixtral); supported model_type values: {_SUPPORTED}"
        )
    vit = _vit(vc, vtype, vr, absent if vtype == absent_type else None)
    default_layer = -1 if model_type in ("llava_onevision", "mistral3") else -2
    used = _layers_used(vit.layers, cfg.get("vision_feature_layer", default_layer))
    vit = _Vit(used, vit.hidden, vit.heads, vit.intermediate, vit.patch, vit.image)
    pr = r.pre()
    if vtype == "pixtral" or model_type == "mistral3":
        gated = True
        if model_type == "mistral3":
            merge = r.req_int(cfg, "spatial_merge_size", 2)
            bias = r.flag(cfg, "multimodal_projector_bias", False)
            th = text_hidden
            # RMSNorm + patch merger Linear(merge^2 * d -> d) (no bias) + Linear(d -> th) + GELU + Linear(th -> th).
            count = (
                vit.hidden + merge**2 * vit.hidden * vit.hidden + vit.hidden * th + th * th + (2 * th if bias else 0)
            )
            projector = ProjectorSpec(kind="mlp", input_dim=vit.hidden, hidden_dim=th, output_dim=th, params=count)
        else:
            merge = 1
            projector = _llava_projector(cfg, vit, text_hidden, r)
        size = r.obj(pp, "size")
        max_image = size.get("longest_edge") if isinstance(size.get("longest_edge"), int) else vit.image
        tokens = {"patch_size": pr.side(pp, "patch_size", vit.patch), "merge_size": merge, "max_image_size": max_image}
        vision = _vision_spec(_vit_name("pixtral", vit), vit, projector, gated=gated)
        return vision, VisualTokenRule(rule="pixtral", params=tokens)
    projector = _llava_projector(cfg, vit, text_hidden, r)
    vision = _vision_spec(_vit_name(vtype, vit), vit, projector)
    if model_type == "llava":
        return vision, VisualTokenRule(rule="llava", params={"image_size": vit.image, "patch_size": vit.patch})
    pinpoints = cfg.get("image_grid_pinpoints") or pp.get("image_grid_pinpoints")
    if not pinpoints:
        if model_type == "llava_next":
            pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
        else:
            pinpoints = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
    params: dict[str, Any] = {"image_size": vit.image, "patch_size": vit.patch, "grid_pinpoints": pinpoints}
    if model_type == "llava_next":
        return vision, VisualTokenRule(rule="llava_next", params=params)
    params["max_num_patches"] = _anyres_max(cfg.get("vision_aspect_ratio", "anyres_max_9"))
    return vision, VisualTokenRule(rule="llava_onevision", params=params)


def _mllama(cfg: Cfg, text_hidden: int, pp: Cfg, r: _Reader) -> tuple[VisionSpec, VisualTokenRule]:
    vc = r.obj(cfg, "vision_config")
    vr = _Reader(r.file, "vision_config.")
    local = vr.req_int(vc, "num_hidden_layers", 32)
    global_ = vr.req_int(vc, "num_global_layers", 8)
    patch = vr.side(vc, "patch_size", 14)
    image = vr.side(vc, "image_size", 448)
    hidden = vr.req_int(vc, "hidden_size", 1280)
    out_dim = vr.req_int(vc, "vision_output_dim", 7680)
    vision = VisionSpec(
        encoder=f"Mllama ViT ({local} local + {global_} gated global layers, {image} px tiles)",
        num_layers=local + global_,
        hidden_size=hidden,
        num_heads=vr.req_int(vc, "attention_heads", 16),
        intermediate_size=vr.req_int(vc, "intermediate_size", 5120),
        patch_size=patch,
        projector=ProjectorSpec(kind="linear", input_dim=out_dim, output_dim=text_hidden),
    )
    pr = r.pre()
    tile = pr.side(pp, "size", image)
    max_tiles = pr.req_int(pp, "max_image_tiles", vr.req_int(vc, "max_num_tiles", 4))
    return vision, VisualTokenRule(
        rule="mllama", params={"tile_size": tile, "patch_size": patch, "max_tiles": max_tiles}
    )


def _internvl(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: _Reader) -> tuple[VisionSpec, VisualTokenRule]:
    vc = r.obj(cfg, "vision_config")
    vr = _Reader(r.file, "vision_config.")
    vtype = "intern_vit_6b" if model_type == "internvl_chat" else "internvl_vision"
    vit = _vit(vc, vtype, vr)
    ratio = r.num(cfg, "downsample_ratio", 0.5)
    shuffle = round(1 / ratio)
    projector = ProjectorSpec(
        kind="mlp", input_dim=vit.hidden * shuffle**2, hidden_dim=text_hidden, output_dim=text_hidden
    )
    # InternViT: a class token before the 1024 patches of a tile, and layer scale (ls1, ls2) in every block.
    vision = _vision_spec(_vit_name(vtype, vit), vit, projector, layer_scale=True, class_token=True)
    pr = r.pre()
    if model_type == "internvl_chat":
        tile = r.req_int(cfg, "force_image_size", vit.image) if cfg.get("force_image_size") else vit.image
        min_tiles = r.req_int(cfg, "min_dynamic_patch", 1)
        max_tiles = r.req_int(cfg, "max_dynamic_patch", 12)
        thumbnail = r.flag(cfg, "use_thumbnail", True)
    else:
        tile = pr.side(pp, "size", vit.image)
        min_tiles = pr.req_int(pp, "min_patches", 1)
        max_tiles = pr.req_int(pp, "max_patches", 12)
        thumbnail = True
    params = {
        "tile_size": tile,
        "patch_size": vit.patch,
        "downsample_ratio": ratio,
        "min_tiles": min_tiles,
        "max_tiles": max_tiles,
        "use_thumbnail": thumbnail,
    }
    return vision, VisualTokenRule(rule="internvl", params=params)


def _gemma3(cfg: Cfg, text_hidden: int, pp: Cfg, r: _Reader) -> tuple[VisionSpec, VisualTokenRule]:
    vc = r.obj(cfg, "vision_config")
    vit = _vit(vc, "siglip_vision_model", _Reader(r.file, "vision_config."))
    # Gemma3MultiModalProjector: 4x4 average pool, RMSNorm(d), one bias-free Linear(d -> text hidden).
    projector = ProjectorSpec(
        kind="linear", input_dim=vit.hidden, output_dim=text_hidden, params=vit.hidden + vit.hidden * text_hidden
    )
    vision = _vision_spec(_vit_name("siglip_vision_model", vit), vit, projector)
    pr = r.pre()
    params = {
        "image_size": pr.side(pp, "size", vit.image),
        "patch_size": vit.patch,
        "tokens_per_image": r.req_int(cfg, "mm_tokens_per_image", 256),
        # Processor defaults (Gemma3ProcessorKwargs) when preprocessor_config.json leaves them null.
        "do_pan_and_scan": pr.flag(pp, "do_pan_and_scan", False),
        "pan_and_scan_min_crop_size": pr.req_int(pp, "pan_and_scan_min_crop_size", 256),
        "pan_and_scan_max_num_crops": pr.req_int(pp, "pan_and_scan_max_num_crops", 4),
        "pan_and_scan_min_ratio_to_activate": pr.num(pp, "pan_and_scan_min_ratio_to_activate", 1.2),
    }
    return vision, VisualTokenRule(rule="gemma3", params=params)


def _phi3v(cfg: Cfg, text_hidden: int, pp: Cfg, r: _Reader) -> tuple[VisionSpec, VisualTokenRule]:
    ip = r.obj(cfg, "img_processor")
    ir = _Reader(r.file, "img_processor.")
    # The remote code builds CLIP ViT-L/14-336 (openai/clip-vit-large-patch14-336) whatever model_name says.
    # vLLM builds the layers up to img_processor.layer_idx (default -2): 23 of 24.
    layers = _layers_used(24, ip.get("layer_idx", -2))
    vit = _Vit(layers, ir.req_int(ip, "image_dim_out", 1024), 16, 4096, 14, 336)
    # HD transform merges 2x2 patch features: Linear(4d -> text) + GELU + Linear(text -> text), with biases,
    # plus the learnable global/sub-image separators (glb_GN, sub_GN: 4d each).
    d4, th = 4 * vit.hidden, text_hidden
    count = d4 * th + th + th * th + th + 2 * d4
    projector = ProjectorSpec(kind="mlp", input_dim=d4, hidden_dim=th, output_dim=th, params=count)
    vision = _vision_spec(_vit_name("clip_vision_model", vit), vit, projector)
    tokens = {"crop_size": vit.image, "num_crops": r.pre().req_int(pp, "num_crops", 4)}
    return vision, VisualTokenRule(rule="phi3v", params=tokens)


def _idefics3(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: _Reader) -> tuple[VisionSpec, VisualTokenRule]:
    vc = r.obj(cfg, "vision_config")
    vtype = f"{model_type}_vision"
    vit = _vit(vc, vtype, _Reader(r.file, "vision_config."))
    scale = r.req_int(cfg, "scale_factor", 2)
    # Connector: pixel shuffle by scale_factor, then one bias-free Linear(d * scale^2 -> text hidden).
    merged = vit.hidden * scale**2
    projector = ProjectorSpec(kind="linear", input_dim=merged, output_dim=text_hidden, params=merged * text_hidden)
    vision = _vision_spec(_vit_name(vtype, vit), vit, projector)
    pr = r.pre()
    tile = pr.side(pp, "max_image_size", vit.image)
    longest = pr.side(pp, "size", 4 * tile)
    params = {
        "tile_size": tile,
        "longest_edge": longest,
        "tokens_per_tile": (vit.image // vit.patch) ** 2 // scale**2,
        "patch_size": vit.patch,
    }
    return vision, VisualTokenRule(rule="idefics3", params=params)


def _minicpmv(cfg: Cfg, text_hidden: int, pp: Cfg, r: _Reader) -> tuple[VisionSpec, VisualTokenRule]:
    vc = r.obj(cfg, "vision_config")
    vit = _vit(vc, "siglip_vision_model", _Reader(r.file, "vision_config."))
    if r.flag(cfg, "drop_vision_last_layer", False) and vit.layers > 1:
        vit = _Vit(vit.layers - 1, vit.hidden, vit.heads, vit.intermediate, vit.patch, vit.image)
    queries = r.req_int(cfg, "query_num", 64)
    e = text_hidden
    # Perceiver resampler: queries, kv_proj(d -> e), MultiheadAttention(e), 3 LayerNorms, proj(e x e).
    params = queries * e + vit.hidden * e + (4 * e * e + 4 * e) + 6 * e + e * e
    projector = ProjectorSpec(kind="resampler", input_dim=vit.hidden, output_dim=e, params=params)
    vision = _vision_spec(_vit_name("siglip_vision_model", vit) + f" + resampler ({queries} queries)", vit, projector)
    slices = r.obj(cfg, "slice_config")
    sr = _Reader(r.file, "slice_config.")
    pr = r.pre()
    tokens = {
        "slice_size": pr.req_int(pp, "scale_resolution", sr.req_int(slices, "scale_resolution", 448)),
        "max_slice_nums": pr.req_int(pp, "max_slice_nums", sr.req_int(slices, "max_slice_nums", 9)),
        "query_num": queries,
        "patch_size": pr.req_int(pp, "patch_size", sr.req_int(slices, "patch_size", vit.patch)),
    }
    return vision, VisualTokenRule(rule="minicpmv", params=tokens)


def _llama4(cfg: Cfg, text_hidden: int, pp: Cfg, r: _Reader) -> tuple[VisionSpec, VisualTokenRule]:
    vc = r.obj(cfg, "vision_config")
    vr = _Reader(r.file, "vision_config.")
    vit = _vit(vc, "llama4_vision_model", vr)
    out = vr.req_int(vc, "vision_output_dim", 7680)
    proj_out = vr.req_int(vc, "projector_output_dim", 4096)
    shuffle_ratio = vr.num(vc, "pixel_shuffle_ratio", 0.5)
    shuffled = int(vit.hidden / shuffle_ratio**2)
    # Pixel-shuffle MLP (Linear(d/r^2 -> out) + Linear(out -> projector_output_dim), no bias), then the
    # multi-modal projector Linear(vision_output_dim -> text hidden), no bias.
    params = shuffled * out + out * proj_out + out * text_hidden
    projector = ProjectorSpec(kind="mlp", input_dim=shuffled, hidden_dim=out, output_dim=text_hidden, params=params)
    vision = _vision_spec(_vit_name("llama4_vision_model", vit), vit, projector)
    pr = r.pre()
    tokens = {
        "tile_size": pr.side(pp, "size", vit.image),
        "patch_size": vit.patch,
        "max_tiles": pr.req_int(pp, "max_patches", 16),
        "pixel_shuffle_ratio": shuffle_ratio,
    }
    return vision, VisualTokenRule(rule="llama4", params=tokens)


def _vision(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: _Reader) -> tuple[VisionSpec, VisualTokenRule]:
    if model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"):
        return _qwen_vl(cfg, "qwen3_vl" if model_type == "qwen3_vl_moe" else model_type, text_hidden, pp, r)
    if model_type in ("llava", "llava_next", "llava_onevision", "mistral3"):
        return _llava(cfg, model_type, text_hidden, pp, r)
    if model_type == "mllama":
        return _mllama(cfg, text_hidden, pp, r)
    if model_type in ("internvl", "internvl_chat"):
        return _internvl(cfg, model_type, text_hidden, pp, r)
    if model_type == "gemma3":
        return _gemma3(cfg, text_hidden, pp, r)
    if model_type == "phi3_v":
        return _phi3v(cfg, text_hidden, pp, r)
    if model_type in ("idefics3", "smolvlm"):
        return _idefics3(cfg, model_type, text_hidden, pp, r)
    if model_type == "minicpmv":
        return _minicpmv(cfg, text_hidden, pp, r)
    return _llama4(cfg, text_hidden, pp, r)


# --------------------------------------------------------------------------- quantization


@dataclass(frozen=True)
class QuantizationInfo:
    """What a checkpoint's ``quantization_config`` says."""

    method: str
    """quant_method, lower case (gptq, awq, compressed-tensors, fp8, ...)."""
    bits: int | None
    """Weight bits (None where the config does not say)."""
    group_size: int | None
    precision: Precision
    """The planner precision it maps to: int4 (W4A16), int8 (W8A8 / W8A16) or fp8."""


_UNSUPPORTED_QUANT = "supported: gptq/awq 4- or 8-bit, compressed-tensors int4/int8/fp8, fp8"


def _find_quantization(cfg: Cfg) -> tuple[Cfg | None, str]:
    for where, part in (("", cfg), ("text_config.", cfg.get("text_config")), ("llm_config.", cfg.get("llm_config"))):
        if not isinstance(part, dict):
            continue
        for key in ("quantization_config", "compression_config"):
            qc = part.get(key)
            if isinstance(qc, dict) and qc:
                return qc, f"{where}{key}"
    return None, ""


def _quantization(cfg: Cfg, file: Path) -> QuantizationInfo | None:
    qc, where = _find_quantization(cfg)
    if qc is None:
        return None
    r = _Reader(file, f"{where}.")
    method = str(qc.get("quant_method", "")).lower().replace("_", "-")
    if method in ("gptq", "awq", "gptq-marlin", "awq-marlin", "auto-round"):
        bits = r.opt_int(qc, "bits", None) or r.opt_int(qc, "w_bit", None)
        group = r.opt_int(qc, "group_size", None) or r.opt_int(qc, "q_group_size", None)
        if bits in (4, 8):
            return QuantizationInfo(method, bits, group, "int4" if bits == 4 else "int8")
        raise UnsupportedError(
            f"{file}: {where} {method} with {bits}-bit weights is not supported ({_UNSUPPORTED_QUANT})"
        )
    if method in ("fp8", "fbgemm-fp8"):
        return QuantizationInfo(method, 8, None, "fp8")
    if method == "compressed-tensors":
        return _compressed_tensors(qc, file, where)
    if method == "modelopt":
        algo = str(qc.get("quant_algo", "")).upper()
        if algo == "FP8":
            return QuantizationInfo(method, 8, None, "fp8")
        raise UnsupportedError(f"{file}: {where} modelopt quant_algo '{algo}' is not supported ({_UNSUPPORTED_QUANT})")
    raise UnsupportedError(f"{file}: {where} quant_method '{method or '?'}' is not supported ({_UNSUPPORTED_QUANT})")


def _compressed_tensors(qc: Cfg, file: Path, where: str) -> QuantizationInfo:
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise UnsupportedError(f"{file}: {where} compressed-tensors without config_groups is not supported")
    found: set[tuple[Precision, int, int | None]] = set()
    for name, group in groups.items():
        weights = group.get("weights") if isinstance(group, dict) else None
        if not isinstance(weights, dict):
            continue
        bits, kind = weights.get("num_bits"), str(weights.get("type", "int")).lower()
        group_size = weights.get("group_size") if isinstance(weights.get("group_size"), int) else None
        if kind == "int" and bits in (4, 8):
            found.add(("int4" if bits == 4 else "int8", bits, group_size))
        elif kind == "float" and bits == 8:
            found.add(("fp8", 8, group_size))
        else:
            raise UnsupportedError(
                f"{file}: {where} compressed-tensors group '{name}' with {bits}-bit {kind} weights "
                f"(format {qc.get('format')!r}) is not supported ({_UNSUPPORTED_QUANT})"
            )
    precisions = {p for p, _, _ in found}
    if len(precisions) != 1:
        raise UnsupportedError(
            f"{file}: {where} compressed-tensors groups mix precisions {sorted(precisions)}; one precision expected"
        )
    precision, bits, group_size = sorted(found, key=lambda f: (f[2] is None, f[2] or 0))[0]
    return QuantizationInfo("compressed-tensors", bits, group_size, precision)


def read_quantization(path: Path) -> QuantizationInfo | None:
    """The checkpoint's quantization (method, bits, group size, precision), or None when unquantized.

    Raises UnsupportedError for a quantization the planner cannot model (e.g. NVFP4, bitsandbytes)."""
    file = _config_file(Path(path))
    return _quantization(_read_json(file), file)


def detect_checkpoint_precision(path: Path) -> str | None:
    """'int4' / 'int8' / 'fp8' for a pre-quantized checkpoint, None for an unquantized one."""
    info = read_quantization(path)
    return None if info is None else info.precision


# --------------------------------------------------------------------------- entry point


def _model_name(cfg: Cfg, file: Path) -> str:
    """``_name_or_path`` when it reads as a hub id; a local training path falls back to the folder name."""
    name = cfg.get("_name_or_path")
    if isinstance(name, str) and name.strip() and not name.startswith(("/", ".", "~")) and "\\" not in name:
        return name.strip()
    return file.parent.resolve().name or str(file)


def load_model_from_path(path: Path) -> ModelSpec:
    """Build a ModelSpec from a config.json (or a folder holding one)."""
    path = Path(path)
    file = _config_file(path)
    cfg = _read_json(file)
    r = _Reader(file, pp_file=file.parent / "preprocessor_config.json")
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise CatalogError(
            f"{file}: config lacks required key(s) model_type; supported model_type values: {_SUPPORTED}"
        )
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CatalogError(f"{file}: unsupported model_type '{model_type}'; supported model_type values: {_SUPPORTED}")
    text = _text_part(cfg, model_type, r)
    _check_required(text, model_type, r)
    decoder = _decoder(text, cfg, r)
    vision = tokens = None
    if model_type in VLM_MODEL_TYPES:
        try:
            vision, tokens = _vision(cfg, model_type, decoder.hidden_size, _preprocessor(file), r)
        except ValueError as exc:
            raise CatalogError(f"{file}: inconsistent vision config ({_first_error(exc)})") from None
    quant = _quantization(cfg, file)
    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    name = _model_name(cfg, file)
    notes = f"model_type {model_type}; text config type {text.type}"
    if quant is not None:
        group = f", group size {quant.group_size}" if quant.group_size else ""
        notes += f"; pre-quantized: {quant.method} {quant.bits}-bit{group} -> {quant.precision}"
    spec = ModelSpec(
        name=name,
        kind="vlm" if vision is not None else "llm",
        hf_architecture=arch or _DEFAULT_ARCHITECTURE[model_type],
        vllm_supported=model_type != "mllama",
        trust_remote_code=model_type in _REMOTE_CODE_TYPES,
        decoder=decoder,
        vision=vision,
        visual_tokens=tokens,
        quantized_checkpoints={quant.precision: name} if quant is not None else {},
        sources=[Source(kind="config", title=f"local {path}", notes=notes)],
    )
    _check_sizes(file, spec.model_dump(include={"decoder", "vision", "visual_tokens"}))
    return spec
