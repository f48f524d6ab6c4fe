"""``simulate``: serve a set of requests on one replica, lane by lane, and measure them."""

from __future__ import annotations

import numpy as np

from planner.load.simulator.arrivals import api_queue_wait, arrival_times
from planner.load.simulator.lane import Lane
from planner.load.simulator.requests import SimRequests
from planner.load.simulator.result import SimResult, closed_window, queue_grows
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig


def simulate(cost: StepCost, reqs: SimRequests, kv_capacity_tokens: int, arrival: str = "poisson",
             rate_per_s: float | None = None, concurrency: int | None = None,
             trace_s: tuple[float, ...] | None = None, seed: int = 0, warmup: float = 0.1,
             cooldown: float = 0.05, block_size: int = 16, cfg: ResolvedConfig | None = None,
             async_scheduling: bool | None = None) -> SimResult:
    """Serve ``reqs`` on one replica of ``cost.cfg``; returns per-request times.

    ``arrival`` 'poisson' (``rate_per_s``), 'trace' (``trace_s``, repeated when
    shorter than the requests), 'closed' (``concurrency`` clients) or 'single'
    (one request at a time). The first ``warmup`` and last ``cooldown``
    fractions of the requests (closed loop: at least the last ``concurrency``)
    are left out of the statistics. ``cfg`` (default ``cost.cfg``) supplies the scheduler's limits
    (max_num_seqs, max_num_batched_tokens, pp), so one ``StepCost`` serves configs differing only in those.
    ``async_scheduling`` (default: ``cfg.async_scheduling``, vLLM's default but where the speculative method turns it
    off): a busy engine schedules step k + 1 while step k runs, so a request arriving during step k is first
    scheduled in step k + 2.
    """
    n = len(reqs)
    if n == 0:
        raise ValueError("no requests to simulate")
    cfg = cfg or cost.cfg
    if async_scheduling is None:
        async_scheduling = cfg.async_scheduling
    if arrival == "single":
        arrival, concurrency = "closed", 1
    if arrival == "closed" and not concurrency:
        raise ValueError("closed-loop arrival needs concurrency")
    arr = arrival_times(n, arrival, rate_per_s, trace_s, seed)
    servers = max(1, int(cfg.api_server_count))
    front_ms = reqs.frontend_ms.copy() if reqs.frontend_ms is not None else None
    if arr is not None and reqs.api_ms is not None:
        # Open loop: the API servers serve arrivals in order; the engine sees each request after its wait.
        wait = api_queue_wait(arr, reqs.api_ms * 1e-3, servers)
        arr = arr + wait
        front_ms = (front_ms if front_ms is not None else np.zeros(n)) + wait * 1e3
    times, busy, end, preempt, steps = _run_lanes(cost, reqs, cfg, arr, concurrency, kv_capacity_tokens,
                                                  block_size, async_scheduling, servers, front_ms)
    out_arr, out_first, out_fin = times
    measured, window, counted, order = _window(out_arr, out_fin, arrival, concurrency, warmup, cooldown)
    saturated = queue_grows(out_arr, out_first, order, arrival)
    return SimResult(arrival_s=out_arr, first_token_s=out_first, finish_s=out_fin,
                     output_tokens=reqs.output.copy(), measured=measured, window_s=window,
                     busy_seq_s=busy, sim_end_s=end, preemptions=preempt, steps=steps, saturated=saturated,
                     frontend_ms=front_ms, counted=counted)


def _run_lanes(cost: StepCost, reqs: SimRequests, cfg: ResolvedConfig, arr: np.ndarray | None,
               concurrency: int | None, kv_capacity_tokens: int, block_size: int, async_scheduling: bool,
               servers: int, front_ms: np.ndarray | None
               ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], float, float, int, int]:
    """Pipeline parallelism runs ``pp`` batches at once (V1's batch queue): ``pp`` independent lanes, each with
    the full-pipeline step time and ``1/pp`` of the sequences and KV cache, requests assigned round-robin.
    Returns (arrival, first token, finish) times, the busy-sequence integral, the end, preemptions and steps;
    a closed loop's API-server waits are added to ``front_ms`` in place."""
    n = len(reqs)
    lanes = max(1, cfg.pp)
    out = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    busy = end = 0.0
    preempt = steps = 0
    for lane in range(lanes):
        ids = np.arange(lane, n, lanes)
        if len(ids) == 0:
            continue
        conc = None
        if arr is None:
            assert concurrency is not None
            conc = concurrency // lanes + (1 if lane < concurrency % lanes else 0)
            if conc == 0:
                continue
        r = Lane(cost, reqs, ids, arr[ids] if arr is not None else None, conc, kv_capacity_tokens // lanes,
                 max(1, cfg.max_num_seqs // lanes), int(cfg.max_num_batched_tokens),  # type: ignore[operator,arg-type]
                 block_size, async_scheduling, api_servers=servers if arr is None else 0).run()
        out[0][ids], out[1][ids], out[2][ids] = r[0], r[1], r[2]
        if arr is None and reqs.api_ms is not None:
            assert front_ms is not None
            front_ms[ids] += r[7] * 1e3
        busy += r[3]
        end = max(end, r[4])
        preempt += r[5]
        steps += r[6]
    return out, busy, end, preempt, steps


def _window(out_arr: np.ndarray, out_fin: np.ndarray, arrival: str, concurrency: int | None, warmup: float,
            cooldown: float) -> tuple[np.ndarray, tuple[float, float], np.ndarray | None, np.ndarray]:
    """The measured requests (warm-up and drain left out), the throughput window, the closed loop's counted
    completions, and the measured requests in arrival order."""
    n = len(out_arr)
    order = np.argsort(out_arr, kind="stable")
    warm = int(n * warmup)
    cool = int(n * cooldown)
    if arrival == "closed":
        assert concurrency is not None
        cool = max(cool, concurrency)
        warm = max(warm, min(concurrency, n // 4))
    measured = np.zeros(n, dtype=bool)
    lo, hi = warm, max(warm + 1, n - cool)
    if hi - lo < max(10, n // 10):  # too few requests for a window: measure all
        lo, hi = 0, n
    measured[order[lo:hi]] = True
    t0 = float(out_arr[order[lo]])
    t1 = float(out_arr[order[hi - 1]])
    counted = None
    if arrival == "closed":
        t0, t1, counted = closed_window(out_fin, lo, hi, int(concurrency or 1))
    elif t1 <= t0:
        t1 = float(np.max(out_fin[order[lo:hi]]))
    return measured, (t0, t1), counted, order[lo:hi]
