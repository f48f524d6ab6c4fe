"""Pydantic models for the YAML catalogs: GPUs, models, calibration.

Every numeric figure of a GPU carries provenance: the ``provenance`` map names,
for each figure, a key of ``sources``. The validator refuses a figure without
one, so an unexplained number cannot enter the catalog.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Precision = Literal["bf16", "fp16", "fp8", "int8", "int4"]
"""Weight precision of the decoder's linear layers.

bf16/fp16: unquantized. fp8: W8A8 fp8 (e4m3, per-tensor or per-channel).
int8: W8A8 int8 (SmoothQuant-style, compressed-tensors). int4: W4A16
(GPTQ/AWQ, group size 128, Marlin kernels)."""

KvCacheDtype = Literal["auto", "fp8"]
"""``auto`` stores KV in the model dtype (2 bytes); ``fp8`` in 1 byte."""

SourceKind = Literal["datasheet", "measured", "fitted", "price-list", "third-party", "derived", "config"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Strict):
    """Where a figure comes from."""

    kind: SourceKind
    title: str
    url: str | None = None
    retrieved: str | None = None
    """ISO date the source was read (or measured)."""
    notes: str | None = None


class Price(Strict):
    provider: str
    price_usd_per_gpu_hour: float = Field(gt=0)
    as_of: str
    url: str | None = None
    notes: str | None = None


class Interconnect(Strict):
    kind: Literal["nvlink", "pcie", "xgmi"]
    """Link used for tensor-parallel all-reduce between GPUs of one node."""
    bandwidth_gb_per_s: float = Field(gt=0)
    """Per-GPU, per-direction bandwidth (NVLink4 H100: 450 of the 900 bidirectional)."""
    latency_us: float = Field(gt=0)
    """One-way small-message latency of one all-reduce hop."""


GPU_FIGURES = (
    "memory_gb",
    "memory_total_mib",
    "hbm_bandwidth_gb_per_s",
    "bf16_dense_tflops",
    "fp16_dense_tflops",
    "fp8_dense_tflops",
    "int8_dense_tops",
    "int4_dense_tops",
    "tdp_w",
    "num_sms",
    "interconnect",
    "network_gb_per_s_per_gpu",
    "precisions",
    "price",
    "host_vcpus_per_gpu",
)


class GpuSpec(Strict):
    """One GPU model, as its datasheet and driver describe it."""

    schema_version: Literal[1] = 1
    name: str
    """Canonical name, e.g. ``H100-SXM-80GB``."""
    aliases: list[str] = []
    vendor: Literal["nvidia", "amd"]
    architecture: Literal["ampere", "ada", "hopper", "blackwell", "cdna3"]
    compute_capability: str | None
    """CUDA compute capability (``"9.0"``); ``None`` for AMD."""
    memory_gb: float = Field(gt=0)
    """Memory on the datasheet (decimal GB as marketed, e.g. 80)."""
    memory_total_mib: int = Field(gt=0)
    """Total memory the driver reports (nvidia-smi ``memory.total``); vLLM's
    ``gpu_memory_utilization`` is a fraction of this."""
    hbm_bandwidth_gb_per_s: float = Field(gt=0)
    bf16_dense_tflops: float = Field(gt=0)
    fp16_dense_tflops: float = Field(gt=0)
    fp8_dense_tflops: float | None = None
    """Dense (no sparsity) tensor-core throughput; ``None`` where the chip has no fp8."""
    int8_dense_tops: float | None = None
    int4_dense_tops: float | None = None
    tdp_w: float = Field(gt=0)
    num_sms: int = Field(ge=1)
    """Streaming multiprocessors (AMD: compute units): the waves GEMM and attention tiles run in."""
    interconnect: Interconnect
    gpus_per_node: int = Field(default=8, ge=1)
    """Largest usual node size for this GPU (tensor parallel stays inside a node)."""
    network_gb_per_s_per_gpu: float | None = Field(default=None, gt=0)
    """Scale-out network between nodes of the usual offering, per GPU and direction, in GB/s (bytes): what a KV
    cache crosses from a prefill node to a decode node. None: not known; a disaggregated plan on this GPU then
    keeps both pools inside one node (``interconnect``)."""
    precisions: list[Precision]
    """Weight precisions vLLM 0.33 can run on this GPU."""
    kv_cache_dtypes: list[KvCacheDtype]
    price: Price
    host_vcpus_per_gpu: float | None = Field(default=None, gt=0)
    """Host CPUs (logical: vCPUs, Kubernetes ``cpu`` units) a node of this GPU offers per GPU: what one replica's
    engine and API-server processes may use (the solver never plans more for a replica than ``tp * pp`` times
    this). Part of the offering, paid in the GPU-hour price. None: unknown, not limited."""
    provenance: dict[str, str]
    """Figure name (one of ``GPU_FIGURES``) -> key of ``sources``."""
    sources: dict[str, Source]

    @model_validator(mode="after")
    def _every_figure_has_a_source(self) -> GpuSpec:
        for figure in GPU_FIGURES:
            if getattr(self, figure) is None:
                continue
            key = self.provenance.get(figure)
            if key is None:
                raise ValueError(f"{self.name}: figure '{figure}' has no provenance entry")
            if key not in self.sources:
                raise ValueError(f"{self.name}: provenance of '{figure}' names unknown source '{key}'")
        return self


# --------------------------------------------------------------------------- models


class MoeSpec(Strict):
    num_experts: int = Field(ge=1)
    top_k: int = Field(ge=1)
    moe_intermediate_size: int = Field(ge=1)
    shared_expert_intermediate_size: int = 0
    """0 when the model has no shared expert."""
    num_moe_layers: int | None = None
    """Layers whose MLP is MoE; ``None`` means every layer. The other layers use
    the dense ``intermediate_size`` MLP."""


class DecoderSpec(Strict):
    """The language model, in the terms of its Hugging Face config.json."""

    family: str
    """Text-model family (llama, qwen2, qwen3, qwen3_moe, mistral, gemma3, phi3, mllama, llama4, ...)."""
    num_layers: int = Field(ge=1)
    """All decoder layers, cross-attention layers included."""
    hidden_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_kv_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    """Dense MLP width (for MoE models: of the dense layers, if any)."""
    vocab_size: int = Field(ge=1)
    tie_word_embeddings: bool = False
    max_position_embeddings: int = Field(ge=1)
    qkv_bias: bool = False
    qk_norm: bool = False
    gated_mlp: bool = True
    """SwiGLU/GeGLU (3 matrices) vs plain 2-matrix MLP."""
    moe: MoeSpec | None = None
    sliding_window: int | None = None
    """Window (tokens) of the local-attention layers (Gemma 3) or chunk size of
    chunked-attention layers (Llama 4)."""
    num_sliding_window_layers: int = 0
    """How many of ``num_layers`` attend only within ``sliding_window``."""
    cross_attention_layers: list[int] = []
    """Indices of cross-attention layers (Mllama); they hold a fixed per-image KV."""
    extra_params: int = 0
    """Parameters outside the generic count (e.g. Mllama's 8 extra embedding rows)."""

    @model_validator(mode="after")
    def _check(self) -> DecoderSpec:
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_kv_heads")
        if self.num_sliding_window_layers and self.sliding_window is None:
            raise ValueError("num_sliding_window_layers set without sliding_window")
        if self.num_sliding_window_layers + len(self.cross_attention_layers) > self.num_layers:
            raise ValueError("more special layers than layers")
        return self


class WindowAttention(Strict):
    window_patches: int = Field(ge=1)
    """Patches per attention window (before merging)."""
    full_attention_layers: list[int]


class ProjectorSpec(Strict):
    kind: Literal["mlp", "merger", "linear", "resampler"]
    input_dim: int
    """Input width (after patch merging / pixel shuffle)."""
    hidden_dim: int | None = None
    """Hidden width of a 2-layer MLP; ``None`` for a single linear."""
    output_dim: int
    params: int | None = None
    """Published parameter count, when the generic formula does not apply (resampler)."""


class VisionSpec(Strict):
    """The vision tower (ViT) and its projector."""

    encoder: str
    """Human name, e.g. ``Qwen2.5-VL ViT`` or ``SigLIP-so400m/14@384``."""
    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_heads: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    gated_mlp: bool = False
    patch_size: int = Field(ge=1)
    temporal_patch_size: int = 1
    """Qwen2-VL family: 2 (an image is duplicated into two frames)."""
    num_channels: int = 3
    window_attention: WindowAttention | None = None
    activation: Literal["gelu", "gelu_tanh", "quick_gelu", "silu"] | None = None
    """The MLP's activation (HF ``hidden_act``); only the plain-PyTorch reference profile times them apart."""
    layer_scale: bool = False
    """Per-channel layer scale after attention and MLP (InternViT's ``ls1``/``ls2``)."""
    class_token: bool = False
    """A class token is prepended to the patch embeddings (CLIP, InternViT; not SigLIP)."""
    projector: ProjectorSpec
    params: int | None = None
    """Published vision-tower parameter count, when known (overrides the formula)."""


VisualTokenRuleName = Literal[
    "qwen2_vl",
    "qwen3_vl",
    "llava",
    "llava_next",
    "llava_onevision",
    "mllama",
    "pixtral",
    "internvl",
    "gemma3",
    "phi3v",
    "idefics3",
    "minicpmv",
    "llama4",
]


class VisualTokenRule(Strict):
    """How an image of W x H pixels becomes LLM tokens; one rule per family in planner/catalog/families/."""

    rule: VisualTokenRuleName
    params: dict[str, Any]
    """Rule constants and processor defaults (e.g. ``patch_size``, ``merge_size``,
    ``min_pixels``, ``max_pixels`` for qwen2_vl; ``tile_size``, ``max_tiles`` for
    tiled rules). Users override processor options per request."""


class ModelSpec(Strict):
    schema_version: Literal[1] = 1
    name: str
    """Hugging Face id, e.g. ``Qwen/Qwen2.5-VL-7B-Instruct``."""
    aliases: list[str] = []
    kind: Literal["vlm", "llm"]
    hf_architecture: str
    """``architectures[0]`` of config.json (what vLLM dispatches on)."""
    vllm_supported: bool = True
    """False where vLLM 0.33 dropped the architecture (Mllama)."""
    trust_remote_code: bool = False
    decoder: DecoderSpec
    vision: VisionSpec | None = None
    visual_tokens: VisualTokenRule | None = None
    published_params_b: float | None = None
    """Total parameter count the model card states, billions (for checks)."""
    quantized_checkpoints: dict[str, str] = {}
    """Precision -> known pre-quantized checkpoint id (e.g. int4 -> RedHatAI/...-quantized.w4a16)."""
    sources: list[Source]

    @model_validator(mode="after")
    def _vlm_has_vision(self) -> ModelSpec:
        if self.kind == "vlm" and (self.vision is None or self.visual_tokens is None):
            raise ValueError(f"{self.name}: a vlm needs vision and visual_tokens")
        if not self.sources:
            raise ValueError(f"{self.name}: at least one source is required")
        return self


# --------------------------------------------------------------------------- engine, precisions


class BatchDefault(Strict):
    min_memory_gib: float
    max_num_batched_tokens: int
    max_num_seqs: int
    excludes: list[str] = []
    """GPU architectures this row does not apply to (vLLM treats A100 as small)."""


class HostCpu(Strict):
    """What one replica's processes need from the host, per vLLM process: the engine core, one worker per GPU when
    a replica spans several GPUs, and ``--api-server-count`` API servers (each with its multimodal processor
    cache). Every value names its source in ``sources`` (key ``host_cpu``)."""

    engine_core_vcpus: float = Field(gt=0)
    """CPUs the EngineCore process keeps busy (scheduler loop, and at TP x PP = 1 the GPU worker in-process)."""
    worker_vcpus_per_gpu: float = Field(ge=0)
    """CPUs of each GPU worker process when TP x PP > 1 (vLLM's multiprocessing executor: one process per GPU)."""
    api_server_min_vcpus: float = Field(gt=0)
    """CPUs one API-server process needs at the least: one Python event loop (the GIL) kept busy."""
    api_server_cpu_ms_per_megapixel: float = Field(ge=0)
    """CPU milliseconds (over all the process's threads) an API server spends per input megapixel: base64 and
    image decode plus the HF processor, whose torch threads make the CPU time exceed the time the process is
    held (``speed.api_server_ms_per_megapixel`` is that wall time)."""
    mm_processor_cache_gib: float = Field(ge=0)
    """vLLM's ``--mm-processor-cache-gb`` default: host RAM of the multimodal processor cache, one copy per API
    server and one in the engine core."""
    engine_memory_gib: float = Field(gt=0)
    """Host RAM of the engine core and its workers beyond the processor cache."""
    api_server_memory_gib: float = Field(gt=0)
    """Host RAM of one API-server process beyond its processor cache."""
    max_api_servers: int = Field(ge=1)
    """Most API servers the solver tries per replica."""


class EcTransferPoint(Strict):
    """One measured size of an encoder-output file moved through vLLM's ECExampleConnector."""

    megabytes: float = Field(gt=0)
    """Size of the embeddings file (1e6 bytes)."""
    save_ms: float = Field(ge=0)
    """Median time the encoder instance takes to write it (``safetensors.torch.save_file``)."""
    load_ms: float = Field(ge=0)
    """Median time the language-model instance takes to read it onto its GPU (``load_file(device="cuda")``)."""


class EncoderTransfer(Strict):
    """How an encoder-only instance (``--mm-encoder-only``) hands its embeddings to the language-model instance
    (``--ec-transfer-config``): the connector and its measured cost per embeddings file on node-local tmpfs."""

    connector: str
    """``ec_connector`` the launch configs name (vLLM's file-based ECExampleConnector)."""
    embedding_bytes_per_element: int = Field(ge=1)
    """Bytes per element of the saved embeddings (visual tokens x LM hidden size elements; bf16: 2)."""
    tmpfs: list[EcTransferPoint] = Field(min_length=2)
    """save/load medians by file size on tmpfs (``/dev/shm`` or a memory-backed emptyDir), ascending size;
    interpolated linearly in between, held below the smallest, the last segment extended above the largest."""
    source: str
    """Key into ``EngineSpec.sources``."""

    @model_validator(mode="after")
    def _ascending(self) -> EncoderTransfer:
        sizes = [p.megabytes for p in self.tmpfs]
        if sizes != sorted(sizes) or len(set(sizes)) != len(sizes):
            raise ValueError("tmpfs points must have strictly ascending megabytes")
        return self


class EngineSpec(Strict):
    """Facts about one serving-engine release that the memory model needs."""

    schema_version: Literal[1] = 1
    name: str
    version: str
    default_gpu_memory_utilization: float = Field(gt=0, le=1)
    block_size_tokens: int = Field(ge=1)
    batch_defaults: list[BatchDefault]
    non_torch_gib_tp1: float = Field(ge=0)
    non_torch_gib_tp_multi: float = Field(ge=0)
    cudagraph_gib: float = Field(ge=0)
    max_cudagraph_capture_size: int = Field(ge=1)
    logits_bytes_per_element: int = Field(ge=1)
    sampler_logits_copies: int = Field(ge=1)
    async_scheduling: bool = False
    """The scheduler decides step k + 1 while step k runs (vLLM V1's asynchronous scheduling): a request
    that arrives while the engine is busy waits for the step after next."""
    host: HostCpu | None = None
    """The host CPU and memory a replica's processes need (None: not modelled, no CPU requests emitted)."""
    encoder_transfer: EncoderTransfer | None = None
    """The encoder-disaggregated (``epd``) transfer of embeddings (None: the engine has none modelled)."""
    sources: dict[str, Source]

    @model_validator(mode="after")
    def _transfer_sourced(self) -> EngineSpec:
        if self.encoder_transfer is not None and self.encoder_transfer.source not in self.sources:
            raise ValueError(f"encoder_transfer.source '{self.encoder_transfer.source}' is not in sources")
        return self


class PrecisionBytes(Strict):
    bytes_per_weight: float = Field(gt=0)
    scale_bytes_per_weight: float = Field(ge=0)
    activation_bytes: int = Field(ge=1)
    """Bytes per activation element entering the GEMM (A8 for W8A8, A16 otherwise)."""


class PrecisionTable(Strict):
    schema_version: Literal[1] = 1
    precisions: dict[Precision, PrecisionBytes]
    sources: list[Source]
