"""Scenario files: a model, a workload, SLOs and a budget, and optionally one fixed configuration.

``vlmplan whatif`` and ``vlmplan compare`` read them. Every key is checked
(unknown keys are an error)::

    name: chatbot-rtx4090
    description: Interactive chatbot with a 7B VLM on one RTX 4090 at INT4
    model: Qwen/Qwen2.5-VL-7B-Instruct
    config:                       # the fixed configuration (--fixed); the solver ignores it
      gpu: RTX-4090
      tp: 1
      precision: int4             # bf16 | fp16 | fp8 | int8 (W8A8) | int4 (W4A16)
      kv_cache_dtype: auto
      max_model_len: 8k           # tokens; 8k = 8192, 128k = 131072
      max_num_seqs: 1
      limit_images: 1             # --limit-mm-per-prompt image=1
    workload:                     # a preset name, a workload file, or the workload mapping inline
      preset: visual-reasoning
      rate_per_s: 0.5
    slo: [ttft_p95=500ms, tpot_p95=100ms]
    budget: 1xRTX-4090            # the solver's budget grammar (4xA100, $40/h, ...)
    search:                       # the solver's search space (solver mode only)
      gpus: [RTX-4090, L40S]
      precisions: [int4, int8]
      objective: cost
      prices: {RTX-4090: 0.6}

The workload mapping is the YAML workload format of ``planner.spec.workload``;
relative file names resolve against the scenario's folder.

A *fleet* (``vlmplan solve --scenario``) lists several workloads sharing the
budget instead of one ``workload``; each may serve its own model and have its
own SLOs (``model`` and ``slo`` at the top level are the defaults; without a top-level ``model``, the first
workload's is)::

    name: fleet
    budget: 8xH100,16xL40S
    slo: [ttft_p95=1s]
    workloads:
      - name: docs
        model: Qwen/Qwen2.5-VL-7B-Instruct
        workload: {preset: document-vqa, rate_per_s: 2}
        slo: [ttft_p95=2s, tpot_p95=60ms]
      - name: chat
        model: meta-llama/Llama-3.1-8B-Instruct
        workload: {preset: chat, rate_per_s: 10}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from planner.core.errors import RequestError
from planner.core.inputs import first_problem
from planner.spec.workload import PRESETS, Workload
from planner.spec.workload_yaml import load_workload, workload_from_dict

MAX_TOKENS = 1 << 30
"""Largest token count any input takes (far above any model's context)."""
_TOKENS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_tokens(text: str | int, what: str = "context") -> int:
    """``8k`` -> 8192, ``128K`` -> 131072, ``1m`` -> 1048576, ``4096`` -> 4096 (k = 1024 tokens)."""
    if isinstance(text, bool):
        raise RequestError(f"{what} '{text}' is not a token count (e.g. 8192, 8k, 32k, 128k)")
    if isinstance(text, int):
        value = text
    else:
        m = _TOKENS.match(str(text))
        if not m:
            raise RequestError(f"{what} '{text}' is not a token count (e.g. 8192, 8k, 32k, 128k)")
        scale = {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
        number = float(m.group(1)) * scale
        if not number <= MAX_TOKENS:
            raise RequestError(f"{what} '{str(text)[:40]}' is out of range (at most {MAX_TOKENS:,} tokens)")
        value = int(round(number))
    if value < 1:
        raise RequestError(f"{what} '{text}' must be at least 1 token")
    if value > MAX_TOKENS:
        raise RequestError(f"{what} '{str(text)[:40]}' is out of range (at most {MAX_TOKENS:,} tokens)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FixedConfig(_Strict):
    """One replica's configuration, as ``vlmplan estimate`` takes it."""

    gpu: str
    tp: int = Field(default=1, ge=1, le=4096)
    pp: int = Field(default=1, ge=1, le=4096)
    precision: Literal["bf16", "fp16", "fp8", "int8", "int4"] = "bf16"
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    max_model_len: int | None = None
    max_num_seqs: int | None = Field(default=None, ge=1, le=1 << 20)
    max_num_batched_tokens: int | None = Field(default=None, ge=1, le=1 << 30)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    mm_encoder_tp_mode: Literal["weights", "data"] = "weights"
    limit_images: int | None = Field(default=None, ge=0, le=1 << 20)
    mm_processor_kwargs: dict[str, Any] = {}
    api_server_count: int = Field(default=1, ge=1, le=256)
    """vLLM ``--api-server-count`` (its default 1; ``solve`` decides it)."""
    price_usd_per_gpu_hour: float | None = Field(default=None, gt=0, le=100_000)
    """Overrides the catalog price of ``gpu``."""

    @field_validator("max_model_len", mode="before")
    @classmethod
    def _tokens(cls, v: Any) -> Any:
        return None if v is None else parse_tokens(v, "max_model_len")


class SearchSpace(_Strict):
    """What the solver may choose from (solver mode)."""

    gpus: list[str] | None = None
    precisions: list[Literal["bf16", "fp16", "fp8", "int8", "int4"]] | None = None
    kv_cache_dtypes: list[Literal["auto", "fp8"]] | None = None
    objective: Literal["cost", "gpus", "latency"] = "cost"
    prices: dict[str, Annotated[float, Field(gt=0, le=100_000)]] = {}
    """GPU name -> USD per GPU-hour, overriding the catalog."""
    max_load: float | None = Field(default=None, gt=0, le=1)
    """Ceiling on a replica's offered load, as a fraction of its saturation throughput (default 0.85)."""


def _resolve_workload(ref: str | dict[str, Any], base_dir: Path | None) -> Workload:
    """A preset name, a workload file (relative to ``base_dir``), or the inline mapping."""
    if isinstance(ref, dict):
        return workload_from_dict(ref, base_dir)
    if ref in PRESETS:
        return PRESETS[ref]
    path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.exists():
        raise RequestError(f"workload '{ref}' is neither a preset ({', '.join(PRESETS)}) nor a file")
    return load_workload(path)


class FleetWorkload(_Strict):
    """One workload of a fleet: its traffic, and optionally its own model and SLOs."""

    name: str | None = None
    """Default: the workload's own name (its preset's)."""
    model: str | None = None
    """Default: the scenario's ``model``."""
    workload: str | dict[str, Any]
    slo: list[str] | None = None
    """Default: the scenario's ``slo``."""

    @field_validator("slo", mode="before")
    @classmethod
    def _slo_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class Scenario(_Strict):
    name: str = "scenario"
    description: str = ""
    model: str
    config: FixedConfig | None = None
    workload: str | dict[str, Any] = "visual-reasoning"
    workloads: list[FleetWorkload] = []
    """A fleet: several workloads sharing the budget (``vlmplan solve --scenario``); replaces ``workload``."""
    slo: list[str] = []
    budget: str | None = None
    search: SearchSpace = SearchSpace()
    _base_dir: Path | None = PrivateAttr(default=None)
    """Folder of the scenario file (relative workload files resolve against it)."""

    @property
    def base_dir(self) -> Path | None:
        return self._base_dir

    @model_validator(mode="before")
    @classmethod
    def _fleet(cls, data: Any) -> Any:
        """A fleet needs no top-level ``model`` when its first workload names one."""
        if not isinstance(data, dict) or not data.get("workloads"):
            return data
        first = data["workloads"][0] if isinstance(data["workloads"], list) else None
        if "model" not in data and isinstance(first, dict) and isinstance(first.get("model"), str):
            data = {**data, "model": first["model"]}
        return data

    @field_validator("slo", mode="before")
    @classmethod
    def _slo_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def load_workload(self) -> Workload:
        """The workload: a preset name, a workload file, or the inline mapping (one workload; not a fleet)."""
        if self.workloads:
            raise RequestError(f"scenario '{self.name}' is a fleet of {len(self.workloads)} workloads: "
                               f"use 'vlmplan solve --scenario' (whatif and compare take one workload)")
        return _resolve_workload(self.workload, self.base_dir)

    def fleet(self) -> list[tuple[str, str, Workload, list[str]]]:
        """(name, model, workload, SLOs) of every workload: the fleet's, or the single ``workload``."""
        if not self.workloads:
            wl = self.load_workload()
            return [(wl.name, self.model, wl, list(self.slo))]
        out = []
        for i, entry in enumerate(self.workloads):
            try:
                wl = _resolve_workload(entry.workload, self.base_dir)
            except RequestError as exc:
                raise RequestError(f"workloads[{i}]: {exc}") from None
            name = entry.name or wl.name
            out.append((name, entry.model or self.model, wl.model_copy(update={"name": name}),
                        list(entry.slo) if entry.slo is not None else list(self.slo)))
        names = [n for n, *_ in out]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise RequestError(f"workloads: name '{dup[0]}' is used twice; give each workload a unique 'name'")
        return out


def _first_error(exc: ValidationError) -> str:
    loc, _, msg = first_problem(exc, "scenario")
    return f"{loc}: {msg}"


def scenario_from_dict(data: Any, base_dir: Path | None = None, source: str = "scenario") -> Scenario:
    if not isinstance(data, dict):
        raise RequestError(f"{source}: a scenario is a mapping with at least 'model' (got {type(data).__name__})")
    if "workloads" in data and not data["workloads"]:
        raise RequestError(f"{source}: 'workloads' is empty: list at least one workload, or drop the key")
    if data.get("workloads"):
        if "workload" in data:
            raise RequestError(f"{source}: give 'workload' (one) or 'workloads' (a fleet), not both")
        if data.get("config") is not None:
            raise RequestError(f"{source}: 'config' (a fixed configuration) is for one workload, not a fleet")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        raise RequestError(f"{source}: {_first_error(exc)}") from None
    sc._base_dir = base_dir
    return sc


def read_yaml_file(path: Path, what: str) -> Any:
    from planner.core.inputs import load_yaml_file

    return load_yaml_file(path, what)


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    return scenario_from_dict(read_yaml_file(p, "scenario file"), p.parent, str(p))
