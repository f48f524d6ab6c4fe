"""One replica's serving configuration, as the engine is launched with it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from planner.catalog.schema import EngineSpec, GpuSpec, KvCacheDtype, ModelSpec, Precision
from planner.core.errors import RequestError, UnsupportedError

EncoderTpMode = Literal["weights", "data"]


@dataclass(frozen=True)
class ServingConfig:
    """What `vllm serve` is started with, for one replica (TP x PP GPUs)."""

    model: ModelSpec
    gpu: GpuSpec
    tp: int = 1
    pp: int = 1
    precision: Precision = "bf16"
    kv_cache_dtype: KvCacheDtype = "auto"
    max_model_len: int | None = None
    """None: the model's max_position_embeddings (vLLM's default)."""
    max_num_seqs: int | None = None
    """None: the engine's hardware default."""
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    mm_encoder_tp_mode: EncoderTpMode = "weights"
    limit_images_per_prompt: int | None = None
    """None: vLLM's default (999 per modality, capped by max_model_len)."""
    mm_processor_options: dict[str, Any] = field(default_factory=dict)
    """Processor kwargs (e.g. max_pixels) that bound the largest image vLLM profiles."""
    api_server_count: int = 1
    """API-server processes in front of the engine (vLLM's ``--api-server-count``; its default is 1)."""

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp


def _batch_default(engine: EngineSpec, gpu: GpuSpec) -> tuple[int, int]:
    memory_gib = gpu.memory_total_mib / 1024
    for row in engine.batch_defaults:
        if memory_gib >= row.min_memory_gib and gpu.architecture not in row.excludes:
            return row.max_num_batched_tokens, row.max_num_seqs
    last = engine.batch_defaults[-1]
    return last.max_num_batched_tokens, last.max_num_seqs


def resolve(cfg: ServingConfig, engine: EngineSpec) -> ServingConfig:
    """Fill unset fields with the engine's defaults and check the combination.

    Raises RequestError for invalid values and UnsupportedError for valid ones
    the GPU or model cannot run.
    """
    tokens_default, seqs_default = _batch_default(engine, cfg.gpu)
    max_model_len = cfg.max_model_len or cfg.model.decoder.max_position_embeddings
    out = replace(
        cfg,
        max_model_len=max_model_len,
        max_num_seqs=cfg.max_num_seqs or seqs_default,
        max_num_batched_tokens=cfg.max_num_batched_tokens or tokens_default,
        gpu_memory_utilization=cfg.gpu_memory_utilization or engine.default_gpu_memory_utilization,
    )
    check(out)
    return out


def check(cfg: ServingConfig) -> None:
    d = cfg.model.decoder
    gpu = cfg.gpu
    if cfg.tp < 1 or cfg.pp < 1:
        raise RequestError(f"tp and pp must be >= 1 (got tp={cfg.tp}, pp={cfg.pp})")
    from planner.catalog.engine_support import tp_problem

    problem = tp_problem(cfg.model, cfg.tp)
    if problem:  # vLLM would refuse to start: heads, KV heads and MLP width must split over tp
        raise UnsupportedError(problem)
    if cfg.tp > gpu.gpus_per_node:
        raise UnsupportedError(
            f"tp={cfg.tp} exceeds the {gpu.gpus_per_node} {gpu.name} GPUs of one node; use pp across nodes"
        )
    if cfg.pp > d.num_layers:
        raise RequestError(f"pp={cfg.pp} exceeds the model's {d.num_layers} layers")
    if cfg.precision not in gpu.precisions:
        raise UnsupportedError(
            f"{cfg.precision} weights are not supported on {gpu.name} ({gpu.architecture}, compute "
            f"capability {gpu.compute_capability}); supported: {', '.join(gpu.precisions)}"
        )
    if cfg.kv_cache_dtype not in gpu.kv_cache_dtypes:
        raise UnsupportedError(f"kv-cache-dtype {cfg.kv_cache_dtype} is not supported on {gpu.name}")
    util = cfg.gpu_memory_utilization
    if util is not None and not 0 < util <= 1:
        raise RequestError(f"gpu-memory-utilization must be in (0, 1] (got {util})")
    if cfg.max_model_len is not None and cfg.max_model_len < 1:
        raise RequestError(f"max-model-len must be >= 1 (got {cfg.max_model_len})")
    if cfg.max_model_len is not None and cfg.max_model_len > d.max_position_embeddings:
        raise UnsupportedError(
            f"max-model-len {cfg.max_model_len} exceeds {cfg.model.name}'s max_position_embeddings "
            f"({d.max_position_embeddings})"
        )
    if cfg.max_num_seqs is not None and cfg.max_num_batched_tokens is not None:
        if cfg.max_num_batched_tokens < cfg.max_num_seqs:
            raise RequestError(
                f"max-num-batched-tokens ({cfg.max_num_batched_tokens}) must be >= max-num-seqs "
                f"({cfg.max_num_seqs})"
            )
