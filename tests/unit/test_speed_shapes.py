"""Shape effects of the speed model against the measurements they were fitted on (H200 run4_shape_effects.json,
H100 run10_vit_shapes.json): unaligned GEMMs, padded attention head dims, short attention sequences, waves of
query tiles, L2-resident elementwise kernels."""

import json

import pytest

from planner.catalog.loader import catalog_root, load_calibration, load_gpus, load_precisions
from planner.perf.attention import attention_head_dim
from planner.perf.roofline import Roofline, gemm_aligned

RUN4 = json.loads((catalog_root() / "calibration/measurements/h200-141gb/run4_shape_effects.json").read_text())
GPU = load_gpus().get("H200")
RF = Roofline(GPU, load_calibration(GPU.name))
PREC = load_precisions()


def test_alignment_rule():
    # 16 bytes: 8 bf16 elements, 16 fp8 elements.
    assert gemm_aligned(6840, 1280, 2) and not gemm_aligned(1280, 3420, 2) and not gemm_aligned(3420, 1280, 2)
    assert gemm_aligned(4304, 1152, 2) and not gemm_aligned(4312, 1152, 1)


def test_head_dim_padding():
    assert [attention_head_dim(h) for h in (64, 72, 80, 96, 128, 256)] == [64, 128, 128, 128, 128, 256]


@pytest.mark.parametrize("pt", [p for p in RUN4["gemm_align"]["points"] if p["variant"] == "true"],
                         ids=lambda p: f"{p['M']}x{p['N']}x{p['K']}")
def test_gemm_time_ratio_true_vs_padded_matches_measurement(pt):
    pad = next(p for p in RUN4["gemm_align"]["points"] if p["variant"] == "pad64" and p["shape_of"] == pt["shape_of"])
    measured = pt["time_us"] / pad["time_us"]
    model = (RF.gemm("g", pt["M"], pt["N"], pt["K"], "bf16", PREC).time_s
             / RF.gemm("g", pad["M"], pad["N"], pad["K"], "bf16", PREC).time_s)
    assert model == pytest.approx(measured, rel=0.25)


@pytest.mark.parametrize("hd", [72, 80, 96])
@pytest.mark.parametrize("seq", [256, 1024, 16384])
def test_padded_head_dims_cost_what_128_costs(hd, seq):
    """Measured: head dims 72..96 take 0.95-1.01x the time of 128 at the same shape; the model says 1.0x."""
    pts = {p["head_dim"]: p for p in RUN4["attn_batched"]["points"] if p["seq"] == seq}
    measured = pts[hd]["time_us"] / pts[128]["time_us"]
    b = pts[hd]["batch"]
    model = (RF.attention_prefill("a", seq, seq, 16, 16, hd, False, 2, batch=b).time_s
             / RF.attention_prefill("a", seq, seq, 16, 16, 128, False, 2, batch=b).time_s)
    assert model == pytest.approx(measured, rel=0.07)


def test_short_windows_are_far_below_peak():
    """64-token windows: measured 53-92 TFLOP/s against 390-690 at 16K; the model must see most of that loss."""
    short = RF.attention_prefill("a", 64, 64, 16, 16, 128, False, 2, batch=1024)
    long = RF.attention_prefill("a", 16384, 16384, 16, 16, 128, False, 2)
    rate = [o.flops / o.time_s for o in (short, long)]
    assert rate[0] < 0.5 * rate[1]


RUN10 = json.loads((catalog_root() / "calibration/measurements/h100-sxm-80gb/run10_vit_shapes.json").read_text())
H100 = load_gpus().get("H100")
RF100 = Roofline(H100, load_calibration(H100.name))


@pytest.mark.parametrize("hd", [64, 72, 80])
@pytest.mark.parametrize("batch", [1, 2, 4])
def test_one_token_past_a_wave_of_query_tiles(hd, batch):
    """16 heads x 1,024 tokens are 128 query tiles; 1,025 tokens 144: a second wave on 132 SMs (H100)."""
    pts = {p["seq"]: p for p in RUN10["attn"]["points"] if p["head_dim"] == hd and p["batch"] == batch}
    measured = pts[1025]["time_us"] / pts[1024]["time_us"]
    model = (RF100.attention_prefill("a", 1025, 1025, 16, 16, hd, False, 2, batch=batch).time_s
             / RF100.attention_prefill("a", 1024, 1024, 16, 16, hd, False, 2, batch=batch).time_s)
    assert measured > 1.3 and model == pytest.approx(measured, rel=0.2)


@pytest.mark.parametrize("seq", [256, 1024, 16384])
def test_head_dim_64_is_not_half_of_128(seq):
    """Measured (H200, batched): head dim 64 takes about 0.7x the time of 128 (the softmax does not shrink)."""
    pts = {p["head_dim"]: p for p in RUN4["attn_batched"]["points"] if p["seq"] == seq}
    measured = pts[64]["time_us"] / pts[128]["time_us"]
    b = pts[64]["batch"]
    model = (RF.attention_prefill("a", seq, seq, 16, 16, 64, False, 2, batch=b).time_s
             / RF.attention_prefill("a", seq, seq, 16, 16, 128, False, 2, batch=b).time_s)
    assert 0.6 < measured < 0.8 and model == pytest.approx(measured, rel=0.1)


def test_small_elementwise_kernels_run_at_l2_speed():
    """vit_shapes.py: an add on 2 x [1154, 4096] bf16 (28 MB of traffic) takes about half its cold time when
    its inputs are in L2 (as in a forward pass); the model's L2-resident rate sees most of that."""
    pts = {(p["op"], p["M"], p["d"], p["mode"]): p for p in RUN10["elementwise"]["points"]}
    hot, cold = pts[("add", 1154, 4096, "hot")], pts[("add", 1154, 4096, "cold")]
    measured = hot["time_us"] / cold["time_us"]
    model = (RF100.elementwise("e", hot["bytes"]).time_s / RF100.elementwise("e", cold["bytes"], resident=False).time_s)
    assert measured < 0.7 and model == pytest.approx(measured, rel=0.2)


def test_fused_moe_experts_share_waves():
    """A fused MoE kernel runs every touched expert's tiles in one launch: its time never falls as tokens grow
    (timing each expert as its own wave-quantised GEMM made 1,025 tokens cost half of 1,024), and once every
    expert is touched a step reads all expert weights once (memory-bound)."""
    from planner.catalog.loader import load_engine, load_models
    from planner.perf.steps import decode_step
    from planner.spec.config import ServingConfig, resolve

    cfg = resolve(ServingConfig(model=load_models().get("Qwen/Qwen3-VL-30B-A3B-Instruct"), gpu=H100), load_engine())
    moe = cfg.model.decoder.moe
    assert moe is not None

    def experts_ms(m):
        return sum(op.total_s for op in decode_step(RF100, cfg, PREC, m, 1).ops if "expert" in op.name) * 1e3

    times = [experts_ms(m) for m in (1, 8, 32, 128, 512, 1000, 1024, 1025, 1100, 2048, 4096)]
    assert all(b >= a * 0.999 for a, b in zip(times, times[1:])), times
    d = cfg.model.decoder
    layers = d.num_layers
    weights = layers * moe.num_experts * 3 * d.hidden_size * moe.moe_intermediate_size * 2
    floor_ms = weights / (H100.hbm_bandwidth_gb_per_s * 1e9 * RF100._gemm_mem_eff) * 1e3
    assert experts_ms(128) == pytest.approx(floor_ms, rel=0.1)
