"""User input of `vlmplan estimate`, validated, turned into a config and a workload."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from pydantic import BaseModel, ConfigDict

from planner.catalog.loader import load_calibration_file
from planner.catalog.schema import KvCacheDtype, ModelSpec, Precision
from planner.core.errors import RequestError
from planner.estimate import Estimate, estimate
from planner.spec.config import ServingConfig, Speculation
from planner.spec.lookup import parse_json_option, resolve_gpu, resolve_model
from planner.spec.speculation import check_acceptance, parse_choice, speculation_of
from planner.spec.workload import DEFAULT_WORKLOAD, ImageSize, Workload, parse_image_size, with_prefix
from planner.spec.workload_yaml import load_workload


class EstimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    gpu: str
    tp: int = 1
    pp: int = 1
    precision: str = "bf16"
    kv_cache_dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    mm_encoder_tp_mode: str = "weights"
    mm_processor_kwargs: str | None = None
    limit_images: int | None = None
    batch: int | None = None
    context: int | None = None
    prompt_tokens: int = 256
    output_tokens: int = 256
    images: list[str] | None = None
    no_image: bool = False
    concurrency: int | None = None
    rate: float | None = None
    calibration: Path | None = None
    workload: str | None = None
    """YAML workload file or preset name (document-vqa, visual-reasoning, captioning, chat): replaces the
    request flags (--prompt-tokens, --output-tokens, --image, --no-image); --rate / --concurrency still
    override its arrivals."""
    slo: list[str] | None = None
    """SLOs as planner.spec.slo.parse_slos reads them, e.g. ``ttft_p95=200ms``, ``tpot_p99=40ms``."""
    requests: int | None = None
    """Requests to simulate under load (default: 12000; closed loop 8 per client, at least 2000)."""
    seed: int = 0
    speculative: str | None = None
    """Speculative method to estimate with (ngram, eagle, eagle3, mtp); None, auto or off: none."""
    acceptance_rate: float | None = None
    """Per-token draft acceptance (None: the method's catalog default)."""
    prefix_caching: str = "on"
    """--prefix-caching on (vLLM's default) or off."""
    shared_prefix: int | None = None
    """--shared-prefix: text tokens every prompt starts with (part of --prompt-tokens)."""
    repeated_images: float | None = None
    """--repeated-images: share of requests that ask again about an image already sent."""


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise RequestError(f"{flag} '{value}' is not one of {', '.join(allowed)}")
    return value


def _positive(flag: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise RequestError(f"{flag} must be positive (got {value})")


def build_config(req: EstimateRequest) -> ServingConfig:
    for flag, value in [("--tp", req.tp), ("--pp", req.pp), ("--max-model-len", req.max_model_len),
                        ("--max-num-seqs", req.max_num_seqs), ("--max-num-batched-tokens", req.max_num_batched_tokens),
                        ("--batch", req.batch), ("--context", req.context)]:
        _positive(flag, value)
    util = req.gpu_memory_utilization
    if util is not None and not 0 < util <= 1:
        raise RequestError(f"--gpu-memory-utilization must be in (0, 1] (got {util:g})")
    if req.limit_images is not None and req.limit_images < 0:
        raise RequestError(f"--limit-images must be >= 0 (got {req.limit_images})")
    model = resolve_model(req.model)
    from planner.catalog.engine_support import require_supported

    require_supported(model)
    gpu = resolve_gpu(req.gpu)
    return ServingConfig(
        model=model,
        gpu=gpu,
        tp=req.tp,
        pp=req.pp,
        precision=_choice("--precision", req.precision, get_args(Precision)),  # type: ignore[arg-type]
        kv_cache_dtype=_choice("--kv-cache-dtype", req.kv_cache_dtype, get_args(KvCacheDtype)),  # type: ignore[arg-type]
        max_model_len=req.max_model_len,
        max_num_seqs=req.max_num_seqs,
        max_num_batched_tokens=req.max_num_batched_tokens,
        gpu_memory_utilization=req.gpu_memory_utilization,
        mm_encoder_tp_mode=_choice("--mm-encoder-tp-mode", req.mm_encoder_tp_mode, ("weights", "data")),  # type: ignore[arg-type]
        limit_images_per_prompt=req.limit_images,
        mm_processor_options=parse_json_option("--mm-processor-kwargs", req.mm_processor_kwargs),
        speculative=_speculation(req, model),
        enable_prefix_caching=_choice("--prefix-caching", req.prefix_caching, ("on", "off")) == "on",
    )


def _speculation(req: EstimateRequest, model: ModelSpec) -> Speculation | None:
    """--speculative METHOD at the catalog's defaults (or --acceptance-rate); auto and off estimate without."""
    choice = parse_choice(req.speculative or "off")
    check_acceptance(req.acceptance_rate)
    if choice in ("auto", "off"):
        if req.acceptance_rate is not None:
            raise RequestError("--acceptance-rate needs --speculative METHOD (ngram, eagle, eagle3, mtp)")
        return None
    return speculation_of(model, choice, req.acceptance_rate)


def build_workload(req: EstimateRequest, is_vlm: bool) -> Workload:
    _positive("--rate", req.rate)
    _positive("--concurrency", req.concurrency)
    if req.rate is not None and req.concurrency is not None:
        raise RequestError("give --rate or --concurrency, not both")
    if req.workload:
        base = load_workload(req.workload)
        if base.images and not is_vlm:
            raise RequestError(f"workload '{req.workload}' sends images but the model is a text model")
        if req.rate is not None:
            base = base.model_copy(update={"arrival": "poisson", "rate_per_s": req.rate, "concurrency": None,
                                           "trace_s": None})
        if req.concurrency is not None:
            base = base.model_copy(update={"arrival": "closed", "concurrency": req.concurrency,
                                           "rate_per_s": None, "trace_s": None})
        return with_prefix(base, req.shared_prefix, req.repeated_images)
    if req.no_image and req.images:
        raise RequestError("--no-image and --image exclude each other")
    if req.prompt_tokens < 0:
        raise RequestError(f"--prompt-tokens must be >= 0 (got {req.prompt_tokens})")
    _positive("--output-tokens", req.output_tokens)
    if req.images:
        images = [ImageSize(width=w, height=h) for w, h in map(parse_image_size, req.images)]
    elif req.no_image or not is_vlm:
        images = []
    else:
        images = list(DEFAULT_WORKLOAD.images)
    if req.prompt_tokens == 0 and not images:
        raise RequestError("--prompt-tokens 0 needs an image: a request must send some input (0 text tokens is "
                           "for image-only requests, e.g. captioning)")
    arrival = "poisson" if req.rate is not None else "closed" if req.concurrency is not None else "single"
    return with_prefix(Workload(
        prompt_tokens=req.prompt_tokens,
        output_tokens=req.output_tokens,
        images=images,
        arrival=arrival,  # type: ignore[arg-type]
        rate_per_s=req.rate,
        concurrency=req.concurrency,
    ), req.shared_prefix, req.repeated_images)


def run_estimate(req: EstimateRequest) -> Estimate:
    cfg = build_config(req)
    workload = build_workload(req, cfg.model.vision is not None)
    if req.limit_images is not None and workload.max_images > req.limit_images:
        raise RequestError(f"--limit-images {req.limit_images} is fewer than the {workload.max_images} image(s) a "
                           "request sends (vLLM would refuse the request)")
    if req.context is not None:
        ceiling = cfg.effective_max_model_len
        if req.context > ceiling:
            raise RequestError(f"--context {req.context:,} exceeds the max_model_len {ceiling:,} of the configuration")
    cal = load_calibration_file(req.calibration) if req.calibration else None
    from planner.spec.slo import parse_slos

    slos = parse_slos(req.slo)
    _positive("--requests", req.requests)
    if slos and workload.arrival == "single":
        raise RequestError("--slo needs a load: give --rate R or --concurrency C (or a workload file with arrivals)")
    return estimate(cfg, workload, batch=req.batch, context=req.context, calibration=cal, slos=slos,
                    requests=req.requests, seed=req.seed)
