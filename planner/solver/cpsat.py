"""Stage 2: CP-SAT picks one option per workload (the assignment model).

Notation: W workloads, C_w options of workload w, x[w,c] in {0,1} picks option c for w; g(c) GPUs of type t(c);
k(c) cost in milli-USD per hour (the one place floats become integers: ``milli``); I_t the inventory of type t;
B the cost cap::

    minimise    sum_{w,c} k(c) x[w,c]         (objective cost; gpus: g(c), cost breaking ties; latency: p95 TTFT in us)
    subject to  sum_c x[w,c] = 1               for every w
                sum_{w,c: t(c)=t} g(c) x[w,c] <= I_t   for every GPU type t
                sum_{w,c} k(c) x[w,c] <= B

Solved with a fixed seed and one worker, so the same input gives the same plan; the status is ``optimal`` when
CP-SAT proves it. OR-Tools is imported here and nowhere else in the solver, and only when a model is solved
(``obvious`` answers the rounds whose optimum is plain without it). The model is written straight into CP-SAT's
``CpModelProto`` through ``cp_model_helper`` (the C++ binding ``cp_model.CpModel`` wraps):
``ortools.sat.python.cp_model`` imports pandas, about 0.3 s of a cold ``vlmplan solve``, for series helpers this
model never uses. The proto is the one ``cp_model`` would build (zero
coefficients left out as it leaves them out; ``tests/unit/test_solver.py`` compares the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.solver.candidate import Candidate
from planner.solver.request import Objective
from planner.spec.slo import Budget

if TYPE_CHECKING:
    from ortools.sat.python import cp_model_helper as cmh

SEED = 0
WORKERS = 1
TIME_LIMIT_S = 10.0


@dataclass(frozen=True)
class Option:
    """What CP-SAT sees of one choice: an exact candidate, or a lower bound for an unsettled group."""

    workload: str
    gpu: str
    gpus: int
    cost_per_hour: float
    ttft_p95_ms: float
    candidate: Candidate | None


def option(c: Candidate) -> Option:
    """The exact option of a candidate."""
    return Option(c.workload, c.cfg.gpu.name, c.gpus, c.cost_per_hour, c.prediction.ttft.p95, c)


def milli(usd: float) -> int:
    """USD -> integer milli-USD: the single float-to-integer scaling of the model."""
    return int(round(usd * 1000))


def weights(opts: list[Option], objective: Objective) -> list[int]:
    """Integer objective coefficients: milli-USD per hour, or GPUs first with cost as the tie-break, or p95 TTFT
    in microseconds."""
    cost = [milli(o.cost_per_hour) for o in opts]
    if objective == "cost":
        return cost
    if objective == "gpus":
        return [o.gpus * 10**9 + k for o, k in zip(opts, cost)]
    return [int(o.ttft_p95_ms * 1000) for o in opts]


def _linear(proto: cmh.LinearConstraintProto, idx: list[int], coeffs: list[int], lo: int, hi: int) -> None:
    """``lo <= sum coeffs[k] x[idx[k]] <= hi`` into a linear constraint proto (zero coefficients left out)."""
    kept = [(i, k) for i, k in zip(idx, coeffs) if k != 0]
    proto.vars.extend([i for i, _ in kept])
    proto.coeffs.extend([k for _, k in kept])
    proto.domain.extend([lo, hi])


def _model(workloads: list[str], opts: list[Option], budget: Budget, objective: Objective) -> cmh.CpModelProto | None:
    """The model of the module docstring (variable ``i`` is ``x`` of ``opts[i]``); None when a workload has no
    option at all."""
    from ortools.sat.python import cp_model_helper as cmh

    m = cmh.CpModelProto()
    for i in range(len(opts)):
        v = m.variables.add()
        v.name = f"x{i}"
        v.domain.extend([0, 1])
    for w in workloads:
        mine = [i for i, o in enumerate(opts) if o.workload == w]
        if not mine:
            return None
        m.constraints.add().exactly_one.literals.extend(mine)
    for gpu in sorted({o.gpu for o in opts}):
        limit = budget.limit(gpu)
        if limit is None:
            continue
        idx = [i for i, o in enumerate(opts) if o.gpu == gpu]
        _linear(m.constraints.add().linear, idx, [opts[i].gpus for i in idx], 0, limit)
    if budget.max_usd_per_hour is not None:
        cost = [milli(o.cost_per_hour) for o in opts]
        _linear(m.constraints.add().linear, list(range(len(opts))), cost, 0, milli(budget.max_usd_per_hour))
    coeffs = weights(opts, objective)
    m.objective.vars.extend([i for i, k in enumerate(coeffs) if k != 0])
    m.objective.scaling_factor = 1.0
    m.objective.coeffs.extend([k for k in coeffs if k != 0])
    return m


def solve_assignment(workloads: list[str], opts: list[Option], budget: Budget, objective: Objective
                     ) -> tuple[str, list[Option]]:
    """(status, the option picked for each workload, in ``workloads`` order); ('infeasible', []) when no
    assignment meets the budget."""
    from ortools.sat.python import cp_model_helper as cmh

    model = _model(workloads, opts, budget, objective)
    if model is None:
        return "infeasible", []
    params = cmh.SatParameters()
    params.random_seed = SEED
    params.num_workers = WORKERS
    params.max_time_in_seconds = TIME_LIMIT_S
    wrapper = cmh.SolveWrapper()
    wrapper.set_parameters(params)
    response = wrapper.solve(model)
    status = response.status
    if status not in (cmh.CpSolverStatus.OPTIMAL, cmh.CpSolverStatus.FEASIBLE):
        return "infeasible", []
    values = list(response.solution)
    chosen = [o for i, o in enumerate(opts) if values[i]]
    order = {w: k for k, w in enumerate(workloads)}
    chosen.sort(key=lambda o: order[o.workload])
    return ("optimal" if status == cmh.CpSolverStatus.OPTIMAL else "feasible"), chosen


def obvious(workloads: list[str], opts: list[Option], budget: Budget, objective: Objective) -> list[Option] | None:
    """The model's optimum when it needs no search: every workload has one option of least weight and those
    options together keep within the inventory and the cost cap. It is then the unique optimum, which CP-SAT would
    return. None otherwise (CP-SAT decides)."""
    w = weights(opts, objective)
    picked: list[Option] = []
    for name in workloads:
        mine = [i for i, o in enumerate(opts) if o.workload == name]
        if not mine:
            return None
        least = min(w[i] for i in mine)
        best = [i for i in mine if w[i] == least]
        if len(best) != 1:
            return None
        picked.append(opts[best[0]])
    for gpu in {o.gpu for o in picked}:
        limit = budget.limit(gpu)
        if limit is not None and sum(o.gpus for o in picked if o.gpu == gpu) > limit:
            return None
    if budget.max_usd_per_hour is not None and \
            sum(milli(o.cost_per_hour) for o in picked) > milli(budget.max_usd_per_hour):
        return None
    return picked
