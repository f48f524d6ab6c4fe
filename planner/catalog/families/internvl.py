"""InternVL (HF-format ``internvl``, and the remote-code ``internvl_chat`` of InternVL 2/2.5/3): config.json
reading and the ``internvl`` visual-token rule.

Config: ``internvl`` nests a Qwen2 ``text_config``; ``internvl_chat`` keeps its language model in
``llm_config`` (InternLM2, Qwen2, Llama, ...) and its tiling settings at the top level. The tower is
InternViT (class token, layer scale); the projector pixel-shuffles by ``downsample_ratio``.

Tokens: vLLM ``transformers_utils/processors/internvl.py`` (``get_internvl_target_ratios``,
``find_closest_aspect_ratio``, ``calculate_internvl_targets``, ``get_image_repl``) and
``model_executor/models/internvl.py`` (``get_image_size_with_most_features``). LLM tokens =
tiles*256 + ``<img>`` + ``</img>``; encoder = tiles * (32^2 + 1 CLS).
"""

from __future__ import annotations

from planner.catalog.families.family import Family, TextPart, VisionAndRule
from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.families.text import nested_text
from planner.catalog.families.tokens import ImageTokens, Params, TokenRule, rename
from planner.catalog.families.vit import read_vit, vision_spec, vit_name
from planner.catalog.schema import ProjectorSpec, VisualTokenRule
from planner.core.errors import RequestError

# --------------------------------------------------------------------------- config.json

_ARCH_TO_TEXT_TYPE = {
    "Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama", "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe", "InternLM2ForCausalLM": "internlm2", "MistralForCausalLM": "mistral",
}  # fmt: skip
"""``llm_config.architectures[0]`` -> text config type, for chat configs whose llm_config has no model_type."""


def _text_part(cfg: Cfg, model_type: str, r: Reader) -> TextPart:
    if model_type == "internvl":
        return nested_text(cfg, "qwen2", r)
    if not isinstance(cfg.get("llm_config"), dict):
        raise r.refuse("model_type 'internvl_chat' config lacks required key(s) llm_config")
    llm = cfg["llm_config"]
    archs = llm.get("architectures") or []
    ttype = llm.get("model_type") or (_ARCH_TO_TEXT_TYPE.get(archs[0]) if archs else None) or "internlm2"
    return TextPart(llm, ttype, False, "llm_config.")


def _vision(cfg: Cfg, model_type: str, text_hidden: int, pp: Cfg, r: Reader) -> VisionAndRule:
    vc = r.obj(cfg, "vision_config")
    vr = r.at("vision_config.")
    vtype = "intern_vit_6b" if model_type == "internvl_chat" else "internvl_vision"
    vit = read_vit(vc, vtype, vr)
    ratio = r.num(cfg, "downsample_ratio", 0.5)
    shuffle = round(1 / ratio)
    projector = ProjectorSpec(
        kind="mlp", input_dim=vit.hidden * shuffle**2, hidden_dim=text_hidden, output_dim=text_hidden
    )
    # InternViT: a class token before the 1024 patches of a tile, and layer scale (ls1, ls2) in every block.
    vision = vision_spec(vit_name(vtype, vit), vit, projector, layer_scale=True, class_token=True)
    pr = r.pre()
    if model_type == "internvl_chat":
        tile = r.req_int(cfg, "force_image_size", vit.image) if cfg.get("force_image_size") else vit.image
        min_tiles = r.req_int(cfg, "min_dynamic_patch", 1)
        max_tiles = r.req_int(cfg, "max_dynamic_patch", 12)
        thumbnail = r.flag(cfg, "use_thumbnail", True)
    else:
        tile = pr.side(pp, "size", vit.image)
        min_tiles = pr.req_int(pp, "min_patches", 1)
        max_tiles = pr.req_int(pp, "max_patches", 12)
        thumbnail = True
    params = {
        "tile_size": tile,
        "patch_size": vit.patch,
        "downsample_ratio": ratio,
        "min_tiles": min_tiles,
        "max_tiles": max_tiles,
        "use_thumbnail": thumbnail,
    }
    return vision, VisualTokenRule(rule="internvl", params=params)


# --------------------------------------------------------------------------- tokens


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


def _internvl_range(p: Params) -> tuple[int, int]:
    if not p["dynamic_image_size"]:
        return 1, 1
    if p["min_tiles"] > p["max_tiles"]:
        raise RequestError(f"internvl min_tiles={p['min_tiles']} exceeds max_tiles={p['max_tiles']}")
    return p["min_tiles"], p["max_tiles"]


def _count(p: Params, width: int, height: int) -> ImageTokens:
    tile = p["tile_size"]
    grid = tile // p["patch_size"]
    per_tile_llm = int(grid * grid * p["downsample_ratio"] ** 2)
    tiles_w, tiles_h = _internvl_closest_ratio(
        width, height, _internvl_target_ratios(*_internvl_range(p)), tile
    )
    blocks = tiles_w * tiles_h
    if p["use_thumbnail"] and blocks != 1:
        blocks += 1
    # <img> ... </img>
    return ImageTokens.tiled(blocks * per_tile_llm + 2, blocks, grid * grid + 1, tile * tiles_w, tile * tiles_h)


def _max_size(p: Params) -> tuple[int, int]:
    """vLLM ``BaseInternVLProcessingInfo.get_image_size_with_most_features``.

    The candidate list comes from ``resolve_target_ratios()`` with the thumbnail applied (max + 1)."""
    min_num, max_num = _internvl_range(p)
    if p["use_thumbnail"] and max_num != 1:
        max_num += 1
    tile = p["tile_size"]
    best, best_size = 0, (tile, tile)
    for wr, hr in _internvl_target_ratios(min_num, max_num):
        n = _count(p, tile * wr, tile * hr).llm_tokens
        if n > best:
            best, best_size = n, (tile * wr, tile * hr)
    return best_size


_DEFAULTS = {"tile_size": 448, "patch_size": 14, "downsample_ratio": 0.5, "min_tiles": 1, "max_tiles": 12,
             "use_thumbnail": True, "dynamic_image_size": True}
_RULE = TokenRule("internvl", _DEFAULTS, _count, _max_size,
                  {"min_dynamic_patch": rename("min_tiles"), "max_dynamic_patch": rename("max_tiles")})

FAMILY = Family("InternVL", {"internvl": "InternVLForConditionalGeneration", "internvl_chat": "InternVLChatModel"},
                _text_part, _vision, rules=(_RULE,), remote_code=frozenset({"internvl_chat"}))
