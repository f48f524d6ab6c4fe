"""What-if sweeps: one base scenario, one or more varied dimensions, one row per point.

The grammar of ``--vary`` is in ``vary``. Each point is evaluated either by the solver (``solver_mode``: its
cheapest deployment under the scenario's SLOs and budget, simulator-checked as `vlmplan solve` does) or, in fixed
mode (``fixed_mode``), on the scenario's one configuration: the memory model and the analytic load model (or the
simulator) of one replica. ``sweep`` runs the points; ``rows`` holds the columns every row has.
"""

from planner.app.whatif.base_case import apply_workload_overrides, describe_workload, held_fixed
from planner.app.whatif.rows import slo_verdict
from planner.app.whatif.sweep import SweepResult, evaluate_scenario, sweep
from planner.app.whatif.vary import (
    COLUMN,
    DEFAULT_POINTS,
    DIMENSIONS,
    MAX_POINTS,
    UNITS,
    Vary,
    parse_varies,
    parse_vary,
    point_label,
    points,
)

__all__ = ["COLUMN", "DEFAULT_POINTS", "DIMENSIONS", "MAX_POINTS", "UNITS", "SweepResult", "Vary",
           "apply_workload_overrides", "describe_workload", "evaluate_scenario", "held_fixed", "parse_varies",
           "parse_vary", "point_label", "points", "slo_verdict", "sweep"]
