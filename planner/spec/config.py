"""One replica's serving configuration: what is asked for (``ServingConfig``) and what the engine runs with
(``ResolvedConfig``, made only by ``resolve``)."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from pydantic import BaseModel

from planner.catalog.schema import EngineSpec, GpuSpec, KvCacheDtype, ModelSpec, Precision
from planner.core.errors import RequestError, UnsupportedError

EncoderTpMode = Literal["weights", "data"]

VLLM_MM_LIMIT_DEFAULT = 999
"""Items per modality vLLM allows in one prompt when ``--limit-mm-per-prompt`` is not given."""


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding of one replica (vLLM's ``--speculative-config``): a draft proposes
    ``num_speculative_tokens`` tokens per sequence and step, the target verifies them in one forward pass."""

    method: str
    """``ngram``, ``eagle``, ``eagle3`` or ``mtp`` (catalogs/speculative)."""
    num_speculative_tokens: int
    """Draft tokens per sequence and step (k)."""
    acceptance_rate: float
    """Per-token chance a draft token is accepted given the ones before it were, in (0, 1): a property of the
    workload's text, a catalog default unless the user gave one."""
    draft_model: str | None = None
    """Hugging Face id of the draft checkpoint (None: ngram and MTP need none)."""
    draft_layers: int = 0
    """Decoder layers the draft runs per draft token, each the size of one target layer (0: no GPU draft)."""
    draft_vocab_size: int | None = None
    """Rows of the draft's lm_head; None: the target's vocabulary."""
    draft_params_b: float = 0.0
    """Parameters the draft adds to each GPU's weights (replicated over TP as vLLM shards it), billions."""
    extra_config: tuple[tuple[str, int], ...] = ()
    """Further ``--speculative-config`` keys, as (key, value) pairs."""
    draft_rate: float = 1.0
    """Share of a decoding sequence's steps that carry a draft, in (0, 1]: 1 for methods that draft every step
    (EAGLE, MTP); n-gram drafts only where its lookup matches (a property of the workload, like acceptance)."""

    def config_json(self) -> dict[str, object]:
        """The ``--speculative-config`` object vLLM reads."""
        out: dict[str, object] = {"method": self.method, "num_speculative_tokens": self.num_speculative_tokens}
        if self.draft_model:
            out["model"] = self.draft_model
        out.update(dict(self.extra_config))
        return out


@dataclass(frozen=True)
class ServingConfig:
    """What `vllm serve` is asked to start with, for one replica (TP x PP GPUs): None leaves a setting to the
    engine's default, which ``resolve`` fills in."""

    model: ModelSpec
    """The model served."""
    gpu: GpuSpec
    """The GPU type of every GPU of the replica."""
    tp: int = 1
    """Tensor-parallel size."""
    pp: int = 1
    """Pipeline-parallel size."""
    precision: Precision = "bf16"
    """Weight precision."""
    kv_cache_dtype: KvCacheDtype = "auto"
    """KV-cache element type (``auto``: the activations' 16 bits)."""
    max_model_len: int | None = None
    """None: the model's max_position_embeddings (vLLM's default)."""
    max_num_seqs: int | None = None
    """None: the engine's hardware default."""
    max_num_batched_tokens: int | None = None
    """None: the engine's hardware default."""
    gpu_memory_utilization: float | None = None
    """None: the engine's default."""
    mm_encoder_tp_mode: EncoderTpMode = "weights"
    """How the vision encoder uses the TP GPUs (``ResolvedConfig.mm_encoder_tp_mode``)."""
    limit_images_per_prompt: int | None = None
    """None: vLLM's default (999 per modality, capped by max_model_len)."""
    mm_processor_options: dict[str, Any] = field(default_factory=dict)
    """Processor kwargs (e.g. max_pixels) that bound the largest image vLLM profiles."""
    api_server_count: int = 1
    """API-server processes in front of the engine (vLLM's ``--api-server-count``; its default is 1)."""
    speculative: Speculation | None = None
    """Speculative decoding (None: off, vLLM's default)."""
    enable_prefix_caching: bool = True
    """vLLM's automatic prefix caching (``--enable-prefix-caching``, on by default): prompt blocks already in the
    KV cache are reused instead of recomputed."""
    kv_block_tokens: int | None = None
    """Tokens per KV-cache block (the prefix cache hits whole blocks); None: the engine's default."""

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp

    @property
    def effective_max_model_len(self) -> int:
        """The max_model_len the engine will use: the one asked for, else the model's context."""
        return self.max_model_len or self.model.decoder.max_position_embeddings


@dataclass(frozen=True)
class ResolvedConfig:
    """What one replica runs with, every engine default filled in. Made only by ``resolve``: everything below
    that point (memory, step times, load models, the solver's candidates) takes this, never a
    ``ServingConfig``."""

    model: ModelSpec
    """The model served."""
    gpu: GpuSpec
    """The GPU type of every GPU of the replica."""
    tp: int
    """Tensor-parallel size (GPUs per pipeline stage)."""
    pp: int
    """Pipeline-parallel size (stages)."""
    precision: Precision
    """Weight precision."""
    kv_cache_dtype: KvCacheDtype
    """KV-cache element type (``auto``: the activations' 16 bits)."""
    max_model_len: int
    """Longest sequence (prompt + output tokens) the engine accepts."""
    max_num_seqs: int
    """Sequences the engine schedules at once."""
    max_num_batched_tokens: int
    """Tokens one engine step may process (>= max_num_seqs)."""
    gpu_memory_utilization: float
    """Fraction of each GPU's memory the engine may use, in (0, 1]."""
    mm_encoder_tp_mode: EncoderTpMode
    """How the vision encoder uses the TP GPUs: split its weights, or run a full copy per GPU on its share of
    the images."""
    limit_images_per_prompt: int | None
    """Images one prompt may carry, as passed to vLLM's ``--limit-mm-per-prompt``. None: the flag is not
    passed and vLLM's own limit holds (``images_per_prompt``); not a missing value."""
    mm_processor_options: Mapping[str, Any]
    """Processor kwargs (e.g. max_pixels) that bound the largest image vLLM profiles."""
    api_server_count: int
    """API-server processes in front of the engine."""
    speculative: Speculation | None = None
    """Speculative decoding (None: off)."""
    enable_prefix_caching: bool = True
    """Prompt blocks already in the KV cache are reused (vLLM's automatic prefix caching)."""
    kv_block_tokens: int = 16
    """Tokens per KV-cache block: the prefix cache hits whole blocks only."""
    async_scheduling: bool = True
    """The engine schedules step k + 1 while step k runs (vLLM's asynchronous scheduler): the engine's default,
    off where the speculative method disables it (catalogs/speculative: ``disables_async_scheduling``). Set only
    by ``resolve``; the simulator and the analytic model both read it."""

    @property
    def num_gpus(self) -> int:
        """GPUs of one replica."""
        return self.tp * self.pp

    @property
    def kv_bytes_per_element(self) -> int:
        """Bytes of one K or V element in the cache (the one place this rule lives)."""
        return 1 if self.kv_cache_dtype == "fp8" else 2

    @property
    def images_per_prompt(self) -> int:
        """The image limit vLLM applies to one prompt (before max_model_len caps it)."""
        limit = self.limit_images_per_prompt
        return VLLM_MM_LIMIT_DEFAULT if limit is None else limit

    def cache_key(self, ignore: Collection[str] = ()) -> tuple[Hashable, ...]:
        """A hashable key built from every field but those named in ``ignore``: two configs with equal keys run
        identically (for what the left-out fields do not change). A field added later joins the key by
        itself."""
        unknown = set(ignore) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"cache_key: no such field(s) {sorted(unknown)}")
        return tuple((f.name, _key_part(getattr(self, f.name))) for f in fields(self) if f.name not in ignore)


_SPEC_KEYS: dict[int, tuple[BaseModel, Hashable]] = {}
"""The content key of each catalog spec seen, by object: the specs are frozen, and the entry holds the object, so
its id is not reused while the entry lives. (Serialising a model spec costs ~0.1 ms; a solve asks thousands of
times.)"""


def _key_part(value: Any) -> Hashable:
    """A hashable stand-in for one field's value: catalog specs by their full content (two specs with one name
    may differ, e.g. a GPU with an overridden price), mappings as sorted pairs."""
    if isinstance(value, BaseModel):
        hit = _SPEC_KEYS.get(id(value))
        if hit is None or hit[0] is not value:
            assert value.model_config.get("frozen"), f"cache_key: {type(value).__name__} is not frozen"
            hit = _SPEC_KEYS[id(value)] = (value, (type(value).__name__, value.model_dump_json()))
        return hit[1]
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), repr(v)) for k, v in value.items()))
    assert isinstance(value, Hashable), f"cache_key: unhashable field value {value!r}"
    return value


def _batch_default(engine: EngineSpec, gpu: GpuSpec) -> tuple[int, int]:
    memory_gib = gpu.memory_total_mib / 1024
    for row in engine.batch_defaults:
        if memory_gib >= row.min_memory_gib and gpu.architecture not in row.excludes:
            return row.max_num_batched_tokens, row.max_num_seqs
    last = engine.batch_defaults[-1]
    return last.max_num_batched_tokens, last.max_num_seqs


def resolve(cfg: ServingConfig, engine: EngineSpec) -> ResolvedConfig:
    """Fill unset fields with the engine's defaults and check the combination.

    Raises RequestError for invalid values and UnsupportedError for valid ones
    the GPU or model cannot run.
    """
    tokens_default, seqs_default = _batch_default(engine, cfg.gpu)
    # Every field carries over as asked (a field only one of the two classes has is a TypeError here)...
    asked = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    out = ResolvedConfig(**{
        **asked,
        # ... except those the engine defaults.
        "max_model_len": cfg.effective_max_model_len,
        "max_num_seqs": cfg.max_num_seqs or seqs_default,
        "max_num_batched_tokens": cfg.max_num_batched_tokens or tokens_default,
        "gpu_memory_utilization": cfg.gpu_memory_utilization or engine.default_gpu_memory_utilization,
        "kv_block_tokens": cfg.kv_block_tokens or engine.block_size_tokens,
        "async_scheduling": engine.async_scheduling and not _disables_async(cfg.speculative, engine),
    })
    check(out)
    return out


def _disables_async(spec: Speculation | None, engine: EngineSpec) -> bool:
    """Whether ``spec``'s method makes the engine schedule synchronously (vLLM turns its asynchronous scheduler off
    for every method but EAGLE/MTP-style drafts; catalogs/speculative)."""
    if spec is None:
        return False
    from planner.catalog.speculative import load_speculative

    method = load_speculative(engine.name).methods.get(spec.method)  # type: ignore[call-overload]
    return bool(method is not None and method.disables_async_scheduling)


def check(cfg: ResolvedConfig) -> None:
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
    if not 0 < util <= 1:
        raise RequestError(f"gpu-memory-utilization must be in (0, 1] (got {util})")
    if cfg.max_model_len < 1:
        raise RequestError(f"max-model-len must be >= 1 (got {cfg.max_model_len})")
    if cfg.max_model_len > d.max_position_embeddings:
        raise UnsupportedError(
            f"max-model-len {cfg.max_model_len} exceeds {cfg.model.name}'s max_position_embeddings "
            f"({d.max_position_embeddings})"
        )
    spec = cfg.speculative
    if spec is not None:
        if spec.num_speculative_tokens < 1:
            raise RequestError(f"num_speculative_tokens must be >= 1 (got {spec.num_speculative_tokens})")
        if not 0 < spec.acceptance_rate < 1:
            raise RequestError(f"acceptance rate must be in (0, 1) (got {spec.acceptance_rate})")
        if not 0 < spec.draft_rate <= 1:
            raise RequestError(f"draft rate must be in (0, 1] (got {spec.draft_rate})")
        if cfg.pp > 1:
            raise UnsupportedError(f"speculative decoding ({spec.method}) is not planned with pipeline "
                                   f"parallelism (pp={cfg.pp}); use tp only")
    if cfg.max_num_batched_tokens < cfg.max_num_seqs:
        raise RequestError(
            f"max-num-batched-tokens ({cfg.max_num_batched_tokens}) must be >= max-num-seqs "
            f"({cfg.max_num_seqs})"
        )
