"""The shipped fitted calibrations are what their own ``# Fitted by:`` command fits today from the committed
measurements, and a constant that the fit pinned to a bound of its box says so.

Each fitted file (vllm-0.33-h200-141gb.yaml, vllm-0.33-h100-sxm-80gb.yaml) starts with the command that wrote it.
``planner.calibrate.fit.__main__.refit`` re-runs that command in this process (the same ``fit_files`` call as
``python -m planner.calibrate.fit``; about 1 s per GPU). Every constant the command fits (launch gaps, elementwise
kinds and L2, fp8 quantisation, GEMMs, unaligned GEMMs, prefill and decode attention, all-reduce; on H100 also the
ones ``--sibling H200-141GB`` transfers) must equal the shipped one exactly: value after the file's rounding, and
its whole fit record (method, dataset, n_points, mape_pct, fitted_on, at_bound, bound, unbounded_value). A value
or fit record edited by hand fails here, and so does one the fitting code no longer produces.

The files' other constants come from other fits, named in ``OTHER_FITS`` and checked elsewhere:

* ``planner.calibrate.fit.api_server`` (H200 ``api_server_*``): a fresh refit in
  tests/unit/test_api_server_queue.py::test_the_shipped_api_server_constants_are_a_fresh_refit_of_the_measurements;
* ``planner.calibrate.fit.frontend.fit_frontend`` (``frontend_ms_per_processed_megapixel`` everywhere, H100's
  ``frontend_ms_per_input_megapixel``: the default calibration's, kept by the command): a fresh refit in
  tests/unit/test_frontend.py::test_default_constants_are_the_fit_of_the_shipped_measurement;
* ``planner.calibrate.fit.serving.fit_serving`` (H200 ``engine_step_overhead_ms``, ``engine_per_seq_overhead_ms``,
  ``frontend_ms_per_input_megapixel``, ``request_latency_ms``, ``frontend_ms_per_image``,
  ``vision_call_overhead_ms``): NOT refitted by any test (the fit replays 23 real runs through the simulator many
  times over); tests/benchmarks/bench_real_vllm.py checks their held-out errors only;
* ``planner.calibrate.fit.serving.fit_sync_overhead`` (``sync_step_overhead_ms``, ``sync_per_seq_overhead_ms``: what
  synchronous scheduling adds per step, fitted on run25's n-gram runs at 1, 16 and 64 clients): refitted here (a few
  seconds), value and fit record;
* the H100's host-side constants are the H200's, transferred by hand: asserted here.

Every other constant is the default the command keeps (with its note): asserted here too.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner.calibrate.fit.__main__ import refit
from planner.calibrate.fit.fitted import log_fit
from planner.catalog.calibration_schema import FitInfo
from planner.catalog.loader import catalog_root, load_calibration, load_calibration_file

CAL_DIR = catalog_root() / "calibration"

SERVING = ("engine_step_overhead_ms", "engine_per_seq_overhead_ms", "frontend_ms_per_input_megapixel",
           "request_latency_ms", "frontend_ms_per_image", "vision_call_overhead_ms")
"""planner.calibrate.fit.serving.fit_serving on h200-141gb/run20_real_vllm (not refitted by any test)."""
API_SERVER = ("api_server_ms_per_request", "api_server_ms_per_input_token", "api_server_ms_per_output_token",
              "api_server_ms_per_image", "api_server_ms_per_megapixel")
"""planner.calibrate.fit.api_server on h200-141gb/run20 and run21 (tests/unit/test_api_server_queue.py)."""
SYNC = ("sync_step_overhead_ms", "sync_per_seq_overhead_ms")
"""planner.calibrate.fit.serving.fit_sync_overhead on h200-141gb/run25_prefix_ngram (refitted below)."""
HOST_FROM_H200 = ("request_latency_ms", "frontend_ms_per_image", "vision_call_overhead_ms", *API_SERVER, *SYNC)
"""H100 constants copied by hand from the H200's serving and API-server fits (host-side costs)."""

OTHER_FITS = {
    "H200-141GB": {**{n: "serving" for n in SERVING}, **{n: "api_server" for n in API_SERVER},
                   **{n: "sync_overhead" for n in SYNC}},
    "H100-SXM-80GB": {n: "copied from H200-141GB" for n in HOST_FROM_H200},
}
"""The constants of each shipped file that its ``# Fitted by:`` command does not write as shipped."""

FILES = {"H200-141GB": "vllm-0.33-h200-141gb.yaml", "H100-SXM-80GB": "vllm-0.33-h100-sxm-80gb.yaml"}


@pytest.fixture(scope="module", params=list(FILES))
def shipped_and_refit(request):
    path = CAL_DIR / FILES[request.param]
    return request.param, load_calibration_file(path), refit(path)


def test_the_shipped_fitted_constants_are_a_fresh_refit(shipped_and_refit):
    gpu, shipped, fresh = shipped_and_refit
    base = load_calibration("default")
    produced = {n for n, c in fresh.constants.items() if c.fit is not None and c.fit != base.constants[n].fit}
    assert len(produced) >= 30, sorted(produced)  # every microbenchmark section took part
    for name in sorted(produced):
        assert shipped.constants[name] == fresh.constants[name], name
    assert set(shipped.constants) == set(fresh.constants)
    differ = {n for n in shipped.constants if shipped.constants[n] != fresh.constants[n]}
    assert differ == set(OTHER_FITS[gpu]), "constants not written by the '# Fitted by:' command changed"


def test_the_h100_host_constants_are_the_h200_fits():
    h100, h200 = load_calibration("H100-SXM-80GB"), load_calibration("H200-141GB")
    for name in HOST_FROM_H200:
        assert h100.value(name) == h200.value(name), name
        assert h200.constants[name].fit is not None
        assert "transferred from the H200" in (h100.constants[name].note or ""), name


def test_the_shipped_sync_constants_are_a_fresh_refit():
    """The command in the constants' fit record, re-run: the same values (4 significant digits) and the RMS log
    error the record gives, over the 9 points it names."""
    from planner.calibrate.fit.serving import SYNC_FIT_METRICS, SYNC_FIT_RUNS, fit_sync_overhead

    shipped = load_calibration("H200-141GB")
    values, rms = fit_sync_overhead()
    for name in SYNC:
        c = shipped.constants[name]
        assert c.value == values[name], name
        assert c.fit is not None and "fit_sync_overhead()" in c.fit.method and c.fit.at_bound is None
        assert c.fit.mape_pct == round(100 * rms, 1)
        assert c.fit.n_points == len(SYNC_FIT_RUNS) * len(SYNC_FIT_METRICS)
        assert c.fit.dataset.endswith("run25_prefix_ngram/ngram.json")


def test_h200_quant_memory_efficiency_sits_at_its_lower_fit_bound():
    """quant_ops.py's fp8 quantisation runs slower than 10% of HBM bandwidth per input byte at large sizes: the fit
    stops at its lower bound 0.1, and without it gives 0.083."""
    fit = load_calibration("H200-141GB").constants["quant_memory_efficiency"]
    assert fit.value == 0.1 and fit.fit is not None
    assert (fit.fit.at_bound, fit.fit.bound) == ("lower", 0.1)
    assert fit.fit.unbounded_value == pytest.approx(0.083, abs=0.001)


def test_the_flagged_constants_are_the_ones_at_a_bound(shipped_and_refit):
    gpu, shipped, _ = shipped_and_refit
    flagged = {n: (f.at_bound, f.bound) for n, f in shipped.at_fit_bound().items()}
    expected = {"attention_prefill_compute_efficiency": ("upper", 1.0)}
    if gpu == "H200-141GB":
        expected["quant_memory_efficiency"] = ("lower", 0.1)
    assert flagged == expected
    for name in flagged:
        assert shipped.value(name) == shipped.constants[name].fit.bound  # type: ignore[union-attr]


def test_log_fit_flags_a_parameter_pinned_by_its_box_and_gives_the_unbounded_value():
    x = np.linspace(1.0, 10.0, 20)
    measured = 0.5 + 0.05 * x  # slope 0.05, below the box's lower bound 0.1

    def predict(v):
        return v["a"] + v["b"] * x

    fit = log_fit(["a", "b"], [1.0, 0.5], ([0.0, 0.1], [10.0, 1.0]), predict, measured)
    assert fit.values["b"] == pytest.approx(0.1)
    assert set(fit.at_bound) == {"b"}
    flag = fit.at_bound["b"]
    assert (flag.side, flag.bound) == ("lower", 0.1)
    assert flag.unbounded_value == pytest.approx(0.05, rel=1e-4)
    inside = log_fit(["a", "b"], [1.0, 0.5], ([0.0, 0.01], [10.0, 1.0]), predict, measured)
    assert inside.at_bound == {} and inside.values["b"] == pytest.approx(0.05, rel=1e-4)


def test_a_bound_flag_comes_with_its_bound():
    with pytest.raises(ValueError):
        FitInfo(method="m", dataset="d", n_points=3, fitted_on="2026-01-01", at_bound="lower")
    with pytest.raises(ValueError):
        FitInfo(method="m", dataset="d", n_points=3, fitted_on="2026-01-01", unbounded_value=0.1)


def test_estimate_names_the_constants_at_a_fit_bound():
    """``estimate --explain`` prints one line naming them with their unbounded values; ``--json`` carries them
    under calibration.at_fit_bound (empty for a GPU with none)."""
    from typer.testing import CliRunner

    from planner.cli.main import app

    runner = CliRunner()
    text = runner.invoke(app, ["estimate", "--gpu", "H200", "--explain"])
    assert text.exit_code == 0, text.output
    words = " ".join(text.output.split())  # the console wraps long lines
    assert ("\nfit bounds:" in text.output and "fit bounds: H200-141GB attention_prefill_compute_efficiency at upper "
            "bound 1 (unbounded 1.33), quant_memory_efficiency at lower bound 0.1 (unbounded 0.0831) " in words)
    assert "fit bounds:" not in runner.invoke(app, ["estimate", "--gpu", "H200"]).output
    data = json.loads(runner.invoke(app, ["estimate", "--gpu", "H200", "--json"]).output)
    assert data["calibration"]["at_fit_bound"]["quant_memory_efficiency"] == {
        "value": 0.1, "side": "lower", "bound": 0.1, "unbounded_value": 0.0831}
    other = json.loads(runner.invoke(app, ["estimate", "--gpu", "L40S", "--json"]).output)
    assert other["calibration"]["at_fit_bound"] == {}
