"""PNG plots of a what-if sweep (matplotlib, imported lazily, Agg canvas; no pyplot state).

* ``cost_vs_latency``: cost per 1,000 requests against a p95 latency, Pareto front marked.
* ``latency_vs_rate``: latency percentiles against the request rate (or closed-loop clients), with the SLO
  line; fixed mode: the saturation throughput and the knee (first rate where p95 reaches twice its low-load
  value); solver mode: one line per deployment, each change of the cheapest deployment marked and named.
* ``memory_breakdown``: stacked weights / KV cache / activations / overhead per GPU, one bar per configuration.
* ``cost_per_gpu``: the cheapest feasible cost per 1,000 requests for each GPU type (bars per precision); not drawn
  when the sweep has a single feasible (GPU, precision) bar.

Every figure is ``FIGSIZE`` inches at ``DPI`` (1000 x 600 pixels); titles say what was held fixed.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from planner.app.plot_layout import fit_tick_labels, place_labels
from planner.app.whatif import COLUMN, UNITS, SweepResult, point_label
from planner.core.errors import RequestError

FIGSIZE = (10.0, 6.0)
DPI = 100
MAX_BARS = 30
MAX_POINT_LABELS = 20
"""Point labels tried on the Pareto front; those that find no free spot are left out."""
KNEE_FACTOR = 2.0
"""The knee: the first swept rate where p95 latency reaches this multiple of its value at the lowest rate."""
PLOT_NAMES = ("cost_vs_latency", "latency_vs_rate", "memory_breakdown", "cost_per_gpu")


def require_matplotlib() -> None:
    """One-line error when matplotlib is missing (it is in the ``plot`` and ``test`` extras)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RequestError("--plot needs matplotlib, which is not installed: pip install 'vlmplan[plot]'") from None


def _figure() -> tuple[Any, Any]:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    return fig, ax


def _title(ax: Any, what: str, result: SweepResult) -> None:
    model = (f" | {result.load} load model" if result.mode == "fixed" else
             " | solver (analytic load model; each point's deployment checked by the simulator)")
    fixed = textwrap.fill("held fixed: " + result.held_fixed + model, 130)
    ax.set_title(f"{what}\n{fixed}", fontsize=9, loc="left")


Drawn = tuple[Any, list[Any], float]
"""A drawn figure, its point labels (most important first) and its bottom margin, before layout."""


def laid_out(drawn: Drawn) -> Any:
    """The figure with its margins set, its tick labels fitted and its point labels placed (``plot_layout``)."""
    fig, labels, bottom = drawn
    fig.subplots_adjust(left=0.09, right=0.97, top=0.86, bottom=bottom)
    fig.canvas.draw()
    ax = fig.axes[0]
    fit_tick_labels(fig, ax)
    place_labels(fig, ax, labels)
    return fig


def _save(drawn: Drawn, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    laid_out(drawn).savefig(path, dpi=DPI, format="png")
    return path


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def latency_metric(result: SweepResult) -> str:
    """The metric the plots show: the first SLO's (TTFT, TPOT or e2e), else end-to-end."""
    return result.slos[0].metric if result.slos else "e2e"


_METRIC_NAME = {"ttft": "time to first token", "tpot": "time per output token", "e2e": "end-to-end latency"}


def _label(row: dict[str, Any], result: SweepResult, skip: Sequence[str] = ()) -> str:
    point = {v.dim: row.get(COLUMN[v.dim]) for v in result.varies if v.dim not in skip}
    text = point_label({k: v for k, v in point.items() if v is not None and v != ""})
    return "" if text == "base" else text


def pareto_front(pairs: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (lower is better), by x."""
    order = sorted(range(len(pairs)), key=lambda i: (pairs[i][0], pairs[i][1]))
    front: list[int] = []
    best_y = math.inf
    for i in order:
        if pairs[i][1] < best_y:
            front.append(i)
            best_y = pairs[i][1]
    return front


def cost_vs_latency(result: SweepResult, path: Path, metric: str | None = None, stat: str = "p95") -> Path:
    return _save(draw_cost_vs_latency(result, metric, stat), path)


def draw_cost_vs_latency(result: SweepResult, metric: str | None = None, stat: str = "p95") -> Drawn:
    metric = metric or latency_metric(result)
    key = f"{metric}_{stat}_ms"
    rows = [r for r in result.rows if _finite(r.get(key)) and _finite(r.get("cost_per_1k_requests"))]
    fig, ax = _figure()
    _title(ax, f"Cost per 1,000 requests vs {stat} {_METRIC_NAME[metric]} ({len(rows)} points)", result)
    ax.set_xlabel(f"{metric.upper()} {stat} (ms)")
    ax.set_ylabel("cost per 1,000 requests (USD)")
    if not rows:
        ax.text(0.5, 0.5, "no point has both a finite latency and a cost", ha="center", transform=ax.transAxes)
        return fig, [], 0.12
    pairs = [(float(r[key]), float(r["cost_per_1k_requests"])) for r in rows]
    ok = [i for i, r in enumerate(rows) if r["feasible"]]
    bad = [i for i, r in enumerate(rows) if not r["feasible"]]
    if ok:
        ax.scatter([pairs[i][0] for i in ok], [pairs[i][1] for i in ok], s=18, c="tab:blue", alpha=0.6,
                   label="meets SLOs / fits")
    if bad:
        ax.scatter([pairs[i][0] for i in bad], [pairs[i][1] for i in bad], s=18, c="tab:gray", marker="x",
                   alpha=0.6, label="misses an SLO or the budget")
    front = pareto_front([pairs[i] for i in ok]) if ok else []
    front_idx = [ok[i] for i in front]
    labels: list[Any] = []
    if front_idx:
        xs = [pairs[i][0] for i in front_idx]
        ys = [pairs[i][1] for i in front_idx]
        ax.step(xs, ys, where="post", color="tab:red", linewidth=1.5)
        ax.scatter(xs, ys, s=60, facecolors="none", edgecolors="tab:red", linewidths=1.8,
                   label=f"Pareto front ({len(front_idx)} points)")
        for i in front_idx[:MAX_POINT_LABELS]:  # placed without overlaps at layout, or left out
            labels.append(ax.annotate(_label(rows[i], result) or rows[i]["gpu"], pairs[i], fontsize=7,
                                      xytext=(4, 4), textcoords="offset points"))
    for s in result.slos:
        if s.metric == metric and s.stat == stat:
            ax.axvline(s.limit_ms, color="tab:orange", linestyle="--", label=f"SLO {s.key} = {s.limit_ms:g} ms")
    xs_all = [p[0] for p in pairs]
    if min(xs_all) > 0 and max(xs_all) / min(xs_all) > 50:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return fig, labels, 0.12


def knee_rate(rates: list[float], p95: list[float | None], factor: float = KNEE_FACTOR) -> float | None:
    """First rate (linearly interpolated) where p95 reaches ``factor`` x its value at the lowest rate;
    a saturated point (None) counts as past the knee."""
    pts = sorted(zip(rates, p95), key=lambda t: t[0])
    if not pts or pts[0][1] is None:
        return None
    target = factor * pts[0][1]
    for (r0, y0), (r1, y1) in zip(pts, pts[1:]):
        if y1 is None:
            return r1 if y0 is None else r0 + (r1 - r0) * 0.5
        if y0 is not None and y0 < target <= y1:
            return r0 + (r1 - r0) * (target - y0) / (y1 - y0)
    return None


def latency_vs_rate(result: SweepResult, path: Path, metric: str | None = None) -> Path:
    return _save(draw_latency_vs_rate(result, metric), path)


DEPLOYMENT = ("gpu", "gpus", "tp", "pp", "replicas", "precision", "kv_cache_dtype")
"""The columns that make a point's deployment (what it runs on, at what cost): in solver mode a new value is a
different plan. The batch cap (max_num_seqs) may change along one line."""


def _deployment(r: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(r.get(k) for k in DEPLOYMENT)


def _deployment_label(r: dict[str, Any]) -> str:
    return f"{r['replicas']} x {(r['tp'] or 1) * (r['pp'] or 1)} {r['gpu']} {r['precision']}"


def _runs(rows: list[dict[str, Any]], solver: bool) -> list[list[dict[str, Any]]]:
    """The rows cut where the deployment changes (solver mode: one line per plan); one run in fixed mode."""
    runs: list[list[dict[str, Any]]] = []
    for r in rows:
        if runs and (not solver or _deployment(runs[-1][-1]) == _deployment(r)):
            runs[-1].append(r)
        else:
            runs.append([r])
    return runs


def draw_latency_vs_rate(result: SweepResult, metric: str | None = None) -> Drawn:
    """Latency percentiles against the rate (or clients). In solver mode every point is its own cheapest plan,
    so a line joins only points of one deployment and each change of deployment is marked and named (a knee
    across plans would mean nothing); in fixed mode the knee and the saturation throughput are marked."""
    dims = [v.dim for v in result.varies]
    xdim = "rate" if "rate" in dims else "concurrency" if "concurrency" in dims else None
    if xdim is None:
        raise RequestError("the latency-vs-rate plot needs --vary rate=... (or concurrency=...)")
    metric = metric or latency_metric(result)
    xcol = COLUMN[xdim]
    solver = result.mode != "fixed"
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in result.rows:
        groups.setdefault(_label(r, result, skip=(xdim,)), []).append(r)
    fig, ax = _figure()
    _title(ax, f"{_METRIC_NAME[metric].capitalize()} vs {'request rate' if xdim == 'rate' else 'clients'}", result)
    ax.set_xlabel(f"{'request rate' if xdim == 'rate' else 'closed-loop clients'} ({UNITS[xdim]})")
    ax.set_ylabel(f"{metric.upper()} (ms)")
    colors = ["tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
    single = len(groups) == 1
    ys_all: list[float] = []
    labels: list[Any] = []
    for gi, (name, rows) in enumerate(list(groups.items())[:len(colors)]):
        rows = sorted(rows, key=lambda r: r[xcol])
        color = colors[gi]
        ys_all += _plot_runs(ax, _runs(rows, solver), xcol, metric, name, color, single)
        if solver:
            labels += _mark_changes(ax, rows, xcol, color)
        else:
            _mark_knee_and_saturation(ax, rows, xcol, xdim, metric, name, color)
    for s in result.slos:
        if s.metric == metric:
            ax.axhline(s.limit_ms, color="tab:red", linestyle="--", label=f"SLO {s.key} = {s.limit_ms:g} ms")
            ys_all.append(s.limit_ms)
    if ys_all and min(ys_all) > 0 and max(ys_all) / min(ys_all) > 50:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return fig, labels, 0.12


def _plot_runs(ax: Any, runs: list[list[dict[str, Any]]], xcol: str, metric: str, name: str, color: str,
               single: bool) -> list[float]:
    """One line per run and percentile (p50/p95/p99 when one group, else p95); the finite values drawn."""
    styles = {"p50": ":", "p95": "-", "p99": "--"}
    drawn: list[float] = []
    for stat in ("p50", "p95", "p99") if single else ("p95",):
        for k, run in enumerate(runs):
            xs = [float(r[xcol]) for r in run]
            ys = [r[f"{metric}_{stat}_ms"] if _finite(r[f"{metric}_{stat}_ms"]) else math.nan for r in run]
            drawn += [y for y in ys if math.isfinite(y)]
            ax.plot(xs, ys, linestyle=styles[stat], color=color, marker="." if len(xs) <= 60 else None,
                    label=f"{name + ' ' if name else ''}{stat}" if k == 0 else None)
    return drawn


def _mark_changes(ax: Any, rows: list[dict[str, Any]], xcol: str, color: str) -> list[Any]:
    """A dotted line where the cheapest deployment changes, labelled with the new one (and the first)."""
    labels = [ax.annotate(_deployment_label(rows[0]), (float(rows[0][xcol]), 0.0), xycoords=("data", "axes fraction"),
                          fontsize=7, color=color, xytext=(4, 4), textcoords="offset points")] if rows else []
    for a, b in zip(rows, rows[1:]):
        if _deployment(a) != _deployment(b):
            x = (float(a[xcol]) + float(b[xcol])) / 2
            ax.axvline(x, color=color, linestyle=":", alpha=0.7)
            labels.append(ax.annotate(f"-> {_deployment_label(b)}", (x, 0.0), xycoords=("data", "axes fraction"),
                                      fontsize=7, color=color, xytext=(4, 4), textcoords="offset points"))
    return labels


def _mark_knee_and_saturation(ax: Any, rows: list[dict[str, Any]], xcol: str, xdim: str, metric: str, name: str,
                              color: str) -> None:
    xs = [float(r[xcol]) for r in rows]
    p95 = [r[f"{metric}_p95_ms"] if _finite(r[f"{metric}_p95_ms"]) else None for r in rows]
    knee = knee_rate(xs, p95)
    if knee is not None:
        ax.axvline(knee, color=color, linestyle="-.", alpha=0.8,
                   label=f"knee{' ' + name if name else ''}: {knee:.3g} {UNITS[xdim]} (p95 = {KNEE_FACTOR:g}x)")
    caps = [r["max_requests_per_s"] for r in rows if _finite(r.get("max_requests_per_s"))]
    if xdim == "rate" and caps:
        ax.axvline(caps[0], color=color, linestyle=":", alpha=0.9,
                   label=f"saturation{' ' + name if name else ''}: {caps[0]:.3g} req/s")


def _config_label(r: dict[str, Any]) -> str:
    gpu = str(r["gpu"]) if r["gpu"] else "?"
    n = r["gpus"] // (r["replicas"] or 1) if r["gpus"] else 1
    return f"{n}x{gpu} {r['precision']}\nctx {r['max_model_len']} seqs {r['max_num_seqs']}"


def memory_breakdown(result: SweepResult, path: Path) -> Path:
    return _save(draw_memory_breakdown(result), path)


def draw_memory_breakdown(result: SweepResult) -> Drawn:
    seen: dict[tuple, dict[str, Any]] = {}
    for r in result.rows:
        if not _finite(r.get("weights_gib")):
            continue
        key = (r["gpu"], r["tp"], r["pp"], r["precision"], r["kv_cache_dtype"], r["max_model_len"], r["max_num_seqs"])
        seen.setdefault(key, r)
    rows = list(seen.values())
    note = ""
    if len(rows) > MAX_BARS:
        step = len(rows) / MAX_BARS
        rows = [rows[int(i * step)] for i in range(MAX_BARS)]
        note = f" ({MAX_BARS} of {len(seen)} configurations)"
    fig, ax = _figure()
    _title(ax, f"Memory per GPU by configuration{note}", result)
    ax.set_ylabel("memory per GPU (GiB)")
    if not rows:
        ax.text(0.5, 0.5, "no configuration with a memory breakdown", ha="center", transform=ax.transAxes)
        return fig, [], 0.12
    x = list(range(len(rows)))
    bottom = [0.0] * len(rows)
    parts = [("weights_gib", "weights", "tab:blue"), ("kv_cache_gib", "KV cache", "tab:green"),
             ("activations_gib", "activations (peak)", "tab:orange"), ("overhead_gib", "overhead", "tab:gray")]
    for col, name, color in parts:
        vals = [float(r[col] or 0.0) for r in rows]
        ax.bar(x, vals, bottom=bottom, color=color, label=name, width=0.7)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.scatter(x, [r["gpu_memory_gib"] for r in rows], marker="_", s=600, color="black", linewidths=2,
               label="GPU memory", zorder=3)
    ax.scatter(x, [r["usable_gib"] for r in rows], marker="_", s=600, color="tab:red", linewidths=1.5,
               label="usable (gpu_memory_utilization)", zorder=3)
    labels = [ax.annotate("does not fit", (xi, r["gpu_memory_gib"]), ha="center", fontsize=7, color="tab:red",
                          xytext=(0, 6), textcoords="offset points")
              for xi, r in zip(x, rows) if r["status"] == "does not fit"]
    ax.set_xticks(x)
    ax.set_xticklabels([_config_label(r) for r in rows], fontsize=7)  # upright and smaller at layout if crowded
    ax.set_xlabel("configuration (GPUs x type, weight precision, max_model_len, max_num_seqs)")
    top = max(max(float(r["gpu_memory_gib"] or 0.0) for r in rows), max(bottom))
    ax.set_ylim(0, top * 1.3)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncol=3)
    return fig, labels, 0.12


def cost_per_gpu(result: SweepResult, path: Path) -> Path:
    return _save(draw_cost_per_gpu(result), path)


def draw_cost_per_gpu(result: SweepResult) -> Drawn:
    gpus = list(dict.fromkeys(r["gpu"] for r in result.rows if r["gpu"]))
    precisions = list(dict.fromkeys(r["precision"] for r in result.rows if r["precision"]))
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in result.rows:
        if not r["feasible"] or not _finite(r.get("cost_per_1k_requests")):
            continue
        k = (r["gpu"], r["precision"])
        if k not in best or r["cost_per_1k_requests"] < best[k]["cost_per_1k_requests"]:
            best[k] = r
    fig, ax = _figure()
    _title(ax, "Cheapest feasible cost per 1,000 requests by GPU type", result)
    ax.set_ylabel("cost per 1,000 requests (USD)")
    ax.set_xlabel("GPU type")
    if not gpus:
        ax.text(0.5, 0.5, "no point names a GPU", ha="center", transform=ax.transAxes)
        return fig, [], 0.12
    width = 0.8 / max(1, len(precisions))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
    for pi, prec in enumerate(precisions):
        xs, ys, notes = [], [], []
        for gi, gpu in enumerate(gpus):
            hit = best.get((gpu, prec))
            xs.append(gi + (pi - (len(precisions) - 1) / 2) * width)
            ys.append(float(hit["cost_per_1k_requests"]) if hit else 0.0)
            notes.append(f"{hit['gpus']} GPU{'s' if hit['gpus'] != 1 else ''}" if hit else "infeasible")
        bars = ax.bar(xs, ys, width=width * 0.95, color=colors[pi % len(colors)], label=prec)
        for bar, note in zip(bars, notes):
            ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", fontsize=7,
                        xytext=(0, 3), textcoords="offset points", rotation=90 if len(precisions) > 2 else 0)
    ax.set_xticks(range(len(gpus)))
    ax.set_xticklabels(gpus, fontsize=8)
    top = max((float(r["cost_per_1k_requests"]) for r in best.values()), default=1.0)
    ax.set_ylim(0, top * 1.3)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(title="weight precision", fontsize=8, ncol=max(1, len(precisions)), loc="upper center")
    return fig, [], 0.12


def render_all(result: SweepResult, out_dir: Path) -> list[Path]:
    """Every plot that applies to the sweep (latency vs rate only when rate or concurrency is varied)."""
    require_matplotlib()
    out_dir = Path(out_dir)
    files = [cost_vs_latency(result, out_dir / "cost_vs_latency.png")]
    if any(v.dim in ("rate", "concurrency") for v in result.varies):
        files.append(latency_vs_rate(result, out_dir / "latency_vs_rate.png"))
    files.append(memory_breakdown(result, out_dir / "memory_breakdown.png"))
    # Cost per GPU type compares GPU types (or precisions on one): one bar compares nothing, so it is not drawn.
    bars = {(r["gpu"], r["precision"]) for r in result.rows if r.get("feasible") and r.get("gpu")}
    if len(bars) > 1:
        files.append(cost_per_gpu(result, out_dir / "cost_per_gpu.png"))
    return files


DRAW = {"cost_vs_latency": draw_cost_vs_latency, "latency_vs_rate": draw_latency_vs_rate,
        "memory_breakdown": draw_memory_breakdown, "cost_per_gpu": draw_cost_per_gpu}


__all__ = ["cost_vs_latency", "latency_vs_rate", "memory_breakdown", "cost_per_gpu", "render_all", "pareto_front",
           "knee_rate", "require_matplotlib", "laid_out", "DRAW", "FIGSIZE", "DPI", "PLOT_NAMES"]
