"""The pd part of a solve: ``--topologies`` parsing, and the solver's pd outcome -> ``PdPlan`` in the plan file."""

from __future__ import annotations

from typing import Any

from planner.core.errors import RequestError
from planner.plan import PdPlan, Predicted, PredictedMemory, Simulated
from planner.solver import Candidate, SolveRequest
from planner.solver.disagg import TOPOLOGIES, PdCandidate, PoolChoice


def parse_topologies(text: str | None) -> tuple[str, ...]:
    """'aggregated,pd' -> ('aggregated', 'pd'); None: aggregated only (the default, docs/disaggregation.md)."""
    if text is None:
        return ("aggregated",)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise RequestError("--topologies is empty; give aggregated, pd or both (comma-separated)")
    for p in parts:
        if p == "epd":
            raise RequestError("--topologies epd: a separate encoder pool is not modelled yet; use aggregated,pd")
        if p not in TOPOLOGIES:
            raise RequestError(f"unknown topology '{p}' in --topologies; expected {', '.join(TOPOLOGIES)}")
    return tuple(dict.fromkeys(parts))


def pd_plan(c: PdCandidate, model_arg: str, req: SolveRequest, deployment_plan: Any, _pct: Any) -> PdPlan:
    """``deployment_plan`` and ``_pct``: planner.app.solve_request's (passed in: that module imports this one)."""
    def pool(p: PoolChoice) -> Any:
        cand = Candidate(c.workload, p.cfg, c.shape, p.replicas, p.memory, p.prediction)
        return deployment_plan(cand, model_arg, req.slos_of(c.workload))

    pre, dec = pool(c.prefill), pool(c.decode)
    sim = c.simulated
    return PdPlan(
        prefill=pre, decode=dec, link=c.link, link_gb_per_s=c.link_gb_per_s, transfer_ms=round(c.transfer_ms, 4),
        link_load=round(c.link_load, 6), prefill_held_kv_tokens=round(c.prefill_held_kv_tokens, 1),
        cost_per_hour=round(c.cost_per_hour, 4),
        predicted=Predicted(ttft_ms=_pct(c.ttft), tpot_ms=_pct(c.tpot), e2e_ms=_pct(c.e2e),
                            requests_per_s=dec.predicted.requests_per_s,
                            output_tokens_per_s=dec.predicted.output_tokens_per_s,
                            memory=PredictedMemory(**dec.predicted.memory.model_dump())),
        simulated=None if sim is None else Simulated(
            ttft_ms=_pct(sim.ttft), tpot_ms=_pct(sim.tpot), e2e_ms=_pct(sim.e2e),
            requests_per_s=round(sim.requests_per_s, 4), requests_simulated=sim.requests, seed=sim.seed,
            saturated=sim.saturated, meets_slos=sim.meets, failed=sim.failed),
    )
