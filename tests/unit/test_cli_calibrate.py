"""`vlmplan calibrate fit --bench` / `calibrate run` through their own typer app (planner.cli.calibrate.register)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from planner.calibrate import fit as F
from planner.catalog.loader import (
    load_calibration,
    load_calibration_file,
    load_engine,
    load_gpus,
    load_models,
    load_precisions,
)
from planner.cli.calibrate import register
from planner.perf.roofline import Roofline
from planner.perf.steps import decode_step, prefill_step
from planner.spec.config import ServingConfig, resolve

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "vllm-bench"
C16 = FIX / "llama8b-h100-c16.json"
RATE2 = FIX / "llama8b-h100-rate2.json"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command()
    def _noop() -> None:  # a second command keeps 'calibrate' a sub-command group
        pass

    return app


def test_read_vllm_bench_fields() -> None:
    capped = F.read_vllm_bench(C16)
    # 163840 input / 40960 output tokens over 160 completed requests.
    assert capped.mean_prompt_tokens == 1024 and capped.mean_output_tokens == 256
    # request_rate "inf" with max_concurrency 16: 16 requests run at once.
    assert capped.concurrency == 16
    assert capped.mean_tpot_ms == 10.45 and capped.model_id == LLAMA
    paced = F.read_vllm_bench(RATE2)
    # Little's law: 1.963 req/s x (44.8 ms TTFT + 8.62 ms x 255 later tokens) = 1.963 x 2.2429 s.
    assert paced.concurrency == pytest.approx(1.963 * (44.8 + 8.62 * 255) / 1000, rel=1e-9)


def test_read_vllm_bench_rejects_other_json(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"completed": 3}))
    with pytest.raises(Exception, match="lacks total_input_tokens"):
        F.read_vllm_bench(bad)


def test_calibrate_fit_solves_for_the_overhead(tmp_path: Path) -> None:
    out = tmp_path / "cal.yaml"
    res = CliRunner().invoke(_app(), ["calibrate", "fit", "--bench", str(C16), "--bench", str(RATE2), "--model", LLAMA,
                                      "--gpu", "H100", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    # Expected: each run's TPOT minus the GPU time of its step (decode of B sequences at prompt + output/2 context,
    # plus B/output prefills of the prompt per step) = step overhead + per-sequence overhead x B. Batches 16 and 4
    # (Little's law) differ by more than x2, so both terms are fitted: two runs, two unknowns, solved exactly.
    gpu = load_gpus().get("H100")
    cal = load_calibration(gpu.name)
    cfg = resolve(ServingConfig(model=load_models().get(LLAMA), gpu=gpu), load_engine())
    rf, prec = Roofline(gpu, cal), load_precisions()
    resid, batches = [], []
    for tpot, b in ((10.45, 16), (8.62, round(1.963 * (44.8 + 8.62 * 255) / 1000))):
        step = decode_step(rf, cfg, prec, b, 1024 + 128).time_ms + b / 256 * prefill_step(rf, cfg, prec, 1024).time_ms
        resid.append(tpot - step)
        batches.append(b)
    per_seq = (resid[0] - resid[1]) / (batches[0] - batches[1])
    terms = {t["name"]: t["value"] for t in got["terms"]}
    assert terms["engine_per_seq_overhead_ms"] == pytest.approx(per_seq, rel=1e-6)
    assert got["engine_step_overhead_ms"] == pytest.approx(resid[0] - per_seq * batches[0], rel=1e-6)
    assert got["engine_step_overhead_ms"] > 0 and got["mape_pct"] == pytest.approx(0, abs=1e-6)
    written = load_calibration_file(out)
    c = written.constants["engine_step_overhead_ms"]
    assert c.value == pytest.approx(got["engine_step_overhead_ms"], abs=1e-4)
    assert c.fit is not None and c.fit.n_points == 2 and str(C16) in c.fit.dataset
    # Everything else is the GPU's calibration unchanged.
    assert written.value("gemm_compute_efficiency") == cal.value("gemm_compute_efficiency")
    assert written.calibrated


def test_calibrate_fit_one_run_keeps_the_per_sequence_term() -> None:
    # One run: one batch size, so only the step overhead is fitted (the residual after the catalog's per-sequence
    # term), as before the refit could separate them.
    res = CliRunner().invoke(_app(), ["calibrate", "fit", "--bench", str(C16), "--model", LLAMA, "--gpu", "H100",
                                      "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    gpu = load_gpus().get("H100")
    cal = load_calibration(gpu.name)
    cfg = resolve(ServingConfig(model=load_models().get(LLAMA), gpu=gpu), load_engine())
    rf, prec = Roofline(gpu, cal), load_precisions()
    step = decode_step(rf, cfg, prec, 16, 1024 + 128).time_ms + 16 / 256 * prefill_step(rf, cfg, prec, 1024).time_ms
    expect = 10.45 - step - cal.value("engine_per_seq_overhead_ms") * 16
    assert got["engine_step_overhead_ms"] == pytest.approx(expect, rel=1e-6)
    kept = next(t for t in got["terms"] if t["name"] == "engine_per_seq_overhead_ms")
    assert not kept["fitted"] and kept["value"] == cal.value("engine_per_seq_overhead_ms")
    assert any("every run ran about 16 sequences" in n for n in got["notes"])


def test_calibrate_fit_bad_file_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "b.json"
    bad.write_text("[1, 2]")
    res = CliRunner().invoke(_app(), ["calibrate", "fit", "--bench", str(bad), "--model", LLAMA])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "expected a JSON object" in res.output


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch installed")
def test_calibrate_run_without_torch_is_one_line_exit_2() -> None:
    res = CliRunner().invoke(_app(), ["calibrate", "run"])
    assert res.exit_code == 2
    assert res.output.strip() == "error: calibrate run needs torch: pip install 'vlmplan[calibrate]'"
