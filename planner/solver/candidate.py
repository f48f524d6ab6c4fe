"""What the solver produces: candidates (a configuration and its replica count), their simulator checks, what
the screen saw, and the solution.

``prune`` and ``prune_key`` live here because they define the order every part of the search agrees on: two
candidates of one GPU type compare by GPUs, then p95 TTFT, then a fixed tail of settings, so ties never depend
on evaluation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from planner.core.stats import Percentiles
from planner.load.analytic import LoadPrediction
from planner.perf.memory import MemoryBreakdown
from planner.solver.request import Objective
from planner.spec.config import ResolvedConfig, ServingConfig
from planner.spec.shape import RequestShape


@dataclass(frozen=True)
class Candidate:
    """A deployment of one workload: a resolved configuration, its replica count and what the analytic model
    predicts for one replica at its share of the load."""

    workload: str
    cfg: ResolvedConfig
    shape: RequestShape
    replicas: int
    memory: MemoryBreakdown
    prediction: LoadPrediction
    """Per replica, at its share of the load."""
    simulated: SimCheck | None = None

    @property
    def gpus(self) -> int:
        return self.replicas * self.cfg.num_gpus

    @property
    def cost_per_hour(self) -> float:
        return self.gpus * self.cfg.gpu.price.price_usd_per_gpu_hour

    def metric(self, slo_key: str) -> float:
        metric, stat = slo_key.split("_")
        p: Percentiles = getattr(self.prediction, metric)
        return float(getattr(p, stat))

    @property
    def ident(self) -> tuple[str, str, str, str, int, int, int | None, int]:
        """What makes it this deployment (for rejection and caching)."""
        c = self.cfg
        return (self.workload, c.gpu.name, c.precision, c.kv_cache_dtype, c.tp, c.pp, c.max_num_seqs, self.replicas)


@dataclass(frozen=True)
class SimCheck:
    """The simulator's view of one replica of a chosen deployment at its share of the load."""

    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    """ms."""
    requests: int
    seed: int
    saturated: bool
    requests_per_s: float
    """Of one replica."""
    meets: bool
    failed: str = ""
    """The first SLO it breaks, in words (empty when it meets them all)."""
    peak_in_system: int = 0
    """Most requests ever waiting or running at once: below max_num_seqs, the slot limit never bound."""
    preemptions: int = 0
    """Requests the engine evicted from the KV cache (vLLM's recompute preemption) during the run."""


@dataclass
class Screening:
    """What stage 1 saw, for explaining infeasibility."""

    memory_fits: int = 0
    smallest_weights_gib: float = math.inf
    smallest_weights_config: str = ""
    largest_replica_gib: float = 0.0
    largest_replica_desc: str = ""
    best: dict[str, tuple[float, str]] = field(default_factory=dict)
    """SLO key -> (lowest value seen on any memory-feasible config, where)."""
    unsupported: list[str] = field(default_factory=list)
    missing_checkpoints: list[str] = field(default_factory=list)
    """Precisions (int4, int8) dropped because no pre-quantized checkpoint of the model is known."""
    evaluated: int = 0
    """Configurations (GPU, precision, KV dtype, TP x PP) whose load was modelled."""
    skipped: int = 0
    """Configurations the bounds showed could not matter (never evaluated)."""


@dataclass(frozen=True)
class Solution:
    status: Literal["optimal", "feasible", "infeasible"]
    chosen: list[Candidate]
    alternatives: list[Candidate]
    binding: list[str]
    explanation: str
    relaxation: str
    screening: dict[str, Screening]
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    """What the solver did that the user should know (simulator rejections)."""
    disagg: Any = None
    """The pd search's outcome (``planner.solver.disagg.PdOutcome``) when the request asked for it, else None."""
    topology: str = "aggregated"
    """The topology of the answer: 'aggregated' (``chosen``), 'pd' (``disagg.best``) or 'epd' (``epd.best``)."""
    epd: Any = None
    """The epd search's outcome (``planner.solver.epd.EpdOutcome``) when the request asked for it, else None."""


def describe(cfg: ServingConfig | ResolvedConfig) -> str:
    """One replica in words: '2 x H100-SXM-80GB fp8 kv-fp8'."""
    return (f"{cfg.tp * cfg.pp} x {cfg.gpu.name} {cfg.precision}" + (" kv-fp8" if cfg.kv_cache_dtype == "fp8" else "")
            + (f" +{cfg.speculative.method}" if cfg.speculative is not None else ""))


def prune_key(c: Candidate) -> tuple[Any, ...]:
    # Plain decoding before speculation at equal GPUs: speculation is chosen only where it saves GPUs (its
    # acceptance is an assumption about the traffic).
    return (c.gpus, c.cfg.speculative is not None, c.prediction.ttft.p95, c.cfg.precision, c.cfg.kv_cache_dtype,
            c.cfg.tp, c.cfg.pp, c.cfg.max_num_seqs, c.replicas)


def prune(cands: list[Candidate], objective: Objective) -> list[Candidate]:
    """Keep, per (workload, GPU type), the fewest-GPU candidate (cost/gpus
    objectives) or the (GPUs, p95 TTFT) Pareto front (latency objective).
    Ties break on a fixed key, so the result is deterministic."""
    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in cands:
        groups.setdefault((c.workload, c.cfg.gpu.name), []).append(c)
    kept: list[Candidate] = []
    for _, group in sorted(groups.items()):
        group.sort(key=prune_key)
        if objective != "latency":
            kept.append(group[0])
            continue
        best_ttft = math.inf
        for c in group:
            if c.prediction.ttft.p95 < best_ttft:
                kept.append(c)
                best_ttft = c.prediction.ttft.p95
    return kept
