"""Phi-3.5-vision (``phi3_v``, remote code): config.json reading and the ``phi3v`` visual-token rule.

Config: a flat Phi-3 text config with an ``img_processor`` section; the tower is always CLIP ViT-L/14-336
(whatever ``model_name`` says), cut at ``layer_idx``, and the HD transform merges 2x2 patch features.

Tokens: Phi-3.5-vision remote code ``image_processing_phi3_v.py`` (``calc_hd_transform_size``,
``calc_num_image_tokens_from_image_size``) as called by vLLM ``phi3v.py``; the formula already contains the
separator and newline tokens, no extra wrapper. Encoder: the processor pads every image to num_crops + 1
crops and vLLM runs CLIP (577 tokens) on all of them, so ``num_tiles`` is ``num_crops + 1`` whatever the
image. vLLM profiles an 8000 (h) x 50 (w) image.
"""

from __future__ import annotations

import math

from planner.catalog.families.family import Family, TextPart, VisionAndRule
from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.families.tokens import ImageTokens, Params, TokenRule
from planner.catalog.families.vit import Vit, layers_used, vision_spec, vit_name
from planner.catalog.schema import ProjectorSpec, VisualTokenRule

# --------------------------------------------------------------------------- config.json


def _text_part(cfg: Cfg, model_type: str, r: Reader) -> TextPart:
    return TextPart(cfg, "phi3", False, "")


def _vision(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: Reader) -> VisionAndRule:
    ip = r.obj(cfg, "img_processor")
    ir = r.at("img_processor.")
    # The remote code builds CLIP ViT-L/14-336 (openai/clip-vit-large-patch14-336) whatever model_name says.
    # vLLM builds the layers up to img_processor.layer_idx (default -2): 23 of 24.
    layers = layers_used(24, ip.get("layer_idx", -2))
    vit = Vit(layers, ir.req_int(ip, "image_dim_out", 1024), 16, 4096, 14, 336)
    # HD transform merges 2x2 patch features: Linear(4d -> text) + GELU + Linear(text -> text), with biases,
    # plus the learnable global/sub-image separators (glb_GN, sub_GN: 4d each).
    d4, th = 4 * vit.hidden, text_hidden
    count = d4 * th + th + th * th + th + 2 * d4
    projector = ProjectorSpec(kind="mlp", input_dim=d4, hidden_dim=th, output_dim=th, params=count)
    vision = vision_spec(vit_name("clip_vision_model", vit), vit, projector)
    tokens = {"crop_size": vit.image, "num_crops": r.pre().req_int(pp, "num_crops", 4)}
    return vision, VisualTokenRule(rule="phi3v", params=tokens)


# --------------------------------------------------------------------------- tokens


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


def _count(p: Params, width: int, height: int) -> ImageTokens:
    crop = p["crop_size"]
    new_w, new_h = _phi3v_hd_size(width, height, p["num_crops"], crop)
    tiles_h, tiles_w = new_h // crop, new_w // crop
    side = crop // 14 // 2  # 336 -> 24x24 CLIP patches -> 2x2 merge -> 12x12
    llm = (tiles_h * tiles_w + 1) * side * side + 1 + (tiles_h + 1) * side
    items = p["num_crops"] + 1  # padded to num_crops + 1 (pad_to_max_num_crops_tensor)
    return ImageTokens.tiled(llm, items, (crop // 14) ** 2 + 1, new_w, new_h)


_RULE = TokenRule("phi3v", {"crop_size": 336, "num_crops": 4}, _count,
                  lambda p: (50, 8000))  # vLLM: ImageSize(height=8000, width=50)

FAMILY = Family("Phi-3.5-vision", {"phi3_v": "Phi3VForCausalLM"}, _text_part, _vision, rules=(_RULE,),
                remote_code=frozenset({"phi3_v"}))
