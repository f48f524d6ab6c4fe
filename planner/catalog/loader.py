"""Read catalogs/, validate every file, index GPUs and models by name and alias.

The catalogs ship inside the installed distribution as ``planner/catalogs``
(pyproject maps the top-level ``catalogs/`` folder there); from a source
checkout they are read in place.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from planner.catalog import DEFAULT_ENGINE
from planner.catalog.calibration_schema import Calibration, ValidationStatus
from planner.catalog.schema import EngineSpec, GpuSpec, ModelSpec, PrecisionTable
from planner.core.errors import CatalogError

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader (10x faster) where PyYAML was built with it, else the pure-Python one."""

T = TypeVar("T", GpuSpec, ModelSpec)
P = TypeVar("P", bound=BaseModel)


def catalog_root() -> Path:
    """The folder holding gpus/, models/ and calibration/."""
    installed = Path(__file__).resolve().parent.parent / "catalogs"
    if (installed / "gpus").is_dir():
        return installed
    source = Path(__file__).resolve().parents[2] / "catalogs"
    if (source / "gpus").is_dir():
        return source
    raise CatalogError(f"catalog folder not found (looked in {installed} and {source})")


def format_validation_error(exc: ValidationError) -> str:
    """``field.path: message`` pairs joined by ``; ``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def read_yaml(path: Path) -> object:
    try:
        with path.open() as fh:
            return yaml.load(fh, Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader: libyaml's when present)
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML ({exc})") from None


def parse_file(path: Path, cls: type[P]) -> P:
    data = read_yaml(path)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(f"{path.name}: {format_validation_error(exc)}") from None


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


class Index(Generic[T]):
    """Name lookup with aliases and close-match suggestions."""

    def __init__(self, kind: str, items: list[T], names: dict[str, str]) -> None:
        self.kind = kind
        self.items: list[T] = items
        self._by_key: dict[str, T] = {i.name: i for i in items}
        self._names = names  # normalised name or alias -> canonical name

    def get(self, name: str) -> T:
        key = self._names.get(_norm(name))
        if key is None:
            close = difflib.get_close_matches(_norm(name), list(self._names), n=3, cutoff=0.5)
            canon = sorted({self._names[c] for c in close})
            hint = f"; did you mean {' or '.join(canon)}?" if canon else ""
            raise CatalogError(
                f"unknown {self.kind} '{name}'{hint} (list them with 'vlmplan catalog {self.kind}s')"
            )
        return self._by_key[key]

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _build_index(kind: str, items: list[T], extra_keys: Callable[[T], list[str]]) -> Index[T]:
    names: dict[str, str] = {}
    item: T
    for item in items:
        canonical = item.name
        for key in [canonical, *item.aliases, *extra_keys(item)]:
            k = _norm(key)
            if k in names and names[k] != canonical:
                raise CatalogError(f"{kind} name '{key}' is ambiguous: {names[k]} and {canonical}")
            names[k] = canonical
    return Index(kind, sorted(items, key=lambda i: i.name), names)


@functools.cache
def load_gpus(root: Path | None = None) -> Index[GpuSpec]:
    folder = (root or catalog_root()) / "gpus"
    items = [parse_file(p, GpuSpec) for p in sorted(folder.glob("*.yaml"))]
    return _build_index("gpu", items, lambda g: [])


def _model_short_names(m: ModelSpec) -> list[str]:
    # "Qwen/Qwen2.5-VL-7B-Instruct" also resolves as "Qwen2.5-VL-7B-Instruct".
    return [m.name.split("/", 1)[1]] if "/" in m.name else []


@functools.cache
def load_models(root: Path | None = None) -> Index[ModelSpec]:
    folder = (root or catalog_root()) / "models"
    items = [parse_file(p, ModelSpec) for p in sorted(folder.glob("*.yaml"))]
    return _build_index("model", items, _model_short_names)


@functools.cache
def load_engine(name: str = DEFAULT_ENGINE, root: Path | None = None) -> EngineSpec:
    path = (root or catalog_root()) / "engines" / f"{name}.yaml"
    if not path.exists():
        raise CatalogError(f"unknown engine '{name}' (no {path.name} in catalogs/engines)")
    return parse_file(path, EngineSpec)


@functools.cache
def load_precisions(root: Path | None = None) -> PrecisionTable:
    return parse_file((root or catalog_root()) / "precisions.yaml", PrecisionTable)


@functools.cache
@functools.cache
def load_validation_status() -> ValidationStatus:
    """catalogs/calibration/validation_status.yaml (read once per process)."""
    return parse_file(catalog_root() / "calibration" / "validation_status.yaml", ValidationStatus)


def calibration_status(gpu_name: str) -> tuple[str, str]:
    """(status, error band) of the GPU's predictions: ``real-serving``, ``kernels`` or ``uncalibrated``
    (catalogs/calibration/validation_status.yaml)."""
    vs = load_validation_status()
    if gpu_name in vs.real_serving:
        return "real-serving", vs.real_serving[gpu_name]
    if load_calibration(gpu_name).calibrated:
        return "kernels", vs.bands["kernels"]
    return "uncalibrated", vs.bands["uncalibrated"]


def uncalibrated_slo_margin() -> float:
    """solve's default margin on the SLOs of uncalibrated GPUs (catalogs/calibration/validation_status.yaml)."""
    return load_validation_status().uncalibrated_slo_margin


def calibration_path(gpu_name: str, engine: str = DEFAULT_ENGINE, root: Path | None = None) -> Path:
    return (root or catalog_root()) / "calibration" / f"{engine}-{gpu_name.lower()}.yaml"


@functools.cache
def load_calibration(gpu_name: str, engine: str = DEFAULT_ENGINE, root: Path | None = None) -> Calibration:
    """The GPU's calibration file, else the engine's default (uncalibrated)."""
    path = calibration_path(gpu_name, engine, root)
    if not path.exists():
        path = calibration_path("default", engine, root)
    return _calibration_at(path)


@functools.cache
def _calibration_at(path: Path) -> Calibration:
    """One parse per file: every uncalibrated GPU shares the engine's default (a frozen model)."""
    return parse_file(path, Calibration)


def load_calibration_file(path: Path) -> Calibration:
    """A user's calibration file (--calibration): read with the bounded input reader."""
    from planner.core.inputs import load_yaml_file

    data = load_yaml_file(path, "calibration file")
    try:
        return Calibration.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(f"calibration file {path}: {format_validation_error(exc)}") from None
