"""The simulator check: the chosen deployments are re-run through the discrete-event simulator
(``planner.load.simulator``) at their per-replica share of the load before they are presented.

The analytic screen is optimistic where its assumptions fail (bursty traces taken as Poisson, KV-cache
pressure, tails), so a deployment whose simulated percentiles break an SLO is rejected (its configuration may
return with more replicas, see ``Space.reject``) and CP-SAT re-solves, for at most ``verify_rounds`` rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from planner.load.slo_check import broken, meets
from planner.solver import overlap
from planner.solver.candidate import Candidate, SimCheck, describe
from planner.solver.request import SIM_QUICK_MARGIN, SIM_QUICK_REQUESTS, offered
from planner.solver.search import optimise
from planner.solver.space import Space

SEED = 0


@dataclass
class Verified:
    """The outcome of the optimise-simulate-reject rounds."""

    status: str
    chosen: list[Candidate]
    kept: list[Candidate]
    """Per workload, what the explanation and the binding report need (empty: ask the space)."""
    notes: list[str] = field(default_factory=list)
    """One line per rejected deployment."""
    exhausted: bool = False
    """Every round's choice was rejected: infeasible for want of rounds, not of options."""
    alongside: Any = None
    """What ``alongside`` returned for the last round's choice (None when nothing was simulated)."""


def verified_optimum(space: Space, alongside: Callable[[list[Candidate]], Any] | None = None) -> Verified:
    """CP-SAT's optimum over ``space``, each chosen deployment checked by the simulator when the request asks
    (``verify``); a rejected one leaves the space and the model is solved again.

    ``alongside(chosen)`` is work for the parent while a round's simulations run (``overlap``): the solve finds
    the alternatives to the chosen deployments then, and keeps them when the choice passes. Where the simulations
    run in child processes, the best candidate found so far is simulated while the search goes on
    (``Speculation``); the check of a chosen deployment is the same whichever process ran it and whenever."""
    req = space.req
    sims: dict[tuple[Any, ...], SimCheck] = {}

    def check(c: Candidate) -> SimCheck:
        if c.ident not in sims:
            sims[c.ident] = c.simulated if c.simulated is not None else simulate_replica(space, c)
        return sims[c.ident]

    ahead = Speculation(check, sims) if req.verify and overlap.parallel() else None
    out = Verified("infeasible", [], [])
    for round_ in range(req.verify_rounds + 1):
        out.status, out.chosen, out.kept = optimise(space, ahead.guess if ahead is not None else None)
        if out.status == "infeasible" or not req.verify:
            if ahead is not None:
                ahead.drop()
            break
        chosen = list(out.chosen)
        started = ahead.take(chosen) if ahead is not None else {}
        rest = [c for c in chosen if c.ident not in sims and c.ident not in started]
        job = overlap.start(lambda: {c.ident: check(c) for c in rest}) if rest else None
        out.alongside = alongside(chosen) if alongside is not None else None
        for ident, early in started.items():
            sims[ident] = early.wait()
        if job is not None:
            sims.update(job.wait())
        bad = [c for c in out.chosen if not check(c).meets]
        out.chosen = [replace(c, simulated=check(c)) for c in out.chosen]
        if not bad:
            break
        for c in bad:
            out.notes.append(f"{c.workload}: {c.replicas} x {describe(c.cfg)} (max_num_seqs {c.cfg.max_num_seqs}) "
                             f"passed the analytic screen but the simulator gives {check(c).failed}: rejected, "
                             f"re-solved")
            space.reject(c, check)
        if round_ == req.verify_rounds:
            out.status, out.chosen, out.exhausted = "infeasible", [], True
    return out


class Speculation:
    """The simulator check of the search's current best candidate, started in a child process while the search
    goes on (one at a time; a new best cancels it). When the search ends on that candidate, half its check or more
    is already done."""

    def __init__(self, check: Callable[[Candidate], SimCheck], sims: dict[tuple[Any, ...], SimCheck]) -> None:
        self._check, self._sims = check, sims
        self._job: tuple[tuple[Any, ...], overlap.Job[SimCheck]] | None = None

    def guess(self, incumbents: list[Candidate]) -> None:
        """``optimise``'s hook: simulate the first incumbent not yet checked (cancelling an older guess)."""
        c = next((k for k in incumbents if k.ident not in self._sims), None)
        if c is None or (self._job is not None and self._job[0] == c.ident):
            return
        self.drop()
        self._job = (c.ident, overlap.start(lambda: self._check(c)))

    def take(self, chosen: list[Candidate]) -> dict[tuple[Any, ...], overlap.Job[SimCheck]]:
        """The running check if it is of a chosen deployment (else it is cancelled)."""
        if self._job is not None and any(c.ident == self._job[0] for c in chosen):
            ident, job = self._job
            self._job = None
            return {ident: job}
        self.drop()
        return {}

    def drop(self) -> None:
        if self._job is not None:
            self._job[1].cancel()
            self._job = None


def _arrivals(space: Space, c: Candidate) -> tuple[str, float | None, int | None, int, tuple[float, ...]]:
    """(arrival, rate, clients, requests to simulate, trace) of one replica of ``c`` at its share of the load."""
    w = space.workloads[c.workload]
    kind, total = offered(w)
    n = space.req.sim_requests
    if w.arrival == "single":
        return "single", None, None, min(n, 200), ()
    if kind == "closed":
        conc = math.ceil(total / c.replicas)
        return "closed", None, conc, int(min(20000, max(n, 8 * conc))), ()
    if w.arrival == "trace" and w.trace_s and not w.rate_per_s:
        # This replica's share of the trace itself (round-robin over the replicas), bursts and lulls included:
        # the analytic screen took it as Poisson at its mean rate.
        return "trace", None, None, n, tuple(w.trace_s[:: c.replicas])
    return "poisson", total / c.replicas, None, n, ()


def simulate_replica(space: Space, c: Candidate) -> SimCheck:
    """One replica of ``c`` at its share of the workload, through the discrete-event simulator. A Poisson run
    first simulates ``SIM_QUICK_REQUESTS``: when every SLO then sits below ``SIM_QUICK_MARGIN`` of its limit that
    settles it, else the full run decides."""
    from planner.load.run import to_percentiles
    from planner.load.simulator import SimResult, build_requests, simulate

    w = space.workloads[c.workload]
    slos = space.req.slos_on(c.workload, c.cfg.gpu.name)
    cost = space.step_cost(c.cfg)
    arrival, rate, conc, n, trace = _arrivals(space, c)

    def run(k: int) -> SimResult:
        reqs = build_requests(c.cfg, w, cost, k, SEED)
        if not space.req.frontend_queue:  # the planner without an API-server queue: its work a delay only
            reqs = replace(reqs, api_ms=None)
        return simulate(cost, reqs, c.memory.kv_capacity_tokens, arrival, rate, conc,
                        trace if arrival == "trace" else None, seed=SEED, cfg=c.cfg)

    res = None
    if arrival == "poisson" and n > SIM_QUICK_REQUESTS:
        quick = run(SIM_QUICK_REQUESTS)
        if meets(quick, slos, SIM_QUICK_MARGIN):
            res, n = quick, SIM_QUICK_REQUESTS
    if res is None:
        res = run(n)
    return SimCheck(ttft=to_percentiles(res.ttft_ms), tpot=to_percentiles(res.tpot_ms),
                    e2e=to_percentiles(res.e2e_ms), requests=n, seed=SEED, saturated=res.saturated,
                    requests_per_s=res.requests_per_s, meets=meets(res, slos), failed=broken(res, slos),
                    peak_in_system=peak_in_system(res.arrival_s, res.finish_s), preemptions=res.preemptions)


def peak_in_system(arrival: np.ndarray, finish: np.ndarray) -> int:
    """Most requests between arrival and finish at any instant (a finish and an arrival at the same instant:
    the finish first)."""
    t = np.concatenate([arrival, finish])
    step = np.concatenate([np.ones(len(arrival)), -np.ones(len(finish))])
    order = np.lexsort((step, t))
    return int(np.max(np.cumsum(step[order]))) if len(t) else 0
