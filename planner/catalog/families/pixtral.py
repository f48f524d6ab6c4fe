"""Mistral 3 (Mistral-Small-3.1) and Pixtral towers: config.json reading and the ``pixtral`` visual-token rule.

Config: Mistral3Config nests a Mistral text config (its class default is Mistral-Small-3.1-24B's) and a
Pixtral-ViT; the projector merges ``spatial_merge_size``^2 patches before its MLP. A LLaVA config whose
``vision_config`` is a Pixtral-ViT (Pixtral-12B in HF format) uses the same tower and rule, with LLaVA's
projector (see ``llava.py``).

Tokens (rule ``pixtral``): mistral_common ``tokens/tokenizers/image.py::ImageEncoder._image_to_num_tokens`` /
``__call__`` (what vLLM ``pixtral.py`` and Mistral-format ``mistral3`` use: Python ``round`` when downscaling),
and transformers ``pixtral/image_processing_pixtral.py`` (``floor``; vLLM ``PixtralHFEncoderInfo``) selectable
with ``resize_rounding``. Tokens = rows*cols ``[IMG]`` + one ``[IMG_BREAK]`` per row (the last one is
``[IMG_END]``). vLLM profiles a ``max_image_size`` square.
"""

from __future__ import annotations

import math

from planner.catalog.families.family import Family, TextPart, VisionAndRule
from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.families.text import nested_text
from planner.catalog.families.tokens import ImageTokens, Params, TokenRule, size_edges
from planner.catalog.families.vit import Vit, composite_vit, vision_spec, vit_name
from planner.catalog.schema import ProjectorSpec, VisualTokenRule

# --------------------------------------------------------------------------- config.json

_MISTRAL3_TEXT_DEFAULT: Cfg = {
    "model_type": "mistral", "head_dim": 128, "hidden_size": 5120, "intermediate_size": 32768,
    "max_position_embeddings": 131072, "num_attention_heads": 32, "num_hidden_layers": 40,
    "num_key_value_heads": 8, "sliding_window": None, "vocab_size": 131072,
}  # fmt: skip
"""Mistral3Config's text_config when the file gives none (Mistral-Small-3.1-24B)."""


def _text_part(cfg: Cfg, model_type: str, r: Reader) -> TextPart:
    return nested_text(cfg, "mistral", r, when_absent=_MISTRAL3_TEXT_DEFAULT)


def pixtral_tower(vit: Vit, projector: ProjectorSpec, merge: int, pp: Cfg, r: Reader) -> VisionAndRule:
    """A Pixtral-ViT (gated MLP) with ``projector``, and its ``pixtral`` rule (image limit from the processor)."""
    size = r.obj(pp, "size")
    max_image = size.get("longest_edge") if isinstance(size.get("longest_edge"), int) else vit.image
    tokens = {"patch_size": r.pre().side(pp, "patch_size", vit.patch), "merge_size": merge, "max_image_size": max_image}
    vision = vision_spec(vit_name("pixtral", vit), vit, projector, gated=True)
    return vision, VisualTokenRule(rule="pixtral", params=tokens)


def _vision(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: Reader) -> VisionAndRule:
    vit, _ = composite_vit(cfg, model_type, ("pixtral", Vit(24, 1024, 16, 4096, 14, 1540)), -1, r)
    merge = r.req_int(cfg, "spatial_merge_size", 2)
    bias = r.flag(cfg, "multimodal_projector_bias", False)
    th = text_hidden
    # RMSNorm + patch merger Linear(merge^2 * d -> d) (no bias) + Linear(d -> th) + GELU + Linear(th -> th).
    count = vit.hidden + merge**2 * vit.hidden * vit.hidden + vit.hidden * th + th * th + (2 * th if bias else 0)
    projector = ProjectorSpec(kind="mlp", input_dim=vit.hidden, hidden_dim=th, output_dim=th, params=count)
    return pixtral_tower(vit, projector, merge, pp, r)


# --------------------------------------------------------------------------- tokens


def _count(p: Params, width: int, height: int) -> ImageTokens:
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
    return ImageTokens.single(rows * cols + rows, (rows * merge) * (cols * merge), cols * unit, rows * unit)


_RULE = TokenRule(
    "pixtral", {"patch_size": 16, "merge_size": 1, "max_image_size": 1024, "resize_rounding": "round"}, _count,
    lambda p: (p["max_image_size"], p["max_image_size"]),
    aliases={"size": size_edges({"longest_edge": "max_image_size"})},
    choices={"resize_rounding": ("round", "floor")},
)

FAMILY = Family("Mistral 3", {"mistral3": "Mistral3ForConditionalGeneration"}, _text_part, _vision, rules=(_RULE,))
