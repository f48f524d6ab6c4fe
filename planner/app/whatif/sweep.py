"""A sweep: every point of the cartesian product of the varied dimensions, evaluated in fixed or solver mode,
one row each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from planner.app.scenario import Scenario
from planner.app.whatif.base_case import held_fixed, make_base
from planner.app.whatif.fixed_mode import FixedEvaluator
from planner.app.whatif.solver_mode import SolverEvaluator
from planner.app.whatif.vary import Vary, points
from planner.core.errors import RequestError
from planner.spec.slo import Slo

SOLVER_LOAD_MODEL = "analytic (solver), chosen deployment simulated"
"""What solver-mode latencies come from: the analytic screen sizes each point's plan, the simulator checks it."""

@dataclass
class SweepResult:
    scenario: Scenario
    mode: str
    varies: list[Vary]
    rows: list[dict[str, Any]]
    held_fixed: str
    slos: list[Slo]
    wall_s: float
    load: str = "analytic"

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "model": self.rows[0]["model"] if self.rows else self.scenario.model,
            "mode": self.mode,
            "load_model": self.load if self.mode == "fixed" else SOLVER_LOAD_MODEL,
            "held_fixed": self.held_fixed,
            "vary": {v.dim: list(v.labels) for v in self.varies},
            "slo": [f"{s.key}={s.limit_ms:g}ms" for s in self.slos],
            "points": len(self.rows),
            "feasible": sum(1 for r in self.rows if r["feasible"]),
            "wall_s": round(self.wall_s, 3),
            "rows": self.rows,
        }


ProgressFn = Callable[[int, int], None]


def sweep(scenario: Scenario, varies: list[Vary], fixed: bool = False, progress: ProgressFn | None = None,
          overrides: dict[str, Any] | None = None, load: str = "analytic") -> SweepResult:
    """Evaluate every point of the cartesian product of ``varies`` on ``scenario``.

    ``overrides``: workload fields replacing the scenario's (see ``apply_workload_overrides``).
    ``load``: the fixed mode's load model, 'analytic' or 'simulate' (the solver screens with the analytic one and
    simulates the deployment it chooses).
    """
    t0 = time.perf_counter()
    if load != "analytic" and not fixed:
        raise RequestError("--simulate needs --fixed: the solver screens candidates with the analytic load model")
    if fixed and any(v.dim == "topology" for v in varies):
        raise RequestError("--vary topology needs the solver: drop --fixed (a disaggregated plan sizes its pools "
                           "itself)")
    base = make_base(scenario, fixed, overrides)
    pts = points(varies)
    evaluator: FixedEvaluator | SolverEvaluator = (FixedEvaluator(base, load) if fixed
                                                   else SolverEvaluator(base, varies))
    rows = []
    for i, p in enumerate(pts):
        rows.append(evaluator.evaluate(p))
        if progress is not None:
            progress(i + 1, len(pts))
    return SweepResult(scenario=scenario, mode="fixed" if fixed else "solve", varies=varies, rows=rows,
                       held_fixed=held_fixed(base, varies), slos=base.slos, wall_s=time.perf_counter() - t0, load=load)


def evaluate_scenario(scenario: Scenario, fixed: bool | None = None) -> dict[str, Any]:
    """One row for the scenario itself (fixed when it has a config, unless ``fixed`` says otherwise)."""
    use_fixed = scenario.config is not None if fixed is None else fixed
    return sweep(scenario, [], fixed=use_fixed).rows[0]

