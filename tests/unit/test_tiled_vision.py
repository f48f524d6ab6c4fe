"""Tiled vision encoders: every tile (and thumbnail) is its own attention sequence (issue 13, item 1).

Expected values are hand calculations from the public configs (tile size / patch size, CLS token, depth,
width) and the repository's own H100 measurement of InternViT-300M on 13 tiles."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_models, load_precisions
from planner.estimate import estimate
from planner.perf.roofline import Roofline
from planner.perf.stepcost import StepCost
from planner.perf.vision import vision_encode
from planner.spec.config import ResolvedConfig, ServingConfig, resolve
from planner.spec.shape import request_shape
from planner.spec.workload import ImageSize, Workload

ROOT = Path(__file__).resolve().parents[2]
MEAS = ROOT / "catalogs" / "calibration" / "measurements" / "h100-sxm-80gb"


def _cfg(model: str, gpu: str = "H100") -> ResolvedConfig:
    return resolve(ServingConfig(model=load_models().get(model), gpu=load_gpus().get(gpu)), load_engine())


def _workload(w: int, h: int) -> Workload:
    return Workload(name="t", prompt_tokens=64, output_tokens=8, images=[ImageSize(width=w, height=h)])


def _attention_gflop(model: str, w: int, h: int) -> tuple[float, int, int]:
    cfg = _cfg(model)
    shape = request_shape(cfg, _workload(w, h))
    rf = Roofline(cfg.gpu, load_calibration(cfg.gpu.name))
    st = vision_encode(rf, cfg, load_precisions(), shape.encoder_patches, shape.images,
                       sequences=shape.vit_sequences)
    flops = sum(op.flops * op.count for op in st.ops if op.name.startswith("vit_attention"))
    return flops / 1e9, shape.vit_sequences, shape.encoder_patches


# (model, image, tiles incl. thumbnail, ViT tokens per tile, depth, width): attention FLOPs are
# 4 x tokens^2 x width per tile and layer (QK^T and PV), summed over tiles.
TILED = [
    # 640x480 (4:3) -> 4x3 grid + thumbnail = 13 tiles of 448 px: (448/14)^2 + CLS = 1025 tokens.
    ("OpenGVLab/InternVL3-8B", (640, 480), 13, 1025, 24, 1024),
    # anyres 2x2 grid + base image = 5 crops of 336 px: (336/14)^2 + CLS = 577 tokens; CLIP ViT-L has 24
    # layers, vision_feature_layer -2 runs 23 of them.
    ("llava-hf/llava-v1.6-mistral-7b-hf", (640, 480), 5, 577, 23, 1024),
    # longest edge 1456 = 4 x 364 -> 4x3 tiles + global image = 13 of (364/14)^2 = 676 tokens (SigLIP, no CLS).
    ("HuggingFaceM4/Idefics3-8B-Llama3", (1680, 2240), 13, 676, 27, 1152),
]


@pytest.mark.parametrize("model,size,tiles,per_tile,depth,width", TILED)
def test_tiled_encoder_attends_within_each_tile(model: str, size: tuple[int, int], tiles: int, per_tile: int,
                                                depth: int, width: int) -> None:
    gflop, seqs, patches = _attention_gflop(model, *size)
    assert (seqs, patches) == (tiles, tiles * per_tile)
    assert gflop == pytest.approx(4 * per_tile**2 * width * tiles * depth / 1e9, rel=1e-9)
    # The old cost, one sequence of all patches, was `tiles` times the attention work.
    one_sequence = 4 * patches**2 * width * depth / 1e9
    assert one_sequence / gflop == pytest.approx(tiles, rel=1e-9)


def test_mllama_attends_across_its_tiles() -> None:
    # Mllama's ViT reshapes an image's tiles into one sequence (num_tiles x 1601) for its transformers.
    gflop, seqs, patches = _attention_gflop("meta-llama/Llama-3.2-11B-Vision-Instruct", 1120, 1120)
    assert (seqs, patches) == (1, 4 * 1601)


def test_native_resolution_encoder_is_one_sequence_per_image() -> None:
    cfg = _cfg("Qwen/Qwen2.5-VL-7B-Instruct")
    wl = Workload(name="t", prompt_tokens=64, output_tokens=8,
                  images=[ImageSize(width=640, height=480), ImageSize(width=1024, height=1024)])
    assert request_shape(cfg, wl).vit_sequences == 2


def _measured_internvit_13_tiles() -> float:
    pts = json.loads((MEAS / "run2_validation.json").read_text())["points"]
    (p,) = [p for p in pts if p.get("arch") == "internvit-300m" and p.get("label") == "13 tiles"]
    return float(p["time_ms"])


def test_internvl3_vision_encode_matches_h100_measurement() -> None:
    measured = _measured_internvit_13_tiles()
    assert measured == pytest.approx(24.7, abs=0.1)
    est = estimate(_cfg("OpenGVLab/InternVL3-8B"), _workload(640, 480))
    assert est.shape.vit_sequences == 13
    assert est.vision.time_ms == pytest.approx(measured, rel=0.15)
    # The load models (simulator and analytic) cost the same tiled pass.
    cost = StepCost(est.config, est.calibration, load_precisions())
    assert cost.vision_ms(1, est.shape.encoder_patches, est.shape.vit_sequences) == pytest.approx(
        est.vision.time_ms + est.vision_host_ms)


def test_validation_harness_reads_tiles_as_sequences_of_one_image() -> None:
    spec = importlib.util.spec_from_file_location("bench_speed_accuracy",
                                                  ROOT / "tests" / "benchmarks" / "bench_speed_accuracy.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_speed_accuracy", bench)
    spec.loader.exec_module(bench)
    pts = json.loads((MEAS / "run2_validation.json").read_text())["points"]
    (old,) = [p for p in pts if p.get("arch") == "internvit-300m" and p.get("label") == "13 tiles"]
    # Stored before 1.3.0: 13 "images" of 1025 tokens were the 13 tiles of one image.
    assert bench.vision_point_shape(old) == (1, 13 * 1025, 13)
    new = dict(old, images=1, tiles_per_image=13, tokens_per_image=13 * 1025, sequences=13)
    assert bench.vision_point_shape(new) == (1, 13 * 1025, 13)
    clip = [p for p in pts if p.get("arch") == "clip-vit-l-14-336" and p.get("images") == 5][0]
    assert bench.vision_point_shape(clip) == (5, 5 * 577, 5)
