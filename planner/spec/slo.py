"""The solver's input grammars: SLOs and budgets, parsed in one place.

SLOs: ``ttft_p95=500ms``, ``tpot_p99=40ms``, ``e2e_p95=5s``, ``ttft=300ms``
(mean), percentiles p50/p90/p95/p99; a bare ``p95=200ms`` binds to TTFT.
Budgets: ``4xA100``, ``A100:4``, ``8xH100,16xL40S``, ``$40/h``, or both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from planner.catalog.loader import load_gpus
from planner.core.errors import RequestError

Metric = Literal["ttft", "tpot", "e2e"]
Stat = Literal["mean", "p50", "p90", "p95", "p99"]
_STATS = ("mean", "p50", "p90", "p95", "p99")
_SLO = re.compile(r"^(?:(ttft|tpot|e2e)(?:_(mean|p50|p90|p95|p99))?|(p50|p90|p95|p99|mean))\s*(?:=|<=|<)\s*"
                  r"([0-9]*\.?[0-9]+)\s*(ms|s)?$")
"""The unit is matched optionally so that a missing one gets its own message."""


MAX_SLO_MS = 86_400_000.0
"""A latency limit above one day is a typo."""
MAX_BUDGET_GPUS = 100_000
"""Most GPUs of one type a budget may list (the solver's integer model stays well inside its range)."""
MAX_BUDGET_USD_PER_HOUR = 10_000_000.0


@dataclass(frozen=True)
class Slo:
    metric: Metric
    stat: Stat
    limit_ms: float
    implicit_metric: bool = False
    """True when written as a bare percentile (``p95=200ms``), bound to TTFT."""

    @property
    def key(self) -> str:
        return f"{self.metric}_{self.stat}"

    def describe(self) -> str:
        return f"{self.metric} {self.stat} <= {self.limit_ms:g} ms"


def parse_slos(items: list[str] | None) -> list[Slo]:
    out: list[Slo] = []
    for item in items or []:
        for part in item.split(","):
            part = part.strip().lower()
            if not part:
                continue
            m = _SLO.match(part)
            if not m:
                raise RequestError(
                    f"SLO '{part}' is not METRIC_STAT=VALUE (e.g. ttft_p95=500ms, tpot_p99=40ms, e2e_p95=5s, p95=200ms)"
                )
            metric, stat, bare, value, unit = m.groups()
            if unit is None:
                raise RequestError(f"SLO '{part}' has no unit: write ms or s (e.g. {part}ms or {part}s)")
            limit = float(value) * (1000.0 if unit == "s" else 1.0)
            if limit <= 0:
                raise RequestError(f"SLO '{part}' must be positive")
            if limit > MAX_SLO_MS:
                raise RequestError(f"SLO '{part[:60]}' is out of range (at most {MAX_SLO_MS / 1000:,.0f} s)")
            if bare:
                out.append(Slo("ttft", bare, limit, implicit_metric=True))  # type: ignore[arg-type]
            else:
                out.append(Slo(metric, stat or "mean", limit))  # type: ignore[arg-type]
    keys = [s.key for s in out]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise RequestError(f"SLO given twice: {', '.join(sorted(dup))}")
    return out


@dataclass(frozen=True)
class Budget:
    inventory: dict[str, int] = field(default_factory=dict)
    """Canonical GPU name -> GPUs available. Empty: any catalog GPU, up to ``default_max_gpus`` each."""
    max_usd_per_hour: float | None = None
    default_max_gpus: int = 64

    def limit(self, gpu_name: str) -> int | None:
        """GPUs of this type allowed; None when the type is not allowed at all."""
        if not self.inventory:
            return self.default_max_gpus
        return self.inventory.get(gpu_name)

    def describe(self) -> str:
        parts = [f"{n} x {g}" for g, n in self.inventory.items()]
        if self.max_usd_per_hour is not None:
            parts.append(f"${self.max_usd_per_hour:g}/h")
        return ", ".join(parts) if parts else f"any catalog GPU (up to {self.default_max_gpus} each)"


_COUNT_X = re.compile(r"^(\d+)\s*[xX×]\s*(.+)$")
_COUNT_COLON = re.compile(r"^(.+?)\s*:\s*(\d+)$")
_COST = re.compile(r"^\$\s*([0-9]*\.?[0-9]+)\s*(?:/\s*h(?:our|r)?)?$")


def _count(digits: str, part: str) -> int:
    if len(digits.lstrip("0")) > len(str(MAX_BUDGET_GPUS)) or int(digits) > MAX_BUDGET_GPUS:
        raise RequestError(f"budget part '{part[:40]}' is out of range (at most {MAX_BUDGET_GPUS:,} GPUs of a type)")
    return int(digits)


def parse_budget(text: str | None) -> Budget:
    if not text:
        return Budget()
    inventory: dict[str, int] = {}
    cap: float | None = None
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        cost = _COST.match(part)
        if cost:
            cap = float(cost.group(1))
            if cap <= 0:
                raise RequestError(f"budget cost cap must be positive (got '{part}')")
            if cap > MAX_BUDGET_USD_PER_HOUR:
                raise RequestError(f"budget cost cap '{part[:40]}' is out of range (at most "
                                   f"${MAX_BUDGET_USD_PER_HOUR:,.0f}/h)")
            continue
        m = _COUNT_X.match(part)
        if m:
            count, name = _count(m.group(1), part), m.group(2)
        else:
            m = _COUNT_COLON.match(part)
            if not m:
                raise RequestError(
                    f"budget part '{part}' is not COUNTxGPU, GPU:COUNT or $USD/h (e.g. 4xA100, A100:4, $40/h)"
                )
            name, count = m.group(1), _count(m.group(2), part)
        if count < 1:
            raise RequestError(f"budget part '{part}' needs at least one GPU")
        if count > MAX_BUDGET_GPUS:
            raise RequestError(f"budget part '{part[:40]}' is out of range (at most {MAX_BUDGET_GPUS:,} GPUs "
                               "of a type)")
        gpu = load_gpus().get(name.strip()).name
        inventory[gpu] = min(inventory.get(gpu, 0) + count, MAX_BUDGET_GPUS)
    return Budget(inventory=inventory, max_usd_per_hour=cap)


__all__ = ["Slo", "Budget", "parse_slos", "parse_budget", "_STATS"]
