"""One request with the engine to itself."""

from __future__ import annotations

from planner.core.stats import Percentiles
from planner.load.analytic.curves import Curves
from planner.load.analytic.prediction import LoadPrediction
from planner.perf.stepcost import StepCost, prefill_pairs
from planner.spec.config import ServingConfig
from planner.spec.shape import RequestShape


def predict_single(cost: StepCost, cfg: ServingConfig, shape: RequestShape, cur: Curves) -> LoadPrediction:
    P, L = shape.prompt_tokens, max(0, shape.output_tokens - 1)
    ttft = cur.vision_ms + prefill_alone_ms(cost, cfg, shape) + cost.overhead_ms(1)
    tpot = cost.decode_ms(1, P + 1 + L / 2) + cost.overhead_ms(1) if L else 0.0
    e2e = ttft + L * tpot
    return LoadPrediction(ttft=Percentiles.constant(ttft), tpot=Percentiles.constant(tpot),
                          e2e=Percentiles.constant(e2e), requests_per_s=1e3 / e2e,
                          output_tokens_per_s=shape.output_tokens * 1e3 / e2e, saturated=False,
                          max_requests_per_s=cur.max_rate, mean_batch=1.0)


def prefill_alone_ms(cost: StepCost, cfg: ServingConfig, shape: RequestShape) -> float:
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


def alone_ms(cost: StepCost, cfg: ServingConfig, shape: RequestShape, vision_ms: float) -> float:
    """A request's encoder call and prefill with the engine to itself."""
    return vision_ms + prefill_alone_ms(cost, cfg, shape)
