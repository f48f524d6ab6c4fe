"""`vlmplan solve`: the cheapest deployment that meets the SLOs, proven optimal by CP-SAT.

Two stages.

1. **Candidates** (per workload, ``space``). For every allowed GPU type, weight precision, KV-cache dtype,
   TP x PP and ``max_num_seqs``, the memory model says whether one replica fits and the analytic load model
   (screening) says the highest request rate one replica serves within every SLO. The replicas needed follow
   (``replicas``): the fewest whose per-replica share of the load meets the SLOs. Within one GPU type every GPU
   costs the same, so for the cost and GPU objectives a candidate is dominated by any other of the same type
   with fewer GPUs; only the fewest-GPU candidate per (workload, GPU type) survives (ties: lower p95 TTFT). For
   the latency objective the (GPUs, p95 TTFT) Pareto front per type survives.

2. **Assignment** (``cpsat``): one candidate per workload, within the inventory and the cost cap, at the lowest
   cost (or GPUs, or p95 TTFT). Configurations are modelled only when they can matter (``search``), and the
   chosen deployments are checked by the simulator (``verify``).

When no plan exists, the explanation names the binding constraint with numbers and the nearest relaxation
(``explain``).
"""

from __future__ import annotations

import time
from dataclasses import replace

from planner.catalog.loader import load_gpus
from planner.catalog.schema import GpuSpec
from planner.core.errors import RequestError
from planner.solver import verify
from planner.solver.candidate import Candidate, Screening, Solution
from planner.solver.explain import binding_constraints, exhausted_explanation, explain_infeasible
from planner.solver.request import SEQ_CHOICES, SolveRequest
from planner.solver.search import lazy_alternatives
from planner.solver.space import Space
from planner.spec.slo import Budget
from planner.spec.workload import Workload


def solve(req: SolveRequest) -> Solution:
    """The optimal plan for ``req`` (or why there is none); with ``pd`` among ``req.topologies`` also the cheapest
    prefill/decode-disaggregated deployment, chosen when it is cheaper (``planner.solver.disagg``)."""
    sol = _solve_aggregated(req)
    if "pd" in req.topologies:
        from planner.solver.disagg import with_pd

        sol = with_pd(req, sol)
    if "epd" in req.topologies:
        from planner.solver.epd import with_epd

        sol = with_epd(req, sol)
    return sol


def _solve_aggregated(req: SolveRequest) -> Solution:
    t0 = time.perf_counter()
    _check(req)
    names = [w.name for w in req.workloads]
    screens = {n: Screening() for n in names}
    space = Space(req, screens, minimal=req.objective != "latency")
    out = verify.verified_optimum(space, lambda chosen: lazy_alternatives(space, chosen, req.alternatives))
    if out.status == "infeasible":
        _count_skipped(space, screens)
        if out.exhausted:
            explanation, relaxation = exhausted_explanation(req, len(out.notes))
        else:
            explanation, relaxation = _explain(req, space)
        return Solution("infeasible", [], [], [], explanation, relaxation, screens, time.perf_counter() - t0,
                        out.notes)
    kept = out.kept or [k for n in names if (k := space.cheapest(n)) is not None]
    binding = binding_constraints(req, out.chosen, kept)
    alternatives = out.alongside if out.alongside is not None else lazy_alternatives(space, out.chosen,
                                                                                       req.alternatives)
    _count_skipped(space, screens)
    return Solution(out.status, out.chosen, alternatives, binding, "", "", screens,  # type: ignore[arg-type]
                    time.perf_counter() - t0, out.notes)


def _count_skipped(space: Space, screens: dict[str, Screening]) -> None:
    """Configurations never modelled, per workload (the search bounded them away)."""
    for n, s in screens.items():
        s.skipped = len(space.configs[n]) - s.evaluated


def _check(req: SolveRequest) -> None:
    """Input errors the search would otherwise report as infeasibility."""
    names = [w.name for w in req.workloads]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise RequestError(f"workload names must be unique (got '{dup[0]}' twice)")
    if req.max_num_seqs is not None and req.max_num_seqs not in SEQ_CHOICES:
        raise RequestError(f"max_num_seqs={req.max_num_seqs}: the solver only considers max_num_seqs in "
                           f"{', '.join(map(str, SEQ_CHOICES))}")


def _explain(req: SolveRequest, space: Space) -> tuple[str, str]:
    """Why no plan exists, and when the budget binds, the cheapest plan on any catalog GPU."""
    names = [w.name for w in req.workloads]
    kept = [k for n in names if (k := space.cheapest(n)) is not None]
    explanation, relaxation = explain_infeasible(req, space.screens, kept)
    if explanation.startswith("budget") and req.budget.inventory:
        anywhere = _cheapest_anywhere(req)
        if anywhere is not None and anywhere.chosen:
            parts = ", ".join(f"{c.gpus} x {c.cfg.gpu.name}" for c in anywhere.chosen)
            total = sum(c.cost_per_hour for c in anywhere.chosen)
            relaxation += f"; cheapest on any catalog GPU: {parts} (${total:.2f}/h)"
    return explanation, relaxation


def _cheapest_anywhere(req: SolveRequest) -> Solution | None:
    """The cheapest plan on any catalog GPU with no budget (prices as the request has them): the relaxation across
    budgets and GPU types when the budget binds."""
    given = {g.name for g in req.gpus}
    gpus = [g for g in default_gpus() if g.name not in given] + list(req.gpus)
    sol = solve(replace(req, budget=Budget(), gpus=gpus, verify=False))
    return sol if sol.status != "infeasible" else None


def default_gpus(prices: dict[str, float] | None = None) -> list[GpuSpec]:
    """Every catalog GPU, with the user's price overrides."""
    from planner.spec.lookup import with_price

    out = []
    for g in load_gpus():
        out.append(with_price(g, prices[g.name], "user override") if prices and g.name in prices else g)
    return out


def candidates_for(req: SolveRequest, workload: Workload, screen: Screening) -> list[Candidate]:
    """Every candidate of one workload (full enumeration, no bounds)."""
    space = Space(replace(req, workloads=[workload]), {workload.name: screen})
    return space.all_candidates(workload.name)
