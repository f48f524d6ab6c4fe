"""What a simulation returns: per-request times and the statistics read off them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PCTS = (50, 90, 95, 99)


@dataclass(frozen=True)
class SimResult:
    """Per-request times (s) and summary statistics of one simulation."""

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    output_tokens: np.ndarray
    measured: np.ndarray
    """Boolean mask: requests inside the measurement window (warm-up and drain excluded)."""
    window_s: tuple[float, float]
    busy_seq_s: float
    """Integral of running sequences over time (for the mean batch)."""
    sim_end_s: float
    preemptions: int
    steps: int
    saturated: bool
    frontend_ms: np.ndarray | None = None
    """Per request: API-server time before the engine saw it (arrival_s is when the engine did)."""
    counted: np.ndarray | None = None
    """Closed loop: boolean mask of the completions the throughput counts (those after the window's first
    completion up to its last); None: every completion inside ``window_s``."""

    def _front(self, m: np.ndarray) -> np.ndarray | float:
        return self.frontend_ms[m] if self.frontend_ms is not None else 0.0

    @property
    def ttft_ms(self) -> np.ndarray:
        m = self.measured
        return (self.first_token_s[m] - self.arrival_s[m]) * 1e3 + self._front(m)

    @property
    def e2e_ms(self) -> np.ndarray:
        m = self.measured
        return (self.finish_s[m] - self.arrival_s[m]) * 1e3 + self._front(m)

    @property
    def tpot_ms(self) -> np.ndarray:
        m = self.measured & (self.output_tokens > 1)
        return (self.finish_s[m] - self.first_token_s[m]) / (self.output_tokens[m] - 1) * 1e3

    def _done(self) -> np.ndarray:
        if self.counted is not None:
            return self.counted
        t0, t1 = self.window_s
        return (self.finish_s >= t0) & (self.finish_s <= t1)

    @property
    def requests_per_s(self) -> float:
        t0, t1 = self.window_s
        return float(self._done().sum() / (t1 - t0)) if t1 > t0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        t0, t1 = self.window_s
        return float(self.output_tokens[self._done()].sum() / (t1 - t0)) if t1 > t0 else 0.0

    @property
    def mean_batch(self) -> float:
        return self.busy_seq_s / self.sim_end_s if self.sim_end_s > 0 else 0.0


def percentiles(x: np.ndarray) -> dict[str, float]:
    """mean, p50, p90, p95, p99 (ms); all NaN for no data."""
    if len(x) == 0:
        return {"mean": math.nan, "p50": math.nan, "p90": math.nan, "p95": math.nan, "p99": math.nan}
    q = np.percentile(x, PCTS)
    return {"mean": float(x.mean()), "p50": float(q[0]), "p90": float(q[1]), "p95": float(q[2]), "p99": float(q[3])}


def closed_window(fin: np.ndarray, lo: int, hi: int, clients: int) -> tuple[float, float, np.ndarray]:
    """Throughput window of a closed loop: from the ``lo``-th completion to a whole number of ``clients``
    completions later (as many as fit before the ``hi``-th), counting the completions after the first.

    Clients with equal requests finish in bursts of ``clients`` (lock-step waves); a window from a burst's
    first completion to another burst's last counts one burst too many (4,096 requests of 1,024 clients:
    +13%). Spanning a multiple of ``clients`` completions makes it whole cycles; without waves it is the
    usual (N - 1) / (t_N - t_1)."""
    by_fin = np.argsort(fin, kind="stable")
    span = hi - 1 - lo
    j = lo + (span // clients) * clients if span >= clients else hi - 1
    counted = np.zeros(len(fin), dtype=bool)
    counted[by_fin[lo + 1:j + 1]] = True
    return float(fin[by_fin[lo]]), float(fin[by_fin[j]]), counted


def queue_grows(arr: np.ndarray, first: np.ndarray, window: np.ndarray, arrival: str) -> bool:
    """Open loop: the queue keeps growing (TTFT of the last fifth of the window well above the first fifth's)."""
    if arrival == "closed" or len(window) < 50:
        return False
    ttft = first[window] - arr[window]
    k = len(window) // 5
    early, late = float(np.median(ttft[:k])), float(np.median(ttft[-k:]))
    return late > 2.0 * early + 0.05
