"""Fuzz the command line and the input files (issue 13, "Bad input"): whatever a user types, the answer is a
result (exit 0), one `error:` line with exit 2, or an explanation with exit 3; never a traceback or a
multi-line error.

hypothesis draws values for the numeric and name options of `estimate` and `solve` (NaN, infinities, huge and
negative numbers, garbage text, long names) and the contents of workload files (wrong types, NaN, huge numbers,
deep nesting, binary bytes).
"""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from planner.cli.main import app

runner = CliRunner()
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)

weird_numbers = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e308", "-1", "0", "-0", "1e-300", "99999999999999999999",
                     "abc", "", " ", "1,5", "0x10", "١٢", "3.5e", "--", "None"]),
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
names = st.one_of(st.text(min_size=0, max_size=40), st.sampled_from(["x" * 10_000, "../../etc/passwd", "H100\x00",
                                                                     "Qwen/Qwen2.5-VL-7B-Instruct "]))


def _contract(r) -> None:
    out = r.output + (r.stderr if r.stderr_bytes is not None else "")
    assert "Traceback" not in out, out[-2000:]
    assert r.exit_code in (0, 2, 3), (r.exit_code, out[-2000:], repr(r.exception))
    if r.exit_code == 2:
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]


ESTIMATE_NUMERIC = ["--rate", "--concurrency", "--prompt-tokens", "--output-tokens", "--tp", "--max-model-len",
                    "--limit-images", "--context"]


@FUZZ
@given(st.sampled_from(ESTIMATE_NUMERIC), weird_numbers)
def test_estimate_numbers(flag, value):
    _contract(runner.invoke(app, ["estimate", "--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "H100",
                                  flag, value]))


@FUZZ
@given(st.sampled_from(["--model", "--gpu", "--image", "--precision"]), names)
def test_estimate_names(flag, value):
    args = ["estimate", "--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "H100"]
    _contract(runner.invoke(app, [*args, flag, value]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.sampled_from(["--rate", "--budget", "--slo"]), st.one_of(weird_numbers, names))
def test_solve_options(flag, value):
    # A budget or SLO that parses (e.g. "1") makes a real search: a tiny model keeps it fast.
    _contract(runner.invoke(app, ["solve", "--model", "Qwen/Qwen2.5-VL-3B-Instruct", "--budget", "1xL4",
                                  flag, value]))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)
WORKLOAD_KEYS = ["name", "prompt_tokens", "output_tokens", "images", "rate_per_s", "concurrency", "arrival",
                 "prefix_cache_hit", "trace_s"]


@FUZZ
@given(st.dictionaries(st.sampled_from(WORKLOAD_KEYS), json_values, max_size=5))
def test_workload_files(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("wl") / "w.json"
    text = json.dumps(doc, allow_nan=True)
    path.write_text(text)
    r = runner.invoke(app, ["estimate", "--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "H100",
                            "--workload", str(path)])
    _contract(r)


@FUZZ
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=3))
def test_binary_and_deep_files(tmp_path_factory, blob, shape):
    path = tmp_path_factory.mktemp("bin") / "w.yaml"
    if shape == 0:
        path.write_bytes(blob)
    elif shape == 1:
        path.write_text("a: " + "[" * 30_000 + "]" * 30_000)
    elif shape == 2:
        path.write_bytes("prompt_tokens: 5\n".encode("utf-16"))
    else:
        path.write_text(f"prompt_tokens: {math.inf}\noutput_tokens: 100000000000\n")
    _contract(runner.invoke(app, ["estimate", "--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "H100",
                                  "--workload", str(path)]))
