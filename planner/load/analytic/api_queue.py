"""The replica's API-server processes as a queue, and the request's path outside the engine."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from planner.load.analytic.mixture import (
    Atoms,
    with_wait,
)
from planner.load.analytic.prediction import LoadPrediction
from planner.perf.frontend import api_server_ms
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape


@dataclass(frozen=True)
class ApiQueue:
    """The replica's API-server processes: ``servers`` first-come-first-served servers that each request holds
    for ``hold_ms`` on average (``speed.api_server_ms``), with squared coefficient of variation ``cs2``."""

    servers: int
    hold_ms: float
    cs2: float

    @staticmethod
    def of(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape) -> ApiQueue:
        def one(s: RequestShape) -> float:
            return api_server_ms(cost.cal, s.text_tokens, s.output_tokens, s.images, s.input_megapixels)

        if shape.classes:
            p = np.array([q for q, _ in shape.classes])
            v = np.array([one(c) for _, c in shape.classes])
            mean = float(p @ v)
            cs2 = max(0.0, float(p @ v**2) - mean * mean) / mean**2 if mean > 0 else 0.0
        else:
            mean, cs2 = one(shape), 0.0
        return ApiQueue(servers=max(1, int(cfg.api_server_count)), hold_ms=mean, cs2=cs2)

    @property
    def max_rate(self) -> float:
        """Requests/s at which the API servers are busy all the time."""
        return self.servers * 1e3 / self.hold_ms if self.hold_ms > 0 else math.inf

    def wait(self, lam_ms: float) -> tuple[float, float]:
        """P(a Poisson arrival waits) and its mean wait given that it does (ms): Erlang C, with the wait scaled
        by (1 + cs2) / 2 for a service that is not exponential (Allen-Cunneen's approximation of M/G/c)."""
        c = self.servers
        a = lam_ms * self.hold_ms
        if self.hold_ms <= 0 or a <= 0:
            return 0.0, 0.0
        if a >= c:
            return 1.0, math.inf
        term, total = 1.0, 1.0
        for k in range(1, c):
            term *= a / k
            total += term
        last = term * a / c / (1 - a / c)
        p_wait = last / (total + last)
        return p_wait, self.hold_ms / (c - a) * (1 + self.cs2) / 2

    def with_wait(self, w: np.ndarray, lo: np.ndarray, width: np.ndarray, lam_ms: float) -> Atoms:
        """Atoms of a time plus the wait of a Poisson arrival for an API server. Given that it waits, the wait is
        the rest of the service ahead of it (uniform, mean E[S^2] / 2E[S] / servers: what a light load sees)
        plus, for the rest of the mean, whole services ahead of it (exponential: what a heavy load sees)."""
        p_wait, mean_w = self.wait(lam_ms)
        if p_wait <= 1e-4 or not math.isfinite(mean_w):
            return w, lo, width
        rest = min(mean_w, self.hold_ms * (1 + self.cs2) / 2 / self.servers)
        # The requests that wait: the residual (uniform, width 2 x rest), then whole services (exponential).
        ww, wlo, wwidth = with_wait(w * p_wait, lo, width + 2 * rest, 1.0, max(0.0, mean_w - rest))
        return np.concatenate([w * (1 - p_wait), ww]), np.concatenate([lo, wlo]), np.concatenate([width, wwidth])

    def closed_loop(self, pred: LoadPrediction, clients: int) -> LoadPrediction:
        """A closed loop through the API servers: below their capacity each request waits as a Poisson arrival
        at the loop's rate would (mean wait added to TTFT and e2e); at it, the loop runs at their capacity and the
        clients' extra cycle time is the wait."""
        if self.hold_ms <= 0 or pred.requests_per_s <= 0:
            return pred
        rate = pred.requests_per_s
        if rate < self.max_rate * 0.98:
            p_wait, mean_w = self.wait(rate * 1e-3)
            extra = p_wait * mean_w
        else:
            rate = self.max_rate * 0.98
            extra = clients * 1e3 / rate - pred.e2e.mean
        if not math.isfinite(extra) or extra <= 0:
            return pred
        slow = pred.e2e.mean / (pred.e2e.mean + extra)
        return replace(pred, ttft=pred.ttft.shifted(extra), e2e=pred.e2e.shifted(extra),
                       requests_per_s=pred.requests_per_s * slow,
                       output_tokens_per_s=pred.output_tokens_per_s * slow)


def with_frontend(pred: LoadPrediction, fe_ms: float, closed: bool = False) -> LoadPrediction:
    """The request's path outside the engine delays it by ``fe_ms``: TTFT and e2e shift by it (an independent
    delay per request leaves Poisson arrivals Poisson, so an open loop's throughput does not change); a closed
    loop's clients spend it out of the engine, so each client's cycle is that much longer."""
    if fe_ms <= 0:
        return pred
    if closed and pred.e2e.mean > 0:
        slow = pred.e2e.mean / (pred.e2e.mean + fe_ms)
        pred = replace(pred, requests_per_s=pred.requests_per_s * slow,
                       output_tokens_per_s=pred.output_tokens_per_s * slow)

    return replace(pred, ttft=pred.ttft.shifted(fe_ms), e2e=pred.e2e.shifted(fe_ms))
