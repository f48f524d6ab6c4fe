"""The solver's public API (see ``planner.solver.api`` for how it works).

Modules, by job: ``request`` (what is asked), ``candidate`` (what comes back), ``configs`` and ``space`` (the lazy
search space), ``replicas`` (the one replica search), ``search`` (stage 2 over the space, alternatives),
``cpsat`` (the CP-SAT model; the only module that imports OR-Tools), ``verify`` (the simulator check),
``explain`` (binding lines, infeasibility and relaxations) and ``api`` (``solve``).
"""

from planner.load.analytic import MAX_LOAD
from planner.solver.api import candidates_for, default_gpus, solve
from planner.solver.candidate import Candidate, Screening, SimCheck, Solution, prune
from planner.solver.configs import TEMPLATE_ROOM_TOKENS
from planner.solver.explain import binding_constraints, explain_infeasible
from planner.solver.request import (
    MAX_REPLICAS,
    SEQ_CHOICES,
    SIM_QUICK_MARGIN,
    SIM_QUICK_REQUESTS,
    SIM_REQUESTS,
    TP_CHOICES,
    VERIFY_ROUNDS,
    Objective,
    SolveRequest,
)
from planner.solver.search import assign

__all__ = [
    "MAX_LOAD", "MAX_REPLICAS", "SEQ_CHOICES", "SIM_QUICK_MARGIN", "SIM_QUICK_REQUESTS", "SIM_REQUESTS",
    "TEMPLATE_ROOM_TOKENS", "TP_CHOICES", "VERIFY_ROUNDS", "Candidate", "Objective", "Screening", "SimCheck",
    "Solution", "SolveRequest", "assign", "binding_constraints", "candidates_for", "default_gpus",
    "explain_infeasible", "prune", "solve",
]
