"""Poisson arrivals: the decode batch, the TTFT chain, TPOT, slots and the API-server wait together."""

from __future__ import annotations

import math

import numpy as np

from planner.core.stats import Percentiles
from planner.load.analytic.api_queue import ApiQueue
from planner.load.analytic.chain import Chain, chain_of
from planner.load.analytic.curves import Curves
from planner.load.analytic.lone import alone_ms
from planner.load.analytic.mixture import (
    Atoms,
    combine_e2e,
    mixture_mean,
    mixture_uniform,
    with_wait,
)
from planner.load.analytic.prediction import INF, LoadPrediction
from planner.load.analytic.special import nbinom_sf, pdtr
from planner.load.analytic.tpot import tpot_poisson
from planner.perf.frontend import shape_frontend_ms
from planner.perf.lone import mean_vision_ms
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape


def saturated(cur: Curves, shape: RequestShape) -> LoadPrediction:
    return LoadPrediction(ttft=INF, tpot=INF, e2e=INF, requests_per_s=cur.max_rate,
                          output_tokens_per_s=cur.max_rate * shape.output_tokens, saturated=True,
                          max_requests_per_s=cur.max_rate, mean_batch=float(cur.n_cap))


def predict_poisson(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, cur: Curves, lam: float,
                    api: ApiQueue) -> LoadPrediction:
    """Poisson arrivals at ``lam`` requests/s: the decode batch and the TTFT chain solved together (three rounds
    of Little's law at most), then TPOT, the wait for a slot and the wait for an API server."""
    if lam >= min(cur.max_rate, api.max_rate):
        return saturated(cur, shape)
    P = shape.prompt_tokens
    Pn = max(1, P - shape.cached_tokens)
    L = max(0, shape.output_tokens - 1)
    B = cfg.max_num_batched_tokens
    lam_ms = lam * 1e-3
    n_bar = _batch_at(cur, lam)
    chain = atoms = None
    mu = tpot_mean = 0.0
    n_used = -1
    for _ in range(3):
        n_i = int(round(n_bar))
        if n_i == n_used:
            break
        chain = chain_of(cost, n_i, B, Pn, P, cur, lam_ms)
        if not chain.stable:
            return saturated(cur, shape)
        n_used = n_i
        atoms, mu = tpot_poisson(cur, chain, n_bar, L, lam_ms)
        tpot_mean = mixture_mean(*atoms) if atoms is not None else 0.0
        # Little: sequences decoding = lambda x L x mean TPOT (request-averaged).
        n_bar = lam_ms * L * tpot_mean if L else 0.0
        if n_bar > cur.n_cap:
            return saturated(cur, shape)
    assert chain is not None
    if shape.classes and L:
        atoms = _class_tpot_atoms(cur, chain, shape, n_bar, lam_ms)
    tpot = mixture_uniform(*atoms) if atoms is not None else Percentiles.constant(0.0)
    w, lo, width = chain.ttft_atoms()
    if shape.classes:
        w, lo, width = _class_ttft_atoms(cost, cfg, shape, cur, (w, lo, width))
    # Slots (max_num_seqs, or the KV cache at the mean context): a request holds one from admission to its
    # last token (Erlang C gave a TTFT p95 at 80% load 69% short of the simulator's; see slot_wait).
    c = cur.n_cap
    hold = chain.ch * float(chain.d[min(1, chain.cap)]) + L * tpot.mean
    load = lam_ms * hold
    if load >= c * 0.999:
        return saturated(cur, shape)
    p_wait, mean_w = slot_wait(cur, lam, load, 1.0 / (1.0 - mu) ** 2)
    if not math.isfinite(mean_w):
        # Past the peak of lambda(N) (a full batch completes fewer requests/s than a smaller one) the slot
        # queue, once full, only grows.
        return saturated(cur, shape)
    w, lo, width = with_wait(w, lo, width, p_wait, mean_w)
    # Before all that, the wait for an API-server process (its own queue, ahead of the engine's).
    w, lo, width = api.with_wait(w, lo, width, lam_ms)
    ttft = mixture_uniform(w, lo, width)
    e2e = combine_e2e(ttft, tpot, L)
    return LoadPrediction(ttft=ttft, tpot=tpot, e2e=e2e, requests_per_s=lam,
                          output_tokens_per_s=lam * shape.output_tokens, saturated=False,
                          max_requests_per_s=cur.max_rate, mean_batch=min(float(c), load))


def _batch_at(cur: Curves, lam: float) -> float:
    """The decode batch from lambda(n) = lambda on the rising branch (interpolated between batch sizes)."""
    rising = cur.rate[: cur.n_at_max + 1]
    k = int(np.searchsorted(rising, lam))
    if k == 0:
        return 0.0
    k = min(k, len(rising) - 1)
    r0, r1 = rising[k - 1], rising[k]
    return float(k - 1 + (lam - r0) / (r1 - r0)) if r1 > r0 else float(k)


def _class_tpot_atoms(cur: Curves, chain: Chain, shape: RequestShape, n_bar: float, lam_ms: float) -> Atoms:
    """Each class decodes its own number of tokens in the same traffic: its TPOT atoms from its own L (a short
    output sees few interrupting prefills, so its TPOT spreads wider), weighted by its probability."""
    parts = [(p, tpot_poisson(cur, chain, n_bar, max(1, c.output_tokens - 1), lam_ms)[0])
             for p, c in shape.classes if c.output_tokens > 1]
    return (np.concatenate([p * a[0] for p, a in parts if a is not None]),
            np.concatenate([a[1] for _, a in parts if a is not None]),
            np.concatenate([a[2] for _, a in parts if a is not None]))


def _class_ttft_atoms(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, cur: Curves, chain_atoms: Atoms
                      ) -> Atoms:
    """A class's first token comes after its own encoder call and prefill where the mean request's came after
    the mean's: the queue ahead of it is the traffic's. The wait ahead of it grows with the spread of the work
    each request brings (a queue's wait goes with E[S^2] / E[S], the mean residual of a service): the chain's
    wait, run on the mean request, scaled by E[S^2] / E[S]^2 of the requests' work alone."""
    w, lo, width = chain_atoms
    base = alone_ms(cost, cfg, shape, cur.vision_ms)
    alone = np.array([alone_ms(cost, cfg, c, mean_vision_ms(cost, c)) for _, c in shape.classes])
    probs = np.array([p for p, _ in shape.classes])
    spread = float(probs @ alone**2) / float(probs @ alone) ** 2 if float(probs @ alone) > 0 else 1.0
    wait_lo = np.maximum(0.0, lo - base) * spread
    # Its own time outside the engine, where predict() adds the mean request's afterwards.
    fe_mean = shape_frontend_ms(cost.cal, shape)
    own = alone + np.array([shape_frontend_ms(cost.cal, c) - fe_mean for _, c in shape.classes])
    return (np.concatenate([p * w for p in probs]), np.concatenate([a + wait_lo for a in own]),
            np.concatenate([width * spread for _ in probs]))


def slot_wait(cur: Curves, lam: float, held: float, dispersion: float) -> tuple[float, float]:
    """P(an arrival waits for a slot) and the mean wait (ms) given that it does.

    The requests admitted or waiting, N, average ``held`` (Little) and are over-dispersed like the batch
    (variance ``dispersion`` x mean, the branching process's 1 / (1 - mu)^2: prefill bursts slow every
    sequence at once), so P(N >= c) is a negative binomial's tail (a Poisson's, 2x short, was the simulator's
    9% against 17% at 80% load with 32 slots). Beyond c the queue drains at the full-batch completion rate
    (``cur.rate[c]``; one GPU shared, not c independent servers): the wait given a wait is exponential of mean
    1 / (rate_c - lambda)."""
    c = cur.n_cap
    rate_c = float(cur.rate[c])
    if lam >= 0.999 * rate_c:
        return 1.0, math.inf
    n = min(held, c - 1e-6)
    if dispersion > 1.0 + 1e-6:
        # Negative binomial (r = n / (dispersion - 1), p = 1 / dispersion): P(N >= c) = I_{1-p}(c, r).
        p_wait = nbinom_sf(c, n / (dispersion - 1.0), 1.0 - 1.0 / dispersion)
    else:
        p_wait = float(1.0 - pdtr(c - 1, n))
    return p_wait, 1e3 / (rate_c - lam)
