"""How many API servers a replica runs (vLLM's ``--api-server-count``), decided with its load.

Each request holds one of the replica's API-server processes for ``speed.api_server_ms`` (first come, first
served: ``load.analytic.api_queue``); a document page holds one for ~80 ms, so one process saturates near 12
requests/s whatever the GPU. For a replica at a per-replica load, the solver takes the fewest API servers ``n`` such
that

1. the front end stays under the load ceiling: ``rate <= max_load x n / hold`` (Poisson arrivals);
2. the replica meets every SLO with the queue's wait included (the analytic model at ``n``);
3. the node's CPUs hold them: ``vcpus(n) <= host_vcpus_per_gpu x GPUs`` (``perf.hostcpu``).

It starts at the ``n`` the ceiling demands and adds one while the SLOs fail and more servers could help: when the
engine alone (no API-server queue) already fails, no count will pass and it stops there. When the CPUs run out
first, it returns the largest count they hold, which fails the replica test: the replica search then spreads the load
over more replicas, each with its own API servers.

Cost: the node's CPUs are part of the GPU offering and paid in its GPU-hour price, so API servers cost nothing
until they run out; beyond that a replica cannot have more, and more replicas (GPUs) are the only way on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import HostCpu
from planner.load.analytic import LoadPrediction, predict
from planner.load.analytic.api_queue import ApiQueue
from planner.load.slo_check import meets
from planner.perf.hostcpu import api_hold_ms, api_server_vcpus, most_api_servers
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape
from planner.spec.slo import Slo


@dataclass(frozen=True)
class FrontEnd:
    """The API-server side of one (configuration, workload): what each request holds and what a busy server burns."""

    hold_ms: float
    """Mean time a request holds one API server."""
    vcpus_per_server: float
    """CPUs one busy API server uses for this workload."""
    most: int
    """Most API servers the replica's CPUs hold (0: not even one; the configuration is then out)."""

    @staticmethod
    def of(cal: Calibration, host: HostCpu | None, cfg: ResolvedConfig, shape: RequestShape) -> FrontEnd:
        hold = api_hold_ms(cal, shape)
        if host is None:
            return FrontEnd(hold, 1.0, 64)
        per = api_server_vcpus(cal, host, shape)
        return FrontEnd(hold, per, most_api_servers(host, cfg, per))

    def ceiling_servers(self, rate_per_s: float, max_load: float) -> int:
        """The fewest API servers whose utilisation at ``rate_per_s`` stays within ``max_load``."""
        if self.hold_ms <= 0 or rate_per_s <= 0:
            return 1
        return max(1, math.ceil(rate_per_s * self.hold_ms / 1e3 / max_load - 1e-9))


def decide(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, fe: FrontEnd, arrival: str,
           rate_per_s: float | None, concurrency: int | None, kv_capacity_tokens: int, slos: list[Slo],
           max_load: float, queue: bool = True) -> tuple[int, LoadPrediction]:
    """(API servers, the analytic prediction with them) of one replica at its share of the load: the fewest that
    pass (module docstring), else the last count tried. ``queue`` False: one API server, its work a delay only."""
    def at(n: int) -> LoadPrediction:
        return predict(cost, replace(cfg, api_server_count=n), shape, arrival, rate_per_s, concurrency,
                       kv_capacity_tokens, api_queue=queue)

    if not queue or fe.most <= 1 or arrival == "single":
        return 1, at(1)
    poisson = arrival in ("poisson", "trace")
    first = fe.ceiling_servers(rate_per_s or 0.0, max_load) if poisson else 1
    n = min(first, fe.most)

    def passes(p: LoadPrediction) -> bool:
        return meets(p, slos) and (not poisson or (rate_per_s or 0.0) <= max_load * p.max_requests_per_s + 1e-12)

    pred = at(n)
    if passes(pred) or n >= fe.most or not poisson:
        return n, pred
    if not _queue_could_help(pred, fe, n, rate_per_s or 0.0, slos, max_load):
        return n, pred
    # The engine alone (no API-server queue) must pass, else no count of API servers will.
    if not passes(predict(cost, cfg, shape, arrival, rate_per_s, concurrency, kv_capacity_tokens, api_queue=False)):
        return n, pred
    while n < fe.most:
        n += 1
        pred = at(n)
        if passes(pred):
            break
    return n, pred


WAIT_SAFETY = 1.5
"""Factor on the API-server wait's percentile in the screen below (a screen only: it decides whether more API
servers are worth a model run)."""


def wait_quantile_ms(api: ApiQueue, rate_per_s: float, stat: str) -> float:
    """The API-server wait at ``stat`` ('mean' or 'pNN') of a Poisson arrival, as ``ApiQueue.with_wait`` shapes it:
    with probability ``p_wait`` a residual (uniform up to twice ``rest``) plus an exponential of mean
    ``mean_w - rest``."""
    p_wait, mean_w = api.wait(rate_per_s * 1e-3)
    if p_wait <= 1e-4:
        return 0.0
    if not math.isfinite(mean_w):
        return math.inf
    if stat == "mean":
        return p_wait * mean_w
    tail = 1 - float(stat[1:]) / 100
    rest = min(mean_w, api.hold_ms * (1 + api.cs2) / 2 / api.servers)
    if p_wait <= tail:  # fewer requests wait than the tail holds: the screen takes its share as nil
        return 0.0
    return 2 * rest + max(0.0, mean_w - rest) * math.log(p_wait / tail)


def _queue_could_help(pred: LoadPrediction, fe: FrontEnd, n: int, rate_per_s: float, slos: list[Slo],
                      max_load: float) -> bool:
    """Whether taking the API-server wait away could make ``pred`` pass (cheap, no model run): the engine's own
    capacity must hold the rate, and every broken SLO must be a TTFT or e2e within the wait's share of it."""
    api = ApiQueue(n, fe.hold_ms, 0.0)
    if pred.max_requests_per_s < api.max_rate - 1e-9 and rate_per_s > max_load * pred.max_requests_per_s:
        return False  # the engine saturates first
    if rate_per_s > max_load * api.max_rate:
        return True  # the API servers are over the ceiling
    broken = [s for s in slos if getattr(getattr(pred, s.metric), s.stat) > s.limit_ms]
    for s in broken:
        value = getattr(getattr(pred, s.metric), s.stat)
        if s.metric == "tpot" or value - WAIT_SAFETY * wait_quantile_ms(api, rate_per_s, s.stat) > s.limit_ms:
            return False
    return bool(broken)
