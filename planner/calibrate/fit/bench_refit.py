"""More than the step overhead from a few ``vllm bench serve`` runs: the engine's per-step and per-sequence terms
and the front-end cost, each fitted only where the runs can tell it apart from the others.

Engine terms, from the mean TPOTs (``engine_overhead.predicted_tpot_parts_ms`` gives the GPU time of a step at
the run's running batch B)::

    measured TPOT - GPU step(B) = engine_step_overhead_ms + engine_per_seq_overhead_ms x B

Weighted (relative) non-negative least squares over the runs. Both terms need runs at different batch sizes (the
largest B at least twice the smallest); otherwise only the step overhead is fitted (the mean residual, as
``engine_overhead.fit_engine_overhead``) and the per-sequence term keeps its catalog value.

Front-end terms, from the mean TTFTs: each run is replayed in the simulator (its arrivals, lengths and images; the
requests it completed), which gives the engine's part of its TTFT (queueing, prefill, the vision encoder) with
the fitted engine terms; the rest is the request's path outside the engine (``perf.frontend.frontend_ms``)::

    measured TTFT - simulated engine TTFT = request_latency_ms + frontend_ms_per_image x images
                                            + s x (catalog per-megapixel costs of the run's images)

Weighted NNLS again; a term whose column the runs cannot separate from the others (one image size in every run,
no text-only run) keeps its catalog value (``s`` = 1), in the order s, then the per-image cost. The images come
from the ``vlmplan_images`` metadata ``verify.sh`` writes; a run without it is taken as text-only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.calibrate.fit.engine_overhead import BenchRun, predicted_tpot_parts_ms, read_vllm_bench
from planner.calibrate.fit.fitted import mape_pct
from planner.catalog.calibration_schema import Calibration, Constant, FitInfo
from planner.catalog.schema import Source
from planner.core.errors import RequestError
from planner.core.inputs import parse_json, read_text
from planner.spec.config import ResolvedConfig

MIN_BATCH_SPREAD = 2.0
"""Largest over smallest running batch that separates the per-step from the per-sequence engine term."""
MAX_CONDITION = 1e3
"""Condition number of the (weighted) front-end design matrix above which a term is kept, not fitted."""
MP_CONSTANTS = ("frontend_ms_per_input_megapixel", "frontend_ms_per_processed_megapixel")
MAX_SIM_REQUESTS = 4000
"""A run longer than this is replayed with this many requests (the means settle long before)."""


@dataclass(frozen=True)
class BenchInfo:
    """One bench file: the summary the engine fit reads plus what ``verify.sh``'s metadata adds."""

    run: BenchRun
    arrival: str
    """'poisson' or 'closed'."""
    rate_per_s: float | None
    concurrency: int | None
    text_tokens: float
    """Mean text tokens of a prompt (visual tokens excluded)."""
    images: list[tuple[int, int, float]]
    """(width, height, weight) of the image sizes sent."""
    images_per_request: float
    meta: dict[str, str]


def read_bench_info(path: Path) -> BenchInfo:
    run = read_vllm_bench(path)
    data = parse_json(read_text(path, "bench file"), f"bench file {path}", allow_nan=True)
    assert isinstance(data, dict)
    meta = {k: v for k, v in data.items() if k.startswith("vlmplan_") and isinstance(v, str)}
    rate, cap = data.get("request_rate"), data.get("max_concurrency")
    paced = isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate) and rate > 0
    if not paced and not (isinstance(cap, int) and not isinstance(cap, bool) and cap > 0):
        raise RequestError(f"{path}: request_rate inf without max_concurrency: every request sent at once is not a "
                           "load vlmplan can replay")
    images: list[tuple[int, int, float]] = []
    try:
        for item in filter(None, meta.get("vlmplan_images", "").split(",")):
            size, weight = item.split(":")
            w, h = (int(x) for x in size.split("x"))
            images.append((w, h, float(weight)))
        per = float(meta.get("vlmplan_images_per_request", "1" if images else "0"))
        text = float(meta["vlmplan_text_tokens"]) if "vlmplan_text_tokens" in meta else None
    except ValueError:
        raise RequestError(f"{path}: unreadable vlmplan_* metadata ({str(meta)[:80]})") from None
    if any(w <= 0 or h <= 0 or w > 1 << 16 or h > 1 << 16 or not 0 < x < 1e9 for w, h, x in images) \
            or not 0 <= per <= 64 or (text is not None and not 0 <= text <= 1e7):
        raise RequestError(f"{path}: vlmplan_* metadata out of range ({str(meta)[:80]})")
    if text is None:
        text = run.mean_prompt_tokens
    return BenchInfo(run, "poisson" if paced else "closed", float(rate) if paced else None,  # type: ignore[arg-type]
                     None if paced else int(cap), text, images, per if images else 0.0, meta)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Term:
    name: str
    value: float
    previous: float
    fitted: bool
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "previous": self.previous, "fitted": self.fitted,
                "note": self.note}


@dataclass(frozen=True)
class BenchRefit:
    terms: list[Term]
    tpot_mape_pct: float
    ttft_mape_pct: float | None
    """None when the front end was not fitted."""
    rows: list[dict[str, float]]
    notes: list[str] = field(default_factory=list)

    def value(self, name: str) -> float:
        return next(t.value for t in self.terms if t.name == name)


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    return np.asarray(nnls(x, y)[0], dtype=float)


def fit_engine_terms(cfg: ResolvedConfig, cal: Calibration, runs: Sequence[BenchRun]
                     ) -> tuple[float, float, bool, list[float]]:
    """(engine_step_overhead_ms, engine_per_seq_overhead_ms, whether the second was fitted, GPU ms per run)."""
    parts = [predicted_tpot_parts_ms(cfg, cal, r) for r in runs]
    gpu = [g for g, _ in parts]
    b = np.array([max(1, round(r.concurrency)) for r in runs], dtype=float)
    y = np.array([r.mean_tpot_ms for r in runs]) - np.array(gpu)
    per_seq = cal.value("engine_per_seq_overhead_ms")
    if len(runs) >= 2 and b.max() >= MIN_BATCH_SPREAD * b.min():
        w = 1.0 / np.array([r.mean_tpot_ms for r in runs])
        a, s = _nnls(np.column_stack([np.ones_like(b), b]) * w[:, None], y * w)
        return float(a), float(s), True, gpu
    return max(0.0, float(np.mean(y - per_seq * b))), per_seq, False, gpu


def _replay(cfg: ResolvedConfig, cal: Calibration, info: BenchInfo) -> tuple[float, float, float]:
    """(mean engine-side TTFT ms, mean images, mean catalog per-megapixel front-end ms) of the run, simulated."""
    from planner.catalog.loader import load_engine, load_precisions
    from planner.load.simulator import build_requests, simulate
    from planner.perf.memory import memory_breakdown
    from planner.perf.stepcost import StepCost
    from planner.spec.workload import ImageSize, SizeDist, Workload

    run = info.run
    sizes = tuple(ImageSize(width=w, height=h) for w, h, _ in info.images)
    workload = Workload(
        name="bench", prompt_tokens=max(0, round(info.text_tokens)),
        output_tokens=max(1, round(run.mean_output_tokens)),
        images=list(sizes[:1]) * max(0, round(info.images_per_request)) if sizes else [],
        image_size_dist=SizeDist(kind="weighted", values=sizes, weights=tuple(x for _, _, x in info.images))
        if len(sizes) > 1 else None, arrival=info.arrival,  # type: ignore[arg-type]
        rate_per_s=info.rate_per_s, concurrency=info.concurrency)
    prec = load_precisions()
    cost = StepCost(cfg, cal, prec)
    kv = memory_breakdown(cfg, load_engine(), prec).kv_capacity_tokens
    n = min(run.completed, MAX_SIM_REQUESTS)
    reqs = build_requests(cfg, workload, cost, n, seed=0)
    res = simulate(cost, reqs, kv, info.arrival, info.rate_per_s, info.concurrency, seed=0, cfg=cfg, warmup=0.0,
                   cooldown=0.0)
    base = reqs.frontend_ms if reqs.frontend_ms is not None else np.zeros(n)
    front = res.frontend_ms if res.frontend_ms is not None else base
    engine = float(np.mean((res.first_token_s - res.arrival_s) * 1e3 + (front - base)))
    img = float(np.mean([len(p) for p in workload.sample(n, 0).images])) if sizes else 0.0
    mp = float(np.mean(base)) - cal.value("request_latency_ms") - cal.value("frontend_ms_per_image") * img
    return engine, img, max(0.0, mp)


def refit(cfg: ResolvedConfig, cal: Calibration, infos: Sequence[BenchInfo]) -> BenchRefit:
    """Fit the engine terms, then the front-end terms, as far as ``infos`` separate them (see the module doc)."""
    runs = [i.run for i in infos]
    notes: list[str] = []
    a, s, both, gpu = fit_engine_terms(cfg, cal, runs)
    batches = sorted({max(1, round(r.concurrency)) for r in runs})
    terms = [Term("engine_step_overhead_ms", a, cal.value("engine_step_overhead_ms"), True)]
    if both:
        terms.append(Term("engine_per_seq_overhead_ms", s, cal.value("engine_per_seq_overhead_ms"), True))
    else:
        why = (f"every run ran about {batches[0]} sequences" if len(batches) == 1 else
               f"the running batches ({batches[0]}-{batches[-1]}) differ by less than x{MIN_BATCH_SPREAD:g}")
        terms.append(Term("engine_per_seq_overhead_ms", s, s, False,
                          f"kept: {why}, so it cannot be told from the per-step overhead; add a run at another "
                          "load (e.g. CONCURRENCY= or RATE= of verify.sh)"))
        notes.append(terms[-1].note)
    pred_tpot = [g + a + s * max(1, round(r.concurrency)) for g, r in zip(gpu, runs)]
    tpot_err = mape_pct(pred_tpot, [r.mean_tpot_ms for r in runs])
    from planner.calibrate.fit.serving import with_constants

    engine_cal = with_constants(cal, {"engine_step_overhead_ms": a, "engine_per_seq_overhead_ms": s})
    replays = [_replay(cfg, engine_cal, i) for i in infos]
    ttft = np.array([r.mean_ttft_ms for r in runs])
    engine = np.array([e for e, _, _ in replays])
    cols = {"request_latency_ms": np.ones(len(runs)), "frontend_ms_per_image": np.array([x for _, x, _ in replays]),
            "megapixel_scale": np.array([m for _, _, m in replays])}
    kept_value = {"request_latency_ms": cal.value("request_latency_ms"),
                  "frontend_ms_per_image": cal.value("frontend_ms_per_image"), "megapixel_scale": 1.0}
    y = ttft - engine
    w = 1.0 / np.maximum(ttft, 1e-6)
    names = [k for k, v in cols.items() if k == "request_latency_ms" or np.any(v > 0)]
    dropped = [k for k in cols if k not in names and k != "request_latency_ms"]
    while len(names) > 1:
        x = np.column_stack([cols[k] for k in names]) * w[:, None]
        sv = np.linalg.svd(x, compute_uv=False)
        if len(runs) >= len(names) and sv[-1] > 0 and sv[0] / sv[-1] <= MAX_CONDITION:
            break
        dropped.append(names.pop())
    y_fit = y - sum((kept_value[k] * cols[k] for k in dropped), np.zeros(len(runs)))
    coef = dict(zip(names, _nnls(np.column_stack([cols[k] for k in names]) * w[:, None], y_fit * w)))
    values = {**kept_value, **coef}
    pred_ttft = engine + sum((values[k] * cols[k] for k in cols), np.zeros(len(runs)))
    ttft_err = mape_pct(list(pred_ttft), list(ttft))
    has_images = any(i.images for i in infos)
    terms.append(Term("request_latency_ms", values["request_latency_ms"], cal.value("request_latency_ms"), True))
    for k in ("frontend_ms_per_image", "megapixel_scale"):
        label = "frontend_ms_per_image" if k == "frontend_ms_per_image" else "frontend_ms_per_*_megapixel (scale)"
        if k in coef:
            if k == "megapixel_scale":
                for c in MP_CONSTANTS:
                    terms.append(Term(c, cal.value(c) * coef[k], cal.value(c), True, f"scaled by {coef[k]:.3g}"))
            else:
                terms.append(Term(k, coef[k], cal.value(k), True))
            continue
        why = ("no run sent images (verify.sh's vlmplan_images metadata)" if not has_images else
               "the runs' images do not vary enough to tell it from the per-request cost: add a text-only run or "
               "one with another image size")
        note = f"{label} kept: {why}"
        if k == "megapixel_scale":
            terms += [Term(c, cal.value(c), cal.value(c), False, note) for c in MP_CONSTANTS]
        else:
            terms.append(Term(k, cal.value(k), cal.value(k), False, note))
        if has_images:
            notes.append(note)
    share = float(np.mean(np.clip(y, 0, None) / np.maximum(ttft, 1e-9)))
    if share < 0.2:
        notes.append(f"the front end is {share:.0%} of the measured TTFTs: its fit rests on a small difference "
                     "(a run at low load, e.g. CONCURRENCY=1, pins it down)")
    if not has_images and any("vlmplan_images" not in i.meta for i in infos):
        notes.append("runs without vlmplan metadata are replayed as text-only prompts of their mean input length")
    rows = [{"concurrency": r.concurrency, "prompt_tokens": r.mean_prompt_tokens, "output_tokens": r.mean_output_tokens,
             "measured_tpot_ms": r.mean_tpot_ms, "gpu_ms": g, "predicted_tpot_ms": p,
             "measured_ttft_ms": r.mean_ttft_ms, "engine_ttft_ms": float(e), "predicted_ttft_ms": float(q)}
            for r, g, p, e, q in zip(runs, gpu, pred_tpot, engine, pred_ttft)]
    return BenchRefit(terms, tpot_err, ttft_err, rows, notes)


def calibration_with_refit(cal: Calibration, fit: BenchRefit, files: Sequence[str], fitted_on: str) -> Calibration:
    """``cal`` with every fitted term replaced, each with its provenance."""
    consts = dict(cal.constants)
    for t in fit.terms:
        if not t.fitted:
            continue
        old = consts[t.name]
        engine = t.name.startswith("engine_")
        consts[t.name] = Constant(
            value=round(t.value, 6), unit=old.unit, note=t.note or None,
            fit=FitInfo(method=("weighted NNLS of measured mean TPOT - predicted GPU step time on 1 and the running "
                                "batch (planner.calibrate.fit.bench_refit)" if engine else
                                "weighted NNLS of measured mean TTFT - simulated engine TTFT on the request's "
                                "images and megapixels (planner.calibrate.fit.bench_refit)"),
                        dataset=", ".join(files), n_points=len(files),
                        mape_pct=round(fit.tpot_mape_pct if engine else (fit.ttft_mape_pct or 0.0), 2),
                        fitted_on=fitted_on))
    srcs = [*cal.sources, Source(kind="fitted", title=f"engine and front-end terms fitted on vllm bench serve "
                                 f"results: {', '.join(files)}", retrieved=fitted_on)]
    return Calibration(gpu=cal.gpu, engine=cal.engine, calibrated=cal.calibrated, constants=consts, sources=srcs)
