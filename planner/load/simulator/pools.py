"""Prefill/decode disaggregation (``pd``) as coupled queues: a prefill pool and a decode pool of vLLM engines,
the KV cache handed from one to the other.

What is modelled (vLLM 0.33 with ``--kv-transfer-config`` and the NIXL connector, driven by a routing proxy as in
vLLM's ``toy_proxy_server.py``):

* **Routing.** The proxy picks a prefill instance and a decode instance round-robin per request (request ``i``
  goes to prefill replica ``i mod R_p`` and decode replica ``i mod R_d``).
* **Prefill pool.** The request reaches the prefill instance's API server (its queue for the instance's
  ``api_server_count`` processes, as in the aggregated model) and runs as a request with ``max_tokens=1``: the
  engine prefills it (chunked, with its vision encoder) in the same scheduler model as an aggregated engine
  (``Lane``), and finishes it when its one token is sampled.
* **Transfer.** The decode instance then pulls the prompt's KV cache: ``transfer_ms`` per request (bytes over the
  fabric's bandwidth, computed by the caller). Concurrent transfers do not slow each other here (the caller
  checks the link's load).
* **Decode pool.** The request arrives at the decode instance with all but its last prompt token's KV already
  in its blocks (NIXL writes into the decoder's own KV cache, so unlike a prefix-cache hit these blocks count
  against its capacity); the decoder recomputes the last token, samples the first output token (what the client
  sees: the proxy streams the decoder's output, the prefill token is dropped) and decodes the rest, in the
  same ``Lane`` scheduler. A preempted request loses its transferred KV and is recomputed locally.
* **Request path.** ``repeat_frontend``: the decode instance's API server processes the whole request again
  (the proxy sends it the original request), so the request's time outside the engine (``frontend_ms``,
  images included) is paid a second time before the decoder sees it.

Known gap: the decoder's admission check counts only the one recomputed token against its free KV blocks (the
``Lane`` scheduler's check), not the transferred ones; an over-full decoder then preempts instead of holding
the request back, which errs slow (pessimistic), not fast.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from planner.load.simulator.arrivals import api_queue_wait, arrival_times
from planner.load.simulator.lane import Lane
from planner.load.simulator.requests import SimRequests
from planner.load.simulator.result import SimResult, queue_grows
from planner.load.simulator.state import LaneState
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig


@dataclass(frozen=True)
class Pool:
    """One pool: the step costs and scheduler limits of its engines, their KV capacity and how many there are."""

    cost: StepCost
    cfg: ResolvedConfig
    kv_capacity_tokens: int
    replicas: int


@dataclass(frozen=True)
class PdSimResult:
    """The whole system's per-request times (``result``: client arrival, first token from the decoder, finish)
    and the prefill pool's own view."""

    result: SimResult
    prefill_done_s: np.ndarray
    """When each request's prefill finished (its KV ready to pull)."""
    decode_arrival_s: np.ndarray
    """When each request reached its decode engine (after the transfer and the decoder's request path)."""
    prefill_preemptions: int
    decode_preemptions: int


class DecodeLane(Lane):
    """A decode engine: each request arrives with ``preloaded`` prompt tokens' KV already written into its blocks."""

    def __init__(self, *args: object, preloaded: list[int], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.preloaded = preloaded

    def _admit_arrivals(self, s: LaneState) -> bool:
        before = s.next_arr
        jumped = super()._admit_arrivals(s)
        for i in range(before, s.next_arr):
            if s.gen[i] == 0:
                s.done[i] = max(s.done[i], self.preloaded[i])
        return jumped


def _check(prefill: Pool, decode: Pool, n: int, arrival: str) -> None:
    """What the coupled-pool simulator serves: some requests, open-loop arrivals, pools without pipeline stages."""
    if n == 0:
        raise ValueError("no requests to simulate")
    if arrival not in ("poisson", "trace"):
        raise ValueError(f"the coupled-pool simulator serves open-loop arrivals only (got '{arrival}')")
    if prefill.cfg.pp != 1 or decode.cfg.pp != 1:
        raise ValueError("the coupled-pool simulator models pipeline depth 1 pools only")


def simulate_pd(prefill: Pool, decode: Pool, reqs: SimRequests, arrival: str = "poisson",
                rate_per_s: float | None = None, trace_s: tuple[float, ...] | None = None, seed: int = 0,
                transfer_ms: np.ndarray | float = 0.0, repeat_frontend: bool = True, warmup: float = 0.1,
                cooldown: float = 0.05, block_size: int = 16, async_scheduling: bool | None = None) -> PdSimResult:
    """Serve ``reqs`` (the whole workload, not one replica's share) on a prefill pool and a decode pool."""
    n = len(reqs)
    _check(prefill, decode, n, arrival)
    if async_scheduling is None:
        async_scheduling = prefill.cfg.async_scheduling and decode.cfg.async_scheduling
    arr = arrival_times(n, arrival, rate_per_s, trace_s, seed)
    assert arr is not None
    front = reqs.frontend_ms.copy() if reqs.frontend_ms is not None else np.zeros(n)
    xfer = np.broadcast_to(np.asarray(transfer_ms, dtype=float), (n,))

    # Prefill pool: every request with one output token.
    p_reqs = replace(reqs, output=np.ones(n, dtype=np.int64))
    p_first = np.full(n, np.nan)
    p_arr = arr.copy()
    p_pre = 0
    servers = max(1, int(prefill.cfg.api_server_count))
    for r in range(prefill.replicas):
        ids = np.arange(r, n, prefill.replicas)
        if len(ids) == 0:
            continue
        if reqs.api_ms is not None:
            wait = api_queue_wait(arr[ids], reqs.api_ms[ids] * 1e-3, servers)
            p_arr[ids] = arr[ids] + wait
            front[ids] += wait * 1e3
        out = Lane(prefill.cost, p_reqs, ids, p_arr[ids], None, prefill.kv_capacity_tokens,
                   int(prefill.cfg.max_num_seqs or 1), int(prefill.cfg.max_num_batched_tokens), block_size,
                   async_scheduling).run()
        p_first[ids] = out[1]
        p_pre += out[5]

    # Decode pool: arrivals after the transfer (and the decoder's own request path).
    d_arr = p_first + xfer * 1e-3 + ((reqs.frontend_ms * 1e-3) if repeat_frontend and reqs.frontend_ms is not None
                                     else 0.0)
    d_reqs = SimRequests(prompt=reqs.prompt.copy(), cached=np.zeros(n, dtype=np.int64), output=reqs.output.copy(),
                         enc_tokens=np.zeros(n, dtype=np.int64), vision_ms=np.zeros(n))
    first = np.full(n, np.nan)
    fin = np.full(n, np.nan)
    d_pre = 0
    busy = end = 0.0
    steps = 0
    for r in range(decode.replicas):
        ids = np.arange(r, n, decode.replicas)
        if len(ids) == 0:
            continue
        ids = ids[np.argsort(d_arr[ids], kind="stable")]  # the engine sees them in the order they arrive
        preload = (np.maximum(reqs.prompt[ids] - 1, 0)).tolist()
        out = DecodeLane(decode.cost, d_reqs, ids, d_arr[ids], None, decode.kv_capacity_tokens,
                         int(decode.cfg.max_num_seqs or 1), int(decode.cfg.max_num_batched_tokens), block_size,
                         async_scheduling, preloaded=preload).run()
        first[ids], fin[ids] = out[1], out[2]
        busy += out[3]
        end = max(end, out[4])
        d_pre += out[5]
        steps += out[6]

    # Client view: arrival at the prefill engine (its request-path time in ``front``, as the aggregated model
    # counts it), first token and finish from the decoder.
    order = np.argsort(p_arr, kind="stable")
    warm, cool = int(n * warmup), int(n * cooldown)
    lo, hi = warm, max(warm + 1, n - cool)
    if hi - lo < max(10, n // 10):
        lo, hi = 0, n
    measured = np.zeros(n, dtype=bool)
    measured[order[lo:hi]] = True
    t0, t1 = float(p_arr[order[lo]]), float(p_arr[order[hi - 1]])
    if t1 <= t0:
        t1 = float(np.max(fin[order[lo:hi]]))
    res = SimResult(arrival_s=p_arr, first_token_s=first, finish_s=fin, output_tokens=reqs.output.copy(),
                    measured=measured, window_s=(t0, t1), busy_seq_s=busy, sim_end_s=end,
                    preemptions=p_pre + d_pre, steps=steps,
                    saturated=queue_grows(p_arr, first, order[lo:hi], arrival), frontend_ms=front)
    return PdSimResult(result=res, prefill_done_s=p_first, decode_arrival_s=d_arr, prefill_preemptions=p_pre,
                       decode_preemptions=d_pre)
