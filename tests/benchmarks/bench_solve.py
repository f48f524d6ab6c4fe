"""Solver benchmark: wall time and status of `vlmplan solve` on (a) the default single-workload problem over
every catalog GPU x precision and (b) a fleet of five workloads sharing a mixed inventory.

Run: python tests/benchmarks/bench_solve.py   (a few seconds; targets on a 2-core machine: (a) <= 1 s, (b) <= 5 s,
status optimal). Each problem is solved in a fresh interpreter (cold: imports, catalogs and caches included in
"total", the solve() call alone in "solve"), plus the `vlmplan` command end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "examples" / "fleet" / "fleet.yaml"

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from planner.app.solve_request import SolveInput, build_request
from planner.solver import solve
t1 = time.perf_counter()
inp = SolveInput(**json.loads(sys.argv[1]))
req, _ = build_request(inp)
t2 = time.perf_counter()
sol = solve(req)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "request_s": t2 - t1, "solve_s": t3 - t2, "status": sol.status,
                  "cost": sum(c.cost_per_hour for c in sol.chosen), "deployments": len(sol.chosen),
                  "simulated": sum(c.simulated is not None for c in sol.chosen),
                  "evaluated": sum(s.evaluated for s in sol.screening.values()),
                  "configs": sum(s.evaluated + s.skipped for s in sol.screening.values()),
                  "chosen": [f"{c.workload}: {c.replicas} x {c.cfg.tp * c.cfg.pp} {c.cfg.gpu.name} {c.cfg.precision}"
                             for c in sol.chosen]}))
"""

CASES = [
    ("(a) default: Qwen2.5-VL-7B, every GPU x precision, Poisson 5/s, ttft_p95=500ms",
     {"model": "Qwen/Qwen2.5-VL-7B-Instruct"}, ["solve"], 1.0),
    ("(b) fleet: 5 workloads, 5 models, 8xH100,16xL40S,8xA100-80GB,16xL4",
     {"scenario": str(FLEET)}, ["solve", "--scenario", str(FLEET)], 5.0),
]


def _in_process(inp: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(inp)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cli(args: list[str]) -> tuple[float, int]:
    exe = Path(sys.executable).with_name("vlmplan")
    cmd = [str(exe), *args, "--json"] if exe.exists() else [sys.executable, "-m", "planner.cli.main", *args, "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd="/tmp", capture_output=True, text=True)
    return time.perf_counter() - t0, out.returncode


def main() -> None:
    print("== vlmplan solve wall time (cold process each run; simulator check of the chosen deployments on)")
    for label, inp, args, target in CASES:
        r = _in_process(inp)
        cli_s, rc = _cli(args)
        ok = "ok" if r["solve_s"] <= target and r["status"] == "optimal" else "MISSED"
        print(f"{label}\n  status {r['status']}, ${r['cost']:.2f}/h, {r['deployments']} deployment(s) "
              f"({r['simulated']} simulated); configurations modelled {r['evaluated']} of {r['configs']}\n"
              f"  solve() {r['solve_s']:.3f} s (target <= {target:g} s: {ok}); build request {r['request_s']:.3f} s; "
              f"imports {r['import_s']:.3f} s; `vlmplan {' '.join(args[:1])} ...` end to end {cli_s:.3f} s "
              f"(exit {rc})")
        for c in r["chosen"]:
            print(f"    {c}")


if __name__ == "__main__":
    main()
