"""Workload files, distributions and presets."""

import numpy as np
import pytest

from planner.core.errors import RequestError
from planner.spec.workload import DEFAULT_WORKLOAD, PRESETS, ImageSize, IntDist, Workload
from planner.spec.workload_yaml import load_workload, workload_from_dict


def test_presets_follow_the_seed_use_cases():
    # Red Hat / Neural Magic GuideLLM profiles "image WxH / prompt / generated tokens".
    doc, vr, cap, chat = (PRESETS[k] for k in ("document-vqa", "visual-reasoning", "captioning", "chat"))
    assert (doc.images, doc.prompt_tokens, doc.output_tokens) == ([ImageSize(width=1680, height=2240)], 64, 128)
    assert (vr.images, vr.prompt_tokens, vr.output_tokens) == ([ImageSize(width=640, height=480)], 128, 128)
    assert (cap.images, cap.prompt_tokens, cap.output_tokens) == ([ImageSize(width=480, height=360)], 0, 128)
    assert chat.images == []


def test_existing_fields_still_work():
    w = Workload(prompt_tokens=100, output_tokens=20, images=[ImageSize(width=10, height=20)], arrival="poisson",
                 rate_per_s=2.0)
    assert (w.prompt_tokens, w.output_tokens, w.rate_per_s, w.arrival) == (100, 20, 2.0, "poisson")
    assert DEFAULT_WORKLOAD.images == [ImageSize(width=640, height=480)]
    s = w.sample(3)
    assert s.prompt_tokens.tolist() == [100, 100, 100] and s.images == [(0,), (0,), (0,)]


def test_yaml_file_with_distributions(tmp_path):
    (tmp_path / "arrivals.txt").write_text("# seconds\n0.5\n0.1\n1.5\n")
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: mixed\n"
        "prompt_tokens: {values: [64, 512], weights: [3, 1]}\n"
        "output_tokens: {samples: [10, 20, 30]}\n"
        "images_per_request: {values: [0, 2], weights: [1, 1]}\n"
        "image_size: {values: ['640x480', '1680x2240'], weights: [1, 3]}\n"
        "prefix_cache_hit: 0.25\n"
        "trace_file: arrivals.txt\n"
    )
    w = load_workload(path)
    # Representative request: rounded means, the most likely image count and size.
    assert w.prompt_tokens == round(0.75 * 64 + 0.25 * 512) == 176
    assert w.output_tokens == 20
    assert w.images == []  # 0 and 2 images are equally likely: the first mode (0) is taken
    assert w.arrival == "trace" and w.trace_s == (0.0, 0.4, 1.4)  # sorted, from the first arrival
    s = w.sample(20000, seed=1)
    assert abs((s.prompt_tokens == 64).mean() - 0.75) < 0.02
    assert set(s.output_tokens.tolist()) == {10, 20, 30}
    counts = np.array([len(x) for x in s.images])
    assert set(counts.tolist()) == {0, 2} and abs(counts.mean() - 1.0) < 0.05
    flat = np.concatenate([np.array(x) for x in s.images if x])
    big = [i for i, sz in enumerate(s.sizes) if sz == ImageSize(width=1680, height=2240)][0]
    assert abs((flat == big).mean() - 0.75) < 0.02
    # Deterministic for a seed.
    assert (w.sample(50, seed=3).prompt_tokens == w.sample(50, seed=3).prompt_tokens).all()


def test_preset_base_and_overrides():
    w = workload_from_dict({"preset": "document-vqa", "output_tokens": 300, "arrival": "poisson", "rate_per_s": 3})
    assert w.images == [ImageSize(width=1680, height=2240)] and w.output_tokens == 300 and w.rate_per_s == 3
    assert load_workload("captioning") is PRESETS["captioning"]


@pytest.mark.parametrize("data,msg", [
    ({"prompt_tokns": 5}, "unknown workload keys"),
    ({"image_size": "640-480"}, "640-480"),
    ({"prompt_tokens": {"values": [1, 2], "weights": [1]}}, "prompt_tokens"),
    ({"arrival": "poisson"}, "rate_per_s"),
    ({"preset": "nope"}, "preset 'nope'"),
])
def test_bad_workloads_raise_one_line_errors(data, msg):
    with pytest.raises(RequestError, match=msg):
        workload_from_dict(data)


def test_int_dist_mean_and_kinds():
    assert IntDist(kind="weighted", values=(10, 30), weights=(1, 3)).mean() == 25
    assert IntDist(kind="empirical", values=(1, 2, 3, 6)).mean() == 3
    with pytest.raises(ValueError):
        IntDist(kind="fixed", values=(1, 2))
