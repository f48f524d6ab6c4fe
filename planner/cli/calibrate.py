"""`vlmplan calibrate run` and `vlmplan calibrate fit` (registered on the main app by ``register``).

``calibrate run`` (needs the optional extra ``calibrate``, which brings torch) runs
``planner/calibrate/device/microbench.py`` section by section on this machine's GPU (all-reduce too when it sees
two or more GPUs) and ``vit_shapes.py`` / ``quant_ops.py`` (about 30 s more), then ``planner.calibrate.fit`` on the
results, and writes a calibration YAML the planner uses with
``--calibration FILE`` (or, copied to ``catalogs/calibration/vllm-0.33-<gpu>.yaml``, by GPU name).

``calibrate fit --bench FILE...`` fits the engine-level ``engine_step_overhead_ms`` from JSON files written by
``vllm bench serve --save-result``. The format is the ``result_json`` of ``vllm/benchmarks/serve.py`` in the vLLM
repository (vllm-project/vllm; checked against the file's ``benchmark()`` result dict and ``main``'s setup
fields). Fields used (all written without ``--save-detailed``):

* ``completed``, ``total_input_tokens``, ``total_output_tokens``: mean prompt and output length per request;
* ``mean_tpot_ms`` (time per output token after the first, averaged over requests): what is fitted;
* ``mean_ttft_ms``: with ``request_throughput``, the mean time in the system for Little's law;
* ``max_concurrency`` and ``request_rate`` (``"inf"`` when requests are sent at once): the running batch is
  ``max_concurrency`` for a capped run sent at once, else ``request_throughput x (TTFT + TPOT x (out - 1))``;
* ``model_id``: compared with ``--model`` (a warning when they differ).

Not used: ``median_*``/``p99_*`` (the fit is of means), ``itls``/``ttfts``/``input_lens``/``output_lens``
(only with ``--save-detailed``), ``output_throughput``, ``duration``.

The fit: predicted mean TPOT = GPU decode step at that batch and mean context (+ the run's prefills spread over
the steps) + ``engine_per_seq_overhead_ms`` x batch + ``engine_step_overhead_ms``, solved for the last. With
several runs of different batch sizes it also prints the slope of measured on predicted GPU time (an efficiency
scale; 1 = the speed model's GPU times agree), which is reported, not written (the calibration schema has no
such constant).
"""

import datetime as _dt
import importlib
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from planner.cli.common import ForceOpt, check_out_file, write_file
from planner.cli.common import fail as _fail
from planner.cli.common import run_or_exit as _run


def fit_bench(bench: list[Path], model: str | None, gpu: str | None, tp: int | None, pp: int | None,
              precision: str | None, kv_cache_dtype: str | None, calibration: Path | None,
              fitted_on: str | None = None) -> tuple[Any, Any, list[str], Any]:
    """(BenchRefit, calibration with the fitted terms, warnings, EngineFit) for the given bench files. A setting
    not given comes from the runs' ``vlmplan_*`` metadata (verify.sh's), else the defaults below."""
    from planner.app.estimate_request import EstimateRequest, build_config
    from planner.calibrate import fit as F
    from planner.calibrate.fit.bench_refit import calibration_with_refit, read_bench_info, refit
    from planner.catalog.loader import load_calibration, load_calibration_file, load_engine
    from planner.spec.config import resolve

    infos = [read_bench_info(p) for p in bench]

    def meta(key: str) -> str | None:
        values = {i.meta.get(f"vlmplan_{key}") for i in infos}
        return values.pop() if len(values) == 1 else None

    def num(key: str) -> int | None:
        v = meta(key)
        return int(v) if v is not None and v.isdigit() and 0 < int(v) < 1 << 30 else None

    cfg = resolve(build_config(EstimateRequest(
        model=model or meta("model") or "Qwen/Qwen2.5-VL-7B-Instruct", gpu=gpu or meta("gpu") or "H100-SXM-80GB",
        tp=tp or num("tp") or 1, pp=pp or num("pp") or 1, precision=precision or meta("precision") or "bf16",
        kv_cache_dtype=kv_cache_dtype or meta("kv_cache_dtype") or "auto", max_num_seqs=num("max_num_seqs"),
        max_num_batched_tokens=num("max_num_batched_tokens"), max_model_len=num("max_model_len"),
        limit_images=max((len(i.images) and 1) * max(1, round(i.images_per_request)) for i in infos) or None)),
        load_engine())
    cal = load_calibration_file(calibration) if calibration else load_calibration(cfg.gpu.name)
    runs = [i.run for i in infos]
    warnings = [f"{r.path}: model_id '{r.model_id}' differs from --model '{cfg.model.name}'"
                for r in runs if r.model_id and r.model_id.rstrip("/").split("/")[-1].lower()
                not in cfg.model.name.lower()]
    result = refit(cfg, cal, infos)
    day = fitted_on or _dt.date.today().isoformat()
    new = calibration_with_refit(cal, result, [str(p) for p in bench], day)
    return result, new, warnings, F.fit_engine_overhead(cfg, cal, runs)


EXTRA_SCRIPTS = ("vit_shapes", "quant_ops")
"""Scripts run after microbench.py (vision-tower shapes, L2, kernel kinds; the reference's fp8 quantisation)."""


def _progress_sections(sections: list[str], out_dir: Path, budget_s: float | None) -> dict[str, Any]:
    """Run microbench.py one section at a time, then ``EXTRA_SCRIPTS``, under a progress bar; merge the
    microbench sections into one dict (the extra scripts' files are left in ``out_dir`` as <name>.json)."""
    from rich.progress import Progress

    microbench: Any = importlib.import_module("planner.calibrate.device.microbench")  # torch-only, not type-checked

    merged: dict[str, Any] = {}
    with Progress(transient=False) as bar:
        task = bar.add_task("microbenchmarks", total=len(sections) + len(EXTRA_SCRIPTS))
        for script in EXTRA_SCRIPTS:
            bar.update(task, description=f"{script}")
            mod: Any = importlib.import_module(f"planner.calibrate.device.{script}")
            mod.main(["--out", str(out_dir / f"{script}.json")])
            bar.advance(task)
        for name in sections:
            bar.update(task, description=f"microbench: {name}")
            path = out_dir / f"{name}.json"
            args = ["--only", name, "--out", str(path)]
            if budget_s:
                args += ["--time-budget-s", str(budget_s / len(sections))]
            microbench.main(args)
            data = json.loads(path.read_text())
            merged.setdefault("provenance", data.get("provenance"))
            if name in data:
                merged[name] = data[name]
            bar.advance(task)
    return merged


def calibrate_fit(
    bench: Annotated[list[Path], typer.Option(
        "--bench", help="JSON from 'vllm bench serve --save-result' (verify.sh's); repeatable.")],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model the runs served (default: the runs' vlmplan metadata, else "
        "Qwen/Qwen2.5-VL-7B-Instruct).")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", "-g", help="GPU the runs used (default: metadata, else "
                                            "H100-SXM-80GB).")] = None,
    tp: Annotated[int | None, typer.Option(help="GPUs in tensor parallel (default: metadata, else 1).")] = None,
    pp: Annotated[int | None, typer.Option(help="Pipeline-parallel stages (default: metadata, else 1).")] = None,
    precision: Annotated[str | None, typer.Option(
        help="Weights: bf16, fp16, fp8, int8, int4 (default: metadata, else bf16).")] = None,
    kv_cache_dtype: Annotated[str | None, typer.Option(help="auto or fp8 (default: metadata, else auto).")] = None,
    calibration: Annotated[Path | None, typer.Option(
        help="Base calibration YAML (default: the GPU's).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Write the calibration YAML with the fitted terms here.")] = None,
    force: ForceOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Fit the engine's per-step and per-sequence terms and the front-end cost from 'vllm bench serve' files."""
    from planner.calibrate.fit import calibration_yaml

    if out is not None:
        check_out_file(out, force)
    result, new, warnings, engine = _run(lambda: fit_bench(bench, model, gpu, tp, pp, precision, kv_cache_dtype,
                                                           calibration))
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    if out is not None:
        write_file(out, calibration_yaml(new, "engine and front-end terms fitted by: vlmplan calibrate fit "
                                         + " ".join(f"--bench {b}" for b in bench)), force)
    if as_json:
        typer.echo(json.dumps({"engine_step_overhead_ms": result.value("engine_step_overhead_ms"),
                               "mape_pct": result.tpot_mape_pct, "ttft_mape_pct": result.ttft_mape_pct,
                               "efficiency_scale": engine.scale, "terms": [t.to_json() for t in result.terms],
                               "notes": result.notes, "runs": result.rows, "out": str(out) if out else None},
                              indent=2))
        return
    for row in result.rows:
        typer.echo(f"batch {row['concurrency']:7.1f}  prompt {row['prompt_tokens']:7.0f}  output "
                   f"{row['output_tokens']:6.0f}  TPOT measured {row['measured_tpot_ms']:7.2f} ms (GPU "
                   f"{row['gpu_ms']:7.2f}) predicted {row['predicted_tpot_ms']:7.2f}  TTFT measured "
                   f"{row['measured_ttft_ms']:8.1f} ms (engine {row['engine_ttft_ms']:8.1f}) predicted "
                   f"{row['predicted_ttft_ms']:8.1f}")
    for t in result.terms:
        state = "fitted" if t.fitted else "kept  "
        typer.echo(f"{state} {t.name:<38} {t.value:10.4f} (was {t.previous:.4f})")
    typer.echo(f"fit error over {len(result.rows)} run(s): mean TPOT MAPE {result.tpot_mape_pct:.1f}%"
               + (f", mean TTFT MAPE {result.ttft_mape_pct:.1f}%" if result.ttft_mape_pct is not None else ""))
    if engine.scale is not None:
        typer.echo(f"efficiency check: measured GPU time / predicted = {engine.scale:.2f} (slope; 1 = agree)")
    for note in result.notes:
        typer.echo(f"note: {note}")
    if out is not None:
        typer.echo(f"wrote {out}")


def calibrate_run(
    out: Annotated[Path | None, typer.Option(
        help="Calibration YAML to write (default: vllm-0.33-<gpu>.yaml here).")] = None,
    gpu: Annotated[str | None, typer.Option(
        "--gpu", "-g", help="Catalog GPU name (default: from nvidia-smi).")] = None,
    keep_json: Annotated[Path | None, typer.Option(
        help="Also keep the raw microbenchmark JSON here (vit_shapes.json and quant_ops.json beside it).")] = None,
    time_budget_s: Annotated[float | None, typer.Option(help="Rough time budget for all microbenchmarks.")] = None,
    force: ForceOpt = False,
) -> None:
    """Run the microbenchmarks on this machine's GPU and fit a calibration file (needs torch)."""
    if out is not None:
        check_out_file(out, force)
    if importlib.util.find_spec("torch") is None:
        _fail("calibrate run needs torch: pip install 'vlmplan[calibrate]'")
    import torch

    if not torch.cuda.is_available():
        _fail("calibrate run needs a CUDA GPU (torch.cuda.is_available() is False)")
    from planner.calibrate import fit as F

    microbench: Any = importlib.import_module("planner.calibrate.device.microbench")
    sections = [s for s in microbench.SECTIONS if s != "allreduce"]
    if torch.cuda.device_count() >= 2:
        sections.append("allreduce")
    raw = keep_json or Path(tempfile.mkdtemp()) / "microbench.json"
    with tempfile.TemporaryDirectory() as tmp:
        data = _progress_sections(sections, Path(tmp), time_budget_s)
        for script in EXTRA_SCRIPTS:
            (raw.parent / f"{script}.json").write_bytes((Path(tmp) / f"{script}.json").read_bytes())
    raw.write_text(json.dumps(data))
    cal = _run(lambda: F.fit_files(raw, raw if "allreduce" in data else None, gpu,
                                   vit_shapes=[raw.parent / "vit_shapes.json"],
                                   quant_ops=raw.parent / "quant_ops.json"))
    from planner.catalog import DEFAULT_ENGINE

    path = out or Path(f"{DEFAULT_ENGINE}-{cal.gpu.lower()}.yaml")
    write_file(path, F.calibration_yaml(cal, f"Fitted by: vlmplan calibrate run (microbench JSON: {raw})"), force)
    typer.echo(f"wrote {path} (use it with --calibration {path})")


def calibrate_check(
    bench: Annotated[Path, typer.Option("--bench", help="JSON from 'vllm bench serve --save-result' (verify.sh's).")],
    plan: Annotated[Path, typer.Option(
        "--plan", help="deployment.json beside verify.sh, or a plan.yaml.")],
    workload: Annotated[str | None, typer.Option(help="Workload to check, when the plan has several.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Measured against planned percentiles; exit 0 when every planned SLO holds, 1 when one does not."""
    from planner.calibrate.bench_check import check_bench, format_check, load_deployment

    result = _run(lambda: check_bench(bench, load_deployment(plan, workload)))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        for line in format_check(result):
            typer.echo(line)
    if not result.passed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``calibrate`` command group to ``app``."""
    cal_app = typer.Typer(no_args_is_help=True, help="Calibrate the speed model: microbenchmarks or vLLM bench runs.")
    app.add_typer(cal_app, name="calibrate")
    cal_app.command("fit")(calibrate_fit)
    cal_app.command("run")(calibrate_run)
    cal_app.command("check")(calibrate_check)
