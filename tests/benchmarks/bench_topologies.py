"""Aggregated vs prefill/decode-disaggregated plans on five problems (issue 15's four-problem table, plus a
document-page VLM): `vlmplan solve --topologies aggregated,pd` per problem, the best plan of each topology, which
one solve picks, and the search time.

Run: python tests/benchmarks/bench_topologies.py [--only NAME] [--save DIR]   (minutes on a 2-core machine: each
pd search takes up to a minute or more). `solve --topologies aggregated,pd` searches pd plans only while they could
be cheaper than the aggregated optimum; where none is, the best pd plan at any price comes from a second run with
`--topologies pd` (timed separately). A third run, plain `solve` (aggregated only), is shown for reference:
with pd among the topologies solve plans without speculative decoding (planner/app/speculation.py), so its
aggregated plan can cost more than plain solve's, which may use the model's trained draft. Each run is a fresh
`vlmplan solve ... --json` process; times are wall clock of that process (imports included). --save DIR writes
each run's JSON there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# name, what a user would ask for (in words), solve flags. Workloads: Poisson arrivals at a rate that needs
# several GPUs; a TTFT p95 and a TPOT p95 an interactive service would set.
PROBLEMS: list[tuple[str, str, list[str]]] = [
    ("qwen3-32b", "Qwen3-32B, 3000 in / 384 out, 16 req/s, TTFT p95 1 s, TPOT p95 30 ms, up to 8 x H100",
     ["--model", "Qwen/Qwen3-32B", "--no-image", "--prompt-tokens", "3000", "--output-tokens", "384",
      "--rate", "16", "--slo", "ttft_p95=1s", "--slo", "tpot_p95=30ms", "--budget", "8xH100"]),
    ("llama-70b-fp8", "Llama-3.1-70B fp8, 3000 in / 512 out, 8 req/s, TTFT p95 1.5 s, TPOT p95 40 ms, up to 8 x H200",
     ["--model", "meta-llama/Llama-3.1-70B-Instruct", "--precisions", "fp8", "--no-image", "--prompt-tokens",
      "3000", "--output-tokens", "512", "--rate", "8", "--slo", "ttft_p95=1.5s", "--slo", "tpot_p95=40ms",
      "--budget", "8xH200"]),
    ("qwen3-8b", "Qwen3-8B, 2000 in / 256 out, 60 req/s, TTFT p95 1 s, TPOT p95 20 ms, up to 4 x H100",
     ["--model", "Qwen/Qwen3-8B", "--no-image", "--prompt-tokens", "2000", "--output-tokens", "256",
      "--rate", "60", "--slo", "ttft_p95=1s", "--slo", "tpot_p95=20ms", "--budget", "4xH100"]),
    ("qwen3-vl-8b", "Qwen3-VL-8B, one 1280x960 image + 512 text / 256 out, 25 req/s, TTFT p95 1 s, TPOT p95 20 ms, "
     "up to 4 x H100",
     ["--model", "Qwen/Qwen3-VL-8B-Instruct", "--image", "1280x960", "--prompt-tokens", "512", "--output-tokens",
      "256", "--rate", "25", "--slo", "ttft_p95=1s", "--slo", "tpot_p95=20ms", "--budget", "4xH100"]),
    ("qwen2.5-vl-7b-doc", "Qwen2.5-VL-7B, one 1680x2240 document page + 256 text / 512 out, 11 req/s, TTFT p95 2 s, "
     "TPOT p95 25 ms, up to 4 x H100",
     ["--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--image", "1680x2240", "--prompt-tokens", "256", "--output-tokens",
      "512", "--rate", "11", "--slo", "ttft_p95=2s", "--slo", "tpot_p95=25ms", "--budget", "4xH100"]),
]


def _solve(args: list[str]) -> tuple[dict, float, int]:
    cmd = [sys.executable, "-m", "planner.cli.main", "solve", *args, "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout), wall, out.returncode


def _p95(block: dict | None, metric: str) -> str:
    return "-" if not block else f"{block[f'{metric}_ms']['p95']:.1f}"


def _agg_row(plan: dict) -> dict:
    ds = plan.get("deployments") or []
    if not ds:
        return {"deployment": "none meets the SLOs"}
    d = ds[0]
    return {"deployment": f"{d['replicas']} x {d['tp']} x {d['gpu']} {d['precision']} (kv {d['kv_cache_dtype']})",
            "gpus": d["replicas"] * d["gpus_per_replica"], "usd_per_h": d["cost_per_hour"],
            "ttft": f"{_p95(d['predicted'], 'ttft')} / {_p95(d.get('simulated'), 'ttft')}",
            "tpot": f"{_p95(d['predicted'], 'tpot')} / {_p95(d.get('simulated'), 'tpot')}"}


def _pd_row(plan: dict) -> dict:
    pd = plan.get("pd")
    if not pd:
        return {"deployment": next((n for n in plan.get("notes", []) if n.startswith(("no pd", "the simulator"))),
                                   "none")}
    pre, dec = pd["prefill"], pd["decode"]
    return {"deployment": f"P {pre['replicas']} x {pre['tp']} x {pre['gpu']} {pre['precision']} + "
                          f"D {dec['replicas']} x {dec['tp']} x {dec['gpu']} {dec['precision']}",
            "gpus": pre["replicas"] * pre["gpus_per_replica"] + dec["replicas"] * dec["gpus_per_replica"],
            "usd_per_h": pd["cost_per_hour"],
            "ttft": f"{_p95(pd['predicted'], 'ttft')} / {_p95(pd.get('simulated'), 'ttft')}",
            "tpot": f"{_p95(pd['predicted'], 'tpot')} / {_p95(pd.get('simulated'), 'tpot')}"}


def run(name: str, args: list[str], save: Path | None) -> dict:
    both, t_both, rc = _solve([*args, "--topologies", "aggregated,pd"])
    out = {"name": name, "pick": both.get("topology") if rc == 0 else "infeasible", "t_both": t_both,
           "agg": _agg_row(both), "pd": _pd_row(both), "t_pd": None}
    if save:
        (save / f"{name}.aggregated,pd.json").write_text(json.dumps(both, indent=1))
    plain, t_plain, _ = _solve(args)  # plain `solve`: aggregated, speculative decoding auto
    out["plain"], out["t_plain"] = _agg_row(plain), t_plain
    if save:
        (save / f"{name}.aggregated.json").write_text(json.dumps(plain, indent=1))
    if not both.get("pd"):  # pd not cheaper: the best pd plan at any price
        only, t_pd, _ = _solve([*args, "--topologies", "pd"])
        out["pd"], out["t_pd"] = _pd_row(only), t_pd
        if save:
            (save / f"{name}.pd.json").write_text(json.dumps(only, indent=1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run the problem of this name only")
    ap.add_argument("--save", type=Path, help="write each run's JSON to this folder")
    a = ap.parse_args()
    if a.save:
        a.save.mkdir(parents=True, exist_ok=True)
    rows = [run(n, args, a.save) for n, _, args in PROBLEMS if a.only in (None, n)]
    for n, words, _ in PROBLEMS:
        if a.only in (None, n):
            print(f"- {n}: {words}")
    print("\n| problem | topology | deployment | GPUs | $/h | TTFT p95 ms pred / sim | TPOT p95 ms pred / sim | "
          "solve picks | search s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for topo, label in (("agg", "aggregated"), ("pd", "pd"), ("plain", "plain `solve` (spec. auto)")):
            x = r[topo]
            if topo == "agg":
                secs = f"{r['t_both']:.1f} (aggregated,pd)"
            elif topo == "pd":
                secs = "same run" if r["t_pd"] is None else f"{r['t_pd']:.1f} (pd alone, any price)"
            else:
                secs = f"{r['t_plain']:.1f}"
            cost = "-" if "usd_per_h" not in x else f"{x['usd_per_h']:.2f}"
            print(f"| {r['name'] if topo == 'agg' else ''} | {label} | "
                  f"{x['deployment']} | {x.get('gpus', '-')} | {cost} | {x.get('ttft', '-')} | {x.get('tpot', '-')} | "
                  f"{r['pick'] if topo == 'agg' else ''} | {secs} |")


if __name__ == "__main__":
    main()
