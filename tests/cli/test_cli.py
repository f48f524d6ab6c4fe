"""CLI: exit codes, one-line errors, stable JSON keys."""

import json

import pytest
from typer.testing import CliRunner

from planner.cli.main import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["estimate", "--model", "Qwen2.5-VL-7B"], "did you mean"),
        (["estimate", "--gpu", "H100X"], "did you mean H100-SXM-80GB"),
        (["estimate", "--gpu", "A100", "--precision", "fp8"], "fp8 weights are not supported on A100-SXM-80GB"),
        (["estimate", "--image", "12x"], "is not WIDTHxHEIGHT"),
        (["estimate", "--tp", "3"], "does not divide"),
        (["estimate", "--precision", "fp4"], "is not one of"),
        (["estimate", "--model", "/nonexistent/config.json"], "unknown model"),
        (["solve", "--slo", "ttft_p42=3ms"], "is not METRIC_STAT=VALUE"),
        (["solve", "--budget", "4xH100X"], "unknown gpu"),
        (["solve", "--target", "vllm"], "give --out DIR too"),
        (["solve", "--max-load", "1.5"], "give a fraction of the saturation throughput"),
        (["solve", "--max-model-len", "100", "--budget", "1xL4"], "below workload 'default''s longest request"),
        (["solve", "--max-model-len", "long"], "takes 'workload', 'model' or a number of tokens"),
        (["solve", "--budget", "4xA100", "--gpus", "H100"], "holds none of the GPU types allowed"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle):
    r = run(*args)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert needle in lines[0]
    assert "Traceback" not in r.output


def test_estimate_json_has_the_documented_keys():
    r = run("estimate", "--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "H100", "--json", "--max-model-len", "16384")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out["memory"]) >= {"weights_gib", "kv_cache_gib", "kv_bytes_per_token", "kv_capacity_tokens",
                                  "activations_gib", "overhead_gib", "total_gib", "fits"}
    assert set(out["latency"]) >= {"vision_encode_ms", "prefill_ms", "decode_step_ms", "engine_overhead_ms",
                                   "ttft_ms", "tpot_ms", "e2e_ms"}
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        assert set(out["latency"][key]) == {"mean", "p50", "p90", "p95", "p99"}
    assert set(out["throughput"]) == {"requests_per_s", "output_tokens_per_s"}
    assert out["bound"]["decode"] in ("memory", "compute")
    assert out["memory"]["kv_bytes_per_token"] == 57344
    assert out["memory"]["fits"] is True


def test_estimate_is_deterministic():
    a = run("estimate", "--json")
    b = run("estimate", "--json")
    assert a.output == b.output


def test_local_config_json_is_accepted(tmp_path):
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "fixtures" / "hf_configs"
    folder = next(p for p in sorted(src.iterdir()) if (p / "config.json").exists() and "llama-3.1-8b" in p.name.lower())
    r = run("estimate", "--model", str(folder), "--gpu", "L40S", "--json", "--max-model-len", "8192")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["memory"]["kv_bytes_per_token"] == 2 * 32 * 8 * 128 * 2


def test_catalog_listings():
    gpus = json.loads(run("catalog", "gpus", "--json").output)
    assert {"H100-SXM-80GB", "A100-SXM-40GB", "L4-24GB", "MI300X-192GB"} <= {g["name"] for g in gpus}
    models = json.loads(run("catalog", "models", "--json").output)
    assert len([m for m in models if m["kind"] == "vlm"]) >= 25


@pytest.mark.parametrize("command", ["emit", "solve --scenario", "estimate --workload"])
def test_a_broken_yaml_file_is_still_one_line(command, tmp_path):
    """The YAML parser's message spans lines; the CLI folds it into one."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("foo: [\n")
    args = command.split() + [str(bad)] + (["--target", "vllm"] if command == "emit" else [])
    r = run(*args)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "YAML" in lines[0]


@pytest.mark.parametrize("rate", [10.0, 26.0])  # 26 req/s: 88% of the simulated saturation, over the ceiling
def test_estimate_says_the_offered_load_and_flags_it_above_the_solver_ceiling(rate):
    from planner.solver import MAX_LOAD

    args = ["estimate", "--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "H100", "--rate", str(rate)]
    sat = json.loads(run(*args, "--json").output)["load"]["saturation_requests_per_s"]
    text = " ".join(run(*args).output.split())
    assert f"offered load {rate / sat:.0%} of it" in text
    assert ("ceiling" in text) == (rate / sat > MAX_LOAD)


@pytest.mark.parametrize(("choice", "expected"), [("model", 128000), ("6144", 6144)])
def test_solve_max_model_len_plans_the_asked_context(choice, expected):
    """Issue 13, item 5: --max-model-len model plans for the model's own context (Qwen2.5-VL-7B's config.json:
    max_position_embeddings 128,000), a number for that many tokens; the default stays the workload's longest
    request (256 text + one 640x480 image + 256 out, rounded up to 1,024: 2,048)."""
    args = ["solve", "--budget", "1xH100", "--json", "--no-simulate"]
    got = json.loads(run(*args, "--max-model-len", choice).output)["deployments"][0]["max_model_len"]
    assert got == expected
    default = json.loads(run(*args).output)["deployments"][0]["max_model_len"]
    assert default == 2048


def test_the_binding_line_names_a_tail_the_kv_cache_shapes():
    """Issue 13, item 4: Llama-3.1-70B fp8 on one H100 keeps 22,704 KV tokens, 44 requests of 256 + 256 tokens,
    below max_num_seqs 64; the simulator then preempts and TTFT p99 runs far above p95. The binding line says so
    with the plan's own numbers; the default plan (no such bound) has no tail line."""
    d = json.loads(run("solve", "--model", "meta-llama/Llama-3.1-70B-Instruct", "--slo", "ttft_p95=200ms",
                       "--budget", "8xH100", "--json").output)
    dep = d["deployments"][0]
    tail = [b for b in d["binding"] if ": tail: " in b]
    assert len(tail) == 1, d["binding"]
    kv = dep["predicted"]["memory"]["kv_capacity_tokens"]
    assert f"holds {kv:,} tokens, {kv // 512} requests of 512 tokens" in tail[0]
    sim = dep["simulated"]["ttft_ms"]
    assert sim["p99"] > 2 * sim["p95"] and f"p99 {sim['p99']:,.0f} ms" in tail[0]
    default = json.loads(run("solve", "--json").output)
    assert not [b for b in default["binding"] if ": tail: " in b]


def test_uncalibrated_gpus_get_a_safety_margin_on_the_slos():
    """Issue 13, item 3: on an uncalibrated GPU the plan must meet the SLO less the catalog's 20% margin
    (ttft_p95 500 ms -> 400 ms), and the binding line says so; --uncalibrated-margin 0 turns it off."""
    off = json.loads(run("solve", "--json", "--uncalibrated-margin", "0").output)
    on = json.loads(run("solve", "--json").output)
    d_off, d_on = off["deployments"][0], on["deployments"][0]
    assert d_off["calibration"] == "uncalibrated" and d_on["calibration"] == "uncalibrated"
    assert d_off["predicted"]["ttft_ms"]["p95"] > 400  # the cheapest plan without the margin would break it
    assert d_on["predicted"]["ttft_ms"]["p95"] <= 400 and d_on["simulated"]["ttft_ms"]["p95"] <= 400
    assert on["cost_per_hour"] > off["cost_per_hour"]
    assert any("less a 20% margin" in b for b in on["binding"])
    assert not any("margin" in b for b in off["binding"])


def test_a_refused_target_does_not_discard_the_others(tmp_path):
    """Issue 13, item 8: on an AMD plan NIM is refused, vLLM and its Kubernetes manifest are not: both are written,
    INCOMPLETE.txt says what is missing, and the exit is non-zero with one error line naming the refused target.
    Issue 13, item 9: that serve.sh installs the ROCm build, not the CUDA wheel."""
    out = tmp_path / "amd"
    r = run("solve", "--budget", "1xMI300X", "--no-simulate", "--out", str(out),
            "--target", "vllm", "--target", "nim", "--target", "k8s-vllm")
    assert r.exit_code == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: target nim refused") and "wrote vllm, k8s-vllm" in lines[0]
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert "INCOMPLETE.txt" in files and "plan.yaml" in files
    assert any(f.endswith("vllm/serve.sh") for f in files) and any(f.endswith("k8s-vllm/k8s.yaml") for f in files)
    assert not any("/nim/" in f for f in files)
    assert "- nim: " in (out / "INCOMPLETE.txt").read_text()
    serve = next(out.rglob("serve.sh")).read_text()
    assert "vllm-openai-rocm" in serve and "pip install vllm==" not in serve


def test_whatif_and_solve_share_one_embedded_default_workload():
    """Issue 13, item 6: with no workload flags both commands plan the same request (256 text tokens + one
    640x480 image in, 256 out, Poisson 5 requests/s) and say so."""
    solve_note = run("solve", "--no-simulate", "--budget", "1xH100").output
    assert "embedded default (256 text tokens + 640x480 in, 256 out, Poisson 5 requests/s)" in solve_note
    held = " ".join(run("whatif", "--vary", "precision=bf16,fp8").output.split())
    assert "default (256 text tok, 1 x 640x480, 256 out) | Poisson 5 req/s" in held


def test_an_infeasible_budget_names_what_binds_and_the_cheapest_plan_anywhere():
    """Issue 13, item 7: with 4 A100s and $2/h only the hourly limit binds (1 A100 is needed, 4 are allowed): the
    relaxation raises the hourly limit, not the GPU count, and adds the cheapest plan on any catalog GPU, which is
    what an unrestricted solve finds."""
    r = run("solve", "--budget", "4xA100,$2/h", "--no-simulate")
    assert r.exit_code == 3
    relax = next(line for line in r.output.splitlines() if line.startswith("nearest relaxation:"))
    assert "raise the budget to $" in relax and "xA100" not in relax
    free = json.loads(run("solve", "--no-simulate", "--json").output)
    assert "cheapest on any catalog GPU: " in relax and f"(${free['cost_per_hour']:.2f}/h)" in relax


def test_int8_without_a_checkpoint_names_the_missing_checkpoint():
    """Issue 13, item 7: InternVL3-8B has no known int8 checkpoint in the catalog; --precisions int8 is infeasible
    because of that, not because 'no GPU supports the precision'."""
    r = run("solve", "--model", "OpenGVLab/InternVL3-8B", "--precisions", "int8", "--no-simulate")
    assert r.exit_code == 3
    text = " ".join(r.output.split())
    assert "int8: no known pre-quantized checkpoint of OpenGVLab/InternVL3-8B" in text
    assert "no allowed GPU supports" not in text


def test_whatif_solver_points_say_they_are_simulated():
    """Issue 14: whatif's solver mode runs the simulator check that solve runs on each point's chosen deployment;
    its table says so."""
    out = " ".join(run("whatif", "--vary", "precision=bf16,fp8").output.split())
    assert "cheapest deployment per point, analytic load model, chosen deployment simulated" in out
