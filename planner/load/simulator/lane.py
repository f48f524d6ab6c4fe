"""One engine (one pipeline lane): vLLM V1's scheduling loop, one named phase at a time.

Each turn of ``Lane.run``: arrivals join the queue (``_admit_arrivals``); decodes that no longer fit the KV
cache preempt the latest admitted requests (``_preempt``); a run of decode-only steps with nothing to change is
advanced at once (``_decode_run``); otherwise one step is scheduled (``_schedule``: running prefills first,
then waiting requests FCFS within the token, sequence, encoder and KV budgets), run (``_run_step``), and its
prefill chunks retired (``_retire``); in a closed loop each finished request's client sends the next
(``_reissue``).
"""

from __future__ import annotations

import heapq
import math
from collections import deque

import numpy as np

from planner.load.simulator.arrivals import fcfs_start
from planner.load.simulator.requests import SimRequests
from planner.load.simulator.state import DECODING, FINISHED, PREFILLING, WAITING, LaneState
from planner.perf.stepcost import StepCost, prefill_pairs

Chunks = list[tuple[int, int]]
"""(request, tokens) of the prefill chunks of one step."""


class Lane:
    """One engine's requests, limits and scheduling loop."""

    def __init__(self, cost: StepCost, reqs: SimRequests, ids: np.ndarray, arr: np.ndarray | None,
                 concurrency: int | None, kv_capacity: int, max_seqs: int, budget: int, block_size: int,
                 async_scheduling: bool = False, api_servers: int = 0) -> None:
        self.cost = cost
        # Closed loop: the replica's API-server processes (first come, first served), as times they free up.
        # A request holds one for its input work before the engine sees it, and for its streaming work from its
        # first token (booked then as one block: what it delays is the input work of requests sent later).
        self.api_free = [0.0] * api_servers if reqs.api_ms is not None else []
        stream = reqs.api_stream_ms[ids] if reqs.api_stream_ms is not None else np.zeros(len(ids))
        self.api_s = ((reqs.api_ms[ids] - stream) * 1e-3).tolist() if reqs.api_ms is not None else [0.0] * len(ids)
        self.stream_s = (stream * 1e-3).tolist()
        self.api_wait = [0.0] * len(ids)
        self.async_scheduling = async_scheduling
        self.front_s = ((reqs.frontend_ms[ids] * 1e-3).tolist() if reqs.frontend_ms is not None
                        else [0.0] * len(ids))
        self.pending: deque[tuple[float, int]] = deque()
        """Closed loop: (time the engine receives it, id) of requests sent but not yet in the queue."""
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
        self.enc_budget = max(self.budget, max(self.enc) if self.enc else 0)
        self.window = cost.window if cost.sliding_layers else 0

    def run(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, int, int, np.ndarray]:
        """Serve every request of the lane: (arrival, first token, finish) times (s), the busy-sequence integral,
        the end time, preemptions, steps and the API-server waits (s)."""
        s = LaneState.fresh(self.prompt, self.cached)
        closed = self.arr_open is None
        if closed:
            self._send_first_clients(s)
        # The phases bound once: the loop turns about once per request event.
        admit, preempt, decode_run, schedule = self._admit_arrivals, self._preempt, self._decode_run, self._schedule
        run_step, retire, reissue = self._run_step, self._retire, self._reissue
        n = self.n
        while s.finished < n:
            if admit(s):
                continue
            preempt(s)
            if decode_run(s):
                continue
            chunks, vis_ms, n_enc = schedule(s)
            if not chunks and not s.n_dec:
                self._stalled(s)
                continue
            t_done = run_step(s, chunks, vis_ms, n_enc)
            retire(s, chunks, t_done)
            if closed:
                reissue(s, t_done)
        return (np.asarray(s.arr), np.asarray(s.first), np.asarray(s.fin), s.busy, s.t, s.preemptions, s.steps,
                np.asarray(self.api_wait))

    # ------------------------------------------------------------------ arrivals

    def _send_first_clients(self, s: LaneState) -> None:
        """Closed loop: every client sends at t = 0 (vllm bench serve --max-concurrency); the engine receives
        each request after the API server's work on it."""
        first = min(self.conc or 1, self.n)
        for i in range(first):
            s.arr[i] = self._sent(i, 0.0)
            s.phase[i] = WAITING
            if s.arr[i] > 0:
                self.pending.append((s.arr[i], i))
            else:
                s.waiting.append(i)
        self.pending = deque(sorted(self.pending))
        s.next_arr = first

    def _admit_arrivals(self, s: LaneState) -> bool:
        """Arrivals join the queue. With asynchronous scheduling a busy engine decided the next step while the
        last one ran: what arrived after that step began waits for the step after. True when the engine was idle
        and the clock jumped to the next arrival (the loop starts over)."""
        cut = s.t_prev if self.async_scheduling and s.running else s.t
        arr_open = self.arr_open
        if arr_open is not None:
            n = self.n
            i = s.next_arr
            while i < n and arr_open[i] <= cut:
                s.arr[i] = arr_open[i]
                s.phase[i] = WAITING
                s.waiting.append(i)
                i += 1
            s.next_arr = i
            if not s.running and not s.waiting:
                s.t = s.t_prev = arr_open[i]
                return True
        elif self.pending:
            pending = self.pending
            while pending and pending[0][0] <= cut:
                s.waiting.append(pending.popleft()[1])
            if not s.running and not s.waiting:
                s.t = s.t_prev = max(s.t, pending[0][0])
                return True
        return False

    # ------------------------------------------------------------------ preemption

    def _preempt(self, s: LaneState) -> None:
        """Decodes need one KV slot each: preempt the latest admitted request until they fit. V1 preempts by
        recompute: its KV is dropped and it goes back to the front of the queue, to prefill its prompt and the
        tokens generated so far."""
        cap, slack, running = self.cap, self.slack, s.running
        while running and s.base_sum + s.n_dec * s.K - s.cached_dec + s.kv_pf + slack * len(running) + s.n_dec > cap:
            j, _ = running.popitem()  # (the condition above is s.kv_used, inline: it runs every turn)
            s.preemptions += 1
            if s.phase[j] == DECODING:
                s.n_dec -= 1
                s.base_sum -= s.base[j]
                s.cached_dec -= self.cached[j]
                s.version[j] += 1
            else:
                s.kv_pf -= s.kv[j]
                del s.prefilling[j]
                if s.encoded[j]:
                    s.enc_used -= self.enc[j]
            s.kv[j] = 0
            s.encoded[j] = False
            s.target[j] = self.prompt[j] + s.gen[j]
            s.done[j] = self.cached[j]
            s.phase[j] = WAITING
            s.waiting.appendleft(j)

    # ------------------------------------------------------------------ runs of decode-only steps

    def _decode_run(self, s: LaneState) -> bool:
        """Only decodes, and nothing can change for a while (no prefill to schedule, or none that could be
        admitted): advance the steps up to the next finish, KV exhaustion or arrival at once. True if it ran."""
        n_dec = s.n_dec
        if not (n_dec and not s.prefilling and s.heap):
            return False
        waiting, running, K = s.waiting, s.running, s.K
        used = s.base_sum + n_dec * K - s.cached_dec + s.kv_pf + self.slack * len(running)  # s.kv_used, inline
        if waiting and len(running) < self.max_seqs and \
                used + min(s.target[waiting[0]] - s.done[waiting[0]], self.budget - n_dec) <= self.cap:
            return False
        m = min(s.heap[0][0] - K, int((self.cap - used) // n_dec))
        if m < 2:
            return False
        if self.arr_open is not None:
            nxt = self.arr_open[s.next_arr] if s.next_arr < self.n else math.inf
        else:
            nxt = self.pending[0][0] if self.pending else math.inf
        limit = nxt < math.inf and not waiting and len(running) < self.max_seqs
        t_new, last, m = self._decode_run_end(s, m, nxt if limit else None)
        s.busy += (t_new - s.t) * len(running)
        s.t = t_new
        s.t_prev = t_new - last
        s.K += m
        s.steps += m
        t_done = self._finish(s)
        if self.arr_open is None:
            self._reissue(s, t_done)
        return True

    def _decode_run_end(self, s: LaneState, m: int, until: float | None) -> tuple[float, float, int]:
        """(end time, last step's time, steps) of up to ``m`` decode-only steps, stopping at the step that ends
        past ``until`` (an arrival) if given."""
        cost, n_dec, t = self.cost, s.n_dec, s.t
        attention = cost.decode_attention_ms
        ctx0 = s.base_sum + n_dec * s.K
        fixed = cost.decode_base_ms(n_dec)
        step = n_dec * (m - 1)
        d0 = fixed + attention(n_dec, ctx0)
        slope = (fixed + attention(n_dec, ctx0 + step) - d0) / (m - 1)
        if cost.decode_attention_linear or _linear_at_middle(cost, n_dec, ctx0, step, fixed, d0, slope):
            # Step times grow linearly with the context: sum them in closed form.
            if until is not None:
                m = min(m, _steps_until(d0, slope, (until - t) * 1e3))
            return t + (m * d0 + slope * m * (m - 1) / 2) * 1e-3, (d0 + slope * (m - 1)) * 1e-3, m
        dt = fixed + cost.decode_attention_ms(n_dec, ctx0 + n_dec * np.arange(m, dtype=float))
        ends = t + np.cumsum(dt) * 1e-3
        if until is not None:
            m = min(m, int(np.searchsorted(ends, until)) + 1)
        return float(ends[m - 1]), float(dt[m - 1]) * 1e-3, m

    # ------------------------------------------------------------------ one step

    def _schedule(self, s: LaneState) -> tuple[Chunks, float, int]:
        """The next step's prefill chunks: running prefills first, in admission order, then waiting requests FCFS
        while the token budget, ``max_num_seqs``, the encoder budget and cache, and the KV cache allow. Returns
        the chunks, the encoder time of the images encoded in the step, and how many requests' images."""
        room = self.budget - s.n_dec
        chunks: Chunks = []
        cap, slack, target, done = self.cap, self.slack, s.target, s.done
        u = s.kv_used(slack) + s.n_dec
        for j in s.prefilling:
            if room <= 0:
                break
            c = min(target[j] - done[j], room, int(cap - u))
            if c <= 0:
                break
            chunks.append((j, c))
            room -= c
            u += c
        vis_ms = 0.0
        n_enc = 0
        enc_left = enc_budget = self.enc_budget
        waiting, running, max_seqs = s.waiting, s.running, self.max_seqs
        while room > 0 and waiting and len(running) < max_seqs:
            j = waiting[0]
            need = self.enc[j] if not s.encoded[j] else 0
            if need and (need > enc_left or s.enc_used + need > enc_budget) and (s.enc_used or enc_left < enc_budget):
                break
            c = min(target[j] - done[j], room)
            if u + c + slack > cap:
                break
            waiting.popleft()
            running[j] = None
            s.prefilling[j] = None
            s.phase[j] = PREFILLING
            if need:
                s.encoded[j] = True
                s.enc_used += need
                enc_left -= need
                vis_ms += self.vis[j]
                n_enc += 1
            chunks.append((j, c))
            room -= c
            u += c + slack
        return chunks, vis_ms, n_enc

    def _stalled(self, s: LaneState) -> None:
        """Nothing runnable (e.g. the head of the queue waits for the encoder cache): jump to an arrival."""
        if self.arr_open is not None and s.next_arr < self.n:
            s.t = s.t_prev = max(s.t, self.arr_open[s.next_arr])
            return
        if self.pending:
            s.t = s.t_prev = max(s.t, self.pending[0][0])
            s.waiting.append(self.pending.popleft()[1])
            return
        raise RuntimeError("simulator stalled: a request can never be scheduled "
                           f"(prompt {s.target[s.waiting[0]]} tokens, KV capacity {self.cap})")

    def _run_step(self, s: LaneState, chunks: Chunks, vis_ms: float, n_enc: int) -> list[int]:
        """Run one mixed step (its decodes, its prefill chunks, its encoder call): advance the clock and retire
        the decodes that sampled their last token. Returns those requests."""
        cost, window, done = self.cost, self.window, s.done
        pf_tok = 0
        pairs = kv_read = wpairs = wkv = 0.0
        for j, c in chunks:
            d0 = done[j]
            pf_tok += c
            pairs += prefill_pairs(d0, c)
            kv_read += d0 + c
            if window:
                w = min(d0 + c, window)
                wpairs += c * w
                wkv += w
        n_dec = s.n_dec
        rows = n_dec + len(chunks)
        gpu = cost.mixed_ms(n_dec, s.base_sum + n_dec * s.K, None, rows, pf_tok, pairs, kv_read,
                            wpairs if window else None, wkv if window else None)
        if n_enc > 1:  # one encoder call encodes every image of the step: its host work is paid once
            vis_ms -= (n_enc - 1) * cost.vision_host_ms
        dt = (gpu + vis_ms + cost.step_overhead_ms + cost.per_seq_overhead_ms * rows) * 1e-3
        s.busy += dt * len(s.running)
        s.t_prev = s.t
        s.t += dt
        s.steps += 1
        if not n_dec:
            return []
        s.K += 1
        return self._finish(s)

    def _retire(self, s: LaneState, chunks: Chunks, t_done: list[int]) -> None:
        """The step's prefill chunks are computed: a request whose prompt is complete samples a token and then
        decodes (or, with one output token, finishes; appended to ``t_done``)."""
        done, target, kv = s.done, s.target, s.kv
        for j, c in chunks:
            done[j] += c
            if done[j] < target[j]:
                kv[j] += c
                s.kv_pf += c
                continue
            s.kv_pf -= kv[j]
            kv[j] = 0
            del s.prefilling[j]
            if s.encoded[j]:
                s.enc_used -= self.enc[j]
            s.gen[j] += 1
            if s.gen[j] == 1:
                s.first[j] = s.t
                if self.api_free:
                    fcfs_start(self.api_free, s.t, self.stream_s[j])
            if s.gen[j] >= self.output[j]:
                s.phase[j] = FINISHED
                s.fin[j] = s.t
                del s.running[j]
                s.finished += 1
                t_done.append(j)
                continue
            s.phase[j] = DECODING
            s.base[j] = target[j] + 1 - s.K
            s.n_dec += 1
            s.base_sum += s.base[j]
            s.cached_dec += self.cached[j]
            heapq.heappush(s.heap, (s.K + self.output[j] - s.gen[j], s.version[j], j))

    def _finish(self, s: LaneState) -> list[int]:
        """Retire the decoding requests whose last token was produced at counter ``K``."""
        out = []
        heap, version, phase, K = s.heap, s.version, s.phase, s.K
        while heap and heap[0][0] <= K:
            _, v, j = heapq.heappop(heap)
            if v != version[j] or phase[j] != DECODING:
                continue
            phase[j] = FINISHED
            s.fin[j] = s.t
            del s.running[j]
            s.finished += 1
            s.n_dec -= 1
            s.base_sum -= s.base[j]
            s.cached_dec -= self.cached[j]
            out.append(j)
        return out

    # ------------------------------------------------------------------ closed loop

    def _sent(self, i: int, t: float) -> float:
        """Closed loop: request ``i`` is sent at ``t``; when the engine receives it (after its wait for an
        API-server process, if any, and its time outside the engine)."""
        if self.api_free:
            self.api_wait[i] = fcfs_start(self.api_free, t, self.api_s[i]) - t
        return t + self.api_wait[i] + self.front_s[i]

    def _reissue(self, s: LaneState, done: list[int]) -> None:
        """Closed loop: each finished request's client sends the next request now; the engine receives it
        after the API server's work on it (``frontend_ms``)."""
        t = s.t
        for _ in done:
            i = s.next_arr
            if i >= self.n:
                break
            s.arr[i] = self._sent(i, t)
            s.phase[i] = WAITING
            if s.arr[i] > t or self.async_scheduling:
                self.pending.append((s.arr[i], i))
            else:
                s.waiting.append(i)
            s.next_arr = i + 1


def _linear_at_middle(cost: StepCost, n_dec: int, ctx0: int, step: int, fixed: float, d0: float,
                      slope: float) -> bool:
    """Whether the step at the run's middle lies on the line through its ends (a sliding window or the
    roofline's max switching sides bends it)."""
    half = step // 2 // n_dec * n_dec
    dh = fixed + cost.decode_attention_ms(n_dec, ctx0 + half)
    return abs(d0 + slope * half / n_dec - dh) <= 1e-9 * dh


def _steps_until(first_ms: float, slope_ms: float, target_ms: float) -> int:
    """Fewest steps k >= 1 with k * first + slope * k (k - 1) / 2 >= target (step times first, first + slope, ...)."""
    if target_ms <= first_ms:
        return 1
    if slope_ms <= 1e-15:
        return max(1, math.ceil(target_ms / first_ms))
    a, b = slope_ms / 2, first_ms - slope_ms / 2
    return max(1, math.ceil((-b + math.sqrt(b * b + 4 * a * target_ms)) / (2 * a) - 1e-9))
