"""`vlmplan whatif` and `vlmplan compare` (registered on the main app by ``register``).

Parse, call ``planner.app.whatif`` / ``planner.app.compare`` / ``planner.app.plots``, print. No decisions here.
"""

import csv
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from planner.cli.common import ForceOpt, check_out_file, check_out_folder, stage_outputs
from planner.cli.common import fail as _fail
from planner.cli.common import run_or_exit as _run
from planner.core.errors import RequestError

T = TypeVar("T")
PROGRESS_MIN_POINTS = 50
MAX_TABLE_ROWS = 100


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def default_workload_mapping() -> dict[str, Any]:
    """The embedded default every command uses (planner.spec.workload.DEFAULT_WORKLOAD at Poisson DEFAULT_RATE_PER_S),
    as a scenario's workload mapping."""
    from planner.app.solve_request import DEFAULT_RATE_PER_S
    from planner.spec.workload import DEFAULT_WORKLOAD

    return {"name": "default", "prompt_tokens": DEFAULT_WORKLOAD.prompt_tokens,
            "output_tokens": DEFAULT_WORKLOAD.output_tokens,
            "images": [{"width": i.width, "height": i.height} for i in DEFAULT_WORKLOAD.images],
            "arrival": "poisson", "rate_per_s": DEFAULT_RATE_PER_S}


def build_scenario(scenario_file: Path | None, fixed: bool, *, model: str | None = None, gpu: str | None = None,
                   tp: int | None = None, pp: int | None = None, precision: str | None = None,
                   kv_cache_dtype: str | None = None, max_model_len: str | None = None,
                   max_num_seqs: int | None = None, gpu_memory_utilization: float | None = None,
                   limit_images: int | None = None, workload: str | None = None, slo: list[str] | None = None,
                   budget: str | None = None, gpus: str | None = None, precisions: str | None = None,
                   objective: str | None = None) -> Any:
    """The scenario file (or a bare scenario from the flags), with the given flags replacing its values.

    Fixed mode: --gpu/--precision/... set the configuration (created on --gpu, default H100, when the file has
    none). Solver mode: --gpu and --precision restrict the solver's search like --gpus / --precisions.
    """
    from planner.app.scenario import FixedConfig, Scenario, SearchSpace, load_scenario, parse_tokens
    from planner.spec.lookup import DEFAULT_GPU, DEFAULT_MODEL

    if scenario_file is not None:
        sc = load_scenario(scenario_file)
    else:
        sc = Scenario(name="command line", model=model or DEFAULT_MODEL)
    upd: dict[str, Any] = {}
    if model is not None:
        upd["model"] = model
    if workload is not None:
        upd["workload"] = workload
    elif scenario_file is None:
        upd["workload"] = default_workload_mapping()
    if slo is not None:
        upd["slo"] = list(slo)
    if budget is not None:
        upd["budget"] = budget
    cfg_fields = {"gpu": gpu, "tp": tp, "pp": pp, "precision": precision, "kv_cache_dtype": kv_cache_dtype,
                  "max_model_len": parse_tokens(max_model_len, "--max-model-len") if max_model_len else None,
                  "max_num_seqs": max_num_seqs, "gpu_memory_utilization": gpu_memory_utilization,
                  "limit_images": limit_images}
    given = {k: v for k, v in cfg_fields.items() if v is not None}
    if fixed or sc.config is not None:
        if sc.config is None and (fixed or given):
            base: dict[str, Any] = {"gpu": DEFAULT_GPU}
        else:
            base = sc.config.model_dump() if sc.config is not None else {}
        if base or given:
            upd["config"] = _validate(FixedConfig, {**base, **given}, "config")
    search = sc.search.model_dump()
    if not fixed:
        if gpu is not None:
            search["gpus"] = [gpu]
        if precision is not None:
            search["precisions"] = [precision]
    if gpus is not None:
        search["gpus"] = [g.strip() for g in gpus.split(",") if g.strip()]
    if precisions is not None:
        search["precisions"] = [p.strip() for p in precisions.split(",") if p.strip()]
    if objective is not None:
        search["objective"] = objective
    upd["search"] = _validate(SearchSpace, search, "search")
    data = {**sc.model_dump(), **{k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in upd.items()}}
    out = _validate(Scenario, data, "scenario")
    out._base_dir = sc.base_dir
    return out


def _validate(cls: Any, data: dict[str, Any], where: str) -> Any:
    from pydantic import ValidationError

    from planner.core.inputs import first_problem

    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        loc, value, msg = first_problem(exc)
        raise RequestError(f"{where}.{loc} = {value!r}: {msg}") from None


def _workload_overrides(prompt_tokens: int | None, output_tokens: int | None, image: list[str] | None,
                        no_image: bool, rate: float | None, concurrency: int | None) -> dict[str, Any]:
    from planner.spec.workload import ImageSize, parse_image_size

    images = None
    if no_image and image:
        raise RequestError("--no-image and --image exclude each other")
    for flag, value, low in (("--prompt-tokens", prompt_tokens, 0), ("--output-tokens", output_tokens, 1),
                             ("--rate", rate, 1e-12), ("--concurrency", concurrency, 1)):
        if value is not None and value < low:
            raise RequestError(f"{flag} must be {'>= 0' if low == 0 else 'positive'} (got {value})")
    if no_image:
        images = []
    elif image:
        images = [ImageSize(width=w, height=h) for w, h in map(parse_image_size, image)]
    return {"prompt": prompt_tokens, "output": output_tokens, "images": images, "rate": rate,
            "concurrency": concurrency}


def _fmt(x: Any, nd: int = 1) -> str:
    if x is None or x == "":
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def _deployment(r: dict[str, Any]) -> str:
    if r.get("topology") == "pd" and r["gpu"]:  # two pools: each pool's replicas in the binding column
        return f"pd: {r['gpus']} x {r['gpu']} {r['precision']} (prefill + decode pools)"
    if r.get("topology") == "epd" and r["gpu"]:  # units of an LM replica and its encoders: details in the binding
        return f"epd: {r['gpus']} x {r['gpu']} {r['precision']} (LM replicas + encoders)"
    if not r["gpu"] or r["max_num_seqs"] is None:  # nothing deployed at this point
        return "-"
    n = (r["gpus"] or 1) // (r["replicas"] or 1)
    text = f"{n} x {r['gpu']} {r['precision']}"
    if r["kv_cache_dtype"] == "fp8":
        text += " kv-fp8"
    text += f", seqs {r['max_num_seqs']}, ctx {r['max_model_len']}"
    if (r["replicas"] or 1) > 1:
        text = f"{r['replicas']} x ({text})"
    return text


def print_sweep(result: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from planner.app.whatif import COLUMN

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    rows = result.rows
    shown = rows if len(rows) <= MAX_TABLE_ROWS else rows[:MAX_TABLE_ROWS]
    what = (f"one fixed configuration, {result.load} load model" if result.mode == "fixed"
            else "cheapest deployment per point, analytic load model, chosen deployment simulated")
    t = Table(title=f"what if ({result.mode}: {what})", caption=escape("held fixed: " + result.held_fixed),
              caption_justify="left")
    dims = [v.dim for v in result.varies]
    for d in dims:
        t.add_column(d)
    for name in ("ok", "deployment", "$/h", "$/1k req", "TTFT p95 ms", "TPOT p95 ms", "e2e p95 ms", "GiB/GPU",
                 "binding"):
        t.add_column(name, justify="right" if name.startswith(("$", "T", "e2e", "GiB")) else "left",
                     overflow="fold", max_width=60 if name == "binding" else None)
    for r in shown:
        cells = []
        for d in dims:
            v = r.get(COLUMN[d])
            cells.append(_fmt(v, 3) if isinstance(v, float) else _fmt(v))
        ok = "[green]yes[/]" if r["feasible"] else f"[red]{escape(r['status'] or 'no')}[/]"
        cells += [ok, escape(_deployment(r)), _fmt(r["cost_per_hour"], 2), _fmt(r["cost_per_1k_requests"], 3),
                  _fmt(r["ttft_p95_ms"]), _fmt(r["tpot_p95_ms"]), _fmt(r["e2e_p95_ms"], 0), _fmt(r["total_gib"], 1),
                  escape(r["binding"])]
        t.add_row(*cells)
    console.print(t)
    from planner.catalog.loader import calibration_status

    for gpu in dict.fromkeys(r["gpu"] for r in rows if r.get("gpu")):
        status, band = calibration_status(gpu)
        console.print(f"calibration: {gpu} {status.upper() if status == 'uncalibrated' else status}: {escape(band)}")
    feasible = sum(1 for r in rows if r["feasible"])
    tail = f"; first {MAX_TABLE_ROWS} shown (all in --csv / --json)" if len(rows) > len(shown) else ""
    console.print(f"{len(rows)} point(s), {feasible} feasible, {result.wall_s:.2f} s{tail}")


def write_csv(rows: list[dict[str, Any]], path: Path, force: bool = False) -> None:
    import io

    from planner.cli.common import write_file

    keys = list(dict.fromkeys(k for r in rows for k in r))
    fh = io.StringIO(newline="")
    w = csv.DictWriter(fh, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    write_file(path, fh.getvalue(), force, "--csv")


def _progress_sweep(run: Callable[[Any], Any], total: int, quiet: bool) -> Any:
    if total <= PROGRESS_MIN_POINTS or quiet:
        return run(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("what-if"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sweep", total=total)
        return run(lambda done, _n: bar.update(task, completed=done))


# Options, in the groups `vlmplan whatif --help` lists them: the sweep, the fixed configuration, the workload,
# the solver's search, and the outputs.
ScenarioArg = Annotated[Path | None, typer.Argument(help="Scenario YAML (see examples/); flags override it.")]
VaryOpt = Annotated[list[str] | None, typer.Option(
    help="DIM=V1,V2 or DIM=A..B[:N]; repeatable (cartesian product). DIM: gpu, precision, kv, rate, concurrency, "
         "image, context, tp, batch, prompt, output, slo, workload.")]
FixedOpt = Annotated[bool, typer.Option(
    "--fixed", help="Evaluate the scenario's one configuration per point instead of solving for the cheapest "
                    "deployment.")]
PointsOpt = Annotated[int, typer.Option(help="Points of a range A..B given without :N.")]
SimulateOpt = Annotated[bool, typer.Option(
    "--simulate", help="With --fixed: latency from the discrete-event simulator (2,000 requests per point, the "
                       "workload's distributions sampled; near saturation its p95s read ~10% low, `estimate` "
                       "runs 12,000) instead of the analytic model.")]

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Catalog id or local config.json.")]
GpuOpt = Annotated[str | None, typer.Option("--gpu", "-g", help="GPU (fixed config; solver: restrict to it).")]
TpOpt = Annotated[int | None, typer.Option(help="Tensor-parallel GPUs (fixed config).")]
PpOpt = Annotated[int | None, typer.Option(help="Pipeline stages (fixed config).")]
PrecisionOpt = Annotated[str | None, typer.Option(help="bf16, fp16, fp8, int8, int4.")]
KvOpt = Annotated[str | None, typer.Option(help="auto or fp8 (fixed config).")]
ContextOpt = Annotated[str | None, typer.Option(help="Context cap: 8192, 8k, 32k, 128k (fixed config).")]
SeqsOpt = Annotated[int | None, typer.Option(help="Engine batch cap (fixed config).")]
UtilOpt = Annotated[float | None, typer.Option(help="Fraction of GPU memory vLLM may use (fixed config).")]
LimitImagesOpt = Annotated[int | None, typer.Option(help="Images per prompt vLLM allows (fixed config).")]

WorkloadOpt = Annotated[str | None, typer.Option(
    help="Workload preset (document-vqa, visual-reasoning, captioning, chat) or workload YAML file.")]
PromptOpt = Annotated[int | None, typer.Option(help="Text tokens per request.")]
OutputTokensOpt = Annotated[int | None, typer.Option(help="Generated tokens per request.")]
ImageOpt = Annotated[list[str] | None, typer.Option(help="Image size WxH; repeatable.")]
NoImageOpt = Annotated[bool, typer.Option("--no-image", help="Text-only requests.")]
RateOpt = Annotated[float | None, typer.Option(help="Poisson arrivals, requests/s.")]
ConcurrencyOpt = Annotated[int | None, typer.Option(help="Closed-loop clients.")]

SloOpt = Annotated[list[str] | None, typer.Option(help="SLO, e.g. ttft_p95=500ms; repeatable.")]
BudgetOpt = Annotated[str | None, typer.Option(help="4xA100, $40/h, ...")]
GpusOpt = Annotated[str | None, typer.Option(help="Solver: allowed GPU types (comma-separated).")]
PrecisionsOpt = Annotated[str | None, typer.Option(help="Solver: allowed precisions (comma-separated).")]
ObjectiveOpt = Annotated[str | None, typer.Option(help="Solver objective: cost, gpus or latency.")]

CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Write every row to this CSV file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]
PlotOpt = Annotated[Path | None, typer.Option(help="Write PNG plots into this folder (needs matplotlib).")]


def whatif(
    scenario: ScenarioArg = None,
    vary: VaryOpt = None,
    fixed: FixedOpt = False,
    points: PointsOpt = 10,
    simulate: SimulateOpt = False,
    model: ModelOpt = None,
    gpu: GpuOpt = None,
    tp: TpOpt = None,
    pp: PpOpt = None,
    precision: PrecisionOpt = None,
    kv_cache_dtype: KvOpt = None,
    max_model_len: ContextOpt = None,
    max_num_seqs: SeqsOpt = None,
    gpu_memory_utilization: UtilOpt = None,
    limit_images: LimitImagesOpt = None,
    workload: WorkloadOpt = None,
    prompt_tokens: PromptOpt = None,
    output_tokens: OutputTokensOpt = None,
    image: ImageOpt = None,
    no_image: NoImageOpt = False,
    rate: RateOpt = None,
    concurrency: ConcurrencyOpt = None,
    slo: SloOpt = None,
    budget: BudgetOpt = None,
    gpus: GpusOpt = None,
    precisions: PrecisionsOpt = None,
    objective: ObjectiveOpt = None,
    csv_file: CsvOpt = None,
    as_json: JsonOpt = False,
    plot: PlotOpt = None,
    force: ForceOpt = False,
) -> None:
    """What if: sweep GPUs, precisions, rates, image sizes, context caps, ... over a base scenario."""
    from planner.app.whatif import MAX_POINTS, parse_varies, sweep
    from planner.app.whatif import points as all_points

    if plot is not None:
        from planner.app.plots import require_matplotlib

        _run(require_matplotlib)
    if not 1 <= points <= MAX_POINTS:
        _fail(f"--points must be between 1 and {MAX_POINTS:,} (got {points:,})")
    if csv_file is not None:
        check_out_file(csv_file, force, "--csv")
    if plot is not None:
        check_out_folder(plot, "--plot")
    sc = _run(lambda: build_scenario(
        scenario, fixed, model=model, gpu=gpu, tp=tp, pp=pp, precision=precision, kv_cache_dtype=kv_cache_dtype,
        max_model_len=max_model_len, max_num_seqs=max_num_seqs, gpu_memory_utilization=gpu_memory_utilization,
        limit_images=limit_images, workload=workload, slo=slo, budget=budget, gpus=gpus, precisions=precisions,
        objective=objective))
    varies = _run(lambda: parse_varies(vary, points))
    overrides = _run(lambda: _workload_overrides(prompt_tokens, output_tokens, image, no_image, rate, concurrency))
    total = len(all_points(varies))
    result = _run(lambda: _progress_sweep(
        lambda cb: sweep(sc, varies, fixed=fixed, progress=cb, overrides=overrides,
                         load="simulate" if simulate else "analytic"), total, quiet=False))
    _write_sweep(result, plot, csv_file, as_json, force)


def _write_sweep(result: Any, plot: Path | None, csv_file: Path | None, as_json: bool, force: bool) -> None:
    """Plots and CSV to their files, then the JSON object or the table on stdout."""
    files: list[Path] = []
    if plot is not None:
        from planner.app.plots import render_all

        files = stage_outputs(plot, force, lambda folder: render_all(result, folder), "--plot")
    if csv_file is not None:
        write_csv(result.rows, csv_file, force)
    if as_json:
        out = result.to_json()
        out["files"] = [str(f) for f in files] + ([str(csv_file)] if csv_file else [])
        typer.echo(json.dumps(_json_safe(out), indent=2))
        return
    print_sweep(result)
    for f in ([csv_file] if csv_file else []) + files:
        typer.echo(f"wrote {f}")


def compare(
    a: Annotated[Path, typer.Argument(help="Scenario YAML or plan.yaml.")],
    b: Annotated[Path, typer.Argument(help="Scenario YAML or plan.yaml.")],
    solve: Annotated[bool, typer.Option("--solve", help="Solve scenarios even when they hold a fixed "
                                                        "configuration.")] = False,
    differences: Annotated[bool, typer.Option("--differences", help="Show only the keys that differ.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Two scenarios or plans side by side, differences highlighted."""
    from planner.app.compare import compare_files, print_comparison

    cmp = _run(lambda: compare_files(a, b, fixed=False if solve else None))
    if as_json:
        typer.echo(json.dumps(_json_safe(cmp.to_json()), indent=2))
    else:
        print_comparison(cmp, only_differences=differences)


def register(app: typer.Typer) -> None:
    """Add `whatif` and `compare` to the main app."""
    app.command()(whatif)
    app.command()(compare)
