"""SLO and budget grammars."""

import pytest

from planner.core.errors import RequestError
from planner.spec.slo import parse_budget, parse_slos


@pytest.mark.parametrize(
    ("text", "key", "limit_ms", "implicit"),
    [
        ("ttft_p95=500ms", "ttft_p95", 500, False),
        ("tpot_p99=40ms", "tpot_p99", 40, False),
        ("e2e_p95=5s", "e2e_p95", 5000, False),  # seconds become ms
        ("ttft=300ms", "ttft_mean", 300, False),  # no stat: the mean
        ("p95=200ms", "ttft_p95", 200, True),  # a bare percentile binds to TTFT
        ("TTFT_P90<=0.25s", "ttft_p90", 250, False),
    ],
)
def test_slo_forms(text, key, limit_ms, implicit):
    (slo,) = parse_slos([text])
    assert (slo.key, slo.limit_ms, slo.implicit_metric) == (key, limit_ms, implicit)


def test_slos_comma_separated_and_repeatable():
    slos = parse_slos(["ttft_p95=500ms,tpot_p99=40ms", "e2e_p95=5s"])
    assert [s.key for s in slos] == ["ttft_p95", "tpot_p99", "e2e_p95"]


@pytest.mark.parametrize("bad", ["ttft_p42=1ms", "latency=3ms", "ttft_p95=", "ttft_p95=-3ms", "p95=200ms,p95=300ms"])
def test_bad_slos_are_one_line_errors(bad):
    with pytest.raises(RequestError) as exc:
        parse_slos([bad])
    assert "\n" not in str(exc.value)


def test_budget_forms():
    assert parse_budget("4xA100").inventory == {"A100-SXM-80GB": 4}
    assert parse_budget("A100:4").inventory == {"A100-SXM-80GB": 4}
    mixed = parse_budget("8xH100,16xL40S,$40/h")
    assert mixed.inventory == {"H100-SXM-80GB": 8, "L40S-48GB": 16}
    assert mixed.max_usd_per_hour == 40
    cap = parse_budget("$12.5/h")
    assert cap.inventory == {} and cap.max_usd_per_hour == 12.5
    assert parse_budget(None).limit("L4-24GB") == 64  # no budget: any GPU, sane cap


@pytest.mark.parametrize("bad", ["4xH100X", "four x A100", "0xA100", "$-3/h"])
def test_bad_budgets(bad):
    with pytest.raises(Exception) as exc:
        parse_budget(bad)
    assert "\n" not in str(exc.value)
