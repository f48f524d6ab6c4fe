"""Engine-level overhead from real serving: ``engine_step_overhead_ms`` fitted on ``vllm bench serve`` results.

The microbenchmarks time GPU kernels; what a served request also pays per step is the engine's own host time not
hidden behind the GPU (scheduling, sampling, output processing). Given mean TPOTs measured by ``vllm bench serve``
and the speed model's GPU step time for the same batch, the overhead is the mean residual. Used by
``vlmplan calibrate fit --bench``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.calibrate.fit.fitted import mape_pct
from planner.catalog.calibration_schema import Calibration, Constant, FitInfo
from planner.catalog.loader import load_precisions
from planner.catalog.schema import Source
from planner.core.errors import RequestError
from planner.core.inputs import parse_json, read_text
from planner.perf.roofline import Roofline
from planner.perf.steps import decode_step, prefill_step
from planner.spec.config import ResolvedConfig

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
    data = parse_json(read_text(path, "bench file"), f"bench file {path} (expected 'vllm bench serve --save-result')",
                      allow_nan=True)
    if not isinstance(data, dict):
        raise RequestError(f"{path}: expected a JSON object as 'vllm bench serve --save-result' writes")
    need = ("completed", "total_input_tokens", "total_output_tokens", "mean_tpot_ms", "mean_ttft_ms")
    missing = [k for k in need if not isinstance(data.get(k), (int, float)) or isinstance(data.get(k), bool)]
    if missing:
        raise RequestError(f"{path}: lacks {', '.join(missing)} (run 'vllm bench serve' with --save-result and "
                           "the default --percentile-metrics ttft,tpot,itl)")
    bad = [f"{k}={str(data[k])[:30]}" for k in (*need, "request_throughput", "max_concurrency")
           if isinstance(data.get(k), (int, float)) and not isinstance(data[k], bool)
           and not (-1 < abs(data[k]) < 1e15 and math.isfinite(data[k]) and data[k] >= 0)]
    if bad:
        raise RequestError(f"{path}: {', '.join(bad)} (every measured value must be a finite number >= 0)")
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
    model_id = data.get("model_id")
    return BenchRun(str(path), done, prompt, out, float(data["mean_tpot_ms"]), float(data["mean_ttft_ms"]), conc,
                    model_id if isinstance(model_id, str) else None)


@dataclass(frozen=True)
class EngineFit:
    """The fitted overhead, its error over the runs, and each run's parts (what ``calibrate fit`` prints)."""

    engine_step_overhead_ms: float
    mape_pct: float
    """Of the predicted mean TPOT with the fitted overhead, over the runs."""
    scale: float | None
    """Least-squares slope of measured (TPOT - overhead terms) on predicted GPU time: a check of the speed model
    (1 = the GPU times agree); None with fewer than two runs of different batch sizes."""
    rows: list[dict[str, float]]


def predicted_tpot_parts_ms(cfg: ResolvedConfig, cal: Calibration, run: BenchRun) -> tuple[float, float]:
    """(GPU ms per decode step incl. the prefills spread over it, per-sequence engine ms) for one run.

    Steady state of continuous batching with ``B`` running requests: every step decodes ``B`` sequences holding on
    average ``prompt + output / 2`` tokens, and ``B / output`` prompts start per step, whose prefill GPU time lands
    in some step (chunked prefill), so it is spread over the steps as ``(B / output) x prefill``."""
    rf = Roofline(cfg.gpu, cal)
    prec = load_precisions()
    b = max(1, round(run.concurrency))
    ctx = int(run.mean_prompt_tokens + run.mean_output_tokens / 2)
    dec = decode_step(rf, cfg, prec, b, ctx).time_ms
    pre = prefill_step(rf, cfg, prec, int(run.mean_prompt_tokens)).time_ms
    gpu = dec + b / max(run.mean_output_tokens, 1.0) * pre
    return gpu, cal.value("engine_per_seq_overhead_ms") * b


def fit_engine_overhead(cfg: ResolvedConfig, cal: Calibration, runs: Sequence[BenchRun]) -> EngineFit:
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

