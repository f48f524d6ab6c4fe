"""verify.sh (planner.emit.verify), `vlmplan calibrate check` (planner.calibrate.bench_check) and the bench refit
(planner.calibrate.fit.bench_refit).

verify.sh runs for real: every example plan is solved, each of its verify.sh is run by bash with a stand-in for
`vllm` first on PATH (tests/fixtures/stub-vllm/vllm: vLLM 0.33's bench flags and types, a real HTTP client, the
result JSON's shape) against a small OpenAI-compatible HTTP server here, and `vlmplan` as this source tree.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from emit_support import deployment
from typer.testing import CliRunner

from planner.calibrate.bench_check import check_bench, load_deployment
from planner.calibrate.fit.bench_refit import read_bench_info, refit
from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_models
from planner.cli.main import app
from planner.emit.verify import bench_args, prompts_for, render_verify_sh
from planner.plan import Plan, Traffic, WeightedImage
from planner.spec.config import ServingConfig, resolve

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "tests" / "fixtures" / "stub-vllm" / "vllm"
RUN20 = ROOT / "catalogs" / "calibration" / "measurements" / "h200-141gb" / "run20_real_vllm"
EXAMPLES = {"chatbot-rtx4090": "scenario.yaml", "document-pipeline-4xa100": "scenario.yaml",
            "research-h100-128k": "scenario.yaml", "workloads": "scenario.yaml", "fleet": "fleet.yaml"}


# --- a stub OpenAI-compatible server -------------------------------------------------------------------------------

class _Stub(BaseHTTPRequestHandler):
    ttft_s = 0.002
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.seen.append({"path": self.path, **body})
        time.sleep(self.ttft_s)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i in range(3):
            self.wfile.write(f"data: {json.dumps({'choices': [{'index': 0, 'text': str(i)}]})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def server() -> Any:
    _Stub.seen = []
    _Stub.ttft_s = 0.002
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


@pytest.fixture()
def path_dir(tmp_path: Path) -> Path:
    """`vllm` (the stub) and `vlmplan` (this tree) as the first things on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, target in (("vllm", f'"{sys.executable}" "{STUB}"'), ("vlmplan", f'"{sys.executable}" -m planner.cli')):
        p = bin_dir / name
        p.write_text(f"#!/usr/bin/env bash\nexec {target} \"$@\"\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _run_verify(script: Path, bin_dir: Path, port: int, result: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT), "PORT": str(port),
            "NUM_PROMPTS": "12", "RESULT": str(result), **env}
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=full, timeout=120,
                          cwd=script.parent)


@pytest.fixture(scope="module")
def example_plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name, file in EXAMPLES.items():
        folder = tmp_path_factory.mktemp(name) / "plan"
        res = CliRunner().invoke(app, ["solve", "--scenario", str(ROOT / "examples" / name / file), "--out",
                                       str(folder)])
        assert res.exit_code == 0, res.output
        out[name] = folder
    return out


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_verify_sh_of_every_example_runs_and_passes(example: str, example_plans: dict[str, Path], server: Any,
                                                    path_dir: Path, tmp_path: Path) -> None:
    folder = example_plans[example]
    plan = Plan.load(folder / "plan.yaml")
    scripts = sorted(folder.glob("*/verify/verify.sh"))
    assert len(scripts) == len(plan.deployments) >= 1
    for script, dep in zip(scripts, plan.deployments):  # folder_names keeps the plan's order, sorted here alike
        dep = load_deployment(script.parent / "deployment.json")
        assert script.stat().st_mode & stat.S_IXUSR
        _Stub.seen = []
        result = tmp_path / f"{dep.workload}.json"
        proc = _run_verify(script, path_dir, server.server_port, result)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "PASS: every planned SLO holds" in proc.stdout
        # What reached the server is the planned request: the API name, the output length, the images.
        assert len(_Stub.seen) == 12
        t = dep.traffic
        assert t is not None
        assert {r["model"] for r in _Stub.seen} == {dep.model}
        assert {r["max_tokens"] for r in _Stub.seen} == {t.output_tokens}
        if t.image_sizes:
            assert all(r["path"] == "/v1/chat/completions" for r in _Stub.seen)
            images = [c for r in _Stub.seen for c in r["messages"][0]["content"] if c["type"] == "image_url"]
            assert len(images) == 12 * round(t.images_per_request)
        else:
            assert all(r["path"] == "/v1/completions" for r in _Stub.seen)
        saved = json.loads(result.read_text())
        assert saved["vlmplan_workload"] == dep.workload and saved["completed"] == 12
        assert "p95_ttft_ms" in saved and "p99_e2el_ms" in saved


def test_verify_sh_fails_when_the_server_misses_the_slo(example_plans: dict[str, Path], server: Any,
                                                       path_dir: Path, tmp_path: Path) -> None:
    script = next((example_plans["workloads"]).glob("*/verify/verify.sh"))  # ttft_p95 <= 2 s
    _Stub.ttft_s = 2.2
    proc = _run_verify(script, path_dir, server.server_port, tmp_path / "r.json", NUM_PROMPTS="4")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL: ttft_p95" in proc.stdout and "> 2000 ms" in proc.stdout


def test_calibrate_fit_on_a_verify_result(example_plans: dict[str, Path], server: Any, path_dir: Path,
                                          tmp_path: Path) -> None:
    script = next((example_plans["chatbot-rtx4090"]).glob("*/verify/verify.sh"))
    result = tmp_path / "r.json"
    assert _run_verify(script, path_dir, server.server_port, result).returncode == 0
    res = CliRunner().invoke(app, ["calibrate", "fit", "--bench", str(result), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    terms = {t["name"]: t for t in got["terms"]}
    assert terms["engine_step_overhead_ms"]["fitted"] and terms["request_latency_ms"]["fitted"]
    # One run: one batch size, one image size, so those terms are kept and the notes say why.
    assert not terms["engine_per_seq_overhead_ms"]["fitted"]
    assert any("cannot be told from the per-step overhead" in n for n in got["notes"])
    assert got["mape_pct"] >= 0 and got["ttft_mape_pct"] is not None
    # The configuration came from the result's metadata (the plan's GPU), not the defaults.
    dep = load_deployment(script.parent / "deployment.json")
    text = CliRunner().invoke(app, ["calibrate", "fit", "--bench", str(result)]).output
    assert "fit error over 1 run(s)" in text and dep.gpu == json.loads(result.read_text())["vlmplan_gpu"]


# --- the script's content ------------------------------------------------------------------------------------------

def _traffic(**kw: Any) -> Traffic:
    base: dict[str, Any] = {"arrival": "poisson", "rate_per_s": 6.0, "prompt_tokens": 256,
                            "prompt_tokens_range": (256, 256), "output_tokens": 128, "output_tokens_range": (128, 128),
                            "images_per_request": 1.0, "images_per_request_range": (1, 1),
                            "image_sizes": [WeightedImage(width=1680, height=2240, weight=1.0)]}
    base.update(kw)
    return Traffic(**base)


def test_dataset_matches_the_workload() -> None:
    dep = deployment(slos=["ttft_p95<=500ms"], replicas=3, traffic=_traffic())
    args, notes = bench_args(dep, dep.traffic)  # type: ignore[arg-type]
    a = dict(zip(args, args[1:]))
    assert a["--dataset-name"] == "random-mm" and a["--random-input-len"] == "256"
    # vLLM reads a bucket as (height, width, frames): a 1680-wide, 2240-high page is (2240, 1680, 1).
    assert a["--random-mm-bucket-config"] == "{(2240, 1680, 1): 1}"
    assert not notes
    script = render_verify_sh(dep)
    assert 'RATE="${RATE:-2}"' in script  # 6 requests/s over 3 replicas
    assert 'NUM_PROMPTS="${NUM_PROMPTS:-2000}"' in script and "--ignore-eos" in script
    text = render_verify_sh(deployment(slos=["tpot_p99<=50ms"], replicas=2, limit_mm_per_prompt={},
                                       traffic=_traffic(arrival="closed", rate_per_s=None, concurrency=5,
                                                        images_per_request=0.0, images_per_request_range=(0, 0),
                                                        image_sizes=[], prompt_tokens_range=(100, 412)))).split()
    assert "random" in text and "random-mm" not in text and "/v1/completions" in text
    assert 'CONCURRENCY="${CONCURRENCY:-3}"' in " ".join(text)  # ceil(5 / 2), the solver's split
    assert 'NUM_PROMPTS="${NUM_PROMPTS:-10000}"' in " ".join(text)  # p99: 100 requests above it
    assert "approximation:" in " ".join(text)


def test_prompts_for_a_stable_percentile() -> None:
    assert prompts_for(deployment(slos=["ttft_p95<=1ms"])) == 2000
    assert prompts_for(deployment(slos=["ttft_p99<=1ms", "e2e_p50<=1ms"])) == 10000
    assert prompts_for(deployment(slos=["ttft_mean<=1ms"])) == 1000


def test_plans_without_workload_write_no_verify_sh(tmp_path: Path) -> None:
    from planner.emit import emit_verify

    assert emit_verify(Plan(status="optimal", cost_per_hour=1.0, deployments=[deployment()]), tmp_path) == []


# --- the check, on a real result ------------------------------------------------------------------------------------

def _real_summary(tmp_path: Path, label: str = "vl1_small_r5", **extra: Any) -> Path:
    doc = json.loads((RUN20 / "vl1.json").read_text())
    summary = next(r["summary"] for r in doc["runs"] if r["label"] == label)
    path = tmp_path / f"{label}.json"
    path.write_text(json.dumps({**summary, **extra}))
    return path


@pytest.mark.parametrize("limit, passed", [(200.0, True), (150.0, False)])
def test_check_reads_a_real_result(tmp_path: Path, limit: float, passed: bool) -> None:
    # vl1_small_r5: a real vLLM 0.26 run on an H200, Poisson 5 req/s, TTFT p95 172.95 ms.
    path = _real_summary(tmp_path)
    dep = deployment(slos=[f"ttft_p95<={limit:g}ms"], replicas=1, traffic=_traffic(rate_per_s=5.0))
    c = check_bench(path, dep)
    row = next(r for r in c.rows if r.key == "ttft_p95")
    assert row.measured_ms == pytest.approx(172.953331, rel=1e-6) and row.planned_ms == 180.0
    assert c.passed is passed and c.failed == 0 and c.completed == 80
    assert not any("another load" in n for n in c.notes)  # 5 req/s as planned
    assert any("fewer than the 2,000" in n for n in c.notes)
    plan_file = tmp_path / "deployment.json"
    plan_file.write_text(dep.model_dump_json())
    res = CliRunner().invoke(app, ["calibrate", "check", "--bench", str(path), "--plan", str(plan_file)])
    assert res.exit_code == (0 if passed else 1), res.output
    assert ("PASS" if passed else "FAIL: ttft_p95 173.0 ms > 150 ms") in res.output


def test_check_failed_requests_and_missing_percentiles(tmp_path: Path) -> None:
    dep = deployment(slos=["ttft_p95<=1000ms"], replicas=1, traffic=_traffic(rate_per_s=2.0))
    c = check_bench(_real_summary(tmp_path, failed=3), dep)
    assert not c.passed and "3 of 83 requests failed" in c.problems[0]
    assert any("another load" in n for n in c.notes)  # the run sent 5 req/s, the plan 2
    bare = {k: v for k, v in json.loads(_real_summary(tmp_path).read_text()).items() if not k.startswith("p95_")}
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    plan_file = tmp_path / "deployment.json"
    plan_file.write_text(dep.model_dump_json())
    res = CliRunner().invoke(app, ["calibrate", "check", "--bench", str(tmp_path / "bare.json"), "--plan",
                                   str(plan_file)])
    assert res.exit_code == 2 and "lacks p95_ttft_ms" in res.output and res.output.strip().count("\n") == 0


# --- the refit on real runs ------------------------------------------------------------------------------------------

def _run20(tmp_path: Path, labels: list[str]) -> list[Path]:
    out = []
    for plan in ("vl1", "vl2"):
        for r in json.loads((RUN20 / f"{plan}.json").read_text())["runs"]:
            if r["label"] not in labels:
                continue
            meta = {"vlmplan_text_tokens": str(r["dataset"]["input_tokens"])}
            if r["dataset"]["image"]:
                h, w, _ = (int(x) for x in r["dataset"]["image"].strip("()").split(","))  # vLLM's (H, W, T)
                meta |= {"vlmplan_images": f"{w}x{h}:1", "vlmplan_images_per_request": "1"}
            p = tmp_path / f"{r['label']}.json"
            p.write_text(json.dumps({**r["summary"], **meta}))
            out.append(p)
    return out


def _h200_vl() -> Any:
    cfg = resolve(ServingConfig(model=load_models().get("Qwen/Qwen2.5-VL-7B-Instruct"),
                                gpu=load_gpus().get("H200-141GB"), max_model_len=16384, max_num_batched_tokens=8192,
                                max_num_seqs=1024, limit_images_per_prompt=1), load_engine())
    return cfg, load_calibration("H200-141GB")


def test_refit_separates_every_term_on_real_runs(tmp_path: Path) -> None:
    labels = ["vl1_small_c1", "vl1_small_c4", "vl1_small_c16", "vl1_small_r5", "vl2_page_c1", "vl2_page_r1",
              "vl2_page_c4", "vl2_large_c1", "vl2_large_r5", "vl2_vltext_r10", "vl2_vltext_c16"]
    cfg, cal = _h200_vl()
    fit = refit(cfg, cal, [read_bench_info(p) for p in _run20(tmp_path, labels)])
    assert all(t.fitted for t in fit.terms), [t for t in fit.terms if not t.fitted]
    # Three image sizes and text-only prompts: the per-request cost lands near the H200's simulator-based fit
    # (21.5 ms, catalogs/calibration) and the errors stay small.
    assert 5 < fit.value("request_latency_ms") < 40
    assert fit.ttft_mape_pct is not None and fit.ttft_mape_pct < 15 and fit.tpot_mape_pct < 15


def test_refit_keeps_what_the_runs_cannot_separate(tmp_path: Path) -> None:
    cfg, cal = _h200_vl()
    fit = refit(cfg, cal, [read_bench_info(p) for p in _run20(tmp_path, ["vl1_small_c4", "vl1_small_c16"])])
    kept = {t.name for t in fit.terms if not t.fitted}
    # Batches 4 and 16 separate the engine terms; one image size cannot separate the image costs.
    assert kept == {"frontend_ms_per_image", "frontend_ms_per_input_megapixel", "frontend_ms_per_processed_megapixel"}
    assert any("do not vary enough" in n for n in fit.notes)
    assert fit.value("frontend_ms_per_image") == cal.value("frontend_ms_per_image")
