"""Fit the speed model's constants to a GPU's microbenchmarks (numpy/scipy only).

Input: a JSON written by ``planner/calibrate/microbench.py`` (sections
``launch``, ``hbm``, ``gemm``, ``attn_prefill``, ``attn_decode``,
``elementwise``) and optionally one with an ``allreduce`` section (several
GPUs). Output: a ``Calibration`` (``catalogs/calibration/vllm-0.33-<gpu>.yaml``)
whose fitted constants each carry provenance: method, dataset file, number of
points, MAPE of the fitted model on those points, date.

The fit evaluates the planner's own op formulas (``planner.speed.Roofline``),
so each constant means exactly what the model does with it. Few parameters,
each physical; least squares on log(time) (relative errors):

* ``graph_launch_gap_us``, ``eager_launch_us``: read directly from ``launch``
  (GPU time per kernel inside a 1000-kernel CUDA graph; host time to launch
  one kernel while the GPU is busy).
* ``kernel_latency_us`` + ``elementwise_memory_efficiency``: device-to-device
  copies (``hbm``, buffers up to 256 MiB: larger copies run slower on these
  cards for a reason not established, see the measurements README) as
  ``latency + bytes / (bandwidth x eff)``.
* ``gemm_compute_efficiency``, ``gemm_memory_efficiency``, ``gemm_tile_m/n``:
  bf16 GEMMs over M = 1..16384 on decoder/ViT shapes, roofline with wave
  quantisation; the tile is picked from a few CUTLASS/cuBLAS tile shapes by
  the same criterion (a discrete choice, not a free parameter).
* ``fp8_gemm_compute_efficiency`` (``fp8_e4m3_fastacc``: fast accumulation,
  as vLLM's CUTLASS W8A8 kernel and the validation script run),
  ``int8_gemm_compute_efficiency`` (``torch._int_mm``; M < 32 is padded to 32
  by the kernel and fitted at the padded M): only the compute efficiency, the
  memory side is shared with bf16.
* ``int4_gemm_compute_efficiency``: NOT fitted. The device had no Marlin/
  Machete kernel; torch's tinygemm int4 kernel is a different (much slower at
  M > 8) implementation, so the default is kept.
* ``attention_prefill_compute_efficiency``: SDPA with the default backend
  (cuDNN on H100/H200), causal GQA and non-causal ViT shapes.
* ``attention_decode_memory_efficiency``, ``attention_decode_half_bytes``:
  the fastest form/backend per decode shape (what the validation script and
  vLLM's FlashAttention decode pick); the model
  ``latency + (bytes + half) / (bandwidth x eff)`` is linear in bytes.
* ``allreduce_latency_us``, ``allreduce_bus_efficiency``: NCCL all-reduce
  inside a CUDA graph (``graph_time_us``, how vLLM replays decode), ring model
  ``2(n-1) x latency + 2(n-1)/n x bytes / (link x eff)``.

Everything else (``p2p_latency_us``, engine overheads, int4) is copied from
the base (default) calibration with its note.

Usage::

    python -m planner.calibrate.fit MICROBENCH.json [--allreduce AR.json] [--gpu NAME] --out FILE.yaml
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import ArrayLike
from scipy.optimize import least_squares

from planner.catalog.loader import catalog_root, load_calibration, load_gpus, load_precisions
from planner.catalog.schema import Calibration, Constant, FitInfo, GpuSpec, Source
from planner.errors import RequestError
from planner.speed import Roofline

COPY_MAX_BUFFER_BYTES = 256 * 1024**2
"""Largest copy buffer used for the bandwidth fit (see module docstring)."""
TILE_CANDIDATES = ((64, 128), (128, 128), (128, 256), (256, 128))
"""Output-tile shapes of the Hopper GEMM kernels cuBLAS/CUTLASS pick from."""


@dataclass(frozen=True)
class Fitted:
    """One fitted constant before it becomes a catalog ``Constant``."""

    value: float
    method: str
    n_points: int
    mape_pct: float | None


def calibration_with(base: Calibration, values: dict[str, float]) -> Calibration:
    """``base`` with some constant values replaced (no validation: used inside the fit loop)."""
    consts = dict(base.constants)
    for k, v in values.items():
        consts[k] = Constant.model_construct(value=float(v), unit=consts[k].unit, fit=None, note=None)
    return Calibration.model_construct(schema_version=1, gpu=base.gpu, engine=base.engine, calibrated=False,
                                       constants=consts, sources=base.sources)


def mape_pct(pred: ArrayLike, meas: ArrayLike) -> float:
    p, m = np.asarray(pred, float), np.asarray(meas, float)
    return float(np.mean(np.abs(p - m) / m) * 100.0)


def _log_fit(names: list[str], x0: list[float], bounds: tuple[list[float], list[float]],
             predict: Callable[[dict[str, float]], np.ndarray], measured: np.ndarray) -> dict[str, float]:
    """Least squares on log(predicted) - log(measured) over the named parameters."""
    def resid(x: np.ndarray) -> np.ndarray:
        return np.log(predict(dict(zip(names, x)))) - np.log(measured)

    res = least_squares(resid, np.asarray(x0, float), bounds=bounds, x_scale="jac", diff_step=1e-4)
    return dict(zip(names, (float(v) for v in res.x)))


# --------------------------------------------------------------------------- sections


def fit_launch(mb: dict[str, Any]) -> dict[str, Fitted]:
    la = mb["launch"]
    return {
        "graph_launch_gap_us": Fitted(float(la["graph_us_per_kernel"]),
                                      "direct: GPU time per kernel of a 1000-kernel CUDA graph of 1-element adds", 1,
                                      None),
        "eager_launch_us": Fitted(float(la["eager_launch_cpu_us_per_kernel"]),
                                  "direct: host time per eager launch while the GPU is busy", 1, None),
    }


def _ok(p: dict[str, Any]) -> bool:
    return "time_us" in p and "skipped" not in p and "error" not in p


EAGER_ELEMENTWISE = {"rmsnorm": (1, 1.0), "add_rmsnorm": (2, 6 / 5), "silu_mul": (2, 5 / 3)}
"""Eager torch implementation of the microbench's elementwise ops: (kernels, traffic / the recorded ideal fused
traffic). F.rms_norm is one fused kernel; add + rms_norm reads x, r, writes s (add), reads s, writes y (norm):
6 hidden-size units against the fused 5; SiLU(a) * b writes SiLU(a) then reads it again: 5 units against 3."""


def fit_copy(mb: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    """``kernel_latency_us`` and ``elementwise_memory_efficiency`` fitted together over every elementwise kernel
    kind the microbench timed (copies, fp32 sum reductions, eager RMSNorm / add+RMSNorm / SiLU*mul), small to
    large: one fixed cost per kernel and one bandwidth efficiency, averaged over the kinds a step launches (a copy
    alone is cheaper and faster, a reduction or a strided SiLU slower)."""
    small: list[tuple[float, int, float]] = [
        (float(p["bytes_moved"]), 1, p["time_us"] * 1e-6) for p in mb["hbm"]["points"]
        if _ok(p) and p["bytes_buffer"] <= COPY_MAX_BUFFER_BYTES]
    for p in mb.get("elementwise", {}).get("points", []):
        if _ok(p) and p.get("variant") == "eager" and p.get("op") in EAGER_ELEMENTWISE:
            kernels, traffic = EAGER_ELEMENTWISE[p["op"]]
            small.append((p["bytes"] * traffic, kernels, p["time_us"] * 1e-6))

    def predict(v: dict[str, float], pts: list[tuple[float, int, float]]) -> np.ndarray:
        rf = Roofline(gpu, calibration_with(base, v))
        return np.array([rf.elementwise("e", b, 1, k).time_s for b, k, _ in pts])

    names = ["kernel_latency_us", "elementwise_memory_efficiency"]
    small_meas = np.array([t for _, _, t in small])
    v = _log_fit(names, [1.0, 0.8], ([0.0, 0.2], [20.0, 1.0]), lambda x: predict(x, small), small_meas)
    how = (f"joint log least squares of kernels x latency + bytes/(HBM x eff) over every elementwise kind timed "
           f"(device copy, fp32 sum, eager rmsnorm / add+rmsnorm / silu*mul with the kernel counts and traffic of "
           f"their eager implementation), buffers <= {COPY_MAX_BUFFER_BYTES >> 20} MiB")
    err = mape_pct(predict(v, small), small_meas)
    return {n: Fitted(v[n], how, len(small), err) for n in names}


def _gemm_points(mb: dict[str, Any], dtype: str) -> list[dict[str, Any]]:
    return [p for p in mb["gemm"]["points"] if _ok(p) and p["dtype"] == dtype]


def _gemm_predict(gpu: GpuSpec, base: Calibration, pts: list[dict[str, Any]], precision: str,
                  v: dict[str, float]) -> np.ndarray:
    rf = Roofline(gpu, calibration_with(base, v))
    prec = load_precisions()
    return np.array([rf.gemm("g", int(p.get("m_padded_to") or p["M"]), p["N"], p["K"], precision, prec).time_s
                     for p in pts])


COMPUTE_BOUND_MIN_M = 2048
"""GEMMs with at least this many rows fit the compute efficiency: on every measured shape they are compute-bound
and their last partial wave costs a few percent at most, so the efficiency is not confounded with the
memory side or with wave quantisation."""


def _fit_compute_then_memory(gpu: GpuSpec, cal: Calibration, pts: list[dict[str, Any]], precision: str,
                             compute_name: str, memory_name: str | None) -> dict[str, float]:
    """Compute efficiency on the large-M GEMMs, then (bf16 only) memory efficiency on all with it fixed."""
    big = [p for p in pts if p["M"] >= COMPUTE_BOUND_MIN_M]
    v = _log_fit([compute_name], [0.6], ([0.05], [1.0]), lambda x: _gemm_predict(gpu, cal, big, precision, x),
                 np.array([p["time_us"] * 1e-6 for p in big]))
    if memory_name is not None:
        meas = np.array([p["time_us"] * 1e-6 for p in pts])
        v.update(_log_fit([memory_name], [0.8], ([0.2], [1.0]),
                          lambda x: _gemm_predict(gpu, cal, pts, precision, {**v, **x}), meas))
    return v


def fit_gemm_bf16(mb: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    pts = _gemm_points(mb, "bf16")
    meas = np.array([p["time_us"] * 1e-6 for p in pts])
    names = ["gemm_compute_efficiency", "gemm_memory_efficiency"]
    best: tuple[float, dict[str, float]] | None = None
    for tm, tn in TILE_CANDIDATES:
        tiled = calibration_with(base, {"gemm_tile_m": tm, "gemm_tile_n": tn})
        v = _fit_compute_then_memory(gpu, tiled, pts, "bf16", *names)
        err = mape_pct(_gemm_predict(gpu, tiled, pts, "bf16", v), meas)
        if best is None or err < best[0]:
            best = (err, {**v, "gemm_tile_m": tm, "gemm_tile_n": tn})
    assert best is not None
    err, v = best
    how = ("wave-quantised roofline over bf16 GEMMs (torch.mm, cuBLAS), M = 1..16384: compute efficiency by log "
           f"least squares on M >= {COMPUTE_BOUND_MIN_M}, then memory efficiency on all M; tile chosen among "
           f"{', '.join(f'{a}x{b}' for a, b in TILE_CANDIDATES)} by MAPE over all points (the MAPE given)")
    return {n: Fitted(v[n], how, len(pts), err) for n in [*names, "gemm_tile_m", "gemm_tile_n"]}


def fit_gemm_quant(mb: dict[str, Any], gpu: GpuSpec, base: Calibration, dtype: str, precision: str,
                   name: str) -> dict[str, Fitted]:
    pts = _gemm_points(mb, dtype)
    if not pts:
        return {}
    meas = np.array([p["time_us"] * 1e-6 for p in pts])
    v = _fit_compute_then_memory(gpu, base, pts, precision, name, None)
    err = mape_pct(_gemm_predict(gpu, base, pts, precision, v), meas)
    how = (f"log least squares over {dtype} GEMMs with M >= {COMPUTE_BOUND_MIN_M} (memory efficiency, tiles and "
           "latency shared with bf16; the MAPE is over all M)"
           + ("; M < 32 timed padded to 32 (m_padded_to)" if precision == "int8" else ""))
    return {name: Fitted(v[name], how, len(pts), err)}


def fit_attn_prefill(mb: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    pts = [p for p in mb["attn_prefill"]["points"] if _ok(p) and p["backend"] == p["default_backend"]]
    meas = np.array([p["time_us"] * 1e-6 for p in pts])

    def predict(v: dict[str, float]) -> np.ndarray:
        rf = Roofline(gpu, calibration_with(base, v))
        out = []
        for p in pts:
            op = rf.attention_prefill("a", p["seq"], p["seq"], p["q_heads"], p["kv_heads"], p["head_dim"],
                                      bool(p["causal"]), 2, batch=p["batch"])
            out.append(op.time_s)
        return np.array(out)

    name = "attention_prefill_compute_efficiency"
    v = _log_fit([name], [0.5], ([0.05], [1.0]), predict, meas)
    how = ("log least squares over SDPA prefill (default backend: causal GQA and non-causal ViT), seq 128..16384, "
           "with the shape-effect constants held")
    return {name: Fitted(v[name], how, len(pts), mape_pct(predict(v), meas))}


def fit_shape_effects(se: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    """From ``shape_effects.py``'s file: the unaligned-GEMM penalty (direct: median ratio of the TFLOP/s of the
    true shape to the same GEMM padded to multiples of 64, over shapes with N or K not a multiple of 8) and the
    per-query-tile fixed cost of prefill attention, fitted jointly with the attention efficiency by log least
    squares over batched non-causal SDPA (64..16384-token sequences, head dims 64..128, plenty of tiles)."""
    out: dict[str, Fitted] = {}
    on = f" (measured on {se.get('provenance', {}).get('gpu_name', 'an unnamed GPU')})"
    pts = [p for p in se.get("gemm_align", {}).get("points", []) if _ok(p)]
    ratios = []
    for t in (p for p in pts if p["variant"] == "true" and (p["N"] % 8 or p["K"] % 8)):
        pad = [q for q in pts if q["variant"] == "pad64" and q["shape_of"] == t["shape_of"]]
        if pad:
            ratios.append(t["tflops"] / pad[0]["tflops"])
    if ratios:
        out["gemm_unaligned_efficiency"] = Fitted(
            float(np.median(ratios)), "direct: median TFLOP/s ratio of bf16 GEMMs with N or K not a multiple of 8 "
            "to the same GEMM padded to multiples of 64 (M = 1024..16384)" + on, len(ratios),
            float(np.std(ratios) / np.median(ratios) * 100))
    att = [p for p in se.get("attn_batched", {}).get("points", []) if _ok(p)]
    if att:
        meas = np.array([p["time_us"] * 1e-6 for p in att])

        def predict(v: dict[str, float]) -> np.ndarray:
            rf = Roofline(gpu, calibration_with(base, v))
            return np.array([rf.attention_prefill("a", p["seq"], p["seq"], p["heads"], p["heads"],
                                                  p["head_dim"], False, 2, batch=p["batch"]).time_s for p in att])

        names = ["attention_prefill_compute_efficiency", "attention_prefill_overhead_tokens"]
        v = _log_fit(names, [0.6, 100.0], ([0.05, 0.0], [1.0, 2000.0]), predict, meas)
        how = ("joint log least squares over batched non-causal SDPA (default backend; B x 16 heads x S tokens, "
               "S = 64..16384, head dims 64..128 counted at their padded size)" + on)
        err = mape_pct(predict(v), meas)
        out["attention_prefill_overhead_tokens"] = Fitted(v[names[1]], how, len(att), err)
    return out


FRONTEND_PROCESSORS = {"qwen2_vl_fast": None, "siglip_fast": 729}
"""The preprocess_bench.py processors fitted: Qwen2-VL's processes the image at (nearly) native resolution
(its pixel_values rows are 14x14 patches), SigLIP's resizes it to 384x384 (729 patches)."""


def fit_frontend(pp: dict[str, Any]) -> dict[str, Fitted]:
    """``frontend_ms_per_input_megapixel`` (JPEG decode + resize, per megapixel sent) and
    ``frontend_ms_per_processed_megapixel`` (normalise and patchify, per megapixel the vision tower sees): non-negative
    least squares on relative error over ``preprocess_bench.py``'s decode + fast-processor times, single thread."""
    rows, y = [], []
    for p in pp["points"]:
        for name, fixed_patches in FRONTEND_PROCESSORS.items():
            if f"{name}_ms" not in p:
                continue
            patches = fixed_patches or p[f"{name}_pixel_values"][0]
            rows.append([p["megapixels"], patches * 14 * 14 / 1e6])
            y.append(p["decode_ms"] + p[f"{name}_ms"])
    a, t = np.array(rows), np.array(y)
    from scipy.optimize import nnls

    coef, _ = nnls(a / t[:, None], np.ones(len(t)))
    err = mape_pct(a @ coef, t)
    cpu = pp.get("provenance", {}).get("cpu_model", "an unnamed CPU")
    how = (f"non-negative least squares (relative error) of decode + processor time on input and processed megapixels, "
           f"Qwen2-VL and SigLIP fast processors, one thread of {cpu}")
    return {"frontend_ms_per_input_megapixel": Fitted(float(coef[0]), how, len(t), err),
            "frontend_ms_per_processed_megapixel": Fitted(float(coef[1]), how, len(t), err)}


def _decode_best(mb: dict[str, Any]) -> list[dict[str, Any]]:
    """Fastest form/backend per decode-attention shape."""
    best: dict[tuple[int, ...], dict[str, Any]] = {}
    for p in mb["attn_decode"]["points"]:
        if not _ok(p):
            continue
        key = (p["batch"], p["context"], p["q_heads"], p["kv_heads"], p["head_dim"])
        if key not in best or p["time_us"] < best[key]["time_us"]:
            best[key] = p
    return list(best.values())


def fit_attn_decode(mb: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    pts = _decode_best(mb)
    meas = np.array([p["time_us"] * 1e-6 for p in pts])

    def predict(v: dict[str, float]) -> np.ndarray:
        rf = Roofline(gpu, calibration_with(base, v))
        return np.array([rf.attention_decode("a", p["batch"], p["context"], p["q_heads"], p["kv_heads"],
                                             p["head_dim"], 2).time_s for p in pts])

    names = ["attention_decode_memory_efficiency", "attention_decode_half_bytes"]
    # half_bytes fitted in MB for conditioning.
    scaled = _log_fit(names, [0.8, 1.0], ([0.1, 0.0], [1.0, 1000.0]),
                      lambda x: predict({names[0]: x[names[0]], names[1]: x[names[1]] * 1e6}), meas)
    v = {names[0]: scaled[names[0]], names[1]: scaled[names[1]] * 1e6}
    how = ("log least squares of latency + (bytes + half)/(HBM x eff) over the fastest SDPA decode kernel per "
           "shape (batch 1..256, context 256..32768)")
    err = mape_pct(predict(v), meas)
    return {n: Fitted(v[n], how, len(pts), err) for n in names}


def fit_allreduce(ar: dict[str, Any], gpu: GpuSpec, base: Calibration) -> dict[str, Fitted]:
    pts = [p for p in ar["allreduce"]["points"] if p.get("graph_time_us")]
    if not pts:
        return {}
    meas = np.array([p["graph_time_us"] * 1e-6 for p in pts])

    def predict(v: dict[str, float]) -> np.ndarray:
        rf = Roofline(gpu, calibration_with(base, v))
        return np.array([rf.allreduce("ar", p["bytes"], p["world_size"]).time_s for p in pts])

    names = ["allreduce_latency_us", "allreduce_bus_efficiency"]
    v = _log_fit(names, [10.0, 0.7], ([0.1, 0.05], [200.0, 1.5]), predict, meas)
    ws = sorted({p["world_size"] for p in pts})
    how = (f"log least squares of latency + ring bytes over NCCL all-reduce inside a CUDA graph, {ws} GPUs, "
           f"{pts[0]['bytes']}..{pts[-1]['bytes']} bytes")
    return {n: Fitted(v[n], how, len(pts), mape_pct(predict(v), meas)) for n in names}


# --------------------------------------------------------------------------- engine level (vllm bench serve)

BENCH_FIELDS = ("completed", "total_input_tokens", "total_output_tokens", "mean_tpot_ms", "max_concurrency",
                "request_throughput", "mean_ttft_ms")
"""Fields of a ``vllm bench serve --save-result`` JSON that the engine fit reads (see ``read_vllm_bench``)."""


@dataclass(frozen=True)
class BenchRun:
    """One ``vllm bench serve --save-result`` file, reduced to what the engine fit needs."""

    path: str
    completed: int
    mean_prompt_tokens: float
    mean_output_tokens: float
    mean_tpot_ms: float
    mean_ttft_ms: float
    concurrency: float
    """Mean running requests: ``max_concurrency`` when the run capped it and sent as fast as it could
    (``request_rate`` inf), else Little's law: request_throughput x mean time in the system."""
    model_id: str | None


def read_vllm_bench(path: Path) -> BenchRun:
    """Read the summary fields of one ``vllm bench serve --save-result`` file.

    Format: the ``result_json`` dict that ``vllm/benchmarks/serve.py`` (vllm-project/vllm) writes: setup
    (``model_id``, ``num_prompts``, ``request_rate`` (a number or the string ``"inf"``), ``burstiness``,
    ``max_concurrency`` (null when uncapped)) merged with the benchmark result (``completed``, ``failed``,
    ``total_input_tokens``, ``total_output_tokens``, ``request_throughput``, ``output_throughput``, and for each
    selected metric ``mean_/median_/std_/p<N>_{ttft,tpot,itl,e2el}_ms``; the per-request lists ``input_lens``,
    ``output_lens``, ``ttfts``, ``itls`` only with ``--save-detailed``, so they are not required here).
    """
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise RequestError(f"cannot read bench file {path}: {exc.strerror}") from None
    except json.JSONDecodeError:
        raise RequestError(f"{path}: not JSON (expected the file 'vllm bench serve --save-result' writes)") from None
    if not isinstance(data, dict):
        raise RequestError(f"{path}: expected a JSON object as 'vllm bench serve --save-result' writes")
    need = ("completed", "total_input_tokens", "total_output_tokens", "mean_tpot_ms", "mean_ttft_ms")
    missing = [k for k in need if not isinstance(data.get(k), (int, float))]
    if missing:
        raise RequestError(f"{path}: lacks {', '.join(missing)} (run 'vllm bench serve' with --save-result and "
                           "the default --percentile-metrics ttft,tpot,itl)")
    done = int(data["completed"])
    if done <= 0:
        raise RequestError(f"{path}: completed is {done}; nothing to fit")
    prompt = data["total_input_tokens"] / done
    out = data["total_output_tokens"] / done
    cap = data.get("max_concurrency")
    rate = data.get("request_rate")
    unbounded = rate in (None, "inf") or (isinstance(rate, float) and math.isinf(rate))
    if isinstance(cap, (int, float)) and unbounded:
        conc = float(min(cap, done))
    else:
        thr = data.get("request_throughput")
        if not isinstance(thr, (int, float)):
            raise RequestError(f"{path}: needs max_concurrency or request_throughput to tell the batch size")
        e2e_ms = data["mean_ttft_ms"] + data["mean_tpot_ms"] * max(out - 1.0, 0.0)
        conc = max(1.0, thr * e2e_ms / 1e3)
    return BenchRun(str(path), done, prompt, out, float(data["mean_tpot_ms"]), float(data["mean_ttft_ms"]), conc,
                    data.get("model_id"))


@dataclass(frozen=True)
class EngineFit:
    engine_step_overhead_ms: float
    mape_pct: float
    """Of the predicted mean TPOT with the fitted overhead, over the runs."""
    scale: float | None
    """Least-squares slope of measured (TPOT - overhead terms) on predicted GPU time: a check of the speed model
    (1 = the GPU times agree); None with fewer than two runs of different batch sizes."""
    rows: list[dict[str, float]]


def predicted_tpot_parts_ms(cfg: Any, cal: Calibration, run: BenchRun) -> tuple[float, float]:
    """(GPU ms per decode step incl. the prefills spread over it, per-sequence engine ms) for one run.

    Steady state of continuous batching with ``B`` running requests: every step decodes ``B`` sequences holding on
    average ``prompt + output / 2`` tokens, and ``B / output`` prompts start per step, whose prefill GPU time lands
    in some step (chunked prefill), so it is spread over the steps as ``(B / output) x prefill``."""
    from planner.speed import decode_step, prefill_step

    rf = Roofline(cfg.gpu, cal)
    prec = load_precisions()
    b = max(1, round(run.concurrency))
    ctx = int(run.mean_prompt_tokens + run.mean_output_tokens / 2)
    dec = decode_step(rf, cfg, prec, b, ctx).time_ms
    pre = prefill_step(rf, cfg, prec, int(run.mean_prompt_tokens)).time_ms
    gpu = dec + b / max(run.mean_output_tokens, 1.0) * pre
    return gpu, cal.value("engine_per_seq_overhead_ms") * b


def fit_engine_overhead(cfg: Any, cal: Calibration, runs: Sequence[BenchRun]) -> EngineFit:
    """Solve measured mean TPOT = GPU step time + engine_step_overhead + per-seq x B for the overhead
    (least squares over the runs: the mean residual), floored at 0."""
    parts = [predicted_tpot_parts_ms(cfg, cal, r) for r in runs]
    resid = [r.mean_tpot_ms - g - s for r, (g, s) in zip(runs, parts)]
    over = max(0.0, float(np.mean(resid)))
    pred = [g + s + over for g, s in parts]
    err = mape_pct(pred, [r.mean_tpot_ms for r in runs])
    scale = None
    gpus = np.array([g for g, _ in parts])
    if len(runs) >= 2 and np.ptp(gpus) > 0.05 * gpus.mean():
        y = np.array([r.mean_tpot_ms - s for r, (_, s) in zip(runs, parts)])
        slope, _ = np.polyfit(gpus, y, 1)
        scale = float(slope)
    rows = [{"concurrency": r.concurrency, "prompt_tokens": r.mean_prompt_tokens, "output_tokens": r.mean_output_tokens,
             "measured_tpot_ms": r.mean_tpot_ms, "gpu_ms": g, "per_seq_ms": s, "predicted_tpot_ms": p}
            for r, (g, s), p in zip(runs, parts, pred)]
    return EngineFit(over, err, scale, rows)


def calibration_with_engine_fit(cal: Calibration, fit: EngineFit, files: Sequence[str], fitted_on: str) -> Calibration:
    """``cal`` with ``engine_step_overhead_ms`` replaced by the fitted value and its provenance."""
    consts = dict(cal.constants)
    old = consts["engine_step_overhead_ms"]
    consts["engine_step_overhead_ms"] = Constant(
        value=round(fit.engine_step_overhead_ms, 4), unit=old.unit, note=None,
        fit=FitInfo(method="mean residual of measured mean TPOT - predicted GPU step time (decode at the run's "
                           "concurrency + its prefills spread over the steps) - per-sequence overhead",
                    dataset=", ".join(files), n_points=len(files), mape_pct=round(fit.mape_pct, 2),
                    fitted_on=fitted_on))
    srcs = [*cal.sources, Source(kind="fitted", title=f"engine overhead fitted on vllm bench serve results: "
                                 f"{', '.join(files)}", retrieved=fitted_on)]
    return Calibration(gpu=cal.gpu, engine=cal.engine, calibrated=cal.calibrated, constants=consts, sources=srcs)


# --------------------------------------------------------------------------- driver


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


def fit_all(mb: dict[str, Any], gpu: GpuSpec, ar: dict[str, Any] | None = None,
            base: Calibration | None = None, se: dict[str, Any] | None = None) -> dict[str, Fitted]:
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
        step(fit_copy(mb, gpu, cal))
    if "gemm" in mb:
        step(fit_gemm_bf16(mb, gpu, cal))
        step(fit_gemm_quant(mb, gpu, cal, "fp8_e4m3_fastacc", "fp8", "fp8_gemm_compute_efficiency"))
        step(fit_gemm_quant(mb, gpu, cal, "int8", "int8", "int8_gemm_compute_efficiency"))
    if se is not None:
        step(fit_shape_effects(se, gpu, cal))
    if "attn_prefill" in mb:
        step(fit_attn_prefill(mb, gpu, cal))
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
        value = round(f.value, 4) if abs(f.value) < 1e3 else round(f.value, -2)
        mape = round(f.mape_pct, 2) if f.mape_pct is not None else None
        consts[name] = Constant(value=value, unit=c.unit, note=None,
                                fit=FitInfo(method=f.method, dataset=datasets[name], n_points=f.n_points,
                                            mape_pct=mape, fitted_on=day))
    srcs = [Source(kind="fitted", title=f"planner/calibrate/fit.py on {', '.join(sorted(set(datasets.values())))}",
                   retrieved=day), *extra_sources]
    return Calibration(gpu=gpu.name, engine=base.engine, calibrated=True, constants=consts, sources=srcs)


NOT_FITTED = {
    "int4_gemm_compute_efficiency": "the device had no Marlin/Machete W4A16 kernel; torch's tinygemm int4 kernel "
                                    "in the microbench is a different implementation (slow above M = 8)",
    "allreduce_latency_us": "no multi-GPU run of this GPU",
    "allreduce_bus_efficiency": "no multi-GPU run of this GPU",
    "p2p_latency_us": "no pipeline-parallel measurement",
    "engine_step_overhead_ms": "engine-level: fit it with 'vlmplan calibrate fit --bench' on vllm bench serve results",
    "engine_per_seq_overhead_ms": "engine-level, not measured",
}
"""Why a constant kept its default, written into its note."""


def calibration_yaml(cal: Calibration, header: str = "") -> str:
    data = cal.model_dump(mode="json", exclude_none=True)
    text = yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True)
    return "".join(f"# {line}\n" for line in header.splitlines()) + text


def fit_files(microbench: Path, allreduce: Path | None = None, gpu_name: str | None = None,
              base: Calibration | None = None, fitted_on: str | None = None,
              shape_effects: Path | None = None) -> Calibration:
    mb = json.loads(microbench.read_text())
    ar = json.loads(allreduce.read_text()) if allreduce else None
    se = json.loads(shape_effects.read_text()) if shape_effects else None
    gpu = gpu_for(mb, gpu_name)
    fitted = fit_all(mb, gpu, ar, base, se)
    datasets = {k: _rel(microbench) for k in fitted}
    if shape_effects:
        for k in ("gemm_unaligned_efficiency", "attention_prefill_overhead_tokens"):
            if k in datasets:
                datasets[k] = _rel(shape_effects)
    if allreduce:
        for k in ("allreduce_latency_us", "allreduce_bus_efficiency"):
            if k in datasets:
                datasets[k] = _rel(allreduce)
    day = fitted_on or str(mb.get("provenance", {}).get("utc_date", ""))[:10] or None
    return build_calibration(gpu, fitted, datasets, base, day)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fit vlmplan speed-model constants to microbenchmarks")
    ap.add_argument("microbench", type=Path)
    ap.add_argument("--allreduce", type=Path, default=None)
    ap.add_argument("--gpu", default=None, help="catalog GPU name (default: from the file's nvidia-smi name)")
    ap.add_argument("--shape-effects", type=Path, default=None,
                    help="shape_effects.py output (unaligned GEMMs, batched attention); may come from a sibling GPU")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    cal = fit_files(args.microbench, args.allreduce, args.gpu, shape_effects=args.shape_effects)
    text = calibration_yaml(cal, f"Fitted by: python -m planner.calibrate.fit {args.microbench}"
                            + (f" --allreduce {args.allreduce}" if args.allreduce else "")
                            + (f" --shape-effects {args.shape_effects}" if args.shape_effects else ""))
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    for name, c in cal.constants.items():
        if c.fit is not None:
            mape = f"{c.fit.mape_pct:.1f}%" if c.fit.mape_pct is not None else "-"
            print(f"{name:40s} {c.value:>12g} {c.unit:40s} MAPE {mape:>6s} n={c.fit.n_points}",
                  file=__import__("sys").stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["BenchRun", "EngineFit", "Fitted", "build_calibration", "calibration_with", "calibration_with_engine_fit",
           "calibration_yaml", "fit_all", "fit_engine_overhead", "fit_files", "gpu_for", "mape_pct", "read_vllm_bench"]
