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


# --------------------------------------------------------------------------- readable layout (issue 13, item 10)
def _text_boxes(fig, texts):  # type: ignore[no-untyped-def]
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]


def _disjoint(boxes) -> bool:  # type: ignore[no-untyped-def]
    return not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_memory_breakdown_tick_labels_neither_collide_nor_leave_the_figure() -> None:
    sc = load_scenario(CHATBOT)
    result = sweep(sc, parse_varies(["precision=int4,int8", "batch=1,8,64", "context=2k,8k,32k"]), fixed=True)
    fig = plots.laid_out(plots.DRAW["memory_breakdown"](result))
    ax = fig.axes[0]
    ticks = _text_boxes(fig, ax.get_xticklabels())
    assert len(ticks) == 18 and _disjoint(ticks)
    xlabel = _text_boxes(fig, [ax.xaxis.label])[0]
    assert min(b.y0 for b in ticks) >= 0 and xlabel.y0 >= 0 and not any(b.overlaps(xlabel) for b in ticks)


def test_cost_vs_latency_point_labels_do_not_overlap(fixed_sweep: SweepResult) -> None:
    fig = plots.laid_out(plots.DRAW["cost_vs_latency"](fixed_sweep))
    ax = fig.axes[0]
    shown = _text_boxes(fig, ax.texts)
    frame = ax.get_window_extent(fig.canvas.get_renderer())
    assert shown and _disjoint(shown)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in shown)


def test_solver_mode_latency_vs_rate_joins_only_points_of_one_deployment() -> None:
    sc = load_scenario(CHATBOT).model_copy(update={"budget": None})
    result = sweep(sc, parse_varies(["rate=0.5..24:6"]), fixed=False)
    rows = sorted(result.rows, key=lambda r: r["rate_per_s"])
    plans = {float(r["rate_per_s"]): plots._deployment(r) for r in rows}
    assert len(set(plans.values())) > 1  # the sweep crosses a change of plan, else the test proves nothing
    fig = plots.laid_out(plots.DRAW["latency_vs_rate"](result))
    ax = fig.axes[0]
    joined = [line for line in ax.get_lines()  # data lines (the SLO line runs in axes coordinates)
              if len(set(line.get_xdata())) > 1 and {float(x) for x in line.get_xdata()} <= set(plans)]
    assert joined
    for line in joined:
        assert len({plans[float(x)] for x in line.get_xdata()}) == 1
    changes = sum(plots._deployment(a) != plots._deployment(b) for a, b in zip(rows, rows[1:]))
    assert len([t for t in ax.texts if t.get_text().startswith("->")]) == changes
    assert not any("knee" in (line.get_label() or "") for line in ax.get_lines())
