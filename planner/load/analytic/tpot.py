"""TPOT under Poisson arrivals: a request's decode steps and the prefills that interrupt them."""

from __future__ import annotations

import math

import numpy as np

from planner.load.analytic.chain import Chain
from planner.load.analytic.curves import Curves
from planner.load.analytic.mixture import (
    HERMITE,
    LGAMMA,
    Atoms,
    gp_pmf,
)


def tpot_poisson(cur: Curves, chain: Chain, n_bar: float, L: int, lam_ms: float) -> tuple[Atoms | None, float]:
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
    z, wz = HERMITE
    top = float(chain.d[chain.cap])
    bj = np.maximum(1e-6, base + s / 2 * sd_before * z)[:, None]  # one row per node
    founders = lam_ms * L * bj[:, 0] + b_mean
    # A prefill costs more in a larger batch (the mixed step's GEMMs past their compute knee): e(n) from the
    # step-cost curves, as a straight line over the batch's spread (wave quantisation makes e(n) step), so
    # lives in a busy spell are interrupted both more often and more expensively (a simulator step trace:
    # 11.4 ms marginal against 10.0 ms average per interrupting prefill, captioning at 80% load).
    ej = _prefill_cost_at_nodes(cur, e_bar, n_bar, sd_before, z)
    mus = np.minimum(0.95, lam_ms * (ej - host_bar + host_marg + s * L / 2))
    mean_k, sd_k = founders.max() / (1 - mus.max()), math.sqrt((founders.max() + 1) / (1 - mus.max()) ** 3)
    kmax = min(len(LGAMMA) - 1, int(mean_k + 8 * sd_k + 10))
    pk = gp_pmf(founders, mus, kmax) * wz[:, None]
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


def _prefill_cost_at_nodes(cur: Curves, e_bar: float, n_bar: float, sd: float, z: np.ndarray) -> np.ndarray:
    """The mean prefill cost ``e_bar`` at each Gauss-Hermite node ``z`` of a batch of mean ``n_bar`` and spread
    ``sd``: e(n) as a least-squares line over the spread (wave quantisation makes e(n) step); ``e_bar`` at every
    node when the spread is too narrow for a line."""
    lo_e = max(1, int(n_bar - 2 * sd))
    hi_e = min(len(cur.e) - 1, int(n_bar + 2 * sd) + 1)
    if hi_e - lo_e < 4:
        return np.full(len(z), e_bar)
    nn = np.arange(lo_e, hi_e + 1)
    en = cur.e[nn]
    dx = nn - nn.mean()
    slope_e = float(dx @ (en - en.mean())) / float(dx @ dx)
    icpt = float(en.mean()) - slope_e * float(nn.mean())
    e_at = slope_e * n_bar + icpt
    if e_at <= 0:
        return np.full(len(z), e_bar)
    return e_bar * np.maximum(0.2, 1 + max(0.0, slope_e) * sd * z / e_at)
