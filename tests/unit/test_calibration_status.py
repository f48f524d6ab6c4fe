"""Issue 13, item 3: every deployment in every output says how far its GPU's predictions were checked, and
``solve --calibrated-only`` keeps to calibrated GPUs."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from planner.catalog.loader import calibration_status, load_calibration
from planner.cli.main import app

runner = CliRunner()


def _json(*argv: str) -> dict:
    r = runner.invoke(app, [*argv, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_statuses_follow_the_catalog():
    # The H200 is the one GPU checked against a real vLLM server; the H100 has kernel calibration only; the
    # RTX 4090 has no calibration file at all.
    assert calibration_status("H200-141GB")[0] == "real-serving"
    assert "9.1%" in calibration_status("H200-141GB")[1]  # the held-out TTFT p50 error of bench_real_vllm
    assert calibration_status("H100-SXM-80GB")[0] == "kernels" and load_calibration("H100-SXM-80GB").calibrated
    assert calibration_status("RTX-4090-24GB")[0] == "uncalibrated"
    assert not load_calibration("RTX-4090-24GB").calibrated


def test_solve_flags_the_uncalibrated_pick_in_json_and_text():
    plan = _json("solve")
    d = plan["deployments"][0]
    assert d["gpu"] == "RTX-4090-24GB" and d["calibration"] == "uncalibrated" and d["error_band"]
    assert all(a["calibration"] in ("real-serving", "kernels", "uncalibrated") for a in plan["alternatives"])
    text = runner.invoke(app, ["solve"]).output
    assert "calibration: RTX-4090-24GB UNCALIBRATED" in " ".join(text.split())


def test_calibrated_only_picks_a_calibrated_gpu_at_a_higher_price():
    free = _json("solve")["deployments"][0]
    only = _json("solve", "--calibrated-only")["deployments"][0]
    assert only["calibration"] in ("kernels", "real-serving")
    assert only["cost_per_hour"] >= free["cost_per_hour"]
    r = runner.invoke(app, ["solve", "--calibrated-only", "--gpus", "L4"])
    assert r.exit_code == 2 and "--calibrated-only leaves no GPU" in r.output


def test_whatif_and_estimate_carry_the_status():
    rows = _json("whatif", "--vary", "gpu=L4,H200")["rows"]
    assert {r["gpu"]: r["calibration"] for r in rows} == {"L4-24GB": "uncalibrated", "H200-141GB": "real-serving"}
    est = _json("estimate", "--gpu", "H100")
    assert est["calibration"]["validation"] == "kernels" and est["calibration"]["error_band"]
