"""planner/calibrate: the device scripts the shipped measurements name are in the tree byte for byte, and the
fitting code that runs here never imports them (they need torch and a GPU)."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEVICE = ROOT / "planner" / "calibrate" / "device"
FIT = ROOT / "planner" / "calibrate" / "fit"
RUNS = ROOT / "catalogs" / "calibration" / "measurements"

IN_TREE = [
    ("microbench.py", "h100-sxm-80gb/run2_microbench.json"),
    ("shape_effects.py", "h200-141gb/run4_shape_effects.json"),
    ("tp_validation.py", "h100-sxm-80gb/run5_tp2_validation.json"),
    ("vit_kernels.py", "h100-sxm-80gb/run9_vit_kernels.json"),
    ("llm_kernels.py", "h100-sxm-80gb/run11_llm_kernels.json"),
    ("quant_ops.py", "h100-sxm-80gb/run12_quant_ops.json"),
    ("vit_shapes.py", "h100-sxm-80gb/run13_vit_shapes_transposed.json"),
]
"""(script, a run it made): the measurements README says these ran in the version the tree holds."""


@pytest.mark.parametrize(("script", "run"), IN_TREE)
def test_device_script_is_the_file_that_made_the_run(script: str, run: str) -> None:
    # Editing one of these scripts breaks the provenance of its runs: give it a new version, and update the
    # measurements README (script versions table) and this list.
    prov = json.loads((RUNS / run).read_text())["provenance"]
    assert prov["script"] == script
    assert hashlib.sha256((DEVICE / script).read_bytes()).hexdigest() == prov["script_sha256"]


def test_fitting_code_does_not_import_the_device_scripts() -> None:
    found = []
    for path in FIT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "torch" or "calibrate.device" in n]
    assert not found
