"""Latency percentiles: the one summary every layer reports."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
