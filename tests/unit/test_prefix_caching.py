"""Prefix caching (issue 16 item 3): a workload's shared prefix and repeated images, the block-granular hit, its
effect on prefill, the encoder, KV capacity and the plan, against hand calculations, the simulator and run25's real
vLLM runs (vLLM 0.26.0, one H200)."""

from __future__ import annotations

import statistics
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from planner.calibrate.fit.serving import load_runs, predict_run
from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_models
from planner.cli.main import app
from planner.load.analytic import build_step_cost
from planner.load.simulator import build_requests, fixed_requests, simulate
from planner.solver import SolveRequest, solve
from planner.spec.config import ServingConfig, resolve
from planner.spec.shape import cached_prompt_tokens, request_shape
from planner.spec.slo import Budget, parse_slos
from planner.spec.workload import ImageSize, Workload
from planner.spec.workload_yaml import load_workload

VL = load_models().get("Qwen/Qwen2.5-VL-7B-Instruct")
H100 = load_gpus().get("H100")


def _cfg(**kw):
    return resolve(ServingConfig(model=VL, gpu=H100, **kw), load_engine())


# --------------------------------------------------------------------------- the hit, by hand


def test_the_hit_is_whole_blocks_and_never_the_whole_prompt():
    cfg = _cfg()
    assert cfg.kv_block_tokens == 16  # vLLM's default block size (catalogs/engines)
    # 500 shared tokens: 31 whole blocks (496 tokens); the 32nd block is partly private and is computed.
    assert cached_prompt_tokens(cfg, 1000, 500, 0, False, 0.0) == 496
    # A prompt that is all shared prefix still computes its last token (vLLM caps the hit at prompt - 1),
    # so 512 shared tokens of a 512-token prompt hit 496: the last block holds the token to compute.
    assert cached_prompt_tokens(cfg, 512, 512, 0, False, 0.0) == 496
    # A repeated image adds its tokens to the cached run: 448 text + 393 visual = 841 -> 832.
    assert cached_prompt_tokens(cfg, 1200, 448, 393, True, 0.0) == 832
    # The bare hit fraction, when larger, wins: 0.9 x 1000 = 900 -> 896.
    assert cached_prompt_tokens(cfg, 1000, 100, 0, False, 0.9) == 896
    # Off: nothing hits.
    off = _cfg(enable_prefix_caching=False)
    assert cached_prompt_tokens(off, 1000, 500, 393, True, 0.9) == 0
    # Vectorised as the simulator calls it.
    got = cached_prompt_tokens(cfg, np.array([1000, 40]), np.array([500, 40]), np.array([0, 0]),
                               np.array([False, False]), 0.0)
    assert got.tolist() == [496, 32]


def test_repeated_images_skip_the_encoder_in_the_shape_and_in_the_simulator():
    cfg = _cfg()
    wl = Workload(prompt_tokens=512, shared_prefix_tokens=448, output_tokens=64,
                  images=[ImageSize(width=1680, height=2240)], repeated_image_fraction=0.75)
    shape = request_shape(cfg, wl)
    visual = shape.visual_tokens
    fresh = (448 // 16) * 16
    again = ((448 + visual) // 16) * 16
    assert shape.encoded_share == pytest.approx(0.25)
    assert shape.cached_tokens == round(0.25 * fresh + 0.75 * again)
    assert len(shape.classes) == 2  # the repeats and the others, so the load models see the spread of the work
    cost = build_step_cost(cfg, load_calibration(cfg.gpu.name))
    reqs = build_requests(cfg, wl, cost, 4000, seed=3)
    repeated = reqs.vision_ms == 0
    assert abs(repeated.mean() - 0.75) < 0.03
    assert np.all(reqs.cached[repeated] == again) and np.all(reqs.cached[~repeated] == fresh)
    assert np.all(reqs.enc_tokens[repeated] == 0)
    # Caching off: every image is encoded and nothing is cached.
    off = build_requests(_cfg(enable_prefix_caching=False), wl, cost, 400, seed=3)
    assert np.all(off.vision_ms > 0) and np.all(off.cached == 0)


def test_a_shared_prefix_longer_than_a_prompt_is_refused():
    with pytest.raises(ValueError, match="shortest prompt"):
        Workload(prompt_tokens=100, shared_prefix_tokens=200)


def test_workload_files_take_the_prefix_keys(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("prompt_tokens: 600\nshared_prefix_tokens: 512\nimage_size: 640x480\nimages_per_request: 1\n"
                 "repeated_image_fraction: 0.5\noutput_tokens: 100\nrate_per_s: 3\n")
    wl = load_workload(str(f))
    assert wl.shared_prefix_tokens == 512 and wl.repeated_image_fraction == 0.5


# --------------------------------------------------------------------------- KV capacity


def test_shared_prefix_blocks_are_held_once_so_more_sequences_fit():
    # 40,000 KV tokens; 32 clients, 4,096-token prompts of which 4,000 shared, 64 out. Unshared, a sequence
    # holds ~4,160 tokens: 9 fit at once. Shared, it holds its ~160 private tokens: all 32 fit.
    cfg = _cfg()
    cost = build_step_cost(cfg, load_calibration(cfg.gpu.name))
    shared = simulate(cost, fixed_requests(512, 4096, 64, cached=4000), 40_000, "closed", concurrency=32, seed=0)
    unshared = simulate(cost, fixed_requests(512, 4096, 64, cached=0), 40_000, "closed", concurrency=32, seed=0)
    thr = [float(np.sum(r.measured)) / (r.window_s[1] - r.window_s[0]) for r in (shared, unshared)]
    # Unshared: at most 9 decode together and each prompt is computed in full, so at least 3.5x lower throughput.
    assert thr[0] > 3.5 * thr[1]
    assert shared.preemptions == 0


# --------------------------------------------------------------------------- real vLLM (run25)

PREFIX_RUNS = [r for r in load_runs() if r.label.startswith("prefix_") and not r.warmup]


def test_run25_prefix_runs_are_predicted_within_the_held_out_targets():
    # All held out (the prefix model fitted nothing). Measured/predicted TPOT p50 were within 8% on every run and
    # throughput within 4%; the closed-loop TTFT p50 at 16 clients is the worst (118 measured, ~60 predicted).
    assert len(PREFIX_RUNS) == 8 and all(r.held_out for r in PREFIX_RUNS)
    tpot, thr, ttft = [], [], []
    for r in PREFIX_RUNS:
        p = predict_run(r, seeds=2)
        tpot.append(abs(p.tpot_p50 / r.measured["tpot_p50"] - 1))
        thr.append(abs(p.throughput / r.measured["throughput"] - 1))
        ttft.append(abs(p.ttft_p50 / r.measured["ttft_p50"] - 1))
    assert max(tpot) < 0.10
    assert max(thr) < 0.06
    assert statistics.median(ttft) < 0.20


def test_run25_a_shared_prefix_lowers_ttft_as_measured():
    by = {r.label: r for r in PREFIX_RUNS}
    # Poisson 16 req/s, 1,024-token prompts: with 768 shared, TTFT p50 fell from 53 to 35 ms on the real server.
    plain, shared = by["prefix_p0_r16"], by["prefix_p768_r16"]
    assert shared.measured["ttft_p50"] < 0.8 * plain.measured["ttft_p50"]
    assert predict_run(shared, seeds=2).ttft_p50 < 0.8 * predict_run(plain, seeds=2).ttft_p50


# --------------------------------------------------------------------------- the plan

DOC_QA = Workload(name="doc-qa", prompt_tokens=512, shared_prefix_tokens=448, output_tokens=128,
                  images=[ImageSize(width=1680, height=2240)], repeated_image_fraction=0.75, arrival="poisson",
                  rate_per_s=12)
SLOS = parse_slos(["ttft_p95=1500ms", "tpot_p95=50ms"])


def _solve(prefix_caching: bool):
    return solve(SolveRequest(model=VL, workloads=[DOC_QA], slos=SLOS, budget=Budget(), gpus=[H100],
                              precisions=["fp8"], kv_cache_dtypes=["fp8"], prefix_caching=prefix_caching))


def test_prefix_caching_saves_gpus_on_repeated_pages_and_the_simulator_agrees():
    on, off = _solve(True), _solve(False)
    a, b = on.chosen[0], off.chosen[0]
    assert a.cfg.enable_prefix_caching and not b.cfg.enable_prefix_caching
    assert a.replicas * a.cfg.num_gpus < b.replicas * b.cfg.num_gpus
    # The cheaper plan is only cheaper because of its cache: the simulator, serving the same traffic on the
    # smaller deployment with caching off, misses the TTFT SLO.
    cfg_off = replace(a.cfg, enable_prefix_caching=False)
    cost = build_step_cost(cfg_off, load_calibration(cfg_off.gpu.name))
    res = simulate(cost, build_requests(cfg_off, DOC_QA, cost, 3000, 0), a.memory.kv_capacity_tokens, "poisson",
                   DOC_QA.rate_per_s / a.replicas, seed=0, cfg=cfg_off)
    assert float(np.percentile(res.ttft_ms, 95)) > 1500


@pytest.mark.parametrize("args, needle", [
    (["solve", "--shared-prefix", "9999"], "shortest prompt"),
    (["solve", "--repeated-images", "1.5"], "--repeated-images"),
    (["solve", "--prefix-caching", "maybe"], "--prefix-caching"),
    (["estimate", "-m", "Qwen/Qwen2.5-VL-7B-Instruct", "--prefix-caching", "auto"], "--prefix-caching"),
    (["estimate", "-m", "Qwen/Qwen3-8B", "--repeated-images", "0.5"], "needs images"),
])
def test_bad_prefix_input_exits_2_with_one_line(args: list[str], needle: str) -> None:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
