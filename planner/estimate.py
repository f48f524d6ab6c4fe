"""`vlmplan estimate`: memory and latency of one configuration under one workload."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from planner.catalog.calibration_schema import Calibration
from planner.catalog.loader import calibration_status, load_calibration, load_engine, load_precisions
from planner.core.stats import Percentiles
from planner.core.units import GIB
from planner.load.summary import LoadSummary
from planner.perf.frontend import shape_frontend_ms
from planner.perf.lone import lone_request
from planner.perf.memory import MemoryBreakdown, memory_breakdown
from planner.perf.ops import StepTime
from planner.perf.roofline import Roofline
from planner.perf.speculative import make_step_cost
from planner.perf.steps import decode_step, engine_overhead_ms, prefill_step
from planner.perf.vision import vision_call_host_ms, vision_encode
from planner.spec.config import ResolvedConfig, ServingConfig, resolve
from planner.spec.shape import RequestShape, request_shape
from planner.spec.workload import Workload


@dataclass(frozen=True)
class Estimate:
    config: ResolvedConfig
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
                "enable_prefix_caching": cfg.enable_prefix_caching,
                **_speculative_json(cfg),
            },
            "request": {
                "text_tokens": self.shape.text_tokens,
                "visual_tokens": self.shape.visual_tokens,
                "prompt_tokens": self.shape.prompt_tokens,
                "encoder_patches": self.shape.encoder_patches,
                "encoder_sequences": self.shape.vit_sequences,
                "images": self.shape.images,
                "output_tokens": self.shape.output_tokens,
                "cached_tokens": self.shape.cached_tokens,
                "encoded_share": _r(self.shape.encoded_share),
            },
            "memory": _memory_json(m),
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
                "at_fit_bound": {name: {"value": self.calibration.value(name), "side": f.at_bound, "bound": f.bound,
                                        "unbounded_value": f.unbounded_value}
                                 for name, f in self.calibration.at_fit_bound().items()},
            },
        }



def _memory_json(m: MemoryBreakdown) -> dict[str, Any]:
    """The memory part of ``Estimate.to_json`` (per GPU)."""
    return {
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
    }

def _speculative_json(cfg: ResolvedConfig) -> dict[str, Any]:
    """The config's speculative decoding for ``to_json`` (no key when off: plain output as before)."""
    spec = cfg.speculative
    if spec is None:
        return {}
    out: dict[str, Any] = {**spec.config_json(), "acceptance_rate": spec.acceptance_rate}
    if spec.draft_rate != 1.0:  # methods that draft every step read as before
        out["draft_rate"] = spec.draft_rate
    if not cfg.async_scheduling:
        out["async_scheduling"] = False
    return {"speculative": out}


def _r(x: float) -> float:
    return round(float(x), 4)


def _pct(p: Percentiles) -> dict[str, float]:
    return {k: _r(v) for k, v in p.model_dump().items()}


def estimate(
    cfg: ServingConfig | ResolvedConfig,
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
    and, given ``slos`` (``planner.spec.slo.Slo``), the highest rate (or, closed
    loop, concurrency) still meeting them.
    """
    engine = load_engine()
    precisions = load_precisions()
    if isinstance(cfg, ServingConfig):
        cfg = resolve(cfg, engine)
    cal = calibration or load_calibration(cfg.gpu.name)
    mem = memory_breakdown(cfg, engine, precisions)
    shape = request_shape(cfg, workload)
    longest = shape.visual_tokens + workload.max_prompt_tokens + workload.max_output_tokens
    if mem.fits and longest > cfg.max_model_len:
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
    # A request alone (planner.perf.lone, what the simulator measures): its time outside the engine, its encoder
    # call, its prompt in chunks of the token budget; each later token one decode step at its own context.
    fe = shape_frontend_ms(cal, shape)
    vision_host = vision_call_host_ms(cal, shape.images)
    lone = lone_request(make_step_cost(cfg, cal, precisions), cfg, shape)
    ttft = fe + lone.ttft_ms
    tpot = lone.tpot_ms
    e2e = fe + lone.e2e_ms
    common = dict(config=cfg, workload=workload, shape=shape, memory=mem, calibration=cal, vision=vision,
                  prefill=prefill, decode=decode, decode_batch=b, decode_context=ctx, engine_overhead_ms=overhead,
                  frontend_ms=fe, vision_host_ms=vision_host)
    if workload.arrival == "single" or not mem.fits:
        note = "one request alone" if workload.arrival == "single" else \
            f"one request alone ({workload.arrival} load not simulated: the configuration does not fit)"
        return Estimate(**common, ttft=Percentiles.constant(ttft), tpot=Percentiles.constant(tpot),  # type: ignore[arg-type]
                        e2e=Percentiles.constant(e2e), requests_per_s=1000.0 / e2e,
                        output_tokens_per_s=shape.output_tokens * 1000.0 / e2e, load_note=note)
    from planner.load.run import run_load

    res = run_load(cfg, cal, precisions, workload, shape, mem.kv_capacity_tokens, slos or [], requests, seed)
    return Estimate(**common, ttft=res.ttft, tpot=res.tpot, e2e=res.e2e,  # type: ignore[arg-type]
                    requests_per_s=res.requests_per_s, output_tokens_per_s=res.output_tokens_per_s,
                    load_note=res.note, load=res.summary)
