"""Typed look-ups in a Hugging Face config dict, with errors that name the file and the key.

Config files are written by hand and by many tools, so every number is checked where it is read: a
string, a bool, ``NaN`` or a zero head count in config.json becomes one CatalogError naming the file and the
dotted key, rather than a division by zero or a silently wrong size later on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner.core.errors import CatalogError

Cfg = dict[str, Any]

POSITIVE = frozenset({
    "attention_heads", "depth", "embed_dim", "head_dim", "hidden_size", "image_size", "intermediate_size",
    "max_position_embeddings", "merge_size", "num_attention_heads", "num_heads", "num_hidden_layers",
    "num_key_value_heads", "patch_size", "spatial_merge_size", "temporal_patch_size", "vocab_size",
    "num_experts_per_tok", "out_hidden_size", "projector_output_dim", "vision_output_dim", "moe_intermediate_size",
})
"""Sizes that must be >= 1 when a config.json gives them (0 would divide by zero, or be silently replaced)."""


def _is_integral(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and int(value) == value)


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _is_int_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


class Reader:
    """Typed look-ups in one config dict; errors name the file, the key prefix (``where``) and the key.

    ``hint`` ends the errors that refuse a whole config (an unsupported type, a missing sub-config) with the
    list of supported model types; the registry supplies it, so family modules need not import the registry.
    """

    def __init__(self, file: Path, where: str = "", pp_file: Path | None = None, hint: str = "") -> None:
        self.file = file
        self.where = where
        self.pp_file = pp_file
        self.hint = hint

    def at(self, where: str) -> Reader:
        """A reader for a nested dict (``vision_config.``, ``text_config.``): errors carry the prefix."""
        return Reader(self.file, where, hint=self.hint)

    def pre(self) -> Reader:
        """A reader for preprocessor_config.json values (errors name that file)."""
        return Reader(self.pp_file or self.file)

    def refuse(self, message: str) -> CatalogError:
        """An error refusing the config as a whole, with the supported model types appended."""
        return CatalogError(f"{self.file}: {message}; supported model_type values: {self.hint}")

    def _fail(self, key: str, value: object, expected: str) -> CatalogError:
        return CatalogError(f"{self.file}: key '{self.where}{key}' must be {expected}, got {value!r}")

    def _get(self, cfg: Cfg, key: str, default: Any, ok: Callable[[Any], bool], expected: str) -> Any:
        """``cfg[key]`` (``default`` when absent), None when unset, else checked by ``ok``."""
        value = cfg.get(key, default)
        if value is not None and not ok(value):
            raise self._fail(key, value, expected)
        return value

    def opt_int(self, cfg: Cfg, key: str, default: int | None) -> int | None:
        value = self._get(cfg, key, default, _is_integral, "an integer")
        if value is None:
            return None
        if key in POSITIVE and value < 1:
            raise self._fail(key, value, "a positive integer")
        return int(value)

    def req_int(self, cfg: Cfg, key: str, default: int) -> int:
        value = self.opt_int(cfg, key, default)
        return default if value is None else value

    def num(self, cfg: Cfg, key: str, default: float) -> float:
        value = self._get(cfg, key, default, _is_number, "a number")
        return default if value is None else float(value)

    def flag(self, cfg: Cfg, key: str, default: bool) -> bool:
        value = self._get(cfg, key, default, lambda v: isinstance(v, bool), "true or false")
        return default if value is None else bool(value)

    def obj(self, cfg: Cfg, key: str) -> Cfg:
        value = self._get(cfg, key, None, lambda v: isinstance(v, dict), "an object")
        return {} if value is None else value

    def int_list(self, cfg: Cfg, key: str, default: list[int] | None) -> list[int] | None:
        value = self._get(cfg, key, default, _is_int_list, "a list of integers")
        return None if value is None else list(value)

    def side(self, cfg: Cfg, key: str, default: int) -> int:
        """An image/patch size given as an int, [h, w] or {"height": h, "width": w} (square assumed)."""
        value = cfg.get(key, default)
        if value is None:
            return default
        if isinstance(value, dict):
            value = value.get("height", value.get("longest_edge", default))
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self._fail(key, value, "a positive integer size")
        return value


def first_error(exc: ValueError) -> str:
    """The first problem of a pydantic ValidationError as ``loc: msg`` (one line for a CatalogError)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
        return f"{loc}: {first.get('msg')}"
    return str(exc).splitlines()[0]
