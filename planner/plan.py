"""The solver's answer, as saved to plan.yaml and printed with --json.

A plan holds everything the emitters need to write launch configs later
(`vlmplan emit DIR/plan.yaml`), without re-running the solver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.errors import RequestError


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    width: int
    height: int


class DeploymentPlan(_Frozen):
    """One workload's chosen deployment: ``replicas`` copies of a TP x PP engine."""

    workload: str
    model: str
    """Catalog id (Hugging Face id) or local path the user gave."""
    served_model: str
    """What the engine loads: the HF id, or a pre-quantized checkpoint id for int4/int8/fp8."""
    hf_architecture: str
    vllm_supported: bool = True
    trust_remote_code: bool = False
    gpu: str
    gpu_aliases: list[str] = []
    gpu_memory_gib: float
    gpus_per_replica: int = Field(ge=1)
    gpus_per_node: int = Field(ge=1)
    tp: int = Field(ge=1)
    pp: int = Field(ge=1)
    replicas: int = Field(ge=1)
    precision: Literal["bf16", "fp16", "fp8", "int8", "int4"]
    quantization: str | None = None
    """vLLM ``--quantization`` value when the checkpoint needs it online (fp8 of a bf16 checkpoint); None when the
    checkpoint carries its own quantization_config."""
    kv_cache_dtype: Literal["auto", "fp8"]
    max_num_seqs: int
    max_model_len: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    mm_encoder_tp_mode: Literal["weights", "data"] = "weights"
    limit_mm_per_prompt: dict[str, int] = {}
    """e.g. {"image": 2, "video": 0}; empty for text models."""
    mm_processor_kwargs: dict[str, Any] = {}
    """Caps matching the planned image sizes (e.g. {"max_pixels": 1003520})."""
    images: list[ImageSpec] = []
    cost_per_hour: float
    """USD per hour for all replicas."""
    price_usd_per_gpu_hour: float
    predicted: Predicted
    simulated: Simulated | None = None
    """None when the deployment was not simulated (e.g. alternatives, or ``solve`` run without the check)."""
    slos: list[str] = []
    """The SLOs this deployment was sized for (e.g. ``ttft_p95<=500ms``)."""


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
    engine: str = "vllm-0.33"
    notes: list[str] = []

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())

    @classmethod
    def load(cls, path: Path) -> Plan:
        from planner.inputs import load_yaml_file

        data = load_yaml_file(path, "plan")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise RequestError(f"{path}: not a vlmplan plan ({loc}: {first['msg']})") from None
