"""The one SLO check: does a result meet its SLOs, which one breaks, which one binds.

A result is either a simulation (``SimResult``: per-request times, whose percentiles are taken here) or anything
that carries ``Percentiles`` per metric (the analytic ``LoadPrediction``, the solver's ``SimCheck``). Both answer
the same question the same way, so `estimate`, the solver's screen, its simulator check and `whatif` cannot
disagree on what "meets the SLO" means.
"""

from __future__ import annotations

from typing import Any

from planner.load.simulator import SimResult, percentiles
from planner.spec.slo import Slo


def observed(result: Any, slo: Slo) -> float:
    """The result's value of the SLO's statistic (ms): a percentile of the simulated requests, or the predicted
    one. NaN when a simulation measured no request (then no limit holds)."""
    if isinstance(result, SimResult):
        return float(percentiles(getattr(result, f"{slo.metric}_ms"))[slo.stat])
    return float(getattr(getattr(result, slo.metric), slo.stat))


def meets(result: Any, slos: list[Slo], margin: float = 1.0) -> bool:
    """Not saturated, and every SLO's value at most ``margin`` x its limit (``margin`` < 1 asks for room to spare,
    e.g. to trust a short simulation)."""
    if result.saturated:
        return False
    return all(observed(result, s) <= margin * s.limit_ms for s in slos)


def broken(result: Any, slos: list[Slo]) -> str:
    """The first SLO the result breaks, in words (saturation before any SLO: its percentiles mean nothing);
    empty when it meets them all."""
    if result.saturated:
        return "saturated (the queue grows without bound)"
    for s in slos:
        value = observed(result, s)
        if not value <= s.limit_ms:
            return f"{s.key} {value:.1f} ms > {s.limit_ms:g} ms"
    return ""


def tightest(result: Any, slos: list[Slo]) -> tuple[float, Slo, float] | None:
    """(headroom, SLO, value) of the SLO with the least headroom, headroom being (limit - value) / limit: negative
    for a broken SLO, so the one broken furthest comes first. Ties go to the lower key. None without SLOs."""
    scored = [((s.limit_ms - value) / s.limit_ms, s, value) for s in slos for value in (observed(result, s),)]
    if not scored:
        return None
    return min(scored, key=lambda t: (t[0], t[1].key))
