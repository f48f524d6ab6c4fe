"""One request with the engine to itself: the one lone-request latency that ``vlmplan estimate`` reports and the
analytic load model starts from.

It is what the simulator measures for a lone request (vLLM V1 serving it alone), step by step:

* TTFT: the request's encoder call (the mean over the workload's classes), then its prompt in chunks of at most
  ``max_num_batched_tokens`` tokens, one engine step each (each step pays its own GEMMs, attention over the
  keys so far, and engine overhead), the last chunk's step sampling the first token. A 4,866-token prompt under
  a 2,048-token budget is three steps, not one: prefilling it as one step (the per-op roofline's
  ``prefill_step``) made the A100 document-VQA TTFT 20.9 ms short of the simulator's.
* TPOT: the mean of its decode steps, the k-th reading the prompt and the k tokens generated so far.

Times are engine ms; the request's time outside the engine (``frontend.shape_frontend_ms``) is the caller's to
add.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.perf.attention import prefill_pairs
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape


@dataclass(frozen=True)
class LoneRequest:
    ttft_ms: float
    """Encoder call, chunked prefill and the sampling step's overhead."""
    tpot_ms: float
    """Mean decode step (engine overhead included); 0 with one output token."""
    decode_steps: int
    """Output tokens after the first."""

    @property
    def e2e_ms(self) -> float:
        return self.ttft_ms + self.decode_steps * self.tpot_ms


def lone_request(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape) -> LoneRequest:
    """``shape`` served alone by one replica of ``cfg`` (``cost``'s step times)."""
    P, L = shape.prompt_tokens, max(0, shape.output_tokens - 1)
    ttft = mean_vision_ms(cost, shape) + prefill_alone_ms(cost, cfg, shape) + cost.overhead_ms(1)
    tpot = float(np.mean(cost.decode_steps_ms(1, P + np.arange(1, L + 1, dtype=float)))) if L else 0.0
    return LoneRequest(ttft_ms=ttft, tpot_ms=tpot, decode_steps=L)


def prefill_alone_ms(cost: StepCost, cfg: ResolvedConfig, shape: RequestShape) -> float:
    """A lone prompt, chunked by the budget (each further chunk a step with its own overhead)."""
    P = shape.prompt_tokens
    Pn = max(1, P - shape.cached_tokens)
    B = cfg.max_num_batched_tokens
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


def mean_vision_ms(cost: StepCost, shape: RequestShape) -> float:
    """A request's encoder time, averaged over the workload's classes (the ViT's cost is not linear in its
    patches, so the mean of the costs, not the cost of the mean)."""
    if not shape.classes:
        return cost.vision_ms(shape.images, shape.encoder_patches, shape.vit_sequences) * shape.encoded_share
    return sum(p * cost.vision_ms(c.images, c.encoder_patches, c.vit_sequences) * c.encoded_share
               for p, c in shape.classes)
