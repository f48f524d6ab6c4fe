"""When requests reach the engine: open-loop arrival times, and the wait for an API-server process."""

from __future__ import annotations

import heapq
import math

import numpy as np


def arrival_times(n: int, arrival: str, rate_per_s: float | None, trace_s: tuple[float, ...] | None,
                  seed: int) -> np.ndarray | None:
    """Open-loop arrival times (s); None for a closed loop."""
    if arrival == "poisson":
        assert rate_per_s
        rng = np.random.default_rng(seed + 7919)
        gaps = rng.exponential(1.0 / rate_per_s, n)
        gaps[0] = 0.0
        return np.cumsum(gaps)
    if arrival == "trace":
        assert trace_s
        t = np.asarray(trace_s, dtype=float)
        if len(t) >= n:
            return t[:n]
        reps = math.ceil(n / len(t))
        period = t[-1] + (t[-1] - t[0]) / max(1, len(t) - 1)
        return np.concatenate([t + k * period for k in range(reps)])[:n]
    if arrival == "single":
        return None
    if arrival == "closed":
        return None
    raise ValueError(f"arrival '{arrival}' is not single, poisson, closed or trace")


def api_queue_wait(arrival_s: np.ndarray, hold_s: np.ndarray, servers: int) -> np.ndarray:
    """Waits (s) of requests arriving at ``arrival_s`` (ascending) for ``servers`` first-come-first-served
    processes that each request holds for ``hold_s``."""
    free = [0.0] * servers
    return np.array([fcfs_start(free, a, h) - a for a, h in zip(arrival_s.tolist(), hold_s.tolist())])


def fcfs_start(free: list[float], t: float, hold: float) -> float:
    """First come, first served over servers that free up at the times in the heap ``free``: a request arriving at
    ``t`` starts at the earliest free time (or ``t``) and holds that server for ``hold``; returns its start."""
    start = max(t, heapq.heappop(free))
    heapq.heappush(free, start + hold)
    return start
