"""Fast step times of one engine step, derived from the per-op roofline in ``planner.perf.speed``.

The simulator and the solver ask for thousands of step times; calling
``speed.decode_step`` / ``speed.prefill_step`` for each (tens of microseconds)
is too slow. ``StepCost`` takes ``speed``'s own numbers apart, once per
serving config:

* ``lin_ms[m]``: every op whose cost depends only on the ``m`` tokens of the
  step (projection GEMMs, MoE experts, norms, rotary, KV-cache writes, TP
  all-reduces, PP hand-offs): the non-attention, non-lm_head ops of
  ``speed.decode_step`` at batch ``m``, evaluated on a grid and interpolated
  linearly. The grid holds both ends of every GEMM tile row
  (``gemm_tile_m``) so wave-quantisation jumps are kept, plus three points
  inside each tile row.
* ``lm_ms[r]``: the lm_head GEMM for ``r`` sampled rows (one per scheduled
  request: vLLM V1 computes logits at each request's last scheduled token).
* ops only ``speed.prefill_step`` runs (e.g. attention-layout copies):
  elementwise, so linear in the prefill tokens (two evaluations).
* attention with ``Roofline.attention_decode`` / ``attention_prefill``'s
  formulas written over sums: decode attention is linear in the KV bytes the
  step reads (``decode_context_sum``), prefill attention in the attention
  pairs of its chunks (one pair = one query token attending one key).

A mixed chunked-prefill step (vLLM V1 schedules decodes and prefill chunks in
one forward pass) costs ``lin(decodes + prefill tokens)`` once, attention for
each part, and the lm_head once for all requests. All times are GPU ms of one
step of one replica; ``overhead_ms`` is the engine's CPU time per step.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from planner.catalog.schema import Calibration, PrecisionTable
from planner.perf.memory import kv_heads_per_gpu
from planner.perf.speed import (
    ACT,
    Roofline,
    attention_prefill_tiles,
    attention_wave_efficiency,
    attention_work_coefficients,
    decode_step,
    engine_overhead_ms,
    prefill_step,
    vision_call_host_ms,
    vision_encode,
)
from planner.spec.config import ServingConfig
from planner.spec.modeldesc import full_attention_layers

_NOT_LINEAR = ("attention", "attention_sliding", "cross_attention", "lm_head")
"""Ops of ``speed.decode_step`` that do not scale with the step's tokens alone."""


def _grid(max_m: int, tile: int) -> np.ndarray:
    """Token counts where ``speed`` is evaluated: dense below one tile, then both ends and the middle of every
    tile row (within a row the GEMM tile count is fixed, so the time is the larger of a constant and a line)."""
    pts = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 80, 96, 112}
    k = 0
    while k * tile < max_m:
        lo = k * tile
        for off in (1, tile // 2, tile):
            pts.add(lo + max(1, off))
        k += 1
    return np.array(sorted(p for p in pts if p <= max_m) + ([max_m] if max_m not in pts else []), dtype=float)


class StepCost:
    """Step times of one resolved ``ServingConfig`` under one calibration."""

    def __init__(self, cfg: ServingConfig, cal: Calibration, precisions: PrecisionTable) -> None:
        if cfg.max_num_batched_tokens is None or cfg.max_num_seqs is None:
            raise ValueError("StepCost needs a resolved ServingConfig (deployment.resolve)")
        self.cfg = cfg
        self.cal = cal
        self.precisions = precisions
        rf = Roofline(cfg.gpu, cal)
        self.rf = rf
        self.max_tokens = int(max(cfg.max_num_batched_tokens, cfg.max_num_seqs))
        self.max_seqs = int(cfg.max_num_seqs)
        tile = int(cal.value("gemm_tile_m"))
        grid = _grid(self.max_tokens, tile)
        lin = np.empty(len(grid))
        lm = np.empty(len(grid))
        for i, m in enumerate(grid):
            ops = decode_step(rf, cfg, precisions, int(m), 1).ops
            lin[i] = sum(op.total_s for op in ops if op.name not in _NOT_LINEAR) * 1e3
            lm[i] = sum(op.total_s for op in ops if op.name == "lm_head") * 1e3
        m_all = np.arange(self.max_tokens + 1, dtype=float)
        lin_all = np.interp(m_all, grid, lin)
        lm_all = np.interp(m_all, grid, lm)
        lin_all[0] = lm_all[0] = 0.0
        self.lin_ms = lin_all
        self.lm_ms = lm_all
        self._lin = lin_all.tolist()
        self._lm = lm_all.tolist()
        # Ops only prefill steps run (e.g. attention-layout copies): elementwise in the prefill tokens, so
        # linear: fixed part + per token, read off two prefill_step evaluations.
        names = {op.name for op in decode_step(rf, cfg, precisions, 1, 1).ops}

        def prefill_only(m: int) -> float:
            ops = prefill_step(rf, cfg, precisions, m).ops
            return sum(op.total_s for op in ops
                       if op.name not in names and op.name not in _NOT_LINEAR) * 1e3

        p1, p2 = prefill_only(1), prefill_only(1025)
        self._pf_tok_ms = (p2 - p1) / 1024
        self._pf_fixed_ms = p1 - self._pf_tok_ms
        d = cfg.model.decoder
        self.heads = d.num_attention_heads // cfg.tp
        self.kv_heads = kv_heads_per_gpu(d.num_kv_heads, cfg.tp)
        self.head_dim = d.head_dim
        self.kv_elem = 1 if cfg.kv_cache_dtype == "fp8" else 2
        self.full_layers = full_attention_layers(d)
        self.sliding_layers = d.num_sliding_window_layers
        self.window = d.sliding_window or 0
        self.cross_layers = len(d.cross_attention_layers)
        self.cross_states = 0
        if self.cross_layers and cfg.model.visual_tokens is not None:
            from planner.catalog.vision_tokens import max_image_tokens

            item = max_image_tokens(cfg.model.visual_tokens, cfg.mm_processor_options)
            self.cross_states = item.cross_attention_tokens
        lat = rf.gemm_latency  # attention kernels
        peak = cfg.gpu.bf16_dense_tflops * 1e12
        bw = rf.bw
        hd = self.head_dim
        # Decode attention, per layer: lat + max(flops/peak, (bytes + half)/(bw x eff)).
        self._lat_ms = lat * 1e3
        self._dec_flop_ms = 4.0 * self.heads * hd / peak * 1e3  # per context token
        mem = cal.value("attention_decode_memory_efficiency") * bw
        self._dec_kv_ms = self.kv_heads * hd * 2 * self.kv_elem / mem * 1e3  # per context token
        self._dec_q_ms = self.heads * hd * 2 * ACT / mem * 1e3  # per sequence
        self._dec_half_ms = cal.value("attention_decode_half_bytes") / mem * 1e3
        # Prefill attention, per layer: lat + max(work/(peak x eff x waves), bytes/(bw x eff)), the work and the
        # waves as speed.Roofline.attention_prefill counts them (one prompt's query tiles per chunk).
        self._pf_ms_per_work = 1e3 / (peak * cal.value("attention_prefill_compute_efficiency"))
        self._tile_q = cal.value("attention_tile_q")
        self._pf_per_pair, self._pf_per_query = attention_work_coefficients(cal, self.heads, self.head_dim)
        emem = cal.value("elementwise_memory_efficiency") * bw
        self._pf_q_ms = self.heads * hd * 2 * ACT / emem * 1e3  # per query token
        self._pf_kv_ms = self.kv_heads * hd * 2 * self.kv_elem / emem * 1e3  # per key token
        self._ov0 = cal.value("engine_step_overhead_ms")
        self._ov1 = cal.value("engine_per_seq_overhead_ms")
        self._vision = lru_cache(maxsize=4096)(self._vision_uncached)

    # ------------------------------------------------------------------ pieces

    def decode_attention_ms(self, num_decode: int, context_sum: float, window_sum: float | None = None) -> float:
        """Attention of ``num_decode`` decoding sequences whose contexts sum to ``context_sum``."""
        if num_decode <= 0:
            return 0.0
        t = 0.0
        q = self._dec_q_ms * num_decode + self._dec_half_ms
        if self.full_layers:
            t += self.full_layers * (self._lat_ms + max(self._dec_flop_ms * context_sum,
                                                        self._dec_kv_ms * context_sum + q))
        if self.sliding_layers:
            w = min(context_sum, num_decode * self.window) if window_sum is None else window_sum
            t += self.sliding_layers * (self._lat_ms + max(self._dec_flop_ms * w, self._dec_kv_ms * w + q))
        if self.cross_states:
            s = num_decode * self.cross_states
            t += self.cross_layers * (self._lat_ms + max(self._dec_flop_ms * s, self._dec_kv_ms * s + q))
        return t

    def decode_attention_vec(self, num_decode: int, context_sums: np.ndarray, window: int = 0) -> np.ndarray:
        """``decode_attention_ms`` over an array of context sums (consecutive decode steps)."""
        q = self._dec_q_ms * num_decode + self._dec_half_ms
        t = np.zeros(len(context_sums))
        if self.full_layers:
            t += self.full_layers * (self._lat_ms + np.maximum(self._dec_flop_ms * context_sums,
                                                               self._dec_kv_ms * context_sums + q))
        if self.sliding_layers:
            w = np.minimum(context_sums, num_decode * (window or self.window))
            t += self.sliding_layers * (self._lat_ms + np.maximum(self._dec_flop_ms * w, self._dec_kv_ms * w + q))
        if self.cross_states:
            s = num_decode * self.cross_states
            t += self.cross_layers * (self._lat_ms + max(self._dec_flop_ms * s, self._dec_kv_ms * s + q))
        return t

    def decode_attention_vec_n(self, num_decode: np.ndarray, context_sums: np.ndarray) -> np.ndarray:
        """``decode_attention_ms`` for arrays of batch sizes and their context sums (batch > 0)."""
        nd = np.asarray(num_decode, dtype=float)
        q = self._dec_q_ms * nd + self._dec_half_ms
        t = np.zeros(len(nd))
        if self.full_layers:
            t += self.full_layers * (self._lat_ms + np.maximum(self._dec_flop_ms * context_sums,
                                                               self._dec_kv_ms * context_sums + q))
        if self.sliding_layers:
            w = np.minimum(context_sums, nd * self.window)
            t += self.sliding_layers * (self._lat_ms + np.maximum(self._dec_flop_ms * w, self._dec_kv_ms * w + q))
        if self.cross_states:
            s = nd * self.cross_states
            t += self.cross_layers * (self._lat_ms + np.maximum(self._dec_flop_ms * s, self._dec_kv_ms * s + q))
        return t

    def attention_launch_ms(self) -> float:
        """Fixed (kernel-latency) part of one step's prefill attention and prefill-only ops."""
        return (self.full_layers + self.sliding_layers) * self._lat_ms + self._pf_fixed_ms

    def prefill_attention_ms(self, tokens: int, pairs: float, kv_tokens: float,
                             window_pairs: float | None = None, window_kv: float | None = None) -> float:
        """Attention of prefill chunks: ``tokens`` queries, ``pairs`` causal (query, key) pairs,
        ``kv_tokens`` keys read; sliding-window layers use the ``window_*`` figures."""
        if tokens <= 0:
            return 0.0
        # The simulator's inner loop: speed.attention_prefill_tiles and attention_wave_efficiency in scalars.
        tq = self._tile_q
        q_pad = math.ceil(tokens / tq) * tq
        tiles = self.heads * q_pad / tq
        waves = tiles / (math.ceil(tiles / self.rf.sms) * self.rf.sms)
        scale = q_pad / tokens * self._pf_ms_per_work / waves
        diag = tokens * tq / 2
        fixed = self._pf_per_query * q_pad * self._pf_ms_per_work / waves
        qb = self._pf_q_ms * tokens
        t = 0.0
        if self.full_layers:
            t += self.full_layers * (self._lat_ms + max(self._pf_per_pair * (pairs + diag) * scale + fixed,
                                                        qb + self._pf_kv_ms * kv_tokens))
        if self.sliding_layers:
            wp = pairs if window_pairs is None else window_pairs
            wk = kv_tokens if window_kv is None else window_kv
            t += self.sliding_layers * (self._lat_ms + max(self._pf_per_pair * (wp + diag) * scale + fixed,
                                                           qb + self._pf_kv_ms * wk))
        return t + self._pf_fixed_ms + self._pf_tok_ms * tokens

    def prefill_attention_vec(self, tokens: np.ndarray, pairs: np.ndarray, kv_tokens: np.ndarray,
                              window_pairs: np.ndarray | None = None,
                              window_kv: np.ndarray | None = None) -> np.ndarray:
        """``prefill_attention_ms`` over arrays (entries with tokens <= 0 give 0)."""
        tokens = np.asarray(tokens, dtype=float)
        q = np.maximum(tokens, 1.0)
        t = np.zeros(tokens.shape)
        qb = self._pf_q_ms * tokens

        def layer(p: np.ndarray, kv: np.ndarray) -> np.ndarray:
            # The work and waves of speed.Roofline.attention_prefill, the chunk taken as one prompt's queries.
            work, tiles = attention_prefill_tiles(self.cal, p, q, self.heads, self.head_dim)
            waves = attention_wave_efficiency(tiles, self.rf.sms)
            return self._lat_ms + np.maximum(work * self._pf_ms_per_work / waves, qb + self._pf_kv_ms * kv)

        if self.full_layers:
            t += self.full_layers * layer(np.asarray(pairs, dtype=float), np.asarray(kv_tokens, dtype=float))
        if self.sliding_layers:
            wp = pairs if window_pairs is None else window_pairs
            wk = kv_tokens if window_kv is None else window_kv
            t += self.sliding_layers * layer(np.asarray(wp, dtype=float), np.asarray(wk, dtype=float))
        t += self._pf_fixed_ms + self._pf_tok_ms * tokens
        return np.where(tokens > 0, t, 0.0)

    def lin(self, tokens: int) -> float:
        """Token-proportional ops (GEMMs, norms, all-reduces) of a step of ``tokens`` tokens."""
        if tokens <= self.max_tokens:
            return self._lin[tokens]
        # Beyond the engine's budget (only reached by direct calls): extrapolate the last tile row.
        slope = (self._lin[-1] - self._lin[-65]) / 64
        return self._lin[-1] + slope * (tokens - self.max_tokens)

    def lm_head(self, rows: int) -> float:
        if rows <= self.max_tokens:
            return self._lm[rows]
        slope = (self._lm[-1] - self._lm[-65]) / 64
        return self._lm[-1] + slope * (rows - self.max_tokens)

    # ------------------------------------------------------------------ API

    def step_ms(self, num_decode: int, decode_context_sum: float, prefill_tokens: int = 0,
                prefill_attn_pairs: float = 0.0, *, prefill_kv_tokens: float | None = None,
                prefill_seqs: int | None = None, decode_window_sum: float | None = None,
                prefill_window_pairs: float | None = None, prefill_window_kv: float | None = None) -> float:
        """GPU ms of one mixed step: ``num_decode`` sequences decoding one token each over
        contexts summing to ``decode_context_sum``, plus prefill chunks totalling
        ``prefill_tokens`` query tokens and ``prefill_attn_pairs`` attention pairs.

        ``prefill_seqs`` (default: 1 if any prefill) counts the chunks (lm_head rows);
        ``prefill_kv_tokens`` (default: ``prefill_tokens``) the keys the chunks read.
        """
        m = num_decode + prefill_tokens
        if m <= 0:
            return 0.0
        seqs = (1 if prefill_tokens else 0) if prefill_seqs is None else prefill_seqs
        kv = prefill_tokens if prefill_kv_tokens is None else prefill_kv_tokens
        return (self.lin(m) + self.lm_head(num_decode + seqs)
                + self.decode_attention_ms(num_decode, decode_context_sum, decode_window_sum)
                + self.prefill_attention_ms(prefill_tokens, prefill_attn_pairs, kv,
                                            prefill_window_pairs, prefill_window_kv))

    def decode_ms(self, num_decode: int, context: float) -> float:
        """A decode-only step of ``num_decode`` sequences each holding ``context`` tokens."""
        w = min(context, self.window) * num_decode if self.sliding_layers else None
        return self.step_ms(num_decode, num_decode * context, decode_window_sum=w)

    def prefill_ms(self, prompt_tokens: int, cached_tokens: int = 0) -> float:
        """One request's prompt prefilled alone (``speed.prefill_step``'s case)."""
        m = max(1, prompt_tokens - cached_tokens)
        pairs = prefill_pairs(prompt_tokens - m, m)
        win = min(prompt_tokens, self.window) if self.sliding_layers else None
        return self.step_ms(0, 0.0, m, pairs, prefill_kv_tokens=prompt_tokens,
                            prefill_window_pairs=None if win is None else m * win, prefill_window_kv=win)

    def vision_ms(self, images: int, patches: int, sequences: int | None = None) -> float:
        """Engine ms of one encoder call over ``images`` images totalling ``patches`` encoder patches in
        ``sequences`` attention sequences (tiles; default one per image): the ViT + projector GPU work and the
        call's host work (``speed.vision_call_host_ms``)."""
        if images <= 0 or patches <= 0:
            return 0.0
        return self._vision(int(images), int(patches), int(sequences or images)) + vision_call_host_ms(self.cal, images)

    def _vision_uncached(self, images: int, patches: int, sequences: int) -> float:
        return vision_encode(self.rf, self.cfg, self.precisions, patches, images, sequences=sequences).time_ms

    def overhead_ms(self, running: int) -> float:
        """Engine CPU time of one step with ``running`` scheduled sequences."""
        return self._ov0 + self._ov1 * running

    def check_overhead(self, running: int) -> float:
        """``speed.engine_overhead_ms`` (for tests: the two must agree)."""
        return engine_overhead_ms(self.cal, running)


def prefill_pairs(done: float, chunk: float) -> float:
    """Causal attention pairs of a ``chunk`` of queries after ``done`` tokens already in the KV cache:
    each query attends every earlier token and itself (``speed.attention_prefill``'s count)."""
    return chunk * (done + chunk) - chunk * (chunk - 1) / 2

