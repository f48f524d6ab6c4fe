"""Build a ModelSpec from a local Hugging Face ``config.json`` (``--model PATH``).

PATH is a ``config.json`` or a folder holding one; a ``preprocessor_config.json``
beside it supplies the image-processor settings (pixel budgets, tile counts).
Nothing is fetched: keys the file leaves out take the value the transformers
config class would give them, so the spec matches what vLLM builds from the same
file. This module reads the files and assembles the spec; what each model family's
keys mean lives in ``planner/catalog/families/`` (one module per family, chosen
by ``model_type`` through its registry).

Pre-quantized checkpoints are recognised from ``quantization_config`` (at the
top level or inside ``text_config`` / ``llm_config``): see
:func:`detect_checkpoint_precision` and :func:`read_quantization`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from planner.catalog.families.family import Family
from planner.catalog.families.reader import Cfg, Reader, first_error
from planner.catalog.families.registry import SUPPORTED_HINT, SUPPORTED_MODEL_TYPES, family_of
from planner.catalog.families.text import check_required, decoder
from planner.catalog.quantization import QuantizationInfo, quantization_of
from planner.catalog.schema import ModelSpec, Source
from planner.core.errors import CatalogError

__all__ = [
    "SUPPORTED_MODEL_TYPES", "QuantizationInfo", "load_model_from_path", "read_quantization",
    "detect_checkpoint_precision",
]  # fmt: skip

# --------------------------------------------------------------------------- file reading


def _config_file(path: Path) -> Path:
    """The config.json that PATH names (the file itself, or the one inside the folder)."""
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise CatalogError(
            f"{file}: no such config file (pass a Hugging Face config.json or a folder holding one; "
            f"supported model_type values: {SUPPORTED_HINT})"
        )
    return file


_ZERO_OK = {"extra_params", "shared_expert_intermediate_size", "num_sliding_window_layers"}
"""Sizes of a model that may be 0; every other number of a ModelSpec is a positive, finite size."""


def _check_sizes(file: Path, data: Any, where: str = "") -> None:
    """Zero, negative or non-finite sizes (num_attention_heads: 0, patch_size: 0, ...) are refused: vLLM could not
    load such a model and the planner would divide by them."""
    if isinstance(data, dict):
        for k, v in data.items():
            _check_sizes(file, v, f"{where}.{k}" if where else str(k))
    elif isinstance(data, (list, tuple)):
        for i, v in enumerate(data):
            _check_sizes(file, v, f"{where}[{i}]")
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        key = where.rsplit(".", 1)[-1]
        ok = math.isfinite(data) and (data >= 0 if key in _ZERO_OK else data > 0)
        if not ok:
            raise CatalogError(f"{file}: {where} = {data} is not a usable size (it must be a finite number "
                               f"{'>= 0' if key in _ZERO_OK else '> 0'}); check the config's fields")


def _read_json(file: Path) -> Cfg:
    """A JSON object from ``file``; NaN is let through so that _check_sizes can name the key that holds it."""
    from planner.core.errors import RequestError
    from planner.core.inputs import parse_json, read_text

    try:
        data = parse_json(read_text(file, "model config"), f"model config {file}", allow_nan=True)
    except RequestError as exc:
        raise CatalogError(f"{exc}; supported model_type values: {SUPPORTED_HINT}") from None
    if not isinstance(data, dict):
        raise CatalogError(
            f"{file}: expected a JSON object, got {type(data).__name__}; supported model_type values: {SUPPORTED_HINT}"
        )
    return data


def _preprocessor(config_file: Path) -> Cfg:
    """preprocessor_config.json beside the config, or {} when there is none."""
    file = config_file.parent / "preprocessor_config.json"
    return _read_json(file) if file.is_file() else {}


def read_quantization(path: Path) -> QuantizationInfo | None:
    """The checkpoint's quantization (method, bits, group size, precision), or None when unquantized.

    Raises UnsupportedError for a quantization the planner cannot model (e.g. NVFP4, bitsandbytes)."""
    file = _config_file(Path(path))
    return quantization_of(_read_json(file), file)


def detect_checkpoint_precision(path: Path) -> str | None:
    """'int4' / 'int8' / 'fp8' for a pre-quantized checkpoint, None for an unquantized one."""
    info = read_quantization(path)
    return None if info is None else info.precision


def _model_name(cfg: Cfg, file: Path) -> str:
    """``_name_or_path`` when it reads as a hub id; a local training path falls back to the folder name."""
    name = cfg.get("_name_or_path")
    if isinstance(name, str) and name.strip() and not name.startswith(("/", ".", "~")) and "\\" not in name:
        return name.strip()
    return file.parent.resolve().name or str(file)


def _family(cfg: Cfg, file: Path) -> tuple[str, Family]:
    """The config's ``model_type`` and the family that reads it; a missing or unknown type is refused."""
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise CatalogError(
            f"{file}: config lacks required key(s) model_type; supported model_type values: {SUPPORTED_HINT}"
        )
    family = family_of(model_type)
    if family is None:
        raise CatalogError(
            f"{file}: unsupported model_type '{model_type}'; supported model_type values: {SUPPORTED_HINT}"
        )
    return model_type, family


def _notes(model_type: str, text_type: str, quant: QuantizationInfo | None) -> str:
    """The spec's source note: what was read, and the checkpoint's quantization."""
    notes = f"model_type {model_type}; text config type {text_type}"
    if quant is not None:
        group = f", group size {quant.group_size}" if quant.group_size else ""
        notes += f"; pre-quantized: {quant.method} {quant.bits}-bit{group} -> {quant.precision}"
    return notes


def load_model_from_path(path: Path) -> ModelSpec:
    """Build a ModelSpec from a config.json (or a folder holding one)."""
    path = Path(path)
    file = _config_file(path)
    cfg = _read_json(file)
    r = Reader(file, pp_file=file.parent / "preprocessor_config.json", hint=SUPPORTED_HINT)
    model_type, family = _family(cfg, file)
    text = family.text_part(cfg, model_type, r)
    check_required(text, model_type, r)
    dec = decoder(text, cfg, r)
    vision = tokens = None
    if family.vision is not None:
        try:
            vision, tokens = family.vision(cfg, model_type, dec.hidden_size, _preprocessor(file), r)
        except ValueError as exc:
            raise CatalogError(f"{file}: inconsistent vision config ({first_error(exc)})") from None
    quant = quantization_of(cfg, file)
    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    name = _model_name(cfg, file)
    spec = ModelSpec(
        name=name,
        kind="vlm" if vision is not None else "llm",
        hf_architecture=arch or family.architectures[model_type],
        vllm_supported=family.vllm_supported,
        trust_remote_code=model_type in family.remote_code,
        decoder=dec,
        vision=vision,
        visual_tokens=tokens,
        quantized_checkpoints={quant.precision: name} if quant is not None else {},
        sources=[Source(kind="config", title=f"local {path}", notes=_notes(model_type, text.type, quant))],
    )
    _check_sizes(file, spec.model_dump(include={"decoder", "vision", "visual_tokens"}))
    return spec
