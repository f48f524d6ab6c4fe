"""vlmplan against a real vLLM server: every real run, predicted against measured.

    python tests/benchmarks/bench_real_vllm.py [--seeds 4] [--json OUT.json]

Reads the shipped real-vLLM measurements (catalogs/calibration/measurements/h200-141gb/run20_real_vllm and
run21_api_servers: vLLM 0.26.0 on one H200, Qwen2.5-VL-7B and Qwen2.5-7B, one or two API servers), replays each
run as `vllm bench serve` ran it (planner.calibrate.fit.serving.predict_run) with the shipped H200 calibration, and
prints per run the measured and predicted TTFT p50/p95, TPOT p50/p95 and throughput, then the median |error| of
each metric over the runs used in the fit and over the held-out runs (planner.calibrate.fit.serving.HELD_OUT)
separately, the KV-cache capacity against the server logs, and the saturation throughput of the runs past
saturation. The n-gram speculative runs (run25 at acceptance ~0, run26 greedy at ~1) are printed too, each at its
measured acceptance and draft rate, with their own medians: ``fit`` marks the three that fitted the sync constants
(planner.calibrate.fit.serving.SYNC_FIT_RUNS).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from planner.calibrate.fit.serving import KV_TOKENS, METRICS, load_runs, predict_run, relative_error, run_model  # noqa: E402
from planner.catalog.loader import load_calibration  # noqa: E402

PAST_SATURATION = ("vl1_small_r40", "vl2_page_r5", "vl2_large_r12", "text_r64", "api2vl_page_r8", "api2vl_large_r12",
                   "api2vl_small_r40", "api2text_r64", "api1text_i256_o128_r80", "api1text_i1024_o32_r100",
                   "q32b_r8")
"""Poisson runs offered more than the server could serve: their throughput is the saturation throughput."""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    t0 = time.time()
    cal = load_calibration("H200-141GB")
    runs = [r for r in load_runs(speculative=True) if not r.warmup]
    models = {r.model: run_model(r) for r in runs}
    rows = []
    print(f"{'run':26s} {'set':4s} | {'TTFT p50 meas/pred':>19s} | {'TTFT p95':>15s} | {'TPOT p50':>13s} | "
          f"{'TPOT p95':>13s} | {'req/s':>11s}")
    kv = {}
    for r in runs:
        p = predict_run(r, cal, args.seeds, models[r.model])
        kv["q32" if "Qwen3-32B" in r.model else "text" if "VL" not in r.model else "vl"] = p.kv_tokens
        err = {m: relative_error(getattr(p, m), r.measured[m]) for m in METRICS}
        rows.append({"label": r.label, "held_out": r.held_out, "speculative": r.speculative is not None,
                     "measured": r.measured,
                     "predicted": {m: getattr(p, m) for m in METRICS}, "error": err})
        m = r.measured
        print(f"{r.label:26s} {'held' if r.held_out else 'fit':4s} | {m['ttft_p50']:8.1f}/{p.ttft_p50:8.1f} "
              f"| {m['ttft_p95']:7.0f}/{p.ttft_p95:6.0f} | {m['tpot_p50']:6.2f}/{p.tpot_p50:5.2f} "
              f"| {m['tpot_p95']:6.2f}/{p.tpot_p95:5.2f} | {m['throughput']:5.2f}/{p.throughput:5.2f}")
    print()
    summary: dict[str, dict[str, float]] = {}
    for name, held in (("fitted", False), ("held-out", True)):
        sel = [row for row in rows if row["held_out"] == held and row["label"] not in PAST_SATURATION
               and not row["speculative"]]
        summary[name] = {m: statistics.median(abs(row["error"][m]) for row in sel
                                              if row["error"][m] == row["error"][m]) for m in METRICS}
        print(f"median |error| over {len(sel)} {name} runs below saturation: "
              + ", ".join(f"{m} {100 * v:.1f}%" for m, v in summary[name].items()))
    for name, held in (("n-gram fitted", False), ("n-gram held-out", True)):
        sel = [row for row in rows if row["held_out"] == held and row["speculative"]]
        summary[name] = {m: statistics.median(abs(row["error"][m]) for row in sel) for m in METRICS}
        print(f"median |error| over {len(sel)} {name} runs: "
              + ", ".join(f"{m} {100 * v:.1f}%" for m, v in summary[name].items()))
    sat = [row for row in rows if row["label"] in PAST_SATURATION]
    for row in sat:
        print(f"saturation {row['label']:16s} ({'held' if row['held_out'] else 'fit'}): measured "
              f"{row['measured']['throughput']:.2f} req/s, predicted {row['predicted']['throughput']:.2f} "
              f"({100 * row['error']['throughput']:+.1f}%)")
    for kind, tokens in KV_TOKENS.items():
        print(f"KV capacity {kind}: server {tokens:,} tokens, vlmplan {kv[kind]:,} "
              f"({100 * relative_error(kv[kind], tokens):+.2f}%)")
    print(f"[{time.time() - t0:.0f} s, {args.seeds} simulator seeds per run]")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
