"""`--mm-encoder-tp-mode` searched by the solver (issue 15, "within one replica"): the vision encoder sharded over
the TP ranks (``weights``, vLLM's default) or replicated, each rank encoding its share of the images (``data``),
only for the architectures whose vLLM model class sets ``supports_encoder_tp_data`` (catalogs/engines/support.yaml)."""

from __future__ import annotations

from dataclasses import replace

from planner.app.solve_request import SolveInput, build_request_models
from planner.catalog.engine_support import supports_encoder_tp_data
from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_models
from planner.load.analytic import build_step_cost
from planner.solver import solve
from planner.solver.candidate import Screening
from planner.solver.configs import configs
from planner.spec.config import ServingConfig, resolve


def _req(model: str, images: list[str] | None, **kw):
    inp = SolveInput(model=model, images=images, no_image=images is None, prompt_tokens=64, output_tokens=128,
                     rate=2.0, slo=["ttft_p95=1500ms"], gpus="H100", precisions="bf16", verify=False, **kw)
    return build_request_models(inp)[0]


def test_data_mode_is_listed_only_where_vllm_supports_it_and_it_can_matter():
    models = load_models()
    assert supports_encoder_tp_data(models.get("Qwen/Qwen2.5-VL-7B-Instruct"))
    assert not supports_encoder_tp_data(models.get("google/gemma-3-27b-it"))  # gemma3_mm.py does not set it
    assert not supports_encoder_tp_data(models.get("Qwen/Qwen3-8B"))  # no vision encoder

    def modes(model: str, images: list[str] | None) -> set[tuple[int, str]]:
        req = _req(model, images)
        return {(c.base.tp, c.base.mm_encoder_tp_mode) for c in configs(req, req.workloads[0], Screening())}

    qwen = modes("Qwen/Qwen2.5-VL-7B-Instruct", ["1680x2240"] * 2)
    assert (2, "data") in qwen and (2, "weights") in qwen and (1, "data") not in qwen  # TP 1 has nothing to split
    # One image per request: the load models encode each request's images in a call of its own, so data mode
    # (one rank per image) cannot win and is not searched.
    assert all(m == "weights" for _, m in modes("Qwen/Qwen2.5-VL-7B-Instruct", ["1680x2240"]))
    assert all(m == "weights" for _, m in modes("google/gemma-3-27b-it", ["1680x2240"] * 2))
    assert all(m == "weights" for _, m in modes("Qwen/Qwen2.5-VL-7B-Instruct", None))  # text-only requests


def test_data_mode_wins_with_several_images_per_request_and_loses_with_one():
    # Four pages at TP 4: each rank encodes one page with no all-reduce per ViT layer; one page at TP 2: one rank
    # encodes it alone while the other idles, against the sharded ViT's two halves.
    model, gpu = load_models().get("Qwen/Qwen2.5-VL-7B-Instruct"), load_gpus().get("H100")

    def vision(tp: int, mode: str, images: int) -> float:
        cfg = resolve(ServingConfig(model=model, gpu=gpu, tp=tp, mm_encoder_tp_mode=mode), load_engine())  # type: ignore[arg-type]
        cost = build_step_cost(cfg, load_calibration(gpu.name))
        return cost.vision_ms(images, 19200 * images, images)

    assert vision(4, "data", 4) < vision(4, "weights", 4)
    assert vision(2, "data", 1) > vision(2, "weights", 1)


def test_the_search_takes_data_mode_where_it_is_cheaper_and_never_pays_for_it(monkeypatch):
    # More choices can only lower the optimum; on four pages per request at TP 2 data mode is what makes it cheaper.
    req = replace(_req("Qwen/Qwen2.5-VL-7B-Instruct", ["1680x2240"] * 4), tp=2)
    both = solve(req)
    monkeypatch.setattr("planner.solver.configs.supports_encoder_tp_data", lambda *a, **k: False)
    weights_only = solve(req)
    cost = [sum(c.cost_per_hour for c in s.chosen) for s in (both, weights_only)]
    assert cost[0] < cost[1]
    assert both.chosen[0].cfg.mm_encoder_tp_mode == "data"
    assert all(c.cfg.mm_encoder_tp_mode == "weights" for c in weights_only.chosen)
