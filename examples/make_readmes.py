"""Regenerate the planner's numbers in the example READMEs by running `vlmplan whatif`.

Every README holds blocks between ``<!-- BEGIN generated: NAME -->`` and
``<!-- END generated: NAME -->``; each block is the command below and the
table its ``--json`` output gives. Run from the repository root::

    python examples/make_readmes.py          # rewrite the blocks
    python examples/make_readmes.py --check  # exit 1 when a README is stale (tests/unit/test_examples.py does this):
                                             # other words, or a number more than 5% away
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Row = dict[str, Any]
Column = tuple[str, Callable[[Row, list[Row]], Any]]


def _f(nd: int) -> Callable[[Any], str]:
    def fmt(x: Any) -> str:
        if x is None:
            return "-"
        return f"{x:,.{nd}f}"
    return fmt


def col(header: str, key: str, nd: int = 1) -> Column:
    fmt = _f(nd)
    return header, lambda r, _rows: fmt(r.get(key)) if isinstance(r.get(key), (int, float)) and not isinstance(
        r.get(key), bool) else (r.get(key) if r.get(key) not in (None, "") else "-")


def deployment(r: Row, _rows: list[Row]) -> str:
    if not r["gpu"]:
        return "-"
    n = (r["gpus"] or 1) // (r["replicas"] or 1)
    text = f"{n} x {r['gpu']} {r['precision']}" + (" kv-fp8" if r["kv_cache_dtype"] == "fp8" else "")
    text += f", seqs {r['max_num_seqs']}, ctx {r['max_model_len']}"
    return f"{r['replicas']} x ({text})" if (r["replicas"] or 1) > 1 else text


def ok(r: Row, _rows: list[Row]) -> str:
    return "yes" if r["feasible"] else r["status"] or "no"


def tokens_per_s(r: Row, _rows: list[Row]) -> str:
    t = r.get("tpot_p50_ms")
    return f"{1000 / t:,.0f}" if t else "-"


def per_hour(r: Row, _rows: list[Row]) -> str:
    c = r.get("max_requests_per_s")
    return f"{c * 3600:,.0f}" if c else "-"


def vs_bf16(key: str, group: str) -> Callable[[Row, list[Row]], str]:
    """``key`` of this row over the bf16 row with the same ``group`` value."""
    def f(r: Row, rows: list[Row]) -> str:
        ref = next((x for x in rows if x["precision"] == "bf16" and x[group] == r[group]), None)
        if not ref or not ref.get(key) or not r.get(key):
            return "-"
        return f"{r[key] / ref[key]:.2f}x"
    return f


def binding(r: Row, _rows: list[Row]) -> str:
    text = str(r.get("binding") or "-")
    text = re.sub(r"^[\w.-]+: (?=(tpot|ttft|e2e)_)", "", text)  # solver rows prefix the workload name
    return text.replace("|", "/")


@dataclass(frozen=True)
class Study:
    name: str
    args: list[str]
    columns: list[Column]
    note: str = ""


MEMORY = [col("weights GiB", "weights_gib", 2), col("KV cache GiB", "kv_cache_gib", 2),
          col("activations GiB", "activations_gib", 2), col("overhead GiB", "overhead_gib", 2),
          col("total GiB/GPU", "total_gib", 2), col("KV capacity tokens", "kv_capacity_tokens", 0)]
SPEED = [col("TTFT p50 ms", "ttft_p50_ms"), col("TPOT p50 ms", "tpot_p50_ms"), ("tokens/s", tokens_per_s),
         col("e2e p50 ms", "e2e_p50_ms", 0)]
LOADED = [col("TTFT p95 ms", "ttft_p95_ms"), col("TPOT p95 ms", "tpot_p95_ms"), col("e2e p95 ms", "e2e_p95_ms", 0),
          col("$/1k req", "cost_per_1k_requests", 3), ("ok", ok)]


@dataclass(frozen=True)
class FrontEndStudy:
    """`vlmplan solve` of the scenario with and without the API-server queue (``--no-frontend-queue``), each chosen
    deployment then simulated with the queue (what a real vLLM server does)."""

    name: str


@dataclass(frozen=True)
class SpeculativeStudy:
    """`vlmplan solve` of the example's scenarios with speculative decoding searched (``auto``), off, and forced, each
    chosen deployment checked by the simulator."""

    name: str
    runs: list[tuple[str, str, float | None]]
    """(scenario file in the example's folder, --speculative, --acceptance-rate)."""


@dataclass(frozen=True)
class SpeculativeBatchStudy:
    """Time per output token of one decode step against the batch, plain and speculative (the speed model alone)."""

    name: str
    model: str
    gpu: str
    context: int
    batches: list[int]
    settings: list[tuple[str, float | None]]
    """(method, acceptance rate; None: the method's default)."""


@dataclass(frozen=True)
class PrefixStudy:
    """`vlmplan solve` of the example's scenario with prefix caching on and off and other shares of repeated
    images, each chosen deployment checked by the simulator."""

    name: str
    runs: list[tuple[str, float | None]]
    """(--prefix-caching, --repeated-images; None: the scenario's)."""


@dataclass(frozen=True)
class Example:
    folder: str
    studies: list[Study | FrontEndStudy | SpeculativeStudy | SpeculativeBatchStudy | PrefixStudy] = field(
        default_factory=list)


def _scenario(folder: str) -> str:
    return f"examples/{folder}/scenario.yaml"


EXAMPLES = [
    Example("chatbot-rtx4090", [
        Study("memory", ["--fixed", "--concurrency", "1"], [("deployment", deployment)] + MEMORY + SPEED),
        Study("precision", ["--fixed", "--concurrency", "1", "--vary", "precision=bf16,fp8,int8,int4"],
              [col("precision", "precision")] + MEMORY[:1] + MEMORY[4:] + SPEED),
        Study("load", ["--fixed", "--simulate", "--vary", "batch=1,4", "--vary", "rate=0.1,0.25,0.5,0.85,1.5"],
              [col("max_num_seqs", "max_num_seqs", 0), col("rate req/s", "rate_per_s", 2)] + LOADED
              + [("binding", binding)]),
        Study("solver", ["--budget", "$5/h", "--vary", "rate=0.5,2,8,20"],
              [col("rate req/s", "rate_per_s", 1), ("cheapest deployment", deployment), col("$/h", "cost_per_hour", 2)]
              + LOADED + [("binding", binding)]),
    ]),
    Example("document-pipeline-4xa100", [
        Study("memory", ["--fixed", "--concurrency", "1"], [("deployment", deployment)] + MEMORY + SPEED),
        Study("precision", ["--fixed", "--vary", "precision=bf16,int8,int4"],
              [col("precision", "precision"), col("weights GiB/GPU", "weights_gib", 2),
               col("capacity req/s", "max_requests_per_s", 2), ("capacity vs bf16", vs_bf16("max_requests_per_s",
                                                                                            "workload")),
               ("documents/hour at capacity", per_hour)] + LOADED),
        Study("rate", ["--fixed", "--vary", "rate=0.5,1,2,3,4,5"],
              [col("rate req/s", "rate_per_s", 1), col("mean batch", "mean_batch", 1)] + LOADED
              + [("binding", binding)]),
        Study("solver", ["--budget", "$100/h"],
              [("cheapest deployment", deployment), col("$/h", "cost_per_hour", 2)] + LOADED + [("binding", binding)]),
    ]),
    Example("research-h100-128k", [
        Study("memory", ["--fixed", "--concurrency", "1"], [("deployment", deployment)] + MEMORY + SPEED),
        Study("prompt", ["--fixed", "--simulate", "--vary", "concurrency=1,4", "--vary", "prompt=128,8k,32k,64k,120k"],
              [col("clients", "concurrency", 0), col("text tokens", "prompt_tokens", 0),
               col("mean batch", "mean_batch", 1),
               col("TTFT p50 ms", "ttft_p50_ms"), col("TPOT p50 ms", "tpot_p50_ms")] + LOADED[:3]
              + [("ok", ok)]),
        Study("gpu", ["--fixed", "--simulate", "--prompt-tokens", "120000", "--vary", "gpu=H100-SXM-80GB,H200-141GB"],
              [col("GPU", "gpu"), col("KV cache GiB", "kv_cache_gib", 2),
               col("KV capacity tokens", "kv_capacity_tokens", 0), col("mean batch", "mean_batch", 1),
               col("TTFT p95 ms", "ttft_p95_ms"), col("TPOT p95 ms", "tpot_p95_ms"), col("$/h", "cost_per_hour", 2),
               ("ok", ok)]),
        Study("solver", [],
              [("cheapest deployment", deployment), col("$/h", "cost_per_hour", 2)] + LOADED + [("binding", binding)]),
    ]),
    Example("document-pages-frontend", [FrontEndStudy("frontend")]),
    Example("speculative-decoding", [SpeculativeStudy("speculative", [
        ("scenario.yaml", "auto", None), ("scenario.yaml", "off", None),
        ("high-load.yaml", "auto", None), ("high-load.yaml", "off", None), ("high-load.yaml", "eagle3", None),
        ("high-load.yaml", "eagle3", 0.6)]),
        SpeculativeBatchStudy("batch", "meta-llama/Llama-3.1-8B-Instruct", "H100-SXM-80GB", 400,
                              [1, 8, 32, 64, 128, 256, 512], [("eagle3", None), ("eagle3", 0.6), ("ngram", None)])]),
    Example("prefix-caching", [PrefixStudy("prefix", [("auto", None), ("off", None), ("auto", 0.5),
                                                      ("auto", 0.0)])]),
    Example("workloads", [
        Study("alone", ["--fixed", "--concurrency", "1", "--vary",
                        "workload=document-vqa.yaml,visual-reasoning.yaml,captioning.yaml",
                        "--vary", "precision=bf16,int8,int4"],
              [col("workload", "workload"), col("precision", "precision"), col("visual tokens", "visual_tokens", 0),
               col("TTFT ms", "ttft_p50_ms"), col("TPOT ms", "tpot_p50_ms"), col("e2e ms", "e2e_p50_ms", 0),
               ("e2e vs bf16", vs_bf16("e2e_p50_ms", "workload")), col("capacity req/s", "max_requests_per_s", 2),
               ("capacity vs bf16", vs_bf16("max_requests_per_s", "workload"))]),
        Study("loaded", ["--fixed", "--vary", "workload=document-vqa.yaml,visual-reasoning.yaml,captioning.yaml",
                         "--vary", "precision=bf16,int8,int4"],
              [col("workload", "workload"), col("precision", "precision")] + LOADED),
    ]),
]


def run_whatif(args: list[str]) -> dict[str, Any]:
    """`vlmplan whatif ARGS --json`, through the CLI, from the repository root."""
    import os

    import typer
    from typer.testing import CliRunner

    from planner.cli.whatif import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep 'whatif' a sub-command
        pass

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        res = CliRunner().invoke(app, ["whatif", *args, "--json"])
    finally:
        os.chdir(cwd)
    if res.exit_code != 0:
        raise RuntimeError(f"vlmplan whatif {' '.join(args)} failed ({res.exit_code}): {res.output}")
    return json.loads(res.stdout)


def _cell(x: Any) -> str:
    return str(x).replace("|", "/")


def render_frontend(example: Example) -> str:
    import numpy as np

    from planner.app.solve_request import SolveInput, build_request_models
    from planner.catalog.loader import load_calibration, load_engine
    from planner.load.analytic import build_step_cost
    from planner.load.simulator import build_requests, simulate
    from planner.load.slo_check import meets
    from planner.perf.hostcpu import api_server_vcpus, replica_vcpus
    from planner.solver import solve

    head = (f"| `vlmplan solve --scenario {_scenario(example.folder)}` | GPUs | replicas | API servers per replica "
            "| vCPUs per replica | $/h | TTFT p95 ms (analytic) | TTFT p95 ms, simulated with the API-server queue "
            "| meets the SLO |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    host = load_engine().host
    for flag, queue in (("", True), (" --no-frontend-queue", False)):
        req, _notes, _ = build_request_models(SolveInput(scenario=ROOT / _scenario(example.folder), verify=queue,
                                                         frontend_queue=queue))
        for c in solve(req).chosen:
            cal = load_calibration(c.cfg.gpu.name)
            vcpus = replica_vcpus(host, c.cfg, api_server_vcpus(cal, host, c.shape)) if host else float("nan")
            w = req.workloads[0]
            cost = build_step_cost(c.cfg, cal)
            res = simulate(cost, build_requests(c.cfg, w, cost, 4000, 0), c.memory.kv_capacity_tokens, "poisson",
                           (w.rate_per_s or 0) / c.replicas, seed=0, cfg=c.cfg)
            ok_ = "yes" if meets(res, req.slos_on(c.workload, c.cfg.gpu.name)) else "no"
            lines.append(f"| `solve{flag}` | {c.gpus} x {c.cfg.gpu.name} | {c.replicas} | {c.cfg.api_server_count} "
                         f"| {vcpus:.1f} | {c.cost_per_hour:.2f} | {c.prediction.ttft.p95:,.1f} "
                         f"| {float(np.percentile(res.ttft_ms, 95)):,.1f} | {ok_} |")
    return "\n".join(lines)


def _solved(example: Example, file: str, **flags: Any) -> tuple[Any, Any]:
    """`vlmplan solve --scenario examples/FOLDER/FILE` with ``flags`` (SolveInput fields), verified by the simulator
    as the command does: (the solution, its plan)."""
    from planner.app.solve_plan import to_plan
    from planner.app.solve_request import SolveInput, build_request_models
    from planner.solver import solve

    req, notes, args = build_request_models(SolveInput(scenario=ROOT / "examples" / example.folder / file,
                                                       verify=True, **flags))
    sol = solve(req)
    return sol, to_plan(sol, req, args, notes)


def render_speculative(example: Example, study: SpeculativeStudy) -> str:
    lines = ["| `vlmplan solve --scenario examples/speculative-decoding/...` | deployment | speculative decoding "
             "| tokens per verify step | $/h | TPOT p95 ms (analytic) | TPOT p95 ms (simulated) | meets the SLOs |",
             "|---|---|---|---|---|---|---|---|"]
    for file, choice, rate in study.runs:
        _, plan = _solved(example, file, speculative=choice, acceptance_rate=rate)
        flags = f" --speculative {choice}" + (f" --acceptance-rate {rate:g}" if rate is not None else "")
        for d in plan.deployments:
            sp = d.speculative
            what = f"{sp.method}, k={sp.num_speculative_tokens}, acceptance {sp.acceptance_rate:g}" if sp else "off"
            tokens = f"{sp.tokens_per_step:.2f}" if sp else "1"
            dep = (f"{d.replicas} x {d.gpus_per_replica} x {d.gpu} (tp {d.tp}), seqs {d.max_num_seqs}")
            sim = d.simulated
            assert sim is not None, "solve ran without the simulator check"
            lines.append(f"| `{file}{flags}` | {dep} | {what} | {tokens} | {d.cost_per_hour:,.2f} "
                         f"| {d.predicted.tpot_ms.p95:,.2f} | {sim.tpot_ms.p95:,.2f} | "
                         f"{'yes' if sim.meets_slos else 'no'} |")
    return "\n".join(lines)


def render_prefix(example: Example, study: PrefixStudy) -> str:
    lines = ["| `vlmplan solve --scenario examples/prefix-caching/scenario.yaml ...` | deployment | prompt tokens "
             "read from the cache | pages encoded | $/h | TTFT p95 ms (analytic) | TTFT p95 ms (simulated) "
             "| meets the SLOs |", "|---|---|---|---|---|---|---|---|"]
    for choice, repeated in study.runs:
        sol, plan = _solved(example, "scenario.yaml", prefix_caching=choice, repeated_images=repeated)
        flags = f"--prefix-caching {choice}" + (f" --repeated-images {repeated:g}" if repeated is not None else "")
        for d, c in zip(plan.deployments, sol.chosen):
            dep = f"{d.replicas} x {d.gpus_per_replica} x {d.gpu} (tp {d.tp})"
            sim = d.simulated
            assert sim is not None, "solve ran without the simulator check"
            lines.append(f"| `{flags}` | {dep} | {c.shape.cached_tokens:,} of {c.shape.prompt_tokens:,} "
                         f"| {c.shape.encoded_share:.0%} | {d.cost_per_hour:,.2f} | {d.predicted.ttft_ms.p95:,.1f} "
                         f"| {sim.ttft_ms.p95:,.1f} | {'yes' if sim.meets_slos else 'no'} |")
    return "\n".join(lines)


def render_speculative_batch(study: SpeculativeBatchStudy) -> str:
    from dataclasses import replace

    from planner.catalog.loader import load_calibration, load_engine, load_precisions
    from planner.perf.speculative import make_step_cost
    from planner.spec.config import ServingConfig, resolve
    from planner.spec.lookup import resolve_gpu, resolve_model
    from planner.spec.speculation import speculation_of

    model, gpu = resolve_model(study.model), resolve_gpu(study.gpu)
    base = ServingConfig(model=model, gpu=gpu, max_model_len=4096)
    cal, engine, precisions = load_calibration(gpu.name), load_engine(), load_precisions()
    plain = make_step_cost(resolve(base, engine), cal, precisions)
    def label(m: str, a: float | None) -> str:
        spec = speculation_of(model, m, a)
        rate = f", drafts on {spec.draft_rate:g} of steps" if spec.draft_rate < 1 else ""
        return f"{m}, acceptance {spec.acceptance_rate:g}{rate}"

    costs = [(label(m, a),
              make_step_cost(resolve(replace(base, speculative=speculation_of(model, m, a)), engine), cal, precisions))
             for m, a in study.settings]
    heads = " | ".join(f"{n}: ms per token (vs plain)" for n, _ in costs)
    lines = [f"| sequences decoding | plain ms per token | {heads} |", "|---" * (2 + len(costs)) + "|"]
    for b in study.batches:
        # A decode-only step as the load models run it (engine overhead included: n-gram's synchronous
        # scheduling is part of its cost), over the tokens it yields.
        p = plain.decode_steps_ms(b, b * study.context)
        cells = [f"{c.decode_steps_ms(b, b * study.context):,.2f} ({c.decode_steps_ms(b, b * study.context) / p:.2f}x)"
                 for _, c in costs]
        lines.append(f"| {b} | {p:,.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(example: Example,
           study: Study | FrontEndStudy | SpeculativeStudy | SpeculativeBatchStudy | PrefixStudy) -> str:
    if isinstance(study, PrefixStudy):
        return render_prefix(example, study)
    if isinstance(study, FrontEndStudy):
        return render_frontend(example)
    if isinstance(study, SpeculativeBatchStudy):
        return render_speculative_batch(study)
    if isinstance(study, SpeculativeStudy):
        return render_speculative(example, study)
    args = [_scenario(example.folder), *study.args]
    data = run_whatif(args)
    rows = data["rows"]
    shown = " ".join(f"'{a}'" if any(c in a for c in " $,") else a for a in args)
    lines = [f"`vlmplan whatif {shown}`", "",
             f"Held fixed: {data['held_fixed']}" + (f"; load model: {data['load_model']}" if data["mode"] == "fixed"
                                                    else "; the solver's cheapest deployment per point"), ""]
    lines.append("| " + " | ".join(h for h, _ in study.columns) + " |")
    lines.append("|" + "|".join("---" for _ in study.columns) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_cell(fn(r, rows)) for _, fn in study.columns) + " |")
    if study.note:
        lines += ["", study.note]
    return "\n".join(lines)


NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
TOLERANCE = 0.05
"""--check accepts numbers within 5% (small speed-model tweaks); words and table structure must match exactly."""


def same_block(old: str, new: str, rel: float = TOLERANCE) -> bool:
    if NUMBER.sub("#", old) != NUMBER.sub("#", new):
        return False
    for a, b in zip(NUMBER.findall(old), NUMBER.findall(new)):
        x, y = float(a.replace(",", "")), float(b.replace(",", ""))
        if abs(x - y) > max(rel * max(abs(x), abs(y)), 0.051):
            return False
    return True


BLOCK = re.compile(r"(<!-- BEGIN generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END generated: (?P=name) -->)",
                   re.S)


def update(example: Example, check: bool = False) -> list[str]:
    """Rewrite (or, with ``check``, compare) the generated blocks of one README; returns the stale block names."""
    path = ROOT / "examples" / example.folder / "README.md"
    text = path.read_text()
    stale: list[str] = []
    names = {m.group("name") for m in BLOCK.finditer(text)}
    missing = [s.name for s in example.studies if s.name not in names]
    if missing:
        raise RuntimeError(f"{path}: no block for {', '.join(missing)}")
    for study in example.studies:
        body = render(example, study) + "\n"

        def sub(m: re.Match[str], study: Study | FrontEndStudy | SpeculativeStudy | SpeculativeBatchStudy = study,
                body: str = body) -> str:
            if m.group("name") != study.name:
                return m.group(0)
            if not same_block(m.group("body"), body):
                stale.append(study.name)
            return m.group(1) + body + m.group(4)

        text = BLOCK.sub(sub, text)
    if not check:
        path.write_text(text)
    return stale


def main(argv: list[str]) -> int:
    check = "--check" in argv
    bad = []
    for ex in EXAMPLES:
        stale = update(ex, check)
        if stale:
            bad.append(f"{ex.folder}: {', '.join(stale)}")
    if check and bad:
        print("stale README blocks (run: python examples/make_readmes.py):\n  " + "\n  ".join(bad))
        return 1
    if not check:
        print("updated:", ", ".join(ex.folder for ex in EXAMPLES) + (f" (changed: {'; '.join(bad)})" if bad else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
