"""Solver: brute force agrees with CP-SAT; monotone in SLO and budget; every answer re-checks."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_models, load_precisions
from planner.load.analytic import build_step_cost, predict
from planner.load.slo_check import meets
from planner.perf.memory import memory_breakdown
from planner.solver import Screening, SolveRequest, candidates_for, solve
from planner.spec.slo import Budget, parse_budget, parse_slos
from planner.spec.workload import ImageSize, Workload

MODEL = load_models().get("Qwen/Qwen2.5-VL-3B-Instruct")
GPU_NAMES = ["L4", "L40S", "A100-80GB", "H100"]
GPUS = [load_gpus().get(n) for n in GPU_NAMES]


def workload(name: str, rate: float) -> Workload:
    return Workload(name=name, prompt_tokens=256, output_tokens=128, images=[ImageSize(width=640, height=480)],
                    arrival="poisson", rate_per_s=rate)


def request(rates, slo="ttft_p95=800ms", budget: Budget | None = None, precisions=("bf16", "int4")):
    return SolveRequest(model=MODEL, workloads=[workload(f"w{i}", r) for i, r in enumerate(rates)],
                        slos=parse_slos([slo]), budget=budget or Budget(), gpus=GPUS,
                        precisions=list(precisions), kv_cache_dtypes=["auto"], max_replicas=32)


def brute_force_cost(req: SolveRequest) -> float:
    """Enumerate every combination of (unpruned) candidates, one per workload."""
    per_workload = [candidates_for(req, w, Screening()) for w in req.workloads]
    best = math.inf
    for combo in itertools.product(*per_workload):
        used: dict[str, int] = {}
        for c in combo:
            used[c.cfg.gpu.name] = used.get(c.cfg.gpu.name, 0) + c.gpus
        if any(req.budget.limit(g) is None or n > req.budget.limit(g) for g, n in used.items()):
            continue
        cost = sum(c.cost_per_hour for c in combo)
        if req.budget.max_usd_per_hour is not None and cost > req.budget.max_usd_per_hour + 1e-9:
            continue
        best = min(best, cost)
    return best


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rates=st.lists(st.sampled_from([0.5, 2.0, 6.0]), min_size=1, max_size=2),
    inventory=st.dictionaries(st.sampled_from(GPU_NAMES), st.integers(1, 4), min_size=1, max_size=3),
)
def test_solver_cost_equals_brute_force(rates, inventory):
    budget = parse_budget(",".join(f"{n}x{g}" for g, n in inventory.items()))
    req = request(rates, budget=budget)
    sol = solve(req)
    expected = brute_force_cost(req)
    if math.isinf(expected):
        assert sol.status == "infeasible"
    else:
        assert sol.status == "optimal"
        assert sum(c.cost_per_hour for c in sol.chosen) == pytest.approx(expected, abs=1e-6)


def test_looser_slo_never_costs_more():
    costs = []
    for limit in (300, 600, 1200, 5000):
        sol = solve(request([4.0], slo=f"ttft_p95={limit}ms"))
        costs.append(sum(c.cost_per_hour for c in sol.chosen) if sol.status != "infeasible" else math.inf)
    assert costs == sorted(costs, reverse=True)


def test_larger_budget_never_costs_more():
    costs = []
    for n in (1, 2, 4, 8):
        sol = solve(request([6.0], budget=parse_budget(f"{n}xL4,{n}xH100")))
        costs.append(sum(c.cost_per_hour for c in sol.chosen) if sol.status != "infeasible" else math.inf)
    assert costs == sorted(costs, reverse=True)


def test_every_chosen_deployment_holds_in_the_simulator():
    """The analytic screen chose these; the discrete-event simulator (another model of the same engine, seed 1,
    not the solver's check) must agree that each replica, at its share of the load, meets the SLOs (5% slack for
    the simulator's own sampling noise) and fits in memory."""
    from planner.load.simulator import build_requests, percentiles, simulate

    req = request([3.0, 1.0])
    sol = solve(req)
    assert sol.status == "optimal"
    engine, precisions = load_engine(), load_precisions()
    for c in sol.chosen:
        mem = memory_breakdown(c.cfg, engine, precisions)
        assert mem.fits
        w = next(w for w in req.workloads if w.name == c.workload)
        cost = build_step_cost(c.cfg, load_calibration(c.cfg.gpu.name))
        res = simulate(cost, build_requests(c.cfg, w, cost, 6000, seed=1), mem.kv_capacity_tokens, "poisson",
                       w.rate_per_s / c.replicas, seed=1, cfg=c.cfg)
        assert not res.saturated
        got = {"ttft": percentiles(res.ttft_ms), "tpot": percentiles(res.tpot_ms), "e2e": percentiles(res.e2e_ms)}
        for s in req.slos:
            assert got[s.metric][s.stat] <= 1.05 * s.limit_ms, (c.workload, s.key, got[s.metric][s.stat])


def test_same_input_same_plan():
    a = solve(request([2.0, 5.0]))
    b = solve(request([2.0, 5.0]))
    assert [(c.cfg.gpu.name, c.cfg.precision, c.cfg.tp, c.cfg.max_num_seqs, c.replicas) for c in a.chosen] == \
        [(c.cfg.gpu.name, c.cfg.precision, c.cfg.tp, c.cfg.max_num_seqs, c.replicas) for c in b.chosen]


def test_memory_infeasibility_is_explained():
    # Hand calculation: Qwen3-VL-235B-A22B has ~235e9 parameters; at bf16 that is ~438 GiB of weights.
    # The largest replica the solver considers is two nodes of 8 L4s: 16 x 22.4 GiB = 358 GiB < 438 GiB.
    big = load_models().get("Qwen/Qwen3-VL-235B-A22B-Instruct")
    req = SolveRequest(model=big, workloads=[workload("w", 1.0)], slos=parse_slos(["ttft_p95=2s"]),
                       budget=parse_budget("64xL4"), gpus=[load_gpus().get("L4")],
                       precisions=["bf16"], kv_cache_dtypes=["auto"])
    sol = solve(req)
    assert sol.status == "infeasible"
    assert sol.explanation.startswith("memory: weights need")
    weights_gib = float(sol.explanation.split("need ")[1].split(" GiB")[0])
    assert 430 <= weights_gib <= 445
    assert "16 x 22 GiB" in sol.explanation


def test_budget_too_small_for_the_weights_says_how_many_gpus():
    # Hand calculation: Qwen2.5-VL-72B at bf16 is ~137 GiB of weights; at gpu_memory_utilization 0.9
    # three A100-40GB give 3 x 0.9 x 39.4 = 106 GiB (too little), so a replica needs 4 GPUs > budget of 2.
    big = load_models().get("Qwen/Qwen2.5-VL-72B-Instruct")
    req = SolveRequest(model=big, workloads=[workload("w", 1.0)], slos=parse_slos(["ttft_p95=2s"]),
                       budget=parse_budget("2xA100-40GB"), gpus=[load_gpus().get("A100-40GB")],
                       precisions=["bf16"], kv_cache_dtypes=["auto"])
    sol = solve(req)
    assert sol.status == "infeasible"
    assert sol.explanation.startswith("budget: the cheapest feasible plan needs 4 x A100")
    assert "> 2" in sol.explanation


def test_latency_infeasibility_names_lowest_achievable():
    sol = solve(request([1.0], slo="ttft_p95=1ms"))
    assert sol.status == "infeasible"
    assert sol.explanation.startswith("latency: the lowest achievable ttft p95 is")
    assert "ttft_p95=" in sol.relaxation


def test_budget_infeasibility_says_how_many_gpus():
    sol = solve(request([40.0], budget=parse_budget("1xL4")))
    assert sol.status == "infeasible"
    assert sol.explanation.startswith("budget: the cheapest feasible plan needs")


def test_binding_says_why_one_replica_fewer_would_not_do():
    # A loose SLO: the replica count is set by capacity (one replica fewer would be past its saturation rate).
    loose = solve(request([19.0], slo="ttft_p95=20000ms"))
    c = loose.chosen[0]
    assert c.replicas > 1 and 19.0 / (c.replicas - 1) >= c.prediction.max_requests_per_s
    assert "capacity: one replica saturates" in loose.binding[0]
    # A tight TPOT SLO: one replica fewer would break it, by the value the analytic model gives at that load.
    tight = solve(request([40.0], slo="tpot_p95=12ms"))
    c = tight.chosen[0]
    assert c.replicas > 1
    mem = memory_breakdown(c.cfg, load_engine(), load_precisions())
    pred = predict(build_step_cost(c.cfg, load_calibration(c.cfg.gpu.name)), c.cfg, c.shape, "poisson",
                   40.0 / (c.replicas - 1), None, mem.kv_capacity_tokens)
    assert pred.tpot.p95 > 12
    assert f"with {c.replicas - 1}, tpot_p95 would be {pred.tpot.p95:.1f} ms" in tight.binding[0]


def test_replicas_stay_under_the_load_ceiling_unless_it_is_lifted():
    # 40 req/s with a loose SLO: three L40S (bf16) replicas would each run at 95% of their saturation rate. The
    # default ceiling (MAX_LOAD) refuses that and pays for a fourth; max_load=1 takes three.
    from dataclasses import replace as dc_replace

    from planner.solver import MAX_LOAD

    req = request([40.0], slo="ttft_p95=20000ms")
    capped = solve(req)
    lifted = solve(dc_replace(req, max_load=1.0))
    for c in capped.chosen:
        assert 40.0 / c.replicas <= MAX_LOAD * c.prediction.max_requests_per_s
    (c1,) = lifted.chosen
    assert 40.0 / c1.replicas > MAX_LOAD * c1.prediction.max_requests_per_s
    assert lifted.chosen[0].cost_per_hour < sum(c.cost_per_hour for c in capped.chosen)


def test_a_bursty_trace_is_checked_by_replaying_it():
    # 40 requests within 0.2 s every 10 s: 4 req/s on average. Poisson at 4 req/s fits one L4 under a 1 s TTFT
    # p95; the trace's bursts do not, so that plan must not come back for the trace (the simulator replays
    # each replica's share of the trace, where the analytic screen saw Poisson at the mean rate).
    from dataclasses import replace as dc_replace

    trace = tuple(float(t) for b in range(300) for t in (10.0 * b + np.linspace(0, 0.2, 40)))
    base = dc_replace(request([4.0], slo="ttft_p95=1000ms"), verify=True)
    poisson = solve(base)
    assert poisson.status == "optimal"
    p = poisson.chosen[0]
    wl = base.workloads[0].model_copy(update={"arrival": "trace", "rate_per_s": None, "trace_s": trace})
    bursty = solve(dc_replace(base, workloads=[wl]))
    assert bursty.status == "optimal"
    assert all(c.ident != p.ident for c in bursty.chosen)
    assert all(c.simulated is not None and c.simulated.meets for c in bursty.chosen)
    assert sum(c.cost_per_hour for c in bursty.chosen) > p.cost_per_hour
    assert any("simulator gives ttft_p95" in n for n in bursty.notes)
    # With too few rounds to reach it, the answer is infeasible and says why.
    short = solve(dc_replace(base, workloads=[wl], verify_rounds=2))
    assert short.status == "infeasible" and "replays its bursts" in short.relaxation


@pytest.mark.parametrize("hint_offset", [None, 0, 1, 5, -1, -3])
def test_replica_search_equals_a_linear_scan(hint_offset):
    # Document pages on one L4 under a 2 s TTFT p95: tens of replicas, each at a small share of 3 req/s. The
    # galloping/bisecting search (and its sibling hint, right or wrong) must find the first count a scan finds.
    from planner.solver.replicas import replicas_for
    from planner.spec.config import ServingConfig, resolve
    from planner.spec.shape import request_shape
    from planner.spec.workload import PRESETS

    cfg = resolve(ServingConfig(model=load_models().get("Qwen/Qwen2.5-VL-7B-Instruct"), gpu=load_gpus().get("L4"),
                                precision="fp8"), load_engine())
    mem = memory_breakdown(cfg, load_engine(), load_precisions())
    cost = build_step_cost(cfg, load_calibration(cfg.gpu.name))
    wl = PRESETS["document-vqa"].model_copy(update={"arrival": "poisson", "rate_per_s": 3.0})
    shape = request_shape(cfg, wl)
    slos = parse_slos(["ttft_p95=2s"])

    def cost_pred(arrival, rate, conc):
        return predict(cost, cfg, shape, arrival, rate, conc, mem.kv_capacity_tokens)

    def fine(r):
        p = cost_pred("poisson", 3.0 / r, None)
        return meets(p, slos) and 3.0 / r <= 0.85 * p.max_requests_per_s

    scan = next(r for r in range(1, 257) if fine(r))
    assert scan > 8  # the case exercises the gallop and the bisection
    hint = None if hint_offset is None else scan + hint_offset
    found = replicas_for(cost_pred, wl, slos, 256, 0.85, hint=hint)
    assert found is not None and found[0] == scan


def test_peak_in_system_counts_overlaps_with_finishes_first():
    from planner.solver.verify import peak_in_system

    arrival = np.array([0.0, 1.0, 2.0, 3.0])
    finish = np.array([3.0, 1.5, 4.0, 5.0])
    # [0,3) [1,1.5) [2,4) [3,5): at most two at once (at 3 one leaves as one comes).
    assert peak_in_system(arrival, finish) == 2
    assert peak_in_system(np.array([0.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0])) == 3


@pytest.mark.parametrize("answer", [1, 2, 3, 7, 8, 9, 40, 200])
@pytest.mark.parametrize("step", [None, 2])
def test_one_replica_search_finds_the_first_passing_count_and_tests_each_count_once(answer, step):
    # The analytic screen (step None: counts double) and the simulator's re-check (steps of 2, 4, ...) share
    # `fewest`: both must find the first passing count, never test a count twice, and stop at the limit.
    from planner.solver.replicas import fewest

    tried: list[int] = []

    def test(r: int) -> str | None:
        tried.append(r)
        return f"ok at {r}" if r >= answer else None

    found = fewest(test, 0, 1, 256, step=step)
    assert found == (answer, f"ok at {answer}")
    assert len(tried) == len(set(tried)) and len(tried) <= 2 * answer.bit_length() + 2
    tried.clear()
    assert fewest(test, 0, 1, answer - 1, step=step) is None if answer > 1 else True
    assert all(r <= max(answer - 1, 1) for r in tried)


def test_cpsat_assignment_is_the_brute_force_optimum():
    # The CP-SAT model (public CpModel API) against every assignment of small random problems: the same
    # optimum, 'optimal' status, and 'infeasible' exactly when no assignment fits the inventory and the cap.
    import itertools
    import random

    from planner.solver.cpsat import Option, milli, solve_assignment

    rng = random.Random(7)
    for case in range(60):
        names = ["a", "b", "c"][: 1 + case % 3]
        opts = [Option(w, rng.choice(["H100", "L4"]), g, g * rng.choice([0.8, 2.0, 4.76]), 0.0, None)
                for w in names for g in rng.sample(range(1, 9), 3)]
        budget = Budget(inventory={"H100": rng.randint(1, 12), "L4": rng.randint(1, 12)},
                        max_usd_per_hour=rng.choice([None, 20.0, 60.0]))

        def fits(pick: tuple[Option, ...]) -> bool:
            used = {g: sum(o.gpus for o in pick if o.gpu == g) for g in ("H100", "L4")}
            cost = sum(milli(o.cost_per_hour) for o in pick)
            cap = budget.max_usd_per_hour
            return all(used[g] <= (budget.limit(g) or 0) for g in used) and (cap is None or cost <= milli(cap))

        picks = [p for p in itertools.product(*[[o for o in opts if o.workload == w] for w in names]) if fits(p)]
        status, chosen = solve_assignment(names, opts, budget, "cost")
        if not picks:
            assert status == "infeasible" and chosen == []
            continue
        best = min(sum(milli(o.cost_per_hour) for o in p) for p in picks)
        assert status == "optimal" and [o.workload for o in chosen] == names
        assert sum(milli(o.cost_per_hour) for o in chosen) == best


def test_cpsat_proto_is_the_one_cp_model_builds():
    # planner.solver.cpsat writes the CpModelProto through cp_model_helper (cp_model imports pandas): the same
    # proto, text for text, as the public CpModel API builds, and the same picks from CpSolver, on random
    # problems with zero costs, single options, inventories and cost caps, under every objective.
    import random

    from ortools.sat.python import cp_model

    from planner.solver.cpsat import SEED, TIME_LIMIT_S, WORKERS, Option, _model, milli, solve_assignment, weights

    rng = random.Random(11)
    for case in range(40):
        names = ["a", "b", "c"][: 1 + case % 3]
        opts = [Option(w, rng.choice(["H100", "L4"]), g, g * rng.choice([0.0, 0.8, 2.0, 4.76]),
                       rng.choice([0.0, 120.5, 300.25]), None)
                for w in names for g in rng.sample(range(1, 9), rng.choice([1, 3]))]
        budget = Budget(inventory=rng.choice([{}, {"H100": rng.randint(1, 12), "L4": rng.randint(1, 12)}]),
                        max_usd_per_hour=rng.choice([None, 0.0, 20.0, 60.0]))
        objective = rng.choice(["cost", "gpus", "latency"])
        m = cp_model.CpModel()
        x = [m.new_bool_var(f"x{i}") for i in range(len(opts))]
        for w in names:
            m.add_exactly_one([x[i] for i, o in enumerate(opts) if o.workload == w])
        for gpu in sorted({o.gpu for o in opts}):
            if (limit := budget.limit(gpu)) is not None:
                idx = [i for i, o in enumerate(opts) if o.gpu == gpu]
                m.add_linear_constraint(cp_model.LinearExpr.weighted_sum([x[i] for i in idx],
                                                                         [opts[i].gpus for i in idx]), 0, limit)
        if budget.max_usd_per_hour is not None:
            m.add_linear_constraint(cp_model.LinearExpr.weighted_sum(x, [milli(o.cost_per_hour) for o in opts]),
                                    0, milli(budget.max_usd_per_hour))
        m.minimize(cp_model.LinearExpr.weighted_sum(x, weights(opts, objective)))  # type: ignore[arg-type]
        assert str(_model(names, opts, budget, objective)) == str(m.proto)
        solver = cp_model.CpSolver()
        solver.parameters.random_seed = SEED
        solver.parameters.num_workers = WORKERS
        solver.parameters.max_time_in_seconds = TIME_LIMIT_S
        st = solver.solve(m)
        status, chosen = solve_assignment(names, opts, budget, objective)  # type: ignore[arg-type]
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            assert status == "infeasible"
            continue
        assert status == ("optimal" if st == cp_model.OPTIMAL else "feasible")
        assert sorted(map(id, chosen)) == sorted(id(o) for o, v in zip(opts, x) if solver.boolean_value(v))


def test_the_simulator_check_in_a_child_process_gives_the_same_solution(monkeypatch: pytest.MonkeyPatch) -> None:
    # planner.solver.overlap: the chosen deployments are simulated in a forked child while the parent finds the
    # alternatives; the answer must not depend on it.
    from planner.app.solve_request import SolveInput, build_request

    req, _ = build_request(SolveInput(model="Qwen/Qwen2.5-VL-3B-Instruct", budget="4xL4"))
    monkeypatch.setenv("VLMPLAN_PARALLEL", "0")
    alone = solve(req)
    monkeypatch.setenv("VLMPLAN_PARALLEL", "1")
    overlapped = solve(req)
    assert alone.status == overlapped.status == "optimal"
    assert [(c.ident, c.simulated) for c in alone.chosen] == [(c.ident, c.simulated) for c in overlapped.chosen]
    assert [c.ident for c in alone.alternatives] == [c.ident for c in overlapped.alternatives]
    assert all(c.simulated is not None for c in overlapped.chosen)
