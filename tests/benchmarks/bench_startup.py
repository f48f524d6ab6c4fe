"""End-to-end wall time of `vlmplan solve` (the default problem, a cold process each time), this tree against
another checkout of vlmplan, side by side in one run: the runs alternate, so both see the same machine load.

    python tests/benchmarks/bench_startup.py --baseline /path/to/old/checkout [--runs 5] [--args solve]

Each run is `python -m planner.cli ARGS` with PYTHONPATH set to the tree (a source checkout; no install needed),
from /tmp. Prints the median, min and max seconds of each tree and the ratio of the medians, and the import time
of `planner.cli` alone (`python -X importtime`, the cumulative microseconds of the top-level import).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(tree: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd="/tmp", env=env, capture_output=True,
                         text=True)
    dt = time.perf_counter() - t0
    if out.returncode not in (0, 3):
        raise SystemExit(f"{tree}: exit {out.returncode}: {out.stderr[-500:]}")
    return dt


def _import_ms(tree: Path, module: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd="/tmp", env=env,
                         capture_output=True, text=True, check=True)
    last = [line for line in out.stderr.splitlines() if re.search(rf"\|\s*{re.escape(module)}$", line)]
    return int(last[-1].split("|")[1]) / 1e3 if last else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=Path, required=True, help="another vlmplan checkout (source tree)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--args", default="solve", help="vlmplan arguments (default: solve)")
    a = ap.parse_args()
    args = shlex.split(a.args)
    trees = {"baseline": a.baseline.resolve(), "this tree": ROOT}
    times: dict[str, list[float]] = {k: [] for k in trees}
    for tree in trees.values():  # warm the page cache and write .pyc files; not timed
        _run(tree, args)
    for _ in range(a.runs):
        for name, tree in trees.items():
            times[name].append(_run(tree, args))
    print(f"vlmplan {a.args}: {a.runs} cold processes per tree, alternating")
    for name, tree in trees.items():
        t = times[name]
        imp = _import_ms(tree, "planner.cli.main" if (tree / "planner" / "cli" / "main.py").exists() else "planner.cli")
        print(f"  {name:10s} median {statistics.median(t):.2f} s (min {min(t):.2f}, max {max(t):.2f}); "
              f"import of the CLI module {imp:.0f} ms  [{tree}]")
    ratio = statistics.median(times["this tree"]) / statistics.median(times["baseline"])
    print(f"  ratio this/baseline: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
