"""Fast step times of one engine step, derived from the per-op roofline (``planner.perf.steps``).

The simulator and the solver ask for thousands of step times; calling ``steps.decode_step`` /
``steps.prefill_step`` for each (tens of microseconds) is too slow. ``StepCost`` takes their numbers apart,
once per serving config:

* ``lin_ms[m]``: every op whose cost depends only on the ``m`` tokens of the step (projection GEMMs, MoE
  experts, norms, rotary, KV-cache writes, TP all-reduces, PP hand-offs): the non-attention, non-lm_head ops
  of ``decode_step`` at batch ``m``, evaluated on a grid and interpolated linearly. The grid holds both ends
  of every GEMM tile row (``gemm_tile_m``) so wave-quantisation jumps are kept, plus three points inside each
  tile row.
* ``lm_ms[r]``: the lm_head GEMM for ``r`` sampled rows (one per scheduled request: vLLM V1 computes logits
  at each request's last scheduled token).
* ops only ``prefill_step`` runs (e.g. attention-layout copies): elementwise, so linear in the prefill
  tokens (two evaluations).
* attention from ``planner.perf.attention`` (the one formula the roofline uses too) written over sums:
  decode attention is linear in the KV the step reads (its context sum), prefill attention in the attention
  pairs of its chunks (one pair = one query token attending one key), the chunks taken as one prompt's
  queries.

A mixed chunked-prefill step (vLLM V1 schedules decodes and prefill chunks in one forward pass) costs
``lin(decodes + prefill tokens)`` once, attention for each part, and the lm_head once for all requests. All
times are GPU ms of one step of one replica; ``overhead_ms`` is the engine's CPU time per step. Every method
takes numbers; those documented so also take numpy arrays (runs of steps, the analytic model's curves).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np

from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import PrecisionTable
from planner.perf.attention import AttentionCost, prefill_pairs
from planner.perf.memory import kv_heads_per_gpu
from planner.perf.roofline import Roofline
from planner.perf.steps import decode_step, prefill_step
from planner.perf.vision import vision_call_host_ms, vision_encode
from planner.spec.config import ResolvedConfig
from planner.spec.modeldesc import full_attention_layers

__all__ = ["StepCost", "prefill_pairs"]

T = TypeVar("T")

_NOT_LINEAR = ("attention", "attention_sliding", "cross_attention", "lm_head")
"""Ops of ``decode_step`` that do not scale with the step's tokens alone."""

_MEMO_SIZE = 512
"""Entries ``StepCost.memo`` keeps before it starts afresh (a solve asks for a few dozen shapes per config)."""


def _grid(max_m: int, tile: int) -> np.ndarray:
    """Token counts where ``decode_step`` is evaluated: dense below one tile, then both ends and the middle of
    every tile row (within a row the GEMM tile count is fixed, so the time is the larger of a constant and a
    line)."""
    pts = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 80, 96, 112}
    k = 0
    while k * tile < max_m:
        lo = k * tile
        for off in (1, tile // 2, tile):
            pts.add(lo + max(1, off))
        k += 1
    return np.array(sorted(p for p in pts if p <= max_m) + ([max_m] if max_m not in pts else []), dtype=float)


def _token_tables(rf: Roofline, cfg: ResolvedConfig, precisions: PrecisionTable,
                  max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(lin_ms, lm_ms) for 0..max_tokens tokens, read off ``decode_step`` on the grid."""
    grid = _grid(max_tokens, int(rf.cal.value("gemm_tile_m")))
    # One decode_step over the whole grid (arrays, entry by entry the scalar evaluation's arithmetic); the sums
    # run over the ops in the same order as a per-point loop would.
    ops = decode_step(rf, cfg, precisions, grid.astype(np.int64), 1).ops
    lin = sum((op.total_s for op in ops if op.name not in _NOT_LINEAR), np.zeros(len(grid))) * 1e3
    lm = sum((op.total_s for op in ops if op.name == "lm_head"), np.zeros(len(grid))) * 1e3
    m_all = np.arange(max_tokens + 1, dtype=float)
    lin_all = np.interp(m_all, grid, lin)
    lm_all = np.interp(m_all, grid, lm)
    lin_all[0] = lm_all[0] = 0.0
    return lin_all, lm_all


def _prefill_only_line(rf: Roofline, cfg: ResolvedConfig, precisions: PrecisionTable) -> tuple[float, float]:
    """(fixed, per token) ms of the ops only prefill steps run (e.g. attention-layout copies): elementwise in
    the prefill tokens, so a line read off two ``prefill_step`` evaluations."""
    names = {op.name for op in decode_step(rf, cfg, precisions, 1, 1).ops}

    def prefill_only(m: int) -> float:
        ops = prefill_step(rf, cfg, precisions, m).ops
        return sum(op.total_s for op in ops if op.name not in names and op.name not in _NOT_LINEAR) * 1e3

    p1, p2 = prefill_only(1), prefill_only(1025)
    per_token = (p2 - p1) / 1024
    return p1 - per_token, per_token


class StepCost:
    """Step times of one ``ResolvedConfig`` under one calibration."""

    def __init__(self, cfg: ResolvedConfig, cal: Calibration, precisions: PrecisionTable) -> None:
        self.cfg = cfg
        self.cal = cal
        self.precisions = precisions
        rf = Roofline(cfg.gpu, cal)
        self.rf = rf
        self.max_tokens = int(max(cfg.max_num_batched_tokens, cfg.max_num_seqs))
        """The largest step the tables hold (the engine's token budget, or its sequence cap if larger)."""
        self.max_seqs = int(cfg.max_num_seqs)
        self.lin_ms, self.lm_ms = _token_tables(rf, cfg, precisions, self.max_tokens)
        """Token-proportional ops and the lm_head, indexed by tokens (rows); numpy arrays."""
        self._lin = self.lin_ms.tolist()  # the simulator's scalar lookups: a list indexes 5x faster
        self._lm = self.lm_ms.tolist()
        self._pf_fixed_ms, self._pf_tok_ms = _prefill_only_line(rf, cfg, precisions)
        d = cfg.model.decoder
        self.full_layers = full_attention_layers(d)
        self.sliding_layers = d.num_sliding_window_layers
        """Layers of sliding-window attention (0: none), each seeing the last ``window`` keys."""
        self.window = d.sliding_window or 0
        self.cross_layers = len(d.cross_attention_layers)
        self.cross_states = 0
        """Encoder states each sequence's cross-attention layers read (Llama 3.2 Vision; 0: none)."""
        if self.cross_layers and cfg.model.visual_tokens is not None:
            from planner.catalog.vision_tokens import max_image_tokens

            item = max_image_tokens(cfg.model.visual_tokens, cfg.mm_processor_options)
            self.cross_states = item.cross_attention_tokens
        self.attention: AttentionCost = rf.attention(d.num_attention_heads // cfg.tp,
                                                     kv_heads_per_gpu(d.num_kv_heads, cfg.tp), d.head_dim,
                                                     cfg.kv_bytes_per_element)
        """One layer's attention (``planner.perf.attention``), the formula every step time below uses."""
        sync = not cfg.async_scheduling
        self.step_overhead_ms = cal.value("engine_step_overhead_ms") + sync * cal.value("sync_step_overhead_ms")
        """Engine CPU time of a step not hidden behind the GPU, fixed part (more where the engine schedules
        synchronously: its scheduling and output processing then wait for the GPU and the GPU for them)."""
        self.per_seq_overhead_ms = (cal.value("engine_per_seq_overhead_ms")
                                    + sync * cal.value("sync_per_seq_overhead_ms"))
        """Engine CPU time of a step not hidden behind the GPU, per scheduled sequence."""
        self.vision_host_ms = vision_call_host_ms(cal, 1)
        """The engine's host work around one encoder call, however many images it encodes."""
        if self.full_layers and not self.sliding_layers and not self.cross_states:
            self.decode_attention_ms = self._full_decode_attention_ms  # type: ignore[method-assign]
        self.decode_attention_linear = not self.sliding_layers and \
            self.attention.decode_flop_ms <= self.attention.decode_kv_ms
        """Whether decode attention is linear in the context: no sliding window caps it, and the KV read (which
        also pays a fixed part) always outlasts the FLOPs, so the roofline's max never switches sides."""
        self._vision = lru_cache(maxsize=4096)(self._vision_uncached)
        self._memo: dict[Hashable, Any] = {}
        # decode_base_ms, looked up by the simulator (numpy does the list's scalar arithmetic entry by entry)
        self._decode_base = (self.lin_ms + self.lm_ms + self.step_overhead_ms
                             + self.per_seq_overhead_ms * np.arange(self.max_tokens + 1)).tolist()

    # ------------------------------------------------------------------ attention

    def decode_attention_ms(self, num_decode: Any, context_sum: Any, window_sum: Any = None) -> Any:
        """Attention of ``num_decode`` decoding sequences (> 0) whose contexts sum to ``context_sum``; the
        sliding-window layers read ``window_sum`` keys (default: each sequence's context capped at the
        window). Numbers or arrays."""
        if not isinstance(num_decode, np.ndarray) and num_decode <= 0:
            return 0.0
        return self.layers_decode_attention_ms(self.attention, num_decode, context_sum, window_sum)

    def layers_decode_attention_ms(self, att: AttentionCost, num_decode: Any, context_sum: Any,
                                   window_sum: Any = None) -> Any:
        """``decode_attention_ms`` with ``att`` as one layer's attention (a speculative verify step's differs)."""
        t: Any = 0.0
        if self.full_layers:
            t += self.full_layers * att.decode_ms(num_decode, context_sum)
        if self.sliding_layers:
            if window_sum is None:
                window_sum = (np.minimum(context_sum, num_decode * self.window)
                              if isinstance(context_sum, np.ndarray) else min(context_sum, num_decode * self.window))
            t += self.sliding_layers * att.decode_ms(num_decode, window_sum)
        if self.cross_states:
            t += self.cross_layers * att.decode_ms(num_decode, num_decode * self.cross_states)
        return t

    def _full_decode_attention_ms(self, num_decode: Any, context_sum: Any, window_sum: Any = None) -> Any:
        """``decode_attention_ms`` of a decoder with full-attention layers only (most): one term, so the
        simulator's loop pays one call less (0.0 + x is x: the same figures)."""
        if not isinstance(num_decode, np.ndarray) and num_decode <= 0:
            return 0.0
        return self.full_layers * self.attention.decode_ms(num_decode, context_sum)

    def attention_launch_ms(self) -> float:
        """Fixed (kernel-latency) part of one step's prefill attention and prefill-only ops."""
        return (self.full_layers + self.sliding_layers) * self.attention.latency_ms + self._pf_fixed_ms

    def prefill_attention_ms(self, tokens: Any, pairs: Any, kv_tokens: Any, window_pairs: Any = None,
                             window_kv: Any = None) -> Any:
        """Attention (and prefill-only ops) of prefill chunks: ``tokens`` queries, ``pairs`` causal (query, key)
        pairs, ``kv_tokens`` keys read; sliding-window layers use the ``window_*`` figures. Numbers or arrays
        (entries with no tokens cost 0)."""
        vector = isinstance(tokens, np.ndarray)
        if not vector and tokens <= 0:
            return 0.0
        q = np.maximum(tokens, 1.0) if vector else tokens
        att = self.attention
        t: Any = 0.0
        if self.full_layers:
            t += self.full_layers * att.prefill_ms(q, pairs, kv_tokens)
        if self.sliding_layers:
            wp = pairs if window_pairs is None else window_pairs
            wk = kv_tokens if window_kv is None else window_kv
            t += self.sliding_layers * att.prefill_ms(q, wp, wk)
        t = t + self._pf_fixed_ms + self._pf_tok_ms * tokens
        return np.where(tokens > 0, t, 0.0) if vector else t

    # ------------------------------------------------------------------ token-proportional ops

    def lin(self, tokens: int) -> float:
        """Token-proportional ops (GEMMs, norms, all-reduces) of a step of ``tokens`` tokens."""
        if tokens <= self.max_tokens:
            return self._lin[tokens]
        # Beyond the engine's budget (only reached by direct calls): extrapolate the last tile row.
        slope = (self._lin[-1] - self._lin[-65]) / 64
        return self._lin[-1] + slope * (tokens - self.max_tokens)

    def lm_head(self, rows: int) -> float:
        """The lm_head GEMM for ``rows`` sampled rows."""
        if rows <= self.max_tokens:
            return self._lm[rows]
        slope = (self._lm[-1] - self._lm[-65]) / 64
        return self._lm[-1] + slope * (rows - self.max_tokens)

    def overhead_ms(self, running: Any) -> Any:
        """Engine CPU time of one step with ``running`` scheduled sequences (number or array)."""
        return self.step_overhead_ms + self.per_seq_overhead_ms * running

    def decode_base_ms(self, num_decode: Any) -> Any:
        """A decode-only step of ``num_decode`` sequences less its attention: GEMMs and other token-proportional
        ops, the lm_head and the engine overhead. Number (<= ``max_tokens``) or array (clipped to it)."""
        if isinstance(num_decode, np.ndarray):
            nn = np.minimum(num_decode, len(self.lin_ms) - 1)
            return self.lin_ms[nn] + self.lm_ms[nn] + self.overhead_ms(0) + self.per_seq_overhead_ms * num_decode
        return self._decode_base[num_decode]

    def decode_extra_ms(self, num_decode: int) -> float:
        """What a mixed step's decodes cost beyond the ``lin`` and ``lm_head`` rows they add: 0 here; a speculative
        step's verify and draft work (``planner.perf.speculative``)."""
        return 0.0

    def decode_steps_ms(self, num_decode: int, context_sums: Any) -> Any:
        """Whole decode-only steps of ``num_decode`` sequences (> 0) whose contexts sum to ``context_sums``
        (a number, or an array: consecutive steps), engine overhead included."""
        return self.decode_base_ms(num_decode) + self.decode_attention_ms(num_decode, context_sums)

    # ------------------------------------------------------------------ steps

    def mixed_ms(self, num_decode: int, context_sum: float, window_sum: float | None, rows: int,
                 prefill_tokens: int, pairs: float, kv_tokens: float, window_pairs: float | None,
                 window_kv: float | None) -> float:
        """GPU ms of one mixed step, every figure given (the simulator's step): ``num_decode`` sequences
        decoding one token each over ``context_sum`` keys, and prefill chunks totalling ``prefill_tokens``
        queries, ``pairs`` attention pairs and ``kv_tokens`` keys; ``rows`` lm_head rows."""
        m = num_decode + prefill_tokens
        t = (self._lin[m] if m <= self.max_tokens else self.lin(m)) + self.lm_head(rows)
        if num_decode:
            t += self.decode_attention_ms(num_decode, context_sum, window_sum)
        if prefill_tokens:
            t += self.prefill_attention_ms(prefill_tokens, pairs, kv_tokens, window_pairs, window_kv)
        return t

    def step_ms(self, num_decode: int, decode_context_sum: float, prefill_tokens: int = 0,
                prefill_attn_pairs: float = 0.0, *, prefill_kv_tokens: float | None = None,
                prefill_seqs: int | None = None, decode_window_sum: float | None = None,
                prefill_window_pairs: float | None = None, prefill_window_kv: float | None = None) -> float:
        """GPU ms of one mixed step (``mixed_ms``) with defaults: ``prefill_seqs`` (default: 1 if any prefill)
        counts the chunks (lm_head rows); ``prefill_kv_tokens`` (default: ``prefill_tokens``) the keys the
        chunks read."""
        if num_decode + prefill_tokens <= 0:
            return 0.0
        seqs = (1 if prefill_tokens else 0) if prefill_seqs is None else prefill_seqs
        kv = prefill_tokens if prefill_kv_tokens is None else prefill_kv_tokens
        return self.mixed_ms(num_decode, decode_context_sum, decode_window_sum, num_decode + seqs, prefill_tokens,
                             prefill_attn_pairs, kv, prefill_window_pairs, prefill_window_kv)

    def decode_ms(self, num_decode: int, context: float) -> float:
        """A decode-only step of ``num_decode`` sequences each holding ``context`` tokens."""
        w = min(context, self.window) * num_decode if self.sliding_layers else None
        return self.step_ms(num_decode, num_decode * context, decode_window_sum=w)

    def prefill_ms(self, prompt_tokens: int, cached_tokens: int = 0) -> float:
        """One request's prompt prefilled alone in one step (``steps.prefill_step``'s case)."""
        m = max(1, prompt_tokens - cached_tokens)
        pairs = prefill_pairs(prompt_tokens - m, m)
        win = min(prompt_tokens, self.window) if self.sliding_layers else None
        return self.step_ms(0, 0.0, m, pairs, prefill_kv_tokens=prompt_tokens,
                            prefill_window_pairs=None if win is None else m * win, prefill_window_kv=win)

    def vision_ms(self, images: int, patches: int, sequences: int | None = None) -> float:
        """Engine ms of one encoder call over ``images`` images totalling ``patches`` encoder patches in
        ``sequences`` attention sequences (tiles; default one per image): the ViT + projector GPU work and the
        call's host work (``vision.vision_call_host_ms``)."""
        if images <= 0 or patches <= 0:
            return 0.0
        return self._vision(int(images), int(patches), int(sequences or images)) + vision_call_host_ms(self.cal, images)

    def _vision_uncached(self, images: int, patches: int, sequences: int) -> float:
        return vision_encode(self.rf, self.cfg, self.precisions, patches, images, sequences=sequences).time_ms

    # ------------------------------------------------------------------ memo

    def memo(self, key: Hashable, build: Callable[[], T]) -> T:
        """``build()``, kept per ``key`` for the life of this StepCost: tables derived from these step times
        (the analytic model's per-shape curves) live as long as the times they were computed from, and no
        longer. Bounded: past ``_MEMO_SIZE`` entries it starts afresh."""
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) > _MEMO_SIZE:
                self._memo.clear()
            hit = self._memo[key] = build()
        return hit  # type: ignore[no-any-return]
