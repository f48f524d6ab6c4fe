"""`vlmplan solve` input -> SolveRequest (``planner.app.solve_plan`` turns the Solution into a Plan)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from planner.app.speculation import speculative_args
from planner.catalog.engine_support import require_supported
from planner.catalog.loader import calibration_status, load_gpus
from planner.catalog.schema import GpuSpec, KvCacheDtype, Precision
from planner.core.errors import RequestError
from planner.solver import Objective, SolveRequest, default_gpus
from planner.spec.lookup import parse_prices, resolve_model
from planner.spec.slo import Budget, Slo, parse_budget, parse_slos
from planner.spec.workload import DEFAULT_WORKLOAD, ImageSize, Workload, parse_image_size, with_prefix
from planner.spec.workload_yaml import load_workload

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_RATE_PER_S = 5.0
DEFAULT_SLOS = ["ttft_p95=500ms"]


class SolveInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None
    """None: the scenario's model, else ``DEFAULT_MODEL``."""
    scenario: Path | None = None
    """Scenario file (planner.app.scenario format; ``workloads`` for a fleet). Flags override its keys."""
    workload: str | None = None
    """Workload file or preset (one workload); --rate / --concurrency override its arrivals."""
    verify: bool = True
    """Re-check the chosen deployments with the simulator."""
    slo: list[str] | None = None
    budget: str | None = None
    gpus: str | None = None
    calibrated_only: bool = False
    """Search only GPUs with a calibration (kernel microbenchmarks or real serving)."""
    precisions: str | None = None
    kv_cache_dtypes: str | None = None
    price: list[str] | None = None
    prices_file: Path | None = None
    objective: str = "cost"
    rate: float | None = None
    concurrency: int | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    images: list[str] | None = None
    images_per_request: int | None = None
    no_image: bool = False
    uncalibrated_margin: float | None = None
    """Margin on the SLOs of uncalibrated GPUs (None: the catalog's default)."""
    max_model_len: str | None = None
    """'workload' (default: the longest planned request), 'model' (the model's context) or a token count."""
    max_load: float | None = None
    """Ceiling on a replica's offered load as a fraction of its saturation throughput (None: the scenario's, else
    the solver's default)."""
    topologies: str | None = None
    """Comma-separated topologies to search ('aggregated', 'pd'); None: aggregated only."""
    frontend_queue: bool = True
    """Model the API servers as a queue and decide their count (False: one API server, its work a delay only)."""
    speculative: str | None = None
    """--speculative: auto (default), off, or a method searched alone."""
    acceptance_rate: float | None = None
    """--acceptance-rate: per-token draft acceptance of the workload (None: the method's default)."""
    prefix_caching: str | None = None
    """--prefix-caching: auto (default: on, vLLM's default), on or off."""
    shared_prefix: int | None = None
    """--shared-prefix: text tokens every prompt starts with (part of --prompt-tokens)."""
    repeated_images: float | None = None
    """--repeated-images: share of requests that ask again about an image already sent."""


def _max_load(value: float | None) -> float:
    from planner.solver import MAX_LOAD

    if value is None:
        return MAX_LOAD
    if not 0 < value <= 1:
        raise RequestError(f"--max-load {value:g}: give a fraction of the saturation throughput in (0, 1], e.g. 0.85")
    return float(value)


def _split(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def _with_load(wl: Workload, rate: float | None, concurrency: int | None, notes: list[str]) -> Workload:
    """``wl`` with --rate / --concurrency applied; a workload without arrivals (``single``) gets the default
    Poisson rate, said in ``notes``."""
    if rate is not None:
        return wl.model_copy(update={"arrival": "poisson", "rate_per_s": rate, "concurrency": None, "trace_s": None})
    if concurrency is not None:
        return wl.model_copy(update={"arrival": "closed", "concurrency": concurrency, "rate_per_s": None,
                                     "trace_s": None})
    if wl.arrival == "single":
        notes.append(f"workload '{wl.name}' gives no arrivals: sized for Poisson {DEFAULT_RATE_PER_S:g} requests/s "
                     f"(set rate_per_s or concurrency)")
        return wl.model_copy(update={"arrival": "poisson", "rate_per_s": DEFAULT_RATE_PER_S})
    return wl


def _check_flags(inp: SolveInput) -> None:
    if inp.rate is not None and inp.concurrency is not None:
        raise RequestError("give --rate or --concurrency, not both")
    if inp.no_image and (inp.images or inp.images_per_request):
        raise RequestError("--no-image excludes --image and --images-per-request")
    for flag, v in (("--rate", inp.rate), ("--concurrency", inp.concurrency),
                    ("--output-tokens", inp.output_tokens), ("--images-per-request", inp.images_per_request)):
        if v is not None and v <= 0:
            raise RequestError(f"{flag} must be positive (got {v})")
    if inp.prompt_tokens is not None and inp.prompt_tokens < 0:
        raise RequestError(f"--prompt-tokens must be >= 0 (got {inp.prompt_tokens})")


def build_workload(inp: SolveInput, is_vlm: bool) -> tuple[Workload, bool]:
    """The workload from the flags; True when the embedded default filled it in."""
    used_default = all(v is None for v in (inp.rate, inp.concurrency, inp.prompt_tokens, inp.output_tokens,
                                           inp.images, inp.images_per_request))
    _check_flags(inp)
    if inp.images:
        sizes = [ImageSize(width=w, height=h) for w, h in map(parse_image_size, inp.images)]
    elif inp.no_image or not is_vlm:
        sizes = []
    else:
        sizes = list(DEFAULT_WORKLOAD.images)
    if inp.images_per_request is not None and sizes:
        sizes = [sizes[i % len(sizes)] for i in range(inp.images_per_request)]
    if sizes and not is_vlm:
        raise RequestError("this model takes no images; drop --image")
    if inp.prompt_tokens == 0 and not sizes:
        raise RequestError("--prompt-tokens 0 needs an image: a request must send some input (0 text tokens is "
                           "for image-only requests, e.g. captioning)")
    arrival = "closed" if inp.concurrency is not None else "poisson"
    rate = inp.rate if inp.rate is not None else (None if inp.concurrency else DEFAULT_RATE_PER_S)
    wl = Workload(
        name="default",
        prompt_tokens=DEFAULT_WORKLOAD.prompt_tokens if inp.prompt_tokens is None else inp.prompt_tokens,
        output_tokens=DEFAULT_WORKLOAD.output_tokens if inp.output_tokens is None else inp.output_tokens,
        images=sizes,
        arrival=arrival,  # type: ignore[arg-type]
        rate_per_s=rate,
        concurrency=inp.concurrency,
    )
    return with_prefix(wl, inp.shared_prefix, inp.repeated_images), used_default


def _search_space(inp: SolveInput) -> tuple[list, list[str], list[str]]:
    """Allowed GPUs (with prices), precisions and KV-cache dtypes from the flags."""
    prices = parse_prices(inp.price, inp.prices_file)
    gpus = default_gpus(prices)
    if inp.gpus:
        allowed = {load_gpus().get(n).name for n in _split(inp.gpus)}
        gpus = [g for g in gpus if g.name in allowed]
    if inp.calibrated_only:
        gpus = [g for g in gpus if calibration_status(g.name)[0] != "uncalibrated"]
        if not gpus:
            raise RequestError("--calibrated-only leaves no GPU: the calibrated ones are "
                               + ", ".join(g.name for g in default_gpus(prices)
                                           if calibration_status(g.name)[0] != "uncalibrated"))
    precisions = _split(inp.precisions) or ["bf16", "fp8", "int8", "int4"]
    for p in precisions:
        if p not in get_args(Precision):
            raise RequestError(f"precision '{p}' is not one of {', '.join(get_args(Precision))}")
    kvs = _split(inp.kv_cache_dtypes) or ["auto", "fp8"]
    for k in kvs:
        if k not in get_args(KvCacheDtype):
            raise RequestError(f"kv-cache dtype '{k}' is not one of auto, fp8")
    if inp.objective not in get_args(Objective):
        raise RequestError(f"objective '{inp.objective}' is not one of cost, gpus, latency")
    return gpus, precisions, kvs


def _slo_notes(slos: list[Slo], notes: list[str]) -> None:
    for s in slos:
        if s.implicit_metric:
            note = f"'{s.stat}={s.limit_ms:g}ms' binds to TTFT (write tpot_{s.stat}=... for time per token)"
            if note not in notes:
                notes.append(note)


def build_request(inp: SolveInput) -> tuple[SolveRequest, list[str]]:
    """The solver's request and notes on defaults the user should see."""
    req, notes, _ = build_request_models(inp)
    return req, notes


def build_request_models(inp: SolveInput) -> tuple[SolveRequest, list[str], dict[str, str]]:
    """The solver's request, notes on defaults, and the model each workload names (as the user wrote it)."""
    if inp.scenario is not None:
        return _scenario_request(inp)
    notes: list[str] = []
    model_arg = inp.model or DEFAULT_MODEL
    model = resolve_model(model_arg)
    require_supported(model)
    slos = parse_slos(inp.slo or DEFAULT_SLOS)
    if inp.slo is None:
        notes.append(f"no --slo given: using {', '.join(DEFAULT_SLOS)}")
    _slo_notes(slos, notes)
    budget = parse_budget(inp.budget)
    gpus, precisions, kvs = _search_space(inp)
    _check_budget_meets_filter(budget, gpus)
    if inp.workload is not None:
        _check_flags(inp)
        if any(v is not None for v in (inp.prompt_tokens, inp.output_tokens, inp.images, inp.images_per_request)) \
                or inp.no_image:
            raise RequestError("--workload gives the request shape: drop --prompt-tokens/--output-tokens/--image/"
                               "--no-image")
        workload = _with_load(load_workload(inp.workload), inp.rate, inp.concurrency, notes)
        workload = with_prefix(workload, inp.shared_prefix, inp.repeated_images)
        if workload.images and model.vision is None:
            raise RequestError(f"workload '{inp.workload}' sends images but {model.name} is a text model")
    else:
        workload, used_default = build_workload(inp, model.vision is not None)
        if used_default:
            imgs = ", ".join(f"{i.width}x{i.height}" for i in workload.images) or "no image"
            notes.append(f"no workload flags: using the embedded default ({workload.prompt_tokens} text tokens + "
                         f"{imgs} in, {workload.output_tokens} out, Poisson {workload.rate_per_s:g} requests/s)")
    req = SolveRequest(model=model, workloads=[workload], slos=slos, budget=budget, gpus=gpus,
                       precisions=precisions, kv_cache_dtypes=kvs, objective=inp.objective,  # type: ignore[arg-type]
                       verify=inp.verify, max_load=_max_load(inp.max_load),
                       max_model_len=_max_model_len_choice(inp.max_model_len),
                       uncalibrated_margin=_margin(inp.uncalibrated_margin), topologies=_topologies(inp),
                       frontend_queue=inp.frontend_queue, prefix_caching=_prefix_caching(inp), **_speculative(inp))
    return req, notes, {workload.name: model_arg}


def _prefix_caching(inp: SolveInput) -> bool:
    value = (inp.prefix_caching or "auto").strip().lower()
    if value not in ("auto", "on", "off"):
        raise RequestError(f"--prefix-caching {inp.prefix_caching!r}: give auto, on or off")
    return value != "off"


def _speculative(inp: SolveInput) -> dict[str, Any]:
    return speculative_args(inp.speculative, inp.acceptance_rate, _topologies(inp))


def _topologies(inp: SolveInput) -> tuple[str, ...]:
    from planner.app.disagg_plan import parse_topologies

    return parse_topologies(inp.topologies)


def _margin(value: float | None) -> float:
    """--uncalibrated-margin: a fraction in [0, 1); None: the catalog's default."""
    if value is None:
        from planner.catalog.loader import uncalibrated_slo_margin

        return uncalibrated_slo_margin()
    if not 0 <= value < 1:
        raise RequestError(f"--uncalibrated-margin {value:g}: give a fraction in [0, 1), e.g. 0.2 (0 turns it off)")
    return value


def _check_budget_meets_filter(budget: Budget, gpus: list[GpuSpec]) -> None:
    """An inventory with none of the allowed GPU types is a usage error, not an infeasible problem."""
    if budget.inventory and not any(budget.limit(g.name) for g in gpus):
        allowed = ", ".join(g.name for g in gpus) or "none"
        raise RequestError(f"--budget {budget.describe()} holds none of the GPU types allowed by --gpus/"
                           f"--calibrated-only ({allowed}): nothing to plan on")


def _max_model_len_choice(text: str | None) -> int | Literal["workload", "model"]:
    """--max-model-len: 'workload', 'model' or a positive number of tokens."""
    if text is None or text.strip() == "workload":
        return "workload"
    if text.strip() == "model":
        return "model"
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        msg = f"--max-model-len takes 'workload', 'model' or a number of tokens (got {text[:40]!r})"
        raise RequestError(msg) from None
    if not 1 <= value <= 1 << 30:
        raise RequestError(f"--max-model-len must be between 1 and {1 << 30:,} tokens (got {value})")
    return value


def _scenario_request(inp: SolveInput) -> tuple[SolveRequest, list[str], dict[str, str]]:
    """A scenario file's workloads (one, or a fleet) sharing one budget; flags override the file's keys."""
    from planner.app.scenario import load_scenario

    assert inp.scenario is not None
    flags = [f for f, v in (("--rate", inp.rate), ("--concurrency", inp.concurrency),
                            ("--prompt-tokens", inp.prompt_tokens), ("--output-tokens", inp.output_tokens),
                            ("--image", inp.images), ("--images-per-request", inp.images_per_request),
                            ("--workload", inp.workload)) if v is not None]
    if flags or inp.no_image:
        raise RequestError(f"{(flags or ['--no-image'])[0]} cannot be combined with --scenario: the scenario file "
                           f"describes the workloads")
    sc = load_scenario(inp.scenario)
    notes: list[str] = []
    search = sc.search
    merged = inp.model_copy(update={
        "budget": inp.budget if inp.budget is not None else sc.budget,
        "gpus": inp.gpus if inp.gpus is not None else (",".join(search.gpus) if search.gpus else None),
        "precisions": inp.precisions if inp.precisions is not None else
        (",".join(search.precisions) if search.precisions else None),
        "kv_cache_dtypes": inp.kv_cache_dtypes if inp.kv_cache_dtypes is not None else
        (",".join(search.kv_cache_dtypes) if search.kv_cache_dtypes else None),
        "price": [f"{k}={v}" for k, v in search.prices.items()] + list(inp.price or []),
        "objective": inp.objective if inp.objective != "cost" else search.objective,
        "max_load": inp.max_load if inp.max_load is not None else search.max_load,
    })
    budget = parse_budget(merged.budget)
    gpus, precisions, kvs = _search_space(merged)
    _check_budget_meets_filter(budget, gpus)
    default_slos = inp.slo if inp.slo is not None else (sc.slo or None)
    if default_slos is None:
        notes.append(f"no SLO in the scenario or on the command line: using {', '.join(DEFAULT_SLOS)}")
    top_model = inp.model or sc.model
    workloads: list[Workload] = []
    models = {}
    model_args: dict[str, str] = {}
    slos_of: dict[str, list[Slo]] = {}
    specs: dict[str, object] = {}
    for i, (name, model_arg, wl, slo_text) in enumerate(sc.fleet()):
        own_model = sc.workloads[i].model if sc.workloads else None
        model_arg = own_model or top_model  # --model replaces the scenario's default model, not a workload's own
        if model_arg not in specs:
            specs[model_arg] = resolve_model(model_arg)
            require_supported(specs[model_arg])  # type: ignore[arg-type]
        model = specs[model_arg]
        if wl.images and model.vision is None:  # type: ignore[attr-defined]
            raise RequestError(f"workload '{name}' sends images but {model_arg} is a text model")
        wl = with_prefix(_with_load(wl, None, None, notes), inp.shared_prefix, inp.repeated_images)
        own = parse_slos(slo_text if (slo_text and inp.slo is None) else (default_slos or DEFAULT_SLOS))
        _slo_notes(own, notes)
        workloads.append(wl)
        models[name] = model
        model_args[name] = model_arg
        slos_of[name] = own
    first = workloads[0].name
    req = SolveRequest(model=models[first], workloads=workloads, slos=slos_of[first], budget=budget,  # type: ignore
                       gpus=gpus, precisions=precisions, kv_cache_dtypes=kvs,  # type: ignore[arg-type]
                       objective=merged.objective, models=models, workload_slos=slos_of,  # type: ignore
                       verify=inp.verify, max_load=_max_load(merged.max_load),
                       max_model_len=_max_model_len_choice(inp.max_model_len),
                       uncalibrated_margin=_margin(inp.uncalibrated_margin), topologies=_topologies(inp),
                       frontend_queue=inp.frontend_queue, prefix_caching=_prefix_caching(inp), **_speculative(inp))
    return req, notes, model_args
