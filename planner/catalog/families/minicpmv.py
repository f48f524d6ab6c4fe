"""MiniCPM-V (2.5, 2.6; remote code): config.json reading and the ``minicpmv`` visual-token rule.

Config: a flat text config (Qwen2 for 2.6, Llama for 2.5 and earlier), a SigLIP ``vision_config`` and a
Perceiver resampler of ``query_num`` queries; slicing settings sit in ``slice_config`` or
preprocessor_config.json.

Tokens: MiniCPM-V 2.6 remote code ``image_processing_minicpmv.py`` (``get_sliced_grid``,
``find_best_resize``, ``get_refine_size``, ``get_slice_image_placeholder``) as called by vLLM ``minicpmv.py``
(``get_num_image_tokens`` = (slices + 1) * 64, max image 448 x 448*max_slice_nums). Approximation
(tokenizer-dependent text): ``<image_id>0</image_id>`` counts as 3 tokens (image index 0).
"""

from __future__ import annotations

import math
from dataclasses import replace

from planner.catalog.families.family import Family, TextPart, VisionAndRule
from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.families.tokens import ImageTokens, Params, TokenRule
from planner.catalog.families.vit import read_vit, vision_spec, vit_name
from planner.catalog.schema import ProjectorSpec, VisualTokenRule

# --------------------------------------------------------------------------- config.json


def _text_part(cfg: Cfg, model_type: str, r: Reader) -> TextPart:
    """MiniCPM-V 2.6 is built on Qwen2 (its config carries Qwen2 keys); 2.5 and earlier on Llama."""
    return TextPart(cfg, "qwen2" if "max_window_layers" in cfg or cfg.get("version") == 2.6 else "llama", False, "")


def _vision(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: Reader) -> VisionAndRule:
    vc = r.obj(cfg, "vision_config")
    vit = read_vit(vc, "siglip_vision_model", r.at("vision_config."))
    if r.flag(cfg, "drop_vision_last_layer", False) and vit.layers > 1:
        vit = replace(vit, layers=vit.layers - 1)
    queries = r.req_int(cfg, "query_num", 64)
    e = text_hidden
    # Perceiver resampler: queries, kv_proj(d -> e), MultiheadAttention(e), 3 LayerNorms, proj(e x e).
    params = queries * e + vit.hidden * e + (4 * e * e + 4 * e) + 6 * e + e * e
    projector = ProjectorSpec(kind="resampler", input_dim=vit.hidden, output_dim=e, params=params)
    vision = vision_spec(vit_name("siglip_vision_model", vit) + f" + resampler ({queries} queries)", vit, projector)
    slices = r.obj(cfg, "slice_config")
    sr = r.at("slice_config.")
    pr = r.pre()
    tokens = {
        "slice_size": pr.req_int(pp, "scale_resolution", sr.req_int(slices, "scale_resolution", 448)),
        "max_slice_nums": pr.req_int(pp, "max_slice_nums", sr.req_int(slices, "max_slice_nums", 9)),
        "query_num": queries,
        "patch_size": pr.req_int(pp, "patch_size", sr.req_int(slices, "patch_size", vit.patch)),
    }
    return vision, VisualTokenRule(rule="minicpmv", params=tokens)


# --------------------------------------------------------------------------- tokens


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


def _count(p: Params, width: int, height: int) -> ImageTokens:
    scale, patch, q = p["slice_size"], p["patch_size"], p["query_num"]
    image_wrapper = 2 + (3 if p["use_image_id"] else 0)  # <image></image> (+ <image_id>0</image_id>)
    grid = _minicpmv_grid(width, height, scale, p["max_slice_nums"]) if p["slice_mode"] else None
    if grid is None:
        sw, sh = _minicpmv_best_resize(width, height, scale, patch, allow_upscale=True)
        return ImageTokens.single(q + image_wrapper, (sw // patch) * (sh // patch), sw, sh)
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


_DEFAULTS = {"slice_size": 448, "max_slice_nums": 9, "query_num": 64, "patch_size": 14, "use_image_id": True,
             "slice_mode": True}
_RULE = TokenRule("minicpmv", _DEFAULTS, _count, lambda p: (p["slice_size"], p["slice_size"] * p["max_slice_nums"]))

FAMILY = Family("MiniCPM-V", {"minicpmv": "MiniCPMV"}, _text_part, _vision, rules=(_RULE,),
                remote_code=frozenset({"minicpmv"}))
