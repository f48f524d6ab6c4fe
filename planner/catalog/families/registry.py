"""The registry: which family reads a ``model_type``, and which family's rule a visual-token rule name is.

Adding a family is one module with a ``FAMILY`` and one line in ``FAMILIES``; the supported model types,
their order in error messages and the token-rule table all follow from it.
"""

from __future__ import annotations

from planner.catalog.families import (
    gemma3,
    idefics3,
    internvl,
    llama4,
    llava,
    minicpmv,
    mllama,
    phi3v,
    pixtral,
    qwen_vl,
)
from planner.catalog.families.family import Family
from planner.catalog.families.text import TEXT
from planner.catalog.families.tokens import TokenRule
from planner.core.errors import CatalogError

FAMILIES: tuple[Family, ...] = (
    TEXT,
    qwen_vl.FAMILY,
    llava.FAMILY,
    mllama.FAMILY,
    pixtral.FAMILY,
    internvl.FAMILY,
    gemma3.FAMILY,
    phi3v.FAMILY,
    idefics3.FAMILY,
    minicpmv.FAMILY,
    llama4.FAMILY,
)
"""Every family, in the order their model types are listed to the user."""

TEXT_MODEL_TYPES = TEXT.model_types
VLM_MODEL_TYPES = tuple(t for f in FAMILIES if f.vision is not None for t in f.model_types)
SUPPORTED_MODEL_TYPES = TEXT_MODEL_TYPES + VLM_MODEL_TYPES
SUPPORTED_HINT = ", ".join(SUPPORTED_MODEL_TYPES) + " (pixtral = llava with a pixtral vision_config)"
"""The supported model types as error messages list them."""

_BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}
_BY_RULE = {rule.name: rule for f in FAMILIES for rule in f.rules}


def family_of(model_type: str) -> Family | None:
    """The family reading configs of this ``model_type``, None when unsupported."""
    return _BY_MODEL_TYPE.get(model_type)


def token_rule(name: str) -> TokenRule:
    """The visual-token rule called ``name`` (a catalog entry's ``visual_tokens.rule``)."""
    rule = _BY_RULE.get(name)
    if rule is None:
        raise CatalogError(f"visual token rule {name!r} is unknown; expected one of {sorted(_BY_RULE)}")
    return rule
