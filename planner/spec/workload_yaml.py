"""Workload files: YAML (or a dict from a scenario) -> ``Workload``, with distributions, images and traces."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from planner.core.errors import RequestError
from planner.core.inputs import first_problem
from planner.spec.workload import MAX_TRACE_S, PRESETS, ImageSize, IntDist, SizeDist, Workload, preset

_KEYS = {"name", "preset", "prompt_tokens", "output_tokens", "images_per_request", "image_size", "images",
         "prefix_cache_hit", "shared_prefix_tokens", "repeated_image_fraction", "arrival", "rate_per_s",
         "concurrency", "trace", "trace_file"}


def _clip(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else text[:80] + "..."


def _int_dist(key: str, raw: Any) -> IntDist:
    """``512`` | ``{value: 512}`` | ``{values: [..], weights: [..]}`` | ``{samples: [..]}``."""
    try:
        if isinstance(raw, bool):
            raise TypeError
        if isinstance(raw, float) and raw != int(raw):
            raise ValueError
        if isinstance(raw, (int, float)):
            return IntDist(kind="fixed", values=(int(raw),))
        if isinstance(raw, dict):
            extra = set(raw) - {"value", "values", "weights", "samples", "kind"}
            if extra:
                raise RequestError(f"{key}: unknown keys {sorted(extra)}; use value, values+weights or samples")
            if "value" in raw:
                return IntDist(kind="fixed", values=(int(raw["value"]),))
            if "samples" in raw:
                return IntDist(kind="empirical", values=tuple(int(v) for v in raw["samples"]))
            if "values" in raw:
                vals = tuple(int(v) for v in raw["values"])
                w = raw.get("weights")
                return IntDist(kind="weighted", values=vals,
                               weights=tuple(float(x) for x in w) if w is not None else tuple(1.0 for _ in vals))
        raise TypeError
    except (TypeError, ValueError, OverflowError, ValidationError):
        raise RequestError(f"{key}: {_clip(raw)} is not a count or a distribution "
                           "(a number, {value: N}, {values: [...], weights: [...]} or {samples: [...]})") from None


def _size_dist(key: str, raw: Any) -> SizeDist:
    try:
        if isinstance(raw, str):
            return SizeDist(kind="fixed", values=(ImageSize.model_validate(raw),))
        if isinstance(raw, dict):
            if "value" in raw:
                return SizeDist(kind="fixed", values=(ImageSize.model_validate(raw["value"]),))
            if "samples" in raw:
                return SizeDist(kind="empirical", values=tuple(ImageSize.model_validate(v) for v in raw["samples"]))
            if "values" in raw:
                vals = tuple(ImageSize.model_validate(v) for v in raw["values"])
                w = raw.get("weights")
                return SizeDist(kind="weighted", values=vals,
                                weights=tuple(float(x) for x in w) if w is not None else tuple(1.0 for _ in vals))
            if "width" in raw:
                return SizeDist(kind="fixed", values=(ImageSize.model_validate(raw),))
        raise TypeError
    except RequestError:
        raise
    except (TypeError, ValueError, OverflowError, ValidationError):
        raise RequestError(f"{key}: {_clip(raw)} is not an image size (\"WxH\") or a distribution of sizes") from None


def workload_from_dict(data: dict[str, Any], base_dir: Path | None = None) -> Workload:
    """Build a ``Workload`` from the YAML mapping described in the module docstring."""
    if not isinstance(data, dict):
        raise RequestError(f"a workload file holds a mapping (got {type(data).__name__})")
    unknown = set(data) - _KEYS
    if unknown:
        raise RequestError(f"unknown workload keys {sorted(unknown)}; expected some of {sorted(_KEYS)}")
    base = preset(data["preset"]) if "preset" in data else Workload()
    fields: dict[str, Any] = base.model_dump(exclude={"prompt_tokens_dist", "output_tokens_dist",
                                                      "images_per_request_dist", "image_size_dist"})
    fields["name"] = data.get("name", data.get("preset", "workload"))
    if "prompt_tokens" in data:
        d = _int_dist("prompt_tokens", data["prompt_tokens"])
        fields["prompt_tokens"] = round(d.mean())
        fields["prompt_tokens_dist"] = d if d.kind != "fixed" else None
    if "output_tokens" in data:
        d = _int_dist("output_tokens", data["output_tokens"])
        if min(d.values) < 1:
            raise RequestError(f"output_tokens must be >= 1 (got {min(d.values)}): every request generates a token")
        fields["output_tokens"] = max(1, round(d.mean()))
        fields["output_tokens_dist"] = d if d.kind != "fixed" else None
    if "images" in data:
        if not isinstance(data["images"] or [], list):
            raise RequestError(f"images is a list of image sizes (got {type(data['images']).__name__})")
        fields["images"] = [ImageSize.model_validate(v) for v in data["images"] or []]
    sizes = _size_dist("image_size", data["image_size"]) if "image_size" in data else None
    counts = _int_dist("images_per_request", data["images_per_request"]) if "images_per_request" in data else None
    if sizes is not None or counts is not None:
        n_rep = counts.mode() if counts is not None else max(1, len(fields["images"]))
        size_rep = sizes.mode() if sizes is not None else (
            ImageSize.model_validate(fields["images"][0]) if fields["images"] else None)
        if size_rep is None and (n_rep or (counts is not None and max(counts.values) > 0)):
            raise RequestError("images_per_request > 0 needs image_size")
        fields["images"] = [size_rep] * n_rep if n_rep else []
        if counts is not None and counts.kind != "fixed":
            fields["images_per_request_dist"] = counts
        if sizes is not None and sizes.kind != "fixed":
            fields["image_size_dist"] = sizes
            if counts is None:
                fields["images_per_request_dist"] = IntDist(kind="fixed", values=(max(1, len(fields["images"])),))
        if fields.get("image_size_dist") is None and counts is not None and counts.kind != "fixed" \
                and size_rep is not None:
            fields["image_size_dist"] = SizeDist(kind="fixed", values=(size_rep,))
    for key in ("prefix_cache_hit", "shared_prefix_tokens", "repeated_image_fraction"):
        if key in data:
            fields[key] = data[key]
    for key in ("rate_per_s", "concurrency"):
        if key in data:
            fields[key] = data[key]
    if "trace" in data or "trace_file" in data:
        fields["trace_s"] = tuple(_trace(data, base_dir))
    fields["arrival"] = data.get("arrival", "trace" if fields.get("trace_s") else
                                 "poisson" if fields.get("rate_per_s") else
                                 "closed" if fields.get("concurrency") else fields["arrival"])
    try:
        return Workload.model_validate(fields)
    except ValidationError as exc:
        where, _, msg = first_problem(exc, "workload")
        raise RequestError(f"workload {where}: {msg}") from None


def _trace(data: dict[str, Any], base_dir: Path | None) -> list[float]:
    if "trace" in data:
        raw = data["trace"]
    else:
        path = Path(data["trace_file"])
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        from planner.core.inputs import read_text

        lines = read_text(path, "trace_file").splitlines()
        raw = [line.split(",")[0] for line in lines if line.strip() and not line.startswith("#")]
    try:
        times = sorted(float(x) for x in raw)
    except (TypeError, ValueError):
        raise RequestError("trace: arrival times must be numbers (seconds)") from None
    bad = [t for t in times if not math.isfinite(t) or abs(t) > MAX_TRACE_S]
    if bad:
        raise RequestError(f"trace: arrival time {bad[0]} is not a finite number of seconds (at most {MAX_TRACE_S:g})")
    if not times:
        raise RequestError("trace: no arrival times")
    t0 = times[0]
    return [t - t0 for t in times]


def load_workload(path: str | Path) -> Workload:
    """Read a YAML workload file (see the module docstring); a preset name is accepted too."""
    from planner.core.inputs import clip, load_yaml_file

    p = Path(path)
    if str(path) in PRESETS and not p.exists():
        return PRESETS[str(path)]
    if not p.exists():
        raise RequestError(f"workload file {clip(p, 120)} not found (presets: {', '.join(PRESETS)})")
    data = load_yaml_file(p, "workload file")
    if data is None:
        raise RequestError(f"workload file {clip(p, 120)} is empty (give at least one workload key, or a preset)")
    try:
        return workload_from_dict(data, p.parent)
    except (TypeError, AttributeError, KeyError) as exc:  # a value of the wrong kind where a mapping/list/number goes
        raise RequestError(f"workload file {clip(p, 120)}: a value has the wrong type ({exc})") from exc
    except ValidationError as exc:
        from planner.catalog.loader import format_validation_error

        raise RequestError(f"workload file {clip(p, 120)}: {format_validation_error(exc)}") from exc
