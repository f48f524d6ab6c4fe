"""Family: what the registry knows of one model family (its model types, config reading and token rules)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.families.tokens import TokenRule
from planner.catalog.schema import VisionSpec, VisualTokenRule


@dataclass(frozen=True)
class TextPart:
    """Where a config keeps its language model: the dict, its text config type, and how errors name it."""

    cfg: Cfg
    type: str
    """Text config type, a key of the text defaults (``llama``, ``qwen2_vl_text``, ``mllama_text_model``, ...)."""
    nested: bool
    """True for a composite config's sub-config (whose class fills what the file leaves out)."""
    where: str
    """Key prefix for error messages ("text_config.", "llm_config." or "")."""


TextPartFn = Callable[[Cfg, str, Reader], TextPart]
"""(config, model_type, reader) -> the dict holding the language model's keys, and its config type."""
VisionAndRule = tuple[VisionSpec, VisualTokenRule]
"""A family's vision tower and the token rule of its image processor."""
VisionFn = Callable[[Cfg, str, int, Cfg, Reader], VisionAndRule]
"""(config, model_type, text hidden size, preprocessor config, reader) -> the vision tower and its token rule."""


@dataclass(frozen=True)
class Family:
    """One model family: the ``model_type`` values it answers for, and both halves of its knowledge."""

    name: str
    architectures: Mapping[str, str]
    """model_type -> the ``architectures[0]`` vLLM dispatches on when config.json does not name one.
    Its keys, in order, are the model types this family reads."""
    text_part: TextPartFn
    vision: VisionFn | None = None
    """None for text-only LLMs."""
    rules: tuple[TokenRule, ...] = ()
    """The visual-token rules this family's processors follow."""
    remote_code: frozenset[str] = field(default_factory=frozenset)
    """Model types whose modeling code ships with the checkpoint (``--trust-remote-code``)."""
    vllm_supported: bool = True
    """False where vLLM 0.33 dropped the architecture (Mllama)."""

    @property
    def model_types(self) -> tuple[str, ...]:
        return tuple(self.architectures)
