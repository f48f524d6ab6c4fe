"""Issue 13, "Bad input": every class of bad input gives exit 2 and one `error:` line naming the problem.

Each test is one explicit example of a class the field test found mishandled (a traceback, a multi-line usage
box, a hang or a silent acceptance on the code before the fix). tests/cli/test_fuzz_bad_input.py fuzzes the numbers,
names and workload files with hypothesis (it covers numbers, names, workload files, binary/UTF-16/deep files; not
yet plans, scenarios, price files, config.json files or the emit targets).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.cli.main import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def one_error_line(r, needle: str, code: int = 2) -> str:
    """The result is exit ``code`` with exactly one ``error:`` line on stderr that contains ``needle``."""
    assert r.exit_code == code, (r.exit_code, r.output)
    assert "Traceback" not in r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert needle in lines[0], lines[0]
    assert "internal error" not in lines[0]
    return lines[0]


# --------------------------------------------------------------------------- numbers: NaN, inf, 1e308


@pytest.mark.parametrize(("args", "needle"), [
    (["estimate", "--rate", "nan"], "--rate must be a finite number (got nan)"),
    (["estimate", "--rate", "inf", "--json"], "--rate must be a finite number (got inf)"),
    (["solve", "--rate", "1e308", "--no-simulate"], "--rate 1e+308 is out of range"),
    (["estimate", "--gpu-memory-utilization", "-inf"], "--gpu-memory-utilization must be a finite number"),
    (["solve", "--price", "H100=inf", "--no-simulate"], "price for H100 must be a finite number"),
    (["solve", "--price", "H100=nan", "--no-simulate"], "price for H100 must be a finite number"),
    (["solve", "--budget", "$" + "9" * 40 + "/h", "--no-simulate"], "budget cost cap"),
    (["whatif", "--vary", "rate=inf"], "--vary rate: 'inf' must be a finite number"),
    (["whatif", "--vary", "rate=1..1e308"], "must be a finite number <= 1e+09"),
    (["estimate", "--max-model-len", "99999999999999999999"], "--max-model-len 99999999999999999999 is out of range"),
])
def test_non_finite_and_huge_numbers(args, needle):
    one_error_line(run(*args), needle)


def test_budget_count_out_of_range_is_refused_before_cp_sat():
    one_error_line(run("solve", "--budget", "99999999999999999999xH100", "--no-simulate"),
                   "budget part '99999999999999999999xH100' is out of range (at most 100,000 GPUs")
    one_error_line(run("solve", "--budget", "H100:" + "9" * 4000, "--no-simulate"), "is out of range")


def test_points_and_requests_are_bounded():
    one_error_line(run("whatif", "--vary", "rate=1..2", "--points", "1000000000"),
                   "--points must be between 1 and 100,000 (got 1,000,000,000)")
    one_error_line(run("estimate", "--rate", "1", "--requests", "1000000000000"),
                   "--requests 1000000000000 is out of range")


def test_ten_thousand_character_model_name():
    line = one_error_line(run("estimate", "--model", "m" * 10_000), "--model is 10,000 characters long")
    assert len(line) < 300


# --------------------------------------------------------------------------- files: binary, UTF-16, folders, depth


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "binary": tmp_path / "binary.yaml",
        "utf16": tmp_path / "utf16.yaml",
        "folder": tmp_path / "folder.yaml",
        "deep_yaml": tmp_path / "deep.yaml",
        "deep_block_yaml": tmp_path / "deep_block.yaml",
        "deep_json": tmp_path / "deep.json",
        "bomb": tmp_path / "bomb.yaml",
    }
    files["binary"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    files["utf16"].write_bytes("model: Qwen/Qwen2.5-VL-7B-Instruct\n".encode("utf-16"))
    files["folder"].mkdir()
    files["deep_yaml"].write_text("a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    files["deep_block_yaml"].write_text("".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n")
    files["deep_json"].write_text("[" * 25_000 + "]" * 25_000)
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    files["bomb"].write_text("\n".join(levels) + "\n")
    return files


FILE_FLAGS = [
    (["estimate", "--workload"], "workload file"),
    (["solve", "--no-simulate", "--scenario"], "scenario file"),
    (["emit", "--target", "vllm"], "plan"),
    (["solve", "--no-simulate", "--prices-file"], "prices file"),
    (["estimate", "--calibration"], "calibration file"),
    (["calibrate", "fit", "--bench"], "bench file"),
    (["whatif"], "scenario file"),
    (["compare", str(Path(__file__).resolve().parents[2] / "examples" / "chatbot-rtx4090" / "scenario.yaml")], "file"),
]


@pytest.mark.parametrize(("prefix", "what"), FILE_FLAGS)
@pytest.mark.parametrize(("kind", "needle"), [
    ("binary", "is not UTF-8 text"),
    ("utf16", "is not UTF-8 text"),
    ("folder", "is a folder, not a file"),
])
def test_unreadable_files(bad_files, prefix, what, kind, needle):
    one_error_line(run(*prefix, str(bad_files[kind])), f"{what} ")
    one_error_line(run(*prefix, str(bad_files[kind])), needle)


@pytest.mark.parametrize(("prefix", "what"), FILE_FLAGS[:5])
@pytest.mark.parametrize("kind", ["deep_yaml", "deep_block_yaml", "bomb"])
def test_deep_yaml_and_alias_bombs(bad_files, prefix, what, kind):
    if "prices" in what:  # a prices file is YAML only with a .yaml name (it is)
        pass
    line = one_error_line(run(*prefix, str(bad_files[kind])), what)
    assert any(s in line for s in ("nest", "YAML nodes", "not valid YAML")), line


def test_deep_json(bad_files):
    one_error_line(run("solve", "--no-simulate", "--prices-file", str(bad_files["deep_json"])), "nests deeper than 64")
    one_error_line(run("calibrate", "fit", "--bench", str(bad_files["deep_json"])), "nests deeper than 64")


def test_trace_file_binary(tmp_path, bad_files):
    wl = tmp_path / "wl.yaml"
    wl.write_text(f"arrival: trace\ntrace_file: {bad_files['binary']}\n")
    one_error_line(run("estimate", "--workload", str(wl)), "trace_file")


# --------------------------------------------------------------------------- the CLI library's usage boxes


@pytest.mark.parametrize(("args", "needle"), [
    (["estimate", "--tp", "abc"], "Invalid value for '--tp'"),
    (["estimate", "--bogus"], "No such option: --bogus"),
    (["solve", "--rate"], "Option '--rate' requires an argument"),
    (["emit"], "Missing argument"),
    (["nosuchcommand"], "No such command"),
    (["calibrate", "fit", "--bench", "x.json", "--pp", "1.5"], "Invalid value for '--pp'"),
])
def test_usage_errors_are_one_line(args, needle):
    line = one_error_line(run(*args), needle)
    assert "--help" in line


def test_no_arguments_prints_help_not_an_error():
    r = run()
    assert r.exit_code == 0 and "Usage" in r.stdout and not r.stderr


# --------------------------------------------------------------------------- workload and scenario files


@pytest.mark.parametrize(("text", "needle"), [
    ("", "is empty"),
    ("output_tokens: 0\n", "output_tokens must be >= 1 (got 0)"),
    ("output_tokens: 100000000000\n", "output_tokens"),
    ("trace: [0, .inf]\n", "trace: arrival time inf is not a finite number"),
    ("arrival: poisson\nrate_per_s: .nan\n", "rate_per_s"),
    ("prefix_cache_hit: .nan\n", "prefix_cache_hit"),
    ("prompt_tokens: .inf\n", "prompt_tokens"),
    ("prompt_tokens: {values: [1, 2], weights: [.nan, 1]}\n", "prompt_tokens"),
])
def test_bad_workload_files(tmp_path, text, needle):
    f = tmp_path / "wl.yaml"
    f.write_text(text)
    one_error_line(run("estimate", "--workload", str(f)), needle)


def test_empty_fleet_is_not_the_default_workload(tmp_path):
    f = tmp_path / "sc.yaml"
    f.write_text("model: Qwen/Qwen2.5-VL-7B-Instruct\nworkloads: []\n")
    one_error_line(run("solve", "--scenario", str(f), "--no-simulate"), "'workloads' is empty")
    e = tmp_path / "empty.yaml"
    e.write_text("")
    one_error_line(run("solve", "--scenario", str(e), "--no-simulate"), "a scenario is a mapping")


def test_nan_bench_values_are_not_fitted(tmp_path):
    src = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "vllm-bench").glob("*.json"))[0]
    data = json.loads(src.read_text())
    data["mean_tpot_ms"] = float("nan")
    f = tmp_path / "nan.json"
    f.write_text(json.dumps(data))  # json.dumps writes NaN
    one_error_line(run("calibrate", "fit", "--bench", str(f)), "mean_tpot_ms=nan")
