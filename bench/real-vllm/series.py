#!/usr/bin/env python3
"""Run one series of `vllm bench serve` runs against a running vLLM server, in one process.

Device-side (the H200 machine), after `serve.sh` has started the server. For every run:
- a fresh seed (the same seed re-sends the same prompts and images, and the prefix cache then hits);
- a snapshot of the server's Prometheus `/metrics` (the `vllm:` lines) before and after;
- the CPU seconds of every process of the server (API server, engine core) before and after,
  from /proc, so the API server's work per request can be read off;
- `vllm bench serve` itself, called in-process (its `add_cli_args` + `main`), saving the detailed
  per-request result (`--save-detailed`: ttfts, itls, start times, lengths);
- the wall time and the arguments, in `<label>.run.json` beside the result.

Runs that would not finish before the deadline are skipped, and the results folder is packed
into $OUT/results.tgz after every run, so a call cut at its limit still returns what finished.

Usage: series.py PLAN --deadline EPOCH --res DIR --out DIR --server-pid PID --model-dir DIR
PLAN names one of the series in SERIES below.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tarfile
import time
import urllib.request

SCRIPT_VERSION = "2.5.0"

# Image sizes (width x height) of the series: a small photo, a large photo, a document page.
SMALL = "(448,448,1)"
LARGE = "(1280,960,1)"
PAGE = "(1680,2240,1)"

# One run: (label, est. seconds, load, dataset). load: ("rate", r, prompts) or ("conc", c, prompts).
# dataset: (image bucket or None for text, input tokens, output tokens, range ratio[, shared prefix tokens]).
# A shared prefix (`--random-prefix-len`) is one random token string put before every prompt of the run (vLLM's
# random dataset: the total prompt is prefix + input tokens), so from the second request on it hits the prefix cache.
Run = tuple[str, int, tuple, tuple]


def _img(bucket: str, inp: int = 1024, out: int = 256, ratio: float = 0.0) -> tuple:
    return (bucket, inp, out, ratio)


def _txt(inp: int = 1024, out: int = 256, ratio: float = 0.0, prefix: int = 0) -> tuple:
    return (None, inp, out, ratio) if prefix == 0 else (None, inp, out, ratio, prefix)


SERIES: dict[str, list[Run]] = {
    # Qwen2.5-VL-7B, part 1: warm-ups (discarded), then the small image from light load past saturation,
    # then the closed loop from 1 to 64 clients.
    "vl1": [
        ("warmup_small", 25, ("conc", 16, 48), _img(SMALL)),
        ("warmup_large", 15, ("conc", 4, 8), _img(LARGE)),
        ("warmup_page", 20, ("conc", 4, 8), _img(PAGE)),
        ("small_r2", 40, ("rate", 2, 60), _img(SMALL)),
        ("small_r5", 25, ("rate", 5, 80), _img(SMALL)),
        ("small_r10", 25, ("rate", 10, 150), _img(SMALL)),
        ("small_r16", 25, ("rate", 16, 240), _img(SMALL)),
        ("small_r24", 30, ("rate", 24, 360), _img(SMALL)),
        ("small_r40", 40, ("rate", 40, 480), _img(SMALL)),
        ("small_c1", 30, ("conc", 1, 16), _img(SMALL)),
        ("small_c4", 20, ("conc", 4, 40), _img(SMALL)),
        ("small_c16", 20, ("conc", 16, 96), _img(SMALL)),
        ("small_c32", 20, ("conc", 32, 160), _img(SMALL)),
        ("small_c64", 25, ("conc", 64, 256), _img(SMALL)),
    ],
    # Qwen2.5-VL-7B, part 2 (same server): a large photo, a document page, varied lengths, text only.
    "vl2": [
        ("page_c1", 30, ("conc", 1, 12), _img(PAGE)),
        ("page_r1", 35, ("rate", 1, 30), _img(PAGE)),
        ("page_r2", 30, ("rate", 2, 50), _img(PAGE)),
        ("page_r3", 30, ("rate", 3, 70), _img(PAGE)),
        ("page_r5", 35, ("rate", 5, 90), _img(PAGE)),
        ("page_c4", 25, ("conc", 4, 32), _img(PAGE)),
        ("page_c16", 30, ("conc", 16, 64), _img(PAGE)),
        ("large_c1", 25, ("conc", 1, 16), _img(LARGE)),
        ("large_r2", 35, ("rate", 2, 60), _img(LARGE)),
        ("large_r5", 25, ("rate", 5, 100), _img(LARGE)),
        ("large_r8", 25, ("rate", 8, 160), _img(LARGE)),
        ("large_r12", 30, ("rate", 12, 240), _img(LARGE)),
        ("large_c8", 20, ("conc", 8, 64), _img(LARGE)),
        ("large_c32", 25, ("conc", 32, 160), _img(LARGE)),
        ("small_mix_r10", 25, ("rate", 10, 150), _img(SMALL, 1024, 256, 0.5)),
        ("small_mix_c16", 20, ("conc", 16, 96), _img(SMALL, 1024, 256, 0.5)),
        ("vltext_r10", 20, ("rate", 10, 150), _txt()),
        ("vltext_c16", 20, ("conc", 16, 96), _txt()),
        ("page_c32", 35, ("conc", 32, 96), _img(PAGE)),
        ("small_c8", 20, ("conc", 8, 64), _img(SMALL)),
    ],
    # Qwen2.5-7B (text LLM of the same family): light load past saturation, closed loop 1..64.
    "text": [
        ("warmup", 20, ("conc", 16, 48), _txt()),
        ("r2", 35, ("rate", 2, 60), _txt()),
        ("r8", 25, ("rate", 8, 160), _txt()),
        ("r16", 25, ("rate", 16, 240), _txt()),
        ("r32", 25, ("rate", 32, 400), _txt()),
        ("r64", 35, ("rate", 64, 640), _txt()),
        ("c1", 25, ("conc", 1, 16), _txt()),
        ("c4", 20, ("conc", 4, 40), _txt()),
        ("c16", 20, ("conc", 16, 96), _txt()),
        ("c64", 25, ("conc", 64, 256), _txt()),
        ("mix_r16", 25, ("rate", 16, 240), _txt(1024, 256, 0.5)),
        ("c32", 20, ("conc", 32, 160), _txt()),
        ("long_c8", 30, ("conc", 8, 48), _txt(4096, 256)),
        ("r24", 25, ("rate", 24, 360), _txt()),
    ],
    # run21: the same VL server with `--api-server-count 2` (API_SERVERS=2 in serve.sh): does a second API-server
    # process raise the saturation throughput of image and text requests? (run20: the one API server was at
    # 85-93% of a core at every image saturation point.)
    "api2vl": [
        ("warmup_small", 25, ("conc", 16, 48), _img(SMALL)),
        ("warmup_page", 20, ("conc", 4, 8), _img(PAGE)),
        ("page_r5", 35, ("rate", 5, 90), _img(PAGE)),
        ("page_r8", 35, ("rate", 8, 120), _img(PAGE)),
        ("page_c16", 30, ("conc", 16, 64), _img(PAGE)),
        ("large_r12", 30, ("rate", 12, 240), _img(LARGE)),
        ("small_r40", 40, ("rate", 40, 480), _img(SMALL)),
        ("small_c64", 25, ("conc", 64, 256), _img(SMALL)),
        ("small_r24", 30, ("rate", 24, 360), _img(SMALL)),
    ],
    # run21: text server with `--api-server-count 2`: saturation past 22.5 req/s (run20, one API server).
    "api2text": [
        ("warmup", 20, ("conc", 16, 48), _txt()),
        ("r32", 25, ("rate", 32, 400), _txt()),
        ("r64", 35, ("rate", 64, 640), _txt()),
        ("c64", 25, ("conc", 64, 256), _txt()),
        ("c128", 30, ("conc", 128, 384), _txt()),
    ],
    # run23 (2026-12-03): closed loops the waves model (planner/load/analytic/waves.py) was not built on, all held
    # out: fixed lengths at 8-96 clients, lengths ranged +-50% at 32 and 64 clients, short outputs, short and
    # long prompts. Text server, one API server.
    "waves": [
        ("warmup", 20, ("conc", 16, 48), _txt()),
        ("c8", 20, ("conc", 8, 64), _txt()),
        ("c24", 20, ("conc", 24, 120), _txt()),
        ("c48", 25, ("conc", 48, 192), _txt()),
        ("mix_c32", 20, ("conc", 32, 160), _txt(1024, 256, 0.5)),
        ("o64_c32", 15, ("conc", 32, 192), _txt(1024, 64)),
        ("i256_c64", 20, ("conc", 64, 256), _txt(256, 256)),
        ("i2048_c16", 25, ("conc", 16, 96), _txt(2048, 128)),
        ("mix_c64", 25, ("conc", 64, 256), _txt(1024, 256, 0.5)),
        ("c96", 30, ("conc", 96, 288), _txt()),
    ],
    # run24 (2026-12-03): Qwen3-32B (bf16, one H200, one API server), a model 4.7x larger than the two every
    # serving constant was fitted on: all held out, a transfer test. Closed loop 1-128 clients and Poisson
    # from light load past saturation at 1,024 in / 256 out, and long prompts (4,096 / 512) at 8 clients.
    "q32a": [
        ("warmup", 25, ("conc", 16, 32), _txt()),
        ("c1", 30, ("conc", 1, 6), _txt()),
        ("c4", 25, ("conc", 4, 16), _txt()),
        ("c16", 25, ("conc", 16, 48), _txt()),
        ("c32", 25, ("conc", 32, 96), _txt()),
        ("c64", 45, ("conc", 64, 192), _txt()),
        ("c128", 50, ("conc", 128, 256), _txt()),
    ],
    "q32b": [
        ("r1", 50, ("rate", 1, 40), _txt()),
        ("r2", 40, ("rate", 2, 64), _txt()),
        ("r4", 40, ("rate", 4, 120), _txt()),
        ("r8", 45, ("rate", 8, 200), _txt()),
        ("mix_c32", 30, ("conc", 32, 96), _txt(1024, 256, 0.5)),
        ("i4096_o512_c8", 40, ("conc", 8, 24), _txt(4096, 512)),
    ],
    # run25 (2026-12-04): prefix caching (on, vLLM's default) on the text server, one API server. Every prompt of a
    # run starts with the same random prefix; the total prompt is prefix + input tokens. p0 is the paired baseline
    # without a prefix (1,024 tokens, as run20's text runs); p768 keeps the 1,024-token total with 75% shared;
    # p3072 is a 4,096-token prompt with 75% shared (run20's long_c8 is the unshared 4,096).
    "prefix": [
        ("warmup", 20, ("conc", 16, 48), _txt()),
        ("p0_c16", 20, ("conc", 16, 96), _txt()),
        ("p768_c1", 20, ("conc", 1, 16), _txt(256, 256, 0.0, 768)),
        ("p768_c16", 20, ("conc", 16, 96), _txt(256, 256, 0.0, 768)),
        ("p768_r16", 25, ("rate", 16, 240), _txt(256, 256, 0.0, 768)),
        ("p768_r32", 25, ("rate", 32, 400), _txt(256, 256, 0.0, 768)),
        ("p3072_c8", 30, ("conc", 8, 48), _txt(1024, 256, 0.0, 3072)),
        ("p3072_r8", 30, ("rate", 8, 160), _txt(1024, 256, 0.0, 3072)),
        ("p0_r16", 25, ("rate", 16, 240), _txt()),
    ],
    # run25: n-gram speculative decoding (SPEC='{"method":"ngram",...}' in serve.sh: the server is restarted with
    # --speculative-config). Random weights make the acceptance whatever it is: it is read from the
    # vllm:spec_decode_* counters of /metrics, and the model is checked at that acceptance against the same
    # loads without speculation (run20 text, p0 runs above).
    "ngram": [
        ("warmup", 20, ("conc", 16, 48), _txt()),
        ("c1", 25, ("conc", 1, 16), _txt()),
        ("c4", 20, ("conc", 4, 40), _txt()),
        ("c16", 20, ("conc", 16, 96), _txt()),
        ("c64", 25, ("conc", 64, 256), _txt()),
        ("r16", 25, ("rate", 16, 240), _txt()),
        ("r8", 25, ("rate", 8, 160), _txt()),
    ],
    # run26 (2026-12-04): greedy decoding (--temperature 0; the other runs sample with the model's generation
    # config: temperature 0.7, top_p 0.8, top_k 20, repetition penalty 1.05). A random-weight model decoding greedily
    # tends to repeat itself, which n-gram lookup can draft from: the same loads at another acceptance. "ngram0" on
    # the n-gram server (SPEC=...), "greedy" on the plain server: the pairs without speculation.
    "ngram0": [
        ("warmup", 20, ("conc", 16, 48), _txt()),
        ("c1", 25, ("conc", 1, 16), _txt()),
        ("c4", 20, ("conc", 4, 40), _txt()),
        ("c16", 20, ("conc", 16, 96), _txt()),
        ("c64", 25, ("conc", 64, 256), _txt()),
        ("r16", 25, ("rate", 16, 240), _txt()),
    ],
    "greedy": [
        ("warmup", 20, ("conc", 16, 48), _txt()),
        ("c1", 25, ("conc", 1, 16), _txt()),
        ("c16", 20, ("conc", 16, 96), _txt()),
        ("c64", 25, ("conc", 64, 256), _txt()),
        ("r16", 25, ("rate", 16, 240), _txt()),
    ],
    # run22: text server, one API server (vLLM's default), past saturation with short prompts and 1, 32 and 128
    # output tokens: separates the API server's work per request from its work per streamed token (run21 showed
    # that a second API server raised text saturation from 22.5 to 28.5 req/s).
    "api1text": [
        ("warmup", 20, ("conc", 16, 48), _txt()),
        ("i256_o1_r150", 25, ("rate", 150, 900), _txt(256, 1)),
        ("i256_o32_r100", 25, ("rate", 100, 800), _txt(256, 32)),
        ("i256_o128_r80", 30, ("rate", 80, 600), _txt(256, 128)),
        ("i1024_o32_r100", 25, ("rate", 100, 800), _txt(1024, 32)),
    ],
}

EXTRA_ARGS: dict[str, list[str]] = {"ngram0": ["--temperature", "0"], "greedy": ["--temperature", "0"]}
"""`vllm bench serve` arguments every run of a series gets."""

BASE_URL = "http://127.0.0.1:8000"


def metrics_snapshot() -> str:
    try:
        text = urllib.request.urlopen(BASE_URL + "/metrics", timeout=10).read().decode()
    except OSError as exc:
        return f"# error: {exc}\n"
    return "".join(line + "\n" for line in text.splitlines() if line.startswith("vllm:"))


def process_cpu(root_pid: int) -> dict[str, dict[str, float | str]]:
    """CPU seconds (user + system) of the server's process group, by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, dict[str, float | str]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            comm = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pgid = int(fields[2])
        if pgid != root_pid and int(pid) != root_pid:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        out[pid] = {
            "name": name,
            "cmd": comm[:160],
            "cpu_s": (int(fields[11]) + int(fields[12])) / tick,
            "threads": float(fields[17]),
        }
    return out


def _self_cpu() -> float:
    """CPU seconds (user + system) of this process, which runs the `vllm bench serve` client."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def bench_argv(model: str, model_dir: str, label: str, seed: int, load: tuple, data: tuple, res: str) -> list[str]:
    bucket, inp, out, ratio = data[:4]
    prefix = data[4] if len(data) > 4 else 0
    argv = [
        "--host", "127.0.0.1", "--port", "8000", "--model", model, "--tokenizer", model_dir,
        "--ignore-eos", "--seed", str(seed), "--disable-tqdm", "--save-result", "--save-detailed",
        "--result-dir", res, "--result-filename", f"{label}.json",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,95,99",
        "--random-input-len", str(inp), "--random-output-len", str(out), "--random-range-ratio", str(ratio),
    ]
    if prefix:
        argv += ["--random-prefix-len", str(prefix)]
    if bucket is None:
        argv += ["--backend", "openai-chat" if "VL" in model else "openai",
                 "--endpoint", "/v1/chat/completions" if "VL" in model else "/v1/completions",
                 "--dataset-name", "random"]
    else:
        argv += ["--backend", "openai-chat", "--endpoint", "/v1/chat/completions", "--dataset-name", "random-mm",
                 "--random-mm-base-items-per-request", "1", "--random-mm-num-mm-items-range-ratio", "0",
                 "--random-mm-limit-mm-per-prompt", '{"image":1,"video":0}',
                 "--random-mm-bucket-config", "{" + bucket + ":1.0}"]
    kind, value, prompts = load
    argv += ["--num-prompts", str(prompts)]
    if kind == "rate":
        argv += ["--request-rate", str(value)]
    else:
        argv += ["--max-concurrency", str(value)]
    return argv


def pack(res: str, out: str) -> None:
    with tarfile.open(os.path.join(out, "results.tgz"), "w:gz") as tar:
        tar.add(res, arcname=".")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("plan", choices=sorted(SERIES))
    ap.add_argument("--deadline", type=float, required=True)
    ap.add_argument("--res", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--seed-base", type=int, default=1000)
    ap.add_argument("--only", default="", help="comma-separated labels to run (default: all)")
    args = ap.parse_args()

    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    script_sha = hashlib.sha256(open(__file__, "rb").read()).hexdigest()
    only = {s for s in args.only.split(",") if s}
    seed = args.seed_base
    for label, est, load, data in SERIES[args.plan]:
        if only and label not in only:
            continue
        seed += 1
        left = args.deadline - time.time()
        if left < est * 1.3:
            print(f"skip {label}: {left:.0f}s left < {est * 1.3:.0f}s", flush=True)
            continue
        full = f"{args.plan}_{label}"
        argv = bench_argv(args.model, args.model_dir, full, seed, load, data, args.res) + EXTRA_ARGS.get(args.plan, [])
        parser = FlexibleArgumentParser()
        add_cli_args(parser)
        bargs = parser.parse_args(argv)
        record: dict = {
            "label": full, "plan": args.plan, "seed": seed, "argv": argv, "load": list(load), "dataset": list(data),
            "series_script_version": SCRIPT_VERSION, "series_script_sha256": script_sha,
            "metrics_before": metrics_snapshot(), "cpu_before": process_cpu(args.server_pid),
            "wall_start": time.time(), "client_cpu_before": _self_cpu(),
        }
        t0 = time.time()
        try:
            bench_main(bargs)
            record["status"] = "ok"
        except BaseException as exc:  # noqa: BLE001 - record and go on to the next run
            record["status"] = f"error: {type(exc).__name__}: {exc}"
        record["wall_s"] = time.time() - t0
        record["cpu_after"] = process_cpu(args.server_pid)
        record["client_cpu_after"] = _self_cpu()
        record["metrics_after"] = metrics_snapshot()
        with open(os.path.join(args.res, f"{full}.run.json"), "w") as fh:
            json.dump(record, fh)
        summary = ""
        try:
            r = json.load(open(os.path.join(args.res, f"{full}.json")))
            summary = (f"done {r['completed']} fail {r['failed']} thr {r['request_throughput']:.2f}/s "
                       f"TTFT p50/p95 {r['median_ttft_ms']:.0f}/{r['p95_ttft_ms']:.0f} ms "
                       f"TPOT p50/p95 {r['median_tpot_ms']:.1f}/{r['p95_tpot_ms']:.1f} ms")
        except (OSError, KeyError, ValueError):
            pass
        print(f"[{label}] {record['status']} {record['wall_s']:.0f}s {summary}", flush=True)
        pack(args.res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
