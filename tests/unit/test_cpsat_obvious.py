"""``cpsat.obvious`` answers only where the optimum is plain, and then with CP-SAT's own answer."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.solver.cpsat import Option, obvious, solve_assignment
from planner.spec.slo import Budget

GPUS = ["A", "B", "C"]

option = st.builds(Option, workload=st.sampled_from(["w0", "w1"]), gpu=st.sampled_from(GPUS),
                   gpus=st.integers(1, 6), cost_per_hour=st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]),
                   ttft_p95_ms=st.just(0.0), candidate=st.none())
budget = st.builds(Budget, inventory=st.dictionaries(st.sampled_from(GPUS), st.integers(1, 8), max_size=3),
                   max_usd_per_hour=st.sampled_from([None, 2.0, 4.0]))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(opts=st.lists(option, min_size=1, max_size=8), budget=budget,
       objective=st.sampled_from(["cost", "gpus"]), workloads=st.sampled_from([["w0"], ["w0", "w1"]]))
def test_obvious_is_cp_sats_answer(opts, budget, objective, workloads):
    plain = obvious(workloads, opts, budget, objective)
    if plain is None:
        return
    status, picked = solve_assignment(workloads, opts, budget, objective)
    assert status == "optimal"
    assert [id(o) for o in picked] == [id(o) for o in plain]


def test_ties_and_budgets_are_left_to_cp_sat():
    a = Option("w0", "A", 1, 1.0, 0.0, None)
    b = Option("w0", "B", 1, 1.0, 0.0, None)
    c = Option("w0", "C", 2, 2.0, 0.0, None)
    assert obvious(["w0"], [a, b, c], Budget(), "cost") is None  # two cheapest
    assert obvious(["w0"], [a, c], Budget(), "cost") == [a]
    assert obvious(["w0"], [a, c], Budget(inventory={"A": 0, "C": 4}), "cost") is None  # no A left
    assert obvious(["w0"], [a, c], Budget(max_usd_per_hour=0.5), "cost") is None  # over the cap
    assert obvious(["w1"], [a, c], Budget(), "cost") is None  # a workload with no option
