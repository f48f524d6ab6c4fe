"""Speculative decoding's step times: a draft proposes ``k`` tokens per sequence, the target verifies them in one
forward pass of ``k + 1`` query tokens per sequence and keeps the accepted ones plus one of its own.

**Tokens per step.** With a chain draft whose tokens are each accepted with probability ``a`` given the ones
before (``acceptance_rate``), a verify step yields on average (Leviathan et al. 2023, arXiv:2211.17192, eq. 1)::

    E(k, a) = 1 + a + a^2 + ... + a^k = (1 - a^(k+1)) / (1 - a)

A method that drafts only where a lookup matches (n-gram) carries a draft on a share ``r`` of a sequence's steps
(``draft_rate``; 1 for EAGLE and MTP): a step then yields ``E = 1 + r (a + ... + a^k)`` and verifies
``1 + r k`` tokens per sequence on average.

**Cost of a step** of ``n`` decoding sequences over ``C`` context tokens in all (the parts of ``StepCost``)::

    verify(n) = lin(n q) + lm_head(n q) + attention of n q queries reading the n contexts once, q = 1 + r k
    draft(n)  = k x [ lin(n) x draft_layers / layers + lm_head(n) x draft_vocab / vocab
                      + draft_layers x attention(n, C) ]                       (EAGLE heads, MTP layers)
    draft(n)  = 0                                                              (n-gram: a CPU lookup)

and the engine's CPU overhead once (more where the method turns vLLM's asynchronous scheduler off, as n-gram does:
``planner.perf.stepcost``'s sync constants, and both load models then schedule synchronously). ``lin`` and
``lm_head`` at a fractional ``n q`` are interpolated between the integers around it. At a small batch the step is
memory-bound: ``n q`` tokens cost little more than ``n``, so each of the ``E`` tokens is cheaper than a plain step
(speculation helps, unless the synchronous scheduling costs more than it gains). Near saturation the GEMMs are
compute-bound, ``lin(n q)`` is ~``q lin(n)``, and the ``q - E`` rejected tokens per sequence are paid for in full
(speculation hurts).

**How the load models see it.** Both the analytic model and the simulator count decode steps of one token per
sequence. ``SpeculativeStepCost`` keeps that form: a decode-only "step" is one token's share of a verify step,
``(verify + draft + overhead) / E``, so TPOT, batch and throughput come out in expectation. A step that also
runs prefill chunks costs that share for its decodes plus the chunks' increment as in a plain step (the
increment taken at the plain batch ``n``: ``lin(n + p) - lin(n)``), the engine overhead of the decodes shared by E
tokens too, that of the chunks in full. The draft's weights and its layers' KV cache are charged in
``planner.perf.memory``. Not modelled: the spread of accepted tokens between steps (TPOT percentiles are those of
the mean rate), the drafter's CPU work and the rejection sampler, EAGLE-3's 3h -> h input projection, the first
draft pass running over the tokens just accepted rather than one per sequence, and the scheduler counting the
``n k`` draft tokens against ``max_num_batched_tokens``. An MTP method without a listed draft would cost no draft
layer (no catalog model ships MTP layers, so none is planned).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import PrecisionTable
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig, Speculation


def tokens_per_step(num_speculative_tokens: int, acceptance_rate: float, draft_rate: float = 1.0) -> float:
    """Expected tokens a sequence gains per verify step: the accepted draft tokens (on the share ``draft_rate`` of
    steps that carry a draft) and the target's own."""
    k, a = num_speculative_tokens, acceptance_rate
    if not 0 <= a < 1:
        raise ValueError(f"acceptance rate must be in [0, 1) (got {a})")
    if not 0 <= draft_rate <= 1:
        raise ValueError(f"draft rate must be in [0, 1] (got {draft_rate})")
    drafted = (1.0 - a ** (k + 1)) / (1.0 - a)
    return drafted if draft_rate == 1.0 else 1.0 + draft_rate * (drafted - 1.0)


def make_step_cost(cfg: ResolvedConfig, cal: Calibration, precisions: PrecisionTable) -> StepCost:
    """The step times of ``cfg``: speculative where it speculates, else the plain ``StepCost``."""
    if cfg.speculative is None:
        return StepCost(cfg, cal, precisions)
    return SpeculativeStepCost(cfg, cal, precisions)


class SpeculativeStepCost(StepCost):
    """``StepCost`` of a config that speculates: decode "steps" are one token's share of a verify step."""

    def __init__(self, cfg: ResolvedConfig, cal: Calibration, precisions: PrecisionTable) -> None:
        super().__init__(cfg, cal, precisions)
        spec = cfg.speculative
        assert spec is not None, "SpeculativeStepCost of a config without speculation"
        self.spec: Speculation = spec
        k = spec.num_speculative_tokens
        self.k = k
        self.tokens_per_step = tokens_per_step(k, spec.acceptance_rate, spec.draft_rate)
        """E: tokens a sequence gains per verify step."""
        q = 1.0 + spec.draft_rate * k
        self.verify_tokens_per_seq = q
        """Tokens a verify step runs per sequence: its own and the draft tokens of the steps that carry one."""
        d = cfg.model.decoder
        self.draft_layer_share = spec.draft_layers / d.num_layers
        """The draft's GEMMs per pass as a share of the target's (its layers are target-sized)."""
        self.draft_vocab_share = (spec.draft_vocab_size or d.vocab_size) / d.vocab_size if spec.draft_layers else 0.0
        verify = copy.copy(self.attention)
        verify.decode_flop_ms *= q  # q queries per sequence, the KV read once
        verify.decode_q_ms *= q
        self.verify_attention = verify
        """One layer's attention in a verify step (``planner.perf.attention`` with q queries per sequence)."""
        e = self.tokens_per_step
        rows = range(self.max_tokens + 1)
        self.draft_gemm = [k * (self._lin[n] * self.draft_layer_share + self._lm[n] * self.draft_vocab_share)
                           for n in rows]
        """GPU ms of the k draft passes' GEMMs and lm_head at n sequences (0 for n-gram)."""
        self.verify_gemm = [_at(self.lin, n * q) + _at(self.lm_head, n * q) for n in rows]
        """GPU ms of the verify pass's GEMMs and lm_head at n sequences."""
        share = [(self.verify_gemm[n] + self.draft_gemm[n]) / e for n in rows]
        # A mixed step's callers add the engine overhead of all its rows in full; its decodes' part of it is
        # shared by E tokens as in a decode-only step, so the extra takes the rest back.
        self._extra = [share[n] - self._lin[n] - self._lm[n]
                       - (1.0 - 1.0 / e) * (self.step_overhead_ms + self.per_seq_overhead_ms * n) for n in rows]
        self._decode_base = [share[n] + (self.step_overhead_ms + self.per_seq_overhead_ms * n) / e for n in rows]
        self._base_arr = np.array(self._decode_base)
        self.decode_attention_ms = self._spec_attention_ms  # type: ignore[method-assign]
        plain = self.attention
        self.decode_attention_linear = (not self.sliding_layers and verify.decode_flop_ms <= verify.decode_kv_ms
                                        and plain.decode_flop_ms <= plain.decode_kv_ms)

    def decode_base_ms(self, num_decode: Any) -> Any:
        """One token's share of a verify step of ``num_decode`` sequences less its attention: verify and draft
        GEMMs, lm_heads and the engine overhead over E."""
        if isinstance(num_decode, np.ndarray):
            return self._base_arr[np.minimum(num_decode, len(self._base_arr) - 1).astype(int)]
        return self._decode_base[num_decode]

    def _spec_attention_ms(self, num_decode: Any, context_sum: Any, window_sum: Any = None) -> Any:
        """One token's share of a verify step's attention (q queries per sequence) and of the draft's (its
        layers over the same contexts, k passes)."""
        if not isinstance(num_decode, np.ndarray) and num_decode <= 0:
            return 0.0
        verify = self.layers_decode_attention_ms(self.verify_attention, num_decode, context_sum, window_sum)
        draft = (self.k * self.spec.draft_layers * self.attention.decode_ms(num_decode, context_sum)
                 if self.spec.draft_layers else 0.0)
        return (verify + draft) / self.tokens_per_step

    def decode_extra_ms(self, num_decode: int) -> float:
        """What a mixed step's ``num_decode`` decodes cost beyond ``lin(n)`` + ``lm_head(n)`` and the engine overhead
        of a plain step: their token share of the verify and draft GEMMs and of the overhead, less the plain ones."""
        if num_decode <= 0:
            return 0.0
        return self._extra[num_decode] if num_decode <= self.max_tokens else 0.0

    def mixed_ms(self, num_decode: int, context_sum: float, window_sum: float | None, rows: int,
                 prefill_tokens: int, pairs: float, kv_tokens: float, window_pairs: float | None,
                 window_kv: float | None) -> float:
        """A mixed step (``StepCost.mixed_ms``) whose decodes verify drafts: their share as in a decode-only step,
        the prefill chunks' increment as in a plain one."""
        return super().mixed_ms(num_decode, context_sum, window_sum, rows, prefill_tokens, pairs, kv_tokens,
                                window_pairs, window_kv) + self.decode_extra_ms(num_decode)

    def verify_step_ms(self, num_decode: int, context: float) -> float:
        """A whole speculative step (draft + verify + engine overhead) of ``num_decode`` sequences each holding
        ``context`` tokens: the decode-only step the load models run (one token's share), times E (for the report
        and the tests)."""
        return float(self.decode_steps_ms(num_decode, num_decode * context)) * self.tokens_per_step


def _at(table: Any, tokens: float) -> float:
    """``table`` (``lin`` or ``lm_head``, defined at whole tokens) at a fractional token count, linearly between
    the two whole counts around it (exact at whole counts)."""
    lo = int(tokens)
    frac = tokens - lo
    return float(table(lo)) if frac < 1e-9 else float((1.0 - frac) * table(lo) + frac * table(lo + 1))
