"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL (dense and MoE): config.json reading and the visual-token rule.

Config: the text keys sit at the top level (Qwen2-VL, older Qwen2.5-VL saves) or in ``text_config``; the
vision tower is Qwen's own native-resolution ViT (``depth``, ``embed_dim``/``hidden_size``), Qwen2.5-VL's
with window attention, Qwen3-VL's with DeepStack mergers. The pixel budget comes from
preprocessor_config.json (``min_pixels``/``max_pixels`` or ``size``).

Tokens (rules ``qwen2_vl``, ``qwen3_vl``): transformers ``models/qwen2_vl/image_processing_qwen2_vl.py::
smart_resize`` (also used by Qwen3-VL images); vLLM ``model_executor/models/qwen2_vl.py``
``Qwen2VLProcessingInfo._get_vision_info``, ``get_image_size_with_most_features`` (factor pair of
``max_pixels // unit**2`` with aspect <= 200), ``qwen3_vl.py`` (inherits both). LLM tokens = (h'/f)(w'/f) + 2
(``<|vision_start|>``, ``<|vision_end|>``); encoder = (h'/p)(w'/p) (an image is a 2-frame temporal patch:
one patch).
"""

from __future__ import annotations

import math

from planner.catalog.families.family import Family, TextPart, VisionAndRule
from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.families.text import nested_text
from planner.catalog.families.tokens import ImageTokens, Params, TokenRule, size_edges
from planner.catalog.schema import ProjectorSpec, VisionSpec, VisualTokenRule, VisualTokenRuleName, WindowAttention
from planner.core.errors import CatalogError, RequestError

# --------------------------------------------------------------------------- config.json


def _text_part(cfg: Cfg, model_type: str, r: Reader) -> TextPart:
    if model_type in ("qwen3_vl", "qwen3_vl_moe"):
        return nested_text(cfg, f"{model_type}_text", r, force_type=True)
    if isinstance(cfg.get("text_config"), dict):
        return TextPart(cfg["text_config"], f"{model_type}_text", True, "text_config.")
    return TextPart(cfg, f"{model_type}_text", False, "")


def _pixels(pp: Cfg, default_min: int, default_max: int, r: Reader) -> tuple[int, int]:
    """Qwen-VL pixel budget: min_pixels/max_pixels win over size.shortest_edge/longest_edge (as in transformers)."""
    size = r.obj(pp, "size")
    lo = pp.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels") or default_min
    hi = pp.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels") or default_max
    for key, value in (("min_pixels", lo), ("max_pixels", hi)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CatalogError(f"{r.file}: preprocessor '{key}' must be a positive integer, got {value!r}")
    return lo, hi


def _qwen_vl(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: Reader) -> VisionAndRule:
    vr = r.at("vision_config.")
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


def _vision(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: Reader) -> VisionAndRule:
    return _qwen_vl(cfg, "qwen3_vl" if model_type == "qwen3_vl_moe" else model_type, text_hidden, pp, r)


# --------------------------------------------------------------------------- tokens


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers ``qwen2_vl.image_processing_qwen2_vl.smart_resize``, returns (h', w')."""
    if max(height, width) / min(height, width) > 200:
        raise RequestError(
            f"image {width}x{height}: aspect ratio {max(height, width) / min(height, width):.1f} exceeds the "
            "Qwen-VL processor's limit of 200"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _count(p: Params, width: int, height: int) -> ImageTokens:
    patch, merge = p["patch_size"], p["merge_size"]
    factor = patch * merge
    h, w = smart_resize(height, width, factor, p["min_pixels"], p["max_pixels"])
    grid_h, grid_w = h // patch, w // patch
    return ImageTokens.single(grid_h * grid_w // (merge * merge) + 2, grid_h * grid_w, w, h)


def _max_size(p: Params) -> tuple[int, int]:
    """vLLM ``Qwen2VLProcessingInfo.get_image_size_with_most_features``: (width, height)."""
    unit = p["patch_size"] * p["merge_size"]
    max_seq_len = p["max_pixels"] // (unit * unit)

    def closest_factor_pair(n: int) -> tuple[int, int]:
        for d in range(math.isqrt(n), 0, -1):
            if n % d == 0:
                return d, n // d
        return 1, n

    height_factor, width_factor = 1, max_seq_len
    for seq_len in range(max_seq_len, 0, -1):
        height_factor, width_factor = closest_factor_pair(seq_len)
        if width_factor / height_factor <= 200:
            break
    return unit * max(width_factor, 1), unit * max(height_factor, 1)


_QWEN_ALIASES = {"size": size_edges({"shortest_edge": "min_pixels", "longest_edge": "max_pixels"})}
# transformers Qwen2VLImageProcessor class defaults (the HF repos ship max_pixels 12845056).
_QWEN2_RULE = TokenRule("qwen2_vl", {"patch_size": 14, "merge_size": 2, "min_pixels": 56 * 56,
                                     "max_pixels": 28 * 28 * 1280}, _count, _max_size, _QWEN_ALIASES)
# Qwen3-VL preprocessor_config.json: size.shortest_edge 65536, longest_edge 16777216.
_QWEN3_RULE = TokenRule("qwen3_vl", {"patch_size": 16, "merge_size": 2, "min_pixels": 65536,
                                     "max_pixels": 16777216}, _count, _max_size, _QWEN_ALIASES)

FAMILY = Family("Qwen-VL", {
    "qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
}, _text_part, _vision, rules=(_QWEN2_RULE, _QWEN3_RULE))  # fmt: skip
