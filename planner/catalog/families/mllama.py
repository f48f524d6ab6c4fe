"""Llama 3.2 Vision (Mllama): config.json reading and the ``mllama`` visual-token rule.

Config: a Llama text model with cross-attention layers (``cross_attention_layers``; their extra weights are
counted by ``text.decoder``) and a tiled ViT of ``num_hidden_layers`` local plus ``num_global_layers`` gated
global layers. vLLM 0.33 no longer ships Mllama, so the spec says ``vllm_supported: false``.

Tokens: transformers ``models/mllama/image_processing_mllama.py`` ``get_optimal_tiled_canvas``,
``get_image_size_fit_to_canvas``; ``processing_mllama.py`` (one ``<|image|>`` token). Per tile
(560/14)^2 + 1 = 1601 states, which the cross-attention layers attend to. NOTE: HF pads every image to
``max_image_tiles`` tiles and masks the padding; we count the real tiles (as the brief asks).
"""

from __future__ import annotations

from planner.catalog.families.family import Family, TextPart, VisionAndRule
from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.families.text import nested_text
from planner.catalog.families.tokens import ImageTokens, Params, TokenRule, rename
from planner.catalog.schema import ProjectorSpec, VisionSpec, VisualTokenRule

# --------------------------------------------------------------------------- config.json


def _text_part(cfg: Cfg, model_type: str, r: Reader) -> TextPart:
    return nested_text(cfg, "mllama_text_model", r, force_type=True)


def _vision(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: Reader) -> VisionAndRule:
    vc = r.obj(cfg, "vision_config")
    vr = r.at("vision_config.")
    local = vr.req_int(vc, "num_hidden_layers", 32)
    global_ = vr.req_int(vc, "num_global_layers", 8)
    patch = vr.side(vc, "patch_size", 14)
    image = vr.side(vc, "image_size", 448)
    hidden = vr.req_int(vc, "hidden_size", 1280)
    out_dim = vr.req_int(vc, "vision_output_dim", 7680)
    vision = VisionSpec(
        encoder=f"Mllama ViT ({local} local + {global_} gated global layers, {image} px tiles)",
        num_layers=local + global_,
        hidden_size=hidden,
        num_heads=vr.req_int(vc, "attention_heads", 16),
        intermediate_size=vr.req_int(vc, "intermediate_size", 5120),
        patch_size=patch,
        projector=ProjectorSpec(kind="linear", input_dim=out_dim, output_dim=text_hidden),
    )
    pr = r.pre()
    tile = pr.side(pp, "size", image)
    max_tiles = pr.req_int(pp, "max_image_tiles", vr.req_int(vc, "max_num_tiles", 4))
    return vision, VisualTokenRule(
        rule="mllama", params={"tile_size": tile, "patch_size": patch, "max_tiles": max_tiles}
    )


# --------------------------------------------------------------------------- tokens


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


def _count(p: Params, width: int, height: int) -> ImageTokens:
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


_RULE = TokenRule(
    "mllama", {"tile_size": 560, "patch_size": 14, "max_tiles": 4}, _count,
    lambda p: (p["tile_size"], p["tile_size"] * p["max_tiles"]),  # (max_tiles x 1) arrangement
    {"max_image_tiles": rename("max_tiles")},
)

FAMILY = Family("Mllama", {"mllama": "MllamaForConditionalGeneration"}, _text_part, _vision, rules=(_RULE,),
                vllm_supported=False)
