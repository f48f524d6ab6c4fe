"""How many tokens one image costs, per VLM family, as vLLM 0.33 and the HF processors count them.

``image_tokens(rule, W, H, options)`` returns an :class:`ImageTokens`: the tokens the image adds to
the LLM's input sequence (placeholder features *and* the per-image wrapper/special tokens), the
tokens the vision encoder's transformer blocks process (summed over tiles, counted before any
merging / pixel-shuffle / pooling, CLS included where the ViT has one), the number of encoder items
(tiles, crops, thumbnail), the cross-attention states (Mllama) and the size after the processor's
resize. ``max_image_tokens(rule, options)`` evaluates the same count at the image size vLLM 0.33
profiles memory with (``get_image_size_with_most_features`` / the dummy-input builder).

``options`` are the processor kwargs a user passes with ``--mm-processor-kwargs``; they override
``rule.params``, which override the defaults below. Each rule accepts its own param keys plus the
vLLM/HF kwarg names listed as aliases. Pure functions: no I/O.

Sources (read in the vllm==0.33.0 wheel, transformers==5.20.0 wheel — vLLM 0.33 pins
transformers>=5.16.1,<5.21 — mistral_common 1.x, and the MiniCPM-V / Phi-3.5-vision remote code):

qwen2_vl, qwen3_vl
    transformers ``models/qwen2_vl/image_processing_qwen2_vl.py::smart_resize`` (also used by Qwen3-VL
    images); vLLM ``model_executor/models/qwen2_vl.py`` ``Qwen2VLProcessingInfo._get_vision_info``,
    ``get_image_size_with_most_features`` (factor pair of ``max_pixels // unit**2`` with aspect <= 200),
    ``qwen3_vl.py`` (inherits both). LLM tokens = (h'/f)(w'/f) + 2 (``<|vision_start|>``,
    ``<|vision_end|>``); encoder = (h'/p)(w'/p) (an image is a 2-frame temporal patch: one patch).
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
mllama
    transformers ``models/mllama/image_processing_mllama.py`` ``get_optimal_tiled_canvas``,
    ``get_image_size_fit_to_canvas``; ``processing_mllama.py`` (one ``<|image|>`` token). vLLM 0.33 no
    longer ships Mllama. Per tile (560/14)^2 + 1 = 1601 states. NOTE: HF pads every image to
    ``max_image_tiles`` tiles and masks the padding; we count the real tiles (as the brief asks).
pixtral
    mistral_common ``tokens/tokenizers/image.py::ImageEncoder._image_to_num_tokens`` / ``__call__``
    (what vLLM ``pixtral.py`` and Mistral-format ``mistral3`` use: Python ``round`` when downscaling),
    and transformers ``pixtral/image_processing_pixtral.py`` (``floor``; vLLM ``PixtralHFEncoderInfo``)
    selectable with ``resize_rounding``. Tokens = rows*cols ``[IMG]`` + one ``[IMG_BREAK]`` per row
    (the last one is ``[IMG_END]``). vLLM profiles a ``max_image_size`` square.
internvl
    vLLM ``transformers_utils/processors/internvl.py`` (``get_internvl_target_ratios``,
    ``find_closest_aspect_ratio``, ``calculate_internvl_targets``, ``get_image_repl``) and
    ``model_executor/models/internvl.py`` (``get_image_size_with_most_features``). LLM tokens =
    tiles*256 + ``<img>`` + ``</img>``; encoder = tiles * (32^2 + 1 CLS).
gemma3
    vLLM ``gemma3_mm.py`` (``get_num_crops``, ``get_image_repl``, ``get_image_size_with_most_features``)
    and transformers ``gemma3/processing_gemma3.py`` (``full_image_sequence`` =
    ``\\n\\n<start_of_image>`` + 256 soft tokens + ``<end_of_image>\\n\\n``: 260 tokens per image,
    counting ``\\n\\n`` as one Gemma token). Encoder: SigLIP 896/14 = 64^2 = 4096 patches per crop.
phi3v
    Phi-3.5-vision remote code ``image_processing_phi3_v.py`` (``calc_hd_transform_size``,
    ``calc_num_image_tokens_from_image_size``) as called by vLLM ``phi3v.py``; the formula already
    contains the separator and newline tokens, no extra wrapper. Encoder: the processor pads every image
    to num_crops + 1 crops and vLLM runs CLIP (577 tokens) on all of them, so ``num_tiles`` is
    ``num_crops + 1`` whatever the image. vLLM profiles an 8000 (h) x 50 (w) image.
idefics3
    transformers ``idefics3/image_processing_idefics3.py::get_number_of_image_patches`` and vLLM
    ``idefics3.py::get_image_repl`` (SmolVLM: ``smolvlm.py``, same counts). vLLM profiles a
    ``max_image_size`` square (which the processor upscales to the full grid).
minicpmv
    MiniCPM-V 2.6 remote code ``image_processing_minicpmv.py`` (``get_sliced_grid``,
    ``find_best_resize``, ``get_refine_size``, ``get_slice_image_placeholder``) as called by vLLM
    ``minicpmv.py`` (``get_num_image_tokens`` = (slices + 1) * 64, max image 448 x 448*max_slice_nums).
llama4
    transformers ``llama4/image_processing_llama4.py`` (``find_supported_resolutions``,
    ``get_best_fit`` — torch float32 scale arithmetic, reproduced exactly) and
    ``processing_llama4.py::_prompt_split_image``; vLLM ``mllama4.py`` (``get_patch_per_chunk``,
    max image ``max_patches*336`` (h) x 336). Encoder: 577 per tile (the ViT appends a class token).

Known approximations (tokenizer-dependent text, not verifiable without the tokenizers):
gemma3 with pan-and-scan adds the sentence "Here is the original image ... crops to help you see
better ..." — counted as 15 word tokens + one whitespace token per image sequence; idefics3 counts the
trailing ``"\\n\\n"`` before the global image as one token (a single BPE token in Llama 3) and each
``<row_i_col_j>`` as one added token; minicpmv counts ``<image_id>0</image_id>`` as 3 tokens (image
index 0).
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from planner.catalog.schema import VisualTokenRule
from planner.core.errors import CatalogError, RequestError

__all__ = ["ImageTokens", "image_tokens", "max_image_tokens", "RULE_DEFAULTS"]


@dataclass(frozen=True)
class ImageTokens:
    """What one image costs.

    llm_tokens: tokens this image adds to the LLM's input sequence, wrapper/special tokens included
        (which ones: see the module docstring, per rule).
    encoder_patches: tokens the ViT's transformer blocks process, summed over all tiles/crops, before
        merging / pixel-shuffle / pooling; a CLS token is counted where the ViT has one.
    num_tiles: items of the encoder's forward pass (tiles/crops incl. thumbnail/global image); 1 for
        native-resolution rules.
    cross_attention_tokens: vision states the cross-attention layers attend to (mllama); 0 otherwise.
    resized_width, resized_height: image size after the processor's resize (tiled rules: the tile grid
        in pixels).
    encoder_sequences: attention sequences of the ViT's forward pass for this image: every tile/crop
        (thumbnail/global image included) is encoded as its own image, attending only within itself
        (InternVL, LLaVA-NeXT/OneVision, Idefics3/SmolVLM, Phi-3.5-vision, MiniCPM-V, Gemma 3 pan&scan,
        Llama 4), so ``encoder_patches / encoder_sequences`` patches per sequence; 1 for native-resolution
        rules and for Mllama, whose ViT attends across all tiles of an image in one sequence.
    """

    llm_tokens: int
    encoder_patches: int
    num_tiles: int
    cross_attention_tokens: int
    resized_width: int
    resized_height: int
    encoder_sequences: int = 1


# --------------------------------------------------------------------------- parameters

RULE_DEFAULTS: dict[str, dict[str, Any]] = {
    # transformers Qwen2VLImageProcessor class defaults (the HF repos ship max_pixels 12845056).
    "qwen2_vl": {"patch_size": 14, "merge_size": 2, "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280},
    # Qwen3-VL preprocessor_config.json: size.shortest_edge 65536, longest_edge 16777216.
    "qwen3_vl": {"patch_size": 16, "merge_size": 2, "min_pixels": 65536, "max_pixels": 16777216},
    "llava": {"image_size": 336, "patch_size": 14},
    "llava_next": {
        "image_size": 336,
        "patch_size": 14,
        "grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    },
    "llava_onevision": {
        "image_size": 384,
        "patch_size": 14,
        "grid_pinpoints": [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)],
        "max_num_patches": 9,
    },
    "mllama": {"tile_size": 560, "patch_size": 14, "max_tiles": 4},
    "pixtral": {"patch_size": 16, "merge_size": 1, "max_image_size": 1024, "resize_rounding": "round"},
    "internvl": {
        "tile_size": 448,
        "patch_size": 14,
        "downsample_ratio": 0.5,
        "min_tiles": 1,
        "max_tiles": 12,
        "use_thumbnail": True,
        "dynamic_image_size": True,
    },
    "gemma3": {
        "image_size": 896,
        "patch_size": 14,
        "tokens_per_image": 256,
        "do_pan_and_scan": False,
        "pan_and_scan_min_crop_size": 256,
        "pan_and_scan_max_num_crops": 4,
        "pan_and_scan_min_ratio_to_activate": 1.2,
    },
    "phi3v": {"crop_size": 336, "num_crops": 4},
    "idefics3": {
        "tile_size": 364,
        "longest_edge": 1456,
        "tokens_per_tile": 169,
        "patch_size": 14,
        "do_image_splitting": True,
    },
    "minicpmv": {
        "slice_size": 448,
        "max_slice_nums": 9,
        "query_num": 64,
        "patch_size": 14,
        "use_image_id": True,
        "slice_mode": True,
    },
    "llama4": {
        "tile_size": 336,
        "patch_size": 14,
        "max_tiles": 16,
        "pixel_shuffle_ratio": 0.5,
        "resize_to_max_canvas": False,
    },
}
"""Defaults per rule; a catalog entry's ``params`` and the user's options override them."""

_ENUMS: dict[str, tuple[str, ...]] = {"resize_rounding": ("round", "floor")}


def _size_edges(mapping: dict[str, str]) -> Callable[[Any], dict[str, Any]]:
    """Alias for an HF ``size``-style dict, e.g. ``{"longest_edge": 1003520}`` -> ``max_pixels``."""

    def convert(value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise RequestError(
                f"processor option size={value!r}: expected a mapping like {{'longest_edge': N}}"
            )
        out: dict[str, Any] = {}
        for edge, v in value.items():
            if edge not in mapping:
                raise RequestError(
                    f"processor option size key {edge!r} is not supported; expected one of {sorted(mapping)}"
                )
            out[mapping[edge]] = v
        return out

    return convert


def _rename(key: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {key: value}


_ALIASES: dict[str, dict[str, Callable[[Any], dict[str, Any]]]] = {
    "qwen2_vl": {"size": _size_edges({"shortest_edge": "min_pixels", "longest_edge": "max_pixels"})},
    "qwen3_vl": {"size": _size_edges({"shortest_edge": "min_pixels", "longest_edge": "max_pixels"})},
    "mllama": {"max_image_tiles": _rename("max_tiles")},
    "pixtral": {"size": _size_edges({"longest_edge": "max_image_size"})},
    "internvl": {"min_dynamic_patch": _rename("min_tiles"), "max_dynamic_patch": _rename("max_tiles")},
    "idefics3": {
        "size": _size_edges({"longest_edge": "longest_edge"}),
        "max_image_size": _size_edges({"longest_edge": "tile_size"}),
    },
    "llama4": {"max_patches": _rename("max_tiles")},
}


def _check_value(rule_name: str, key: str, value: Any, default: Any, error: type[Exception]) -> Any:
    """Validate one parameter against the type of its default; return it."""
    where = f"{rule_name} option {key}={value!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise error(f"{where}: expected true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise error(f"{where}: expected a positive integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise error(f"{where}: expected a positive number")
        value = float(value)
    elif isinstance(default, str):
        if value not in _ENUMS[key]:
            raise error(f"{where}: expected one of {list(_ENUMS[key])}")
    elif isinstance(default, list):
        ok = isinstance(value, (list, tuple)) and len(value) > 0
        ok = ok and all(
            isinstance(p, (list, tuple))
            and len(p) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in p)
            for p in value
        )
        if not ok:
            raise error(f"{where}: expected a non-empty list of [height, width] pairs of positive integers")
        value = [[int(p[0]), int(p[1])] for p in value]
    return value


def _resolve(rule: VisualTokenRule, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults <- rule.params <- options (aliases mapped to our key names), validated."""
    name = rule.rule
    defaults = RULE_DEFAULTS.get(name)
    if defaults is None:
        raise CatalogError(f"visual token rule {name!r} is unknown; expected one of {sorted(RULE_DEFAULTS)}")
    params = dict(defaults)
    for key, value in rule.params.items():
        if key not in defaults:
            raise CatalogError(f"{name} rule param {key!r} is unknown; expected one of {sorted(defaults)}")
        params[key] = _check_value(name, key, value, defaults[key], CatalogError)
    if options:
        aliases = _ALIASES.get(name, {})
        for key, value in options.items():
            if key in defaults:
                updates = {key: value}
            elif key in aliases:
                updates = aliases[key](value)
            else:
                known = sorted(set(defaults) | set(aliases))
                raise RequestError(f"{name} processor option {key!r} is unknown; expected one of {known}")
            for k, v in updates.items():
                params[k] = _check_value(name, k, v, defaults[k], RequestError)
    return params


def _check_size(width: Any, height: Any) -> None:
    for label, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise RequestError(f"image {label}={v!r}: expected a positive integer number of pixels")


# --------------------------------------------------------------------------- qwen2_vl / qwen3_vl


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


def _qwen(p: dict[str, Any], width: int, height: int) -> ImageTokens:
    patch, merge = p["patch_size"], p["merge_size"]
    factor = patch * merge
    h, w = smart_resize(height, width, factor, p["min_pixels"], p["max_pixels"])
    grid_h, grid_w = h // patch, w // patch
    return ImageTokens(
        llm_tokens=grid_h * grid_w // (merge * merge) + 2,
        encoder_patches=grid_h * grid_w,
        num_tiles=1,
        cross_attention_tokens=0,
        resized_width=w,
        resized_height=h,
    )


def _qwen_max_size(p: dict[str, Any]) -> tuple[int, int]:
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


# --------------------------------------------------------------------------- llava family


def _llava(p: dict[str, Any], width: int, height: int) -> ImageTokens:
    grid = p["image_size"] // p["patch_size"]
    return ImageTokens(
        llm_tokens=grid * grid,
        encoder_patches=grid * grid + 1,
        num_tiles=1,
        cross_attention_tokens=0,
        resized_width=p["image_size"],
        resized_height=p["image_size"],
    )


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


def _anyres(p: dict[str, Any], width: int, height: int, onevision: bool) -> ImageTokens:
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
    return ImageTokens(
        llm_tokens=unpadded + newline + base,
        encoder_patches=num_tiles * per_tile,
        num_tiles=num_tiles,
        cross_attention_tokens=0,
        resized_width=best_w,
        resized_height=best_h,
        encoder_sequences=num_tiles,
    )


def _llava_next_max_size(p: dict[str, Any]) -> tuple[int, int]:
    """vLLM ``LlavaNextProcessingInfo.get_image_size_with_most_features``: first pinpoint with most tokens."""
    best, best_size = 0, (p["grid_pinpoints"][0][1], p["grid_pinpoints"][0][0])
    for ph, pw in p["grid_pinpoints"]:
        n = _anyres(p, pw, ph, onevision=False).llm_tokens
        if n > best:
            best, best_size = n, (pw, ph)
    return best_size


# --------------------------------------------------------------------------- mllama


def optimal_tiled_canvas(height: int, width: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """transformers ``mllama.image_processing_mllama.get_optimal_tiled_canvas``: (canvas_h, canvas_w)."""
    arrangements = [
        (a, b) for a in range(1, max_tiles + 1) for b in range(1, max_tiles + 1) if a * b <= max_tiles
    ]
    canvases = [(a * tile, b * tile) for a, b in arrangements]  # read as (height, width), as HF does
    scales = []
    for ch, cw in canvases:
        scale_h, scale_w = ch / height, cw / width
        scales.append(scale_h if scale_w > scale_h else scale_w)
    up = [s for s in scales if s >= 1]
    selected = min(up) if up else max(s for s in scales if s < 1)
    chosen = [c for c, s in zip(canvases, scales) if s == selected]
    return min(chosen, key=lambda c: c[0] * c[1])  # argmin: first of equal areas


def _mllama(p: dict[str, Any], width: int, height: int) -> ImageTokens:
    tile = p["tile_size"]
    canvas_h, canvas_w = optimal_tiled_canvas(height, width, p["max_tiles"], tile)
    tiles = (canvas_h // tile) * (canvas_w // tile)
    per_tile = (tile // p["patch_size"]) ** 2 + 1
    return ImageTokens(
        llm_tokens=1,
        encoder_patches=tiles * per_tile,
        num_tiles=tiles,
        cross_attention_tokens=tiles * per_tile,
        resized_width=canvas_w,
        resized_height=canvas_h,
    )


# --------------------------------------------------------------------------- pixtral / mistral3


def _pixtral(p: dict[str, Any], width: int, height: int) -> ImageTokens:
    merge = p["merge_size"]
    unit = p["patch_size"] * merge
    limit = p["max_image_size"]
    w: float = width
    h: float = height
    ratio = max(height / limit, width / limit)
    if ratio > 1:
        if p["resize_rounding"] == "round":  # mistral_common ImageEncoder._image_to_num_tokens
            w, h = max(round(width / ratio), 1), max(round(height / ratio), 1)
        else:  # transformers pixtral get_resize_output_image_size / vLLM PixtralHFEncoderInfo
            w, h = math.floor(width / ratio), math.floor(height / ratio)
    cols = (int(w) - 1) // unit + 1
    rows = (int(h) - 1) // unit + 1
    return ImageTokens(
        llm_tokens=rows * cols + rows,
        encoder_patches=(rows * merge) * (cols * merge),
        num_tiles=1,
        cross_attention_tokens=0,
        resized_width=cols * unit,
        resized_height=rows * unit,
    )


# --------------------------------------------------------------------------- internvl


def _internvl_target_ratios(min_num: int, max_num: int) -> list[tuple[int, int]]:
    """vLLM ``get_internvl_target_ratios`` (same set construction, so the same tie order)."""
    target_ratios = {
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    }
    return sorted(target_ratios, key=lambda x: x[0] * x[1])


def _internvl_closest_ratio(
    width: int, height: int, ratios: list[tuple[int, int]], tile: int
) -> tuple[int, int]:
    """vLLM ``find_closest_aspect_ratio``: (tiles_w, tiles_h)."""
    aspect_ratio = width / height
    best_diff = float("inf")
    best = (1, 1)
    area = width * height
    for ratio in ratios:
        diff = abs(aspect_ratio - ratio[0] / ratio[1])
        if diff < best_diff:
            best_diff = diff
            best = ratio
        elif diff == best_diff and area > 0.5 * tile * tile * ratio[0] * ratio[1]:
            best = ratio
    return best


def _internvl_range(p: dict[str, Any]) -> tuple[int, int]:
    if not p["dynamic_image_size"]:
        return 1, 1
    if p["min_tiles"] > p["max_tiles"]:
        raise RequestError(f"internvl min_tiles={p['min_tiles']} exceeds max_tiles={p['max_tiles']}")
    return p["min_tiles"], p["max_tiles"]


def _internvl(p: dict[str, Any], width: int, height: int) -> ImageTokens:
    tile = p["tile_size"]
    grid = tile // p["patch_size"]
    per_tile_llm = int(grid * grid * p["downsample_ratio"] ** 2)
    tiles_w, tiles_h = _internvl_closest_ratio(
        width, height, _internvl_target_ratios(*_internvl_range(p)), tile
    )
    blocks = tiles_w * tiles_h
    if p["use_thumbnail"] and blocks != 1:
        blocks += 1
    return ImageTokens(
        llm_tokens=blocks * per_tile_llm + 2,  # <img> ... </img>
        encoder_patches=blocks * (grid * grid + 1),
        num_tiles=blocks,
        cross_attention_tokens=0,
        resized_width=tile * tiles_w,
        resized_height=tile * tiles_h,
        encoder_sequences=blocks,
    )


def _internvl_max_size(p: dict[str, Any]) -> tuple[int, int]:
    """vLLM ``BaseInternVLProcessingInfo.get_image_size_with_most_features``.

    The candidate list comes from ``resolve_target_ratios()`` with the thumbnail applied (max + 1)."""
    min_num, max_num = _internvl_range(p)
    if p["use_thumbnail"] and max_num != 1:
        max_num += 1
    tile = p["tile_size"]
    best, best_size = 0, (tile, tile)
    for wr, hr in _internvl_target_ratios(min_num, max_num):
        n = _internvl(p, tile * wr, tile * hr).llm_tokens
        if n > best:
            best, best_size = n, (tile * wr, tile * hr)
    return best_size


# --------------------------------------------------------------------------- gemma3

_GEMMA3_WRAPPER_TOKENS = 4  # "\n\n" <start_of_image> ... <end_of_image> "\n\n"
# "Here is the original image" (5) + "and here are some crops to help you see better" (10)
_GEMMA3_PAN_AND_SCAN_WORDS = 15


def _gemma3_num_crops(p: dict[str, Any], width: int, height: int) -> int:
    """vLLM ``Gemma3ProcessingInfo.get_num_crops`` (= HF ``Gemma3ImageProcessor.pan_and_scan``)."""
    if not p["do_pan_and_scan"]:
        return 0
    min_crop = p["pan_and_scan_min_crop_size"]
    max_crops = p["pan_and_scan_max_num_crops"]
    min_ratio = p["pan_and_scan_min_ratio_to_activate"]
    if width >= height:
        if width / height < min_ratio:
            return 0
        crops_w = min(int(math.floor(width / min_crop)), int(math.floor(width / height + 0.5)))
        crops_w = min(max_crops, max(2, crops_w))
        crops_h = 1
    else:
        if height / width < min_ratio:
            return 0
        crops_h = min(int(math.floor(height / min_crop)), int(math.floor(height / width + 0.5)))
        crops_h = min(max_crops, max(2, crops_h))
        crops_w = 1
    crop_w = int(math.ceil(width / crops_w))
    crop_h = int(math.ceil(height / crops_h))
    if min(crop_w, crop_h) < min_crop:
        return 0
    return crops_w * crops_h


def _gemma3(p: dict[str, Any], width: int, height: int) -> ImageTokens:
    crops = _gemma3_num_crops(p, width, height)
    images = crops + 1
    llm = images * (p["tokens_per_image"] + _GEMMA3_WRAPPER_TOKENS)
    if crops:
        llm += _GEMMA3_PAN_AND_SCAN_WORDS + images  # approximate: see module docstring
    grid = p["image_size"] // p["patch_size"]
    return ImageTokens(
        llm_tokens=llm,
        encoder_patches=images * grid * grid,
        num_tiles=images,
        cross_attention_tokens=0,
        resized_width=p["image_size"],
        resized_height=p["image_size"],
        encoder_sequences=images,
    )


def _gemma3_max_size(p: dict[str, Any]) -> tuple[int, int]:
    """vLLM ``Gemma3ProcessingInfo.get_image_size_with_most_features``: image_size x image_size*max_crops."""
    return p["image_size"], p["image_size"] * p["pan_and_scan_max_num_crops"]


# --------------------------------------------------------------------------- phi3v


def _phi3v_hd_size(width: int, height: int, hd_num: int, crop: int) -> tuple[int, int]:
    """Phi-3.5-vision ``calc_hd_transform_size`` (+ ``calc_padded_size``): padded (width, height)."""
    transposed = False
    if width < height:
        width, height = height, width
        transposed = True
    ratio = width / height
    scale = 1
    while scale * math.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale -= 1
    new_width = int(scale * crop)
    new_height = int(new_width / ratio)
    padded_height = int(math.ceil(new_height / crop) * crop)
    padded_width = new_width
    if transposed:
        padded_width, padded_height = padded_height, padded_width
    return padded_width, padded_height


def _phi3v(p: dict[str, Any], width: int, height: int) -> ImageTokens:
    crop = p["crop_size"]
    new_w, new_h = _phi3v_hd_size(width, height, p["num_crops"], crop)
    tiles_h, tiles_w = new_h // crop, new_w // crop
    side = crop // 14 // 2  # 336 -> 24x24 CLIP patches -> 2x2 merge -> 12x12
    llm = (tiles_h * tiles_w + 1) * side * side + 1 + (tiles_h + 1) * side
    items = p["num_crops"] + 1  # padded to num_crops + 1 (pad_to_max_num_crops_tensor)
    return ImageTokens(
        llm_tokens=llm,
        encoder_patches=items * ((crop // 14) ** 2 + 1),
        num_tiles=items,
        cross_attention_tokens=0,
        resized_width=new_w,
        resized_height=new_h,
        encoder_sequences=items,
    )


# --------------------------------------------------------------------------- idefics3 / smolvlm

_IDEFICS3_MAX_IMAGE_SIZE = 4096  # transformers idefics3 MAX_IMAGE_SIZE


def _idefics3_grid(p: dict[str, Any], width: int, height: int) -> tuple[int, int, int, int]:
    """transformers ``Idefics3ImageProcessor.get_number_of_image_patches`` -> (rows, cols, w', h')."""
    if not p["do_image_splitting"]:
        return 0, 0, p["tile_size"], p["tile_size"]
    tile = p["tile_size"]
    # _resize_output_size_rescale_to_max_len
    max_len = p["longest_edge"]
    aspect = width / height
    if width >= height:
        w = max_len
        h = int(w / aspect)
        if h % 2 != 0:
            h += 1
    else:
        h = max_len
        w = int(h * aspect)
        if w % 2 != 0:
            w += 1
    h, w = max(h, 1), max(w, 1)
    # _resize_output_size_scale_below_upper_bound
    aspect = w / h
    if w >= h and w > _IDEFICS3_MAX_IMAGE_SIZE:
        w = _IDEFICS3_MAX_IMAGE_SIZE
        h = int(w / aspect)
    elif h > w and h > _IDEFICS3_MAX_IMAGE_SIZE:
        h = _IDEFICS3_MAX_IMAGE_SIZE
        w = int(h * aspect)
    h, w = max(h, 1), max(w, 1)
    resized_w = math.ceil(w / tile) * tile
    resized_h = math.ceil(h / tile) * tile
    if resized_h > tile or resized_w > tile:
        return math.ceil(resized_h / tile), math.ceil(resized_w / tile), resized_w, resized_h
    return 0, 0, tile, tile


def _idefics3(p: dict[str, Any], width: int, height: int) -> ImageTokens:
    rows, cols, rw, rh = _idefics3_grid(p, width, height)
    seq = p["tokens_per_tile"]
    glob = 1 + 1 + seq + 1  # <fake_token_around_image><global-img> seq <fake_token_around_image>
    if rows == 0 and cols == 0:
        tiles, llm = 1, glob
    else:
        tiles = rows * cols + 1
        # each tile: <fake_token_around_image><row_i_col_j> seq; one "\n" per row, the last one
        # merging with the extra "\n" before the global image into a single "\n\n" token.
        llm = rows * cols * (2 + seq) + rows + glob
    per_tile = (p["tile_size"] // p["patch_size"]) ** 2
    return ImageTokens(
        llm_tokens=llm,
        encoder_patches=tiles * per_tile,
        num_tiles=tiles,
        cross_attention_tokens=0,
        resized_width=rw,
        resized_height=rh,
        encoder_sequences=tiles,
    )


# --------------------------------------------------------------------------- minicpmv


def _ensure_divide(length: float, patch: int) -> int:
    return max(round(length / patch) * patch, patch)


def _minicpmv_best_resize(
    width: float, height: float, scale: int, patch: int, allow_upscale: bool
) -> tuple[int, int]:
    """MiniCPM-V ``find_best_resize``: (width, height) multiples of patch."""
    if width * height > scale * scale or allow_upscale:
        r = width / height
        height = int(scale / math.sqrt(r))
        width = int(height * r)
    return _ensure_divide(width, patch), _ensure_divide(height, patch)


def _minicpmv_grid(width: int, height: int, scale: int, max_slice_nums: int) -> tuple[int, int] | None:
    """MiniCPM-V ``get_sliced_grid``: (cols, rows) or None when the image is not sliced."""
    log_ratio = math.log(width / height)
    ratio = width * height / (scale * scale)
    multiple = min(math.ceil(ratio), max_slice_nums)
    if multiple <= 1:
        return None
    candidates = [i for i in (multiple - 1, multiple, multiple + 1) if i != 1 and i <= max_slice_nums]
    grids = [(m, n // m) for n in candidates for m in range(1, n + 1) if n % m == 0]
    best = (1, 1)
    min_error = float("inf")
    for grid in grids:
        error = abs(log_ratio - math.log(grid[0] / grid[1]))
        if error < min_error:
            best, min_error = grid, error
    return best


def _minicpmv(p: dict[str, Any], width: int, height: int) -> ImageTokens:
    scale, patch, q = p["slice_size"], p["patch_size"], p["query_num"]
    image_wrapper = 2 + (3 if p["use_image_id"] else 0)  # <image></image> (+ <image_id>0</image_id>)
    grid = _minicpmv_grid(width, height, scale, p["max_slice_nums"]) if p["slice_mode"] else None
    if grid is None:
        sw, sh = _minicpmv_best_resize(width, height, scale, patch, allow_upscale=True)
        return ImageTokens(q + image_wrapper, (sw // patch) * (sh // patch), 1, 0, sw, sh)
    cols, rows = grid
    src_w, src_h = _minicpmv_best_resize(width, height, scale, patch, allow_upscale=False)
    # get_refine_size: the refined image is cut into cols x rows slices of one best size
    refine_w, refine_h = _ensure_divide(width, cols), _ensure_divide(height, rows)
    slice_w, slice_h = _minicpmv_best_resize(
        refine_w / cols, refine_h / rows, scale, patch, allow_upscale=True
    )
    slices = cols * rows
    llm = q + image_wrapper + slices * (q + 2) + (rows - 1)  # <slice>..</slice>, "\n" between rows
    encoder = (src_w // patch) * (src_h // patch) + slices * (slice_w // patch) * (slice_h // patch)
    # The source image and each slice are encoded as separate images (their own attention sequences).
    return ImageTokens(llm, encoder, slices + 1, 0, slice_w * cols, slice_h * rows, slices + 1)


# --------------------------------------------------------------------------- llama4


def _f32(x: float) -> float:
    """Round a float to IEEE binary32 (torch's default dtype); exact for one division (53 >= 2*24+2)."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def _llama4_resolutions(max_chunks: int, tile: int) -> list[tuple[int, int]]:
    """transformers ``find_supported_resolutions``: (height, width) canvases in HF's order."""
    asp: dict[float, list[tuple[int, int]]] = defaultdict(list)
    for chunk in range(max_chunks, 0, -1):
        factors = sorted(
            {d for i in range(1, math.isqrt(chunk) + 1) if chunk % i == 0 for d in (i, chunk // i)}
        )
        for f in factors:
            asp[f / (chunk // f)].append((f, chunk // f))
    return [(h * tile, w * tile) for value in asp.values() for h, w in value]


def _llama4_best_fit(
    height: int, width: int, resolutions: list[tuple[int, int]], to_max: bool
) -> tuple[int, int]:
    """transformers ``get_best_fit`` with torch float32 scales."""
    scales = []
    for th, tw in resolutions:
        scale_w, scale_h = _f32(tw / width), _f32(th / height)
        scales.append(scale_w if scale_h > scale_w else scale_h)
    up = [s for s in scales if s >= 1]
    if up:
        selected = max(up) if to_max else min(up)
    else:
        selected = max(s for s in scales if s < 1)
    chosen = [r for r, s in zip(resolutions, scales) if s == selected]
    return min(chosen, key=lambda r: r[0] * r[1])  # argmin: first of equal areas


def _llama4(p: dict[str, Any], width: int, height: int) -> ImageTokens:
    tile = p["tile_size"]
    canvas_h, canvas_w = _llama4_best_fit(
        height, width, _llama4_resolutions(p["max_tiles"], tile), p["resize_to_max_canvas"]
    )
    rows, cols = canvas_h // tile, canvas_w // tile
    grid = tile // p["patch_size"]
    per_tile = grid * grid // int(round(1.0 / p["pixel_shuffle_ratio"] ** 2))
    # <|image_start|> [tiles: per_tile <|patch|> each, x/y separators] <|image|> per_tile <|image_end|>
    llm = per_tile + 3
    tiles = 1
    if rows * cols > 1:
        llm += rows * cols * per_tile + rows * (cols - 1) + rows
        tiles = rows * cols + 1
    return ImageTokens(
        llm_tokens=llm,
        encoder_patches=tiles * (grid * grid + 1),
        num_tiles=tiles,
        cross_attention_tokens=0,
        resized_width=canvas_w,
        resized_height=canvas_h,
        encoder_sequences=tiles,
    )


# --------------------------------------------------------------------------- dispatch

_COUNTERS: dict[str, Callable[[dict[str, Any], int, int], ImageTokens]] = {
    "qwen2_vl": _qwen,
    "qwen3_vl": _qwen,
    "llava": _llava,
    "llava_next": lambda p, w, h: _anyres(p, w, h, onevision=False),
    "llava_onevision": lambda p, w, h: _anyres(p, w, h, onevision=True),
    "mllama": _mllama,
    "pixtral": _pixtral,
    "internvl": _internvl,
    "gemma3": _gemma3,
    "phi3v": _phi3v,
    "idefics3": _idefics3,
    "minicpmv": _minicpmv,
    "llama4": _llama4,
}

_MAX_SIZES: dict[str, Callable[[dict[str, Any]], tuple[int, int]]] = {
    "qwen2_vl": _qwen_max_size,
    "qwen3_vl": _qwen_max_size,
    "llava": lambda p: (p["image_size"], p["image_size"]),
    "llava_next": _llava_next_max_size,
    "llava_onevision": lambda p: (1153, 944),  # vLLM hard-codes ImageSize(width=1153, height=944)
    "mllama": lambda p: (p["tile_size"], p["tile_size"] * p["max_tiles"]),  # (max_tiles x 1) arrangement
    "pixtral": lambda p: (p["max_image_size"], p["max_image_size"]),
    "internvl": _internvl_max_size,
    "gemma3": _gemma3_max_size,
    "phi3v": lambda p: (50, 8000),  # vLLM: ImageSize(height=8000, width=50)
    "idefics3": lambda p: (p["tile_size"], p["tile_size"]),  # dummy image: max_image_size square
    "minicpmv": lambda p: (p["slice_size"], p["slice_size"] * p["max_slice_nums"]),
    "llama4": lambda p: (p["tile_size"], p["tile_size"] * p["max_tiles"]),
}


def image_tokens(
    rule: VisualTokenRule, width: int, height: int, options: Mapping[str, Any] | None = None
) -> ImageTokens:
    """Tokens one ``width`` x ``height`` image costs under ``rule`` with processor ``options``."""
    _check_size(width, height)
    params = _resolve(rule, options)
    return _COUNTERS[rule.rule](params, width, height)


def max_image_tokens(rule: VisualTokenRule, options: Mapping[str, Any] | None = None) -> ImageTokens:
    """The per-item maximum vLLM 0.33 profiles memory with, under these options.

    Evaluates :func:`image_tokens` at the image size of vLLM's ``get_image_size_with_most_features``
    (or the dummy-input builder's image where the model has no such method)."""
    params = _resolve(rule, options)
    width, height = _MAX_SIZES[rule.rule](params)
    return _COUNTERS[rule.rule](params, width, height)
