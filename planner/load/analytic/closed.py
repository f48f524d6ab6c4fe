"""Closed loop: clients with zero think time settle into lock-step cohorts."""

from __future__ import annotations

import math

import numpy as np

from planner.load.analytic.curves import Curves, window_args
from planner.load.analytic.mixture import (
    combine_e2e,
    mixture_uniform,
)
from planner.load.analytic.prediction import LoadPrediction
from planner.perf.stepcost import StepCost, prefill_pairs
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape


def predict_closed(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, cur: Curves, C: int) -> LoadPrediction:
    P = shape.prompt_tokens
    Pn = max(1, P - shape.cached_tokens)
    L = max(0, shape.output_tokens - 1)
    B = cfg.max_num_batched_tokens
    n_run = min(C, cur.n_cap)  # clients the engine holds at once; the rest queue for a slot
    # Requests whose images fit one step's encoder budget (max(B, one request's visual tokens)).
    vis = shape.visual_tokens
    per_enc = max(1, max(B, vis) // vis) if vis else n_run
    ctx = P + 1 + L / 2
    wp, wk = window_args(cost, P, Pn)
    d_dec = float(cur.a[min(n_run, len(cur.a) - 1)])

    def mixed(per: float, n_dec: int, tok: int) -> float:
        """A step prefilling ``per`` prompts' worth (``tok`` tokens) while ``n_dec`` clients decode."""
        rows = n_dec + math.ceil(per)
        return (cost.lin(n_dec + tok) + cost.lm_head(rows)
                + (cost.decode_attention_ms(n_dec, n_dec * ctx) if n_dec else 0.0)
                + cost.prefill_attention_ms(tok, per * prefill_pairs(P - Pn, Pn), per * P,
                                            None if wp is None else per * wp, None if wk is None else per * wk)
                + (per * (cur.vision_ms - cur.vision_host_ms) + cur.vision_host_ms if per > 0 else 0.0)
                + cost.overhead_ms(rows) + cost.decode_extra_ms(n_dec))

    # Identical clients settle into cohorts of k that each fill one step with whole prompts while the other
    # n - k decode: k = floor((B - n + k) / P') (a step trace of the simulator: 64 clients of 1,024-token
    # prompts run as nine cohorts of 7 and one of 1, in cycles of L + 1 steps). Prompts are cut across steps
    # only while the waves settle.
    k = min(n_run, per_enc, (B - n_run) // (Pn - 1) if Pn > 1 else n_run)
    if k >= 1:
        full, rem = divmod(n_run, k)
        sizes = [(k, full)] + ([(rem, 1)] if rem else [])
        d = {j: mixed(j, n_run - j if full + (rem > 0) > 1 else 0, j * Pn) for j, _ in sizes}
        G = full + (rem > 0)
        steps = max(L + 1, G)
        cycle = sum(d[j] * m for j, m in sizes) + (steps - G) * d_dec
        queue = max(0, G - (L + 1)) * d[k]  # more cohorts than a cycle has steps: they wait their turn
        ttft_of = {j: d[j] + queue for j, _ in sizes}
        tpot_of = {j: (cycle - d[j]) / L if L else 0.0 for j, _ in sizes}
        share = {j: j * m / n_run for j, m in sizes}
    else:
        # A prompt longer than a step's room: its chunks take ceil(P' / room) steps, one client at a time.
        room = max(1, B - (n_run - 1))
        per = room / Pn
        G = math.ceil(n_run / per - 1e-9)
        d_mix = mixed(per, n_run - 1 if n_run > 1 else 0, room)
        cycle = G * d_mix + max(0, L - (G - 1)) * d_dec
        ttft_of = {1: math.ceil(Pn / room) * d_mix}
        tpot_of = {1: (cycle - d_mix) / L if L else 0.0}
        share = {1: 1.0}
    wait = (C - n_run) / n_run * cycle if C > n_run else 0.0
    js = list(share)
    w = np.array([share[j] for j in js])
    ttft = mixture_uniform(w, np.array([ttft_of[j] + wait for j in js]), np.zeros(len(js)))
    tpot = mixture_uniform(w, np.array([tpot_of[j] for j in js]), np.zeros(len(js)))
    e2e = combine_e2e(ttft, tpot, L)
    thr = C / (e2e.mean * 1e-3) if e2e.mean > 0 else 0.0
    return LoadPrediction(ttft=ttft, tpot=tpot, e2e=e2e, requests_per_s=thr,
                          output_tokens_per_s=thr * shape.output_tokens, saturated=False,
                          max_requests_per_s=cur.max_rate, mean_batch=float(n_run))
