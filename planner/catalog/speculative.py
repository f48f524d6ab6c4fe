"""catalogs/speculative/<engine>.yaml: the speculative-decoding methods the engine runs (``--speculative-config``),
their default draft length and acceptance rate with provenance, and the public drafts per catalog model."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from planner.catalog import DEFAULT_ENGINE
from planner.catalog.loader import catalog_root, parse_file
from planner.catalog.schema import ModelSpec, Source, Strict
from planner.core.errors import CatalogError, UnsupportedError

SpecMethod = Literal["ngram", "eagle", "eagle3", "mtp"]
METHODS: tuple[SpecMethod, ...] = ("eagle3", "eagle", "mtp", "ngram")
"""Every method, in the order ``auto`` prefers them (trained drafts accept more than prompt lookup)."""


class MethodSpec(Strict):
    """One method of ``--speculative-config``."""

    needs_draft: bool
    """Whether a separate draft checkpoint must be named (``model`` in the JSON)."""
    default_num_speculative_tokens: int = Field(ge=1, le=16)
    """Draft tokens per step (``num_speculative_tokens``) the planner uses unless told otherwise."""
    default_acceptance_rate: float = Field(gt=0, lt=1)
    """Per-token acceptance of a chain draft (see the catalog file's header)."""
    extra_config: dict[str, int] = {}
    """Further keys of the JSON the emitter writes as they are (ngram's prompt-lookup window)."""
    applies_to: Literal["any", "drafts", "mtp_layers"]
    """Which models can use it: any model, those with a listed draft, or those shipping MTP layers."""
    source: Source
    default_draft_rate: float = Field(default=1.0, gt=0, le=1)
    """Share of a decoding sequence's steps that carry a draft: 1 for methods that draft every step (EAGLE, MTP);
    below 1 where a draft exists only when a lookup matches (n-gram). A property of the traffic, like acceptance."""
    draft_rate_source: Source | None = None
    """Where ``default_draft_rate`` comes from (required when it is below 1)."""
    disables_async_scheduling: bool = False
    """vLLM turns its asynchronous scheduler off when this method speculates (the engine's CPU work per step is
    then no longer hidden behind the GPU step)."""
    scheduling_source: Source | None = None
    """Where ``disables_async_scheduling`` comes from (required when it is true)."""

    @model_validator(mode="after")
    def _sourced(self) -> MethodSpec:
        if self.default_draft_rate < 1 and self.draft_rate_source is None:
            raise ValueError("default_draft_rate below 1 needs a draft_rate_source")
        if self.disables_async_scheduling and self.scheduling_source is None:
            raise ValueError("disables_async_scheduling needs a scheduling_source")
        return self


class DraftSpec(Strict):
    """A public draft for one catalog model (EAGLE-style heads: one or a few decoder layers at the target's
    width)."""

    target: str
    """Catalog name of the model it drafts for."""
    method: SpecMethod
    model: str
    """Hugging Face id of the draft (``model`` in the JSON)."""
    num_layers: int = Field(ge=1)
    """Decoder layers of the draft, each the size of one target layer."""
    draft_vocab_size: int | None = Field(default=None, ge=1)
    """Rows of the draft's own lm_head; None: it shares the target's full vocabulary."""
    params_b: float = Field(gt=0)
    """Parameters the draft adds to GPU memory, billions."""
    source: Source


class SpeculativeCatalog(Strict):
    schema_version: Literal[1] = 1
    engine: str
    methods: dict[SpecMethod, MethodSpec]
    drafts: list[DraftSpec]

    @model_validator(mode="after")
    def _drafts_named_methods(self) -> SpeculativeCatalog:
        for d in self.drafts:
            if d.method not in self.methods or not self.methods[d.method].needs_draft:
                raise ValueError(f"draft {d.model}: method {d.method} takes no draft checkpoint")
        return self


@functools.cache
def load_speculative(engine: str = DEFAULT_ENGINE, root: Path | None = None) -> SpeculativeCatalog:
    path = (root or catalog_root()) / "speculative" / f"{engine}.yaml"
    if not path.exists():
        raise CatalogError(f"no speculative-decoding catalog for engine '{engine}' ({path.name})")
    return parse_file(path, SpeculativeCatalog)


def draft_for(cat: SpeculativeCatalog, model: ModelSpec, method: SpecMethod) -> DraftSpec | None:
    """The listed draft of ``method`` for ``model`` (None: none listed)."""
    return next((d for d in cat.drafts if d.target == model.name and d.method == method), None)


def supported_methods(cat: SpeculativeCatalog, model: ModelSpec) -> list[SpecMethod]:
    """The methods ``model`` can run in ``auto``'s order of preference: trained drafts where one is listed, MTP
    where the checkpoint ships MTP layers (none of this catalog's models), n-gram for any model."""
    out: list[SpecMethod] = []
    for m in METHODS:
        spec = cat.methods.get(m)
        if spec is None:
            continue
        if spec.applies_to == "any" or (spec.applies_to == "drafts" and draft_for(cat, model, m) is not None):
            out.append(m)
    return out


def check_method(cat: SpeculativeCatalog, model: ModelSpec, method: str) -> SpecMethod:
    """``method`` as a known method ``model`` can run, else an error naming the ones it can."""
    if method not in cat.methods:
        raise UnsupportedError(f"unknown speculative method '{method}'; one of auto, off, {', '.join(METHODS)}")
    ok = supported_methods(cat, model)
    if method not in ok:
        why = ("it ships no MTP layers" if cat.methods[method].applies_to == "mtp_layers"  # type: ignore[index]
               else f"no public {method} draft is listed for it in catalogs/speculative/{cat.engine}.yaml")
        raise UnsupportedError(f"speculative method {method} is not available for {model.name}: {why} "
                               f"(available: {', '.join(ok)})")
    return method  # type: ignore[return-value]
