"""Shape effects of the speed model against the H200 measurements they were taken from (run4_shape_effects.json):
unaligned GEMMs, padded attention head dims, short attention sequences."""

import json

import pytest

from planner.catalog.loader import catalog_root, load_calibration, load_gpus, load_precisions
from planner.speed import Roofline, attention_head_dim, gemm_aligned

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
