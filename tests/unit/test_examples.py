"""Every example scenario runs, in fixed and solver mode, and the READMEs hold the tool's current numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from planner.app.scenario import load_scenario
from planner.app.whatif import evaluate_scenario
from planner.catalog.loader import load_gpus
from planner.spec.workload_yaml import load_workload

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCENARIOS = sorted(EXAMPLES.glob("*/scenario.yaml"))


def test_the_seed_examples_are_all_there() -> None:
    names = {p.parent.name for p in SCENARIOS}
    assert {"chatbot-rtx4090", "document-pipeline-4xa100", "research-h100-128k", "workloads"} <= names
    for p in SCENARIOS:
        assert (p.parent / "README.md").exists(), p.parent


# The seed's three configurations, as written in its "Practical Configuration Examples".
SEED_CONFIGS = {
    "chatbot-rtx4090": ("RTX-4090-24GB", 1, "int4", 8 * 1024, 1),
    "document-pipeline-4xa100": ("A100-SXM-80GB", 4, "int8", 32 * 1024, 16),
    "research-h100-128k": ("H100-SXM-80GB", 1, "bf16", 128 * 1024, 4),
}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.parent.name)
def test_example_runs_fixed(path: Path) -> None:
    sc = load_scenario(path)
    row = evaluate_scenario(sc, fixed=True)
    assert row["status"] not in ("unsupported", "does not fit"), row["binding"]
    assert row["weights_gib"] > 0 and row["ttft_p50_ms"] > 0
    want = SEED_CONFIGS.get(path.parent.name)
    if want:
        gpu, n, precision, ctx, seqs = want
        assert (row["gpu"], row["gpus"], row["precision"], row["max_model_len"], row["max_num_seqs"]) == \
            (load_gpus().get(gpu).name, n, precision, ctx, seqs)


def test_example_runs_in_solver_mode() -> None:
    # The other examples run the solver in their README's "solver" block (test_readme_numbers_... below).
    path = EXAMPLES / "workloads" / "scenario.yaml"
    sc = load_scenario(path)
    row = evaluate_scenario(sc.model_copy(update={"budget": None}), fixed=False)
    assert row["mode"] == "solve" and row["feasible"], row["binding"]
    allowed = {load_gpus().get(g).name for g in sc.search.gpus or []}
    assert not allowed or row["gpu"] in allowed


def test_seed_workload_files() -> None:
    sizes = {"document-vqa": (1680, 2240), "visual-reasoning": (640, 480), "captioning": (480, 360)}
    for name, (w, h) in sizes.items():
        wl = load_workload(EXAMPLES / "workloads" / f"{name}.yaml")
        assert [(i.width, i.height) for i in wl.images] == [(w, h)]
        assert wl.output_tokens == 128 and wl.arrival == "poisson"


def _make_readmes():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("make_readmes", EXAMPLES / "make_readmes.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_readmes"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_readme_numbers_are_the_tools_current_output() -> None:
    """The generated blocks equal what `vlmplan whatif` prints now (fix: python examples/make_readmes.py)."""
    mod = _make_readmes()
    stale = {ex.folder: mod.update(ex, check=True) for ex in mod.EXAMPLES}
    assert not any(stale.values()), f"stale README blocks {stale}: run python examples/make_readmes.py"
