"""The one SLO check (planner.load.slo_check) answers alike for a simulation and for a prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.core.stats import Percentiles
from planner.load.analytic import LoadPrediction
from planner.load.simulator import SimResult
from planner.load.slo_check import broken, meets, observed, tightest
from planner.spec.slo import parse_slos


def _sim(ttft_ms: list[float], saturated: bool = False) -> SimResult:
    n = len(ttft_ms)
    arrival = np.zeros(n)
    first = np.array(ttft_ms) / 1e3
    return SimResult(arrival_s=arrival, first_token_s=first, finish_s=first + 1.0, output_tokens=np.full(n, 11),
                     measured=np.ones(n, dtype=bool), window_s=(0.0, 2.0), busy_seq_s=1.0, sim_end_s=2.0,
                     preemptions=0, steps=1, saturated=saturated)


def _pred(ttft_p95: float, tpot_p95: float = 10.0) -> LoadPrediction:
    return LoadPrediction(ttft=Percentiles.constant(ttft_p95), tpot=Percentiles.constant(tpot_p95),
                          e2e=Percentiles.constant(ttft_p95 + 100 * tpot_p95), requests_per_s=1.0,
                          output_tokens_per_s=10.0, saturated=False, max_requests_per_s=2.0, mean_batch=1.0)


def test_a_simulation_is_judged_on_its_percentiles() -> None:
    res = _sim([100.0] * 95 + [900.0] * 5)  # p95 interpolates 5% of the way to the outliers
    slos = parse_slos(["ttft_p95=200ms", "tpot_p95=100ms"])
    assert observed(res, slos[0]) == pytest.approx(140.0) and observed(res, slos[1]) == pytest.approx(100.0)
    assert meets(res, slos) and broken(res, slos) == ""
    assert not meets(res, parse_slos(["ttft_p99=500ms"]))
    assert broken(res, parse_slos(["ttft_p99=500ms"])).startswith("ttft_p99 ")


def test_saturation_breaks_every_slo_first() -> None:
    res = _sim([1.0] * 10, saturated=True)
    assert not meets(res, parse_slos(["ttft_p95=1s"]))
    assert broken(res, parse_slos(["ttft_p95=1s"])).startswith("saturated")


def test_margin_asks_for_room_to_spare() -> None:
    slos = parse_slos(["ttft_p95=200ms"])
    assert meets(_pred(140.0), slos, 0.75) and not meets(_pred(160.0), slos, 0.75) and meets(_pred(160.0), slos)


def test_no_measured_request_meets_nothing() -> None:
    res = _sim([])
    assert math.isnan(observed(res, parse_slos(["ttft_p95=1s"])[0]))
    assert not meets(res, parse_slos(["ttft_p95=1s"]))


def test_tightest_is_the_least_headroom_or_the_furthest_over() -> None:
    slos = parse_slos(["ttft_p95=200ms", "tpot_p95=20ms"])
    room, s, value = tightest(_pred(100.0, 15.0), slos) or (0.0, None, 0.0)
    assert s is not None and s.key == "tpot_p95" and value == 15.0 and room == 0.25
    room, s, _ = tightest(_pred(300.0, 25.0), slos) or (0.0, None, 0.0)
    assert s is not None and s.key == "ttft_p95" and room == -0.5
    assert tightest(_pred(1.0), []) is None
