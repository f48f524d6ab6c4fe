"""The lazy search's capacity bound (``space.replica_bound``) is a true lower bound on every candidate's replicas,
and the count below it is refused for capacity by the analytic model itself."""

import math
from dataclasses import replace

import pytest

from planner.catalog.loader import load_gpus, load_models
from planner.load.analytic import predict
from planner.solver import Screening, SolveRequest
from planner.solver.request import SEQ_CHOICES
from planner.solver.space import Space, replica_bound
from planner.spec.slo import Budget, parse_slos
from planner.spec.workload import ImageSize, Workload

MODEL = load_models().get("Qwen/Qwen2.5-VL-3B-Instruct")
GPUS = [load_gpus().get(n) for n in ("L4", "A100-80GB")]


def space_for(rate: float, frontend_queue: bool = True, max_num_seqs: int | None = None) -> Space:
    w = Workload(name="w", prompt_tokens=256, output_tokens=128, images=[ImageSize(width=1280, height=960)],
                 arrival="poisson", rate_per_s=rate)
    req = SolveRequest(model=MODEL, workloads=[w], slos=parse_slos(["ttft_p95=3s"]), budget=Budget(), gpus=GPUS,
                       precisions=["bf16", "int4"], kv_cache_dtypes=["auto"], max_replicas=64,
                       frontend_queue=frontend_queue, max_num_seqs=max_num_seqs)
    return Space(req, {"w": Screening()})


@pytest.mark.parametrize(("rate", "queue", "seqs"), [(2.0, True, None), (30.0, True, None), (30.0, False, None),
                                                     (30.0, True, 16)])
def test_bound_never_exceeds_the_replicas_found(rate, queue, seqs):
    space = space_for(rate, queue, seqs)
    raised = 0
    for c in space.configs["w"]:
        bound = replica_bound(space, c)
        cands = space.candidates(c)
        assert all(k.replicas >= bound for k in cands), (c.gpu, c.base.precision, c.base.tp, bound)
        raised += bound > 1
    if rate >= 30:
        assert raised, "at 30 requests/s some configuration needs more than one replica for capacity alone"


def test_one_replica_fewer_is_over_the_load_ceiling():
    """Independent of the bound's arithmetic: with one replica fewer, the analytic model's own saturation
    throughput (any max_num_seqs, the most API servers the node holds) is below the per-replica rate / max_load."""
    space = space_for(30.0)
    kind_total = 30.0
    checked = 0
    for c in space.configs["w"]:
        bound = replica_bound(space, c)
        if bound < 2:
            continue
        cost = space.step_cost(space.sized(c, SEQ_CHOICES[0])[0])
        servers = max(1, space.front_end(space.sized(c, SEQ_CHOICES[0])[0], c.shape).most)
        per_replica = kind_total / (bound - 1)
        for seqs in SEQ_CHOICES:
            cfg, mem = space.sized(c, seqs)
            if not mem.fits:
                continue
            p = predict(cost, replace(cfg, api_server_count=servers), c.shape, "poisson", per_replica, None,
                        mem.kv_capacity_tokens)
            assert per_replica > space.req.max_load * p.max_requests_per_s
        checked += 1
    assert checked


def test_refined_bounds_keep_the_optimum():
    """The solve with the bound equals the one without (every bound left at one replica)."""
    from planner.solver import solve
    from planner.solver import space as space_mod

    w = Workload(name="w", prompt_tokens=256, output_tokens=128, images=[ImageSize(width=1280, height=960)],
                 arrival="poisson", rate_per_s=30.0)
    req = SolveRequest(model=MODEL, workloads=[w], slos=parse_slos(["ttft_p95=3s"]), budget=Budget(), gpus=GPUS,
                       precisions=["bf16", "int4"], kv_cache_dtypes=["auto"], max_replicas=64, verify=False)
    with_bound = solve(req)
    original = space_mod.replica_bound
    try:
        space_mod.replica_bound = lambda space, c: 1
        without = solve(req)
    finally:
        space_mod.replica_bound = original
    key = [(k.cfg.gpu.name, k.cfg.precision, k.cfg.tp, k.cfg.max_num_seqs, k.replicas) for k in with_bound.chosen]
    assert key == [(k.cfg.gpu.name, k.cfg.precision, k.cfg.tp, k.cfg.max_num_seqs, k.replicas)
                   for k in without.chosen]
    assert [a.cost_per_hour for a in with_bound.alternatives] == [a.cost_per_hour for a in without.alternatives]
    assert math.isclose(sum(k.cost_per_hour for k in with_bound.chosen), sum(k.cost_per_hour for k in without.chosen))
    assert with_bound.screening["w"].evaluated < without.screening["w"].evaluated
