"""Time 1,000-point what-if sweeps on one fixed configuration (the issue asks for well under 30 s).

Run: ``/tmp/venv/bin/python tests/benchmarks/bench_whatif.py`` (or ``pytest tests/benchmarks/bench_whatif.py -s``).
Prints one line per sweep with its wall time; exits non-zero when a sweep takes 30 s or more.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from planner.app.scenario import load_scenario  # noqa: E402
from planner.app.whatif import parse_varies, sweep  # noqa: E402

LIMIT_S = 30.0
SWEEPS = [
    ("rate 0.05..3 req/s, 1,000 points (analytic)", "examples/chatbot-rtx4090/scenario.yaml", "rate=0.05..3:1000",
     "analytic"),
    ("image 224x224..2240x2240, 1,000 points (analytic)", "examples/chatbot-rtx4090/scenario.yaml",
     "image=224x224..2240x2240:1000", "analytic"),
    ("rate 0.1..4 req/s, 1,000 points, 24B on 4 x A100 (analytic)",
     "examples/document-pipeline-4xa100/scenario.yaml", "rate=0.1..4:1000", "analytic"),
    ("rate 0.05..3 req/s, 1,000 points (simulator, 2,000 requests each)", "examples/chatbot-rtx4090/scenario.yaml",
     "rate=0.05..3:1000", "simulate"),
]


def run() -> list[tuple[str, float, int]]:
    out = []
    for name, scenario, vary, load in SWEEPS:
        sc = load_scenario(ROOT / scenario)
        t0 = time.perf_counter()
        result = sweep(sc, parse_varies([vary]), fixed=True, load=load)
        wall = time.perf_counter() - t0
        assert len(result.rows) == 1000, len(result.rows)
        feasible = sum(1 for r in result.rows if r["feasible"])
        print(f"{name}: {wall:.2f} s ({feasible} feasible)")
        out.append((name, wall, feasible))
    return out


def test_sweeps_under_limit() -> None:
    for name, wall, _ in run():
        assert wall < LIMIT_S, f"{name} took {wall:.1f} s"


if __name__ == "__main__":
    results = run()
    sys.exit(1 if any(wall >= LIMIT_S for _, wall, _ in results) else 0)
