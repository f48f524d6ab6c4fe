"""Stage 2: CP-SAT picks one option per workload (the assignment model).

Notation: W workloads, C_w options of workload w, x[w,c] in {0,1} picks option c for w; g(c) GPUs of type t(c);
k(c) cost in milli-USD per hour (the one place floats become integers: ``milli``); I_t the inventory of type t;
B the cost cap::

    minimise    sum_{w,c} k(c) x[w,c]         (objective cost; gpus: g(c), cost breaking ties; latency: p95 TTFT in us)
    subject to  sum_c x[w,c] = 1               for every w
                sum_{w,c: t(c)=t} g(c) x[w,c] <= I_t   for every GPU type t
                sum_{w,c} k(c) x[w,c] <= B

Solved with a fixed seed and one worker, so the same input gives the same plan; the status is ``optimal`` when
CP-SAT proves it. OR-Tools is imported here and nowhere else in the solver: its modelling layer pulls in pandas
(about half a second), so callers import this module only when they solve.
"""

from __future__ import annotations

from dataclasses import dataclass

from ortools.sat.python import cp_model

from planner.solver.candidate import Candidate
from planner.solver.request import Objective
from planner.spec.slo import Budget

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


def _weights(opts: list[Option], objective: Objective) -> list[int]:
    """Integer objective coefficients: milli-USD per hour, or GPUs first with cost as the tie-break, or p95 TTFT
    in microseconds."""
    cost = [milli(o.cost_per_hour) for o in opts]
    if objective == "cost":
        return cost
    if objective == "gpus":
        return [o.gpus * 10**9 + k for o, k in zip(opts, cost)]
    return [int(o.ttft_p95_ms * 1000) for o in opts]


def _model(workloads: list[str], opts: list[Option], budget: Budget, objective: Objective
           ) -> tuple[cp_model.CpModel, list[cp_model.IntVar]] | None:
    """The model of the module docstring; None when a workload has no option at all."""
    m = cp_model.CpModel()
    x = [m.new_bool_var(f"x{i}") for i in range(len(opts))]
    for w in workloads:
        mine = [x[i] for i, o in enumerate(opts) if o.workload == w]
        if not mine:
            return None
        m.add_exactly_one(mine)
    for gpu in sorted({o.gpu for o in opts}):
        limit = budget.limit(gpu)
        if limit is None:
            continue
        idx = [i for i, o in enumerate(opts) if o.gpu == gpu]
        m.add_linear_constraint(cp_model.LinearExpr.weighted_sum([x[i] for i in idx], [opts[i].gpus for i in idx]),
                                0, limit)
    if budget.max_usd_per_hour is not None:
        cost = [milli(o.cost_per_hour) for o in opts]
        m.add_linear_constraint(cp_model.LinearExpr.weighted_sum(x, cost), 0, milli(budget.max_usd_per_hour))
    m.minimize(cp_model.LinearExpr.weighted_sum(x, _weights(opts, objective)))
    return m, x


def solve_assignment(workloads: list[str], opts: list[Option], budget: Budget, objective: Objective
                     ) -> tuple[str, list[Option]]:
    """(status, the option picked for each workload, in ``workloads`` order); ('infeasible', []) when no
    assignment meets the budget."""
    built = _model(workloads, opts, budget, objective)
    if built is None:
        return "infeasible", []
    model, x = built
    solver = cp_model.CpSolver()
    solver.parameters.random_seed = SEED
    solver.parameters.num_workers = WORKERS
    solver.parameters.max_time_in_seconds = TIME_LIMIT_S
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return "infeasible", []
    chosen = [o for o, v in zip(opts, x) if solver.boolean_value(v)]
    order = {w: k for k, w in enumerate(workloads)}
    chosen.sort(key=lambda o: order[o.workload])
    return ("optimal" if status == cp_model.OPTIMAL else "feasible"), chosen
