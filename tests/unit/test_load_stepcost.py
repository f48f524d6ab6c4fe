"""StepCost (the fast step times of the simulator and the solver) against the per-op roofline in planner.perf."""

import pytest

from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_models, load_precisions
from planner.perf.roofline import Roofline
from planner.perf.stepcost import StepCost, prefill_pairs
from planner.perf.steps import decode_step, engine_overhead_ms, prefill_step
from planner.perf.vision import vision_encode
from planner.spec.config import ServingConfig, resolve

ENGINE = load_engine()
PREC = load_precisions()

CONFIGS = [
    # dense VLM, bf16, TP1
    ("Qwen/Qwen2.5-VL-7B-Instruct", "H100", {}),
    # sliding-window layers (Gemma 3), fp8 W8A8, TP2
    ("google/gemma-3-27b-it", "H100", {"tp": 2, "precision": "fp8"}),
    # MoE decoder (128 experts, top-8)
    ("Qwen/Qwen3-VL-30B-A3B-Instruct", "H100", {}),
    # cross-attention layers (Mllama), int4 W4A16, Ampere budget 2048
    ("meta-llama/Llama-3.2-11B-Vision-Instruct", "A100-80GB", {"precision": "int4"}),
    # TP4 fp8 text model; PP2
    ("meta-llama/Llama-3.1-70B-Instruct", "H100", {"tp": 4, "precision": "fp8"}),
    ("meta-llama/Llama-3.1-8B-Instruct", "H100", {"pp": 2}),
]


def _setup(model, gpu, kw):
    cfg = resolve(ServingConfig(model=load_models().get(model), gpu=load_gpus().get(gpu), **kw), ENGINE)
    cal = load_calibration(cfg.gpu.name)
    return cfg, cal, Roofline(cfg.gpu, cal), StepCost(cfg, cal, PREC)


@pytest.mark.parametrize("model,gpu,kw", CONFIGS)
def test_decode_and_prefill_match_speed_within_2_percent(model, gpu, kw):
    cfg, cal, rf, sc = _setup(model, gpu, kw)
    for batch in [1, 2, 7, 16, 31, 64, 100, 127, 128, 129, 200, 256, 300, 511, 1000]:
        if batch > cfg.max_num_seqs:
            continue
        for context in [16, 600, 3000, 12000]:
            ref = decode_step(rf, cfg, PREC, batch, context).time_ms
            assert sc.decode_ms(batch, context) == pytest.approx(ref, rel=0.02), (batch, context)
    for prompt in [1, 40, 255, 256, 257, 700, 1500, 2048, 3000, 6000, 8192]:
        for cached in (0, prompt // 3):
            if prompt - cached > cfg.max_num_batched_tokens:
                continue
            ref = prefill_step(rf, cfg, PREC, prompt, cached).time_ms
            assert sc.prefill_ms(prompt, cached) == pytest.approx(ref, rel=0.02), (prompt, cached)


def test_vision_and_overhead_are_speeds_own():
    cfg, cal, rf, sc = _setup("Qwen/Qwen2.5-VL-7B-Instruct", "H100", {})
    # 640x480 -> 1564 ViT patches (Qwen2.5-VL: 46 x 34 patches of 14 px); 1680x2240 -> 19200 (120 x 160).
    # The engine's encoder call: speed's GPU time plus the call's host work (once per call).
    host = cal.value("vision_call_overhead_ms")
    assert host > 0
    for images, patches in [(1, 1564), (1, 19200), (3, 3 * 1564)]:
        assert sc.vision_ms(images, patches) == pytest.approx(vision_encode(rf, cfg, PREC, patches, images).time_ms
                                                              + host)
    assert sc.vision_ms(0, 0) == 0.0
    for running in (1, 17, 512):
        assert sc.overhead_ms(running) == pytest.approx(engine_overhead_ms(cal, running))


def test_prefill_pairs_count_causal_attention():
    # A 4-token chunk after 6 cached tokens: queries attend 7, 8, 9, 10 keys = 34 pairs.
    assert prefill_pairs(6, 4) == 7 + 8 + 9 + 10
    # A whole 5-token prompt: 1 + 2 + 3 + 4 + 5 = 15 (the lower triangle with its diagonal).
    assert prefill_pairs(0, 5) == 15


def test_mixed_step_reads_the_weights_once():
    """A chunked-prefill step (32 decodes + a 512-token chunk) costs less than the two steps run apart
    (the GEMMs read the weights once) but more than either alone."""
    cfg, cal, rf, sc = _setup("meta-llama/Llama-3.1-8B-Instruct", "H100", {})
    ctx = 1000
    mixed = sc.step_ms(32, 32 * ctx, 512, prefill_pairs(0, 512), prefill_kv_tokens=512)
    apart = sc.decode_ms(32, ctx) + sc.prefill_ms(512)
    assert max(sc.decode_ms(32, ctx), sc.prefill_ms(512)) < mixed < apart
    # What the merge saves is at most one pass over the weights: 8.03B params x 2 bytes at 80% of 3.35 TB/s
    # (decode GEMMs are memory-bound) ~ 6.0 ms; it loses the compute the 32 extra rows add to the
    # compute-bound chunk (2 x 32 x 7e9 FLOP at 70% of 989 TFLOP/s ~ 0.65 ms) and the partial GEMM wave
    # of 544 rows vs 512 (a 5th 128-row tile row: up to ~1/4 of the chunk's GEMM time, ~2 ms).
    weights_read_ms = 8.03e9 * 2 / (3.35e12 * 0.8) * 1e3
    saved = apart - mixed
    assert weights_read_ms - 0.65 - 2.0 < saved < weights_read_ms


def test_scalar_and_vector_prefill_attention_agree():
    """The one prefill-attention formula gives the same on numbers (the simulator) as on arrays (the analytic
    model)."""
    import numpy as np

    for model, gpu, kw in CONFIGS[:3]:
        cfg, cal, rf, sc = _setup(model, gpu, kw)
        for tokens, done in [(1, 0), (100, 0), (128, 0), (129, 500), (2048, 0), (777, 4000)]:
            pairs = prefill_pairs(done, tokens)
            w = min(done + tokens, sc.window) if sc.sliding_layers else None
            wp = None if w is None else tokens * w
            vec = sc.prefill_attention_ms(np.array([tokens]), np.array([pairs]), np.array([done + tokens]),
                                          None if wp is None else np.array([wp]), None if w is None else np.array([w]))
            assert sc.prefill_attention_ms(tokens, pairs, done + tokens, wp, w) == pytest.approx(float(vec[0]),
                                                                                                 rel=1e-9)
