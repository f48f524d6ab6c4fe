"""What the load model reports for one replica."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _r(x: float) -> float:
    return round(float(x), 4)


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
