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

from planner.load.analytic.predict import predict
from planner.load.analytic.prediction import MAX_LOAD, LoadPrediction, build_step_cost, meets_slos

__all__ = ["MAX_LOAD", "LoadPrediction", "build_step_cost", "meets_slos", "predict"]
