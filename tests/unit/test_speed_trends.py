"""Trends the calibrated speed model must show, the fitted calibration files, and fit.py on synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.calibrate import fit as F
from planner.catalog.calibration_schema import CALIBRATION_CONSTANTS
from planner.catalog.loader import catalog_root, load_calibration, load_engine, load_gpus, load_models, load_precisions
from planner.perf.kernels import Kernels
from planner.perf.roofline import Roofline
from planner.perf.steps import decode_step, prefill_step
from planner.spec.config import ServingConfig, resolve

PREC = load_precisions()
H100 = load_gpus().get("H100-SXM-80GB")
LLAMA8 = load_models().get("meta-llama/Llama-3.1-8B-Instruct")
LLAMA70 = load_models().get("meta-llama/Llama-3.1-70B-Instruct")


def _decode_ms(precision: str, batch: int, context: int = 1024, model=LLAMA8, tp: int = 1) -> float:
    cfg = resolve(ServingConfig(model=model, gpu=H100, precision=precision, tp=tp),  # type: ignore[arg-type]
                  load_engine())
    return decode_step(Roofline(H100, load_calibration(H100.name)), cfg, PREC, batch, context).time_ms


def test_decode_falls_bf16_fp8_int4_at_small_batch() -> None:
    # At batch 1 a decode step streams every weight once: 2, 1 and ~0.5 bytes per weight.
    bf16, fp8, int4 = (_decode_ms(p, 1) for p in ("bf16", "fp8", "int4"))
    assert bf16 > fp8 > int4
    # Weight bytes halve bf16 -> fp8; fixed costs (kernels, attention, lm_head in bf16) keep the gain below 2x.
    assert 1.3 < bf16 / fp8 < 2.0


def test_quantisation_gain_shrinks_at_large_batch() -> None:
    # At batch 512 the projections are compute-bound: fp8 gains by its 2x peak at best, int4 (16-bit tensor cores
    # after dequantisation) hardly at all; at batch 1 both gain from reading fewer bytes.
    def gain(p: str, b: int) -> float:
        return 1.0 - _decode_ms(p, b, 256) / _decode_ms("bf16", b, 256)

    assert gain("fp8", 1) > gain("fp8", 512)
    assert gain("int4", 1) > gain("int4", 512)
    assert gain("int4", 512) < 0.15


def test_prefill_is_compute_bound_at_long_prompts() -> None:
    cfg = resolve(ServingConfig(model=LLAMA8, gpu=H100), load_engine())
    rf = Roofline(H100, load_calibration(H100.name))
    long = prefill_step(rf, cfg, PREC, 8192)
    assert long.bound == "compute"
    for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "attention"):
        assert next(op for op in long.ops if op.name == name).bound == "compute", name
    # 8 tokens: each projection reads 2 bytes per weight for 16 FLOPs, far below the ~295 FLOP/byte ridge
    # of 989 TFLOPS / 3.35 TB/s: memory- (or latency-) bound.
    short = prefill_step(rf, cfg, PREC, 8)
    assert short.bound == "memory"
    assert next(op for op in short.ops if op.name == "gate_up_proj").bound == "memory"


def test_tp2_decode_on_nvlink_beats_tp1_for_70b() -> None:
    # Each GPU streams half the weights (~70 GB -> ~35 GB, ~10 ms at 3.35 TB/s saved) while the two all-reduces
    # per layer of batch x 8192 x 2 bytes cost tens of microseconds each over NVLink.
    assert H100.interconnect.kind == "nvlink"
    tp1, tp2 = _decode_ms("bf16", 8, 2048, LLAMA70, 1), _decode_ms("bf16", 8, 2048, LLAMA70, 2)
    assert tp2 < tp1
    assert tp2 > tp1 / 2  # the all-reduces are not free


@pytest.mark.parametrize("gpu", ["H100-SXM-80GB", "H200-141GB"])
def test_fitted_calibration_loads_with_provenance(gpu: str) -> None:
    cal = load_calibration(gpu)
    assert cal.calibrated and cal.gpu == gpu
    assert set(cal.constants) == set(CALIBRATION_CONSTANTS)
    root = catalog_root().parent
    fitted = {n: c for n, c in cal.constants.items() if c.fit is not None}
    for must in ("gemm_compute_efficiency", "gemm_memory_efficiency", "fp8_gemm_compute_efficiency",
                 "kernel_latency_us", "graph_launch_gap_us", "eager_launch_us", "attention_decode_memory_efficiency",
                 "attention_prefill_compute_efficiency", "elementwise_memory_efficiency", "gemm_latency_us",
                 "norm_kernel_latency_us", "attention_softmax_head_dims"):
        assert must in fitted, must
    for name, c in fitted.items():
        assert c.fit is not None
        for path in c.fit.dataset.split(", "):
            assert (root / path).is_file(), (name, path)
        measurement_days = ("2026-11-26", "2026-11-27", "2026-12-02", "2026-12-03", "2026-12-04")  # 12-04: run25
        assert c.fit.n_points >= 1 and c.fit.fitted_on in measurement_days
    # int4 is not measured (no Marlin kernel on the device): kept from the default, unfitted.
    assert cal.constants["int4_gemm_compute_efficiency"].fit is None
    assert cal.value("int4_gemm_compute_efficiency") == load_calibration("default").value(
        "int4_gemm_compute_efficiency")
    # Efficiencies are fractions of datasheet ceilings.
    for name in ("gemm_compute_efficiency", "gemm_memory_efficiency", "elementwise_memory_efficiency",
                 "attention_decode_memory_efficiency", "fp8_gemm_compute_efficiency"):
        assert 0.2 < cal.value(name) <= 1.0, name


def test_gpus_without_a_file_stay_uncalibrated() -> None:
    assert not load_calibration("L4-24GB").calibrated
    assert load_calibration("L4-24GB").gpu == "default"


def test_all_reduce_fitted_where_measured() -> None:
    """Each GPU's all-reduce comes from its own multi-GPU run; the growth per GPU only from the 4-GPU one."""
    h100, h200 = load_calibration("H100-SXM-80GB"), load_calibration("H200-141GB")
    for cal, run in ((h100, "run1-x2_allreduce.json"), (h200, "run15-x4_allreduce.json")):
        fit = cal.constants["allreduce_bus_efficiency"].fit
        assert fit is not None and fit.dataset.endswith(run)
    hop = h100.constants["allreduce_hop_latency_us"].fit
    assert hop is not None and hop.dataset.endswith("run15-x4_allreduce.json") and "transferred" in hop.method
    # The measured small all-reduce: 9.0 us on 2 GPUs, 16.1 us on 4 (H200, CUDA graph).
    rf = Roofline(load_gpus().get("H200-141GB"), h200)
    assert rf.allreduce("a", 4096, 2).time_s * 1e6 == pytest.approx(9.0, rel=0.25)
    assert rf.allreduce("a", 4096, 4).time_s * 1e6 == pytest.approx(16.1, rel=0.25)


# --------------------------------------------------------------------------- fit.py on synthetic data

KNOWN = {
    "graph_launch_gap_us": 1.1,
    "eager_launch_us": 8.0,
    "kernel_latency_us": 1.7,
    "elementwise_memory_efficiency": 0.77,
    "gemm_latency_us": 2.6,
    "norm_kernel_latency_us": 3.3,
    "norm_memory_efficiency": 0.64,
    "broadcast_kernel_latency_us": 1.4,
    "broadcast_memory_efficiency": 0.45,
    "gemm_compute_efficiency": 0.68,
    "gemm_memory_efficiency": 0.81,
    "gemm_tile_m": 128,
    "gemm_tile_n": 256,
    "fp8_gemm_compute_efficiency": 0.61,
    "int8_gemm_compute_efficiency": 0.45,
    "attention_prefill_compute_efficiency": 0.82,
    "attention_prefill_overhead_tokens": 150.0,
    "attention_softmax_head_dims": 45.0,
    "attention_decode_memory_efficiency": 0.88,
    "attention_decode_half_bytes": 6.0e6,
    "allreduce_latency_us": 6.0,
    "allreduce_bus_efficiency": 0.65,
}
"""Made-up constants, none equal to the default file's, that the fit must recover."""


def _synthetic() -> tuple[dict, dict]:
    """Microbench and all-reduce JSON in microbench.py's format, timed by the model itself with KNOWN."""
    rf = Roofline(H100, F.calibration_with(load_calibration("default"), KNOWN))
    us = 1e6
    hbm = [{"op": "copy", "bytes_buffer": b, "bytes_moved": 2 * b,
            "time_us": rf.elementwise("c", 2 * b, resident=False).time_s * us}
           for b in (2**16, 2**18, 2**20, 2**22, 2**24, 2**26, 2**28)]
    kinds = {"rmsnorm": "norm", "silu_mul": "broadcast"}
    elementwise = [{"op": op, "variant": "eager", "tokens": t, "bytes": t * 8192 * 3,
                    "time_us": rf.kernels("e", Kernels(*F.EAGER_ELEMENTWISE[op], kinds[op]), t * 8192 * 3).time_s * us}
                   for op in ("rmsnorm", "silu_mul") for t in (1, 64, 1024, 16384)]
    gemm = []
    for dtype, prec in (("bf16", "bf16"), ("fp8_e4m3_fastacc", "fp8"), ("int8", "int8")):
        for n, k in ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)):
            for m in (1, 8, 64, 256, 512, 1024, 4096, 16384):
                t = rf.gemm("g", m, n, k, prec, PREC).time_s * us
                gemm.append({"dtype": dtype, "M": m, "N": n, "K": k, "time_us": t})
    attn_prefill = [{"kind": "llm_causal", "batch": 1, "q_heads": 32, "kv_heads": 8, "head_dim": 128, "seq": s,
                     "causal": True, "backend": "cudnn", "default_backend": "cudnn",
                     "time_us": rf.attention_prefill("a", s, s, 32, 8, 128, True, 2).time_s * us}
                    for s in (512, 2048, 8192, 16384)]
    attn_prefill += [{"kind": "vit_full", "batch": b, "q_heads": 16, "kv_heads": 16, "head_dim": hd, "seq": s,
                      "causal": False, "backend": "cudnn", "default_backend": "cudnn",
                      "time_us": rf.attention_prefill("a", s, s, 16, 16, hd, False, 2, batch=b).time_s * us}
                     for hd in (64, 128) for s in (64, 256, 1024, 4096) for b in (1, 8)]
    attn_decode = [{"batch": b, "context": c, "q_heads": 32, "kv_heads": 8, "head_dim": 128, "form": "enable_gqa",
                    "backend": "flash", "time_us": rf.attention_decode("a", b, c, 32, 8, 128, 2).time_s * us}
                   for b in (1, 16, 256) for c in (256, 4096, 32768)]
    launch = {"graph_us_per_kernel": KNOWN["graph_launch_gap_us"], "eager_launch_cpu_us_per_kernel": KNOWN[
        "eager_launch_us"]}
    prov = {"gpu_name": "NVIDIA H100 80GB HBM3", "nvidia_smi": {"memory_total_mib": 81559},
            "utc_date": "2026-01-02T00:00:00+00:00"}
    mb = {"provenance": prov, "launch": launch, "hbm": {"points": hbm}, "elementwise": {"points": elementwise},
          "gemm": {"points": gemm}, "attn_prefill": {"points": attn_prefill}, "attn_decode": {"points": attn_decode}}
    ar = {"allreduce": {"points": [{"bytes": b, "world_size": 2,
                                    "graph_time_us": rf.allreduce("ar", b, 2).time_s * us}
                                   for b in (4096, 65536, 2**20, 2**24, 2**26)]}}
    return mb, ar


def test_fit_recovers_known_constants_from_synthetic_microbench(tmp_path: Path) -> None:
    import json

    mb, ar = _synthetic()
    (tmp_path / "mb.json").write_text(json.dumps(mb))
    (tmp_path / "ar.json").write_text(json.dumps(ar))
    cal = F.fit_files(tmp_path / "mb.json", tmp_path / "ar.json")
    assert cal.gpu == "H100-SXM-80GB" and cal.calibrated
    for name, want in KNOWN.items():
        got = cal.value(name)
        assert got == pytest.approx(want, rel=0.02), (name, got, want)
        fit = cal.constants[name].fit
        assert fit is not None and fit.fitted_on == "2026-01-02"
        if fit.mape_pct is not None:
            assert fit.mape_pct < 1.0, name
    assert cal.constants["allreduce_latency_us"].fit.dataset.endswith("ar.json")  # type: ignore[union-attr]


def test_fitted_yaml_round_trips(tmp_path: Path) -> None:
    import yaml

    from planner.catalog.loader import load_calibration_file

    mb, _ = _synthetic()
    gpu = F.gpu_for(mb)
    cal = F.build_calibration(gpu, F.fit_all(mb, gpu), {k: "x.json" for k in KNOWN}, fitted_on="2026-01-02")
    path = tmp_path / "c.yaml"
    path.write_text(F.calibration_yaml(cal, "header"))
    assert yaml.safe_load(path.read_text())["calibrated"] is True
    assert load_calibration_file(path).value("gemm_tile_n") == 256


def test_gpu_for_tells_sxm_from_pcie() -> None:
    def mb(name: str, mib: int) -> dict:
        return {"provenance": {"gpu_name": name, "nvidia_smi": {"memory_total_mib": mib}}}

    assert F.gpu_for(mb("NVIDIA H100 80GB HBM3", 81559)).name == "H100-SXM-80GB"
    assert F.gpu_for(mb("NVIDIA H200", 143771)).name == "H200-141GB"
    assert F.gpu_for(mb("NVIDIA H100 PCIe", 81559)).name == "H100-PCIE-80GB"


def test_sibling_transfer_keeps_absolute_bandwidth() -> None:
    """fit.py --sibling: latencies copied, efficiencies of non-HBM-bound kernels rescaled so that the absolute
    bandwidth is the sibling's (H200 from H100: x 3350/4800)."""
    h100 = load_calibration("H100-SXM-80GB")
    h200 = load_gpus().get("H200-141GB")
    fitted: dict = {}
    datasets: dict = {}
    F.transfer_from_sibling(fitted, datasets, h200, h100)
    assert set(fitted) == set(F.SIBLING_TRANSFER)
    ratio = load_gpus().get("H100-SXM-80GB").hbm_bandwidth_gb_per_s / h200.hbm_bandwidth_gb_per_s
    assert fitted["quant_latency_us"].value == h100.value("quant_latency_us")
    assert fitted["quant_memory_efficiency"].value == pytest.approx(h100.value("quant_memory_efficiency") * ratio)
    assert fitted["l2_resident_bytes"].value == h100.value("l2_resident_bytes")
    assert all(datasets[k].endswith(".json") for k in fitted)
    # A constant the GPU has its own fit for is left alone.
    own = {"quant_latency_us": F.Fitted(9.0, "own", 3, 1.0)}
    F.transfer_from_sibling(own, {}, h200, h100)
    assert own["quant_latency_us"].value == 9.0
