"""Fuzz the files a user hands vlmplan besides workloads (issue 13, "Bad input"): scenario files, plan files for
`emit`, price files, a local config.json, bench results for `calibrate fit`, and `whatif --vary` values.

Each test starts from a valid file and damages it (a field replaced by NaN, infinity, a huge or negative number,
a wrong type, nesting, garbage text), so the damage reaches the code that reads the field rather than stopping at
the first parse. The contract is the one of tests/cli/test_fuzz_bad_input.py: a result, one `error:` line with
exit 2, or an explanation with exit 3; never a traceback, a hang or a multi-line error.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from planner.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
FUZZ = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

bad_values = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -1, 0, 10**20, -(10**20), "", "abc", None,
                     True, [], {}, [1, 2], {"a": 1}, "x" * 5_000, "nan", "1e999", "--trust-remote-code",
                     "fp8; touch /tmp/pwned"]),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)


def _contract(r: Any) -> None:
    out = r.output + (r.stderr if r.stderr_bytes is not None else "")
    assert "Traceback" not in out, out[-2000:]
    assert r.exit_code in (0, 2, 3), (r.exit_code, out[-2000:], repr(r.exception))
    if r.exit_code == 2:
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested dict/list document (leaves and inner nodes)."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _damaged(doc: Any, index: int, value: Any) -> Any:
    """``doc`` with the field at its ``index``-th key path replaced by ``value``."""
    paths = _paths(doc)
    out = copy.deepcopy(doc)
    path = paths[index % len(paths)]
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


def _write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, allow_nan=True) if path.suffix == ".json" else
                    yaml.safe_dump(doc, allow_unicode=True) if doc is not None else "")
    return path


SCENARIO = yaml.safe_load((ROOT / "examples" / "chatbot-rtx4090" / "scenario.yaml").read_text())


@FUZZ
@given(st.integers(min_value=0, max_value=200), bad_values)
def test_scenario_files(tmp_path: Path, index: int, value: Any) -> None:
    path = _write(tmp_path / "scenario.json", _damaged(SCENARIO, index, value))
    _contract(runner.invoke(app, ["whatif", str(path), "--fixed", "--json"]))


@pytest.fixture(scope="module")
def plan_doc(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("plan")
    r = runner.invoke(app, ["solve", "--model", "Qwen/Qwen2.5-VL-3B-Instruct", "--budget", "2xL4", "--no-simulate",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    return yaml.safe_load((out / "plan.yaml").read_text())


@FUZZ
@given(st.integers(min_value=0, max_value=400), bad_values, st.sampled_from(["vllm", "nim", "k8s-vllm", "k8s-nim"]))
def test_plan_files_for_emit(tmp_path: Path, plan_doc: dict, index: int, value: Any, target: str) -> None:
    path = _write(tmp_path / "plan.yaml", _damaged(plan_doc, index, value))
    _contract(runner.invoke(app, ["emit", str(path), "--target", target, "--out", str(tmp_path / "out")]))


@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from(["H100", "L4", "A100-80GB", "nope"]), st.text(max_size=12)),
                       bad_values, max_size=3))
def test_price_files(tmp_path: Path, prices: dict) -> None:
    path = _write(tmp_path / "prices.json", prices)
    _contract(runner.invoke(app, ["solve", "--model", "Qwen/Qwen2.5-VL-3B-Instruct", "--budget", "1xL4",
                                  "--no-simulate", "--prices-file", str(path)]))


HF_CONFIG = json.loads((ROOT / "tests" / "fixtures" / "hf_configs" / "llava-1.5-7b-hf" / "config.json").read_text())


@FUZZ
@given(st.integers(min_value=0, max_value=200), bad_values)
def test_local_config_json(tmp_path: Path, index: int, value: Any) -> None:
    _write(tmp_path / "config.json", _damaged(HF_CONFIG, index, value))
    _contract(runner.invoke(app, ["estimate", "--model", str(tmp_path), "--gpu", "H100"]))


BENCH = json.loads((ROOT / "tests" / "fixtures" / "vllm-bench" / "llama8b-h100-rate2.json").read_text())


@FUZZ
@example(index=4, value=float("nan"))  # model_id NaN: an AttributeError once
@given(st.integers(min_value=0, max_value=60), bad_values)
def test_bench_files_for_calibrate(tmp_path: Path, index: int, value: Any) -> None:
    doc = {k: v for k, v in BENCH.items() if not isinstance(v, list)}  # per-request arrays: damage the summary
    path = _write(tmp_path / "bench.json", _damaged(doc, index, value))
    _contract(runner.invoke(app, ["calibrate", "fit", "--bench", str(path),
                                  "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100"]))


VARY_DIMS = ["gpu", "precision", "kv", "rate", "concurrency", "image", "context", "tp", "batch", "prompt", "output",
             "slo", "workload", "nonsense"]


@FUZZ
@given(st.sampled_from(VARY_DIMS), st.one_of(st.sampled_from(["inf", "nan", "1..1e9:1000000000", "-5", "0", "",
                                                               "1..2:0", "a,b", "1e308", "640x0", "0x0", "5..1"]),
                                             st.text(max_size=20)))
def test_whatif_vary_values(dim: str, value: str) -> None:
    _contract(runner.invoke(app, ["whatif", "--fixed", "--vary", f"{dim}={value}", "--json"]))
