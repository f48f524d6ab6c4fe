"""The solver decides --api-server-count per replica (solver.frontend) within the node's CPUs (perf.hostcpu).

The document-page case of issue 16: Gemma 3 4B sends a 1680x2240 page to the GPU as one 896x896 crop (a light
engine), but its API server still decodes and preprocesses all 3.76 megapixels, so one API server saturates near
14 requests/s while the H100's engine serves about 30. Planned without the API-server queue, two replicas with one
API server each look fine; the simulator (with the queue) shows them saturated.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_models
from planner.load.simulator import build_requests, simulate
from planner.load.slo_check import meets
from planner.perf.hostcpu import api_server_vcpus, most_api_servers, replica_memory_gib, replica_vcpus
from planner.solver import SolveRequest, solve
from planner.solver.candidate import Candidate
from planner.spec.config import ServingConfig, resolve
from planner.spec.shape import request_shape
from planner.spec.slo import Budget, parse_slos
from planner.spec.workload import ImageSize, Workload

GEMMA = load_models().get("google/gemma-3-4b-it")
PAGE = Workload(name="pages", prompt_tokens=64, output_tokens=128, images=[ImageSize(width=1680, height=2240)],
                arrival="poisson", rate_per_s=40.0)
SLOS = parse_slos(["ttft_p95=1s"])


def _page_hold_and_cpu_ms() -> tuple[float, float]:
    """Hand calculation from the catalog constants (H200 host, vLLM 0.26 fit): a request holds an API server for
    per-request + per-output-token x 128 + per-image + per-megapixel-wall x 3.7632 ms, and costs the same with the
    megapixel term at its CPU rate (all the processor's threads)."""
    cal = load_calibration("H100-SXM-80GB")
    host = load_engine().host
    assert host is not None
    mp = 1680 * 2240 / 1e6  # 3.7632
    fixed = (cal.value("api_server_ms_per_request") + 128 * cal.value("api_server_ms_per_output_token")
             + cal.value("api_server_ms_per_image") + 64 * cal.value("api_server_ms_per_input_token"))
    return fixed + mp * cal.value("api_server_ms_per_megapixel"), fixed + mp * host.api_server_cpu_ms_per_megapixel


def test_host_cpus_of_a_document_page_replica_by_hand():
    host = load_engine().host
    assert host is not None
    gpu = load_gpus().get("H100")
    cfg = resolve(ServingConfig(model=GEMMA, gpu=gpu, api_server_count=2), _engine())
    shape = request_shape(cfg, PAGE)
    hold, cpu = _page_hold_and_cpu_ms()
    assert 65 < hold < 80 and 170 < cpu < 190  # 6.7 + 10.7 + 54.4 = 71.8 ms held, 6.7 + 10.7 + 153.9 ms of CPU
    per = api_server_vcpus(load_calibration(gpu.name), host, shape)
    assert per == pytest.approx(cpu / hold, rel=1e-9)
    assert replica_vcpus(host, cfg, per) == pytest.approx(host.engine_core_vcpus + 2 * cpu / hold, rel=1e-9)
    # An H100 node offers 24 vCPUs per GPU: (24 - 3) // 2.39 = 8 API servers at most.
    assert most_api_servers(host, cfg, per) == int((24 - host.engine_core_vcpus) // (cpu / hold))
    # An A10G on a g5.xlarge offers 4: the engine's 3 leave no room for one busy page-preprocessing API server.
    a10g = resolve(ServingConfig(model=GEMMA, gpu=load_gpus().get("A10G"), precision="bf16"), _engine())
    assert most_api_servers(host, a10g, per) == 0
    # Host RAM: engine 16 + the 4 GiB processor cache x (2 API servers + the engine core) + 2 x 2 GiB.
    assert replica_memory_gib(host, 2) == pytest.approx(16 + 4 * 3 + 2 * 2)


def _engine():
    from planner.catalog.loader import load_engine

    return load_engine()


def _solve(queue: bool):
    return solve(SolveRequest(model=GEMMA, workloads=[PAGE], slos=SLOS, budget=Budget(),
                              gpus=[load_gpus().get("H100")], precisions=["fp8"], kv_cache_dtypes=["fp8"],
                              frontend_queue=queue))


def _simulated_with_queue(c: Candidate):
    """One replica of ``c`` at its share of the load in the simulator, with the API-server queue (the real server's
    front end), whatever the plan assumed."""
    from planner.load.analytic import build_step_cost

    cost = build_step_cost(c.cfg, load_calibration(c.cfg.gpu.name))
    reqs = build_requests(c.cfg, PAGE, cost, 4000, 0)
    assert reqs.api_ms is not None
    return simulate(cost, reqs, c.memory.kv_capacity_tokens, "poisson", PAGE.rate_per_s / c.replicas, seed=0,
                    cfg=c.cfg)


@pytest.fixture(scope="module")
def plans():
    return _solve(True), _solve(False)


def test_document_pages_get_more_api_servers_and_the_plan_says_why(plans):
    with_queue, _ = plans
    assert with_queue.status == "optimal"
    (c,) = with_queue.chosen
    hold, _ = _page_hold_and_cpu_ms()
    rate = PAGE.rate_per_s / c.replicas
    one_server_cap = 1e3 / hold  # ~13.9 req/s
    assert rate > one_server_cap  # one API server per replica would saturate
    n = c.cfg.api_server_count
    assert n >= 2 and rate <= 0.85 * n * one_server_cap + 1e-9  # under the load ceiling, like the engine
    assert rate > 0.85 * (n - 1) * one_server_cap  # the fewest that do
    front = [b for b in with_queue.binding if "front end" in b]
    assert front and f"--api-server-count {n}" in front[0] and "would saturate" in front[0]


def test_without_the_queue_the_plan_under_provisions_and_the_simulator_shows_it(plans):
    with_queue, without = plans
    (good,) = with_queue.chosen
    (naive,) = without.chosen
    assert naive.cfg.api_server_count == 1
    # Same GPUs: the difference is the front end alone.
    assert naive.gpus == good.gpus
    bad_run, good_run = _simulated_with_queue(naive), _simulated_with_queue(good)
    # One API server per replica at 20 req/s: served at most its ~13.9 req/s, the queue in front of it grows
    # without end (the engine behind it sees a steady stream): TTFT p95 in the tens of seconds.
    assert not meets(bad_run, SLOS)
    assert float(np.percentile(bad_run.ttft_ms, 95)) > 10 * SLOS[0].limit_ms
    assert bad_run.requests_per_s < 1e3 / _page_hold_and_cpu_ms()[0] * 1.02
    # The planned API servers keep up and meet the SLO.
    assert not good_run.saturated and meets(good_run, SLOS)
    assert good_run.requests_per_s == pytest.approx(PAGE.rate_per_s / good.replicas, rel=0.05)
    # The same replicas with the queue switched off in the simulator too (the old planner's view) look fine.
    cost_naive = _simulated_without_queue(naive)
    assert meets(cost_naive, SLOS)


def _simulated_without_queue(c: Candidate):
    from planner.load.analytic import build_step_cost

    cost = build_step_cost(c.cfg, load_calibration(c.cfg.gpu.name))
    reqs = replace(build_requests(c.cfg, PAGE, cost, 4000, 0), api_ms=None)
    return simulate(cost, reqs, c.memory.kv_capacity_tokens, "poisson", PAGE.rate_per_s / c.replicas, seed=0,
                    cfg=c.cfg)


def test_a_node_without_cpus_for_the_front_end_is_refused():
    """On an A10G (4 vCPUs per GPU on a g5.xlarge) a one-GPU document-page replica does not fit its CPUs (engine 3 +
    one busy API server 2.4 > 4): the screen says why, and the plan takes two GPUs per replica, whose 8 vCPUs hold
    the engine, two workers and the API server (3 + 2 + 2.4 = 7.4)."""
    sol = solve(SolveRequest(model=GEMMA, workloads=[PAGE.model_copy(update={"rate_per_s": 1.0})], slos=SLOS,
                             budget=Budget(), gpus=[load_gpus().get("A10G")], precisions=["bf16"],
                             kv_cache_dtypes=["auto"]))
    notes = sol.screening["pages"].unsupported
    assert any(n.startswith("1 x A10G-24GB") and "host CPUs" in n and "> the 4 its node offers" in n for n in notes)
    (c,) = sol.chosen
    assert c.cfg.num_gpus == 2 and c.cfg.api_server_count == 1


def test_the_default_problem_keeps_one_api_server():
    """640x480 photos at 5 req/s: a request holds an API server ~30 ms, so one is 15% busy: nothing to decide."""
    wl = Workload(name="default", prompt_tokens=256, output_tokens=256, images=[ImageSize(width=640, height=480)],
                  arrival="poisson", rate_per_s=5.0)
    sol = solve(SolveRequest(model=load_models().get("Qwen/Qwen2.5-VL-7B-Instruct"), workloads=[wl],
                             slos=parse_slos(["ttft_p95=500ms"]), budget=Budget(), gpus=[load_gpus().get("H100")],
                             precisions=["fp8"], kv_cache_dtypes=["fp8"]))
    (c,) = sol.chosen
    assert c.cfg.api_server_count == 1
    assert not any("front end" in b for b in sol.binding)


def test_host_constants_are_the_fit_of_the_real_server_runs():
    """The engines catalog's API-server CPU per megapixel is what fit_api_server_cpu gives on the shipped runs, and
    the engine core's CPUs cover the most it used in any of them."""
    from planner.calibrate.fit.api_server import fit_api_server_cpu

    host = load_engine().host
    assert host is not None
    fit = fit_api_server_cpu()
    assert fit.runs == 34 and fit.mape_pct < 15
    assert host.api_server_cpu_ms_per_megapixel == pytest.approx(fit.cpu_ms_per_megapixel, abs=0.01)
    assert fit.peak_engine_core_cores <= host.engine_core_vcpus < fit.peak_engine_core_cores + 1
    # The single-threaded preprocessing of a 1680x2240 noise JPEG (run21 preproc.json: 147 ms) is the same CPU cost.
    assert fit.cpu_ms_per_megapixel * 1680 * 2240 / 1e6 == pytest.approx(147.1, rel=0.1)
