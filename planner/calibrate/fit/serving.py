"""Real-engine serving runs: read them, replay each through vlmplan, compare.

A *run* is one `vllm bench serve` measurement against a real vLLM server (the harness in
``bench/real-vllm/``; the files in ``catalogs/calibration/measurements/<gpu>/run*_real_vllm/``).
``predict_run`` simulates the same thing the benchmark did, not the simulator's steady state:

* the same number of prompts, every request measured (the benchmark has no warm-up window);
* a closed loop as ``--max-concurrency C`` runs it: all C clients send at t = 0, each sends its next
  request when its last one finished;
* Poisson arrivals at the run's rate; the run's own per-request lengths where they were ranged;
* the server's configuration as the log reports it (max_model_len, max_num_batched_tokens 8,192,
  max_num_seqs 1,024, gpu_memory_utilization 0.92).

* a server that speculates (``--speculative-config``) with the run's own speculation: the method and draft
  length of its config, the acceptance and draft rate its spec-decode counters measured
  (``measured_speculation``), synchronous scheduling where the method turns vLLM's asynchronous scheduler off.

Each prediction pools ``seeds`` simulations (a 60-request run's p95 is noisy in the model as in the
measurement). Runs named in ``HELD_OUT`` are never used to fit anything: they give the held-out error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.catalog.calibration_schema import Calibration
from planner.catalog.hf_import import load_model_from_path
from planner.catalog.loader import catalog_root, load_calibration, load_engine, load_gpus, load_models, load_precisions
from planner.catalog.schema import ModelSpec
from planner.load.simulator import build_requests, simulate
from planner.perf.memory import memory_breakdown
from planner.perf.speculative import make_step_cost
from planner.spec.config import ResolvedConfig, ServingConfig, Speculation, resolve
from planner.spec.workload import ImageSize, IntDist, Workload

RUN_DIRS = ("calibration/measurements/h200-141gb/run20_real_vllm",
            "calibration/measurements/h200-141gb/run21_api_servers",
            "calibration/measurements/h200-141gb/run23_waves",
            "calibration/measurements/h200-141gb/run24_qwen3_32b",
            "calibration/measurements/h200-141gb/run25_prefix_ngram",
            "calibration/measurements/h200-141gb/run26_greedy_ngram")
"""The real-vLLM runs shipped with vlmplan, under catalogs/ (run21: two API servers, and text past one API
server's saturation; run23: text closed loops measured after the waves model was built, all held out; run24:
Qwen3-32B, a model no constant was fitted on, all held out; run25: shared prompt prefixes, and n-gram speculative
decoding; run26: greedy decoding with and without n-gram speculation)."""

HELD_OUT = frozenset({
    # The whole 1280x960 photo series, text-only prompts to the VL server, every ranged-length run, the long
    # text prompts, and one Poisson and one closed-loop point of each remaining series. Chosen before any fit.
    "vl2_large_c1", "vl2_large_r2", "vl2_large_r5", "vl2_large_r8", "vl2_large_r12", "vl2_large_c8",
    "vl2_large_c32", "vl2_vltext_r10", "vl2_vltext_c16", "vl2_small_mix_r10", "vl2_small_mix_c16",
    "text_mix_r16", "text_long_c8", "text_r24", "text_c16", "vl1_small_c16", "vl1_small_r16", "vl2_page_r2",
    "vl2_page_c4",
    # run21/run22 (2026-12-03): every run but the one that fitted the API server's per-output-token cost.
    "api2vl_page_r5", "api2vl_page_r8", "api2vl_page_c16", "api2vl_large_r12", "api2vl_small_r40", "api2vl_small_c64",
    "api2vl_small_r24", "api2text_r32", "api2text_r64", "api2text_c64", "api2text_c128", "api1text_i256_o1_r150",
    "api1text_i256_o32_r100", "api1text_i1024_o32_r100",
    # run23 (2026-12-03, after the closed-loop waves model was written): every run.
    "waves_c8", "waves_c24", "waves_c48", "waves_mix_c32", "waves_o64_c32", "waves_i256_c64", "waves_i2048_c16",
    "waves_mix_c64", "waves_c96",
    # run24 (2026-12-04): Qwen3-32B, every run (a transfer test to a 4.7x larger model; blind predictions in
    # run24_qwen3_32b/predicted_before.json).
    "q32a_c1", "q32a_c4", "q32a_c16", "q32a_c32", "q32a_c64", "q32a_c128", "q32b_r1", "q32b_r2", "q32b_r4",
    "q32b_r8", "q32b_mix_c32", "q32b_i4096_o512_c8",
    # run25 (2026-12-04): shared prompt prefixes (prefix caching on), every run: the prefix model has no constant.
    "prefix_p0_c16", "prefix_p0_r16", "prefix_p768_c1", "prefix_p768_c16", "prefix_p768_r16", "prefix_p768_r32",
    "prefix_p3072_c8", "prefix_p3072_r8",
    # run26 (2026-12-04): greedy decoding (--temperature 0) on the plain server, every run.
    "greedy_c1", "greedy_c16", "greedy_c64", "greedy_r16",
    # run25's n-gram runs (chosen before the fit of the sync constants on ngram_c1/c16/c64, fit_sync_overhead),
    # and run26's greedy n-gram runs, every one (acceptance ~1: a test the fit at acceptance ~0 never saw).
    "ngram_c4", "ngram_r8", "ngram_r16",
    "ngram0_c1", "ngram0_c4", "ngram0_c16", "ngram0_c64", "ngram0_r16",
})

SYNC_FIT_RUNS = ("ngram_c1", "ngram_c16", "ngram_c64")
"""The runs ``fit_sync_overhead`` fits the calibration's ``sync_*`` constants on (run25, n-gram at acceptance ~0)."""

MODEL_DIRS = {"Qwen/Qwen2.5-7B-Instruct": "bench/real-vllm/model/Qwen2.5-7B-Instruct"}
"""Models of the runs that are not in the catalog: a local config.json (relative to the repository)."""

SERVER = {"max_model_len": 16384, "max_num_batched_tokens": 8192, "max_num_seqs": 1024,
          "gpu_memory_utilization": 0.92}
"""The servers' settings, from their logs (vLLM 0.26.0 defaults on an H200 but max_model_len)."""

KV_TOKENS = {"vl": 2_090_640, "text": 2_115_440, "q32": 269_312}
"""'GPU KV cache size' in the server logs."""


@dataclass(frozen=True)
class RealRun:
    """One measured benchmark run."""

    label: str
    model: str
    arrival: str
    """'poisson' or 'closed'."""
    rate_per_s: float | None
    concurrency: int | None
    prompts: int
    image: tuple[int, int] | None
    text_tokens: int
    output_tokens: int
    ranged: bool
    input_lens: tuple[int, ...]
    output_lens: tuple[int, ...]
    measured: dict[str, float]
    """ttft_p50/p95, tpot_p50/p95 (ms), throughput (req/s), as the benchmark reported them."""
    server: dict[str, float] = field(default_factory=dict)
    """Means over the run from the server's /metrics (ms) and its processes' CPU time per request."""
    api_servers: int = 1
    """The server's --api-server-count."""
    prefix_tokens: int = 0
    """Tokens of one random prefix every prompt of the run starts with (``--random-prefix-len``; part of
    ``input_lens``)."""
    speculative: dict[str, Any] | None = None
    """The server's ``--speculative-config`` (None: no speculative decoding)."""
    spec_counters: dict[str, float] = field(default_factory=dict)
    """The run's speculative-decoding counters from /metrics: ``drafts`` (verify steps that carried a draft),
    ``draft_tokens``, ``accepted_tokens``."""

    @property
    def held_out(self) -> bool:
        return self.label in HELD_OUT

    @property
    def warmup(self) -> bool:
        return "warmup" in self.label


def _server_means(run: dict[str, Any]) -> dict[str, float]:
    d = run["server_metrics_delta"]
    out: dict[str, float] = {}
    for name, key in (("server_ttft_ms", "time_to_first_token"), ("queue_ms", "request_queue_time"),
                      ("prefill_ms", "request_prefill_time"), ("decode_ms", "request_decode_time")):
        n = d.get(f"vllm:{key}_seconds_count", 0.0)
        if n and f"vllm:{key}_seconds_sum" in d:  # a run of 1-token outputs has no decode time
            out[name] = 1e3 * d[f"vllm:{key}_seconds_sum"] / n
    if {"server_ttft_ms", "queue_ms", "prefill_ms"} <= out.keys():
        # Arrival at the API server to the scheduler's first look: tokenising, image processing, hand-off.
        out["before_engine_ms"] = out["server_ttft_ms"] - out["queue_ms"] - out["prefill_ms"]
    if d.get("vllm:prefix_cache_queries_total"):
        # Prompt tokens found in the prefix cache over prompt tokens looked up (vLLM's own counters).
        out["prefix_hit_rate"] = d.get("vllm:prefix_cache_hits_total", 0.0) / d["vllm:prefix_cache_queries_total"]
    done = run["summary"]["completed"] or 1
    for proc, cpu in run["server_cpu_s"].items():
        out[f"cpu_ms_per_request_{proc}"] = 1e3 * cpu / done
    return out


def _spec_counters(run: dict[str, Any]) -> dict[str, float]:
    d = run["server_metrics_delta"]
    return {name: d.get(f"vllm:spec_decode_num_{key}_total", 0.0)
            for name, key in (("drafts", "drafts"), ("draft_tokens", "draft_tokens"),
                              ("accepted_tokens", "accepted_tokens"))}


def _parse_image(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    w, h, _ = (int(x) for x in text.strip("()").split(","))
    return w, h


def load_runs(root: Path | None = None, speculative: bool = False) -> list[RealRun]:
    """Every run of the shipped real-vLLM measurements (warm-ups included; see ``RealRun.warmup``); those of
    servers that speculate only when ``speculative``."""
    paths = [p for d in RUN_DIRS for p in sorted(((root or catalog_root()) / d).glob("*.json"))
             if p.name not in ("preproc.json", "predicted_before.json")]
    runs: list[RealRun] = []
    for path in paths:
        doc = json.loads(path.read_text())
        cmd = doc["serve_command"].split()
        model = cmd[cmd.index("--served-model-name") + 1]
        api_servers = int(cmd[cmd.index("--api-server-count") + 1]) if "--api-server-count" in cmd else 1
        spec = json.loads(cmd[cmd.index("--speculative-config") + 1]) if "--speculative-config" in cmd else None
        if spec is not None and not speculative:
            continue
        for r in doc["runs"]:
            s = r["summary"]
            kind, value, prompts = r["load"]
            ds = r["dataset"]
            runs.append(RealRun(
                label=r["label"], model=model, arrival="poisson" if kind == "rate" else "closed",
                rate_per_s=float(value) if kind == "rate" else None,
                concurrency=int(value) if kind == "conc" else None, prompts=int(prompts),
                image=_parse_image(ds["image"]), text_tokens=int(ds["input_tokens"]),
                output_tokens=int(ds["output_tokens"]), ranged=float(ds["range_ratio"]) > 0,
                input_lens=tuple(r["requests"]["input_len"]), output_lens=tuple(r["requests"]["output_len"]),
                measured={"ttft_p50": s["median_ttft_ms"], "ttft_p95": s["p95_ttft_ms"],
                          "tpot_p50": s["median_tpot_ms"], "tpot_p95": s["p95_tpot_ms"],
                          "throughput": s["request_throughput"]},
                server=_server_means(r), api_servers=api_servers, prefix_tokens=int(ds.get("prefix_tokens", 0)),
                speculative=spec, spec_counters=_spec_counters(r) if spec else {}))
    return runs


def run_model(run: RealRun, repo: Path | None = None) -> ModelSpec:
    """The model a run served: its config.json under ``repo`` (default: this source tree's root) for the
    harness's local model folders, else the catalog entry."""
    if run.model in MODEL_DIRS:
        base = repo or Path(__file__).resolve().parents[3]
        return load_model_from_path(base / MODEL_DIRS[run.model])
    return load_models().get(run.model)


def measured_speculation(run: RealRun) -> tuple[float, float]:
    """(draft rate, per-token acceptance) of a speculative run, from its spec-decode counters. Every decoding
    step of a sequence yields one token and the accepted ones, so its sequence-steps are the output tokens less
    one per request (the prefill's) less the accepted; the draft rate is the drafts over those. The acceptance
    ``a`` solves ``a + a^2 + ... + a^k = accepted / drafts`` (a chain draft of k tokens; vLLM's n-gram proposer
    sometimes proposes fewer than k, 2.83-2.97 on average in run25/run26, not modelled)."""
    assert run.speculative is not None and run.spec_counters, f"{run.label}: not a speculative run"
    k = int(run.speculative["num_speculative_tokens"])
    c = run.spec_counters
    steps = sum(run.output_lens) - len(run.output_lens) - c["accepted_tokens"]
    rate = min(1.0, c["drafts"] / steps)
    per_draft = c["accepted_tokens"] / c["drafts"]
    lo, hi = 0.0, 1.0  # sum_{i=1..k} a^i rises from 0 to k on [0, 1]: bisect
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(mid**i for i in range(1, k + 1)) < per_draft else (lo, mid)
    return rate, min(max(lo, 1e-6), 1 - 1e-6)


def run_speculation(run: RealRun) -> Speculation | None:
    """The run's ``--speculative-config`` as vlmplan's ``Speculation``, at the run's measured acceptance and draft
    rate (None: the server did not speculate)."""
    if run.speculative is None:
        return None
    conf = dict(run.speculative)
    rate, acceptance = measured_speculation(run)
    method = conf.pop("method")
    k = int(conf.pop("num_speculative_tokens"))
    if conf.pop("model", None) is not None:
        raise ValueError(f"{run.label}: replaying a run with a draft checkpoint is not implemented")
    return Speculation(method=method, num_speculative_tokens=k, acceptance_rate=acceptance, draft_rate=rate,
                       extra_config=tuple(sorted((key, int(v)) for key, v in conf.items())))


def run_config(run: RealRun, model: ModelSpec | None = None) -> ResolvedConfig:
    gpu = load_gpus().get("H200-141GB")
    cfg = ServingConfig(model=model or run_model(run), gpu=gpu, **SERVER,  # type: ignore[arg-type]
                        limit_images_per_prompt=1 if run.image else None, api_server_count=run.api_servers,
                        speculative=run_speculation(run))
    return resolve(cfg, load_engine())


def run_workload(run: RealRun, visual_tokens: int) -> Workload:
    """The run as a vlmplan workload. The engine's prompt is the benchmark's input length (its text, the chat
    template and the image's tokens, equal to the server's own prompt-token count in every run): the text part
    is that less vlmplan's visual tokens for the image, per request where the lengths were ranged."""
    images = [ImageSize(width=run.image[0], height=run.image[1])] if run.image else []
    text = [max(0, n - visual_tokens) for n in run.input_lens]
    w = Workload(name=run.label, prompt_tokens=round(sum(text) / len(text)), output_tokens=run.output_tokens,
                 images=images, arrival=run.arrival, rate_per_s=run.rate_per_s,  # type: ignore[arg-type]
                 concurrency=run.concurrency, shared_prefix_tokens=min(run.prefix_tokens, min(text)))
    if not run.ranged:
        return w
    return w.model_copy(update={
        "prompt_tokens_dist": IntDist(kind="empirical", values=tuple(text)),
        "output_tokens_dist": IntDist(kind="empirical", values=tuple(int(x) for x in run.output_lens)),
    })


@dataclass(frozen=True)
class Prediction:
    ttft_p50: float
    ttft_p95: float
    tpot_p50: float
    tpot_p95: float
    throughput: float
    kv_tokens: int
    visual_tokens: int


def predict_run(run: RealRun, cal: Calibration | None = None, seeds: int = 4,
                model: ModelSpec | None = None, async_scheduling: bool | None = None) -> Prediction:
    """vlmplan's prediction of ``run``: the benchmark replayed in the simulator (see the module doc).
    ``async_scheduling`` None: the config's (the engine's, off where its speculative method turns it off)."""
    cfg = run_config(run, model)
    cal = cal or load_calibration(cfg.gpu.name)
    precisions = load_precisions()
    cost = make_step_cost(cfg, cal, precisions)
    mem = memory_breakdown(cfg, load_engine(), precisions)
    probe = Workload(prompt_tokens=0, output_tokens=1,
                     images=[ImageSize(width=run.image[0], height=run.image[1])] if run.image else [])
    visual = int(build_requests(cfg, probe, cost, 1).enc_tokens[0]) if run.image else 0
    workload = run_workload(run, visual)
    ttft: list[np.ndarray] = []
    tpot: list[np.ndarray] = []
    thr: list[float] = []
    for seed in range(seeds):
        reqs = build_requests(cfg, workload, cost, run.prompts, seed)
        res = simulate(cost, reqs, mem.kv_capacity_tokens, run.arrival, run.rate_per_s, run.concurrency,
                       seed=seed, cfg=cfg, async_scheduling=async_scheduling)
        front = res.frontend_ms if res.frontend_ms is not None else 0.0
        ttft.append((res.first_token_s - res.arrival_s) * 1e3 + front)
        out = res.output_tokens
        tpot.append(((res.finish_s - res.first_token_s) / np.maximum(out - 1, 1) * 1e3)[out > 1])
        start = 0.0 if run.arrival == "closed" else float(np.min(res.arrival_s))
        end = float(np.max(res.finish_s))
        thr.append(len(out) / (end - start) if end > start else math.nan)
    t, p = np.concatenate(ttft), np.concatenate(tpot)
    if not len(p):  # one output token: no TPOT
        p = np.array([math.nan])
    return Prediction(ttft_p50=float(np.percentile(t, 50)), ttft_p95=float(np.percentile(t, 95)),
                      tpot_p50=float(np.percentile(p, 50)), tpot_p95=float(np.percentile(p, 95)),
                      throughput=float(np.mean(thr)), kv_tokens=int(mem.kv_capacity_tokens), visual_tokens=visual)


def relative_error(pred: float, meas: float) -> float:
    """(predicted - measured) / measured."""
    return (pred - meas) / meas if meas else math.nan


SERVING_CONSTANTS = ("request_latency_ms", "frontend_ms_per_image", "frontend_ms_per_input_megapixel",
                     "vision_call_overhead_ms", "engine_step_overhead_ms", "engine_per_seq_overhead_ms")
"""The constants fitted from real serving (engine and host costs that kernel microbenchmarks cannot see)."""

METRICS = ("ttft_p50", "ttft_p95", "tpot_p50", "tpot_p95", "throughput")


def with_constants(cal: Calibration, values: dict[str, float]) -> Calibration:
    """``cal`` with some constants' values replaced."""
    consts = dict(cal.constants)
    for k, v in values.items():
        consts[k] = consts[k].model_copy(update={"value": float(v)})
    return cal.model_copy(update={"constants": consts})


def errors(runs: list[RealRun], cal: Calibration, seeds: int = 4) -> dict[str, dict[str, float]]:
    """Per run label: the relative error of each metric (predicted - measured) / measured."""
    out: dict[str, dict[str, float]] = {}
    models: dict[str, ModelSpec] = {}
    for r in runs:
        model = models.setdefault(r.model, run_model(r))
        p = predict_run(r, cal, seeds, model)
        out[r.label] = {m: relative_error(getattr(p, m), r.measured[m]) for m in METRICS}
    return out


def fit_serving(runs: list[RealRun], cal: Calibration, seeds: int = 2) -> tuple[dict[str, float], float]:
    """Least squares of log(predicted / measured) over every metric of ``runs`` (none held out, no warm-up),
    for ``SERVING_CONSTANTS``, bounded to be non-negative. Returns the values and the final RMS log error."""
    from scipy.optimize import least_squares

    fit_runs = [r for r in runs if not r.held_out and not r.warmup and r.speculative is None]
    models = {r.model: run_model(r) for r in fit_runs}
    x0 = np.array([cal.value(k) for k in SERVING_CONSTANTS])
    scale = np.maximum(np.abs(x0), 0.01)

    def resid(x: np.ndarray) -> np.ndarray:
        c = with_constants(cal, dict(zip(SERVING_CONSTANTS, x * scale)))
        res: list[float] = []
        for r in fit_runs:
            p = predict_run(r, c, seeds, models[r.model])
            res.extend(math.log(max(getattr(p, m), 1e-9) / r.measured[m]) for m in METRICS)
        return np.array(res)

    sol = least_squares(resid, x0 / scale, bounds=(0, np.inf), diff_step=0.05, max_nfev=60, x_scale=1.0)
    values = dict(zip(SERVING_CONSTANTS, (float(v) for v in sol.x * scale)))
    return values, float(np.sqrt(np.mean(sol.fun**2)))


SYNC_CONSTANTS = ("sync_step_overhead_ms", "sync_per_seq_overhead_ms")
"""The engine CPU time per step that synchronous scheduling exposes (fitted on n-gram speculation)."""

SYNC_FIT_METRICS = ("tpot_p50", "tpot_p95", "throughput")
"""What ``fit_sync_overhead`` fits: the per-token and per-request rates the constants move (TTFT is left to the
plain runs' fit of the request path)."""


def fit_sync_overhead(runs: list[RealRun] | None = None, cal: Calibration | None = None, seeds: int = 4
                      ) -> tuple[dict[str, float], float]:
    """Least squares of log(predicted / measured) TPOT p50/p95 and throughput over ``SYNC_FIT_RUNS`` (run25's
    n-gram runs at 1, 16 and 64 clients, each at its measured acceptance and draft rate) for ``SYNC_CONSTANTS``,
    the other constants as shipped, bounded to be non-negative. Returns the values (rounded to 4 significant
    digits, as the catalog holds them) and the RMS log error. Refit with::

        python -c "from planner.calibrate.fit.serving import fit_sync_overhead; print(fit_sync_overhead())"
    """
    from scipy.optimize import least_squares

    runs = runs if runs is not None else load_runs(speculative=True)
    fit_runs = [r for r in runs if r.label in SYNC_FIT_RUNS]
    assert len(fit_runs) == len(SYNC_FIT_RUNS) and not any(r.held_out for r in fit_runs)
    cal = cal or load_calibration("H200-141GB")
    models = {r.model: run_model(r) for r in fit_runs}

    def resid(x: np.ndarray) -> np.ndarray:
        c = with_constants(cal, dict(zip(SYNC_CONSTANTS, x)))
        res: list[float] = []
        for r in fit_runs:
            p = predict_run(r, c, seeds, models[r.model])
            res.extend(math.log(getattr(p, m) / r.measured[m]) for m in SYNC_FIT_METRICS)
        return np.array(res)

    sol = least_squares(resid, np.array([2.0, 0.05]), bounds=(0, np.inf), x_scale=np.array([1.0, 0.01]),
                        diff_step=0.02)
    values = {k: float(f"{v:.4g}") for k, v in zip(SYNC_CONSTANTS, sol.x)}
    rms = float(np.sqrt(np.mean(resid(np.array([values[k] for k in SYNC_CONSTANTS])) ** 2)))
    return values, rms
