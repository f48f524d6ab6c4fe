"""Fitted constants -> a ``calibrated: true`` Calibration with provenance per constant, and its YAML text.

A constant that was fitted carries method, dataset, number of points, MAPE and date; one that was not keeps the
base (default) calibration's value with a note saying why it was not fitted, so a reader of the catalog file can
tell a measurement from a guess.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import yaml

from planner.calibrate.fit.fitted import Fitted
from planner.catalog.calibration_schema import Calibration, Constant, FitInfo
from planner.catalog.loader import load_calibration
from planner.catalog.schema import GpuSpec, Source

NOT_FITTED = {
    "transposed_kernel_latency_us": "no vit_shapes.py transposed run of this GPU",
    "transposed_memory_efficiency": "no vit_shapes.py transposed run of this GPU",
    "quant_latency_us": "no quant_ops.py run of this GPU",
    "quant_memory_efficiency": "no quant_ops.py run of this GPU",
    "elementwise_l2_efficiency": "no vit_shapes.py run of this GPU (hot vs rotating buffers)",
    "l2_resident_bytes": "no vit_shapes.py run of this GPU (hot vs rotating buffers)",
    "int4_gemm_compute_efficiency": "the device had no Marlin/Machete W4A16 kernel; torch's tinygemm int4 kernel "
                                    "in the microbench is a different implementation (slow above M = 8)",
    "allreduce_latency_us": "no multi-GPU run of this GPU",
    "allreduce_hop_latency_us": "no all-reduce run of this GPU over more than one ring size",
    "allreduce_bus_efficiency": "no multi-GPU run of this GPU",
    "p2p_latency_us": "no pipeline-parallel measurement",
    "engine_step_overhead_ms": "engine-level: fit it with 'vlmplan calibrate fit --bench' on vllm bench serve results",
    "engine_per_seq_overhead_ms": "engine-level, not measured",
}
"""Why a constant kept its default, written into its note."""


def rounded(x: float) -> float:
    """A fitted number as the catalog files keep it: 4 decimals below 1000, hundreds above."""
    return round(x, 4) if abs(x) < 1e3 else round(x, -2)


def fit_info(f: Fitted, dataset: str, day: str) -> FitInfo:
    """The provenance of fitted constant ``f``, with its bound flag when it ended at a bound of its fit."""
    mape = round(f.mape_pct, 2) if f.mape_pct is not None else None
    b = f.at_bound
    return FitInfo(method=f.method, dataset=dataset, n_points=f.n_points, mape_pct=mape, fitted_on=day,
                   at_bound=b.side if b else None, bound=rounded(b.bound) if b else None,
                   unbounded_value=rounded(b.unbounded_value) if b and b.unbounded_value is not None else None)


def build_calibration(gpu: GpuSpec, fitted: dict[str, Fitted], datasets: dict[str, str],
                      base: Calibration | None = None, fitted_on: str | None = None,
                      extra_sources: Sequence[Source] = ()) -> Calibration:
    """A ``calibrated: true`` Calibration: fitted constants with provenance, the rest from ``base``.

    ``datasets`` maps a constant to the file(s) it was fitted on."""
    base = base or load_calibration("default")
    day = fitted_on or _dt.date.today().isoformat()
    consts: dict[str, Constant] = {}
    for name, c in base.constants.items():
        f = fitted.get(name)
        if f is None:
            why = NOT_FITTED.get(name, "not in the microbenchmarks")
            note = (c.note + "; " if c.note else "") + f"not fitted ({why}): default kept"
            consts[name] = Constant(value=c.value, unit=c.unit, fit=c.fit, note=note if c.fit is None else c.note)
            continue
        consts[name] = Constant(value=rounded(f.value), unit=c.unit, note=None, fit=fit_info(f, datasets[name], day))
    srcs = [Source(kind="fitted", title=f"planner/calibrate/fit/ on {', '.join(sorted(set(datasets.values())))}",
                   retrieved=day), *extra_sources]
    return Calibration(gpu=gpu.name, engine=base.engine, calibrated=True, constants=consts, sources=srcs)


def calibration_yaml(cal: Calibration, header: str = "") -> str:
    """The catalog YAML of ``cal`` (fields in schema order, as the shipped files are), ``header`` as comments."""
    data = cal.model_dump(mode="json", exclude_none=True)
    text = yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True)
    return "".join(f"# {line}\n" for line in header.splitlines()) + text

