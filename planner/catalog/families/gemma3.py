"""Gemma 3 (4B-27B): config.json reading and the ``gemma3`` visual-token rule.

Config: a Gemma 3 ``text_config`` (sliding-window layers, see ``text``) and a SigLIP ``vision_config``;
the projector average-pools the 64x64 patches to ``mm_tokens_per_image`` (256) soft tokens. Pan-and-scan
settings come from preprocessor_config.json.

Tokens: vLLM ``gemma3_mm.py`` (``get_num_crops``, ``get_image_repl``, ``get_image_size_with_most_features``)
and transformers ``gemma3/processing_gemma3.py`` (``full_image_sequence`` = ``\\n\\n<start_of_image>`` + 256
soft tokens + ``<end_of_image>\\n\\n``: 260 tokens per image, counting ``\\n\\n`` as one Gemma token).
Encoder: SigLIP 896/14 = 64^2 = 4096 patches per crop. Approximation (tokenizer-dependent text): with
pan-and-scan the processor adds the sentence "Here is the original image ... crops to help you see
better ...", counted as 15 word tokens + one whitespace token per image sequence.
"""

from __future__ import annotations

import math

from planner.catalog.families.family import Family, TextPart, VisionAndRule
from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.families.text import nested_text
from planner.catalog.families.tokens import ImageTokens, Params, TokenRule
from planner.catalog.families.vit import read_vit, vision_spec, vit_name
from planner.catalog.schema import ProjectorSpec, VisualTokenRule

# --------------------------------------------------------------------------- config.json


def _text_part(cfg: Cfg, model_type: str, r: Reader) -> TextPart:
    return nested_text(cfg, "gemma3_text", r, force_type=True)


def _vision(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: Reader) -> VisionAndRule:
    vc = r.obj(cfg, "vision_config")
    vit = read_vit(vc, "siglip_vision_model", r.at("vision_config."))
    # Gemma3MultiModalProjector: 4x4 average pool, RMSNorm(d), one bias-free Linear(d -> text hidden).
    projector = ProjectorSpec(
        kind="linear", input_dim=vit.hidden, output_dim=text_hidden, params=vit.hidden + vit.hidden * text_hidden
    )
    vision = vision_spec(vit_name("siglip_vision_model", vit), vit, projector)
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


# --------------------------------------------------------------------------- tokens


_GEMMA3_WRAPPER_TOKENS = 4  # "\n\n" <start_of_image> ... <end_of_image> "\n\n"


# "Here is the original image" (5) + "and here are some crops to help you see better" (10)
_GEMMA3_PAN_AND_SCAN_WORDS = 15


def _gemma3_num_crops(p: Params, width: int, height: int) -> int:
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


def _count(p: Params, width: int, height: int) -> ImageTokens:
    crops = _gemma3_num_crops(p, width, height)
    images = crops + 1
    llm = images * (p["tokens_per_image"] + _GEMMA3_WRAPPER_TOKENS)
    if crops:
        llm += _GEMMA3_PAN_AND_SCAN_WORDS + images  # approximate: see module docstring
    grid = p["image_size"] // p["patch_size"]
    return ImageTokens.tiled(llm, images, grid * grid, p["image_size"], p["image_size"])


_DEFAULTS = {"image_size": 896, "patch_size": 14, "tokens_per_image": 256, "do_pan_and_scan": False,
             "pan_and_scan_min_crop_size": 256, "pan_and_scan_max_num_crops": 4,
             "pan_and_scan_min_ratio_to_activate": 1.2}

def _max_size(p: Params) -> tuple[int, int]:
    """vLLM ``Gemma3ProcessingInfo.get_image_size_with_most_features``: image_size x image_size*max_crops."""
    return p["image_size"], p["image_size"] * p["pan_and_scan_max_num_crops"]


_RULE = TokenRule("gemma3", _DEFAULTS, _count, _max_size)

FAMILY = Family("Gemma 3", {"gemma3": "Gemma3ForConditionalGeneration"}, _text_part, _vision, rules=(_RULE,))
