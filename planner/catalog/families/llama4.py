"""Llama 4 (Scout, Maverick): config.json reading and the ``llama4`` visual-token rule.

Config: a Llama 4 ``text_config`` (MoE and chunked-attention layers, see ``text``) and a tiled ViT whose
features are pixel-shuffled by ``pixel_shuffle_ratio`` and projected twice.

Tokens: transformers ``llama4/image_processing_llama4.py`` (``find_supported_resolutions``, ``get_best_fit``
— torch float32 scale arithmetic, reproduced exactly) and ``processing_llama4.py::_prompt_split_image``;
vLLM ``mllama4.py`` (``get_patch_per_chunk``, max image ``max_patches*336`` (h) x 336). Encoder: 577 per tile
(the ViT appends a class token).
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict

from planner.catalog.families.family import Family, TextPart, VisionAndRule
from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.families.text import nested_text
from planner.catalog.families.tokens import ImageTokens, Params, TokenRule, rename
from planner.catalog.families.vit import read_vit, vision_spec, vit_name
from planner.catalog.schema import ProjectorSpec, VisualTokenRule

# --------------------------------------------------------------------------- config.json


def _text_part(cfg: Cfg, model_type: str, r: Reader) -> TextPart:
    return nested_text(cfg, "llama4_text", r, force_type=True)


def _vision(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: Reader) -> VisionAndRule:
    vc = r.obj(cfg, "vision_config")
    vr = r.at("vision_config.")
    vit = read_vit(vc, "llama4_vision_model", vr)
    out = vr.req_int(vc, "vision_output_dim", 7680)
    proj_out = vr.req_int(vc, "projector_output_dim", 4096)
    shuffle_ratio = vr.num(vc, "pixel_shuffle_ratio", 0.5)
    shuffled = int(vit.hidden / shuffle_ratio**2)
    # Pixel-shuffle MLP (Linear(d/r^2 -> out) + Linear(out -> projector_output_dim), no bias), then the
    # multi-modal projector Linear(vision_output_dim -> text hidden), no bias.
    params = shuffled * out + out * proj_out + out * text_hidden
    projector = ProjectorSpec(kind="mlp", input_dim=shuffled, hidden_dim=out, output_dim=text_hidden, params=params)
    vision = vision_spec(vit_name("llama4_vision_model", vit), vit, projector)
    pr = r.pre()
    tile = pr.side(pp, "size", vit.image)
    tokens = {"tile_size": tile, "patch_size": vit.patch, "max_tiles": pr.req_int(pp, "max_patches", 16),
              "pixel_shuffle_ratio": shuffle_ratio}
    return vision, VisualTokenRule(rule="llama4", params=tokens)


# --------------------------------------------------------------------------- tokens


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


def _count(p: Params, width: int, height: int) -> ImageTokens:
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
    return ImageTokens.tiled(llm, tiles, grid * grid + 1, canvas_w, canvas_h)


_DEFAULTS = {"tile_size": 336, "patch_size": 14, "max_tiles": 16, "pixel_shuffle_ratio": 0.5,
             "resize_to_max_canvas": False}
_RULE = TokenRule("llama4", _DEFAULTS, _count, lambda p: (p["tile_size"], p["tile_size"] * p["max_tiles"]),
                  {"max_patches": rename("max_tiles")})

FAMILY = Family("Llama 4", {"llama4": "Llama4ForConditionalGeneration"}, _text_part, _vision, rules=(_RULE,))
