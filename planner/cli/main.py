"""`vlmplan` command line: parse, call the library, print. No decisions here."""

# No `from __future__ import annotations` in the command modules: typer would eval every option's string
# annotation at each start (~30 ms of a cold `vlmplan solve`).

import gc
from pathlib import Path
from typing import Annotated, Any

import typer

from planner.cli.common import ForceOpt, OneLineErrorsGroup, check_out_folder, stage_outputs
from planner.cli.common import fail as _fail
from planner.cli.common import print_json as _print_json
from planner.cli.common import run_or_exit as _run

app = typer.Typer(
    cls=OneLineErrorsGroup,
    add_completion=False,
    no_args_is_help=True,
    help="Plan VLM/LLM deployments: memory, latency, cost and launch configs.",
    pretty_exceptions_enable=False,
)
catalog_app = typer.Typer(no_args_is_help=True, help="List the shipped GPU and model catalogs.")
app.add_typer(catalog_app, name="catalog")





ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Catalog id (Qwen/Qwen2.5-VL-7B-Instruct) or a local config.json / folder.")]
GpuOpt = Annotated[str, typer.Option("--gpu", "-g", help="GPU name or alias (H100, A100-40GB, L40S, ...).")]
SpeculativeOpt = Annotated[str | None, typer.Option("--speculative", help="Speculative decoding: auto (solve: the model's trained draft where a TPOT/e2e SLO is set; estimate: off), off, or ngram, eagle, eagle3, mtp (that method only; catalogs/speculative).")]
SharedPrefixOpt = Annotated[int | None, typer.Option("--shared-prefix", help="Text tokens every prompt starts with, the same for all requests (a system prompt, few-shot examples): part of the prompt, computed once with prefix caching on.")]
RepeatedImagesOpt = Annotated[float | None, typer.Option("--repeated-images", help="Share of requests (0-1) that ask again about an image already sent: with prefix caching on its tokens hit the cache and the vision encoder skips it.")]
AcceptanceOpt = Annotated[float | None, typer.Option("--acceptance-rate", help="Per-token draft acceptance of your traffic, in (0, 1) (default: the method's, catalogs/speculative; read yours from vLLM's spec-decode metrics).")]


@app.command()
def estimate(
    model: ModelOpt = "Qwen/Qwen2.5-VL-7B-Instruct",
    gpu: GpuOpt = "H100-SXM-80GB",
    tp: Annotated[int, typer.Option(help="GPUs in tensor parallel.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel stages.")] = 1,
    precision: Annotated[str, typer.Option(help="Weights: bf16, fp16, fp8, int8 (W8A8), int4 (W4A16).")] = "bf16",
    kv_cache_dtype: Annotated[str, typer.Option(help="auto (model dtype) or fp8.")] = "auto",
    max_model_len: Annotated[int | None, typer.Option(help="Context cap; default: the model's maximum.")] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option(help="Fraction of GPU memory vLLM may use.")] = None,
    max_num_seqs: Annotated[int | None, typer.Option(help="Engine batch cap; default: vLLM's for the GPU.")] = None,
    max_num_batched_tokens: Annotated[int | None, typer.Option(help="Tokens per engine step.")] = None,
    mm_encoder_tp_mode: Annotated[str, typer.Option(help="weights (shard the ViT) or data (replicate it).")] = "weights",
    mm_processor_kwargs: Annotated[str | None, typer.Option(help="JSON processor options, e.g. '{\"max_pixels\": 1003520}'.")] = None,
    limit_images: Annotated[int | None, typer.Option("--limit-images", help="Images per prompt vLLM allows (profiling).")] = None,
    batch: Annotated[int | None, typer.Option(help="Sequences in the reported decode step.")] = None,
    context: Annotated[int | None, typer.Option(help="Tokens each sequence holds in that step.")] = None,
    prompt_tokens: Annotated[int, typer.Option(help="Text tokens of the prompt.")] = 256,
    output_tokens: Annotated[int, typer.Option(help="Generated tokens.")] = 256,
    image: Annotated[list[str] | None, typer.Option(help="Image size WxH; repeat for several images.")] = None,
    no_image: Annotated[bool, typer.Option("--no-image", help="Text-only request.")] = False,
    concurrency: Annotated[int | None, typer.Option(help="Closed-loop clients.")] = None,
    rate: Annotated[float | None, typer.Option(help="Poisson arrivals, requests/s.")] = None,
    workload: Annotated[str | None, typer.Option(help="Workload YAML file or preset (document-vqa, visual-reasoning, captioning, chat).")] = None,
    slo: Annotated[list[str] | None, typer.Option(help="SLO to check under load, e.g. ttft_p95=500ms; repeatable.")] = None,
    requests: Annotated[int | None, typer.Option(help="Requests to simulate (default: enough for stable p99).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the simulated workload.")] = 0,
    calibration: Annotated[Path | None, typer.Option(help="Calibration YAML to use instead of the GPU's.")] = None,
    speculative: SpeculativeOpt = None,
    acceptance_rate: AcceptanceOpt = None,
    explain: Annotated[bool, typer.Option(help="Per-op breakdown: time, FLOPs, bytes, bound.")] = False,
    prefix_caching: Annotated[str, typer.Option("--prefix-caching", help="on (vLLM's default) or off.")] = "on",
    shared_prefix: SharedPrefixOpt = None,
    repeated_images: RepeatedImagesOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Memory and latency of one configuration (exit 3 when it does not fit)."""
    from planner.app import report
    from planner.app.estimate_request import EstimateRequest, run_estimate

    req = EstimateRequest(
        model=model, gpu=gpu, tp=tp, pp=pp, precision=precision, kv_cache_dtype=kv_cache_dtype,
        max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens, mm_encoder_tp_mode=mm_encoder_tp_mode,
        mm_processor_kwargs=mm_processor_kwargs, limit_images=limit_images, batch=batch, context=context,
        prompt_tokens=prompt_tokens, output_tokens=output_tokens, images=image, no_image=no_image,
        concurrency=concurrency, rate=rate, calibration=calibration, workload=workload, slo=slo,
        requests=requests, seed=seed, speculative=speculative, acceptance_rate=acceptance_rate,
        prefix_caching=prefix_caching, shared_prefix=shared_prefix, repeated_images=repeated_images,
    )
    est = _run(lambda: run_estimate(req))
    if as_json:
        out = est.to_json()
        if explain:
            out["explain"] = report.explain_json(est)
        _print_json(out)
    else:
        report.print_estimate(est, explain=explain)
    if not est.memory.fits:  # an answer, like an infeasible plan: exit 3 (the JSON or the report says why)
        raise typer.Exit(code=3)


@app.command()
def solve(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Catalog id or local config.json (default: the scenario's, else Qwen/Qwen2.5-VL-7B-Instruct).")] = None,
    scenario: Annotated[Path | None, typer.Option(help="Scenario YAML: one workload or a fleet ('workloads:') sharing the budget; flags override its keys.")] = None,
    workload: Annotated[str | None, typer.Option(help="Workload YAML file or preset (document-vqa, visual-reasoning, captioning, chat).")] = None,
    slo: Annotated[list[str] | None, typer.Option(help="SLO, e.g. ttft_p95=500ms, tpot_p99=40ms, e2e_p95=5s; repeatable.")] = None,
    budget: Annotated[str | None, typer.Option(help="4xA100, A100:4, 8xH100,16xL40S, $40/h, or both.")] = None,
    gpus: Annotated[str | None, typer.Option(help="Restrict to these GPU types (comma-separated).")] = None,
    calibrated_only: Annotated[bool, typer.Option("--calibrated-only", help="Only GPUs whose speed model is calibrated (see catalogs/calibration/validation_status.yaml).")] = False,
    uncalibrated_margin: Annotated[float | None, typer.Option(help="On uncalibrated GPUs the SLO limits are multiplied by 1 - this (default 0.2, from catalogs/calibration/validation_status.yaml; 0 turns it off).")] = None,
    precisions: Annotated[str | None, typer.Option(help="Restrict weight precisions (bf16,fp8,int8,int4).")] = None,
    kv_cache_dtypes: Annotated[str | None, typer.Option(help="Restrict KV-cache dtypes (auto,fp8).")] = None,
    price: Annotated[list[str] | None, typer.Option(help="Price override GPU=USD_PER_HOUR; repeatable.")] = None,
    prices_file: Annotated[Path | None, typer.Option(help="YAML/JSON file {GPU: USD per GPU-hour}.")] = None,
    objective: Annotated[str, typer.Option(help="cost, gpus or latency.")] = "cost",
    rate: Annotated[float | None, typer.Option(help="Poisson arrivals, requests/s (served in full).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Closed-loop clients.")] = None,
    prompt_tokens: Annotated[int | None, typer.Option(help="Text tokens per request.")] = None,
    output_tokens: Annotated[int | None, typer.Option(help="Generated tokens per request.")] = None,
    image: Annotated[list[str] | None, typer.Option(help="Image size WxH; repeatable.")] = None,
    images_per_request: Annotated[int | None, typer.Option(help="Images per request.")] = None,
    no_image: Annotated[bool, typer.Option("--no-image", help="Text-only requests.")] = False,
    simulate: Annotated[bool, typer.Option("--simulate/--no-simulate", help="Re-check the chosen deployments with the simulator (default on).")] = True,
    max_load: Annotated[float | None, typer.Option(help="Highest offered load per replica as a fraction of its saturation throughput (default 0.85).")] = None,
    max_model_len: Annotated[str | None, typer.Option("--max-model-len", help="Context of every deployment: 'workload' (default: its longest request), 'model' (the model's own context) or a number of tokens.")] = None,
    topologies: Annotated[str | None, typer.Option(help="Topologies to search: aggregated (default), pd (prefill and decode pools, KV pulled over NIXL), e.g. aggregated,pd.")] = None,
    frontend_queue: Annotated[bool, typer.Option("--frontend-queue/--no-frontend-queue", help="Model the API servers as a queue and choose --api-server-count per replica within the node's CPUs (default on; off: one API server whose work is only a delay, to compare).")] = True,
    speculative: SpeculativeOpt = None,
    acceptance_rate: AcceptanceOpt = None,
    prefix_caching: Annotated[str, typer.Option("--prefix-caching", help="auto (on: vLLM's default, reused prefixes computed once), on, or off (every prompt computed in full).")] = "auto",
    shared_prefix: SharedPrefixOpt = None,
    repeated_images: RepeatedImagesOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write DIR/plan.yaml (and launch configs with --target).")] = None,
    target: Annotated[list[str] | None, typer.Option(help="vllm, nim, k8s-vllm, k8s-nim; repeatable (needs --out).")] = None,
    force: ForceOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """The cheapest deployment that meets the SLOs (exit 3 when none does)."""
    if target and out is None:
        _fail("--target writes launch configs into a folder: give --out DIR too")
    if out is not None:
        check_out_folder(out)
        if (out / "plan.yaml").exists() and not force:
            _fail(f"--out {out} already holds {out / 'plan.yaml'}; pass --force to replace it")
    from planner.app import report
    from planner.app.solve_plan import to_plan
    from planner.app.solve_request import SolveInput, build_request_models
    from planner.solver import solve as run_solve

    inp = SolveInput(model=model, scenario=scenario, workload=workload, verify=simulate, slo=slo, budget=budget,
                     gpus=gpus, calibrated_only=calibrated_only, precisions=precisions,
                     kv_cache_dtypes=kv_cache_dtypes, price=price,
                     prices_file=prices_file, objective=objective, rate=rate, concurrency=concurrency,
                     prompt_tokens=prompt_tokens, output_tokens=output_tokens, images=image,
                     images_per_request=images_per_request, no_image=no_image, max_load=max_load,
                     max_model_len=max_model_len, uncalibrated_margin=uncalibrated_margin, topologies=topologies,
                     frontend_queue=frontend_queue, speculative=speculative, acceptance_rate=acceptance_rate,
                     prefix_caching=prefix_caching, shared_prefix=shared_prefix, repeated_images=repeated_images)
    req, notes, model_args = _run(lambda: build_request_models(inp))
    sol = _run(lambda: run_solve(req))
    plan = _run(lambda: _plan_of(to_plan, sol, req, model_args, notes))
    refused: dict[str, str] = {}
    if out is not None and plan.status != "infeasible":
        def render(folder: Path) -> list[Path]:  # plan.yaml and every target that can be written
            plan.save(folder / "plan.yaml")
            return [folder / "plan.yaml", *(_emit(plan, folder, target, refused) if target else _verify(plan, folder))]

        stage_outputs(out, force, render)
    if as_json:
        _print_json(plan.model_dump(mode="json"))
    else:
        report.print_plan(plan, req, sol)
    if plan.status == "infeasible":
        raise typer.Exit(code=3)
    _refused_exit(refused, [t for t in dict.fromkeys(target or []) if t not in refused])


def _plan_of(to_plan: Any, *args: Any) -> Any:
    """The solution as a Plan; a value the plan schema refuses (e.g. a local model path with a space) is an error
    line, not a traceback."""
    from pydantic import ValidationError

    from planner.core.errors import RequestError
    from planner.core.inputs import first_problem

    try:
        return to_plan(*args)
    except ValidationError as exc:
        loc, _, msg = first_problem(exc)
        raise RequestError(f"cannot write a plan: {loc}: {msg}") from None


def _emit(plan: Any, out: Path, targets: list[str], refused: dict[str, str]) -> list[Path]:
    """Every target that can be written; the refused ones go into ``refused`` (and INCOMPLETE.txt)."""
    from planner.emit import emit_each

    written, why = emit_each(plan, out, targets)
    refused.update(why)
    return written


def _verify(plan: Any, out: Path) -> list[Path]:
    from planner.emit import emit_verify

    return emit_verify(plan, out)


def _refused_exit(refused: dict[str, str], written: list[str]) -> None:
    if refused:
        done = ", ".join(written) or "nothing else"
        _fail("; ".join(f"target {t} refused: {r}" for t, r in refused.items())
             + f" (wrote {done}; see INCOMPLETE.txt)")


@app.command()
def emit(
    plan_file: Annotated[Path, typer.Argument(help="plan.yaml written by 'vlmplan solve --out DIR'.")],
    target: Annotated[list[str], typer.Option(help="vllm, nim, k8s-vllm, k8s-nim; repeatable.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: the plan's folder).")] = None,
    force: ForceOpt = False,
) -> None:
    """Write launch configs from a saved plan (existing files are kept unless --force)."""
    from planner.plan import Plan

    plan = _run(lambda: Plan.load(plan_file))
    refused: dict[str, str] = {}
    files = stage_outputs(out or plan_file.parent, force, lambda folder: _emit(plan, folder, target, refused))
    for f in files:
        typer.echo(str(f))
    _refused_exit(refused, [t for t in dict.fromkeys(target) if t not in refused])


@catalog_app.command("gpus")
def catalog_gpus(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """GPUs with memory, bandwidth, throughput and price."""
    from planner.app import report

    report.print_gpus(as_json)


@catalog_app.command("models")
def catalog_models(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Models with parameters, KV bytes per token and visual-token rule."""
    from planner.app import report

    report.print_models(as_json)


from planner.cli.whatif import register as _register_whatif  # noqa: E402  (needs `app` defined above)

_register_whatif(app)
from planner.cli.calibrate import register as _register_calibrate  # noqa: E402

_register_calibrate(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure is one ``error:`` line on stderr (see ``OneLineErrorsGroup``).

    A command's objects are mostly long-lived (modules, catalogs, step-cost tables), so the collector's young
    generation is collected every 20,000 allocations instead of 700 (the collections took ~0.04 s of a default
    solve, 135 of them). The process ends with the command: its objects are frozen out of the collector first,
    so the interpreter's shutdown frees them without tracing the whole heap again (~0.08 s)."""
    gc.set_threshold(20_000, *gc.get_threshold()[1:])
    try:
        app(args=argv)
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
