"""Speculative decoding between the user and the plan: ``--speculative`` / ``--acceptance-rate`` checked into
``SolveRequest`` arguments, a chosen ``Speculation`` written as the plan's ``SpeculativePlan``."""

from __future__ import annotations

from typing import Any

from planner.core.errors import RequestError
from planner.perf.speculative import tokens_per_step
from planner.plan import SpeculativePlan
from planner.spec.config import Speculation
from planner.spec.speculation import check_acceptance, parse_choice


def speculative_args(choice: str | None, acceptance_rate: float | None, topologies: tuple[str, ...]
                     ) -> dict[str, Any]:
    """``SolveRequest``'s ``speculative`` and ``acceptance_rate`` (a named method is checked against each model
    when its configurations are listed). Disaggregated pools are planned without speculation; aggregated candidates
    keep it whatever the topologies (``auto``), so adding pd never makes the answer dearer."""
    value = parse_choice(choice)
    if value not in ("auto", "off") and "pd" in topologies:
        raise RequestError(f"--speculative {value} is not planned with --topologies pd (aggregated only)")
    return {"speculative": value,
            "acceptance_rate": check_acceptance(acceptance_rate)}


def speculative_plan(spec: Speculation | None) -> SpeculativePlan | None:
    """The plan's record of ``spec`` (None: off)."""
    if spec is None:
        return None
    return SpeculativePlan(method=spec.method, num_speculative_tokens=spec.num_speculative_tokens,  # type: ignore
                           draft_model=spec.draft_model, extra_config=dict(spec.extra_config),
                           acceptance_rate=spec.acceptance_rate,
                           tokens_per_step=round(tokens_per_step(spec.num_speculative_tokens,
                                                                 spec.acceptance_rate, spec.draft_rate), 3))
