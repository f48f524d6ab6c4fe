"""``verify.sh``: the benchmark that checks a running deployment against its plan.

For each deployment, ``<folder>/verify/verify.sh`` runs ``vllm bench serve`` (vLLM 0.33.0's client; flags checked
against ``vllm/benchmarks/serve.py`` and ``vllm/benchmarks/datasets``) with a dataset that matches the planned
workload, at the planned load of one replica, then ``vlmplan calibrate check`` on its result (exit 0 when every
planned SLO holds, 1 when one does not). ``deployment.json`` beside it is the deployment's plan, which the check
reads (so the folder can be copied anywhere).

Decisions:

* **Dataset**: ``random`` for text-only requests (backend ``openai``, ``/v1/completions``, as the H200 real-serving
  runs in catalogs/calibration/measurements were measured); ``random-mm`` for requests with images (backend
  ``openai-chat``, the only way the benchmark sends images), one ``--random-mm-bucket-config`` bucket per planned
  image size, keyed ``(height, width, 1)`` as ``RandomMultiModalDataset.generate_mm_item`` reads it. The planned
  length distributions become the benchmark's uniform ``mean x (1 +- r)`` (``--random-range-ratio``): exact for
  fixed lengths, an approximation (said in the script) for distributions. ``--ignore-eos`` makes every output as
  long as planned. A planned prefix-cache hit becomes a shared ``--random-prefix-len``.
* **Load**: one replica's share, as the plan's percentiles are per replica: Poisson ``--request-rate`` (rate /
  replicas), or ``--max-concurrency`` (ceil(clients / replicas), the solver's split) with ``--request-rate inf``;
  a single-request workload runs one client. ``RATE=`` / ``CONCURRENCY=`` override it (e.g. the total, against a
  load balancer in front of every replica).
* **Prompts**: ``prompts_for`` (enough requests above the checked percentile for a stable estimate).
* **Seed**: a new one per run by default (a repeated seed sends the same prompts again, which the server's prefix
  cache then serves from memory, and the run would measure less work than planned).
* ``--metadata vlmplan_*=...``: the planned workload and serving settings travel in the result JSON, so that
  ``vlmplan calibrate fit --bench RESULT`` can replay the run without being told them.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

from planner.emit.common import VLLM_PORT, VLLM_VERSION, check_text, comments, write_text
from planner.plan import DeploymentPlan, Traffic

PROMPTS_ABOVE_PERCENTILE = 100
"""Requests the benchmark should see above the highest percentile it checks: the count above a p-quantile of n
requests is Binomial(n, 1 - p), so 100 of them put the empirical quantile's rank within about +-1 percentile point
of p95 (2,000 requests: 95% interval p94.0-p96.0) and +-0.2 of p99 (10,000 requests)."""
MIN_PROMPTS = 1000
"""Floor for mean/p50/p90 SLOs (and for a plan without SLOs)."""


def prompts_for(dep: DeploymentPlan) -> int:
    """Requests for a stable estimate of the highest percentile the plan's SLOs name (``PROMPTS_ABOVE_PERCENTILE``
    of them above it)."""
    qs = [int(s.split("_p")[1].split("<")[0]) for s in dep.slos if "_p" in s]
    top = max(qs, default=0)
    need = math.ceil(PROMPTS_ABOVE_PERCENTILE / (1 - top / 100)) if top else 0
    return max(MIN_PROMPTS, need)


def _range_ratio(mean: int, lo: int, hi: int) -> float:
    """The benchmark's symmetric ratio r (lengths uniform in mean x (1 +- r), r < 1) that best covers [lo, hi]."""
    if mean <= 0 or lo == hi:
        return 0.0
    return round(min(0.99, max(mean - lo, hi - mean) / mean), 2)


def _items_ratio(base: int, lo: int, hi: int) -> float:
    """``--random-mm-num-mm-items-range-ratio``: counts uniform in [floor(base (1 - r)), ceil(base (1 + r))]."""
    if base <= 0 or lo == hi:
        return 0.0
    return round(min(1.0, max(base - lo, hi - base) / base), 2)


def bench_args(dep: DeploymentPlan, t: Traffic) -> tuple[list[str], list[str]]:
    """(the dataset, length and metadata arguments of ``vllm bench serve``, notes on how they approximate the
    plan)."""
    notes: list[str] = []
    images = bool(t.image_sizes) and t.images_per_request_range[1] > 0
    prefix = t.shared_prefix_tokens or round(t.prefix_cache_hit * t.prompt_tokens)
    text = max(1, t.prompt_tokens - prefix)
    ratio = max(_range_ratio(t.prompt_tokens, *t.prompt_tokens_range),
                _range_ratio(t.output_tokens, *t.output_tokens_range))
    if ratio:
        notes.append(f"the planned lengths vary (prompt {t.prompt_tokens_range[0]}-{t.prompt_tokens_range[1]}, "
                     f"output {t.output_tokens_range[0]}-{t.output_tokens_range[1]} tokens); the benchmark draws "
                     f"both uniformly within +-{ratio:.0%} of their means {t.prompt_tokens} and {t.output_tokens}: "
                     "the percentiles compare an approximation of the planned mix")
    args = ["--dataset-name", "random-mm" if images else "random",
            "--random-input-len", str(text), "--random-output-len", str(t.output_tokens),
            "--random-range-ratio", f"{ratio:g}"]
    if prefix:
        args += ["--random-prefix-len", str(prefix)]
        notes.append(f"the planned {prefix}-token shared prefix is sent as one random prefix shared by every prompt"
                     if t.shared_prefix_tokens else
                     f"the planned prefix-cache hit ({t.prefix_cache_hit:.0%}) is sent as a {prefix}-token prefix "
                     "shared by every prompt")
    if t.repeated_image_fraction > 0 and images:
        notes.append(f"the benchmark sends a new random image with every request, not the planned "
                     f"{t.repeated_image_fraction:.0%} repeats: its TTFT and throughput are those of a replica that "
                     "encodes every image (a bound the plan should beat)")
    meta = {"vlmplan_workload": dep.workload, "vlmplan_model": dep.model, "vlmplan_gpu": dep.gpu,
            "vlmplan_tp": str(dep.tp), "vlmplan_pp": str(dep.pp), "vlmplan_precision": dep.precision,
            "vlmplan_kv_cache_dtype": dep.kv_cache_dtype, "vlmplan_max_num_seqs": str(dep.max_num_seqs),
            "vlmplan_max_num_batched_tokens": str(dep.max_num_batched_tokens),
            "vlmplan_max_model_len": str(dep.max_model_len), "vlmplan_text_tokens": str(t.prompt_tokens)}
    if images:
        lo, hi = t.images_per_request_range
        base = max(1, round(t.images_per_request))
        total = sum(im.weight for im in t.image_sizes)
        buckets = ", ".join(f"({im.height}, {im.width}, 1): {im.weight / total:.4g}" for im in t.image_sizes)
        limit = dep.limit_mm_per_prompt.get("image", hi)
        args += ["--random-mm-base-items-per-request", str(base),
                 "--random-mm-num-mm-items-range-ratio", f"{_items_ratio(base, lo, hi):g}",
                 "--random-mm-limit-mm-per-prompt", json.dumps({"image": limit, "video": 0}, separators=(",", ":")),
                 "--random-mm-bucket-config", "{" + buckets + "}"]
        if lo != hi or abs(base - t.images_per_request) > 1e-9:
            notes.append(f"the planned images per request ({lo}-{hi}, mean {t.images_per_request:g}) are drawn "
                         f"uniformly around {base}")
        meta["vlmplan_images"] = ",".join(f"{im.width}x{im.height}:{im.weight / total:.4g}" for im in t.image_sizes)
        meta["vlmplan_images_per_request"] = f"{t.images_per_request:g}"
    args += ["--metadata", *(f"{k}={v}" for k, v in meta.items())]
    return args, notes


def load_of(dep: DeploymentPlan, t: Traffic) -> tuple[str, str, str]:
    """(shell variable, its default, the flag) for one replica's share of the planned load."""
    if t.arrival == "closed" and t.concurrency:
        return "CONCURRENCY", str(math.ceil(t.concurrency / dep.replicas)), "--max-concurrency"
    if t.arrival in ("poisson", "trace") and t.rate_per_s:
        return "RATE", f"{t.rate_per_s / dep.replicas:.6g}", "--request-rate"
    return "CONCURRENCY", "1", "--max-concurrency"


def _load_line(dep: DeploymentPlan, t: Traffic, var: str, default: str, n: int) -> str:
    """The script's header line on the load it offers."""
    if var == "RATE":
        minutes = n / float(default) / 60
        return (f"load: Poisson {default} requests/s (--request-rate), one replica's share of the planned "
                f"{t.rate_per_s:g} requests/s over {dep.replicas} replica(s); about {minutes:,.0f} min")
    if t.arrival == "single":
        return "load: one request at a time (--max-concurrency 1), as planned (lone requests)"
    return (f"load: {default} closed-loop clients (--max-concurrency, --request-rate inf), one replica's "
            f"share of the planned {t.concurrency} clients over {dep.replicas} replica(s)")


def render_verify_sh(dep: DeploymentPlan) -> str:
    """The script for one deployment (its traffic must be known)."""
    t = dep.traffic
    assert t is not None
    for value, what in ((dep.model, "model"), (dep.served_model, "served model"), (dep.workload, "workload")):
        check_text(value, what)
    data, notes = bench_args(dep, t)
    var, default, flag = load_of(dep, t)
    n = prompts_for(dep)
    chat = "--random-mm-bucket-config" in data
    backend = ["--backend", "openai-chat", "--endpoint", "/v1/chat/completions"] if chat else \
        ["--backend", "openai", "--endpoint", "/v1/completions"]
    load_line = _load_line(dep, t, var, default, n)
    slos = ", ".join(s.replace("<=", " <= ") for s in dep.slos) or "none (the check prints the percentiles only)"
    top = max([int(s.split("_p")[1].split("<")[0]) for s in dep.slos if "_p" in s], default=0)
    why = (f"{n:,} prompts: a p{top} rests on the requests above it, {n * (100 - top) // 100:,} of them here "
           f"(Binomial: the measured p{top} is the true p{top} within about +-{_band(n, top):.1f} percentile "
           "points, 95% interval)") if top else f"{n:,} prompts (no percentile SLO: enough for stable means)"
    fit_cmd = "vlmplan calibrate fit --bench \"$RESULT\" --out my-calibration.yaml"
    head = [
        f"Generated by vlmplan (verify.sh): checks a running deployment against its plan with vLLM {VLLM_VERSION}'s",
        "`vllm bench serve`. Do not edit by hand: re-run `vlmplan emit` (extra flags given to this script are",
        "passed to `vllm bench serve`, e.g. ./verify.sh --num-warmups 20).",
        "",
        f"workload: {dep.workload}; model {dep.model} on {dep.gpus_per_replica} x {dep.gpu} per replica, "
        f"{dep.precision}, {dep.replicas} replica(s)",
        f"planned SLOs: {slos}",
        f"requests: {t.prompt_tokens} text tokens"
        + (f" + {t.images_per_request:g} image(s) of " + ", ".join(f"{i.width}x{i.height}" for i in t.image_sizes)
           if chat else "") + f" in, {t.output_tokens} out (--ignore-eos: every output as long as planned)",
        *(f"approximation: {x}" for x in notes),
        load_line,
        why,
        "(NUM_PROMPTS=200 for a quick smoke test; its p95 then rests on 10 requests).",
        "",
        f"Environment: BASE_URL (default http://$HOST:$PORT; HOST 127.0.0.1, PORT {VLLM_PORT}), MODEL (the",
        f"served name), {var}, NUM_PROMPTS, SEED (default: new per run, so the prefix cache holds nothing from",
        "an earlier run), RESULT (the result JSON's path).",
        "Needs: pip install vllm==" + VLLM_VERSION + " (the client only; any machine that reaches the server) and",
        "vlmplan (for the check).",
        "",
        "Then: `vlmplan calibrate check` prints measured against planned percentiles and exits 0 when every",
        "planned SLO holds, 1 when one does not (or a request failed).",
        "Feed the result back (a few runs at different loads separate more terms):",
        f"  {fit_cmd}",
        "and plan with the fitted file: vlmplan estimate --calibration my-calibration.yaml ... (or save it as",
        f"catalogs/calibration/vllm-0.33-{dep.gpu.lower()}.yaml).",
    ]
    load_flags = [flag, f'"${{{var}}}"']
    if var == "CONCURRENCY":
        load_flags += ["--request-rate", "inf"]
    argv = ["vllm", "bench", "serve", *backend,
            "--base-url", '"${BASE_URL}"', "--model", '"${MODEL}"', "--tokenizer", shlex.quote(dep.served_model),
            *[shlex.quote(a) for a in data[:data.index("--metadata")]],
            "--ignore-eos", "--num-prompts", '"${NUM_PROMPTS}"', *load_flags,
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,95,99",
            "--seed", '"${SEED}"', "--save-result",
            "--result-dir", '"$(dirname "${RESULT}")"', "--result-filename", '"$(basename "${RESULT}")"',
            *[shlex.quote(a) for a in data[data.index("--metadata"):]], '"$@"']
    lines = _wrap(argv)
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in dep.workload)[:60]
    return ("#!/usr/bin/env bash\n" + comments(head) + "set -euo pipefail\n\n"
            'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"\n'
            f'BASE_URL="${{BASE_URL:-http://${{HOST:-127.0.0.1}}:${{PORT:-{VLLM_PORT}}}}}"\n'
            f"MODEL=\"${{MODEL:-{_dq(dep.model)}}}\"\n"
            f'{var}="${{{var}:-{default}}}"\n'
            f'NUM_PROMPTS="${{NUM_PROMPTS:-{n}}}"\n'
            'SEED="${SEED:-$(date +%s)}"\n'
            f'RESULT="${{RESULT:-$PWD/verify-{slug}-$(date +%Y%m%d-%H%M%S).json}}"\n'
            'mkdir -p "$(dirname "${RESULT}")"\n\n'
            + lines + "\n\n"
            'echo "result: ${RESULT}"\n'
            'exec vlmplan calibrate check --bench "${RESULT}" --plan "${HERE}/deployment.json"\n')


def _band(n: int, top: int) -> float:
    """Half-width in percentile points of the 95% interval of the rank of an empirical p``top`` of n samples."""
    p = 1 - top / 100
    return 196 * math.sqrt(p * (1 - p) / n)


def _dq(value: str) -> str:
    """``value`` safe inside double quotes in bash."""
    return "".join("\\" + c if c in '"$`\\' else c for c in value)


def _wrap(argv: list[str]) -> str:
    """One command, a flag and its values per line."""
    out: list[str] = [" ".join(argv[:3])]
    cur: list[str] = []
    meta = False
    for a in argv[3:]:
        meta = meta or a == "--metadata"
        if (a.startswith("--") or (meta and a != "--metadata")) and cur or a == '"$@"':
            out.append(" ".join(cur))
            cur = []
        cur.append(a)
    out.append(" ".join(cur))
    return " \\\n  ".join(x for x in out if x)


def write(dep: DeploymentPlan, folder: Path) -> list[Path]:
    """``verify.sh`` and ``deployment.json`` for one deployment into ``folder``; nothing when the plan does not
    carry the workload (plans written before vlmplan wrote ``verify.sh``)."""
    if dep.traffic is None:
        return []
    return [write_text(folder / "verify.sh", render_verify_sh(dep), executable=True),
            write_text(folder / "deployment.json", json.dumps(dep.model_dump(mode="json"), indent=2) + "\n")]
