"""LLaVA-1.5, LLaVA-NeXT and LLaVA-OneVision: config.json reading and their visual-token rules.

Config: a composite of a Llama/Qwen2 ``text_config``, a CLIP or SigLIP ``vision_config`` (a Pixtral-ViT
makes Pixtral-12B, handled by ``pixtral.pixtral_tower``) and LlavaMultiModalProjector. NeXT and OneVision
tile the image on a grid of ``image_grid_pinpoints``; OneVision caps the features (``anyres_max_N``).

Tokens:
llava
    vLLM ``llava.py`` + ``clip.py``: CLIP (image/patch)^2 + 1 CLS; "default" feature select drops
    CLS -> 576 LLM tokens, no wrapper tokens. Image resized/cropped to image_size^2.
llava_next
    vLLM ``llava_next.py`` ``get_num_image_tokens`` / ``_get_num_unpadded_features`` /
    ``get_image_size_with_most_features``; pinpoint choice: transformers
    ``image_processing_utils.select_best_resolution`` via ``modeling_llava_next.get_anyres_image_grid_shape``.
    LLM tokens = unpadded + newline + base (576); no extra wrapper. Encoder: grid tiles + 1 base
    image, 577 each (CLIP + CLS).
llava_onevision
    vLLM ``llava_onevision.py`` (``_get_num_unpadded_features`` with the anyres_max_N downscale,
    hard-coded max-feature image 1153x944); transformers ``image_processing_llava_onevision.py``
    (every grid tile plus the base image goes through SigLIP: 729 patches each, no CLS).
"""

from __future__ import annotations

import math
import re

from planner.catalog.families.family import Family, TextPart, VisionAndRule
from planner.catalog.families.pixtral import pixtral_tower
from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.families.text import nested_text
from planner.catalog.families.tokens import ImageTokens, Params, TokenRule
from planner.catalog.families.vit import Vit, composite_vit, vision_spec, vit_name
from planner.catalog.schema import ProjectorSpec, VisualTokenRule

_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
"""LlavaNextConfig's default ``image_grid_pinpoints`` as [height, width]."""
_ONEVISION_PINPOINTS = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
"""LlavaOnevisionConfig's default ``image_grid_pinpoints``: every grid up to 6 x 6 tiles of 384 px."""

# --------------------------------------------------------------------------- config.json

_VISION_WHEN_ABSENT: dict[str, tuple[str, Vit]] = {
    # The composite config's own default vision_config (used only when the file has no vision_config).
    "llava": ("clip_vision_model", Vit(24, 1024, 16, 4096, 14, 336)),
    "llava_next": ("clip_vision_model", Vit(24, 1024, 16, 4096, 14, 336)),
    "llava_onevision": ("siglip_vision_model", Vit(26, 1152, 16, 4304, 14, 384)),
}


def _text_part(cfg: Cfg, model_type: str, r: Reader) -> TextPart:
    return nested_text(cfg, "qwen2" if model_type == "llava_onevision" else "llama", r)


def _projector(cfg: Cfg, vit: Vit, text_hidden: int) -> ProjectorSpec:
    """LlavaMultiModalProjector: Linear(vision x feature layers -> text) + GELU + Linear(text -> text)."""
    layers = cfg.get("vision_feature_layer", -2)
    n_layers = len(layers) if isinstance(layers, list) else 1
    return ProjectorSpec(kind="mlp", input_dim=vit.hidden * n_layers, hidden_dim=text_hidden, output_dim=text_hidden)


def _anyres_max(value: object) -> int:
    """N of OneVision's ``vision_aspect_ratio: anyres_max_N`` (9 when it says otherwise)."""
    match = re.fullmatch(r"anyres_max_(\d+)", str(value or ""))
    return int(match.group(1)) if match else 9


def _vision(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: Reader) -> VisionAndRule:
    default_layer = -1 if model_type == "llava_onevision" else -2
    vit, vtype = composite_vit(cfg, model_type, _VISION_WHEN_ABSENT[model_type], default_layer, r)
    projector = _projector(cfg, vit, text_hidden)
    if vtype == "pixtral":
        return pixtral_tower(vit, projector, 1, pp, r)
    vision = vision_spec(vit_name(vtype, vit), vit, projector)
    if model_type == "llava":
        return vision, VisualTokenRule(rule="llava", params={"image_size": vit.image, "patch_size": vit.patch})
    pinpoints = cfg.get("image_grid_pinpoints") or pp.get("image_grid_pinpoints")
    if not pinpoints:
        pinpoints = [list(p) for p in (_NEXT_PINPOINTS if model_type == "llava_next" else _ONEVISION_PINPOINTS)]
    params: Params = {"image_size": vit.image, "patch_size": vit.patch, "grid_pinpoints": pinpoints}
    if model_type == "llava_next":
        return vision, VisualTokenRule(rule="llava_next", params=params)
    params["max_num_patches"] = _anyres_max(cfg.get("vision_aspect_ratio", "anyres_max_9"))
    return vision, VisualTokenRule(rule="llava_onevision", params=params)


# --------------------------------------------------------------------------- tokens


def _llava(p: Params, width: int, height: int) -> ImageTokens:
    grid = p["image_size"] // p["patch_size"]
    return ImageTokens.single(grid * grid, grid * grid + 1, p["image_size"], p["image_size"])


def select_best_resolution(height: int, width: int, pinpoints: list[list[int]]) -> tuple[int, int]:
    """transformers ``image_processing_utils.select_best_resolution``; pinpoints and result are (h, w)."""
    best_fit = (pinpoints[0][0], pinpoints[0][1])
    max_effective = 0
    min_wasted = float("inf")
    for ph, pw in pinpoints:
        scale = min(pw / width, ph / height)
        down_w, down_h = int(width * scale), int(height * scale)
        effective = min(down_w * down_h, width * height)
        wasted = pw * ph - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective = effective
            min_wasted = wasted
            best_fit = (ph, pw)
    return best_fit


def _unpadded_features(
    height: int, width: int, npatches: int, tiles_h: int, tiles_w: int, max_num_patches: int | None
) -> tuple[int, int]:
    """vLLM ``LlavaNextProcessingInfo._get_num_unpadded_features`` (llava_onevision adds the downscale)."""
    current_height = npatches * tiles_h
    current_width = npatches * tiles_w
    if width / height > current_width / current_height:
        new_height = int(round(height * (current_width / width), 7))
        padding = (current_height - new_height) // 2
        current_height -= 2 * padding
    else:
        new_width = int(round(width * (current_height / height), 7))
        padding = (current_width - new_width) // 2
        current_width -= 2 * padding
    unpadded = current_height * current_width
    newline = current_height
    if max_num_patches is not None:
        ratio = math.sqrt(current_height * current_width / (max_num_patches * npatches**2))
        if ratio > 1.1:
            unpadded = int(current_height // ratio) * int(current_width // ratio)
            newline = int(current_height // ratio)
    return unpadded, newline


def _anyres(p: Params, width: int, height: int, onevision: bool) -> ImageTokens:
    tile = p["image_size"]
    npatches = tile // p["patch_size"]
    best_h, best_w = select_best_resolution(height, width, p["grid_pinpoints"])
    tiles_h, tiles_w = best_h // tile, best_w // tile
    unpadded, newline = _unpadded_features(
        height, width, npatches, tiles_h, tiles_w, p["max_num_patches"] if onevision else None
    )
    base = npatches * npatches  # CLIP: CLS dropped ("default"); SigLIP: no CLS ("full")
    per_tile = npatches * npatches + (0 if onevision else 1)
    num_tiles = tiles_h * tiles_w + 1
    return ImageTokens.tiled(unpadded + newline + base, num_tiles, per_tile, best_w, best_h)


def _llava_next_max_size(p: Params) -> tuple[int, int]:
    """vLLM ``LlavaNextProcessingInfo.get_image_size_with_most_features``: first pinpoint with most tokens."""
    best, best_size = 0, (p["grid_pinpoints"][0][1], p["grid_pinpoints"][0][0])
    for ph, pw in p["grid_pinpoints"]:
        n = _anyres(p, pw, ph, onevision=False).llm_tokens
        if n > best:
            best, best_size = n, (pw, ph)
    return best_size


_LLAVA_RULE = TokenRule("llava", {"image_size": 336, "patch_size": 14}, _llava,
                        lambda p: (p["image_size"], p["image_size"]))
_NEXT_RULE = TokenRule("llava_next", {"image_size": 336, "patch_size": 14, "grid_pinpoints": _NEXT_PINPOINTS},
                       lambda p, w, h: _anyres(p, w, h, onevision=False), _llava_next_max_size)
_ONEVISION_RULE = TokenRule(
    "llava_onevision",
    {"image_size": 384, "patch_size": 14, "grid_pinpoints": _ONEVISION_PINPOINTS, "max_num_patches": 9},
    lambda p, w, h: _anyres(p, w, h, onevision=True),
    lambda p: (1153, 944),  # vLLM hard-codes ImageSize(width=1153, height=944)
)

FAMILY = Family("LLaVA", {
    "llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
}, _text_part, _vision, rules=(_LLAVA_RULE, _NEXT_RULE, _ONEVISION_RULE))  # fmt: skip
