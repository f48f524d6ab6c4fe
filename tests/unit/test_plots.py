"""Every plot type is rendered and read back as a non-empty PNG of the expected size."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from matplotlib import image as mpimg  # noqa: E402

from planner.app import plots  # noqa: E402
from planner.app.scenario import load_scenario  # noqa: E402
from planner.app.whatif import SweepResult, parse_varies, sweep  # noqa: E402
from planner.core.errors import RequestError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHATBOT = ROOT / "examples" / "chatbot-rtx4090" / "scenario.yaml"
# FIGSIZE inches x DPI: 10 x 6 in at 100 dpi
WIDTH_PX, HEIGHT_PX = 1000, 600


@pytest.fixture(scope="module")
def fixed_sweep() -> SweepResult:
    sc = load_scenario(CHATBOT)
    return sweep(sc, parse_varies(["precision=int4,int8", "batch=1,8", "rate=0.1..6:12"]), fixed=True)


@pytest.fixture(scope="module")
def solver_sweep() -> SweepResult:
    sc = load_scenario(CHATBOT).model_copy(update={"budget": None})
    return sweep(sc, parse_varies(["gpu=RTX-4090,L40S", "precision=int8,int4"]), fixed=False)


def _check_png(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[:2] == (HEIGHT_PX, WIDTH_PX)
    assert float(img[..., :3].std()) > 0.01  # not a blank canvas


@pytest.mark.parametrize("name", plots.PLOT_NAMES)
def test_each_plot_type_renders_a_png_of_the_expected_size(name: str, fixed_sweep: SweepResult,
                                                           tmp_path: Path) -> None:
    fn = getattr(plots, name)
    path = fn(fixed_sweep, tmp_path / f"{name}.png")
    _check_png(path)


def test_solver_sweep_plots(solver_sweep: SweepResult, tmp_path: Path) -> None:
    files = plots.render_all(solver_sweep, tmp_path)
    # no rate/concurrency varied: no latency-vs-rate plot
    assert [f.name for f in files] == ["cost_vs_latency.png", "memory_breakdown.png", "cost_per_gpu.png"]
    for f in files:
        _check_png(f)


def test_render_all_with_rate_sweep_writes_four_plots(fixed_sweep: SweepResult, tmp_path: Path) -> None:
    files = plots.render_all(fixed_sweep, tmp_path / "out")
    assert sorted(f.name for f in files) == sorted(f"{n}.png" for n in plots.PLOT_NAMES)


def test_latency_vs_rate_needs_a_rate_dimension(solver_sweep: SweepResult, tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="--vary rate"):
        plots.latency_vs_rate(solver_sweep, tmp_path / "x.png")


def test_plots_of_an_all_infeasible_sweep_still_render(tmp_path: Path) -> None:
    sc = load_scenario(CHATBOT)
    res = sweep(sc, parse_varies(["rate=100,200"]), fixed=True)
    assert not any(r["feasible"] for r in res.rows)
    for name in plots.PLOT_NAMES:
        _check_png(getattr(plots, name)(res, tmp_path / f"{name}.png"))


def test_pareto_front_hand_example() -> None:
    # (latency, cost): (1, 5) and (2, 3) and (4, 1) trade off; (3, 4) is beaten by (2, 3); (5, 1) by (4, 1).
    pts = [(3.0, 4.0), (1.0, 5.0), (4.0, 1.0), (2.0, 3.0), (5.0, 1.0)]
    assert plots.pareto_front(pts) == [1, 3, 2]


def test_knee_rate_hand_example() -> None:
    # p95 doubles from 100 ms between rate 2 (150 ms) and rate 3 (250 ms): 2 + (200 - 150) / (250 - 150) = 2.5
    assert plots.knee_rate([1, 2, 3, 4], [100, 150, 250, 400]) == pytest.approx(2.5)
    assert plots.knee_rate([1, 2], [100, 120]) is None
    # a saturated point (None) right after a finite one: halfway
    assert plots.knee_rate([1, 2, 3], [100, 110, None]) == pytest.approx(2.5)


def test_a_single_bar_cost_per_gpu_plot_is_not_drawn(tmp_path: Path) -> None:
    """Issue 13, item 10: a sweep over one GPU type and one precision has one cost bar: nothing to compare."""
    sc = load_scenario(CHATBOT).model_copy(update={"budget": None})
    res = sweep(sc, parse_varies(["gpu=L40S", "precision=int8"]), fixed=False)
    files = plots.render_all(res, tmp_path)
    assert "cost_per_gpu.png" not in [f.name for f in files]
