"""The TTFT queue: prefill units waiting at step starts, a gated batch-service Markov chain."""

from __future__ import annotations

import math

import numpy as np

from planner.load.analytic.curves import Curves, window_args
from planner.load.analytic.mixture import (
    Atoms,
    mixture_mean,
    poisson_pmf,
)
from planner.load.analytic.special import bdtr_half, solve_banded
from planner.perf.stepcost import StepCost, prefill_pairs

_QMAX = 400


class Chain:
    """Gated batch-service queue of prefill units at step starts (see the module docstring)."""

    def __init__(self, cost: StepCost, n: int, B: int, Pn: int, P: int, cur: Curves, lam_ms: float) -> None:
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
        wp, wk = window_args(cost, P, Pn)
        grow = (np.maximum(0.0, cost.lin_ms[np.minimum(n + tok, top)] - cost.lin_ms[min(n, top)])
                + np.maximum(0.0, cost.lm_ms[np.minimum(n + j, top)] - cost.lm_ms[min(n, top)]))
        # The host work: once in a step with any unit; a chunked prompt's (one unit a step) spread over its chunks
        # like its ViT, the first chunk's step carrying it (v_first below).
        host_steps = np.where(j > 0, host, 0.0) if self.ch == 1 else j * host / self.ch
        d = (a + grow + (cost.per_seq_overhead_ms + unit_v) * j + host_steps
             + cost.prefill_attention_ms(tok, j * unit_pairs, j * unit_kv,
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
        pmf = poisson_pmf(lam * d, amax)  # (cap + 1, amax + 1)
        if ch > 1:
            # Arrivals during a chunk's step: a mixture over the first chunk's (with the ViT) and the others'.
            pmf[1] = (poisson_pmf(np.array([lam * (d[1] + self.v_first)]), amax)[0] / ch
                      + poisson_pmf(np.array([lam * (d[1] + self.v_rest)]), amax)[0] * (1 - 1 / ch))
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
        band_add(ab, ku, i_idx, j_idx, v_all)
        ab[ku, :] -= 1.0
        # Row 0 -> e_0.
        for jj in range(0, min(qmax + 1, ku + 1)):
            ab[ku - jj, jj] = 0.0
        ab[ku, 0] = 1.0
        rhs = np.zeros(qmax + 1)
        rhs[0] = 1.0
        try:
            pi = solve_banded(kl, ku, ab, rhs)
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
        wait = mixture_mean(*self.ttft_atoms())
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
        p_tot = poisson_pmf(mu, amax)  # all arrivals during its step
        p_half = poisson_pmf(mu / 2, amax)  # those before it
        # Served in the next step (g = 1) iff the arrivals before it number <= b1.
        b1 = (cap - left) // ch - 1
        f_fit = np.where(b1[:, None] >= 0, bdtr_half(np.maximum(b1, 0)[:, None], A[None, :]), 0.0)
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


def chain_of(cost: StepCost, n: int, B: int, Pn: int, P: int, cur: Curves, lam_ms: float) -> Chain:
    """``Chain(...)``, kept in ``cost``'s memo: a chain reads of ``cur`` only a(n) and the vision times, so the
    solver's max_num_seqs choices of one configuration (other curves, same step costs) share the chains of the
    rates they try (654 chains, 211 distinct, in the default solve)."""
    n = min(n, len(cur.a) - 1)
    key = ("analytic.chain", n, B, Pn, P, float(cur.a[n]), cur.vision_ms, cur.vision_host_ms, lam_ms)
    return cost.memo(key, lambda: Chain(cost, n, B, Pn, P, cur, lam_ms))


def band_add(ab: np.ndarray, ku: int, i: np.ndarray, j: np.ndarray, v: np.ndarray) -> None:
    """ab[ku + i - j, j] += v (LAPACK band storage), duplicates summed."""
    rows = ku + i - j
    flat = rows * ab.shape[1] + j
    ab.ravel()[:] += np.bincount(flat, weights=v, minlength=ab.size)
