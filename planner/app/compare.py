"""`vlmplan compare A.yaml B.yaml`: two scenarios or two plans (or one of each) side by side.

A scenario file is evaluated first (its fixed configuration when it has one,
else the solver's cheapest deployment), a plan file (``vlmplan solve --out``)
is read as saved. Both become the same flat keys (``gpu``, ``precision``,
``ttft_p95_ms``, ``weights_gib``, ...), so any two files compare key by key;
numbers get their difference B - A and its percentage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.app.scenario import read_yaml_file, scenario_from_dict
from planner.core.errors import RequestError

INPUT_KEYS = ("model", "mode", "workload", "prompt_tokens", "visual_tokens", "image", "output_tokens", "arrival",
              "rate_per_s", "concurrency", "slo", "budget")
DEPLOYMENT_KEYS = ("gpu", "gpus", "tp", "pp", "replicas", "precision", "kv_cache_dtype", "max_model_len",
                   "max_num_seqs")
RESULT_KEYS = ("feasible", "status", "cost_per_hour", "cost_per_1k_requests", "requests_per_s",
               "output_tokens_per_s", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p95_ms",
               "tpot_p99_ms", "e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms", "weights_gib", "kv_cache_gib",
               "activations_gib", "overhead_gib", "total_gib", "kv_capacity_tokens", "binding")
LOWER_IS_BETTER = {"cost_per_hour", "cost_per_1k_requests", "gpus", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms",
                   "tpot_p50_ms", "tpot_p95_ms", "tpot_p99_ms", "e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms"}
HIGHER_IS_BETTER = {"requests_per_s", "output_tokens_per_s", "kv_capacity_tokens", "feasible"}


@dataclass(frozen=True)
class Side:
    path: str
    kind: str
    """'scenario' or 'plan'."""
    label: str
    values: dict[str, Any]


@dataclass(frozen=True)
class DiffRow:
    key: str
    a: Any
    b: Any
    differs: bool
    delta: float | None
    """B - A for numbers."""
    delta_pct: float | None
    better: str | None
    """'a', 'b' or None: which side is better on this key, where that has a direction."""


def _scenario_side(path: Path, data: dict[str, Any], fixed: bool | None) -> Side:
    from planner.app.whatif import evaluate_scenario

    sc = scenario_from_dict(data, path.parent, str(path))
    row = evaluate_scenario(sc, fixed)
    values = {k: row.get(k) for k in INPUT_KEYS + DEPLOYMENT_KEYS + RESULT_KEYS}
    values["budget"] = sc.budget or ""
    return Side(str(path), "scenario", sc.name, values)


def _plan_values(plan: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"mode": "plan", "status": plan.status, "feasible": plan.status != "infeasible",
                              "cost_per_hour": plan.cost_per_hour, "binding": "; ".join(plan.binding)}
    many = len(plan.deployments) > 1
    for d in plan.deployments:
        pre = f"{d.workload}." if many else ""
        p = d.predicted
        rows: dict[str, Any] = {
            "model": d.model, "workload": d.workload,
            "image": "+".join(f"{i.width}x{i.height}" for i in d.images) or "none",
            "gpu": d.gpu, "gpus": d.gpus_per_replica * d.replicas, "tp": d.tp, "pp": d.pp, "replicas": d.replicas,
            "precision": d.precision, "kv_cache_dtype": d.kv_cache_dtype, "max_model_len": d.max_model_len,
            "max_num_seqs": d.max_num_seqs, "requests_per_s": p.requests_per_s,
            "output_tokens_per_s": p.output_tokens_per_s,
            "cost_per_1k_requests": (round(d.cost_per_hour / (p.requests_per_s * 3.6), 4)
                                     if p.requests_per_s > 0 else None),
            "weights_gib": p.memory.weights_gib, "kv_cache_gib": p.memory.kv_cache_gib,
            "activations_gib": p.memory.activations_gib, "overhead_gib": p.memory.overhead_gib,
            "total_gib": p.memory.total_gib, "kv_capacity_tokens": p.memory.kv_capacity_tokens,
        }
        if many:
            rows["cost_per_hour"] = d.cost_per_hour
        for metric in ("ttft", "tpot", "e2e"):
            pct = getattr(p, f"{metric}_ms")
            for stat in ("p50", "p95", "p99"):
                rows[f"{metric}_{stat}_ms"] = getattr(pct, stat)
        values.update({pre + k: v for k, v in rows.items()})
    return values


def load_side(path: str | Path, fixed: bool | None = None) -> Side:
    """Read a scenario (evaluated) or a plan (as saved) into flat comparable values."""
    p = Path(path)
    data = read_yaml_file(p, "file")
    if isinstance(data, dict) and "deployments" in data and "status" in data:
        from planner.plan import Plan

        plan = Plan.load(p)
        return Side(str(p), "plan", p.parent.name or p.name, _plan_values(plan))
    if isinstance(data, dict) and "model" in data:
        return _scenario_side(p, data, fixed)
    raise RequestError(f"{p} is neither a scenario (a mapping with 'model') nor a plan (from 'vlmplan solve --out')")


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _same(a: Any, b: Any) -> bool:
    if _is_num(a) and _is_num(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def diff_rows(a: Side, b: Side) -> list[DiffRow]:
    keys = list(dict.fromkeys(list(a.values) + list(b.values)))
    out = []
    for k in keys:
        va, vb = a.values.get(k), b.values.get(k)
        differs = not _same(va, vb)
        delta: float | None = None
        pct: float | None = None
        better = None
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and _is_num(va) and _is_num(vb):
            delta = float(vb) - float(va)
            pct = delta / abs(float(va)) * 100 if va else None
        base_key = k.split(".")[-1]
        if differs and va is not None and vb is not None:
            if base_key in LOWER_IS_BETTER and delta is not None:
                better = "b" if delta < 0 else "a"
            elif base_key in HIGHER_IS_BETTER:
                better = "b" if (delta is not None and delta > 0) or vb is True else "a"
        out.append(DiffRow(k, va, vb, differs, delta, pct, better))
    return out


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    rows: list[DiffRow]

    @property
    def differences(self) -> list[DiffRow]:
        return [r for r in self.rows if r.differs]

    def to_json(self) -> dict[str, Any]:
        return {
            "a": {"file": self.a.path, "kind": self.a.kind, "name": self.a.label},
            "b": {"file": self.b.path, "kind": self.b.kind, "name": self.b.label},
            "differences": len(self.differences),
            "rows": [{"key": r.key, "a": r.a, "b": r.b, "differs": r.differs,
                      "delta": None if r.delta is None else round(r.delta, 6),
                      "delta_pct": None if r.delta_pct is None else round(r.delta_pct, 3), "better": r.better}
                     for r in self.rows],
        }


def compare_files(path_a: str | Path, path_b: str | Path, fixed: bool | None = None) -> Comparison:
    a, b = load_side(path_a, fixed), load_side(path_b, fixed)
    return Comparison(a, b, diff_rows(a, b))


def format_value(x: Any) -> str:
    if x is None or x == "":
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:,.4g}" if abs(x) < 1e4 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def format_delta(r: DiffRow) -> str:
    if not r.differs:
        return ""
    if r.delta is None:
        return "differs"
    text = f"{r.delta:+,.4g}"
    if r.delta_pct is not None:
        text += f" ({r.delta_pct:+.1f}%)"
    return text


def print_comparison(cmp: Comparison, only_differences: bool = False) -> None:
    """Side-by-side table; differing rows highlighted, the better side in green."""
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    t = Table(title=f"A: {cmp.a.path} ({cmp.a.kind})   B: {cmp.b.path} ({cmp.b.kind})")
    t.add_column("key")
    t.add_column(f"A {cmp.a.label}", overflow="fold", max_width=50)
    t.add_column(f"B {cmp.b.label}", overflow="fold", max_width=50)
    t.add_column("B - A", justify="right")
    for r in cmp.rows:
        if only_differences and not r.differs:
            continue
        a, b = escape(format_value(r.a)), escape(format_value(r.b))
        if r.differs:
            a = f"[green]{a}[/]" if r.better == "a" else f"[yellow]{a}[/]"
            b = f"[green]{b}[/]" if r.better == "b" else f"[yellow]{b}[/]"
            t.add_row(f"[bold]* {escape(r.key)}[/]", a, b, format_delta(r))
        else:
            t.add_row(f"  {escape(r.key)}", a, b, "")
    console.print(t)
    console.print(f"{len(cmp.differences)} of {len(cmp.rows)} keys differ (marked *; the better side in green)")
