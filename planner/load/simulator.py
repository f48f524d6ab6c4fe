"""Discrete-event simulation of vLLM 0.33's V1 scheduler on one replica.

What is modelled (``vllm/v1/core/sched/scheduler.py``, V1 defaults):

* **Continuous batching, one engine step at a time.** Each step first gives
  every running request its tokens in admission order (a decode takes one
  token; a partially prefilled request its next chunk), then admits waiting
  requests FCFS while the token budget (``max_num_batched_tokens``) and
  ``max_num_seqs`` allow. Prefill chunks ride in the same forward pass as the
  decodes (chunked prefill is always on in V1).
* **Encoder budget and cache.** A request's images are encoded in the step its
  prompt starts prefilling, if the step's encoder budget and the encoder cache
  (both ``max(max_num_batched_tokens, largest item)`` visual tokens, vLLM's
  ``compute_encoder_budget``) have room; otherwise it waits. Its encoder
  outputs stay cached until its prefill completes.
* **KV cache.** ``kv_capacity_tokens`` (``memory.MemoryBreakdown``) holds every
  running request's context (prefix-cache hits share blocks and are not
  counted; block rounding is taken as half a block per sequence). When the
  decodes of a step do not fit, the most recently admitted running request is
  preempted (V1 preempts by recompute: its KV is dropped and its prompt plus
  the tokens generated so far are prefilled again later, from the front of the
  queue).
* **Step time** from ``StepCost`` (the speed model): GPU time of the mixed
  step, the ViT time of the images encoded in it, and the engine's CPU
  overhead. Tensor parallelism is inside the step time; pipeline parallelism
  runs ``pp`` batches at once (V1's batch queue): modelled as ``pp``
  independent lanes, each with the full-pipeline step time and ``1/pp`` of the
  sequences and KV cache, requests assigned round-robin.

Runs of decode-only steps between events (an arrival, a finish, KV running
out) are advanced in one vectorised numpy call, so the Python loop runs about
once per request event, not once per token.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from planner.catalog.vision_tokens import image_tokens
from planner.perf.speed import api_server_ms, frontend_ms
from planner.perf.stepcost import StepCost, prefill_pairs
from planner.spec.config import ServingConfig
from planner.spec.shape import processed_megapixels
from planner.spec.workload import Workload

PCTS = (50, 90, 95, 99)


@dataclass(frozen=True)
class SimRequests:
    """Per-request arrays as the engine sees them."""

    prompt: np.ndarray
    """Prompt tokens (text + visual)."""
    cached: np.ndarray
    """Prompt tokens found in the prefix cache."""
    output: np.ndarray
    enc_tokens: np.ndarray
    """Visual tokens (the encoder budget/cache unit)."""
    vision_ms: np.ndarray
    """ViT + projector time of the request's images."""
    frontend_ms: np.ndarray | None = None
    """API-server CPU time on the request's images before the engine sees it (``speed.frontend_ms``): added to
    its TTFT and e2e; an independent delay per request, so the engine still sees Poisson arrivals."""
    api_ms: np.ndarray | None = None
    """How long the request holds one API-server process (``speed.api_server_ms``): requests queue for the
    replica's ``api_server_count`` processes first come, first served, and the wait delays the engine's arrival
    and adds to TTFT and e2e. None: no API-server queue."""

    def __len__(self) -> int:
        return len(self.prompt)


def build_requests(cfg: ServingConfig, workload: Workload, cost: StepCost, n: int, seed: int = 0) -> SimRequests:
    """Sample ``n`` requests from ``workload`` and turn their images into visual tokens and ViT time."""
    sample = workload.sample(n, seed)
    rule = cfg.model.visual_tokens
    per_size = []
    for size in sample.sizes:
        if rule is None:
            from planner.core.errors import UnsupportedError

            raise UnsupportedError(f"{cfg.model.name} is a text model: it takes no images")
        t = image_tokens(rule, size.width, size.height, cfg.mm_processor_options)
        per_size.append((t.llm_tokens, t.encoder_patches, t.encoder_sequences))
    visual = np.zeros(n, dtype=np.int64)
    vision = np.zeros(n)
    frontend = np.full(n, frontend_ms(cost.cal, 0.0, 0.0, 0))
    sent_mp = np.zeros(n)
    memo: dict[tuple[int, ...], tuple[int, float, float, float]] = {}
    for i, imgs in enumerate(sample.images):
        if not imgs:
            continue
        hit = memo.get(imgs)
        if hit is None:
            tok = sum(per_size[k][0] for k in imgs)
            patches = sum(per_size[k][1] for k in imgs)
            seqs = sum(per_size[k][2] for k in imgs)
            sent = sum(sample.sizes[k].width * sample.sizes[k].height for k in imgs) / 1e6
            fe = frontend_ms(cost.cal, sent, processed_megapixels(cfg, patches), len(imgs))
            hit = (tok, cost.vision_ms(len(imgs), patches, seqs), fe, sent)
            memo[imgs] = hit
        visual[i], vision[i], frontend[i], sent_mp[i] = hit
    n_images = np.array([len(imgs) for imgs in sample.images], dtype=float)
    api = api_server_ms(cost.cal, sample.prompt_tokens, sample.output_tokens, n_images, sent_mp)
    prompt = sample.prompt_tokens + visual
    cached = np.floor(workload.prefix_cache_hit * prompt).astype(np.int64)
    return SimRequests(prompt=prompt, cached=cached, output=sample.output_tokens.astype(np.int64),
                       enc_tokens=visual, vision_ms=vision, frontend_ms=frontend, api_ms=np.asarray(api, dtype=float))


def fixed_requests(n: int, prompt: int, output: int, cached: int = 0, enc_tokens: int = 0,
                   vision_ms: float = 0.0) -> SimRequests:
    """``n`` identical requests."""
    return SimRequests(prompt=np.full(n, prompt, dtype=np.int64), cached=np.full(n, cached, dtype=np.int64),
                       output=np.full(n, output, dtype=np.int64), enc_tokens=np.full(n, enc_tokens, dtype=np.int64),
                       vision_ms=np.full(n, float(vision_ms)))


@dataclass(frozen=True)
class SimResult:
    """Per-request times (s) and summary statistics of one simulation."""

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    output_tokens: np.ndarray
    measured: np.ndarray
    """Boolean mask: requests inside the measurement window (warm-up and drain excluded)."""
    window_s: tuple[float, float]
    busy_seq_s: float
    """Integral of running sequences over time (for the mean batch)."""
    sim_end_s: float
    preemptions: int
    steps: int
    saturated: bool
    frontend_ms: np.ndarray | None = None
    """Per request: API-server time before the engine saw it (arrival_s is when the engine did)."""
    counted: np.ndarray | None = None
    """Closed loop: boolean mask of the completions the throughput counts (those after the window's first
    completion up to its last); None: every completion inside ``window_s``."""

    def _front(self, m: np.ndarray) -> np.ndarray | float:
        return self.frontend_ms[m] if self.frontend_ms is not None else 0.0

    @property
    def ttft_ms(self) -> np.ndarray:
        m = self.measured
        return (self.first_token_s[m] - self.arrival_s[m]) * 1e3 + self._front(m)

    @property
    def e2e_ms(self) -> np.ndarray:
        m = self.measured
        return (self.finish_s[m] - self.arrival_s[m]) * 1e3 + self._front(m)

    @property
    def tpot_ms(self) -> np.ndarray:
        m = self.measured & (self.output_tokens > 1)
        return (self.finish_s[m] - self.first_token_s[m]) / (self.output_tokens[m] - 1) * 1e3

    def _done(self) -> np.ndarray:
        if self.counted is not None:
            return self.counted
        t0, t1 = self.window_s
        return (self.finish_s >= t0) & (self.finish_s <= t1)

    @property
    def requests_per_s(self) -> float:
        t0, t1 = self.window_s
        return float(self._done().sum() / (t1 - t0)) if t1 > t0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        t0, t1 = self.window_s
        return float(self.output_tokens[self._done()].sum() / (t1 - t0)) if t1 > t0 else 0.0

    @property
    def mean_batch(self) -> float:
        return self.busy_seq_s / self.sim_end_s if self.sim_end_s > 0 else 0.0


def percentiles(x: np.ndarray) -> dict[str, float]:
    """mean, p50, p90, p95, p99 (ms); all NaN for no data."""
    if len(x) == 0:
        return {"mean": math.nan, "p50": math.nan, "p90": math.nan, "p95": math.nan, "p99": math.nan}
    q = np.percentile(x, PCTS)
    return {"mean": float(x.mean()), "p50": float(q[0]), "p90": float(q[1]), "p95": float(q[2]), "p99": float(q[3])}


def arrival_times(n: int, arrival: str, rate_per_s: float | None, trace_s: tuple[float, ...] | None,
                  seed: int) -> np.ndarray | None:
    """Open-loop arrival times (s); None for a closed loop."""
    if arrival == "poisson":
        assert rate_per_s
        rng = np.random.default_rng(seed + 7919)
        gaps = rng.exponential(1.0 / rate_per_s, n)
        gaps[0] = 0.0
        return np.cumsum(gaps)
    if arrival == "trace":
        assert trace_s
        t = np.asarray(trace_s, dtype=float)
        if len(t) >= n:
            return t[:n]
        reps = math.ceil(n / len(t))
        period = t[-1] + (t[-1] - t[0]) / max(1, len(t) - 1)
        return np.concatenate([t + k * period for k in range(reps)])[:n]
    if arrival == "single":
        return None
    if arrival == "closed":
        return None
    raise ValueError(f"arrival '{arrival}' is not single, poisson, closed or trace")


def simulate(cost: StepCost, reqs: SimRequests, kv_capacity_tokens: int, arrival: str = "poisson",
             rate_per_s: float | None = None, concurrency: int | None = None,
             trace_s: tuple[float, ...] | None = None, seed: int = 0, warmup: float = 0.1,
             cooldown: float = 0.05, block_size: int = 16, cfg: ServingConfig | None = None,
             async_scheduling: bool | None = None) -> SimResult:
    """Serve ``reqs`` on one replica of ``cost.cfg``; returns per-request times.

    ``arrival`` 'poisson' (``rate_per_s``), 'trace' (``trace_s``, repeated when
    shorter than the requests), 'closed' (``concurrency`` clients) or 'single'
    (one request at a time). The first ``warmup`` and last ``cooldown``
    fractions of the requests (closed loop: at least the last ``concurrency``)
    are left out of the statistics. ``cfg`` (default ``cost.cfg``) supplies the scheduler's limits
    (max_num_seqs, max_num_batched_tokens, pp), so one ``StepCost`` serves configs differing only in those.
    ``async_scheduling`` (vLLM's default since V1's asynchronous scheduler): a busy engine schedules step k + 1
    while step k runs, so a request arriving during step k is first scheduled in step k + 2.
    """
    n = len(reqs)
    if n == 0:
        raise ValueError("no requests to simulate")
    if async_scheduling is None:
        async_scheduling = _engine_async_scheduling()
    cfg = cfg or cost.cfg
    lanes = max(1, cfg.pp)
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
    out_arr = np.full(n, np.nan)
    out_first = np.full(n, np.nan)
    out_fin = np.full(n, np.nan)
    busy = 0.0
    end = 0.0
    preempt = steps = 0
    for lane in range(lanes):
        ids = np.arange(lane, n, lanes)
        if len(ids) == 0:
            continue
        conc = None
        if arrival == "closed":
            assert concurrency is not None
            conc = concurrency // lanes + (1 if lane < concurrency % lanes else 0)
            if conc == 0:
                continue
        lane_arr = arr[ids] if arr is not None else None
        r = _Lane(cost, reqs, ids, lane_arr, conc, kv_capacity_tokens // lanes,
                  max(1, cfg.max_num_seqs // lanes), int(cfg.max_num_batched_tokens),  # type: ignore[operator,arg-type]
                  block_size, async_scheduling, api_servers=servers if arr is None else 0).run()
        out_arr[ids], out_first[ids], out_fin[ids] = r[0], r[1], r[2]
        if arr is None and reqs.api_ms is not None:
            assert front_ms is not None
            front_ms[ids] += r[7] * 1e3
        busy += r[3]
        end = max(end, r[4])
        preempt += r[5]
        steps += r[6]
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
        t0, t1, counted = _closed_window(out_fin, lo, hi, int(concurrency or 1))
    elif t1 <= t0:
        t1 = float(np.max(out_fin[order[lo:hi]]))
    saturated = _saturated(out_arr, out_first, order[lo:hi], arrival)
    return SimResult(arrival_s=out_arr, first_token_s=out_first, finish_s=out_fin,
                     output_tokens=reqs.output.copy(), measured=measured, window_s=(t0, t1),
                     busy_seq_s=busy, sim_end_s=end, preemptions=preempt, steps=steps, saturated=saturated,
                     frontend_ms=front_ms, counted=counted)


def api_queue_wait(arrival_s: np.ndarray, hold_s: np.ndarray, servers: int) -> np.ndarray:
    """Waits (s) of requests arriving at ``arrival_s`` (ascending) for ``servers`` first-come-first-served
    processes that each request holds for ``hold_s``."""
    free = [0.0] * servers
    return np.array([_fcfs_start(free, a, h) - a for a, h in zip(arrival_s.tolist(), hold_s.tolist())])


def _fcfs_start(free: list[float], t: float, hold: float) -> float:
    """First come, first served over servers that free up at the times in the heap ``free``: a request arriving at
    ``t`` starts at the earliest free time (or ``t``) and holds that server for ``hold``; returns its start."""
    start = max(t, heapq.heappop(free))
    heapq.heappush(free, start + hold)
    return start


@lru_cache(maxsize=1)
def _engine_async_scheduling() -> bool:
    """The shipped engine's scheduler mode (catalogs/engines)."""
    from planner.catalog.loader import load_engine

    return load_engine().async_scheduling


def _closed_window(fin: np.ndarray, lo: int, hi: int, clients: int) -> tuple[float, float, np.ndarray]:
    """Throughput window of a closed loop: from the ``lo``-th completion to a whole number of ``clients``
    completions later (as many as fit before the ``hi``-th), counting the completions after the first.

    Clients with equal requests finish in bursts of ``clients`` (lock-step waves); a window from a burst's
    first completion to another burst's last counts one burst too many (4,096 requests of 1,024 clients:
    +13%). Spanning a multiple of ``clients`` completions makes it whole cycles; without waves it is the
    usual (N - 1) / (t_N - t_1)."""
    by_fin = np.argsort(fin, kind="stable")
    span = hi - 1 - lo
    j = lo + (span // clients) * clients if span >= clients else hi - 1
    counted = np.zeros(len(fin), dtype=bool)
    counted[by_fin[lo + 1:j + 1]] = True
    return float(fin[by_fin[lo]]), float(fin[by_fin[j]]), counted


def _steps_until(first_ms: float, slope_ms: float, target_ms: float) -> int:
    """Fewest steps k >= 1 with k * first + slope * k (k - 1) / 2 >= target (step times first, first + slope, ...)."""
    if target_ms <= first_ms:
        return 1
    if slope_ms <= 1e-15:
        return max(1, math.ceil(target_ms / first_ms))
    a, b = slope_ms / 2, first_ms - slope_ms / 2
    return max(1, math.ceil((-b + math.sqrt(b * b + 4 * a * target_ms)) / (2 * a) - 1e-9))


def _saturated(arr: np.ndarray, first: np.ndarray, window: np.ndarray, arrival: str) -> bool:
    """Open loop: the queue keeps growing (TTFT of the last fifth of the window well above the first fifth's)."""
    if arrival == "closed" or len(window) < 50:
        return False
    ttft = first[window] - arr[window]
    k = len(window) // 5
    early, late = float(np.median(ttft[:k])), float(np.median(ttft[-k:]))
    return late > 2.0 * early + 0.05


class _Lane:
    """One engine (one pipeline lane): the scheduling loop."""

    def __init__(self, cost: StepCost, reqs: SimRequests, ids: np.ndarray, arr: np.ndarray | None,
                 concurrency: int | None, kv_capacity: int, max_seqs: int, budget: int, block_size: int,
                 async_scheduling: bool = False, api_servers: int = 0) -> None:
        self.cost = cost
        # Closed loop: the replica's API-server processes (first come, first served), as times they free up.
        self.api_free = [0.0] * api_servers if reqs.api_ms is not None else []
        self.api_s = (reqs.api_ms[ids] * 1e-3).tolist() if reqs.api_ms is not None else [0.0] * len(ids)
        self.api_wait = [0.0] * len(ids)
        self.async_scheduling = async_scheduling
        self.front_s = ((reqs.frontend_ms[ids] * 1e-3).tolist() if reqs.frontend_ms is not None
                        else [0.0] * len(ids))
        self.pending: deque[tuple[float, int]] = deque()
        """Closed loop: (time the engine receives it, id) of requests sent but not yet in the queue."""
        self.ids = ids
        self.n = len(ids)
        self.prompt = reqs.prompt[ids].tolist()
        self.cached = reqs.cached[ids].tolist()
        self.output = reqs.output[ids].tolist()
        self.enc = reqs.enc_tokens[ids].tolist()
        self.vis = reqs.vision_ms[ids].tolist()
        self.arr_open = arr.tolist() if arr is not None else None
        self.conc = concurrency
        self.cap = kv_capacity
        self.max_seqs = max_seqs
        self.slack = block_size / 2
        self.budget = budget
        largest = max(self.enc) if self.enc else 0
        self.enc_budget = max(self.budget, largest)
        self._count = 0

    def run(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, int, int, np.ndarray]:  # noqa: C901
        cost = self.cost
        n = self.n
        prompt, cached, output, enc, vis = self.prompt, self.cached, self.output, self.enc, self.vis
        lin, lmh = cost._lin, cost._lm
        max_tok = cost.max_tokens
        dec_att = cost.decode_attention_ms
        pf_att = cost.prefill_attention_ms
        ov0, ov1 = cost._ov0, cost._ov1
        vis_host = cost.cal.value("vision_call_overhead_ms")
        window = cost.window if cost.sliding_layers else 0
        budget, enc_budget, max_seqs, cap, slack = self.budget, self.enc_budget, self.max_seqs, self.cap, self.slack

        arr = [0.0] * n
        first = [math.nan] * n
        fin = [math.nan] * n
        target = [0] * n  # tokens to prefill (prompt, or prompt + generated after a preemption)
        done = [0] * n  # of those, computed so far
        gen = [0] * n  # tokens generated
        base = [0] * n  # decoding: context at decode counter K is base + K
        kv = [0] * n  # prefilling: KV tokens held
        encoded = [False] * n
        version = [0] * n
        state = [0] * n  # 0 not arrived, 1 waiting, 2 prefilling, 3 decoding, 4 finished
        for i in range(n):
            target[i] = prompt[i]
            done[i] = cached[i]

        waiting: deque[int] = deque()
        running: dict[int, None] = {}  # admission order; popitem() gives the latest
        prefilling: dict[int, None] = {}
        heap: list[tuple[int, int, int]] = []  # (finish K, version, id)
        n_dec = 0
        base_sum = 0  # sum of base over decoding requests
        cached_dec = 0  # prefix-cached tokens of decoding requests (shared, not counted)
        kv_pf = 0  # KV tokens of prefilling requests
        enc_used = 0
        K = 0
        t = 0.0
        busy = 0.0
        preempt = steps = 0
        self._count = 0

        if self.arr_open is not None:
            arr_open = self.arr_open
            next_arr = 0
        else:
            arr_open = None
            next_arr = 0
            for i in range(min(self.conc or 1, n)):
                # Every client sends at t = 0 (vllm bench serve --max-concurrency); the engine receives each
                # request after the API server's work on it.
                arr[i] = self._sent(i, 0.0)
                state[i] = 1
                if arr[i] > 0:
                    self.pending.append((arr[i], i))
                else:
                    waiting.append(i)
            self.pending = deque(sorted(self.pending))
            next_arr = min(self.conc or 1, n)

        def used() -> float:
            return base_sum + n_dec * K - cached_dec + kv_pf + slack * len(running)

        async_sched = self.async_scheduling
        pending = self.pending  # after the initial clients were placed
        t_prev = 0.0  # start of the step that ended at t
        while self._count < n:
            # Arrivals join the queue. With asynchronous scheduling a busy engine decided the next step while
            # the last one ran: what arrived after that step began waits for the step after.
            cut = t_prev if async_sched and running else t
            if arr_open is not None:
                while next_arr < n and arr_open[next_arr] <= cut:
                    arr[next_arr] = arr_open[next_arr]
                    state[next_arr] = 1
                    waiting.append(next_arr)
                    next_arr += 1
                if not running and not waiting:
                    t = t_prev = arr_open[next_arr]
                    continue
            elif pending:
                while pending and pending[0][0] <= cut:
                    waiting.append(pending.popleft()[1])
                if not running and not waiting:
                    t = t_prev = max(t, pending[0][0])
                    continue

            # --- decodes need one KV slot each: preempt the latest admitted until they fit.
            while running and used() + n_dec > cap:
                j, _ = running.popitem()
                preempt += 1
                if state[j] == 3:
                    n_dec -= 1
                    base_sum -= base[j]
                    cached_dec -= cached[j]
                    version[j] += 1
                else:
                    kv_pf -= kv[j]
                    del prefilling[j]
                    if encoded[j]:
                        enc_used -= enc[j]
                kv[j] = 0
                encoded[j] = False
                target[j] = prompt[j] + gen[j]
                done[j] = cached[j]
                state[j] = 1
                waiting.appendleft(j)

            # --- fast path: only decodes and nothing can change for a while.
            if n_dec and not prefilling and heap and (
                    not waiting or len(running) >= max_seqs or
                    used() + min(target[waiting[0]] - done[waiting[0]], budget - n_dec) > cap):
                m = heap[0][0] - K
                free = cap - used()
                m = min(m, int(free // n_dec))
                if m >= 2:
                    ctx0 = base_sum + n_dec * K
                    fixed = lin[min(n_dec, max_tok)] + lmh[min(n_dec, max_tok)] + ov0 + ov1 * n_dec
                    step = n_dec * (m - 1)
                    w0 = min(ctx0, n_dec * window) if window else None
                    d0 = fixed + dec_att(n_dec, ctx0, w0)
                    d1 = fixed + dec_att(n_dec, ctx0 + step, min(ctx0 + step, n_dec * window) if window else None)
                    half = step // 2 // n_dec * n_dec
                    dh = fixed + dec_att(n_dec, ctx0 + half, min(ctx0 + half, n_dec * window) if window else None)
                    slope = (d1 - d0) / (m - 1)
                    nxt = (arr_open[next_arr] if arr_open is not None and next_arr < n else
                           pending[0][0] if arr_open is None and pending else math.inf)
                    limit = nxt < math.inf and not waiting and len(running) < max_seqs
                    if abs(d0 + slope * half / n_dec - dh) <= 1e-9 * dh:
                        # Step times grow linearly with the context: sum them in closed form.
                        if limit:
                            k = _steps_until(d0, slope, (nxt - t) * 1e3)
                            m = min(m, k)
                        t_new = t + (m * d0 + slope * m * (m - 1) / 2) * 1e-3
                        last = (d0 + slope * (m - 1)) * 1e-3
                    else:
                        ctx = ctx0 + n_dec * np.arange(m, dtype=float)
                        dt = fixed + cost.decode_attention_vec(n_dec, ctx, window)
                        ends = t + np.cumsum(dt) * 1e-3
                        if limit:
                            m = min(m, int(np.searchsorted(ends, nxt)) + 1)
                        t_new = float(ends[m - 1])
                        last = float(dt[m - 1]) * 1e-3
                    busy += (t_new - t) * len(running)
                    t = t_new
                    t_prev = t - last
                    K += m
                    steps += m
                    t_done = self._finish(heap, version, state, fin, K, t, running)
                    for j in t_done:
                        n_dec -= 1
                        base_sum -= base[j]
                        cached_dec -= cached[j]
                    if arr_open is None:
                        next_arr = self._reissue(t_done, next_arr, arr, state, waiting, t)
                    continue

            # --- schedule one step.
            room = budget - n_dec
            chunks: list[tuple[int, int]] = []
            pf_tok = 0
            pairs = 0.0
            kv_read = 0.0
            wpairs = 0.0
            wkv = 0.0
            vis_ms = 0.0
            n_enc = 0
            enc_left = enc_budget
            u = used() + n_dec
            for j in prefilling:
                if room <= 0:
                    break
                c = min(target[j] - done[j], room, int(cap - u))
                if c <= 0:
                    break
                chunks.append((j, c))
                room -= c
                u += c
            while room > 0 and waiting and len(running) < max_seqs:
                j = waiting[0]
                need = enc[j] if not encoded[j] else 0
                if need and (need > enc_left or enc_used + need > enc_budget) and (enc_used or enc_left < enc_budget):
                    break
                c = min(target[j] - done[j], room)
                if u + c + slack > cap:
                    break
                waiting.popleft()
                running[j] = None
                prefilling[j] = None
                state[j] = 2
                if need:
                    encoded[j] = True
                    enc_used += need
                    enc_left -= need
                    vis_ms += vis[j]
                    n_enc += 1
                chunks.append((j, c))
                room -= c
                u += c + slack
            for j, c in chunks:
                d0 = done[j]
                pf_tok += c
                pairs += prefill_pairs(d0, c)
                kv_read += d0 + c
                if window:
                    w = min(d0 + c, window)
                    wpairs += c * w
                    wkv += w
            if not chunks and not n_dec:
                # Nothing runnable (e.g. the head of the queue waits for the encoder cache): jump to an arrival.
                if arr_open is not None and next_arr < n:
                    t = t_prev = max(t, arr_open[next_arr])
                    continue
                if pending:
                    t = t_prev = max(t, pending[0][0])
                    waiting.append(pending.popleft()[1])
                    continue
                raise RuntimeError("simulator stalled: a request can never be scheduled "
                                   f"(prompt {target[waiting[0]]} tokens, KV capacity {cap})")
            m_tok = n_dec + pf_tok
            ctx_sum = base_sum + n_dec * K
            gpu = (lin[m_tok] if m_tok <= max_tok else cost.lin(m_tok)) + lmh[min(n_dec + len(chunks), max_tok)]
            if n_dec:
                gpu += dec_att(n_dec, ctx_sum, min(ctx_sum, n_dec * window) if window else None)
            if pf_tok:
                gpu += pf_att(pf_tok, pairs, kv_read, wpairs if window else None, wkv if window else None)
            if n_enc > 1:  # one encoder call encodes every image of the step: its host work is paid once
                vis_ms -= (n_enc - 1) * vis_host
            dt = (gpu + vis_ms + ov0 + ov1 * (n_dec + len(chunks))) * 1e-3
            busy += dt * len(running)
            t_prev = t
            t += dt
            steps += 1
            if n_dec:
                K += 1
                t_done = self._finish(heap, version, state, fin, K, t, running)
                for j in t_done:
                    n_dec -= 1
                    base_sum -= base[j]
                    cached_dec -= cached[j]
            else:
                t_done = []
            for j, c in chunks:
                done[j] += c
                if done[j] < target[j]:
                    kv[j] += c
                    kv_pf += c
                    continue
                # Prefill complete: the step samples a token.
                kv_pf -= kv[j]
                kv[j] = 0
                del prefilling[j]
                if encoded[j]:
                    enc_used -= enc[j]
                gen[j] += 1
                if gen[j] == 1:
                    first[j] = t
                if gen[j] >= output[j]:
                    state[j] = 4
                    fin[j] = t
                    del running[j]
                    self._count += 1
                    t_done.append(j)
                    continue
                state[j] = 3
                base[j] = target[j] + 1 - K
                n_dec += 1
                base_sum += base[j]
                cached_dec += cached[j]
                heapq.heappush(heap, (K + output[j] - gen[j], version[j], j))
            if arr_open is None:
                next_arr = self._reissue(t_done, next_arr, arr, state, waiting, t)

        ids_arr = np.asarray(arr), np.asarray(first), np.asarray(fin)
        return ids_arr[0], ids_arr[1], ids_arr[2], busy, t, preempt, steps, np.asarray(self.api_wait)

    def _finish(self, heap: list[tuple[int, int, int]], version: list[int], state: list[int], fin: list[float],
                K: int, t: float, running: dict[int, None]) -> list[int]:
        """Pop the decoding requests whose last token was produced at counter ``K``."""
        out = []
        while heap and heap[0][0] <= K:
            _, v, j = heapq.heappop(heap)
            if v != version[j] or state[j] != 3:
                continue
            state[j] = 4
            fin[j] = t
            del running[j]
            self._count += 1
            out.append(j)
        return out

    def _sent(self, i: int, t: float) -> float:
        """Closed loop: request ``i`` is sent at ``t``; when the engine receives it (after its wait for an
        API-server process, if any, and its time outside the engine)."""
        if self.api_free:
            self.api_wait[i] = _fcfs_start(self.api_free, t, self.api_s[i]) - t
        return t + self.api_wait[i] + self.front_s[i]

    def _reissue(self, done: list[int], next_arr: int, arr: list[float], state: list[int],
                 waiting: deque[int], t: float) -> int:
        """Closed loop: each finished request's client sends the next request now; the engine receives it
        after the API server's work on it (``frontend_ms``)."""
        for _ in done:
            if next_arr >= self.n:
                break
            arr[next_arr] = self._sent(next_arr, t)
            state[next_arr] = 1
            if arr[next_arr] > t or self.async_scheduling:
                self.pending.append((arr[next_arr], next_arr))
            else:
                waiting.append(next_arr)
            next_arr += 1
        return next_arr
