"""What the solver is asked: the workloads, their SLOs, the budget and the search space (``SolveRequest``).

The constants are the solver's defaults, each with the measurement that chose it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from planner.catalog.schema import GpuSpec, KvCacheDtype, ModelSpec, Precision
from planner.load.analytic import MAX_LOAD
from planner.spec.slo import Budget, Slo
from planner.spec.workload import Workload

Objective = Literal["cost", "gpus", "latency"]
TP_CHOICES = (1, 2, 4, 8)
SEQ_CHOICES = (8, 16, 32, 64, 128, 256)
MAX_REPLICAS = 256
SIM_REQUESTS = 12000
"""Requests the final simulator check runs per replica: at 80% load 2,000 read the TTFT p95 9% low with a 7.4%
spread between seeds (Qwen2.5-VL-7B, H100); 12,000 are unbiased within 1% and spread 1.7%."""
SIM_QUICK_REQUESTS = 3000
SIM_QUICK_MARGIN = 0.75
"""The check first runs ``SIM_QUICK_REQUESTS``; when every SLO then sits below ``SIM_QUICK_MARGIN`` of its limit
that settles it, else the full run decides. At 80% load 3,000 requests read the TTFT p95 7.7% low with a 5.3%
spread (8 seeds; lowest -15%; TPOT p95 -3.2%, spread 8.1%), so a reading under 0.75 x the limit is under it
in truth by more than two spreads (``bench_load.py``, run length)."""
VERIFY_ROUNDS = 20
"""Rounds of simulator checks and re-solves. Poisson workloads rarely need a second; a bursty trace (screened as
Poisson at its mean rate) can need one per configuration cheaper than the answer: 13 for 40 requests in 0.2 s
every 10 s (tests/unit/test_solver.py)."""
ALTERNATIVES = 3
"""Alternatives a solution lists by default: the cheapest on other GPU types or precisions."""


@dataclass(frozen=True)
class SolveRequest:
    model: ModelSpec
    """The model of every workload not named in ``models``."""
    workloads: list[Workload]
    slos: list[Slo]
    """SLOs of every workload not named in ``workload_slos``."""
    budget: Budget
    gpus: list[GpuSpec]
    """GPU types allowed (catalog, restricted by --gpus, with price overrides)."""
    precisions: list[Precision] = field(default_factory=lambda: ["bf16", "fp8", "int8", "int4"])
    kv_cache_dtypes: list[KvCacheDtype] = field(default_factory=lambda: ["auto", "fp8"])
    objective: Objective = "cost"
    max_replicas: int = MAX_REPLICAS
    models: dict[str, ModelSpec] = field(default_factory=dict)
    """Workload name -> its model, where it differs from ``model`` (a fleet of several models)."""
    workload_slos: dict[str, list[Slo]] = field(default_factory=dict)
    """Workload name -> its own SLOs, replacing ``slos`` for that workload."""
    verify: bool = False
    """Re-check the chosen deployments with the simulator (the CLI turns this on)."""
    sim_requests: int = SIM_REQUESTS
    verify_rounds: int = VERIFY_ROUNDS
    max_load: float = MAX_LOAD
    """A replica's offered Poisson rate may reach at most this fraction of its saturation throughput."""
    uncalibrated_margin: float = 0.0
    """SLO limits on uncalibrated GPUs are multiplied by 1 - this (the CLI passes the catalog's default,
    catalogs/calibration/validation_status.yaml: uncalibrated_slo_margin)."""
    max_model_len: int | Literal["workload", "model"] = "workload"
    """--max-model-len of every deployment: 'workload' (its longest request plus template room), 'model' (the
    model's own context) or a number of tokens (at least the workload's longest request)."""
    tp: int | None = None
    """Only deployments of this tensor-parallel size (any pipeline depth); None: every size. A what-if sweep over
    TP asks the question "the cheapest plan at TP 2" this way."""
    max_num_seqs: int | None = None
    """Only deployments with this max_num_seqs (one of ``SEQ_CHOICES``); None: every choice."""
    alternatives: int = ALTERNATIVES
    """How many alternatives the solution lists (each costs evaluations; a sweep that shows none asks for 0)."""
    topologies: tuple[str, ...] = ("aggregated",)
    """Deployment topologies searched: 'aggregated' (N identical engines) and 'pd' (a prefill pool and a decode
    pool, ``planner.solver.disagg``)."""
    frontend_queue: bool = True
    """Model the API servers as a queue (``--api-server-count`` decided per replica, within the node's CPUs). False:
    the planner of before, one API server whose work is a delay only, in the analytic screen and the simulator
    check alike (for comparisons: ``solve --no-frontend-queue``)."""

    speculative: str = "off"
    """Speculative decoding searched (``planner.spec.speculation``): 'auto' (the model's trained draft, where a
    workload has a TPOT or e2e SLO; what ``vlmplan solve`` asks by default), 'off' (the library's default, so a
    caller that does not ask, e.g. ``whatif``, plans as before), or one method (ngram, eagle, eagle3, mtp) searched
    alone."""
    acceptance_rate: float | None = None
    """Per-token draft acceptance of the workload's text; None: the method's catalog default."""
    prefix_caching: bool = True
    """vLLM's automatic prefix caching in every candidate (``--enable-prefix-caching``; vLLM's default). With it
    off, a workload's shared prefix and repeated images are computed again for every request."""

    def model_of(self, workload: str) -> ModelSpec:
        return self.models.get(workload, self.model)

    def slos_of(self, workload: str) -> list[Slo]:
        return self.workload_slos.get(workload, self.slos)

    def slos_on(self, workload: str, gpu: str) -> list[Slo]:
        """The SLOs a deployment on ``gpu`` must meet: tighter by ``uncalibrated_margin`` where the GPU's speed
        model is uncalibrated (its errors may be tens of percent)."""
        slos = self.slos_of(workload)
        if self.uncalibrated_margin <= 0 or not uncalibrated(gpu):
            return slos
        return [replace(s, limit_ms=s.limit_ms * (1 - self.uncalibrated_margin)) for s in slos]

    @property
    def restriction(self) -> str:
        """The ``tp`` / ``max_num_seqs`` restriction in words (empty when there is none)."""
        parts = (f"tp={self.tp}" if self.tp else "", f"max_num_seqs={self.max_num_seqs}" if self.max_num_seqs else "")
        return " and ".join(p for p in parts if p)


def uncalibrated(gpu: str) -> bool:
    from planner.catalog.loader import calibration_status

    return calibration_status(gpu)[0] == "uncalibrated"


def offered(workload: Workload) -> tuple[str, float]:
    """('closed', clients) or ('poisson', requests/s); a trace is taken as Poisson at its mean rate."""
    if workload.arrival == "closed":
        return "closed", float(workload.concurrency or 1)
    if workload.arrival == "trace":
        return "poisson", float(workload.rate_per_s or workload.trace_rate_per_s or 0.0)
    return "poisson", float(workload.rate_per_s or 0.0)


def replica_limit(workload: Workload, cap: int) -> int:
    """Most replicas worth trying, at most ``cap``: a closed loop cannot use more replicas than clients."""
    kind, total = offered(workload)
    return min(cap, int(total)) if kind == "closed" else cap
