"""`vlmplan estimate`: memory and latency of one configuration under one workload."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from planner.catalog.loader import calibration_status, load_calibration, load_engine, load_precisions
from planner.catalog.schema import Calibration
from planner.deployment import ServingConfig, resolve
from planner.memory import MemoryBreakdown, memory_breakdown
from planner.speed import (
    Roofline,
    StepTime,
    decode_step,
    engine_overhead_ms,
    frontend_ms,
    prefill_step,
    vision_call_host_ms,
    vision_encode,
)
from planner.units import GIB
from planner.vision_tokens import image_tokens
from planner.workload import Workload


class Percentiles(BaseModel):
    model_config = ConfigDict(frozen=True)
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def constant(cls, value: float) -> Percentiles:
        return cls(mean=value, p50=value, p90=value, p95=value, p99=value)

    def shifted(self, ms: float) -> Percentiles:
        """Every figure plus ``ms`` (a delay every request pays)."""
        return Percentiles(mean=self.mean + ms, p50=self.p50 + ms, p90=self.p90 + ms, p95=self.p95 + ms,
                           p99=self.p99 + ms)


@dataclass(frozen=True)
class RequestShape:
    """Tokens of one request as the engine sees them."""

    text_tokens: int
    visual_tokens: int
    encoder_patches: int
    images: int
    output_tokens: int
    cached_tokens: int
    input_megapixels: float = 0.0
    """Pixels of the images as sent (JPEG decode and resize work)."""
    processed_megapixels: float = 0.0
    """Pixels the vision tower sees (encoder patches x patch area)."""
    encoder_sequences: int = 0
    """Attention sequences of the ViT over all images: a tiled encoder (InternVL, LLaVA-NeXT, Idefics3...)
    encodes every tile and thumbnail as its own sequence; 0 means one per image."""
    classes: tuple[tuple[float, RequestShape], ...] = ()
    """When the workload's lengths or images vary: (probability, shape) of each kind of request (the fields
    above are then their means); empty for a fixed request."""

    @property
    def vit_sequences(self) -> int:
        """``encoder_sequences``, or one per image when not set."""
        return self.encoder_sequences or self.images

    @property
    def prompt_tokens(self) -> int:
        return self.text_tokens + self.visual_tokens


MAX_CLASSES_PER_DIM = 6
"""Distributions with more support points (empirical samples) are binned into this many quantile groups."""


def _dist_points(dist: Any, fixed: int) -> list[tuple[float, float]]:
    """(probability, value) of an integer distribution, at most MAX_CLASSES_PER_DIM of them (equal-mass
    quantile groups of a long support, each at its group's mean)."""
    if dist is None:
        return [(1.0, float(fixed))]
    p = dist.probabilities()
    v = np.asarray(dist.values, dtype=float)
    order = np.argsort(v, kind="stable")
    p, v = p[order], v[order]
    if len(v) <= MAX_CLASSES_PER_DIM:
        return [(float(pi), float(vi)) for pi, vi in zip(p, v) if pi > 0]
    edges = np.searchsorted(np.cumsum(p), np.linspace(0, 1, MAX_CLASSES_PER_DIM + 1)[1:-1], side="right")
    out = []
    for grp_p, grp_v in zip(np.split(p, edges), np.split(v, edges)):
        if grp_p.sum() > 0:
            out.append((float(grp_p.sum()), float(grp_p @ grp_v / grp_p.sum())))
    return out


def request_shape(cfg: ServingConfig, workload: Workload) -> RequestShape:
    """The engine's view of one request of ``workload``: the representative request, or, when its lengths or
    images vary, the mean over its classes (each class in ``classes``)."""
    if not workload.has_distributions:
        return _fixed_shape(cfg, workload)
    prompts = _dist_points(workload.prompt_tokens_dist, workload.prompt_tokens)
    outputs = _dist_points(workload.output_tokens_dist, workload.output_tokens)
    counts = _dist_points(workload.images_per_request_dist, len(workload.images))
    if workload.image_size_dist is not None:
        sp = workload.image_size_dist.probabilities()
        sizes = [(float(q), s) for q, s in zip(sp, workload.image_size_dist.values) if q > 0]
    else:
        sizes = [(1.0, None)]  # type: ignore[list-item]
    classes = []
    for pp, pv in prompts:
        for po, ov in outputs:
            for pc, cv in counts:
                for ps, sz in sizes:
                    k = int(round(cv))
                    imgs = ([sz] * k if sz is not None else list(workload.images)[:k]) if k else []
                    w = workload.model_copy(update={
                        "prompt_tokens": int(round(pv)), "output_tokens": max(1, int(round(ov))), "images": imgs,
                        "prompt_tokens_dist": None, "output_tokens_dist": None, "images_per_request_dist": None,
                        "image_size_dist": None})
                    classes.append((pp * po * pc * ps, _fixed_shape(cfg, w)))
    total = sum(p for p, _ in classes)
    classes = [(p / total, c) for p, c in classes]

    def mean(attr: str) -> float:
        return sum(p * getattr(c, attr) for p, c in classes)

    images = mean("images")
    return RequestShape(
        text_tokens=int(round(mean("text_tokens"))), visual_tokens=int(round(mean("visual_tokens"))),
        encoder_patches=int(round(mean("encoder_patches"))),
        encoder_sequences=int(round(mean("vit_sequences"))),
        images=max(1, int(round(images))) if images > 0 else 0,
        output_tokens=max(1, int(round(mean("output_tokens")))), cached_tokens=int(round(mean("cached_tokens"))),
        input_megapixels=mean("input_megapixels"), processed_megapixels=mean("processed_megapixels"),
        classes=tuple(classes))


def _fixed_shape(cfg: ServingConfig, workload: Workload) -> RequestShape:
    visual = patches = sequences = 0
    rule = cfg.model.visual_tokens
    if workload.images and rule is None:
        from planner.errors import UnsupportedError

        raise UnsupportedError(f"{cfg.model.name} is a text model: it takes no images")
    sent = 0
    for img in workload.images:
        assert rule is not None
        t = image_tokens(rule, img.width, img.height, cfg.mm_processor_options)
        visual += t.llm_tokens
        patches += t.encoder_patches
        sequences += t.encoder_sequences
        sent += img.width * img.height
    prompt = workload.prompt_tokens + visual
    return RequestShape(
        text_tokens=workload.prompt_tokens,
        visual_tokens=visual,
        encoder_patches=patches,
        images=len(workload.images),
        output_tokens=workload.output_tokens,
        cached_tokens=int(workload.prefix_cache_hit * prompt),
        input_megapixels=sent / 1e6,
        processed_megapixels=processed_megapixels(cfg, patches),
        encoder_sequences=sequences,
    )


def processed_megapixels(cfg: ServingConfig, encoder_patches: int) -> float:
    """Pixels the vision tower sees: its patches times the patch area."""
    v = cfg.model.vision
    return encoder_patches * (v.patch_size**2 if v else 0) / 1e6


def shape_frontend_ms(cal: Calibration, shape: RequestShape) -> float:
    """The request's time outside the engine: its fixed path and the API server's image work
    (``speed.frontend_ms``)."""
    return frontend_ms(cal, shape.input_megapixels, shape.processed_megapixels, shape.images)


@dataclass(frozen=True)
class LoadSummary:
    """The load model's answer for one replica (simulated; the analytic figures for comparison)."""

    method: str
    """``simulator`` (vLLM V1 scheduler simulation)."""
    arrival: str
    rate_per_s: float | None
    concurrency: int | None
    requests_simulated: int
    seed: int
    saturated: bool
    """The queue grows without bound: the percentiles then depend on the run length."""
    saturation_requests_per_s: float
    """Throughput of the replica when always backlogged (simulated)."""
    analytic_max_requests_per_s: float
    mean_batch: float
    preemptions: int
    slos: tuple[str, ...] = ()
    slo_met: bool | None = None
    slo_max_rate_per_s: float | None = None
    """Highest Poisson rate whose simulated percentiles still meet every SLO."""
    slo_max_concurrency: int | None = None
    """Closed loop: most clients still meeting every SLO."""
    offered_load: float | None = None
    """Open loop: the offered rate as a fraction of the saturation throughput."""
    max_load: float | None = None
    """The solver's ceiling on that fraction."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "arrival": self.arrival,
            "rate_per_s": self.rate_per_s,
            "concurrency": self.concurrency,
            "requests_simulated": self.requests_simulated,
            "seed": self.seed,
            "saturated": self.saturated,
            "saturation_requests_per_s": _r(self.saturation_requests_per_s),
            "analytic_max_requests_per_s": _r(self.analytic_max_requests_per_s),
            "mean_batch": _r(self.mean_batch),
            "preemptions": self.preemptions,
            "offered_load": None if self.offered_load is None else _r(self.offered_load),
            "max_load": self.max_load,
        }
        if self.slos:
            out["slo"] = {
                "targets": list(self.slos),
                "met": self.slo_met,
                "max_rate_per_s": None if self.slo_max_rate_per_s is None else _r(self.slo_max_rate_per_s),
                "max_concurrency": self.slo_max_concurrency,
            }
        return out


@dataclass(frozen=True)
class Estimate:
    config: ServingConfig
    workload: Workload
    shape: RequestShape
    memory: MemoryBreakdown
    calibration: Calibration
    vision: StepTime
    prefill: StepTime
    decode: StepTime
    decode_batch: int
    decode_context: int
    engine_overhead_ms: float
    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    requests_per_s: float
    output_tokens_per_s: float
    load_note: str
    load: LoadSummary | None = None
    """Under load (poisson / closed / trace): what the simulator saw, saturation and SLO headroom."""
    frontend_ms: float = 0.0
    vision_host_ms: float = 0.0
    """The engine's host work around the request's encoder call (``speed.vision_call_host_ms``)."""
    """API-server CPU time on the request's images, inside TTFT and e2e."""

    def to_json(self) -> dict[str, Any]:
        m = self.memory
        cfg = self.config
        return {
            "model": cfg.model.name,
            "gpu": cfg.gpu.name,
            "config": {
                "tp": cfg.tp,
                "pp": cfg.pp,
                "precision": cfg.precision,
                "kv_cache_dtype": cfg.kv_cache_dtype,
                "max_model_len": cfg.max_model_len,
                "max_num_seqs": cfg.max_num_seqs,
                "max_num_batched_tokens": cfg.max_num_batched_tokens,
                "gpu_memory_utilization": cfg.gpu_memory_utilization,
                "mm_encoder_tp_mode": cfg.mm_encoder_tp_mode,
            },
            "request": {
                "text_tokens": self.shape.text_tokens,
                "visual_tokens": self.shape.visual_tokens,
                "prompt_tokens": self.shape.prompt_tokens,
                "encoder_patches": self.shape.encoder_patches,
                "encoder_sequences": self.shape.vit_sequences,
                "images": self.shape.images,
                "output_tokens": self.shape.output_tokens,
            },
            "memory": {
                "total_gib": _r(m.total_bytes / GIB),
                "usable_gib": _r(m.requested_bytes / GIB),
                "weights_gib": _r(m.weights_bytes / GIB),
                "decoder_weights_gib": _r(m.decoder_weights_bytes / GIB),
                "vision_weights_gib": _r(m.vision_weights_bytes / GIB),
                "kv_cache_gib": _r(max(m.kv_cache_bytes, 0) / GIB),
                "kv_bytes_per_token": m.kv_bytes_per_token,
                "sliding_kv_bytes_per_token": m.sliding_kv_bytes_per_token,
                "cross_attention_kv_bytes_per_image": m.cross_attention_kv_bytes_per_image,
                "kv_capacity_tokens": m.kv_capacity_tokens,
                "activations_gib": _r(m.activations_bytes / GIB),
                "overhead_gib": _r(m.overhead_bytes / GIB),
                "total_gib_used": _r(m.total_used_bytes / GIB),
                "total_gib_per_gpu": _r(m.total_used_bytes / GIB),
                "fits": m.fits,
                "reason": m.reason,
                "per": "gpu",
            },
            "latency": {
                "vision_encode_ms": _r(self.vision.time_ms),
                "vision_host_ms": _r(self.vision_host_ms),
                "prefill_ms": _r(self.prefill.time_ms),
                "decode_step_ms": _r(self.decode.time_ms),
                "decode_batch": self.decode_batch,
                "decode_context": self.decode_context,
                "engine_overhead_ms": _r(self.engine_overhead_ms),
                "frontend_ms": _r(self.frontend_ms),
                "ttft_ms": _pct(self.ttft),
                "tpot_ms": _pct(self.tpot),
                "e2e_ms": _pct(self.e2e),
                "load": self.load_note,
            },
            "throughput": {
                "requests_per_s": _r(self.requests_per_s),
                "output_tokens_per_s": _r(self.output_tokens_per_s),
                **({"saturation_requests_per_s": _r(self.load.saturation_requests_per_s)} if self.load else {}),
            },
            **({"load": self.load.to_json()} if self.load else {}),
            "bound": {"prefill": self.prefill.bound, "decode": self.decode.bound},
            "calibration": {
                "gpu": self.calibration.gpu,
                "calibrated": self.calibration.calibrated,
                "status": "calibrated" if self.calibration.calibrated else "uncalibrated",
                "validation": calibration_status(self.config.gpu.name)[0],
                "error_band": calibration_status(self.config.gpu.name)[1],
            },
        }


def _r(x: float) -> float:
    return round(float(x), 4)


def _pct(p: Percentiles) -> dict[str, float]:
    return {k: _r(v) for k, v in p.model_dump().items()}


def estimate(
    cfg: ServingConfig,
    workload: Workload,
    batch: int | None = None,
    context: int | None = None,
    calibration: Calibration | None = None,
    slos: list[Any] | None = None,
    requests: int | None = None,
    seed: int = 0,
) -> Estimate:
    """Memory and latency of ``cfg`` serving ``workload``.

    ``batch``/``context`` pick the decode step reported as ``decode_step_ms``
    (defaults: one sequence holding the request's prompt). For a lone request
    (arrival ``single``) latencies are the speed model's; under load (``poisson``,
    ``closed``, ``trace``) they are the simulator's percentiles over ``requests``
    requests drawn from the workload (``seed``), with the saturation throughput
    and, given ``slos`` (``planner.request.Slo``), the highest rate (or, closed
    loop, concurrency) still meeting them.
    """
    engine = load_engine()
    precisions = load_precisions()
    cfg = resolve(cfg, engine)
    cal = calibration or load_calibration(cfg.gpu.name)
    mem = memory_breakdown(cfg, engine, precisions)
    shape = request_shape(cfg, workload)
    longest = shape.visual_tokens + workload.max_prompt_tokens + workload.max_output_tokens
    if mem.fits and cfg.max_model_len is not None and longest > cfg.max_model_len:
        # vLLM refuses a request whose prompt + max_tokens exceed max_model_len: the configuration cannot serve it.
        mem = replace(mem, fits=False, reason=(
            f"a request needs {longest:,} tokens ({shape.visual_tokens:,} visual + {workload.max_prompt_tokens:,} "
            f"text in, {workload.max_output_tokens:,} out), more than max_model_len {cfg.max_model_len:,}"))
    rf = Roofline(cfg.gpu, cal)
    vision = vision_encode(rf, cfg, precisions, shape.encoder_patches, shape.images,
                           sequences=shape.vit_sequences)
    prefill = prefill_step(rf, cfg, precisions, shape.prompt_tokens, shape.cached_tokens)
    b = batch or 1
    ctx = context or shape.prompt_tokens
    decode = decode_step(rf, cfg, precisions, b, ctx)
    overhead = engine_overhead_ms(cal, b)
    # A request alone: TTFT = API-server image work + encode + prefill (+ one engine step); each later
    # token one decode step at the growing context (taken at its midpoint).
    fe = shape_frontend_ms(cal, shape)
    vision_host = vision_call_host_ms(cal, shape.images)
    ttft = fe + vision.time_ms + vision_host + prefill.time_ms + engine_overhead_ms(cal, 1)
    mid = shape.prompt_tokens + shape.output_tokens // 2
    tpot = decode_step(rf, cfg, precisions, 1, mid).time_ms + engine_overhead_ms(cal, 1)
    e2e = ttft + (shape.output_tokens - 1) * tpot
    common = dict(config=cfg, workload=workload, shape=shape, memory=mem, calibration=cal, vision=vision,
                  prefill=prefill, decode=decode, decode_batch=b, decode_context=ctx, engine_overhead_ms=overhead,
                  frontend_ms=fe, vision_host_ms=vision_host)
    if workload.arrival == "single" or not mem.fits:
        note = "one request alone" if workload.arrival == "single" else \
            f"one request alone ({workload.arrival} load not simulated: the configuration does not fit)"
        return Estimate(**common, ttft=Percentiles.constant(ttft), tpot=Percentiles.constant(tpot),  # type: ignore[arg-type]
                        e2e=Percentiles.constant(e2e), requests_per_s=1000.0 / e2e,
                        output_tokens_per_s=shape.output_tokens * 1000.0 / e2e, load_note=note)
    from planner.load.estimate_load import run_load

    res = run_load(cfg, cal, precisions, workload, shape, mem.kv_capacity_tokens, slos or [], requests, seed)
    return Estimate(**common, ttft=res.ttft, tpot=res.tpot, e2e=res.e2e,  # type: ignore[arg-type]
                    requests_per_s=res.requests_per_s, output_tokens_per_s=res.output_tokens_per_s,
                    load_note=res.note, load=res.summary)
