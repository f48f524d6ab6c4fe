"""How many tokens one image costs, per VLM family, as vLLM 0.33 and the HF processors count them.

``image_tokens(rule, W, H, options)`` returns an :class:`ImageTokens`: the tokens the image adds to
the LLM's input sequence (placeholder features *and* the per-image wrapper/special tokens), the
tokens the vision encoder's transformer blocks process (summed over tiles, counted before any
merging / pixel-shuffle / pooling, CLS included where the ViT has one), the number of encoder items
(tiles, crops, thumbnail), the cross-attention states (Mllama) and the size after the processor's
resize. ``max_image_tokens(rule, options)`` evaluates the same count at the image size vLLM 0.33
profiles memory with (``get_image_size_with_most_features`` / the dummy-input builder).

``options`` are the processor kwargs a user passes with ``--mm-processor-kwargs``; they override
``rule.params``, which override the rule's defaults. Each rule accepts its own param keys plus the
vLLM/HF kwarg names listed as aliases. Pure functions: no I/O.

Each rule lives with its family in ``planner/catalog/families/`` (``qwen_vl``, ``llava``, ``mllama``,
``pixtral``, ``internvl``, ``gemma3``, ``phi3v``, ``idefics3``, ``minicpmv``, ``llama4``), whose docstring
names the processor and vLLM sources it follows (vllm==0.33.0, transformers==5.20.0, mistral_common 1.x,
the MiniCPM-V / Phi-3.5-vision remote code) and the approximations it makes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planner.catalog.families.registry import token_rule
from planner.catalog.families.tokens import ImageTokens, check_size, resolve_params
from planner.catalog.schema import VisualTokenRule

__all__ = ["ImageTokens", "image_tokens", "max_image_tokens"]


def image_tokens(
    rule: VisualTokenRule, width: int, height: int, options: Mapping[str, Any] | None = None
) -> ImageTokens:
    """Tokens one ``width`` x ``height`` image costs under ``rule`` with processor ``options``."""
    check_size(width, height)
    family_rule = token_rule(rule.rule)
    return family_rule.count(resolve_params(family_rule, rule.params, options), width, height)


def max_image_tokens(rule: VisualTokenRule, options: Mapping[str, Any] | None = None) -> ImageTokens:
    """The per-item maximum vLLM 0.33 profiles memory with, under these options.

    Evaluates :func:`image_tokens` at the image size of vLLM's ``get_image_size_with_most_features``
    (or the dummy-input builder's image where the model has no such method)."""
    family_rule = token_rule(rule.rule)
    params = resolve_params(family_rule, rule.params, options)
    width, height = family_rule.max_size(params)
    return family_rule.count(params, width, height)
