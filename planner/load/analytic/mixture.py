"""Distributions as data: mixtures of uniforms ("atoms") and the count laws the queue models draw on.

The analytic model carries a latency as weights, low ends and widths of uniform pieces, so that waits, residuals
and queues compose by concatenation and its percentiles come out exactly (a piecewise-linear CDF).
"""

from __future__ import annotations

import math

import numpy as np

from planner.core.stats import Percentiles
from planner.load.analytic.special import lgamma_table

LEVELS = (0.5, 0.9, 0.95, 0.99)
NAMES = ("p50", "p90", "p95", "p99")
LGAMMA = lgamma_table(20001)
_HERMITE_Z, _HERMITE_W = np.polynomial.hermite_e.hermegauss(7)
HERMITE = (_HERMITE_Z, _HERMITE_W / math.sqrt(2 * math.pi))
"""Nodes and weights of a standard normal (7-point Gauss-Hermite)."""
Atoms = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A mixture of uniforms: weights, low ends, widths."""


def poisson_pmf(mu: np.ndarray, kmax: int) -> np.ndarray:
    """P(Poisson(mu_i) = k) for k = 0..kmax, one row per mu."""
    mu = np.atleast_1d(np.asarray(mu, dtype=float))
    k = np.arange(kmax + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.exp(k[None, :] * np.log(mu)[:, None] - mu[:, None] - LGAMMA[: kmax + 1][None, :])
    zero = mu <= 0
    if zero.any():
        out[zero] = 0.0
        out[zero, 0] = 1.0
    return out


def gp_pmf(theta: np.ndarray, mu: float | np.ndarray, kmax: int) -> np.ndarray:
    """Generalised Poisson (Consul): total progeny of Poisson(theta) founders with Poisson(mu) offspring,
    P(k) = theta (theta + k mu)^(k-1) exp(-theta - k mu) / k!; one row per theta."""
    theta = np.maximum(np.atleast_1d(np.asarray(theta, dtype=float)), 1e-300)[:, None]
    mu = np.asarray(mu, dtype=float)
    mu = mu[:, None] if mu.ndim else mu
    k = np.arange(kmax + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.log(theta) + (k - 1) * np.log(theta + k * mu) - theta - k * mu - LGAMMA[: kmax + 1][None, :]
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def mixture_mean(w: np.ndarray, lo: np.ndarray, width: np.ndarray) -> float:
    return float(w @ (lo + width / 2)) / float(w.sum())


def mixture_uniform(w: np.ndarray, lo: np.ndarray, width: np.ndarray) -> Percentiles:
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
    for name, q in zip(NAMES, LEVELS):
        k = int(np.searchsorted(right, q))  # first point whose right-CDF reaches q
        k = min(k, len(x) - 1)
        if left[k] >= q and k > 0:
            # Reached inside the segment before point k.
            s0 = slope[k - 1]
            out[name] = float(x[k - 1] + (q - right[k - 1]) / s0) if s0 > 0 else float(x[k])
        else:
            out[name] = float(x[k])
    return Percentiles(mean=mean, **out)


def combine_e2e(ttft: Percentiles, tpot: Percentiles, L: int) -> Percentiles:
    """TTFT + L x TPOT, the two taken independent: deviations from the mean add in quadrature."""
    mean = ttft.mean + L * tpot.mean
    vals = []
    for name in NAMES:
        d1 = getattr(ttft, name) - ttft.mean
        d2 = L * (getattr(tpot, name) - tpot.mean)
        s = d1 + d2
        vals.append(mean + math.copysign(math.hypot(d1, d2), s) if s else mean)
    vals = [float(v) for v in np.maximum.accumulate(vals)]
    return Percentiles(mean=mean, p50=vals[0], p90=vals[1], p95=vals[2], p99=vals[3])


def with_wait(w: np.ndarray, lo: np.ndarray, width: np.ndarray, p_wait: float,
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
