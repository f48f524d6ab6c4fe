"""How many replicas: the one search for the fewest replica count that passes a test.

Both the analytic screen (does each replica's share of the load meet the SLOs?) and the simulator check (does
the simulator accept that many?) ask for the first passing count of a test that only gets easier with more
replicas. ``fewest`` answers both: gallop up from a known failure, then bisect the last bracket, so a count in
the hundreds costs about 2 log2(count) tests instead of one per count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from planner.load.analytic import LoadPrediction
from planner.load.slo_check import meets
from planner.solver.request import offered, replica_limit
from planner.spec.slo import Slo
from planner.spec.workload import Workload

T = TypeVar("T")


def fewest(test: Callable[[int], T | None], bad: int, first: int, limit: int, step: int | None = None,
           hint: int | None = None) -> tuple[int, T] | None:
    """The fewest replicas r in (``bad``, ``limit``] that pass ``test``, with what it measured; None when even
    ``limit`` fails. ``bad`` is known to fail.

    The search tries ``first``; after a failure at r it tries r + step, the step doubling each time (``step``
    None: the step starts at ``first``, so the counts double). Once a count passes it bisects back to the
    last failure. With ``hint`` (the count a sibling configuration needed, above ``first``) it tries that count
    and the one below first: usually the answer is there.
    """
    hi = first
    if hint is not None and bad < hint <= limit and hint > hi:
        got = test(hint)
        if got is not None:
            below = test(hint - 1) if hint - 1 > bad else None
            return (hint, got) if below is None else _bisect(test, bad, hint - 1, below)
        bad, hi, step = hint, min(limit, hint * 2), None
        if hi <= bad:
            return None
    grow = hi if step is None else step
    got = test(hi)
    while got is None:
        if hi >= limit:
            return None
        bad, hi, grow = hi, min(limit, hi + grow), grow * 2
        got = test(hi)
    return _bisect(test, bad, hi, got)


def _bisect(test: Callable[[int], T | None], bad: int, hi: int, got: T) -> tuple[int, T]:
    """``bad`` fails, ``hi`` passes with ``got``: the first passing count between them."""
    while hi - bad > 1:
        mid = (bad + hi) // 2
        here = test(mid)
        if here is not None:
            hi, got = mid, here
        else:
            bad = mid
    return hi, got


PredictFn = Callable[[str, "float | None", "int | None"], LoadPrediction]
"""(arrival, rate per replica, clients per replica) -> the analytic prediction of one replica."""


def replicas_for(cost_pred: PredictFn, workload: Workload, slos: list[Slo], max_replicas: int,
                 max_load: float = 1.0, hint: int | None = None) -> tuple[int, LoadPrediction] | None:
    """Fewest replicas (at most ``max_replicas``) whose per-replica share of the load meets every SLO and, for
    Poisson arrivals, stays within ``max_load`` of the replica's saturation throughput.

    Latency is non-decreasing in the per-replica load, so the count is the first r that meets the SLOs. The
    search (``fewest``) starts at the capacity bound ceil(rate / (max_load x max_requests_per_s)): every count
    below it runs over the load ceiling.
    """
    if workload.arrival == "single":
        pred = cost_pred("single", None, None)
        return (1, pred) if meets(pred, slos) else None
    kind, total = offered(workload)

    def at(r: int) -> LoadPrediction:
        if kind == "closed":
            return cost_pred("closed", None, math.ceil(total / r))
        return cost_pred("poisson", total / r, None)

    def passes(r: int, p: LoadPrediction) -> bool:
        return meets(p, slos) and (kind == "closed" or total / r <= max_load * p.max_requests_per_s + 1e-12)

    def test(r: int) -> LoadPrediction | None:
        p = at(r)
        return p if passes(r, p) else None

    first = at(1)
    if passes(1, first):
        return 1, first
    if max_replicas <= 1:
        return None
    hi = max(2, math.ceil(total / (max_load * first.max_requests_per_s))) if kind == "poisson" else 2
    # Known bad: one replica, and (Poisson) every count below the capacity bound, whose load is over the ceiling.
    lo = hi - 1 if kind == "poisson" else 1
    limit = replica_limit(workload, max_replicas)
    hi = min(hi, limit)
    if hi <= lo:
        return None
    return fewest(test, lo, hi, limit, hint=hint)
