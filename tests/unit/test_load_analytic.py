"""The analytic load model against the simulator (the solver screens with one and verifies with the other).

The analytic model describes vLLM's synchronous scheduler, so it is compared with the simulator in that mode
(``async_scheduling=False``); the engine's asynchronous scheduler, which the simulator runs by default, is
checked against real vLLM runs in tests/benchmarks/bench_real_vllm.py."""

import math

import numpy as np
import pytest

from planner.catalog.loader import load_engine, load_gpus, load_models, load_precisions
from planner.estimate import estimate
from planner.load.analytic import build_step_cost, predict
from planner.load.simulator import build_requests, percentiles, simulate
from planner.perf.memory import memory_breakdown
from planner.spec.config import ServingConfig, resolve
from planner.spec.shape import request_shape
from planner.spec.workload import PRESETS, ImageSize, IntDist, SizeDist, Workload

ENGINE = load_engine()
PREC = load_precisions()
API_OFF = {"api_server_ms_per_input_token": 0.0, "api_server_ms_per_output_token": 0.0,
           "api_server_ms_per_image": 0.0, "api_server_ms_per_megapixel": 0.0,
           "api_server_ms_per_request": 0.0}
"""The API-server queue switched off: the engine's own queueing, which the agreement cases check."""
TEXT = Workload(name="text-512-256", prompt_tokens=512, output_tokens=256)

CASES = {
    "llama8b-text": ("meta-llama/Llama-3.1-8B-Instruct", "H100", TEXT, {}),
    "qwen25vl7b-visual-reasoning": ("Qwen/Qwen2.5-VL-7B-Instruct", "H100", PRESETS["visual-reasoning"], {}),
    "qwen25vl7b-document-vqa": ("Qwen/Qwen2.5-VL-7B-Instruct", "H100", PRESETS["document-vqa"], {}),
    "qwen25vl7b-captioning": ("Qwen/Qwen2.5-VL-7B-Instruct", "H100", PRESETS["captioning"], {}),
    "gemma3-27b-fp8-tp2": ("google/gemma-3-27b-it", "H100", PRESETS["visual-reasoning"], {"tp": 2, "precision": "fp8"}),
    "qwen3vl-30b-moe": ("Qwen/Qwen3-VL-30B-A3B-Instruct", "H100", PRESETS["visual-reasoning"], {}),
    "qwen25vl7b-doc-a100-chunked": ("Qwen/Qwen2.5-VL-7B-Instruct", "A100-80GB", PRESETS["document-vqa"], {}),
    "llama8b-prefix-half": ("meta-llama/Llama-3.1-8B-Instruct", "H100",
                            Workload(name="p", prompt_tokens=2048, output_tokens=128, prefix_cache_hit=0.5), {}),
    "llama70b-fp8-tp4": ("meta-llama/Llama-3.1-70B-Instruct", "H100",
                         Workload(name="t", prompt_tokens=1024, output_tokens=256), {"tp": 4, "precision": "fp8"}),
    "qwen25vl7b-seqs32": ("Qwen/Qwen2.5-VL-7B-Instruct", "H100", PRESETS["visual-reasoning"], {"max_num_seqs": 32}),
    # Lengths and images that vary (two-point distributions, the same means as fixed 768/192 or 256/256).
    "llama8b-two-point-lengths": ("meta-llama/Llama-3.1-8B-Instruct", "H100", Workload(
        name="tp", prompt_tokens=768, output_tokens=192,
        prompt_tokens_dist=IntDist(kind="weighted", values=(256, 1280), weights=(0.5, 0.5)),
        output_tokens_dist=IntDist(kind="weighted", values=(64, 320), weights=(0.5, 0.5))), {}),
    "qwen25vl7b-two-sizes-two-outputs": ("Qwen/Qwen2.5-VL-7B-Instruct", "H100", Workload(
        name="ts", prompt_tokens=256, output_tokens=256, images=[ImageSize(width=448, height=448)],
        image_size_dist=SizeDist(kind="weighted", values=(ImageSize(width=448, height=448),
                                                           ImageSize(width=1280, height=960)), weights=(0.5, 0.5)),
        output_tokens_dist=IntDist(kind="weighted", values=(64, 448), weights=(0.5, 0.5))), {}),
}
N_REQ = 24000  # simulated requests per seed
LOADS = (0.2, 0.4, 0.6, 0.8)  # fractions of the analytic saturation rate
# Seeds pooled per load level. The simulator's percentiles are themselves noisy near saturation, where busy
# spells last seconds: between seeds, a 24,000-request run's TPOT p95 at 80% load varies by up to 5.7% (1 sd,
# document VQA) and its p50 at 60% by up to 4.8% (chunked documents, whose TPOT steps by a whole interrupting
# prefill). Pooling 8 runs at 80% load, 4 at 60% and 2 at 40% keeps the reference's own error near 2%.
SEEDS = {0.2: 1, 0.4: 2, 0.6: 4, 0.8: 8}
METRICS = ("ttft_p50", "ttft_p95", "tpot_p50", "tpot_p95")


def _setup(model, gpu, kw):
    cfg = resolve(ServingConfig(model=load_models().get(model), gpu=load_gpus().get(gpu), **kw), ENGINE)
    return cfg, build_step_cost(cfg), memory_breakdown(cfg, ENGINE, PREC).kv_capacity_tokens


def agreement(name, api=False):
    """Relative errors (analytic / simulated - 1) per load level and metric; ``api``: with the API-server
    queue (load levels are then fractions of the lower of the engine's and the API servers' capacity)."""
    from planner.calibrate.fit.serving import with_constants
    from planner.perf.stepcost import StepCost

    model, gpu, wl, kw = CASES[name]
    cfg, cost, kv = _setup(model, gpu, kw)
    if not api:
        cost = StepCost(cost.cfg, with_constants(cost.cal, API_OFF), cost.precisions)
    shape = request_shape(cfg, wl)
    top = predict(cost, cfg, shape, "single", None, None, kv).max_requests_per_s
    out = {}
    for f in LOADS:
        pred = predict(cost, cfg, shape, "poisson", f * top, None, kv)
        assert not pred.saturated
        ttft, tpot = [], []
        for seed in range(SEEDS[f]):
            sim = simulate(cost, build_requests(cfg, wl, cost, N_REQ, seed=seed), kv, "poisson", rate_per_s=f * top,
                           seed=seed, async_scheduling=False)
            assert not sim.saturated
            ttft.append(sim.ttft_ms)
            tpot.append(sim.tpot_ms)
        got = {"ttft": percentiles(np.concatenate(ttft)), "tpot": percentiles(np.concatenate(tpot))}
        for m in METRICS:
            metric, stat = m.split("_")
            out[(f, m)] = getattr(getattr(pred, metric), stat) / got[metric][stat] - 1
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_analytic_agrees_with_simulator_within_10_percent(name):
    errs = agreement(name)
    bad = []
    for (f, m), e in errs.items():
        if abs(e) > 0.10:
            bad.append(f"{m} at {f:.0%} load: {e:+.1%}")
    assert not bad, "; ".join(bad)


def test_saturated_above_capacity_and_capacity_matches_backlogged_simulation():
    cfg, cost, kv = _setup("meta-llama/Llama-3.1-8B-Instruct", "H100", {})
    shape = request_shape(cfg, TEXT)
    p = predict(cost, cfg, shape, "poisson", 1e6, None, kv)
    assert p.saturated and math.isinf(p.ttft.p95) and p.max_requests_per_s > 0
    # The simulator with every slot busy (as many clients as the KV cache holds at their final context,
    # 512 + 256 tokens + rounding) reaches the same rate.
    sim = simulate(cost, build_requests(cfg, TEXT, cost, 6000), kv, "closed", concurrency=kv // (512 + 256 + 16),
                   async_scheduling=False)
    assert p.max_requests_per_s == pytest.approx(sim.requests_per_s, rel=0.1)


def test_single_matches_estimate_alone():
    cfg, cost, kv = _setup("Qwen/Qwen2.5-VL-7B-Instruct", "H100", {})
    wl = PRESETS["visual-reasoning"]
    est = estimate(cfg, wl)
    p = predict(cost, cfg, request_shape(cfg, wl), "single", None, None, kv)
    assert p.ttft.p50 == pytest.approx(est.ttft.p50, rel=1e-6)
    assert p.tpot.p50 == pytest.approx(est.tpot.p50, rel=0.01)


def _without_request_path(cost):
    """``cost`` under a calibration with no time outside the engine (the closed-loop analytic model's engine:
    its clients come straight back; with a request path and the asynchronous scheduler the simulator's
    clients bunch into waves instead, which the analytic closed loop does not model: see Known limits)."""
    from planner.calibrate.fit.serving import with_constants
    from planner.perf.stepcost import StepCost

    cal = with_constants(cost.cal, {"request_latency_ms": 0.0, "frontend_ms_per_image": 0.0,
                                    "frontend_ms_per_input_megapixel": 0.0,
                                    "frontend_ms_per_processed_megapixel": 0.0,
                                    **API_OFF})
    return StepCost(cost.cfg, cal, cost.precisions)


@pytest.mark.parametrize("conc", [2, 8, 32])
def test_closed_loop_tracks_the_simulator(conc):
    cfg, cost, kv = _setup("Qwen/Qwen2.5-VL-7B-Instruct", "H100", {})
    cost = _without_request_path(cost)
    wl = PRESETS["document-vqa"]
    p = predict(cost, cfg, request_shape(cfg, wl), "closed", None, conc, kv)
    sim = simulate(cost, build_requests(cfg, wl, cost, 1000), kv, "closed", concurrency=conc, async_scheduling=False)
    assert p.ttft.p50 == pytest.approx(percentiles(sim.ttft_ms)["p50"], rel=0.1)
    assert p.tpot.p50 == pytest.approx(percentiles(sim.tpot_ms)["p50"], rel=0.1)
    assert p.requests_per_s == pytest.approx(sim.requests_per_s, rel=0.1)


@pytest.mark.parametrize(("prompt", "conc"), [(512, 512), (1024, 256), (1024, 64)])
def test_closed_loop_is_the_settled_waves(prompt, conc):
    # Identical requests in a closed loop settle into cohorts that each fill one step with whole prompts, in
    # cycles of L + 1 steps: over a long run TTFT is the cohort's step and TPOT the rest of the cycle. (The model
    # used to add a second step for a share of prompts cut by step boundaries, which only happens while the
    # waves settle: a full step off, both ways; the simulator's p95 still holds a little of the settling.)
    cfg, cost, kv = _setup("meta-llama/Llama-3.1-8B-Instruct", "H100", {})
    cost = _without_request_path(cost)
    wl = Workload(name="w", prompt_tokens=prompt, output_tokens=128)
    p = predict(cost, cfg, request_shape(cfg, wl), "closed", None, conc, kv)
    sim = simulate(cost, build_requests(cfg, wl, cost, 60 * conc), kv, "closed", concurrency=conc,
                   async_scheduling=False)
    assert p.ttft.p50 == pytest.approx(percentiles(sim.ttft_ms)["p50"], rel=0.02)
    assert p.ttft.p95 == pytest.approx(percentiles(sim.ttft_ms)["p95"], rel=0.10)
    assert p.tpot.p50 == pytest.approx(percentiles(sim.tpot_ms)["p50"], rel=0.02)
    assert p.requests_per_s == pytest.approx(sim.requests_per_s, rel=0.02)


def test_with_the_api_server_queue_the_analytic_tail_stays_within_10_percent():
    """With the API servers' queue in front (load levels as fractions of their capacity, which binds here):
    the analytic model adds their wait to the engine's as if independent, where in the simulator the API server
    also spaces the engine's arrivals out. TTFT p95 and TPOT stay within 10%; TTFT p50 reads high (+19% and +22%
    at 60% and 80% of capacity: pessimistic, never optimistic). Known weakness, docs/validation/real_vllm.md."""
    errs = agreement("llama8b-text", api=True)
    bad = [f"{m} at {f:.0%}: {e:+.1%}" for (f, m), e in errs.items()
           if (abs(e) > 0.10 if m != "ttft_p50" else not -0.10 <= e <= 0.25)]
    assert not bad, "; ".join(bad)
