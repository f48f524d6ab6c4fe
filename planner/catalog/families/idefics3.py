"""Idefics3 and SmolVLM: config.json reading and the ``idefics3`` visual-token rule (SmolVLM counts alike).

Config: a Llama ``text_config`` and a SigLIP ``vision_config``; the connector pixel-shuffles by
``scale_factor`` and projects with one bias-free Linear. Tile and longest-edge sizes come from
preprocessor_config.json (``max_image_size``, ``size``).

Tokens: transformers ``idefics3/image_processing_idefics3.py::get_number_of_image_patches`` and vLLM
``idefics3.py::get_image_repl`` (SmolVLM: ``smolvlm.py``, same counts). vLLM profiles a ``max_image_size``
square (which the processor upscales to the full grid). Approximation (tokenizer-dependent text): the
trailing ``"\\n\\n"`` before the global image counts as one token (a single BPE token in Llama 3) and each
``<row_i_col_j>`` as one added token.
"""

from __future__ import annotations

import math

from planner.catalog.families.family import Family, TextPart, VisionAndRule
from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.families.text import nested_text
from planner.catalog.families.tokens import ImageTokens, Params, TokenRule, size_edges
from planner.catalog.families.vit import read_vit, vision_spec, vit_name
from planner.catalog.schema import ProjectorSpec, VisualTokenRule

# --------------------------------------------------------------------------- config.json


def _text_part(cfg: Cfg, model_type: str, r: Reader) -> TextPart:
    return nested_text(cfg, "llama", r)


def _vision(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: Reader) -> VisionAndRule:
    vc = r.obj(cfg, "vision_config")
    vtype = f"{model_type}_vision"
    vit = read_vit(vc, vtype, r.at("vision_config."))
    scale = r.req_int(cfg, "scale_factor", 2)
    # Connector: pixel shuffle by scale_factor, then one bias-free Linear(d * scale^2 -> text hidden).
    merged = vit.hidden * scale**2
    projector = ProjectorSpec(kind="linear", input_dim=merged, output_dim=text_hidden, params=merged * text_hidden)
    vision = vision_spec(vit_name(vtype, vit), vit, projector)
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


# --------------------------------------------------------------------------- tokens


_IDEFICS3_MAX_IMAGE_SIZE = 4096  # transformers idefics3 MAX_IMAGE_SIZE


def _idefics3_grid(p: Params, width: int, height: int) -> tuple[int, int, int, int]:
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


def _count(p: Params, width: int, height: int) -> ImageTokens:
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
    return ImageTokens.tiled(llm, tiles, per_tile, rw, rh)


_DEFAULTS = {"tile_size": 364, "longest_edge": 1456, "tokens_per_tile": 169, "patch_size": 14,
             "do_image_splitting": True}
_ALIASES = {"size": size_edges({"longest_edge": "longest_edge"}),
            "max_image_size": size_edges({"longest_edge": "tile_size"})}
# vLLM's dummy image: a max_image_size square.
_RULE = TokenRule("idefics3", _DEFAULTS, _count, lambda p: (p["tile_size"], p["tile_size"]), _ALIASES)

FAMILY = Family("Idefics3 / SmolVLM", {
    "idefics3": "Idefics3ForConditionalGeneration", "smolvlm": "SmolVLMForConditionalGeneration",
}, _text_part, _vision, rules=(_RULE,))  # fmt: skip
