#!/usr/bin/env python3
"""Turn the device's results folder (series.py's `<label>.json` + `<label>.run.json`, server logs,
provenance) into the compact measurement files committed under catalogs/:

  <dest>/<plan>.json   one object: provenance + a list of runs. Per run: the bench summary (every scalar
                       of `vllm bench serve`'s result), per-request arrays (input/output lengths, start
                       time, TTFT, e2e latency, TPOT; ITLs summarised), the server's /metrics histogram
                       sums and counts over the run (after - before), and the CPU seconds each server
                       process spent during the run.
  <dest>/server_<kind>.log.txt   the server log's configuration and memory lines.

Usage: compact.py RESULTS_DIR DEST_DIR
"""
import glob
import json
import os
import re
import sys

MEMORY_LINES = re.compile(
    r"non-default args|Chunked prefill|Asynchronous scheduling|backend|Available KV cache|GPU KV cache size|"
    r"Maximum concurrency|Graph capturing|Actual usage|init engine|Model loading|weights|Initializing a V1")


def histo(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"(vllm:[a-z_]+?)(_sum|_count|_total)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if not m:
            continue
        name, kind, labels, val = m.groups()
        if kind == "_total" or "le=" in (labels or ""):
            continue
        key = name + kind
        out[key] = out.get(key, 0.0) + float(val)
    for line in text.splitlines():  # counters
        m = re.match(r"(vllm:[a-z_]+_total)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def cpu_by_process(before: dict, after: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid, v in after.items():
        b = before.get(pid, {}).get("cpu_s", 0.0)
        # one API server runs as `python3`; with --api-server-count N they are `VLLM::APIServer` processes
        name = "api_server" if v["name"].startswith("python") or v["name"] == "VLLM::APIServer" else v["name"]
        out[name] = round(out.get(name, 0.0) + v["cpu_s"] - b, 2)
    return {k: v for k, v in out.items() if v > 0}


def run_record(res: str, run: dict) -> dict:
    r = json.load(open(os.path.join(res, run["label"] + ".json")))
    ttft = r.get("ttfts", [])
    itls = r.get("itls", [])
    outs = r.get("output_lens", [])
    e2e = [t + sum(i) for t, i in zip(ttft, itls)]
    tpot = [(e - t) / (o - 1) if o > 1 else None for e, t, o in zip(e2e, ttft, outs)]
    flat = sorted(x for i in itls for x in i)
    summary = {k: v for k, v in r.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    for k in ("date", "tokenizer_id", "model_id", "backend", "endpoint_type", "label"):
        summary.pop(k, None)
    b, a = histo(run["metrics_before"]), histo(run["metrics_after"])
    return {
        "label": run["label"], "plan": run["plan"], "seed": run["seed"], "load": run["load"],
        "dataset": {"image": run["dataset"][0], "input_tokens": run["dataset"][1], "output_tokens": run["dataset"][2],
                    "range_ratio": run["dataset"][3],
                    "prefix_tokens": run["dataset"][4] if len(run["dataset"]) > 4 else 0},
        "bench_argv": run["argv"], "status": run["status"], "wall_s": round(run["wall_s"], 2),
        "series_script_sha256": run["series_script_sha256"], "series_script_version": run["series_script_version"],
        "summary": summary,
        "itl_ms": {"count": len(flat), "p50": 1e3 * flat[len(flat) // 2] if flat else None,
                   "p99": 1e3 * flat[int(len(flat) * 0.99)] if flat else None},
        "requests": {
            "input_len": r.get("input_lens", []), "output_len": outs,
            "start_s": [round(s - min(r["start_times"]), 4) for s in r.get("start_times", [])],
            "ttft_ms": [round(1e3 * t, 2) for t in ttft], "e2e_ms": [round(1e3 * e, 2) for e in e2e],
            "tpot_ms": [None if t is None else round(1e3 * t, 3) for t in tpot],
        },
        "server_metrics_delta": {k: round(a[k] - b.get(k, 0.0), 6) for k in sorted(a) if a[k] - b.get(k, 0.0) != 0},
        "server_cpu_s": cpu_by_process(run["cpu_before"], run["cpu_after"]),
        **({"client_cpu_s": round(run["client_cpu_after"] - run["client_cpu_before"], 2)}
           if "client_cpu_after" in run else {}),
    }


def main() -> None:
    res, dest = sys.argv[1], sys.argv[2]
    os.makedirs(dest, exist_ok=True)
    runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(res, "*.run.json")))]
    for plan in sorted({r["plan"] for r in runs}):
        # The server kind from the provenance file serve.sh wrote for the plan (a plan's name need not say it).
        kind = os.path.basename(glob.glob(os.path.join(res, f"provenance_*_{plan}.txt"))[0]).split("_")[1]
        prov = open(os.path.join(res, f"provenance_{kind}_{plan}.txt")).read().splitlines()
        # serve.sh >= series 2.4.0 keeps the command per plan (a later server of the same kind overwrites the other)
        per_plan = os.path.join(res, f"serve_cmd_{kind}_{plan}.txt")
        cmd = open(per_plan if os.path.exists(per_plan) else os.path.join(res, f"serve_cmd_{kind}.txt")).read().strip()
        items = sorted((r for r in runs if r["plan"] == plan), key=lambda r: r["wall_start"])
        doc = {"plan": plan, "serve_command": cmd, "provenance": prov,
               "runs": [run_record(res, r) for r in items]}
        with open(os.path.join(dest, f"{plan}.json"), "w") as fh:
            json.dump(doc, fh, separators=(",", ":"))
    def keep(log: str, name: str) -> None:
        lines = [ln[:600] for ln in open(log, errors="replace") if MEMORY_LINES.search(ln) and "it/s]" not in ln]
        open(os.path.join(dest, name), "w").writelines(lines)

    for kind in ("vl", "text", "q32"):
        log = os.path.join(res, f"server_{kind}.log")
        if os.path.exists(log):
            keep(log, f"server_{kind}.log.txt")
        # the log as it stood after each plan (serve.sh copies it): a restarted server overwrites server_<kind>.log
        for after in sorted(glob.glob(os.path.join(res, f"server_{kind}_after_*.log"))):
            keep(after, os.path.basename(after)[: -len(".log")] + ".log.txt")


if __name__ == "__main__":
    main()
