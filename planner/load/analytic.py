"""Fast analytic approximation of the simulator's latency percentiles (the solver's inner loop).

Notation (one replica, one request shape): ``P`` prompt tokens of which
``P'`` are not in the prefix cache, ``O`` output tokens, ``L = O - 1`` decode
steps per request, ``V`` the ViT time of its images, ``B`` the token budget of
a step (``max_num_batched_tokens``), ``lambda`` the arrival rate.

**Decode batch and saturation (mean-value analysis).** With ``n`` sequences
decoding, a decode-only step takes ``a(n)`` (``StepCost``: GEMMs, attention at
the mean context ``P + 1 + L/2``, lm_head, engine overhead) and each arriving
request adds ``e(n)`` of prefill work to some step (its chunks' share of the
GEMMs, its attention, its ViT). Steps then average ``s = a / (1 - lambda e)``
and Little's law gives ``n = lambda L s``; eliminating ``s``::

    lambda(n) = n / (L a(n) + n e(n))

an explicit rate for each batch size. The largest ``lambda(n)`` over the
batches the engine can hold (``max_num_seqs``, the KV cache at the mean
context) is the saturation throughput; below it the batch starts at the ``n``
with ``lambda(n) = lambda`` and is refined with the request-averaged TPOT.

**TTFT (gated batch-service queue).** A step, once started, serves the
prefills waiting at its start, up to the budget: ``cap = floor((B - n) / P')``
requests (or one chunk of ``B - n`` tokens when ``P' > B - n``, a request
being ``ch`` chunks). The units waiting at step starts form a Markov chain,
``Q' = Q - min(Q, cap) + ch Poisson(lambda D(min(Q, cap)))`` with ``D(s)`` the
duration of a step serving ``s`` units; its stationary law ``pi`` is solved
exactly on a truncated state space (a banded linear system). A request lands
in a step with probability ``pi_Q D_Q`` (length bias), waits the residual
``U D_Q`` (``U`` uniform), then the steps clearing the units ahead of it
(those left over, plus ``Poisson(lambda D_Q / 2)`` arrivals before it) and
its own, which also serves the ``Poisson(lambda D_Q / 2)`` arrivals after it
while they fit.

**TPOT.** A request's ``L`` steps each cost ``a`` plus the prefill work of
the ``K`` requests served while it decodes: the backlog it leaves in the queue
and the arrivals during its life. Each of them lengthens its life and lets
more arrive, so ``K`` is the total progeny of a branching process with
``Poisson(lambda (e + s L / 2))`` offspring (generalised Poisson, founded by
the backlog and the ``Poisson(lambda L a)`` direct arrivals; ``s`` the slope
of ``a(n)``). The batch it joins is a count of the same kind: over-dispersed,
variance ``n / (1 - mu)^2`` rather than M/G/infinity's ``n``, integrated over
Gauss-Hermite nodes; a larger batch also makes each interrupting prefill dearer
(``e(n)``), so ``mu`` varies over the nodes. That batch is larger than the time average by the requests
whose prefills completed while it waited, less those that finished meanwhile (few, when the wait is a few long
prefill steps). No step carries more prefill than the budget, so TPOT stays below a full step.

**Slots.** With ``max_num_seqs`` (or the KV cache) binding, a request waits for
a slot when the ``N`` requests admitted or waiting reach ``c``: ``N`` is
over-dispersed like the batch (negative binomial, variance ``n / (1 - mu)^2``),
and the queue beyond ``c`` drains at the full-batch completion rate ``lambda(c)``
(one GPU shared, not ``c`` independent servers).

**Closed loop** (``C`` clients, zero think time, identical requests): clients
fall into lock-step waves, as in the simulator and in fixed-length benchmarks,
and settle into cohorts of ``k = floor((B - C + k) / P')`` that each fill one
step with whole prompts while the other ``C - k`` decode (the last cohort takes
the remainder). A cycle is ``L + 1`` steps: one per cohort, the rest decode
only. A client's TTFT is its cohort's step, its TPOT the rest of the cycle over
``L``. A prompt longer than a step's room takes ``ceil(P' / room)`` steps.

e2e combines TTFT and ``L`` TPOT with the normal rule for independent parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.linalg import solve_banded
from scipy.special import bdtr, betainc, gammaln, pdtr

from planner.catalog.loader import load_calibration, load_precisions
from planner.catalog.schema import Calibration
from planner.core.stats import Percentiles
from planner.perf.speed import api_server_ms, shape_frontend_ms
from planner.perf.stepcost import StepCost, prefill_pairs
from planner.spec.config import ServingConfig
from planner.spec.shape import RequestShape

_LEVELS = (0.5, 0.9, 0.95, 0.99)
_NAMES = ("p50", "p90", "p95", "p99")
_INF = Percentiles(mean=math.inf, p50=math.inf, p90=math.inf, p95=math.inf, p99=math.inf)
_QMAX = 400
_LGAMMA = gammaln(np.arange(20001) + 1.0)
_HERMITE_Z, _HERMITE_W = np.polynomial.hermite_e.hermegauss(7)
_HERMITE = (_HERMITE_Z, _HERMITE_W / math.sqrt(2 * math.pi))
"""Nodes and weights of a standard normal (7-point Gauss-Hermite)."""
Atoms = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A mixture of uniforms: weights, low ends, widths."""


MAX_LOAD = 0.85
"""Default ceiling on a replica's offered Poisson load, as a fraction of its saturation throughput (the solver
sizes replicas to it; ``vlmplan estimate`` flags a load above it). Headroom for bursts and rate forecasts, and
the range where this model is checked: within 10% of the simulator on all 160 test points up to 80% of
saturation and on all but two (both pessimistic) of 40 points at 85%; at 90% its TPOT p95 is up to 14% and
TTFT p95 up to 12% optimistic (docs/validation/load.md)."""


@dataclass(frozen=True)
class LoadPrediction:
    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    """ms."""
    requests_per_s: float
    output_tokens_per_s: float
    saturated: bool
    """Offered load >= capacity: percentiles are then inf."""
    max_requests_per_s: float
    """Saturation throughput of one replica for this request shape."""
    mean_batch: float
    """Mean running sequences."""


def meets_slos(pred: LoadPrediction, slos: list[Any]) -> bool:
    """Not saturated, and every SLO (``metric`` ttft/tpot/e2e, ``stat``, ``limit_ms``) within its limit."""
    if pred.saturated:
        return False
    return all(getattr(getattr(pred, s.metric), s.stat) <= s.limit_ms for s in slos)


def build_step_cost(cfg: ServingConfig, calibration: Calibration | None = None) -> StepCost:
    """Step-time tables of a resolved ``cfg`` (see ``deployment.resolve``)."""
    cal = calibration or load_calibration(cfg.gpu.name)
    return StepCost(cfg, cal, load_precisions())


# --------------------------------------------------------------------------- per-shape curves


@dataclass(frozen=True)
class _Curves:
    n: np.ndarray
    a: np.ndarray
    """Decode-only step (ms) with n sequences, engine overhead included."""
    e: np.ndarray
    """Prefill work one request adds (ms)."""
    rate: np.ndarray
    """lambda(n), requests/s."""
    n_cap: int
    max_rate: float
    n_at_max: int
    vision_ms: float
    """One request's encoder call alone (GPU work and the call's host work)."""
    vision_host_ms: float = 0.0
    """Of which the host work, paid once per encoder call: prompts that arrive in one step share it."""
    host_shared: bool = False
    """Whether one step's encoder budget holds more than one request's images (so calls can be shared)."""


def _curves(cost: StepCost, cfg: ServingConfig, shape: RequestShape, kv_capacity_tokens: int) -> _Curves:
    """a(n), e(n) and lambda(n) for n = 0..n_cap, cached on ``cost`` per shape."""
    cache: dict = cost.__dict__.setdefault("_analytic_cache", {})
    key = (cfg.max_num_seqs, cfg.max_num_batched_tokens, shape.prompt_tokens, shape.cached_tokens,
           shape.output_tokens, shape.images, shape.encoder_patches, shape.vit_sequences, kv_capacity_tokens,
           shape.classes)
    hit = cache.get(key)
    if hit is not None:
        return hit
    P = shape.prompt_tokens
    Pn = max(1, P - shape.cached_tokens)
    L = max(0, shape.output_tokens - 1)
    B = int(cfg.max_num_batched_tokens or cost.max_tokens)
    seqs = int(cfg.max_num_seqs or cost.max_seqs)
    V = _mean_vision_ms(cost, shape)
    ctx = P + 1 + L / 2
    # KV per decoding sequence at the mean context (prefix hits shared) plus half a block of rounding.
    kv_seq = max(1.0, ctx - shape.cached_tokens + 8)
    n_cap = max(1, min(seqs, B - 1, int(kv_capacity_tokens // kv_seq)))
    n = np.arange(0, n_cap + 1)
    top = len(cost.lin_ms) - 1
    lin, lm = cost.lin_ms, cost.lm_ms
    nn = np.minimum(n, top)
    a = lin[nn] + lm[nn] + cost.overhead_ms(0) + cost._ov1 * n
    a[1:] += cost.decode_attention_vec_n(n[1:], n[1:] * ctx)
    room = np.maximum(1, B - n)
    ch = np.ceil(Pn / room)
    # Prefills share steps: n decodes lasting L steps each mean n / L arrivals per step, whose prompts go
    # through the GEMMs together (a step of many short prompts is compute-bound even when one alone is not).
    k = np.maximum(1.0, n / L) if L > 0 else np.maximum(1.0, room / Pn)
    tok = np.minimum(k * Pn, room).astype(int)
    per_req = Pn / np.maximum(tok, 1)  # this request's share of those tokens
    wp, wk = _window_args(cost, P, Pn)
    pf = cost.prefill_attention_ms(Pn, prefill_pairs(P - Pn, Pn), P, wp, wk)
    # (Wave quantisation can make a GEMM of a few more rows no slower, or even faster: never below zero.)
    grow = (np.maximum(0.0, lin[np.minimum(n + tok, top)] - lin[nn]) * per_req
            + np.maximum(0.0, lm[np.minimum(n + np.ceil(k).astype(int), top)] - lm[nn]) / np.ceil(k))
    host = cost.cal.value("vision_call_overhead_ms") * _image_share(shape) if V > 0 else 0.0
    # n decoding means n / L arrivals a step (Little): the prompts arriving in one step share an encoder call,
    # when the encoder budget (max(B, one request's visual tokens)) holds more than one request's images.
    vis = shape.visual_tokens
    shares_calls = bool(vis) and max(B, vis) // vis > 1
    mu = n / L if L > 0 and shares_calls else np.zeros(len(n))
    share = np.where(mu > 1e-9, -np.expm1(-mu) / np.maximum(mu, 1e-9), 1.0)
    e = ch * cost._ov1 + grow + pf + (V - host * (1.0 - share)) + (ch - 1) * cost.attention_launch_ms()
    if L > 0:
        rate = np.zeros(len(n))
        rate[1:] = n[1:] / (L * a[1:] + n[1:] * e[1:]) * 1e3
    else:
        # One output token: requests never decode; the prefill server alone limits them.
        rate = np.full(len(n), 1e3 / float(e[0]))
    i_max = int(np.argmax(rate))
    out = _Curves(n=n, a=a, e=e, rate=rate, n_cap=n_cap, max_rate=float(rate[i_max]), n_at_max=i_max, vision_ms=V,
                  vision_host_ms=host, host_shared=shares_calls)
    if len(cache) > 512:
        cache.clear()
    cache[key] = out
    return out


def _mean_vision_ms(cost: StepCost, shape: RequestShape) -> float:
    """A request's encoder time, averaged over the workload's classes (the ViT's cost is not linear in its
    patches, so the mean of the costs, not the cost of the mean)."""
    if not shape.classes:
        return cost.vision_ms(shape.images, shape.encoder_patches, shape.vit_sequences)
    return sum(p * cost.vision_ms(c.images, c.encoder_patches, c.vit_sequences) for p, c in shape.classes)


def _image_share(shape: RequestShape) -> float:
    """The fraction of requests that carry images."""
    if not shape.classes:
        return 1.0 if shape.images else 0.0
    return sum(p for p, c in shape.classes if c.images)


def _window_args(cost: StepCost, P: int, Pn: int) -> tuple[float | None, float | None]:
    if not cost.sliding_layers:
        return None, None
    w = min(P, cost.window)
    return Pn * w, w


# --------------------------------------------------------------------------- entry point


def predict(cost: StepCost, cfg: ServingConfig, shape: RequestShape, arrival: str, rate_per_s: float | None,
            concurrency: int | None, kv_capacity_tokens: int) -> LoadPrediction:
    """Latency percentiles and throughput of ONE replica of ``cfg`` serving ``shape``.

    ``arrival``: 'single' (one request alone), 'poisson' (``rate_per_s``;
    'trace' is taken as Poisson at the given rate) or 'closed'
    (``concurrency`` clients with zero think time).
    """
    cur = _curves(cost, cfg, shape, kv_capacity_tokens)
    api = _ApiQueue.of(cost, cfg, shape)
    if arrival == "single" or (arrival == "closed" and concurrency == 1):
        pred = _single(cost, cfg, shape, cur)
    elif arrival in ("poisson", "trace"):
        if rate_per_s is None or rate_per_s <= 0:
            raise ValueError("poisson arrival needs a positive rate_per_s")
        pred = _poisson(cost, cfg, shape, cur, float(rate_per_s), api)
    elif arrival == "closed":
        if concurrency is None or concurrency < 1:
            raise ValueError("closed-loop arrival needs concurrency >= 1")
        pred = _closed(cost, cfg, shape, cur, int(concurrency))
    else:
        raise ValueError(f"arrival '{arrival}' is not single, poisson or closed")
    pred = _with_frontend(pred, shape_frontend_ms(cost.cal, shape), closed=arrival in ("single", "closed"))
    if arrival == "closed" and (concurrency or 1) > 1:
        pred = api.closed_loop(pred, int(concurrency or 1))
    if pred.requests_per_s > api.max_rate:  # saturated by the API servers, or a loop they slow down
        slow = api.max_rate / pred.requests_per_s
        pred = replace(pred, requests_per_s=api.max_rate, output_tokens_per_s=pred.output_tokens_per_s * slow)
    return replace(pred, max_requests_per_s=min(pred.max_requests_per_s, api.max_rate))


@dataclass(frozen=True)
class _ApiQueue:
    """The replica's API-server processes: ``servers`` first-come-first-served servers that each request holds
    for ``hold_ms`` on average (``speed.api_server_ms``), with squared coefficient of variation ``cs2``."""

    servers: int
    hold_ms: float
    cs2: float

    @staticmethod
    def of(cost: StepCost, cfg: ServingConfig, shape: RequestShape) -> _ApiQueue:
        def one(s: RequestShape) -> float:
            return api_server_ms(cost.cal, s.text_tokens, s.output_tokens, s.images, s.input_megapixels)

        if shape.classes:
            p = np.array([q for q, _ in shape.classes])
            v = np.array([one(c) for _, c in shape.classes])
            mean = float(p @ v)
            cs2 = max(0.0, float(p @ v**2) - mean * mean) / mean**2 if mean > 0 else 0.0
        else:
            mean, cs2 = one(shape), 0.0
        return _ApiQueue(servers=max(1, int(cfg.api_server_count)), hold_ms=mean, cs2=cs2)

    @property
    def max_rate(self) -> float:
        """Requests/s at which the API servers are busy all the time."""
        return self.servers * 1e3 / self.hold_ms if self.hold_ms > 0 else math.inf

    def wait(self, lam_ms: float) -> tuple[float, float]:
        """P(a Poisson arrival waits) and its mean wait given that it does (ms): Erlang C, with the wait scaled
        by (1 + cs2) / 2 for a service that is not exponential (Allen-Cunneen's approximation of M/G/c)."""
        c = self.servers
        a = lam_ms * self.hold_ms
        if self.hold_ms <= 0 or a <= 0:
            return 0.0, 0.0
        if a >= c:
            return 1.0, math.inf
        term, total = 1.0, 1.0
        for k in range(1, c):
            term *= a / k
            total += term
        last = term * a / c / (1 - a / c)
        p_wait = last / (total + last)
        return p_wait, self.hold_ms / (c - a) * (1 + self.cs2) / 2

    def with_wait(self, w: np.ndarray, lo: np.ndarray, width: np.ndarray, lam_ms: float) -> Atoms:
        """Atoms of a time plus the wait of a Poisson arrival for an API server. Given that it waits, the wait is
        the rest of the service ahead of it (uniform, mean E[S^2] / 2E[S] / servers: what a light load sees)
        plus, for the rest of the mean, whole services ahead of it (exponential: what a heavy load sees)."""
        p_wait, mean_w = self.wait(lam_ms)
        if p_wait <= 1e-4 or not math.isfinite(mean_w):
            return w, lo, width
        rest = min(mean_w, self.hold_ms * (1 + self.cs2) / 2 / self.servers)
        # The requests that wait: the residual (uniform, width 2 x rest), then whole services (exponential).
        ww, wlo, wwidth = _with_wait(w * p_wait, lo, width + 2 * rest, 1.0, max(0.0, mean_w - rest))
        return np.concatenate([w * (1 - p_wait), ww]), np.concatenate([lo, wlo]), np.concatenate([width, wwidth])

    def closed_loop(self, pred: LoadPrediction, clients: int) -> LoadPrediction:
        """A closed loop through the API servers: below their capacity each request waits as a Poisson arrival
        at the loop's rate would (mean wait added to TTFT and e2e); at it, the loop runs at their capacity and the
        clients' extra cycle time is the wait."""
        if self.hold_ms <= 0 or pred.requests_per_s <= 0:
            return pred
        rate = pred.requests_per_s
        if rate < self.max_rate * 0.98:
            p_wait, mean_w = self.wait(rate * 1e-3)
            extra = p_wait * mean_w
        else:
            rate = self.max_rate * 0.98
            extra = clients * 1e3 / rate - pred.e2e.mean
        if not math.isfinite(extra) or extra <= 0:
            return pred
        slow = pred.e2e.mean / (pred.e2e.mean + extra)
        return replace(pred, ttft=pred.ttft.shifted(extra), e2e=pred.e2e.shifted(extra),
                       requests_per_s=pred.requests_per_s * slow,
                       output_tokens_per_s=pred.output_tokens_per_s * slow)


def _with_frontend(pred: LoadPrediction, fe_ms: float, closed: bool = False) -> LoadPrediction:
    """The request's path outside the engine delays it by ``fe_ms``: TTFT and e2e shift by it (an independent
    delay per request leaves Poisson arrivals Poisson, so an open loop's throughput does not change); a closed
    loop's clients spend it out of the engine, so each client's cycle is that much longer."""
    if fe_ms <= 0:
        return pred
    if closed and pred.e2e.mean > 0:
        slow = pred.e2e.mean / (pred.e2e.mean + fe_ms)
        pred = replace(pred, requests_per_s=pred.requests_per_s * slow,
                       output_tokens_per_s=pred.output_tokens_per_s * slow)

    return replace(pred, ttft=pred.ttft.shifted(fe_ms), e2e=pred.e2e.shifted(fe_ms))


def _single(cost: StepCost, cfg: ServingConfig, shape: RequestShape, cur: _Curves) -> LoadPrediction:
    P, L = shape.prompt_tokens, max(0, shape.output_tokens - 1)
    ttft = cur.vision_ms + _prefill_alone_ms(cost, cfg, shape) + cost.overhead_ms(1)
    tpot = cost.decode_ms(1, P + 1 + L / 2) + cost.overhead_ms(1) if L else 0.0
    e2e = ttft + L * tpot
    return LoadPrediction(ttft=Percentiles.constant(ttft), tpot=Percentiles.constant(tpot),
                          e2e=Percentiles.constant(e2e), requests_per_s=1e3 / e2e,
                          output_tokens_per_s=shape.output_tokens * 1e3 / e2e, saturated=False,
                          max_requests_per_s=cur.max_rate, mean_batch=1.0)


def _prefill_alone_ms(cost: StepCost, cfg: ServingConfig, shape: RequestShape) -> float:
    """A lone prompt, chunked by the budget (each further chunk a step with its own overhead)."""
    P = shape.prompt_tokens
    Pn = max(1, P - shape.cached_tokens)
    B = int(cfg.max_num_batched_tokens or cost.max_tokens)
    if Pn <= B:
        return cost.prefill_ms(P, shape.cached_tokens)
    total = 0.0
    done = P - Pn
    while done < P:
        c = min(B, P - done)
        w = min(done + c, cost.window) if cost.sliding_layers else None
        total += cost.step_ms(0, 0.0, c, prefill_pairs(done, c), prefill_kv_tokens=done + c,
                              prefill_window_pairs=None if w is None else c * w, prefill_window_kv=w)
        done += c
        if done < P:
            total += cost.overhead_ms(1)
    return total


def _alone_ms(cost: StepCost, cfg: ServingConfig, shape: RequestShape, vision_ms: float) -> float:
    """A request's encoder call and prefill with the engine to itself."""
    return vision_ms + _prefill_alone_ms(cost, cfg, shape)


def _saturated(cur: _Curves, shape: RequestShape) -> LoadPrediction:
    return LoadPrediction(ttft=_INF, tpot=_INF, e2e=_INF, requests_per_s=cur.max_rate,
                          output_tokens_per_s=cur.max_rate * shape.output_tokens, saturated=True,
                          max_requests_per_s=cur.max_rate, mean_batch=float(cur.n_cap))


# --------------------------------------------------------------------------- Poisson arrivals


def _poisson(cost: StepCost, cfg: ServingConfig, shape: RequestShape, cur: _Curves, lam: float,
             api: _ApiQueue) -> LoadPrediction:
    if lam >= min(cur.max_rate, api.max_rate):
        return _saturated(cur, shape)
    P = shape.prompt_tokens
    Pn = max(1, P - shape.cached_tokens)
    L = max(0, shape.output_tokens - 1)
    B = int(cfg.max_num_batched_tokens or cost.max_tokens)
    lam_ms = lam * 1e-3
    # Decode batch from lambda(n) = lambda on the rising branch.
    rising = cur.rate[: cur.n_at_max + 1]
    k = int(np.searchsorted(rising, lam))
    if k == 0:
        n_bar = 0.0
    else:
        k = min(k, len(rising) - 1)
        r0, r1 = rising[k - 1], rising[k]
        n_bar = float(k - 1 + (lam - r0) / (r1 - r0)) if r1 > r0 else float(k)
    chain = atoms = None
    mu = tpot_mean = 0.0
    n_used = -1
    for _ in range(3):
        n_i = int(round(n_bar))
        if n_i == n_used:
            break
        chain = _Chain(cost, n_i, B, Pn, P, cur, lam_ms)
        if not chain.stable:
            return _saturated(cur, shape)
        n_used = n_i
        atoms, mu = _tpot_poisson(cur, chain, n_bar, L, lam_ms)
        tpot_mean = _mixture_mean(*atoms) if atoms is not None else 0.0
        # Little: sequences decoding = lambda x L x mean TPOT (request-averaged).
        n_bar = lam_ms * L * tpot_mean if L else 0.0
        if n_bar > cur.n_cap:
            return _saturated(cur, shape)
    assert chain is not None
    if shape.classes and L:
        # Each class decodes its own number of tokens in the same traffic: its TPOT atoms from its own L (a short
        # output sees few interrupting prefills, so its TPOT spreads wider), weighted by its probability.
        parts = [(p, _tpot_poisson(cur, chain, n_bar, max(1, c.output_tokens - 1), lam_ms)[0])
                 for p, c in shape.classes if c.output_tokens > 1]
        atoms = (np.concatenate([p * a[0] for p, a in parts if a is not None]),
                 np.concatenate([a[1] for _, a in parts if a is not None]),
                 np.concatenate([a[2] for _, a in parts if a is not None]))
    tpot = _mixture_uniform(*atoms) if atoms is not None else Percentiles.constant(0.0)
    w, lo, width = chain.ttft_atoms()
    if shape.classes:
        # A class's first token comes after its own encoder call and prefill where the mean request's came
        # after the mean's: the queue ahead of it is the traffic's.
        # The wait ahead of it grows with the spread of the work each request brings (a queue's wait goes with
        # E[S^2] / E[S], the mean residual of a service): the chain's wait, run on the mean request, scaled by
        # E[S^2] / E[S]^2 of the requests' work alone.
        base = _alone_ms(cost, cfg, shape, cur.vision_ms)
        alone = np.array([_alone_ms(cost, cfg, c, cost.vision_ms(c.images, c.encoder_patches, c.vit_sequences))
                          for _, c in shape.classes])
        probs = np.array([p for p, _ in shape.classes])
        spread = float(probs @ alone**2) / float(probs @ alone) ** 2 if float(probs @ alone) > 0 else 1.0
        wait_lo = np.maximum(0.0, lo - base) * spread
        # Its own time outside the engine, where predict() adds the mean request's afterwards.
        fe_mean = shape_frontend_ms(cost.cal, shape)
        own = alone + np.array([shape_frontend_ms(cost.cal, c) - fe_mean for _, c in shape.classes])
        w = np.concatenate([p * w for p in probs])
        lo = np.concatenate([a + wait_lo for a in own])
        width = np.concatenate([width * spread for _ in probs])
    # Slots (max_num_seqs, or the KV cache at the mean context): a request holds one from admission to its
    # last token (Erlang C gave a TTFT p95 at 80% load 69% short of the simulator's; see _slot_wait).
    c = cur.n_cap
    hold = chain.ch * float(chain.d[min(1, chain.cap)]) + L * tpot.mean
    load = lam_ms * hold
    if load >= c * 0.999:
        return _saturated(cur, shape)
    p_wait, mean_w = _slot_wait(cur, lam, load, 1.0 / (1.0 - mu) ** 2)
    if not math.isfinite(mean_w):
        # Past the peak of lambda(N) (a full batch completes fewer requests/s than a smaller one) the slot
        # queue, once full, only grows.
        return _saturated(cur, shape)
    w, lo, width = _with_wait(w, lo, width, p_wait, mean_w)
    # Before all that, the wait for an API-server process (its own queue, ahead of the engine's).
    w, lo, width = api.with_wait(w, lo, width, lam_ms)
    ttft = _mixture_uniform(w, lo, width)
    e2e = _e2e(ttft, tpot, L)
    return LoadPrediction(ttft=ttft, tpot=tpot, e2e=e2e, requests_per_s=lam,
                          output_tokens_per_s=lam * shape.output_tokens, saturated=False,
                          max_requests_per_s=cur.max_rate, mean_batch=min(float(c), load))


def _with_wait(w: np.ndarray, lo: np.ndarray, width: np.ndarray, p_wait: float,
               mean_w: float) -> Atoms:
    """Atoms of a time plus an independent wait that is 0 with probability 1 - ``p_wait`` and else exponential
    with mean ``mean_w`` (a queue beyond its servers is geometric), in 16 quantile bins."""
    if p_wait <= 1e-4 or mean_w <= 1e-9 or not math.isfinite(mean_w):
        return w, lo, width
    edges = np.array([0, .1, .2, .3, .4, .5, .6, .7, .8, .9, .95, .98, .99, .995, .999, .9999])
    q = -mean_w * np.log1p(-edges)
    ew = np.concatenate([[1 - p_wait], p_wait * np.diff(edges)])
    elo = np.concatenate([[0.0], q[:-1]])
    ewid = np.concatenate([[0.0], np.diff(q)])
    return ((w[:, None] * ew[None, :]).ravel(), (lo[:, None] + elo[None, :]).ravel(),
            (width[:, None] + ewid[None, :]).ravel())


def _slot_wait(cur: _Curves, lam: float, held: float, dispersion: float) -> tuple[float, float]:
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
        p_wait = float(betainc(c, n / (dispersion - 1.0), 1.0 - 1.0 / dispersion))
    else:
        p_wait = float(1.0 - pdtr(c - 1, n))
    return p_wait, 1e3 / (rate_c - lam)


class _Chain:
    """Gated batch-service queue of prefill units at step starts (see the module docstring)."""

    def __init__(self, cost: StepCost, n: int, B: int, Pn: int, P: int, cur: _Curves, lam_ms: float) -> None:
        n = min(n, len(cur.a) - 1)
        room = max(1, B - n)
        a = float(cur.a[n])
        host = cur.vision_host_ms  # paid once by a step that encodes (one encoder call for all its images)
        V = cur.vision_ms - host
        self.a = a
        if Pn <= room:
            self.ch, self.cap, unit_tokens = 1, max(1, room // Pn), Pn
            unit_v, unit_pairs, unit_kv = V, prefill_pairs(P - Pn, Pn), float(P)
        else:
            self.ch, self.cap = math.ceil(Pn / room), 1
            unit_tokens = math.ceil(Pn / self.ch)
            # A mean chunk: the request's pairs, keys and ViT spread over its chunks.
            unit_v = V / self.ch
            unit_pairs = prefill_pairs(P - Pn, Pn) / self.ch
            unit_kv = (P - Pn) + Pn / 2 + unit_tokens / 2
        j = np.arange(self.cap + 1)
        top = len(cost.lin_ms) - 1
        tok = j * unit_tokens
        wp, wk = _window_args(cost, P, Pn)
        grow = (np.maximum(0.0, cost.lin_ms[np.minimum(n + tok, top)] - cost.lin_ms[min(n, top)])
                + np.maximum(0.0, cost.lm_ms[np.minimum(n + j, top)] - cost.lm_ms[min(n, top)]))
        # The host work: once in a step with any unit; a chunked prompt's (one unit a step) spread over its chunks
        # like its ViT, the first chunk's step carrying it (v_first below).
        host_steps = np.where(j > 0, host, 0.0) if self.ch == 1 else j * host / self.ch
        d = (a + grow + (cost._ov1 + unit_v) * j + host_steps
             + cost.prefill_attention_vec(tok, j * unit_pairs, j * unit_kv,
                                          None if wp is None else j * wp / self.ch,
                                          None if wk is None else j * wk))
        self.d = d
        # A chunked prompt's ViT runs in its first chunk's step only: that step is longer by V (1 - 1/ch), the
        # others shorter by V / ch. The chain's arrivals per step follow that mixture (same mean).
        self.v_first = (V - unit_v) + host * (1 - 1 / self.ch) if self.ch > 1 else 0.0
        self.v_rest = -unit_v - host / self.ch if self.ch > 1 else 0.0
        self.lam = lam_ms
        self._atoms: Atoms | None = None
        # The queue drains only if a full step serves more than arrives during it.
        self.stable = lam_ms * d[self.cap] * self.ch < self.cap * 0.999
        if self.stable:
            self._solve()

    def _solve(self) -> None:
        lam, d, cap, ch = self.lam, self.d, self.cap, self.ch
        rho = lam * d[cap] * ch / cap
        mean_full = lam * d[cap]
        qmax = int(cap + ch * (mean_full + 6 * math.sqrt(mean_full + 1) + 4) / max(0.05, 1 - rho))
        qmax = max(8, min(_QMAX, qmax))
        amax = max(1, min(qmax // ch + 1, int(mean_full + 8 * math.sqrt(mean_full + 1) + 8)))
        pmf = _poisson_pmf(lam * d, amax)  # (cap + 1, amax + 1)
        if ch > 1:
            # Arrivals during a chunk's step: a mixture over the first chunk's (with the ViT) and the others'.
            pmf[1] = (_poisson_pmf(np.array([lam * (d[1] + self.v_first)]), amax)[0] / ch
                      + _poisson_pmf(np.array([lam * (d[1] + self.v_rest)]), amax)[0] * (1 - 1 / ch))
        Q = np.arange(qmax + 1)
        served = np.minimum(Q, cap)
        cols = (Q - served)[:, None] + ch * np.arange(amax + 1)[None, :]
        vals = pmf[served]
        ok = cols < qmax
        rows = np.broadcast_to(Q[:, None], cols.shape)[ok]
        cols, vals = cols[ok], vals[ok]
        # Arrivals beyond amax, and states beyond qmax, are lumped into one state.
        tail = np.maximum(0.0, 1.0 - np.bincount(rows, weights=vals, minlength=qmax + 1))
        tail_col = np.minimum(qmax, Q - served + ch * (amax + 1))
        # Balance pi = pi T, as M pi = 0 with M = T^T - I; the row of state 0 is replaced by pi_0 = 1.
        # M[i, j] = T[j, i] is banded: i - j in [-cap, ch * (amax + 1)].
        kl, ku = ch * (amax + 1), cap
        ab = np.zeros((kl + ku + 1, qmax + 1))
        i_idx = np.concatenate([cols, tail_col])
        j_idx = np.concatenate([rows, Q])
        v_all = np.concatenate([vals, tail])
        _band_add(ab, ku, i_idx, j_idx, v_all)
        ab[ku, :] -= 1.0
        # Row 0 -> e_0.
        for jj in range(0, min(qmax + 1, ku + 1)):
            ab[ku - jj, jj] = 0.0
        ab[ku, 0] = 1.0
        rhs = np.zeros(qmax + 1)
        rhs[0] = 1.0
        try:
            pi = solve_banded((kl, ku), ab, rhs, check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            pi = np.full(qmax + 1, 1.0 / (qmax + 1))
        pi = np.clip(pi, 0.0, None)
        pi /= pi.sum()
        self.pi = pi
        self.Q = Q
        self.served = served
        self.rows, self.cols, self.vals, self.tail, self.tail_col = rows, cols, vals, tail, tail_col
        dq = d[served]
        self.dq = dq
        self.mean_step = float(pi @ dq)
        self.extra_per_step = float(pi @ (dq - self.a))

    def join_excess(self, n_bar: float, L: int) -> float:
        """How many more sequences a request finds decoding when its prefill completes than the time average:
        the ``lambda W`` whose prefills completed during its wait ``W`` joined, but only the ``W / d_busy``
        steps of that wait (each carrying prefills) let the others' decoding progress."""
        wait = _mixture_mean(*self.ttft_atoms())
        busy = self.served > 0
        d_busy = float(self.pi[busy] @ self.dq[busy]) / max(1e-12, float(self.pi[busy].sum())) if busy.any() else self.a
        return max(0.0, wait * (self.lam - n_bar / (L * d_busy)))

    def backlog(self) -> np.ndarray:
        """P(j requests wait) at the start of the step after one that served prefills: what a request
        leaves behind when it starts decoding."""
        src = self.pi * (self.served > 0)
        total = src.sum()
        if total <= 0:
            return np.array([1.0])
        src = src / total
        nxt = np.bincount(self.cols, weights=src[self.rows] * self.vals, minlength=len(self.pi))
        nxt += np.bincount(self.tail_col, weights=src * self.tail, minlength=len(self.pi))
        if self.ch > 1:
            nxt = np.bincount(np.arange(len(nxt)) // self.ch, weights=nxt)
        keep = np.nonzero(np.cumsum(nxt) < 1 - 1e-9)[0]
        end = int(keep[-1]) + 2 if len(keep) else 1
        return nxt[:end]

    def ttft_atoms(self) -> Atoms:
        """TTFT as a mixture of uniforms (weights, low ends, widths): the residual of the step it arrives
        in, then the steps clearing the units ahead and its own."""
        if self._atoms is None:
            self._atoms = self._ttft_atoms()
        return self._atoms

    def _ttft_atoms(self) -> Atoms:
        pi, dq, served, cap, ch, lam, d = self.pi, self.dq, self.served, self.cap, self.ch, self.lam, self.d
        keep = pi > 1e-9
        wq = (pi * dq)[keep]
        wq = wq / wq.sum()
        sq = served[keep]
        Dq = dq[keep]
        left = (self.Q - served)[keep]
        mu = lam * Dq
        amax = int(mu.max() + 8 * math.sqrt(mu.max() + 1) + 4)
        A = np.arange(amax + 1)
        p_tot = _poisson_pmf(mu, amax)  # all arrivals during its step
        p_half = _poisson_pmf(mu / 2, amax)  # those before it
        # Served in the next step (g = 1) iff the arrivals before it number <= b1.
        b1 = (cap - left) // ch - 1
        f_fit = np.where(b1[:, None] >= 0, bdtr(np.maximum(b1, 0)[:, None], A[None, :], 0.5), 0.0)
        f_fit = np.where(A[None, :] <= b1[:, None], 1.0, f_fit)
        s_last = np.minimum(cap, left[:, None] + ch * (1 + A[None, :]))
        w1 = wq[:, None] * p_tot * f_fit
        # Otherwise it waits g >= 2 full steps (g from the units ahead of it).
        pos = left[:, None] + ch * (A[None, :] + 1)
        g = -(-pos // cap)
        w2 = np.where(A[None, :] > b1[:, None], wq[:, None] * p_half, 0.0)
        gmax = int(g.max())
        consts = np.concatenate([d, np.arange(2, gmax + 1) * d[cap]])
        nc = len(consts)
        key1 = sq[:, None] * nc + s_last
        key2 = sq[:, None] * nc + np.where(g >= 2, cap + g - 1, s_last)
        keys = np.concatenate([key1.ravel(), key2.ravel()])
        w = np.bincount(keys, weights=np.concatenate([w1.ravel(), w2.ravel()]), minlength=(cap + 1) * nc)
        nz = np.nonzero(w > 1e-12)[0]
        widths = d[nz // nc]
        lows = consts[nz % nc]
        return w[nz], lows, widths


def _band_add(ab: np.ndarray, ku: int, i: np.ndarray, j: np.ndarray, v: np.ndarray) -> None:
    """ab[ku + i - j, j] += v (LAPACK band storage), duplicates summed."""
    rows = ku + i - j
    flat = rows * ab.shape[1] + j
    ab.ravel()[:] += np.bincount(flat, weights=v, minlength=ab.size)


def _poisson_pmf(mu: np.ndarray, kmax: int) -> np.ndarray:
    """P(Poisson(mu_i) = k) for k = 0..kmax, one row per mu."""
    mu = np.atleast_1d(np.asarray(mu, dtype=float))
    k = np.arange(kmax + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.exp(k[None, :] * np.log(mu)[:, None] - mu[:, None] - _LGAMMA[: kmax + 1][None, :])
    zero = mu <= 0
    if zero.any():
        out[zero] = 0.0
        out[zero, 0] = 1.0
    return out


def _gp_pmf(theta: np.ndarray, mu: float | np.ndarray, kmax: int) -> np.ndarray:
    """Generalised Poisson (Consul): total progeny of Poisson(theta) founders with Poisson(mu) offspring,
    P(k) = theta (theta + k mu)^(k-1) exp(-theta - k mu) / k!; one row per theta."""
    theta = np.maximum(np.atleast_1d(np.asarray(theta, dtype=float)), 1e-300)[:, None]
    mu = np.asarray(mu, dtype=float)
    mu = mu[:, None] if mu.ndim else mu
    k = np.arange(kmax + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.log(theta) + (k - 1) * np.log(theta + k * mu) - theta - k * mu - _LGAMMA[: kmax + 1][None, :]
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def _tpot_poisson(cur: _Curves, chain: _Chain, n_bar: float, L: int, lam_ms: float) -> tuple[Atoms | None, float]:
    """TPOT of a request as mixture atoms (None without decode steps): its L steps cost a(batch) plus the
    prefill work e of the K prefills served while it decodes (see the module docstring).

    With a(n) ~ a(n_bar + 1) + s (n - n_bar), a request's batch is the requests that arrived up to one
    lifetime T before it (each counted for the part of its life they overlap, uniform: n_bar / 2 on average;
    their count over-dispersed like K) plus those that arrive during its life (each adding s (1 - u) per step,
    u its place in the life).
    So each arrival during the life lengthens it by e + s L / 2 on average, during which more arrive: K is the
    total progeny of a branching process with Poisson(lambda (e + s L / 2)) offspring (generalised Poisson),
    founded by the backlog it leaves in the queue and the arrivals during its base life L (a - s n_bar / 2)."""
    if L <= 0:
        return None, 0.0
    n_top = len(cur.a) - 1
    n_seen = min(n_bar + 1.0, float(n_top))
    i = min(int(n_seen), max(0, n_top - 1))
    a_seen = float(cur.a[i] + (n_seen - i) * (cur.a[min(i + 1, n_top)] - cur.a[i]))
    # Slope of a(n) over the batch's spread (wave quantisation makes a(n) step at tile edges).
    h = max(4, int(2 * math.sqrt(max(n_bar, 1.0))))
    lo_n, hi_n = max(1, i - h), min(n_top, i + h)
    s = max(0.0, float(cur.a[hi_n] - cur.a[lo_n]) / (hi_n - lo_n)) if hi_n > lo_n else 0.0
    per_step = lam_ms * chain.mean_step
    e_bar = chain.extra_per_step / per_step if per_step > 0 else 0.0
    base = max(1e-6, a_seen - s * n_bar / 2)
    # It joins more sequences than the time average (those whose prefills completed while it waited).
    base += s / 2 * chain.join_excess(n_bar, L)
    # The encoder calls' host work is shared by the prompts of a step: a cluster of arrivals pays it about once,
    # so it adds to the mean cost of the prefills a life sees but not to their spread (below).
    host_bar = host_marg = cur.vision_host_ms  # one call per request when calls cannot be shared
    if cur.host_shared and per_step > 0:
        host_bar = cur.vision_host_ms * (1.0 - math.exp(-per_step)) / per_step
        # An arrival's marginal host work: host exp(-arrivals per step) (it pays only when its step had none).
        host_marg = cur.vision_host_ms * math.exp(-per_step)
    mu = min(0.95, lam_ms * (e_bar - host_bar + host_marg + s * L / 2))
    backlog = chain.backlog()
    b_mean = float(np.arange(len(backlog)) @ backlog)
    # The batch it joins: its count is over-dispersed like K (variance n_bar / (1 - mu)^2, the generalised
    # Poisson's, where M/G/inf would give n_bar), each member overlapping a uniform share of its life. A
    # larger batch slows its steps (s / 2 per member) and so lets more arrive: Gauss-Hermite nodes over the
    # count, the generalised Poisson K within each.
    sd_before = math.sqrt(n_bar) / (1 - mu)
    z, wz = _HERMITE
    top = float(chain.d[chain.cap])
    bj = np.maximum(1e-6, base + s / 2 * sd_before * z)[:, None]  # one row per node
    founders = lam_ms * L * bj[:, 0] + b_mean
    # A prefill costs more in a larger batch (the mixed step's GEMMs past their compute knee): e(n) from the
    # step-cost curves, as a straight line over the batch's spread (wave quantisation makes e(n) step), so
    # lives in a busy spell are interrupted both more often and more expensively (a simulator step trace:
    # 11.4 ms marginal against 10.0 ms average per interrupting prefill, captioning at 80% load).
    ej = np.full(len(z), e_bar)
    lo_e = max(1, int(n_bar - 2 * sd_before))
    hi_e = min(len(cur.e) - 1, int(n_bar + 2 * sd_before) + 1)
    if hi_e - lo_e >= 4:
        nn = np.arange(lo_e, hi_e + 1)
        # Least-squares line through e(n) over the spread.
        en = cur.e[nn]
        dx = nn - nn.mean()
        slope_e = float(dx @ (en - en.mean())) / float(dx @ dx)
        icpt = float(en.mean()) - slope_e * float(nn.mean())
        e_at = slope_e * n_bar + icpt
        if e_at > 0:
            ej = e_bar * np.maximum(0.2, 1 + max(0.0, slope_e) * sd_before * z / e_at)
    mus = np.minimum(0.95, lam_ms * (ej - host_bar + host_marg + s * L / 2))
    mean_k, sd_k = founders.max() / (1 - mus.max()), math.sqrt((founders.max() + 1) / (1 - mus.max()) ** 3)
    kmax = min(len(_LGAMMA) - 1, int(mean_k + 8 * sd_k + 10))
    pk = _gp_pmf(founders, mus, kmax) * wz[:, None]
    K = np.arange(kmax + 1)[None, :]
    # The mean as if each arrival paid its whole share (the count's mean with the full cost), the spread from
    # the marginal cost (the branching above): clustered arrivals share the calls already paid.
    mus_full = np.minimum(0.95, lam_ms * (ej + s * L / 2))
    k_full = (founders / (1 - mus_full))[:, None]
    k_marg = (founders / (1 - mus))[:, None]
    ej_marg = np.maximum(0.0, ej - host_bar + host_marg)[:, None]
    centre = bj + (ej[:, None] / L + s / 2) * k_full + (ej_marg / L + s / 2) * (K - k_marg)
    var = s * s * (n_bar / 12 + K / 12)
    chunk = (max(0.0, e_bar - cur.vision_ms) / L) * (1 - 1 / chain.ch)
    width = np.sqrt(12 * var + chunk * chunk)
    # No step carries more prefill than the budget: TPOT stays below a full step's time.
    lo = np.minimum(centre - width / 2, top)
    hi = np.minimum(centre + width / 2, top)
    return (pk.ravel(), lo.ravel(), (hi - lo).ravel()), mu


def _mixture_mean(w: np.ndarray, lo: np.ndarray, width: np.ndarray) -> float:
    return float(w @ (lo + width / 2)) / float(w.sum())


def _mixture_uniform(w: np.ndarray, lo: np.ndarray, width: np.ndarray) -> Percentiles:
    """Mean and percentiles of a mixture of uniforms U[lo, lo + width] with weights w (width 0: a point).

    The CDF is piecewise linear between the 2N end points: sort them, accumulate the density changes,
    and interpolate the quantiles exactly."""
    keep = w > 1e-12
    w, lo, width = w[keep], lo[keep], width[keep]
    w = w / w.sum()
    mean = float(w @ (lo + width / 2))
    point = width <= 1e-12
    dens = np.where(point, 0.0, w / np.where(point, 1.0, width))
    x = np.concatenate([lo, lo + width])
    d_slope = np.concatenate([dens, -dens])
    jump = np.concatenate([np.where(point, w, 0.0), np.zeros(len(w))])
    order = np.argsort(x, kind="stable")
    x, d_slope, jump = x[order], d_slope[order], jump[order]
    slope = np.cumsum(d_slope)  # density just right of each point
    gaps = np.diff(x)
    # CDF just left of point k: sum over earlier segments and jumps.
    left = np.concatenate([[0.0], np.cumsum(slope[:-1] * gaps + jump[:-1])])
    right = left + jump
    out = {}
    for name, q in zip(_NAMES, _LEVELS):
        k = int(np.searchsorted(right, q))  # first point whose right-CDF reaches q
        k = min(k, len(x) - 1)
        if left[k] >= q and k > 0:
            # Reached inside the segment before point k.
            s0 = slope[k - 1]
            out[name] = float(x[k - 1] + (q - right[k - 1]) / s0) if s0 > 0 else float(x[k])
        else:
            out[name] = float(x[k])
    return Percentiles(mean=mean, **out)


def _e2e(ttft: Percentiles, tpot: Percentiles, L: int) -> Percentiles:
    """TTFT + L x TPOT, the two taken independent: deviations from the mean add in quadrature."""
    mean = ttft.mean + L * tpot.mean
    vals = []
    for name in _NAMES:
        d1 = getattr(ttft, name) - ttft.mean
        d2 = L * (getattr(tpot, name) - tpot.mean)
        s = d1 + d2
        vals.append(mean + math.copysign(math.hypot(d1, d2), s) if s else mean)
    vals = [float(v) for v in np.maximum.accumulate(vals)]
    return Percentiles(mean=mean, p50=vals[0], p90=vals[1], p95=vals[2], p99=vals[3])


# --------------------------------------------------------------------------- closed loop


def _closed(cost: StepCost, cfg: ServingConfig, shape: RequestShape, cur: _Curves, C: int) -> LoadPrediction:
    P = shape.prompt_tokens
    Pn = max(1, P - shape.cached_tokens)
    L = max(0, shape.output_tokens - 1)
    B = int(cfg.max_num_batched_tokens or cost.max_tokens)
    n_run = min(C, cur.n_cap)  # clients the engine holds at once; the rest queue for a slot
    # Requests whose images fit one step's encoder budget (max(B, one request's visual tokens)).
    vis = shape.visual_tokens
    per_enc = max(1, max(B, vis) // vis) if vis else n_run
    ctx = P + 1 + L / 2
    wp, wk = _window_args(cost, P, Pn)
    d_dec = float(cur.a[min(n_run, len(cur.a) - 1)])

    def mixed(per: float, n_dec: int, tok: int) -> float:
        """A step prefilling ``per`` prompts' worth (``tok`` tokens) while ``n_dec`` clients decode."""
        rows = n_dec + math.ceil(per)
        return (cost.lin(n_dec + tok) + cost.lm_head(rows)
                + (cost.decode_attention_ms(n_dec, n_dec * ctx) if n_dec else 0.0)
                + cost.prefill_attention_ms(tok, per * prefill_pairs(P - Pn, Pn), per * P,
                                            None if wp is None else per * wp, None if wk is None else per * wk)
                + (per * (cur.vision_ms - cur.vision_host_ms) + cur.vision_host_ms if per > 0 else 0.0)
                + cost.overhead_ms(rows))

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
    ttft = _mixture_uniform(w, np.array([ttft_of[j] + wait for j in js]), np.zeros(len(js)))
    tpot = _mixture_uniform(w, np.array([tpot_of[j] for j in js]), np.zeros(len(js)))
    e2e = _e2e(ttft, tpot, L)
    thr = C / (e2e.mean * 1e-3) if e2e.mean > 0 else 0.0
    return LoadPrediction(ttft=ttft, tpot=tpot, e2e=e2e, requests_per_s=thr,
                          output_tokens_per_s=thr * shape.output_tokens, saturated=False,
                          max_requests_per_s=cur.max_rate, mean_batch=float(n_run))
