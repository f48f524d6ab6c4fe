"""The epd topology (planner/solver/epd.py, planner/load/simulator/encoder_pool.py, planner/perf/ec_transfer.py):
the encoder queue against a hand case, the analytic encoder wait against Pollaczek-Khinchine and the event loop,
the measured transfer table, the simulator against the aggregated engine with encoding taken out, the search."""

from dataclasses import replace

import numpy as np
import pytest

from planner.catalog.engine_support import encoder_only_problem
from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_models, load_precisions
from planner.load.simulator import build_requests, percentiles, simulate
from planner.load.simulator.encoder_pool import encoder_waits, permuted, simulate_epd
from planner.perf.ec_transfer import embedding_megabytes, request_transfer_ms, transfer_ms
from planner.perf.memory import memory_breakdown
from planner.perf.stepcost import StepCost
from planner.spec.config import ServingConfig, resolve
from planner.spec.workload import DEFAULT_WORKLOAD, ImageSize, SizeDist

ENGINE = load_engine()
PREC = load_precisions()
QWEN = load_models().get("Qwen/Qwen2.5-VL-7B-Instruct")


def test_encoder_queue_hand_case_two_servers_three_requests():
    # 2 encoders; requests at 0, 0.1, 0.2 s needing 1000, 1000, 500 ms. The first two start at once on the two
    # encoders (busy until 1.0 and 1.1 s); the third waits for the first free one, at 1.0 s: 800 ms.
    w = encoder_waits(np.array([0.0, 0.1, 0.2]), np.array([1000.0, 1000.0, 500.0]), 2)
    assert w.tolist() == pytest.approx([0.0, 0.0, 800.0])
    # A request without images (encode 0) neither waits nor holds an encoder: the third still waits 800 ms.
    w = encoder_waits(np.array([0.0, 0.05, 0.1, 0.2]), np.array([1000.0, 0.0, 1000.0, 500.0]), 2)
    assert w.tolist() == pytest.approx([0.0, 0.0, 0.0, 800.0])


def test_encoder_wait_matches_pollaczek_khinchine_and_the_event_loop():
    from planner.solver.epd import EncoderSide

    # One encoder, constant 100 ms service, 6 req/s: rho 0.6; M/D/1 mean wait = rho S / (2 (1 - rho)) = 75 ms.
    side = EncoderSide(cfg=None, share=1.0, points=((1.0, 100.0, 0.0),))  # type: ignore[arg-type]
    d = side.delay(1, 6.0)
    assert d.mean - 100.0 == pytest.approx(0.6 * 100 / (2 * 0.4), rel=1e-9)
    rng = np.random.default_rng(3)
    arr = np.cumsum(rng.exponential(1 / 6.0, 200_000))
    waits = encoder_waits(arr, np.full(len(arr), 100.0), 1)
    assert float(np.mean(waits)) == pytest.approx(75.0, rel=0.05)
    assert side.load(1, 6.0) == pytest.approx(0.6)
    assert side.fewest(6.0, 0.5) == 2  # 0.6 busy on one is over a 0.5 ceiling; 0.3 on two is not


def test_transfer_table_is_run27_and_linear_between_points():
    spec = ENGINE.encoder_transfer
    assert spec is not None and spec.source in ENGINE.sources
    # A 1680x2240 page of Qwen2.5-VL-7B: 4802 visual tokens x 3584 hidden x 2 bytes = 34.42 MB, measured 47.2 + 11.3.
    mb = embedding_megabytes(QWEN, 4802, 2)
    assert mb == pytest.approx(4802 * 3584 * 2 / 1e6)
    assert transfer_ms(spec, mb) == pytest.approx((47.208, 11.347), abs=1e-3)
    # 20 MB: between the 11.225 and 34.421 MB rows, by hand.
    f = (20 - 11.225) / (34.421 - 11.225)
    assert transfer_ms(spec, 20.0) == pytest.approx((5.232 + f * (47.208 - 5.232), 2.858 + f * (11.347 - 2.858)))
    # Two images of a request: two files of half its tokens, one after the other.
    one = sum(transfer_ms(spec, embedding_megabytes(QWEN, 1000, 2)))
    assert request_transfer_ms(spec, QWEN, 2000, 2) == pytest.approx(2 * one)


def test_encoder_only_support_from_the_catalog():
    assert encoder_only_problem(QWEN) is None
    idefics = next(m for m in load_models() if m.hf_architecture == "Idefics3ForConditionalGeneration")
    why = encoder_only_problem(idefics)
    assert why is not None and "_mark_language_model" in why
    text = next(m for m in load_models() if m.vision is None)
    assert "text model" in (encoder_only_problem(text) or "")


def test_huge_encoder_pool_and_no_transfer_equal_the_aggregated_engine_without_encoding_plus_encode_time():
    cfg = resolve(ServingConfig(model=QWEN, gpu=load_gpus().get("H100"), max_num_seqs=64, max_model_len=8192),
                  ENGINE)
    cost = StepCost(cfg, load_calibration(cfg.gpu.name), PREC)
    kv = memory_breakdown(cfg, ENGINE, PREC).kv_capacity_tokens
    sizes = SizeDist(kind="empirical", values=(ImageSize(width=448, height=448), ImageSize(width=1280, height=960),
                                                 ImageSize(width=1680, height=2240)))
    wl = DEFAULT_WORKLOAD.model_copy(update={"arrival": "poisson", "rate_per_s": 1.5,
                                            "image_size_dist": sizes})
    n = 3000
    reqs = build_requests(cfg, wl, cost, n, 0)
    assert len(set(np.round(reqs.vision_ms, 3).tolist())) == 3  # three image sizes: reordering can happen
    out = simulate_epd(cost, cfg, reqs, kv, reqs.vision_ms, np.zeros(n), 10_000, "poisson", 1.5, seed=0)
    assert float(np.max(out.wait_ms)) == 0.0
    # Expected, independently: the aggregated engine on the same arrivals with the encoding removed, plus each
    # request's encode time.
    bare = simulate(cost, permuted(reqs, np.arange(n)), kv, "poisson", 1.5, seed=0, cfg=cfg)
    expect = bare.ttft_ms + reqs.vision_ms[bare.measured]
    got = out.ttft_ms
    for stat in ("p50", "p95"):
        assert percentiles(got)[stat] == pytest.approx(percentiles(expect)[stat], rel=0.05)
    assert percentiles(out.tpot_ms)["p50"] == pytest.approx(percentiles(bare.tpot_ms)["p50"], rel=0.05)


def _request(**kw):
    from planner.app.solve_request import SolveInput, build_request

    base = dict(model="Qwen2.5-VL-7B-Instruct", images=["1680x2240"], prompt_tokens=64, output_tokens=128,
                rate=10.0, slo=["ttft_p95=2000ms"], topologies="aggregated,epd", gpus="H100-SXM-80GB")
    base.update(kw)
    return build_request(SolveInput(**base))[0]


def test_search_prices_lm_and_encoder_gpus_and_sums_the_encoder_path():
    from planner.solver.epd import search_epd

    req = replace(_request(), verify=False)
    out = search_epd(req, float("inf"))
    b = out.best
    assert b is not None, out.note
    price = b.lm.cfg.gpu.price.price_usd_per_gpu_hour
    assert b.cost_per_hour == pytest.approx((b.lm.replicas * b.lm.cfg.num_gpus + b.replicas * b.encoders) * price)
    assert b.lm.cfg.num_gpus + b.encoders <= b.lm.cfg.gpu.gpus_per_node  # one unit fits one node
    assert b.lm.shape.encoded_share == 0.0  # the LM never runs the ViT
    for s in ("p50", "p95"):
        assert getattr(b.ttft, s) == pytest.approx(getattr(b.lm.prediction.ttft, s) + getattr(b.encoder_delay, s))
    # The delay at least the encode and the transfer of the page (no wait counted below that).
    assert b.encoder_delay.p50 >= b.encode_ms + b.transfer_ms - 1e-6
    assert b.encoder_load <= req.max_load + 1e-9
    assert b.ttft.p95 <= 2000.0


def test_epd_not_searched_for_text_workloads_or_unsupported_models():
    from planner.solver.epd import search_epd

    out = search_epd(_request(images=None, no_image=True), float("inf"))
    assert out.best is None and "no images" in out.note
    out = search_epd(_request(model="HuggingFaceTB/SmolVLM-Instruct", gpus=None), float("inf"))
    assert out.best is None and "_mark_language_model" in out.note
