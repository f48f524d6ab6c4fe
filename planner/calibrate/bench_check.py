"""Did a served deployment meet its plan? A ``vllm bench serve --save-result`` JSON against the planned SLOs.

``vlmplan calibrate check --bench RESULT.json --plan deployment.json|plan.yaml`` (what ``verify.sh`` ends with).
The result is read as ``vllm/benchmarks/serve.py`` writes it: ``completed``, ``failed``, ``request_rate`` (a number
or ``"inf"``), ``max_concurrency``, ``request_throughput``, ``total_output_tokens`` and, for each metric in
``--percentile-metrics`` (ttft, tpot, e2el), ``mean_<m>_ms`` and ``p<N>_<m>_ms`` for each ``--metric-percentiles``
N (``median_<m>_ms`` stands for p50 when ``p50`` was not asked for).

Pass: every SLO of the deployment holds on the measured value (a p95 SLO on ``p95_<m>_ms``) and no request
failed. Notes (not failures) say where the run is not the planned one: another load, shorter outputs (no
``--ignore-eos``), fewer prompts than a stable estimate needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.core.errors import RequestError
from planner.core.inputs import parse_json, read_text
from planner.plan import DeploymentPlan, Plan

BENCH_METRIC = {"ttft": "ttft", "tpot": "tpot", "e2e": "e2el"}
"""vlmplan metric -> the name ``vllm bench serve`` gives it in its result keys."""
STATS = ("mean", "p50", "p90", "p95", "p99")


@dataclass(frozen=True)
class MetricRow:
    key: str
    """``ttft_p95`` and so on (vlmplan's SLO grammar)."""
    planned_ms: float
    """The analytic model's prediction in the plan."""
    simulated_ms: float | None
    measured_ms: float | None
    limit_ms: float | None
    """The SLO on this key, if any."""

    @property
    def ok(self) -> bool | None:
        if self.limit_ms is None or self.measured_ms is None:
            return None
        return self.measured_ms <= self.limit_ms

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "planned_ms": self.planned_ms, "simulated_ms": self.simulated_ms,
                "measured_ms": self.measured_ms, "slo_ms": self.limit_ms, "ok": self.ok}


@dataclass(frozen=True)
class BenchCheck:
    workload: str
    bench: str
    completed: int
    failed: int
    request_throughput: float | None
    rows: list[MetricRow]
    problems: list[str] = field(default_factory=list)
    """Why it failed (empty: passed)."""
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"workload": self.workload, "bench": self.bench, "passed": self.passed, "completed": self.completed,
                "failed": self.failed, "request_throughput": self.request_throughput,
                "metrics": [r.to_json() for r in self.rows], "problems": self.problems, "notes": self.notes}


def load_deployment(path: Path, workload: str | None = None) -> DeploymentPlan:
    """The deployment to check: a ``deployment.json`` (``verify.sh``'s) or a ``plan.yaml`` (``--workload`` picks
    one of several)."""
    from pydantic import ValidationError

    from planner.core.inputs import clip, first_problem, load_yaml_file

    data = load_yaml_file(path, "plan")  # JSON is YAML
    if isinstance(data, dict) and "deployments" in data:
        plan = Plan.load(path)
        names = [d.workload for d in plan.deployments]
        if not names:
            raise RequestError(f"{path}: the plan has no deployment to check (status {plan.status})")
        if workload is None:
            if len(names) > 1:
                raise RequestError(f"{path} plans {len(names)} workloads ({', '.join(names)}): pick one with "
                                   "--workload")
            return plan.deployments[0]
        if workload not in names:
            raise RequestError(f"{path} has no workload '{workload}'; it plans {', '.join(names)}")
        return plan.deployments[names.index(workload)]
    try:
        dep = DeploymentPlan.model_validate(data)
    except ValidationError as exc:
        loc, _, msg = first_problem(exc)
        raise RequestError(f"{path}: not a vlmplan plan or deployment ({loc}: {clip(msg, 200)})") from None
    if workload is not None and workload != dep.workload:
        raise RequestError(f"{path} is workload '{dep.workload}', not '{workload}'")
    return dep


def _number(data: dict[str, Any], key: str) -> float | None:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if not math.isfinite(v) or v < 0:
        raise RequestError(f"{key}={v} (every measured value must be a finite number >= 0)")
    return float(v)


def measured_ms(data: dict[str, Any], key: str) -> float | None:
    """The result's value of ``ttft_p95`` etc. (None when the run did not report it)."""
    metric, stat = key.split("_")
    name = BENCH_METRIC[metric]
    if stat == "mean":
        return _number(data, f"mean_{name}_ms")
    got = _number(data, f"{stat}_{name}_ms")
    if got is None and stat == "p50":
        got = _number(data, f"median_{name}_ms")
    return got


def read_result(path: Path) -> dict[str, Any]:
    data = parse_json(read_text(path, "bench file"), f"bench file {path} (expected 'vllm bench serve --save-result')",
                      allow_nan=True)
    if not isinstance(data, dict) or not isinstance(data.get("completed"), int) or isinstance(data["completed"], bool):
        raise RequestError(f"{path}: expected the JSON object 'vllm bench serve --save-result' writes (with "
                           "'completed')")
    return data


def check_bench(path: Path, dep: DeploymentPlan) -> BenchCheck:
    """Compare one benchmark result with the deployment's plan (see the module doc)."""
    data = read_result(path)
    try:
        return _check(path, data, dep)
    except RequestError as exc:
        raise RequestError(f"{path}: {exc}") from None


def _check(path: Path, data: dict[str, Any], dep: DeploymentPlan) -> BenchCheck:
    slos = {s.split("<=")[0]: float(s.split("<=")[1].removesuffix("ms")) for s in dep.slos}
    completed = int(data["completed"])
    failed = int(_number(data, "failed") or 0)
    problems: list[str] = []
    notes: list[str] = []
    keys = list(dict.fromkeys([*slos, "ttft_p50", "ttft_p95", "tpot_p50", "tpot_p95", "e2e_p50", "e2e_p95"]))
    rows = []
    for key in keys:
        metric, stat = key.split("_")
        planned = getattr(getattr(dep.predicted, f"{metric}_ms"), stat)
        sim = getattr(getattr(dep.simulated, f"{metric}_ms"), stat) if dep.simulated else None
        got = measured_ms(data, key)
        if got is None and key in slos:
            raise RequestError(f"lacks {stat}_{BENCH_METRIC[metric]}_ms for the SLO {key} <= {slos[key]:g} ms (run "
                               "'vllm bench serve' with --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles "
                               "50,90,95,99, as verify.sh does)")
        rows.append(MetricRow(key, planned, sim, got, slos.get(key)))
    if completed <= 0:
        problems.append("no request completed")
    if failed:
        problems.append(f"{failed} of {completed + failed} requests failed (the server refused or dropped them)")
    problems += [f"{r.key} {r.measured_ms:,.1f} ms > {r.limit_ms:g} ms" for r in rows if r.ok is False]
    notes += _load_notes(data, dep, completed)
    return BenchCheck(dep.workload, str(path), completed, failed, _number(data, "request_throughput"), rows,
                      problems, notes)


def _load_notes(data: dict[str, Any], dep: DeploymentPlan, completed: int) -> list[str]:
    """Where the run is not the one ``verify.sh`` would send for this plan."""
    from planner.emit.verify import load_of, prompts_for

    t = dep.traffic
    if t is None:
        return ["the plan does not record its workload (written before verify.sh): the run's load is not checked"]
    notes: list[str] = []
    var, default, _ = load_of(dep, t)
    rate, cap = data.get("request_rate"), data.get("max_concurrency")
    if var == "RATE":
        ran = float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) else math.inf
        if not math.isclose(ran, float(default), rel_tol=0.01):
            notes.append(f"the run sent {ran:g} requests/s, the plan is {default} per replica: the percentiles are "
                         "for another load")
    elif cap != int(default):
        notes.append(f"the run had max_concurrency {cap}, the plan {default} clients per replica: the percentiles "
                     "are for another load")
    out = data.get("total_output_tokens")
    if isinstance(out, (int, float)) and completed > 0 and out / completed < 0.9 * t.output_tokens:
        notes.append(f"outputs averaged {out / completed:,.0f} tokens, the plan {t.output_tokens}: run with "
                     "--ignore-eos (verify.sh does) or the latencies are for shorter answers")
    need = prompts_for(dep)
    if completed < need:
        notes.append(f"{completed:,} requests: fewer than the {need:,} a stable estimate of the SLO percentiles "
                     "needs (verify.sh's NUM_PROMPTS default)")
    return notes


def format_check(c: BenchCheck) -> list[str]:
    """The check as text lines: one row per percentile, measured against planned (analytic and simulated)."""

    def ms(v: float | None) -> str:
        return f"{v:,.1f}" if v is not None else "-"

    lines = [f"verify {c.workload}: {c.completed:,} requests completed, {c.failed} failed"
             + (f", {c.request_throughput:.3g} requests/s" if c.request_throughput is not None else "")
             + f" ({c.bench})",
             f"{'metric':<10} {'planned':>10} {'simulated':>10} {'measured':>10} {'vs plan':>8}  SLO"]
    for r in c.rows:
        diff = (f"{(r.measured_ms - r.planned_ms) / r.planned_ms:+.0%}" if r.measured_ms is not None and r.planned_ms
                else "-")
        slo = (f"<= {r.limit_ms:g} ms {'ok' if r.ok else 'MISSED' if r.ok is False else '-'}"
               if r.limit_ms is not None else "")
        lines.append(f"{r.key:<10} {ms(r.planned_ms):>10} {ms(r.simulated_ms):>10} {ms(r.measured_ms):>10} "
                     f"{diff:>8}  {slo}".rstrip())
    lines += [f"note: {n}" for n in c.notes]
    lines.append("PASS: every planned SLO holds" if c.passed else "FAIL: " + "; ".join(c.problems))
    return lines
