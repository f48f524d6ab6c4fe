"""The language model of every family: a text config (flat, or nested in a VLM's config) -> DecoderSpec.

Keys the file leaves out take the transformers config class default of that text config type, so the
spec matches what vLLM builds from the same file (e.g. Gemma 3's ``head_dim`` 256, LLaVA-1.5's
``text_config`` that names only the vocabulary). Class defaults were read from the transformers 5.24
config classes (``models/*/configuration_*.py``) and, for InternLM2 (remote code), from the config the
InternVL chat repos ship. Sliding-window, chunked-attention and mixture-of-experts layouts are read per
text type here too, since several VLM families share each text type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from planner.catalog.families.family import Family, TextPart
from planner.catalog.families.reader import Cfg, Reader, first_error
from planner.catalog.schema import DecoderSpec, MoeSpec
from planner.core.errors import CatalogError

_REQUIRED_TEXT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
"""Keys a flat (top-level) text config must give: a file without them is not a real checkpoint config."""



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


_td = _TextDefaults


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


def plain_text(cfg: Cfg, model_type: str, r: Reader) -> TextPart:
    """A text-only LLM: its keys are at the top level, and its model_type is its text config type."""
    return TextPart(cfg, model_type, False, "")


def nested_text(cfg: Cfg, default_type: str, r: Reader, force_type: bool = False,
                when_absent: Cfg | None = None) -> TextPart:
    """A composite config's ``text_config``, typed by its own ``model_type`` or ``default_type``.

    ``force_type``: the nested type names vary across saves ("qwen3_vl", "mllama_text_model", ...), so the
    family's own is used. ``when_absent``: the composite class's default text_config when the file has none."""
    tc = r.obj(cfg, "text_config")
    if not tc and when_absent is not None:
        tc = dict(when_absent)
    ttype = default_type if force_type else (tc.get("model_type") or default_type)
    return TextPart(tc, ttype, True, "text_config.")


def check_required(text: TextPart, model_type: str, r: Reader) -> None:
    """A flat text config without its core sizes is refused (composite sub-configs have class defaults)."""
    if text.nested:
        return
    missing = [f"{text.where}{k}" for k in _REQUIRED_TEXT_KEYS if text.cfg.get(k) is None]
    if missing:
        raise r.refuse(f"model_type '{model_type}' config lacks required key(s) {', '.join(missing)}")


def decoder(text: TextPart, root: Cfg, r: Reader) -> DecoderSpec:
    """The language model's DecoderSpec: the file's keys, the text type's class defaults for the rest.

    ``root`` is the whole config: a nested text config may leave ``tie_word_embeddings`` to its parent."""
    d = _TEXT_DEFAULTS.get(text.type)
    if d is None:
        raise r.refuse(
            f"unsupported language-model type '{text.type}' in {text.where or 'config'} "
            f"(supported: {', '.join(sorted(_TEXT_DEFAULTS))})"
        )
    tr = r.at(text.where)
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
        raise CatalogError(f"{r.file}: inconsistent text config ({first_error(exc)})") from None


def _windowed(
    size: int | None, layer_types: list[Any] | None, kind: str, count: Callable[[], int]
) -> tuple[int | None, int]:
    """(window or chunk size, layers using it): none without a size; counted from ``layer_types`` where the
    config lists every layer's kind, else by the type's own layout rule ``count`` (read only then)."""
    if size is None:
        return None, 0
    if layer_types is not None:
        return size, sum(1 for t in layer_types if t == kind)
    return size, count()


def _rope_layers(tc: Cfg, layers: int, r: Reader) -> int:
    """Llama 4 layers with RoPE, which use chunked attention (every ``no_rope_layer_interval``-th is NoPE)."""
    interval = r.req_int(tc, "no_rope_layer_interval", 4)
    no_rope = r.int_list(tc, "no_rope_layers", None)
    if not no_rope:
        no_rope = [int((i + 1) % interval != 0) for i in range(layers)]
    # 1 = a RoPE layer, which uses chunked attention; 0 = a NoPE layer with global attention.
    return sum(1 for v in no_rope[:layers] if v)


def _sliding_window(tc: Cfg, ttype: str, layers: int, max_pos: int, r: Reader) -> tuple[int | None, int]:
    """(window or chunk size, number of layers that use it)."""
    layer_types = tc.get("layer_types")
    if not isinstance(layer_types, list) or len(layer_types) != layers:
        layer_types = None
    if ttype in ("gemma2", "gemma3_text"):
        def every_but_nth() -> int:
            pattern = 2 if ttype == "gemma2" else r.req_int(tc, "sliding_window_pattern", 6)
            return sum(1 for i in range(layers) if (i + 1) % pattern)

        return _windowed(r.opt_int(tc, "sliding_window", 4096), layer_types, "sliding_attention", every_but_nth)
    if ttype == "llama4_text":
        chunk = r.opt_int(tc, "attention_chunk_size", 8192)
        return _windowed(chunk, layer_types, "chunked_attention", lambda: _rope_layers(tc, layers, r))
    if ttype in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "qwen2_vl_text", "qwen2_5_vl_text"):
        if not r.flag(tc, "use_sliding_window", False):
            return None, 0
        return _windowed(r.opt_int(tc, "sliding_window", 4096), layer_types, "sliding_attention",
                         lambda: max(0, layers - r.req_int(tc, "max_window_layers", 28)))
    if ttype in ("mistral", "mixtral", "phi3", "ministral3"):
        window = r.opt_int(tc, "sliding_window", 4096 if ttype == "mistral" else None)
        if window is not None and window < max_pos:
            return window, layers
    return None, 0


def _moe(tc: Cfg, ttype: str, layers: int, r: Reader) -> MoeSpec | None:
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


TEXT = Family(
    "text LLM",
    {
        "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM",
        "qwen2": "Qwen2ForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3": "Qwen3ForCausalLM",
        "qwen3_moe": "Qwen3MoeForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
        "gemma3_text": "Gemma3ForCausalLM", "phi3": "Phi3ForCausalLM",
    },
    plain_text,
)  # fmt: skip
