"""Per-shape curves of one replica: the decode step a(n), the prefill work e(n) and the rate lambda(n)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.perf.lone import mean_vision_ms
from planner.perf.stepcost import StepCost, prefill_pairs
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape


@dataclass(frozen=True)
class Curves:
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


def curves(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, kv_capacity_tokens: int) -> Curves:
    """a(n), e(n) and lambda(n) for n = 0..n_cap, kept in ``cost``'s memo per shape (the solver asks for the
    same shape at many rates)."""
    key = ("analytic.curves", cfg.max_num_seqs, cfg.max_num_batched_tokens, shape.prompt_tokens,
           shape.cached_tokens, shape.output_tokens, shape.images, shape.encoder_patches, shape.vit_sequences,
           kv_capacity_tokens, shape.classes)
    return cost.memo(key, lambda: _build_curves(cost, cfg, shape, kv_capacity_tokens))


def _build_curves(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape, kv_capacity_tokens: int) -> Curves:
    P = shape.prompt_tokens
    Pn = max(1, P - shape.cached_tokens)
    L = max(0, shape.output_tokens - 1)
    B = cfg.max_num_batched_tokens
    V = mean_vision_ms(cost, shape)
    ctx = P + 1 + L / 2
    n_cap = slots(cfg, shape, kv_capacity_tokens)
    n = np.arange(0, n_cap + 1)
    top = len(cost.lin_ms) - 1
    lin, lm = cost.lin_ms, cost.lm_ms
    nn = np.minimum(n, top)
    a = cost.decode_base_ms(n)
    a[1:] += cost.decode_attention_ms(n[1:], n[1:] * ctx)
    room = np.maximum(1, B - n)
    ch = np.ceil(Pn / room)
    # Prefills share steps: n decodes lasting L steps each mean n / L arrivals per step, whose prompts go
    # through the GEMMs together (a step of many short prompts is compute-bound even when one alone is not).
    k = np.maximum(1.0, n / L) if L > 0 else np.maximum(1.0, room / Pn)
    tok = np.minimum(k * Pn, room).astype(int)
    per_req = Pn / np.maximum(tok, 1)  # this request's share of those tokens
    wp, wk = window_args(cost, P, Pn)
    pf = cost.prefill_attention_ms(Pn, prefill_pairs(P - Pn, Pn), P, wp, wk)
    # (Wave quantisation can make a GEMM of a few more rows no slower, or even faster: never below zero.)
    grow = (np.maximum(0.0, lin[np.minimum(n + tok, top)] - lin[nn]) * per_req
            + np.maximum(0.0, lm[np.minimum(n + np.ceil(k).astype(int), top)] - lm[nn]) / np.ceil(k))
    host = cost.vision_host_ms * image_share(shape) if V > 0 else 0.0
    # n decoding means n / L arrivals a step (Little): the prompts arriving in one step share an encoder call,
    # when the encoder budget (max(B, one request's visual tokens)) holds more than one request's images.
    vis = shape.visual_tokens
    shares_calls = bool(vis) and max(B, vis) // vis > 1
    mu = n / L if L > 0 and shares_calls else np.zeros(len(n))
    share = np.where(mu > 1e-9, -np.expm1(-mu) / np.maximum(mu, 1e-9), 1.0)
    e = ch * cost.per_seq_overhead_ms + grow + pf + (V - host * (1.0 - share)) + (ch - 1) * cost.attention_launch_ms()
    if L > 0:
        rate = np.zeros(len(n))
        rate[1:] = n[1:] / (L * a[1:] + n[1:] * e[1:]) * 1e3
    else:
        # One output token: requests never decode; the prefill server alone limits them.
        rate = np.full(len(n), 1e3 / float(e[0]))
    i_max = int(np.argmax(rate))
    return Curves(n=n, a=a, e=e, rate=rate, n_cap=n_cap, max_rate=float(rate[i_max]), n_at_max=i_max, vision_ms=V,
                  vision_host_ms=host, host_shared=shares_calls)


def slots(cfg: ResolvedConfig, shape: RequestShape, kv_capacity_tokens: int) -> int:
    """The most sequences the replica holds at once (``Curves.n_cap``): ``max_num_seqs``, the token budget, or
    the KV cache at the mean context. The curves for n <= n_cap do not depend on n_cap, so the configuration with
    the most slots has the highest saturation throughput of those that differ only in ``max_num_seqs``."""
    ctx = shape.prompt_tokens + 1 + max(0, shape.output_tokens - 1) / 2
    # KV per decoding sequence at the mean context (prefix hits shared) plus half a block of rounding.
    kv_seq = max(1.0, ctx - shape.cached_tokens + 8)
    return max(1, min(cfg.max_num_seqs, cfg.max_num_batched_tokens - 1, int(kv_capacity_tokens // kv_seq)))


def image_share(shape: RequestShape) -> float:
    """The fraction of requests that carry images."""
    if not shape.classes:
        return 1.0 if shape.images else 0.0
    return sum(p for p, c in shape.classes if c.images)


def window_args(cost: StepCost, P: int, Pn: int) -> tuple[float | None, float | None]:
    if not cost.sliding_layers:
        return None, None
    w = min(P, cost.window)
    return Pn * w, w
