"""The solver's answer, as saved to plan.yaml and printed with --json.

A plan holds everything the emitters need to write launch configs later
(`vlmplan emit DIR/plan.yaml`), without re-running the solver.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer

from planner.catalog import DEFAULT_ENGINE
from planner.core.errors import RequestError

if TYPE_CHECKING:
    from planner.spec.workload import Workload


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A plan is read back from a file the user may have edited: every value that reaches a launch file (argv, env files,
# NIM_PASSTHROUGH_ARGS, JSON, YAML) is checked here, at load, so that every target refuses a bad one the same way.
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
QUANTIZATION_METHODS = ("fp8", "awq", "awq_marlin", "gptq", "gptq_marlin", "compressed-tensors", "bitsandbytes",
                        "marlin", "experts_int8", "fbgemm_fp8", "modelopt", "ptpc_fp8", "gguf")
"""vLLM ``--quantization`` values a plan may carry."""


def _safe_name(value: str, limit: int = 512) -> str:
    """Model ids, local paths, GPU and workload names: 1-``limit`` printable characters, not starting with '-' (a
    value can never read as an option such as --trust-remote-code). Quotes, '$' or spaces are allowed: every target
    quotes them (tests/unit/test_emit_*.py check the round trip)."""
    import unicodedata

    bad = [c for c in value if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn", "Zl", "Zp")]
    if not value or len(value) > limit or value.startswith("-") or bad:
        shown = value if len(value) <= 60 else value[:60] + "..."
        raise ValueError(f"{shown!r} is not a safe name (1-{limit} printable characters, no control character, "
                         "not starting with '-')")
    return value


def _safe_word(value: str) -> str:
    if not _SAFE_WORD.match(value):
        raise ValueError(f"{value[:60]!r} is not a plain word (letters, digits, _ . -)")
    return value


def _json_value(value: Any, depth: int = 0) -> Any:
    """A processor option: a finite number, a bool, a safe string, or a short list/mapping of those."""
    if depth > 4:
        raise ValueError("nests too deeply")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or abs(value) > 1e15:
            raise ValueError(f"{value} is not a finite number")
        return value
    if isinstance(value, str):
        return _safe_name(value, 1024)
    if isinstance(value, list) and len(value) <= 64:
        return [_json_value(v, depth + 1) for v in value]
    if isinstance(value, dict) and len(value) <= 64:
        return {_safe_word(str(k)): _json_value(v, depth + 1) for k, v in value.items()}
    raise ValueError(f"{type(value).__name__} is not a processor option value")


SafeName = Annotated[str, AfterValidator(_safe_name)]
Label = Annotated[str, AfterValidator(lambda v: _safe_name(v, 200))]
SafeWord = Annotated[str, AfterValidator(_safe_word)]


class PercentilesMs(_Frozen):
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float


class PredictedMemory(_Frozen):
    weights_gib: float
    kv_cache_gib: float
    activations_gib: float
    overhead_gib: float
    total_gib: float
    kv_capacity_tokens: int


class Predicted(_Frozen):
    ttft_ms: PercentilesMs
    tpot_ms: PercentilesMs
    e2e_ms: PercentilesMs
    requests_per_s: float
    output_tokens_per_s: float
    memory: PredictedMemory


class Simulated(_Frozen):
    """The discrete-event simulator's check of one replica at its share of the load (``Predicted`` is the
    analytic model's)."""

    ttft_ms: PercentilesMs
    tpot_ms: PercentilesMs
    e2e_ms: PercentilesMs
    requests_per_s: float
    """All replicas together."""
    requests_simulated: int
    seed: int
    saturated: bool
    meets_slos: bool
    failed: str = ""
    """The first SLO the simulation breaks (empty when it meets them all)."""


class ImageSpec(_Frozen):
    width: int = Field(ge=1, le=1 << 20)
    height: int = Field(ge=1, le=1 << 20)


class WeightedImage(_Frozen):
    width: int = Field(ge=1, le=1 << 20)
    height: int = Field(ge=1, le=1 << 20)
    weight: float = Field(gt=0, le=1e9)
    """Relative frequency among the workload's images."""


class Traffic(_Frozen):
    """The planned workload as a benchmark replays it: what ``verify.sh`` sends (``planner.emit.verify``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    arrival: Literal["single", "poisson", "closed", "trace"]
    rate_per_s: float | None = Field(default=None, gt=0)
    """All replicas together (a trace: its mean rate)."""
    concurrency: int | None = Field(default=None, ge=1)
    """Closed-loop clients, all replicas together."""
    prompt_tokens: int = Field(ge=0)
    """Mean text tokens per prompt (visual tokens come on top)."""
    prompt_tokens_range: tuple[int, int]
    output_tokens: int = Field(ge=1)
    output_tokens_range: tuple[int, int]
    images_per_request: float = Field(default=0.0, ge=0)
    """Mean."""
    images_per_request_range: tuple[int, int] = (0, 0)
    image_sizes: list[WeightedImage] = []
    prefix_cache_hit: float = Field(default=0.0, ge=0, lt=1)
    shared_prefix_tokens: int = Field(default=0, ge=0)
    """Text tokens every prompt starts with (part of ``prompt_tokens``)."""
    repeated_image_fraction: float = Field(default=0.0, ge=0, le=1)
    """Share of requests that repeat an image already sent."""


class HostResources(_Frozen):
    """What one replica needs from its node beside the GPUs (``perf.hostcpu``); the Kubernetes targets request it."""

    vcpus: float = Field(gt=0, le=1 << 16)
    """CPUs (logical; Kubernetes cpu units) of the engine core, its workers and every API server busy at once."""
    vcpus_per_api_server: float = Field(gt=0, le=1 << 10)
    """CPUs one busy API server uses for the planned requests (image work runs the processor's threads)."""
    vcpus_offered: float | None = Field(default=None, gt=0, le=1 << 16)
    """CPUs the GPU offering's node has for one replica (None: the catalog does not say)."""
    memory_gib: float = Field(gt=0, le=1 << 20)
    """Host RAM: the engine's, the multimodal processor cache per API server and in the engine core, the API
    servers' own."""
    mm_processor_cache_gib: float = Field(ge=0, le=1 << 20)
    """vLLM's --mm-processor-cache-gb (its default; one copy per API server and one in the engine core)."""


class SpeculativePlan(_Frozen):
    """Speculative decoding of a deployment: what vLLM's ``--speculative-config`` gets, and what the plan assumed."""

    method: Literal["ngram", "eagle", "eagle3", "mtp"]
    num_speculative_tokens: int = Field(ge=1, le=16)
    draft_model: SafeName | None = None
    """Hugging Face id of the draft checkpoint (ngram and MTP take none)."""
    extra_config: dict[SafeWord, Annotated[int, Field(ge=0, le=1 << 16)]] = {}
    """Further ``--speculative-config`` keys (ngram's prompt-lookup window)."""
    acceptance_rate: float = Field(gt=0, lt=1)
    """Per-token draft acceptance the plan assumed (the workload's; check it on real traffic)."""
    tokens_per_step: float = Field(ge=1, le=17)
    """Tokens a sequence gains per verify step at that acceptance."""

    def config_json(self) -> dict[str, Any]:
        """The ``--speculative-config`` object."""
        out: dict[str, Any] = {"method": self.method, "num_speculative_tokens": self.num_speculative_tokens}
        if self.draft_model:
            out["model"] = self.draft_model
        out.update(self.extra_config)
        return out


class DeploymentPlan(_Frozen):
    """One workload's chosen deployment: ``replicas`` copies of a TP x PP engine."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    workload: Label
    model: SafeName
    """Catalog id (Hugging Face id) or local path the user gave."""
    served_model: SafeName
    """What the engine loads: the HF id, or a pre-quantized checkpoint id for int4/int8/fp8."""
    hf_architecture: SafeWord
    vllm_supported: bool = True
    trust_remote_code: bool = False
    gpu: SafeName
    gpu_aliases: list[SafeName] = []
    gpu_memory_gib: float = Field(gt=0, le=1 << 20)
    gpus_per_replica: int = Field(ge=1, le=1 << 20)
    gpus_per_node: int = Field(ge=1, le=1024)
    tp: int = Field(ge=1, le=1024)
    pp: int = Field(ge=1, le=1024)
    replicas: int = Field(ge=1, le=1 << 20)
    precision: Literal["bf16", "fp16", "fp8", "int8", "int4"]
    quantization: Literal[QUANTIZATION_METHODS] | None = None  # type: ignore[valid-type]
    """vLLM ``--quantization`` value when the checkpoint needs it online (fp8 of a bf16 checkpoint); None when the
    checkpoint carries its own quantization_config."""
    kv_cache_dtype: Literal["auto", "fp8"]
    max_num_seqs: int = Field(ge=1, le=1 << 20)
    max_model_len: int = Field(ge=1, le=1 << 30)
    max_num_batched_tokens: int = Field(ge=1, le=1 << 30)
    gpu_memory_utilization: float = Field(gt=0, le=1)
    enable_prefix_caching: bool = True
    prefix_caching_reason: Annotated[str, Field(max_length=400)] = ""
    """Why prefix caching is on or off, with the prompt tokens per request the plan counts on reading from it."""
    enable_chunked_prefill: bool = True
    mm_encoder_tp_mode: Literal["weights", "data"] = "weights"
    limit_mm_per_prompt: dict[SafeWord, Annotated[int, Field(ge=0, le=1 << 20)]] = {}
    """e.g. {"image": 2, "video": 0}; empty for text models."""
    mm_processor_kwargs: dict[SafeWord, Any] = {}
    """Caps matching the planned image sizes (e.g. {"max_pixels": 1003520})."""
    images: list[ImageSpec] = []
    cost_per_hour: float = Field(ge=0)
    """USD per hour for all replicas."""
    price_usd_per_gpu_hour: float = Field(ge=0)
    api_server_count: int = Field(default=1, ge=1, le=256)
    """vLLM ``--api-server-count``: API-server processes per replica (the solver's choice)."""
    speculative: SpeculativePlan | None = None
    """Speculative decoding (None: off; the key is then left out of the file)."""
    host: HostResources | None = None
    """CPUs and host memory per replica (None: plans written before they were modelled)."""
    predicted: Predicted
    simulated: Simulated | None = None
    """None when the deployment was not simulated (e.g. alternatives, or ``solve`` run without the check)."""
    slos: list[Annotated[str, Field(pattern=r"^[a-z0-9_<=.]{1,64}$")]] = []
    """The SLOs this deployment was sized for (e.g. ``ttft_p95<=500ms``)."""
    calibration: Literal["real-serving", "kernels", "uncalibrated", ""] = ""
    """How far the GPU's predictions have been checked (catalogs/calibration/validation_status.yaml)."""
    error_band: str = Field(default="", max_length=400)
    """The error that status implies, in words with the measured numbers."""
    traffic: Traffic | None = None
    """The workload it was sized for (None in plans written before vlmplan wrote ``verify.sh``)."""

    @field_validator("mm_processor_kwargs")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        return {k: _json_value(x) for k, x in v.items()}

    @model_serializer(mode="wrap")
    def _without_speculation(self, handler: Any) -> Any:
        """A plan without speculation reads as before the field existed."""
        data = handler(self)
        if isinstance(data, dict) and data.get("speculative", 0) is None:
            del data["speculative"]
        return data

    def launch_limits(self) -> str:
        """What the launch flags refuse or change, in one line: the limits come from the planned workload, so a
        request beyond them is rejected (context) or downscaled (pixels), which the user should know before
        serving other traffic with this plan."""
        parts = [f"a prompt plus output over {self.max_model_len:,} tokens is rejected (--max-model-len; "
                 f"`solve --max-model-len model` plans for the model's own context)"]
        images = self.limit_mm_per_prompt.get("image")
        if images is not None:
            parts.append(f"more than {images} image(s) per prompt are rejected (--limit-mm-per-prompt)")
        pixels = self.mm_processor_kwargs.get("max_pixels")
        if isinstance(pixels, (int, float)):
            parts.append(f"images over {int(pixels):,} pixels are downscaled before the encoder (max_pixels)")
        return "limits: " + "; ".join(parts)


class PdPlan(_Frozen):
    """A prefill/decode-disaggregated deployment: two pools, the KV cache pulled from one to the other."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    prefill: DeploymentPlan
    decode: DeploymentPlan
    link: Annotated[str, Field(pattern=r"^[a-z0-9 -]{1,64}$")]
    link_gb_per_s: float = Field(gt=0)
    transfer_ms: float = Field(ge=0)
    """Mean KV transfer time of one request."""
    link_load: float = Field(ge=0)
    prefill_held_kv_tokens: float = Field(ge=0)
    """KV tokens a prefill replica holds for requests waiting to be pulled: the extra memory of the split."""
    cost_per_hour: float = Field(ge=0)
    predicted: Predicted
    simulated: Simulated | None = None


class EpdPlan(_Frozen):
    """An encoder-disaggregated deployment: ``lm.replicas`` units, each one LM replica and ``encoders_per_replica``
    encoder-only instances (one GPU each, same GPU type) in one pod, embeddings passed through a memory-backed
    volume (vLLM's ECExampleConnector)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    lm: DeploymentPlan
    """The language-model replicas (predicted on requests whose images are already encoded)."""
    encoders_per_replica: int = Field(ge=1)
    encoder_gpu: str
    encoder_precision: str
    connector: str
    encode_ms: float = Field(ge=0)
    """Mean encoder service of a request with images."""
    transfer_ms: float = Field(ge=0)
    """Mean save + load of such a request's embeddings (measured tmpfs table)."""
    encoder_load: float = Field(ge=0)
    encoder_delay_ms: PercentilesMs
    """Encoder wait + encode + transfer, per statistic."""
    stable: bool
    """One encoder per LM replica: the shape vLLM calls stable (1E1PD)."""
    cost_per_hour: float = Field(ge=0)
    predicted: Predicted
    simulated: Simulated | None = None


class Plan(_Frozen):
    schema_version: Literal[1] = 1
    status: Literal["optimal", "feasible", "infeasible"]
    objective: Literal["cost", "gpus", "latency"] = "cost"
    max_load: float | None = None
    """Ceiling on each replica's offered load (fraction of its saturation throughput) the replicas were sized with."""
    cost_per_hour: float
    deployments: list[DeploymentPlan]
    binding: list[str] = []
    """Constraints that bind at the optimum, in words with numbers."""
    alternatives: list[DeploymentPlan] = []
    engine: str = DEFAULT_ENGINE
    notes: list[str] = []
    topology: Literal["aggregated", "pd", "epd"] = "aggregated"
    """What the launch configs start: ``deployments`` (aggregated) or ``pd``. With pd, ``deployments`` holds the
    best aggregated plan for comparison (empty when there is none)."""
    pd: PdPlan | None = None
    """The best prefill/decode-disaggregated deployment found (``solve --topologies ...,pd``), chosen or not."""
    epd: EpdPlan | None = None
    """The best encoder-disaggregated deployment found (``solve --topologies ...,epd``), chosen or not."""

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())

    @classmethod
    def load(cls, path: Path) -> Plan:
        from planner.core.inputs import clip, first_problem, load_yaml_file

        data = load_yaml_file(path, "plan")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            loc, value, msg = first_problem(exc)
            shown = f" = {clip(repr(value), 60)}" if not isinstance(value, (dict, list)) else ""
            raise RequestError(f"{path}: not a valid vlmplan plan ({loc}{shown}: {clip(msg, 200)})") from None


def traffic_of(workload: Workload) -> Traffic:
    """The workload's arrivals and request shape as a benchmark replays them: means and ranges of the lengths, the
    image sizes with their frequencies."""
    arrival, rate, clients = workload.arrival, workload.rate_per_s, workload.concurrency
    if arrival == "trace":
        rate = rate or workload.trace_rate_per_s
    prompt = workload.prompt_tokens_dist
    out = workload.output_tokens_dist
    per = workload.images_per_request_dist
    if workload.image_size_dist is not None:
        dist = workload.image_size_dist
        sizes = [WeightedImage(width=s.width, height=s.height, weight=round(float(p), 6))
                 for s, p in zip(dist.values, dist.probabilities()) if p > 0]
    else:
        counts: dict[tuple[int, int], int] = {}
        for im in workload.images:
            counts[(im.width, im.height)] = counts.get((im.width, im.height), 0) + 1
        sizes = [WeightedImage(width=w, height=h, weight=float(n)) for (w, h), n in counts.items()]
    return Traffic(
        arrival=arrival, rate_per_s=rate if arrival != "closed" else None,
        concurrency=clients if arrival == "closed" else None,
        prompt_tokens=round(prompt.mean()) if prompt else workload.prompt_tokens,
        prompt_tokens_range=(min(prompt.values), max(prompt.values)) if prompt else (workload.prompt_tokens,) * 2,
        output_tokens=max(1, round(out.mean())) if out else workload.output_tokens,
        output_tokens_range=(min(out.values), max(out.values)) if out else (workload.output_tokens,) * 2,
        images_per_request=round(per.mean(), 4) if per else float(len(workload.images)),
        images_per_request_range=(min(per.values), max(per.values)) if per else (len(workload.images),) * 2,
        image_sizes=sizes if (per is None or max(per.values) > 0) else [],
        prefix_cache_hit=workload.prefix_cache_hit,
        shared_prefix_tokens=workload.shared_prefix_tokens,
        repeated_image_fraction=workload.repeated_image_fraction,
    )
