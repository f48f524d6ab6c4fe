"""The planned engine limits admit the workload's largest request, not just its mean one."""

from planner.catalog.loader import load_gpus, load_models
from planner.solver import TEMPLATE_ROOM_TOKENS, SolveRequest, solve
from planner.spec.slo import Budget, parse_slos
from planner.spec.workload import ImageSize, IntDist, SizeDist, Workload

MODEL = load_models().get("Qwen/Qwen2.5-VL-3B-Instruct")


def test_limits_cover_the_largest_request_of_a_distribution():
    wl = Workload(
        name="mixed", prompt_tokens=300, output_tokens=200, arrival="poisson", rate_per_s=0.5,
        images=[ImageSize(width=640, height=480)],
        prompt_tokens_dist=IntDist(kind="weighted", values=(100, 2000), weights=(0.9, 0.1)),
        output_tokens_dist=IntDist(kind="weighted", values=(100, 1000), weights=(0.9, 0.1)),
        images_per_request_dist=IntDist(kind="weighted", values=(1, 3), weights=(0.8, 0.2)),
        image_size_dist=SizeDist(kind="weighted", values=(ImageSize(width=640, height=480),
                                                          ImageSize(width=1344, height=1008)), weights=(0.7, 0.3)),
    )
    sol = solve(SolveRequest(model=MODEL, workloads=[wl], slos=parse_slos(["ttft_p95=5s"]), budget=Budget(),
                             gpus=[load_gpus().get("H100")], precisions=["bf16"], kv_cache_dtypes=["auto"]))
    assert sol.status == "optimal"
    cfg = sol.chosen[0].cfg
    # Hand calculation, Qwen2.5-VL smart_resize (factor 28, the image already a multiple): 1344x1008 ->
    # 48 x 36 merged 28-px cells = 1728 visual tokens; 1344 * 1008 = 1,354,752 pixels.
    assert cfg.limit_images_per_prompt == 3
    assert cfg.mm_processor_options["max_pixels"] == 1344 * 1008
    longest = 2000 + 3 * 1728 + 1000  # = 8184 tokens
    assert cfg.max_model_len >= longest + TEMPLATE_ROOM_TOKENS
    assert cfg.max_model_len == 9216  # the next multiple of 1024
