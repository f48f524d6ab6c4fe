"""`vlmplan solve` input -> SolveRequest, and Solution -> Plan (the saved, emitted answer)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from planner.app.speculation import speculative_args, speculative_plan
from planner.catalog.engine_support import require_supported
from planner.catalog.loader import calibration_status, load_gpus
from planner.catalog.schema import GpuSpec, KvCacheDtype, Precision
from planner.core.errors import RequestError
from planner.core.stats import Percentiles
from planner.core.units import GIB
from planner.plan import (
    DeploymentPlan,
    HostResources,
    ImageSpec,
    PercentilesMs,
    Plan,
    Predicted,
    PredictedMemory,
    Simulated,
    traffic_of,
)
from planner.solver import Candidate, Objective, Solution, SolveRequest, default_gpus
from planner.spec.config import ResolvedConfig
from planner.spec.lookup import parse_prices, resolve_model
from planner.spec.shape import RequestShape
from planner.spec.slo import Budget, Slo, parse_budget, parse_slos
from planner.spec.workload import (
    DEFAULT_WORKLOAD,
    ImageSize,
    Workload,
    load_workload,
    parse_image_size,
    with_prefix,
)

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


def _pct(p: Percentiles) -> PercentilesMs:
    return PercentilesMs(**{k: round(float(v), 3) for k, v in p.model_dump().items()})


def _simulated(c: Candidate) -> Simulated | None:
    sim = c.simulated
    if sim is None:
        return None
    return Simulated(ttft_ms=_pct(sim.ttft), tpot_ms=_pct(sim.tpot), e2e_ms=_pct(sim.e2e),
                     requests_per_s=round(sim.requests_per_s * c.replicas, 4), requests_simulated=sim.requests,
                     seed=sim.seed, saturated=sim.saturated, meets_slos=sim.meets, failed=sim.failed)


def local_model_folder(model_arg: str) -> str | None:
    """The absolute folder of a local model (``--model ./my-llama`` or ``./my-llama/config.json``); None for a
    catalog id."""
    from pathlib import Path

    try:
        path = Path(model_arg).expanduser()
        if not path.exists():
            return None
        return str((path if path.is_dir() else path.parent).resolve())
    except OSError:
        return None


def _host(c: Candidate) -> HostResources | None:
    """CPUs and host memory one replica of ``c`` needs (None when the engine catalog has no host model)."""
    from planner.catalog.loader import load_calibration, load_engine
    from planner.perf.hostcpu import api_server_vcpus, offered_vcpus, replica_memory_gib, replica_vcpus

    host = load_engine().host
    if host is None:
        return None
    per = api_server_vcpus(load_calibration(c.cfg.gpu.name), host, c.shape)
    offered = offered_vcpus(c.cfg)
    return HostResources(vcpus=round(replica_vcpus(host, c.cfg, per), 2), vcpus_per_api_server=round(per, 2),
                         vcpus_offered=None if math.isinf(offered) else offered,
                         memory_gib=round(replica_memory_gib(host, c.cfg.api_server_count), 2),
                         mm_processor_cache_gib=host.mm_processor_cache_gib)


def prefix_caching_reason(cfg: ResolvedConfig, shape: RequestShape) -> str:
    """Why the plan turns vLLM's prefix caching on or off, with what it counts on reading from the cache."""
    prompt = shape.prompt_tokens
    if not cfg.enable_prefix_caching:
        return ("off (--prefix-caching off): every prompt is computed in full, shared prefix and repeated images "
                "included; the engine's cost does not depend on earlier requests")
    why = []
    if shape.encoded_share < 1:
        why.append(f"{1 - shape.encoded_share:.0%} of requests repeat an image, which the encoder then skips")
    if shape.cached_tokens <= 0:
        return ("on (vLLM's default): the workload declares no shared prefix or repeated image, so the plan counts "
                "on no hit; a repeating system prompt would only make it faster")
    return (f"on: {shape.cached_tokens:,} of {prompt:,} prompt tokens per request ({shape.cached_tokens / prompt:.0%}) "
            f"are read from the prefix cache in whole {cfg.kv_block_tokens}-token blocks, not computed"
            + (f"; {why[0]}" if why else ""))


def deployment_plan(c: Candidate, model_arg: str, slos: list[Slo] | None = None) -> DeploymentPlan:
    cfg = c.cfg
    m = cfg.model
    served = m.quantized_checkpoints.get(cfg.precision, m.name) if cfg.precision != "bf16" else m.name
    # fp8 without a pre-quantized checkpoint: vLLM quantizes the bf16 weights online.
    quantization = "fp8" if cfg.precision == "fp8" and served == m.name else None
    local = local_model_folder(model_arg)
    if local is not None and served == m.name:
        served = local  # a local config.json: the engine loads that folder, not a hub repo of the same name
    mem = c.memory
    return DeploymentPlan(
        workload=c.workload,
        model=model_arg,
        served_model=served,
        hf_architecture=m.hf_architecture,
        vllm_supported=m.vllm_supported,
        trust_remote_code=m.trust_remote_code,
        gpu=cfg.gpu.name,
        gpu_aliases=list(cfg.gpu.aliases),
        gpu_memory_gib=round(cfg.gpu.memory_total_mib / 1024, 2),
        gpus_per_replica=cfg.num_gpus,
        gpus_per_node=cfg.gpu.gpus_per_node,
        tp=cfg.tp,
        pp=cfg.pp,
        replicas=c.replicas,
        precision=cfg.precision,
        quantization=quantization,
        kv_cache_dtype=cfg.kv_cache_dtype,
        max_num_seqs=cfg.max_num_seqs,
        max_model_len=cfg.max_model_len,
        max_num_batched_tokens=cfg.max_num_batched_tokens,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        mm_encoder_tp_mode=cfg.mm_encoder_tp_mode,
        limit_mm_per_prompt=({"image": cfg.limit_images_per_prompt}
                             if m.vision is not None and cfg.limit_images_per_prompt is not None else {}),
        mm_processor_kwargs=dict(cfg.mm_processor_options),
        images=[],
        cost_per_hour=round(c.cost_per_hour, 4),
        price_usd_per_gpu_hour=cfg.gpu.price.price_usd_per_gpu_hour,
        api_server_count=cfg.api_server_count,
        speculative=speculative_plan(cfg.speculative),
        enable_prefix_caching=cfg.enable_prefix_caching,
        prefix_caching_reason=prefix_caching_reason(cfg, c.shape),
        host=_host(c),
        predicted=Predicted(
            ttft_ms=_pct(c.prediction.ttft),
            tpot_ms=_pct(c.prediction.tpot),
            e2e_ms=_pct(c.prediction.e2e),
            requests_per_s=round(c.prediction.requests_per_s * c.replicas, 4),
            output_tokens_per_s=round(c.prediction.output_tokens_per_s * c.replicas, 2),
            memory=PredictedMemory(
                weights_gib=round(mem.weights_bytes / GIB, 3),
                kv_cache_gib=round(max(mem.kv_cache_bytes, 0) / GIB, 3),
                activations_gib=round(mem.activations_bytes / GIB, 3),
                overhead_gib=round(mem.overhead_bytes / GIB, 3),
                total_gib=round(mem.total_used_bytes / GIB, 3),
                kv_capacity_tokens=mem.kv_capacity_tokens,
            ),
        ),
        simulated=_simulated(c),
        slos=[f"{s.key}<={s.limit_ms:g}ms" for s in (slos or [])],
        calibration=calibration_status(cfg.gpu.name)[0],  # type: ignore[arg-type]
        error_band=calibration_status(cfg.gpu.name)[1],
    )


def to_plan(sol: Solution, req: SolveRequest, model_arg: str | dict[str, str], notes: list[str]) -> Plan:
    """``model_arg``: the model as the user wrote it, one for all workloads or per workload name."""
    args = model_arg if isinstance(model_arg, dict) else {}
    one = model_arg if isinstance(model_arg, str) else DEFAULT_MODEL

    def arg(workload: str) -> str:
        return args.get(workload) or (one if not args else req.model_of(workload).name)

    deployments = [deployment_plan(c, arg(c.workload), req.slos_of(c.workload)) for c in sol.chosen]
    images = {w.name: [ImageSpec(width=i.width, height=i.height) for i in w.images] for w in req.workloads}
    traffic = {w.name: traffic_of(w) for w in req.workloads}
    deployments = [d.model_copy(update={"images": images.get(d.workload, []), "traffic": traffic.get(d.workload)})
                   for d in deployments]
    extra = list(notes) + list(sol.notes)
    for d in deployments:
        if d.served_model != d.model and local_model_folder(d.model) == d.served_model:
            extra.append(f"{d.workload}: model {d.model} is a local folder: the launch configs serve {d.served_model}")
    if sol.status == "infeasible":
        extra += [sol.explanation, f"nearest relaxation: {sol.relaxation}"]
    pd = None
    if sol.disagg is not None and sol.disagg.best is not None:
        from planner.app.disagg_plan import pd_plan

        pd = pd_plan(sol.disagg.best, arg(sol.disagg.best.workload), req, deployment_plan, _pct)
    elif sol.disagg is not None and sol.disagg.note:
        extra.append(sol.disagg.note)
    epd = None
    if sol.epd is not None and sol.epd.best is not None:
        from planner.app.disagg_plan import epd_plan

        epd = epd_plan(sol.epd.best, arg(sol.epd.best.workload), req, deployment_plan, _pct)
        epd = epd.model_copy(update={"lm": epd.lm.model_copy(update={
            "images": images.get(epd.lm.workload, []), "traffic": traffic.get(epd.lm.workload)})})
    elif sol.epd is not None and sol.epd.note:
        extra.append(sol.epd.note)
    cost = pd.cost_per_hour if pd is not None and sol.topology == "pd" else sum(d.cost_per_hour for d in deployments)
    if epd is not None and sol.topology == "epd":
        cost = epd.cost_per_hour
    return Plan(
        topology=sol.topology,  # type: ignore[arg-type]
        pd=pd,
        epd=epd,
        status=sol.status,
        objective=req.objective,
        max_load=req.max_load,
        cost_per_hour=round(cost, 4),
        deployments=deployments,
        binding=sol.binding if sol.status != "infeasible" else [sol.explanation],
        alternatives=[deployment_plan(c, arg(c.workload), req.slos_of(c.workload)) for c in sol.alternatives],
        notes=extra,
    )
