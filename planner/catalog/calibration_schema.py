"""Pydantic models of the calibration catalog: the speed model's fitted constants per GPU and engine, with how
each was fitted, and how far each GPU's predictions have been checked (``validation_status.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from planner.catalog.schema import Source, Strict


class FitInfo(Strict):
    method: str
    dataset: str
    """File(s) under catalogs/calibration/measurements/ the value was fitted on."""
    n_points: int
    mape_pct: float | None = None
    fitted_on: str
    at_bound: Literal["lower", "upper"] | None = None
    """Set when the fitted value ended on an edge of the fit's box (least squares with bounds): the data pulled the
    constant past ``bound``, so the value is the bound's, not the data's. None: inside the box."""
    bound: float | None = None
    """The bound the value sits at (with ``at_bound``)."""
    unbounded_value: float | None = None
    """With ``at_bound``: the same fit with that constant's bound removed (the others kept); absent when that fit
    leaves the model's domain (e.g. a negative latency the formulas cannot evaluate)."""

    @model_validator(mode="after")
    def _bound_complete(self) -> FitInfo:
        flagged = self.at_bound is not None
        if flagged != (self.bound is not None) or (not flagged and self.unbounded_value is not None):
            raise ValueError("at_bound and bound go together (and unbounded_value only with them)")
        return self


class Constant(Strict):
    value: float
    unit: str
    fit: FitInfo | None = None
    """None: a default, not fitted; the estimate is then flagged uncalibrated."""
    note: str | None = None


CALIBRATION_CONSTANTS = (
    "gemm_compute_efficiency",
    "gemm_memory_efficiency",
    "gemm_tile_m",
    "gemm_tile_n",
    "fp8_gemm_compute_efficiency",
    "int8_gemm_compute_efficiency",
    "int4_gemm_compute_efficiency",
    "kernel_latency_us",
    "gemm_latency_us",
    "norm_kernel_latency_us",
    "broadcast_kernel_latency_us",
    "transposed_kernel_latency_us",
    "quant_latency_us",
    "graph_launch_gap_us",
    "eager_launch_us",
    "attention_prefill_compute_efficiency",
    "attention_prefill_overhead_tokens",
    "attention_softmax_head_dims",
    "attention_tile_q",
    "gemm_unaligned_efficiency",
    "attention_decode_memory_efficiency",
    "attention_decode_half_bytes",
    "elementwise_memory_efficiency",
    "elementwise_l2_efficiency",
    "l2_resident_bytes",
    "norm_memory_efficiency",
    "broadcast_memory_efficiency",
    "transposed_memory_efficiency",
    "quant_memory_efficiency",
    "allreduce_latency_us",
    "allreduce_bus_efficiency",
    "allreduce_hop_latency_us",
    "p2p_latency_us",
    "engine_step_overhead_ms",
    "frontend_ms_per_input_megapixel",
    "frontend_ms_per_processed_megapixel",
    "engine_per_seq_overhead_ms",
    "sync_step_overhead_ms",
    "sync_per_seq_overhead_ms",
    "request_latency_ms",
    "frontend_ms_per_image",
    "vision_call_overhead_ms",
    "api_server_ms_per_request",
    "api_server_ms_per_input_token",
    "api_server_ms_per_output_token",
    "api_server_ms_per_image",
    "api_server_ms_per_megapixel",
)


class Calibration(Strict):
    """Speed-model constants for one GPU under one engine release."""

    schema_version: Literal[1] = 1
    gpu: str
    """Canonical GPU name, or ``default`` for the fallback used by uncalibrated GPUs."""
    engine: str
    calibrated: bool
    constants: dict[str, Constant]
    sources: list[Source]

    @model_validator(mode="after")
    def _complete(self) -> Calibration:
        missing = [c for c in CALIBRATION_CONSTANTS if c not in self.constants]
        if missing:
            raise ValueError(f"calibration for {self.gpu} lacks {', '.join(missing)}")
        unknown = [c for c in self.constants if c not in CALIBRATION_CONSTANTS]
        if unknown:
            raise ValueError(f"calibration for {self.gpu} has unknown constants {', '.join(unknown)}")
        if self.calibrated and not any(c.fit for c in self.constants.values()):
            raise ValueError(f"calibration for {self.gpu} says calibrated but no constant has a fit")
        return self

    def value(self, name: str) -> float:
        return self.constants[name].value

    def at_fit_bound(self) -> dict[str, FitInfo]:
        """The fitted constants whose value sits at a bound of their fit (``FitInfo.at_bound``), by name."""
        return {n: c.fit for n, c in self.constants.items() if c.fit is not None and c.fit.at_bound is not None}


class ValidationStatus(Strict):
    """How far each GPU's predictions have been checked (catalogs/calibration/validation_status.yaml)."""

    schema_version: Literal[1] = 1
    real_serving: dict[str, str]
    """GPU name -> the band its real-serving check gave."""
    bands: dict[Literal["kernels", "uncalibrated"], str]
    uncalibrated_slo_margin: float = Field(ge=0, lt=1)
    """solve's default: SLO limits on uncalibrated GPUs are multiplied by 1 - this."""
    sources: list[Source]
