"""The API-server queue: vLLM's API-server processes as first-come-first-served servers in front of the engine."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_models, load_precisions
from planner.load.analytic import build_step_cost, predict
from planner.load.simulator import api_queue_wait, build_requests, simulate
from planner.perf.frontend import api_server_ms
from planner.perf.memory import memory_breakdown
from planner.spec.config import ServingConfig, resolve
from planner.spec.shape import request_shape
from planner.spec.workload import Workload


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.85])
def test_one_server_with_fixed_holds_waits_as_pollaczek_khinchine_says(rho):
    """M/D/1: mean wait = rho S / (2 (1 - rho)) (Pollaczek-Khinchine), from 200,000 Poisson arrivals."""
    hold = 0.040
    rng = np.random.default_rng(1)
    arr = np.cumsum(rng.exponential(hold / rho, 200_000))
    wait = api_queue_wait(arr, np.full(len(arr), hold), 1)
    expected = rho * hold / (2 * (1 - rho))
    assert wait.mean() == pytest.approx(expected, rel=0.05)


def test_two_servers_with_exponential_holds_wait_as_erlang_c_says():
    """M/M/2 at a = 1.5: P(wait) = 9/14... Erlang C = a^2/2 / (1 - a/2) / (1 + a + a^2/2 / (1 - a/2)) and the mean
    wait is P(wait) x S / (c - a)."""
    hold, a, c = 0.050, 1.5, 2
    rng = np.random.default_rng(2)
    n = 300_000
    arr = np.cumsum(rng.exponential(hold / a, n))
    wait = api_queue_wait(arr, rng.exponential(hold, n), c)
    last = a**2 / 2 / (1 - a / c)
    p_wait = last / (1 + a + last)
    assert (wait > 0).mean() == pytest.approx(p_wait, rel=0.03)
    assert wait.mean() == pytest.approx(p_wait * hold / (c - a), rel=0.06)


def _text_setup(api_servers: int):
    cfg = resolve(ServingConfig(model=load_models().get("Qwen/Qwen2.5-VL-7B-Instruct"), gpu=load_gpus().get("H200"),
                                api_server_count=api_servers), load_engine())
    cost = build_step_cost(cfg)
    kv = memory_breakdown(cfg, load_engine(), load_precisions()).kv_capacity_tokens
    return cfg, cost, kv


def test_one_api_server_caps_short_requests_and_a_second_lifts_the_cap():
    """256 tokens in, 16 out: one API server holds each request ~7.4 ms (135 req/s), well below what the H200's
    engine serves. Offered 170 req/s, the simulator completes 1 / hold with one server (a saturated single server
    departs one request per hold) and clearly more with two."""
    wl = Workload(prompt_tokens=256, output_tokens=16, arrival="poisson", rate_per_s=170)
    cal = load_calibration("H200-141GB")
    hold_ms = api_server_ms(cal, 256, 16, 0, 0.0)
    got = {}
    for servers in (1, 2):
        cfg, cost, kv = _text_setup(servers)
        reqs = build_requests(cfg, wl, cost, 3000, seed=0)
        res = simulate(cost, reqs, kv, "poisson", rate_per_s=170, seed=0, cfg=cfg)
        got[servers] = 3000 / (res.finish_s.max() - res.arrival_s.min())
    assert got[1] == pytest.approx(1e3 / hold_ms, rel=0.05)
    assert got[2] > 1.15 * got[1]


def test_the_analytic_model_saturates_where_the_api_servers_do():
    cfg, cost, kv = _text_setup(1)
    wl = Workload(prompt_tokens=256, output_tokens=16)
    shape = request_shape(cfg, wl)
    cap = 1e3 / api_server_ms(cost.cal, 256, 16, 0, 0.0)
    one = predict(cost, cfg, shape, "poisson", 0.99 * cap, None, kv)
    assert one.max_requests_per_s == pytest.approx(cap, rel=1e-6)
    assert not one.saturated
    assert predict(cost, cfg, shape, "poisson", 1.01 * cap, None, kv).saturated
    cfg2 = replace(cfg, api_server_count=2)
    two = predict(build_step_cost(cfg2), cfg2, shape, "poisson", 1.01 * cap, None, kv)
    assert not two.saturated and two.max_requests_per_s > 1.1 * cap


def test_below_the_cap_the_wait_is_small_and_grows_toward_it():
    cfg, cost, kv = _text_setup(1)
    shape = request_shape(cfg, Workload(prompt_tokens=256, output_tokens=16))
    cap = 1e3 / api_server_ms(cost.cal, 256, 16, 0, 0.0)
    p = [predict(cost, cfg, shape, "poisson", f * cap, None, kv).ttft.p95 for f in (0.2, 0.5, 0.8, 0.95)]
    assert all(b > a for a, b in zip(p, p[1:]))
    assert math.isfinite(p[-1])


def test_the_shipped_api_server_constants_are_a_fresh_refit_of_the_measurements():
    """The five API-server constants in the H200 calibration are what planner.calibrate.api_server fits from the
    committed run20/run21 files today (rounded as shipped): the catalog cannot drift from its data."""
    from planner.calibrate.fit.api_server import fit_api_server

    fit = fit_api_server()
    cal = load_calibration("H200-141GB")
    for name, value in (("api_server_ms_per_request", fit.ms_per_request),
                        ("api_server_ms_per_input_token", fit.ms_per_input_token),
                        ("api_server_ms_per_output_token", fit.ms_per_output_token),
                        ("api_server_ms_per_image", fit.ms_per_image),
                        ("api_server_ms_per_megapixel", fit.ms_per_megapixel)):
        assert cal.value(name) == pytest.approx(value, rel=1e-3, abs=1e-6), name
    assert fit.runs == cal.constants["api_server_ms_per_request"].fit.n_points  # type: ignore[union-attr]
