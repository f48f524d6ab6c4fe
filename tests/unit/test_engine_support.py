"""Plans the engine cannot run (issue 13, item 2): the model x engine table and vLLM's tensor-parallel rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.app.scenario import load_scenario
from planner.catalog.engine_support import load_support_table, model_support, require_supported, tp_problem
from planner.catalog.loader import load_gpus, load_models
from planner.cli.main import app
from planner.core.errors import UnsupportedError
from planner.solver.configs import parallel_choices as _parallel_choices

ROOT = Path(__file__).resolve().parents[2]
LLAMA_VISION = "meta-llama/Llama-3.2-11B-Vision-Instruct"


def _model(name: str):  # type: ignore[no-untyped-def]
    return load_models().get(name)


def test_table_names_the_planned_engine_and_the_emitted_images() -> None:
    table = load_support_table()
    assert table.planned == "vllm-0.33"
    assert {"vllm-0.33", "vllm-0.34", "nim-llm-model-free", "nim-vlm-llama-3.2-vision-1.1.1"} <= set(table.engines)
    for row in table.engines.values():
        assert row.provenance.strip()


def test_every_catalog_model_has_a_verdict_on_the_planned_engine() -> None:
    for m in load_models():
        status, _ = model_support(m)
        assert status in ("supported", "unsupported"), f"{m.name}: {m.hf_architecture} missing from the table"


@pytest.mark.parametrize("engine", ["vllm-0.33", "vllm-0.34", "nim-llm-model-free"])
def test_mllama_is_not_loadable_by_vllm(engine: str) -> None:
    status, reason = model_support(_model(LLAMA_VISION), engine)
    assert status == "unsupported" and "0.10.2" in reason


def test_mllama_has_its_model_specific_nim() -> None:
    assert model_support(_model(LLAMA_VISION), "nim-vlm-llama-3.2-vision-1.1.1")[0] == "supported"
    assert model_support(_model("Qwen/Qwen2.5-VL-7B-Instruct"), "nim-vlm-llama-3.2-vision-1.1.1")[0] == "unsupported"
    with pytest.raises(UnsupportedError, match="0.10.2"):
        require_supported(_model(LLAMA_VISION))


@pytest.mark.parametrize("argv", [
    ["estimate", "--model", LLAMA_VISION, "--gpu", "H100"],
    ["solve", "--model", LLAMA_VISION, "--slo", "ttft_p95=2s"],
    ["whatif", "--model", LLAMA_VISION, "--vary", "rate=1,2"],
    ["whatif", "--model", LLAMA_VISION, "--fixed", "--gpu", "H100"],
])
def test_commands_refuse_mllama_with_one_line(argv: list[str]) -> None:
    r = CliRunner().invoke(app, argv)
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "removed from vLLM after 0.10.2" in lines[0]


# Hand checks against the public configs: (model, tp, vLLM starts?).
TP_CASES = [
    ("Qwen/Qwen2.5-VL-7B-Instruct", 2, True),    # 28 heads, 4 KV heads, MLP 18944
    ("Qwen/Qwen2.5-VL-7B-Instruct", 4, True),
    ("Qwen/Qwen2.5-VL-7B-Instruct", 7, False),   # 28 % 7 == 0, but 7 vs 4 KV heads: neither divides
    ("Qwen/Qwen2.5-VL-7B-Instruct", 8, False),   # 28 % 8 != 0
    ("Qwen/Qwen3-VL-235B-A22B-Instruct", 8, True),  # 64 heads, 4 KV heads: 8 % 4 == 0 (replicated)
    ("meta-llama/Llama-3.1-70B-Instruct", 8, True),  # 64 / 8
    ("OpenGVLab/InternVL3-1B", 2, True),         # 14 heads, 2 KV heads, MLP 4864
    ("OpenGVLab/InternVL3-1B", 4, False),        # 14 % 4 != 0
]


@pytest.mark.parametrize("name,tp,ok", TP_CASES)
def test_tp_rule(name: str, tp: int, ok: bool) -> None:
    assert (tp_problem(_model(name), tp) is None) == ok


def test_tp_rule_checks_the_mlp_width() -> None:
    m = _model("Qwen/Qwen2.5-VL-7B-Instruct")
    odd = m.model_copy(update={"decoder": m.decoder.model_copy(update={"intermediate_size": 18946})})
    assert tp_problem(odd, 2) is None and "intermediate size 18946" in (tp_problem(odd, 4) or "")


def test_estimate_refuses_tp_that_splits_kv_heads_unevenly() -> None:
    r = CliRunner().invoke(app, ["estimate", "--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "H100", "--tp", "7"])
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "4 KV heads" in lines[0], r.output


def test_solver_prunes_tp_vllm_would_refuse() -> None:
    m = _model("Qwen/Qwen2.5-VL-7B-Instruct")
    # 32 heads and 6 KV heads: tp 2 splits both; tp 4 and 8 divide the heads but not the KV heads.
    odd = m.model_copy(update={"decoder": m.decoder.model_copy(update={"num_attention_heads": 32,
                                                                     "num_kv_heads": 6})})
    tps = {tp for tp, _pp in _parallel_choices(odd, load_gpus().get("H100"))}
    assert tps == {1, 2}


def test_examples_plan_supported_models() -> None:
    for path in sorted((ROOT / "examples").glob("*/*.yaml")):
        sc = load_scenario(path) if "scenario" in path.name or "fleet" in path.name else None
        if sc is None:
            continue
        for _name, model, _wl, _slo in sc.fleet():
            assert model_support(_model(model))[0] == "supported", (path, model)
