"""What one image costs (ImageTokens), and the parameters of a family's visual-token rule (TokenRule).

A rule's parameters come from three places, later winning: the rule's defaults (the processor class
defaults), the catalog entry's ``params`` (what the checkpoint ships), and the user's
``--mm-processor-kwargs``. They are merged and validated here once, against the type of each default, so
the per-family counting functions can read ``p["tile_size"]`` without checks. Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from planner.core.errors import CatalogError, RequestError

Params = dict[str, Any]
Alias = Callable[[Any], Params]


@dataclass(frozen=True)
class ImageTokens:
    """What one image costs.

    llm_tokens: tokens this image adds to the LLM's input sequence, wrapper/special tokens included
        (which ones: see the family module's docstring).
    encoder_patches: tokens the ViT's transformer blocks process, summed over all tiles/crops, before
        merging / pixel-shuffle / pooling; a CLS token is counted where the ViT has one.
    num_tiles: items of the encoder's forward pass (tiles/crops incl. thumbnail/global image); 1 for
        native-resolution rules.
    cross_attention_tokens: vision states the cross-attention layers attend to (mllama); 0 otherwise.
    resized_width, resized_height: image size after the processor's resize (tiled rules: the tile grid
        in pixels).
    encoder_sequences: attention sequences of the ViT's forward pass for this image: every tile/crop
        (thumbnail/global image included) is encoded as its own image, attending only within itself
        (InternVL, LLaVA-NeXT/OneVision, Idefics3/SmolVLM, Phi-3.5-vision, MiniCPM-V, Gemma 3 pan&scan,
        Llama 4), so ``encoder_patches / encoder_sequences`` patches per sequence; 1 for native-resolution
        rules and for Mllama, whose ViT attends across all tiles of an image in one sequence.
    """

    llm_tokens: int
    encoder_patches: int
    num_tiles: int
    cross_attention_tokens: int
    resized_width: int
    resized_height: int
    encoder_sequences: int = 1

    @classmethod
    def single(cls, llm_tokens: int, patches: int, width: int, height: int) -> ImageTokens:
        """One encoder item, one attention sequence (native-resolution rules, single-crop ViTs)."""
        return cls(llm_tokens, patches, 1, 0, width, height)

    @classmethod
    def tiled(cls, llm_tokens: int, tiles: int, patches_per_tile: int, width: int, height: int) -> ImageTokens:
        """``tiles`` equal encoder items, each encoded as its own image (its own attention sequence)."""
        return cls(llm_tokens, tiles * patches_per_tile, tiles, 0, width, height, tiles)


@dataclass(frozen=True)
class TokenRule:
    """One visual-token rule: its parameters' defaults and how it counts an image."""

    name: str
    defaults: Mapping[str, Any]
    """Processor defaults; a catalog entry's ``params`` and the user's options override them."""
    count: Callable[[Params, int, int], ImageTokens]
    """(params, width, height) -> what the image costs."""
    max_size: Callable[[Params], tuple[int, int]]
    """(width, height) of the image vLLM 0.33 profiles memory with (its ``get_image_size_with_most_features``)."""
    aliases: Mapping[str, Alias] = field(default_factory=dict)
    """vLLM/HF processor kwarg names accepted for our keys, each mapped to ``{our_key: value}``."""
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Allowed values of the string parameters."""


def size_edges(mapping: dict[str, str]) -> Alias:
    """Alias for an HF ``size``-style dict, e.g. ``{"longest_edge": 1003520}`` -> ``max_pixels``."""

    def convert(value: Any) -> Params:
        if not isinstance(value, Mapping):
            raise RequestError(
                f"processor option size={value!r}: expected a mapping like {{'longest_edge': N}}"
            )
        out: Params = {}
        for edge, v in value.items():
            if edge not in mapping:
                raise RequestError(
                    f"processor option size key {edge!r} is not supported; expected one of {sorted(mapping)}"
                )
            out[mapping[edge]] = v
        return out

    return convert


def rename(key: str) -> Alias:
    """Alias for a kwarg that is our ``key`` under another name."""
    return lambda value: {key: value}


def _is_pinpoints(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(p, (list, tuple))
        and len(p) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in p)
        for p in value
    )


def _check_value(rule: TokenRule, key: str, value: Any, error: type[Exception]) -> Any:
    """Validate one parameter against the type of its default; return it."""
    default = rule.defaults[key]
    where = f"{rule.name} option {key}={value!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise error(f"{where}: expected true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise error(f"{where}: expected a positive integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise error(f"{where}: expected a positive number")
        value = float(value)
    elif isinstance(default, str):
        if value not in rule.choices[key]:
            raise error(f"{where}: expected one of {list(rule.choices[key])}")
    elif isinstance(default, list):
        if not _is_pinpoints(value):
            raise error(f"{where}: expected a non-empty list of [height, width] pairs of positive integers")
        value = [[int(p[0]), int(p[1])] for p in value]
    return value


def resolve_params(rule: TokenRule, params: Mapping[str, Any], options: Mapping[str, Any] | None) -> Params:
    """Defaults <- the catalog's ``params`` <- the user's ``options`` (aliases mapped to our key names), validated.

    An unknown catalog key is a CatalogError (the entry is wrong); an unknown option a RequestError (the
    user's request is)."""
    defaults = rule.defaults
    out = dict(defaults)
    for key, value in params.items():
        if key not in defaults:
            raise CatalogError(f"{rule.name} rule param {key!r} is unknown; expected one of {sorted(defaults)}")
        out[key] = _check_value(rule, key, value, CatalogError)
    for key, value in (options or {}).items():
        if key in defaults:
            updates = {key: value}
        elif key in rule.aliases:
            updates = rule.aliases[key](value)
        else:
            known = sorted(set(defaults) | set(rule.aliases))
            raise RequestError(f"{rule.name} processor option {key!r} is unknown; expected one of {known}")
        for k, v in updates.items():
            out[k] = _check_value(rule, k, v, RequestError)
    return out


def check_size(width: Any, height: Any) -> None:
    """Image sizes are positive whole pixels (a request may carry anything)."""
    for label, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise RequestError(f"image {label}={v!r}: expected a positive integer number of pixels")
