"""Closed loop of identical requests: the clients move in waves.

``vllm bench serve --max-concurrency C`` with fixed lengths starts every client at t = 0. Their prompts reach
the engine together (spaced by the API server's input work), are prefilled in a burst of steps of up to
``max_num_batched_tokens`` tokens, and then all decode together: every step of the burst delays every decoding
client alike, so the clients finish within a few decode steps of each other and send their next prompts
together again. Real vLLM 0.26 runs show it (text, 16 clients of 1,024/256 tokens on an H200: each wave's TTFT
climbs in three or four steps, 57-77 ms for the first prompts to 320-370 ms for the last; the e2e of all 16
within 30 ms), and so does the simulator once the API server's streaming work no longer holds prompts back.

The model follows one wave step by step: the prompts in arrival order, chunked into the steps' token budget
(running prefills first), each step's time from ``StepCost.mixed_ms`` with its decodes, prefill chunks, encoder
call and engine overhead; then the decode-only steps until the last client finishes, in segments of constant
batch. Each client's TTFT is its first token's time after its send, its TPOT the rest of its wave over its
output tokens; the loop's throughput is C clients per wave. It does not model what makes waves break up:
lengths that vary (the shape's classes: the settled-cohort model in ``closed`` then) or more clients than the
engine holds at once.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from planner.load.analytic.curves import Curves, window_args
from planner.load.analytic.mixture import combine_e2e, mixture_uniform
from planner.load.analytic.prediction import LoadPrediction
from planner.perf.frontend import api_input_ms
from planner.perf.stepcost import StepCost, prefill_pairs
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape


def predict_waves(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, cur: Curves, C: int,
                  async_scheduling: bool, front_ms: float) -> LoadPrediction | None:
    """TTFT, TPOT, e2e and throughput of ``C`` closed-loop clients of identical requests moving in waves
    (times from the client's send to its first token, without the request's fixed path outside the engine,
    ``front_ms``, which ``with_frontend`` adds); None where waves do not describe the loop: varying lengths, one
    client, more clients than the engine holds, or no path outside the engine (clients that come straight back
    to a synchronous engine settle into staggered cohorts instead, ``closed.predict_closed``: in the
    simulator, 16 clients of 1,024/256 text tokens on an H200 give TTFT p50/p95 146/146 ms that way, 288/348
    ms with the fitted request path and API servers, 287/368 ms measured)."""
    if shape.classes or C < 2 or C > cur.n_cap or front_ms <= 0:
        return None
    L = max(0, shape.output_tokens - 1)
    first, finish = _one_wave(cost, cfg, shape, cur, C, async_scheduling)
    w = np.full(C, 1.0 / C)
    ttft = mixture_uniform(w, first, np.zeros(C))
    tpot_each = (finish - first) / L if L else np.zeros(C)
    tpot = mixture_uniform(w, tpot_each, np.zeros(C))
    e2e = combine_e2e(ttft, tpot, L)
    wave = float(np.max(finish))
    thr = C * 1e3 / wave if wave > 0 else 0.0
    return LoadPrediction(ttft=ttft, tpot=tpot, e2e=e2e, requests_per_s=thr,
                          output_tokens_per_s=thr * shape.output_tokens, saturated=False,
                          max_requests_per_s=cur.max_rate, mean_batch=float(C))


def _arrivals(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, C: int) -> list[float]:
    """When each of C prompts sent at t = 0 reaches the engine (ms): the API servers take them first come,
    first served, each holding one for its input work (tokenising, image preprocessing)."""
    hold = float(api_input_ms(cost.cal, shape.text_tokens, shape.images, shape.input_megapixels))
    servers = max(1, int(cfg.api_server_count))
    return [(i // servers) * hold for i in range(C)]


def _one_wave(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, cur: Curves, C: int,
              async_scheduling: bool) -> tuple[np.ndarray, np.ndarray]:
    """First-token and finish times (ms) of each client of one wave, the engine idle at its start."""
    P, cached = shape.prompt_tokens, shape.cached_tokens
    L = max(0, shape.output_tokens - 1)
    B = int(cfg.max_num_batched_tokens)  # type: ignore[arg-type]
    vis = shape.visual_tokens
    enc_budget = max(B, vis)
    vis_ms, host_ms = cur.vision_ms, cur.vision_host_ms
    wp, wk = window_args(cost, P, max(1, P - cached))
    arrive = _arrivals(cost, cfg, shape, C)
    first = np.full(C, math.nan)
    finish = np.full(C, math.nan)
    done = [cached] * C
    gen = [0] * C  # output tokens each client has (its first included)
    waiting: deque[int] = deque()
    prefilling: list[int] = []
    decoding: list[int] = []
    t = t_prev = 0.0
    nxt = 0
    while nxt < C or waiting or prefilling:
        busy = bool(prefilling or decoding)
        cut = t_prev if async_scheduling and busy else t
        while nxt < C and arrive[nxt] <= cut + 1e-12:
            waiting.append(nxt)
            nxt += 1
        if not busy and not waiting:
            t = t_prev = arrive[nxt]
            continue
        n_dec = len(decoding)
        chunks, n_enc = _schedule(prefilling, waiting, done, P, B - n_dec, vis, enc_budget)
        pf_tok = sum(c for _, c in chunks)
        pairs = sum(prefill_pairs(done[j], c) for j, c in chunks)
        kv_read = sum(done[j] + c for j, c in chunks)
        share = pf_tok / max(1, P - cached)
        ctx = sum(P + gen[j] for j in decoding)
        rows = n_dec + len(chunks)
        gpu = cost.mixed_ms(n_dec, ctx, None, rows, pf_tok, pairs, kv_read,
                            None if wp is None else wp * share, None if wk is None else wk * len(chunks))
        enc = n_enc * vis_ms - max(0, n_enc - 1) * host_ms
        t_prev, t = t, t + gpu + enc + float(cost.overhead_ms(rows))
        still = []
        for j in decoding:
            gen[j] += 1
            if gen[j] > L:
                finish[j] = t
            else:
                still.append(j)
        decoding = still
        for j, c in chunks:
            done[j] += c
            if done[j] >= P:
                prefilling.remove(j)
                first[j] = t
                gen[j] = 1
                if L:
                    decoding.append(j)
                else:
                    finish[j] = t
    _decode_out(cost, decoding, gen, L, P, t, finish)
    return first, finish


def _schedule(prefilling: list[int], waiting: deque[int], done: list[int], P: int, room: int, vis: int,
              enc_budget: int) -> tuple[list[tuple[int, int]], int]:
    """One step's prefill chunks (running prefills first, then waiting clients within the token and encoder
    budgets; admitted clients move from ``waiting`` to ``prefilling``) and how many clients' images it encodes."""
    chunks: list[tuple[int, int]] = []
    for j in prefilling:
        c = min(P - done[j], room)
        if c <= 0:
            break
        chunks.append((j, c))
        room -= c
    enc_left = enc_budget - vis * len(prefilling)
    n_enc = 0
    while room > 0 and waiting:
        if vis and vis > enc_left and (prefilling or enc_left < enc_budget):
            break
        j = waiting.popleft()
        prefilling.append(j)
        c = min(P - done[j], room)
        chunks.append((j, c))
        room -= c
        if vis:
            enc_left -= vis
            n_enc += 1
    return chunks, n_enc


def _decode_out(cost: StepCost, decoding: list[int], gen: list[int], L: int, P: int, t: float,
                finish: np.ndarray) -> None:
    """Decode-only steps from ``t`` until every client in ``decoding`` has its L + 1 tokens, in segments of
    constant batch (each step's attention at the segment's middle context); fills ``finish``."""
    left = sorted(decoding, key=lambda j: L + 1 - gen[j])
    ctx = sum(P + gen[j] for j in left)
    steps_done = 0
    k = 0
    while k < len(left):
        n = len(left) - k
        m = L + 1 - gen[left[k]] - steps_done
        if m > 0:
            mid = ctx + n * (m - 1) / 2
            t += m * float(cost.decode_steps_ms(n, mid))
            ctx += n * m
            steps_done += m
        while k < len(left) and L + 1 - gen[left[k]] <= steps_done:
            finish[left[k]] = t
            ctx -= P + gen[left[k]] + steps_done
            k += 1
