"""Plain ViT towers (CLIP, SigLIP, Pixtral-ViT, InternViT, Llama 4 ViT) as several families configure them.

A family names its tower by ``vision_config.model_type`` and gives only the keys that differ from the
transformers class defaults, so the defaults below (read from transformers 5.24) fill the rest. vLLM
builds the tower only up to the deepest layer whose features the projector reads, so ``layers_used``
trims it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.schema import ProjectorSpec, VisionSpec


@dataclass(frozen=True)
class Vit:
    """A plain ViT's dimensions, with transformers' class defaults for missing keys."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    patch: int
    image: int


VIT_DEFAULTS: dict[str, Vit] = {
    # layers, hidden, heads, intermediate, patch, image
    "clip_vision_model": Vit(12, 768, 12, 3072, 32, 224),
    "siglip_vision_model": Vit(12, 768, 12, 3072, 16, 224),
    "pixtral": Vit(24, 1024, 16, 4096, 16, 1024),
    "internvl_vision": Vit(24, 1024, 16, 4096, 14, 448),
    "intern_vit_6b": Vit(48, 3200, 25, 12800, 14, 224),
    "idefics3_vision": Vit(12, 1152, 16, 3072, 32, 224),
    "smolvlm_vision": Vit(12, 1152, 16, 3072, 32, 224),
    "llama4_vision_model": Vit(34, 768, 16, 5632, 14, 448),
}

_VIT_NAMES = {
    "clip_vision_model": "CLIP ViT",
    "siglip_vision_model": "SigLIP ViT",
    "pixtral": "Pixtral-ViT (2D RoPE, SwiGLU)",
    "internvl_vision": "InternViT",
    "intern_vit_6b": "InternViT",
    "idefics3_vision": "SigLIP ViT",
    "smolvlm_vision": "SigLIP ViT",
    "llama4_vision_model": "Llama 4 ViT",
}


def read_vit(vc: Cfg, vtype: str, r: Reader, absent: Vit | None = None) -> Vit:
    """Read a plain ViT config: ``absent`` when the file has no vision_config, else class defaults per key."""
    if not vc and absent is not None:
        return absent
    d = VIT_DEFAULTS[vtype]
    return Vit(
        layers=r.req_int(vc, "num_hidden_layers", d.layers),
        hidden=r.req_int(vc, "hidden_size", d.hidden),
        heads=r.req_int(vc, "num_attention_heads", d.heads),
        intermediate=r.req_int(vc, "intermediate_size", d.intermediate),
        patch=r.side(vc, "patch_size", d.patch),
        image=r.side(vc, "image_size", d.image),
    )


def vit_name(vtype: str, v: Vit) -> str:
    """The encoder's label in the spec, e.g. ``CLIP ViT 23L/1024d patch14 @336px``."""
    base = _VIT_NAMES.get(vtype, vtype)
    return f"{base} {v.layers}L/{v.hidden}d patch{v.patch} @{v.image}px"


def vision_spec(name: str, v: Vit, projector: ProjectorSpec, gated: bool = False, **kw: Any) -> VisionSpec:
    """The VisionSpec of a plain ViT and its projector."""
    return VisionSpec(encoder=name, num_layers=v.layers, hidden_size=v.hidden, num_heads=v.heads,
                      intermediate_size=v.intermediate, gated_mlp=gated, patch_size=v.patch, projector=projector, **kw)


def layers_used(total: int, feature_layer: object) -> int:
    """ViT layers vLLM builds: up to the deepest layer whose features are read (``vision_feature_layer``).

    LLaVA-1.5 reads layer -2 of 24, so 23 layers are loaded; -1 (or no setting) keeps them all."""
    indices = feature_layer if isinstance(feature_layer, list) else [feature_layer]
    deepest = [total + i if i < 0 else i for i in indices if isinstance(i, int) and not isinstance(i, bool)]
    return max(1, min(total, max(deepest) + 1)) if deepest else total


def composite_vit(cfg: Cfg, model_type: str, absent: tuple[str, Vit], default_layer: int, r: Reader) -> tuple[Vit, str]:
    """The tower of a LLaVA-style composite config (LLaVA, LLaVA-NeXT/OneVision, Mistral 3): (ViT, its type).

    ``absent`` is the composite class's own default vision_config (type and dimensions), used only when the
    file has no vision_config; the tower is trimmed to ``vision_feature_layer`` (``default_layer`` if unset)."""
    vc = r.obj(cfg, "vision_config")
    absent_type, absent_vit = absent
    vtype = vc.get("model_type") or absent_type
    if vtype not in VIT_DEFAULTS:
        raise r.refuse(
            f"unsupported vision_config.model_type '{vtype}' for model_type '{model_type}' "
            f"(supported: clip_vision_model, siglip_vision_model, pixtral)"
        )
    vit = read_vit(vc, vtype, r.at("vision_config."), absent_vit if vtype == absent_type else None)
    used = layers_used(vit.layers, cfg.get("vision_feature_layer", default_layer))
    return replace(vit, layers=used), vtype
