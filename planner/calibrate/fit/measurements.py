"""Fit one GPU's calibration from its measurement files: which GPU, every section in dependency order, and which
file each constant was fitted on.

The order matters because later fits use earlier values: elementwise kernel latencies go into every GEMM and
attention prediction, the GEMM tile into the unaligned-shape penalty. ``fit_files`` is what
``python -m planner.calibrate.fit`` and ``vlmplan calibrate run`` call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from planner.calibrate.fit.allreduce import fit_allreduce
from planner.calibrate.fit.attention import ATTENTION_CONSTANTS, fit_attention, fit_attn_decode
from planner.calibrate.fit.calibration_file import build_calibration
from planner.calibrate.fit.fitted import Fitted, calibration_with
from planner.calibrate.fit.gemm import fit_gemm_bf16, fit_gemm_quant, fit_shape_effects
from planner.calibrate.fit.kernels import fit_elementwise, fit_launch, fit_quant
from planner.calibrate.fit.sibling import transfer_from_sibling
from planner.catalog.calibration_schema import Calibration
from planner.catalog.loader import catalog_root, load_calibration, load_gpus
from planner.catalog.schema import GpuSpec
from planner.core.errors import RequestError

VIT_SHAPES_CONSTANTS = ("elementwise_l2_efficiency", "l2_resident_bytes", "broadcast_kernel_latency_us",
                        "broadcast_memory_efficiency", "transposed_kernel_latency_us", "transposed_memory_efficiency")
"""Constants that, given vit_shapes.py files, are fitted on those alone (or mainly: the broadcast kind)."""

VIT_SHAPES_AND_MICROBENCH = ("kernel_latency_us", "elementwise_memory_efficiency", "norm_kernel_latency_us",
                             "norm_memory_efficiency", "gemm_compute_efficiency", "gemm_memory_efficiency",
                             "gemm_latency_us", "gemm_tile_m", "gemm_tile_n")
"""Constants that, given vit_shapes.py files, are fitted on them and the microbench together."""

QUANT_OPS_CONSTANTS = ("quant_latency_us", "quant_memory_efficiency")
ALLREDUCE_CONSTANTS = ("allreduce_latency_us", "allreduce_bus_efficiency", "allreduce_hop_latency_us")


def gpu_for(mb: dict[str, Any], name: str | None = None) -> GpuSpec:
    """The catalog GPU of a microbench file (its nvidia-smi name), or ``name``."""
    gpus = load_gpus()
    if name:
        return gpus.get(name)
    smi = str(mb.get("provenance", {}).get("gpu_name", ""))
    memory_mib = mb.get("provenance", {}).get("nvidia_smi", {}).get("memory_total_mib")
    words = smi.upper().replace("NVIDIA", "").split()
    form = next((f for f in ("PCIE", "NVL") if f in words), "SXM")  # "H100 80GB HBM3" is the SXM part
    for g in gpus:
        name = g.name.upper()
        same_memory = memory_mib is None or abs(g.memory_total_mib - float(memory_mib)) / g.memory_total_mib < 0.03
        form_ok = form in name or (form == "SXM" and "PCIE" not in name and "NVL" not in name)
        if words and name.startswith(words[0]) and same_memory and form_ok:
            return g
    raise RequestError(f"cannot tell which catalog GPU '{smi}' is; pass --gpu with a name from 'vlmplan catalog gpus'")


def _merge_sections(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Several result files of one script as one: each section's points pooled, the first provenance kept."""
    out: dict[str, Any] = {"provenance": files[0].get("provenance", {}) if files else {}}
    for f in files:
        for name, sec in f.items():
            if isinstance(sec, dict) and "points" in sec:
                out.setdefault(name, {"points": []})["points"] += sec["points"]
    return out


def _gpu_name(data: dict[str, Any]) -> str | None:
    return data.get("provenance", {}).get("gpu_name")


def fit_all(mb: dict[str, Any], gpu: GpuSpec, ar: dict[str, Any] | None = None,
            base: Calibration | None = None, se: dict[str, Any] | None = None,
            vs: dict[str, Any] | None = None, qo: dict[str, Any] | None = None) -> dict[str, Fitted]:
    """Every fittable constant, in dependency order (later fits use earlier values)."""
    cal = base or load_calibration("default")
    out: dict[str, Fitted] = {}

    def step(found: dict[str, Fitted]) -> None:
        nonlocal cal
        out.update(found)
        cal = calibration_with(cal, {k: f.value for k, f in found.items()})

    if "launch" in mb:
        step(fit_launch(mb))
    if "hbm" in mb:
        step(fit_elementwise(mb, gpu, cal, vs))
    if qo is not None:
        step(fit_quant(qo, gpu, cal))
    if "gemm" in mb:
        step(fit_gemm_bf16(mb, gpu, cal, vs))
        step(fit_gemm_quant(mb, gpu, cal, "fp8_e4m3_fastacc", "fp8", "fp8_gemm_compute_efficiency"))
        step(fit_gemm_quant(mb, gpu, cal, "int8", "int8", "int8_gemm_compute_efficiency"))
    if se is not None:
        step(fit_shape_effects(se, gpu, cal))
    same_gpu = se is not None and _gpu_name(se) == _gpu_name(mb)
    step(fit_attention(mb, gpu, cal, se if same_gpu else None, vs))
    if "attn_decode" in mb:
        step(fit_attn_decode(mb, gpu, cal))
    if ar is not None and "allreduce" in ar:
        step(fit_allreduce(ar, gpu, cal))
    return out



def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(catalog_root().parent))
    except ValueError:
        return str(path)



def _datasets(fitted: dict[str, Fitted], microbench: Path, shape_effects: Path | None, same_gpu_se: bool,
              vit_shapes: Sequence[Path], quant_ops: Path | None, allreduce: Path | None) -> dict[str, str]:
    """The file(s) each fitted constant was fitted on: the microbench file unless a section of another file fed
    it (``same_gpu_se``: the shape-effects file was measured on this GPU, so its attention timings were used)."""
    mb_file = _rel(microbench)
    by_constant: dict[str, str] = {}
    attention = [mb_file]
    if shape_effects:
        by_constant["gemm_unaligned_efficiency"] = _rel(shape_effects)
        if same_gpu_se:
            attention.append(_rel(shape_effects))
    if vit_shapes:
        vs_files = ", ".join(_rel(p) for p in vit_shapes)
        attention.append(vs_files)
        by_constant.update({k: vs_files for k in VIT_SHAPES_CONSTANTS})
        by_constant.update({k: f"{mb_file}, {vs_files}" for k in VIT_SHAPES_AND_MICROBENCH})
    if quant_ops:
        by_constant.update({k: _rel(quant_ops) for k in QUANT_OPS_CONSTANTS})
    by_constant.update({k: ", ".join(attention) for k in ATTENTION_CONSTANTS})
    if allreduce:
        by_constant.update({k: _rel(allreduce) for k in ALLREDUCE_CONSTANTS})
    return {k: by_constant.get(k, mb_file) for k in fitted}


def fit_files(microbench: Path, allreduce: Path | None = None, gpu_name: str | None = None,
              base: Calibration | None = None, fitted_on: str | None = None,
              shape_effects: Path | None = None, vit_shapes: Sequence[Path] = (),
              quant_ops: Path | None = None, sibling: Calibration | None = None) -> Calibration:
    """The calibration of the GPU that ``microbench`` was measured on, fitted on the given files (each section
    optional but the microbench), with ``sibling``'s constants for what this GPU has no run of; dated by the
    microbench run unless ``fitted_on`` is given."""
    mb = json.loads(microbench.read_text())
    ar = json.loads(allreduce.read_text()) if allreduce else None
    se = json.loads(shape_effects.read_text()) if shape_effects else None
    vs = _merge_sections([json.loads(p.read_text()) for p in vit_shapes]) if vit_shapes else None
    qo = json.loads(quant_ops.read_text()) if quant_ops else None
    gpu = gpu_for(mb, gpu_name)
    fitted = fit_all(mb, gpu, ar, base, se, vs, qo)
    same_gpu_se = se is not None and _gpu_name(se) == _gpu_name(mb)
    datasets = _datasets(fitted, microbench, shape_effects, same_gpu_se, vit_shapes, quant_ops, allreduce)
    if sibling is not None:
        transfer_from_sibling(fitted, datasets, gpu, sibling)
    day = fitted_on or str(mb.get("provenance", {}).get("utc_date", ""))[:10] or None
    return build_calibration(gpu, fitted, datasets, base, day)
