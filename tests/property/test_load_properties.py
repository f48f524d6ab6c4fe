"""Properties of the load model (simulator and analytic), over random workloads and loads."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.calibrate.fit.serving import with_constants
from planner.catalog.loader import load_engine, load_gpus, load_models, load_precisions
from planner.load.analytic import build_step_cost, predict
from planner.load.simulator import fixed_requests, percentiles, simulate
from planner.perf.memory import memory_breakdown
from planner.spec.config import ServingConfig, resolve
from planner.spec.shape import RequestShape

ENGINE = load_engine()
PREC = load_precisions()
CFG = resolve(ServingConfig(model=load_models().get("meta-llama/Llama-3.1-8B-Instruct"),
                            gpu=load_gpus().get("H100"), max_num_seqs=128), ENGINE)
COST = build_step_cost(CFG)
# The engine's own properties: without the API-server queue (fixed_requests carries none; the analytic model
# would otherwise cap at the API servers' capacity, which tests/unit/test_api_server_queue.py checks).
_API_OFF = {k: 0.0 for k in COST.cal.constants if k.startswith("api_server_ms")}
COST = type(COST)(COST.cfg, with_constants(COST.cal, _API_OFF), COST.precisions)
KV = memory_breakdown(CFG, ENGINE, PREC).kv_capacity_tokens
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

prompts = st.integers(min_value=16, max_value=3000)
outputs = st.integers(min_value=2, max_value=300)
loads = st.floats(min_value=0.05, max_value=0.9)


def _shape(p, o):
    return RequestShape(text_tokens=p, visual_tokens=0, encoder_patches=0, images=0, output_tokens=o, cached_tokens=0)


def _capacity(p, o):
    return predict(COST, CFG, _shape(p, o), "single", None, None, KV).max_requests_per_s


@SETTINGS
@given(prompts, outputs, loads, st.integers(0, 3))
def test_no_simulated_request_beats_a_lone_one(p, o, f, seed):
    """Under Poisson load every request's TTFT and TPOT are at least those of the same request alone (sharing a
    step never makes it shorter), and its first token comes after its arrival and before its last. (This replaces
    a test of percentile ordering, which np.percentile guarantees and so could not fail.)"""
    reqs = fixed_requests(600, p, o)
    alone = simulate(COST, fixed_requests(3, p, o), KV, "single")
    r = simulate(COST, reqs, KV, "poisson", rate_per_s=f * _capacity(p, o), seed=seed)
    assert np.all(r.first_token_s >= r.arrival_s) and np.all(r.finish_s >= r.first_token_s)
    assert r.ttft_ms.min() >= 0.999 * alone.ttft_ms.min()
    if o > 1:
        assert r.tpot_ms.min() >= 0.999 * alone.tpot_ms.min()


@SETTINGS
@given(prompts, outputs, loads)
def test_analytic_percentiles_are_ordered(p, o, f):
    pred = predict(COST, CFG, _shape(p, o), "poisson", f * _capacity(p, o), None, KV)
    for x in (pred.ttft, pred.tpot, pred.e2e):
        assert x.p50 <= x.p90 <= x.p95 <= x.p99


@SETTINGS
@given(prompts, outputs, st.floats(0.05, 0.6), st.floats(1.1, 1.5))
def test_simulated_latency_non_decreasing_in_rate(p, o, f, k):
    """Same seed at both rates (common random numbers: the arrival times only stretch), so more load never
    makes the mean or the tail faster, beyond a small simulation noise."""
    reqs = fixed_requests(800, p, o)
    cap = _capacity(p, o)
    lo = simulate(COST, reqs, KV, "poisson", rate_per_s=f * cap, seed=1)
    hi = simulate(COST, reqs, KV, "poisson", rate_per_s=min(0.9, f * k) * cap, seed=1)
    for a, b in ((lo.ttft_ms, hi.ttft_ms), (lo.e2e_ms, hi.e2e_ms), (lo.tpot_ms, hi.tpot_ms)):
        pa, pb = percentiles(a), percentiles(b)
        assert pb["mean"] >= pa["mean"] * 0.98
        assert pb["p95"] >= pa["p95"] * 0.95


@SETTINGS
@given(prompts, outputs, st.floats(0.05, 0.9), st.floats(1.05, 1.5))
def test_analytic_latency_non_decreasing_in_rate(p, o, f, k):
    cap = _capacity(p, o)
    a = predict(COST, CFG, _shape(p, o), "poisson", f * cap, None, KV)
    b = predict(COST, CFG, _shape(p, o), "poisson", min(0.95, f * k) * cap, None, KV)
    for x, y in ((a.ttft, b.ttft), (a.tpot, b.tpot), (a.e2e, b.e2e)):
        assert y.mean >= x.mean * 0.99
        assert y.p95 >= x.p95 * 0.97


@SETTINGS
@given(prompts, st.integers(min_value=16, max_value=300), st.floats(0.1, 3.0))
def test_throughput_never_above_saturation(p, o, f):
    """Whatever is offered (even 3x capacity), the simulated completions never outrun the saturation
    throughput (the analytic model with every slot busy), nor does a closed loop that fills every slot.
    Not the closed loop as the bound: with identical requests it synchronises into prefill waves and
    runs up to ~10% below an open loop's staggered arrivals. Outputs of 16+ tokens: below that the
    analytic capacity is up to 25% low (prefill-only steps; docs/validation/load.md), a known weakness."""
    reqs = fixed_requests(1500, p, o)
    cap = _capacity(p, o)
    clients = max(1, min(CFG.max_num_seqs, KV // (p + o + 16)))
    closed = simulate(COST, reqs, KV, "closed", concurrency=clients).requests_per_s
    r = simulate(COST, reqs, KV, "poisson", rate_per_s=f * cap)
    # 10%: the analytic saturation is a mean-value approximation of the simulator's (measured worst +6%
    # over 80 random shapes, closed loop), and a 1,500-request measurement window is noisy.
    assert r.requests_per_s <= cap * 1.10
    assert r.requests_per_s <= f * cap * 1.15  # never more completions than arrivals (window noise aside)
    assert closed <= cap * 1.10
    pred = predict(COST, CFG, _shape(p, o), "poisson", f * cap, None, KV)
    assert pred.requests_per_s <= pred.max_requests_per_s


@SETTINGS
@given(prompts, outputs, st.floats(0.1, 0.8), st.integers(0, 3))
def test_littles_law_holds_in_the_simulation(p, o, f, seed):
    """L = lambda W over a steady window: the time-average number of requests in the system, counted from
    the arrival and finish times, equals the arrival rate times the mean time in system."""
    r = simulate(COST, fixed_requests(2000, p, o), KV, "poisson", rate_per_s=f * _capacity(p, o), seed=seed)
    t0, t1 = np.quantile(r.arrival_s, [0.2, 0.8])
    # Area under N(t) over [t0, t1]: each request's overlap with the window.
    area = np.clip(np.minimum(r.finish_s, t1) - np.maximum(r.arrival_s, t0), 0, None).sum()
    L = area / (t1 - t0)
    inside = (r.arrival_s >= t0) & (r.arrival_s < t1)
    lam = inside.sum() / (t1 - t0)
    W = (r.finish_s[inside] - r.arrival_s[inside]).mean()
    assert L == np.float64(L) and abs(L - lam * W) <= 0.1 * lam * W + 0.5
    # The step loop's own count of running sequences can never exceed the requests in the system.
    assert r.mean_batch <= (r.finish_s - r.arrival_s).sum() / r.sim_end_s + 1e-9
