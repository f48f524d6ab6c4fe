"""Reading the user's input files safely: one place that turns a bad file into one ``RequestError`` line.

Every file a user names (workload, scenario, plan, prices, calibration, bench, trace) is read with
``read_text`` (a regular, UTF-8 text file of bounded size) and parsed with ``parse_yaml`` / ``parse_json``
(bounded nesting depth; YAML aliases bounded in their expanded size, so an alias bomb is refused instead of
hanging; JSON ``NaN``/``Infinity`` refused).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from planner.core.errors import RequestError

MAX_FILE_BYTES = 32 * 1024 * 1024
"""Largest input file read (a trace of a million arrivals fits easily)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings/lists accepted in a YAML or JSON input (vlmplan's own files nest < 8 deep)."""
MAX_NODES = 500_000
"""Most YAML nodes after expanding aliases (an alias bomb expands to billions)."""
MAX_TEXT = 200
"""Longest user-supplied value quoted back in an error message."""

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def first_problem(exc: Exception, root: str = "") -> tuple[str, Any, str]:
    """(where, offending value, message) of the first problem of a pydantic ``ValidationError``: the one line a
    ``RequestError`` says. ``where`` is the dotted field path, or ``root`` for the document itself."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return root, None, str(exc).splitlines()[0]
    first = errors()[0]
    return ".".join(str(p) for p in first.get("loc", ())) or root, first.get("input"), str(first.get("msg"))


def clip(value: Any, limit: int = 60) -> str:
    """``repr``-like text of a user value, cut to ``limit`` characters for an error message."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def read_text(path: Path | str, what: str) -> str:
    """The text of a regular UTF-8 file; a missing path, a folder, a binary/UTF-16 file or a huge one is a
    ``RequestError`` naming ``what`` and the path."""
    p = Path(path)
    shown = clip(p, 120)
    try:
        if not p.exists():
            raise RequestError(f"{what} {shown} not found")
        if p.is_dir():
            raise RequestError(f"{what} {shown} is a folder, not a file")
        if not p.is_file():
            raise RequestError(f"{what} {shown} is not a regular file")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RequestError(f"{what} {shown} is too large ({size:,} bytes; at most {MAX_FILE_BYTES:,})")
        raw = p.read_bytes()
    except OSError as exc:
        raise RequestError(f"cannot read {what} {shown}: {exc.strerror or exc}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        raise RequestError(f"{what} {shown} is not UTF-8 text (binary or UTF-16 content)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"{what} {shown} is not UTF-8 text (bad byte at offset {exc.start})") from None
    return text.removeprefix("\ufeff")


def _check_yaml_shape(text: str, what: str) -> None:
    """Walk the YAML event stream (iterative, no recursion): refuse deep nesting and alias expansions that
    would build more than ``MAX_NODES`` nodes."""
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = [[None, 0]]  # [anchor, expanded nodes so far]
    for event in yaml.parse(text, Loader=_SAFE_LOADER):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append([event.anchor, 1])
            if len(stack) - 1 > MAX_DEPTH:
                raise RequestError(f"{what} nests deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, n = stack.pop()
            if anchor is not None:
                sizes[anchor] = n
            stack[-1][1] += n
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = 1
            stack[-1][1] += 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                if any(frame[0] == event.anchor for frame in stack):
                    raise RequestError(f"{what}: recursive YAML alias *{clip(event.anchor)}")
                continue  # undefined: the loader reports it
            stack[-1][1] += sizes[event.anchor]
        if sum(frame[1] for frame in stack) > MAX_NODES:
            raise RequestError(f"{what} expands to more than {MAX_NODES:,} YAML nodes (aliases)")


def parse_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load`` with bounded depth and alias expansion; errors are one ``RequestError`` line."""
    try:
        _check_yaml_shape(text, what)
        return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise RequestError(f"{what} is not valid YAML: {clip(first, 160)}") from None
    except RecursionError:
        raise RequestError(f"{what} nests too deeply") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(text: str, what: str, *, allow_nan: bool = False) -> Any:
    """``json.loads`` refusing nesting deeper than ``MAX_DEPTH`` and (unless ``allow_nan``: the caller checks
    the numbers it uses) ``NaN``/``Infinity``."""
    depth = 0
    in_str = esc = False
    for ch in text:  # bracket depth outside strings, before the recursive parser sees it
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise RequestError(f"{what} nests deeper than {MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1
    try:
        return json.loads(text) if allow_nan else json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RequestError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:
        raise RequestError(f"{what}: {exc}") from None
    except RecursionError:
        raise RequestError(f"{what} nests too deeply") from None


def load_yaml_file(path: Path | str, what: str) -> Any:
    return parse_yaml(read_text(path, what), f"{what} {clip(path, 120)}")


def load_json_file(path: Path | str, what: str) -> Any:
    return parse_json(read_text(path, what), f"{what} {clip(path, 120)}")


def finite(value: float, name: str, *, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False) -> float:
    """``value`` when it is a finite number in [lo, hi] (``(lo, hi]`` with ``lo_open``), else a
    ``RequestError`` naming ``name``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number (got {clip(value)})")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise RequestError(f"{name} must be {'>' if lo_open else '>='} {lo:g} (got {clip(value)})")
    if hi is not None and value > hi:
        raise RequestError(f"{name} must be <= {hi:g} (got {clip(value)})")
    return float(value)
