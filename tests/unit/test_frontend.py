"""The API server's image work (decode, resize, normalise) is part of TTFT and e2e, not of engine steps."""

import json

import pytest

from planner.calibrate.fit import fit_frontend
from planner.catalog.loader import catalog_root, load_calibration, load_gpus, load_models
from planner.estimate import estimate
from planner.spec.config import ServingConfig
from planner.spec.workload import PRESETS, ImageSize, Workload

CAL = load_calibration("default")
RUN6 = catalog_root() / "calibration" / "measurements" / "host-cpu" / "run6_preprocess.json"


def test_default_constants_are_the_fit_of_the_shipped_measurement():
    fitted = fit_frontend(json.loads(RUN6.read_text()))
    for name, f in fitted.items():
        assert CAL.value(name) == pytest.approx(f.value, abs=0.01), name
        assert CAL.constants[name].fit is not None and CAL.constants[name].fit.n_points == f.n_points


def test_document_page_ttft_alone_adds_the_frontend_by_hand():
    cfg = ServingConfig(model=load_models().get("Qwen/Qwen2.5-VL-7B-Instruct"), gpu=load_gpus().get("H100"))
    est = estimate(cfg, PRESETS["document-vqa"])
    # 1680x2240 = 3.7632 MP sent; Qwen2.5-VL keeps it (a multiple of 28): 120 x 160 patches of 14 x 14 = 3.7632 MP.
    cal = est.calibration
    by_hand = (cal.value("request_latency_ms") + cal.value("frontend_ms_per_image") * 1
               + cal.value("frontend_ms_per_input_megapixel") * 3.7632
               + cal.value("frontend_ms_per_processed_megapixel") * 3.7632)
    assert est.frontend_ms == pytest.approx(by_hand, rel=1e-6)
    parts = (est.frontend_ms + est.vision.time_ms + est.vision_host_ms + est.prefill.time_ms
             + est.to_json()["latency"]["engine_overhead_ms"])
    assert est.ttft.p50 == pytest.approx(parts, rel=1e-3)


def test_text_requests_pay_only_the_fixed_request_path():
    cfg = ServingConfig(model=load_models().get("meta-llama/Llama-3.1-8B-Instruct"), gpu=load_gpus().get("H100"))
    est = estimate(cfg, Workload(prompt_tokens=512, output_tokens=64))
    # No image work; the request's fixed path (HTTP, tokenising, hand-off) is paid by every request.
    assert est.frontend_ms == pytest.approx(est.calibration.value("request_latency_ms"))
    assert est.frontend_ms > 0


def test_simulated_ttft_includes_the_frontend_delay():
    cfg = ServingConfig(model=load_models().get("Qwen/Qwen2.5-VL-7B-Instruct"), gpu=load_gpus().get("H100"))
    wl = Workload(prompt_tokens=64, output_tokens=32, images=[ImageSize(width=1680, height=2240)],
                  arrival="poisson", rate_per_s=0.2)
    est = estimate(cfg, wl, requests=300)
    # At 0.2 requests/s nothing queues: every TTFT is at least the frontend delay plus the GPU work alone.
    assert est.ttft.p50 >= est.frontend_ms + est.vision.time_ms + est.prefill.time_ms - 1e-6
