"""The pd part of a solve: ``--topologies`` parsing, and the solver's pd outcome -> ``PdPlan`` in the plan file."""

from __future__ import annotations

from typing import Any

from planner.core.errors import RequestError
from planner.plan import EpdPlan, PdPlan, Predicted, PredictedMemory, Simulated
from planner.solver import Candidate, SolveRequest
from planner.solver.disagg import TOPOLOGIES, PdCandidate, PoolChoice


def parse_topologies(text: str | None) -> tuple[str, ...]:
    """'aggregated,pd' -> ('aggregated', 'pd'); None: aggregated only (the default, docs/disaggregation.md)."""
    if text is None:
        return ("aggregated",)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise RequestError("--topologies is empty; give aggregated, pd, epd or several (comma-separated)")
    for p in parts:
        if p not in TOPOLOGIES:
            raise RequestError(f"unknown topology '{p}' in --topologies; expected {', '.join(TOPOLOGIES)}")
    return tuple(dict.fromkeys(parts))


def pd_plan(c: PdCandidate, model_arg: str, req: SolveRequest, deployment_plan: Any, _pct: Any) -> PdPlan:
    """``deployment_plan`` and ``_pct``: planner.app.solve_plan's (passed in: that module imports this one)."""
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


def epd_plan(c: Any, model_arg: str, req: SolveRequest, deployment_plan: Any, _pct: Any) -> EpdPlan:
    """The solver's ``EpdCandidate`` -> ``EpdPlan``; arguments as ``pd_plan``'s."""
    from planner.catalog.loader import load_engine
    from planner.solver.epd import STABLE_ENCODERS_PER_REPLICA

    lm = deployment_plan(c.lm, model_arg, req.slos_of(c.workload))
    spec = load_engine().encoder_transfer
    sim = c.simulated
    return EpdPlan(
        lm=lm, encoders_per_replica=c.encoders, encoder_gpu=c.encoder_cfg.gpu.name,
        encoder_precision=c.encoder_cfg.precision, connector=spec.connector if spec else "ECExampleConnector",
        encode_ms=round(c.encode_ms, 4), transfer_ms=round(c.transfer_ms, 4), encoder_load=round(c.encoder_load, 6),
        encoder_delay_ms=_pct(c.encoder_delay), stable=c.encoders <= STABLE_ENCODERS_PER_REPLICA,
        cost_per_hour=round(c.cost_per_hour, 4),
        predicted=Predicted(ttft_ms=_pct(c.ttft), tpot_ms=_pct(c.tpot), e2e_ms=_pct(c.e2e),
                            requests_per_s=lm.predicted.requests_per_s,
                            output_tokens_per_s=lm.predicted.output_tokens_per_s,
                            memory=PredictedMemory(**lm.predicted.memory.model_dump())),
        simulated=None if sim is None else Simulated(
            ttft_ms=_pct(sim.ttft), tpot_ms=_pct(sim.tpot), e2e_ms=_pct(sim.e2e),
            requests_per_s=round(sim.requests_per_s, 4), requests_simulated=sim.requests, seed=sim.seed,
            saturated=sim.saturated, meets_slos=sim.meets, failed=sim.failed),
    )
