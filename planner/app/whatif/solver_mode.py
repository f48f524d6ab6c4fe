"""Solver mode: the cheapest deployment per point, found by ``planner.solver.solve`` exactly as `vlmplan solve`
finds it (the analytic screen, CP-SAT, then the simulator's check of the chosen deployment).

A varied ``gpu`` / ``precision`` / ``kv`` restricts the search; a varied ``tp`` / ``batch`` asks the solver for
the cheapest plan at that TP or max_num_seqs (``SolveRequest.tp`` / ``max_num_seqs``). Identical points are
solved once.
"""

from __future__ import annotations

from typing import Any

from planner.app.whatif.base_case import Base, arrival_of, point_slos, point_workload
from planner.app.whatif.rows import empty_row, fill_config, fill_memory, fill_prediction, num
from planner.app.whatif.vary import Vary, point_label
from planner.core.errors import RequestError, UnsupportedError
from planner.solver import MAX_LOAD, SEQ_CHOICES, Solution, SolveRequest, default_gpus, solve
from planner.spec.workload import Workload


class SolverEvaluator:
    """The solver's cheapest deployment per point, checked by the simulator (identical points are solved once)."""

    def __init__(self, base: Base, varies: list[Vary]) -> None:
        self.base = base
        self.cache: dict[str, dict[str, Any]] = {}
        dims = {v.dim for v in varies}
        if "topology" in dims and ({"tp", "batch"} & dims):
            raise RequestError("--vary topology with --vary tp or batch: a pd plan has a TP and batch per pool; vary "
                               "them in solver mode without topology")
        if "context" in dims:
            raise RequestError("--vary context needs --fixed: the solver sizes max_model_len to the request itself")
        for v in varies:
            if v.dim == "batch":
                bad = [x for x in v.values if x not in SEQ_CHOICES]
                if bad:
                    raise RequestError(f"--vary batch={bad[0]}: the solver only considers max_num_seqs in "
                                       f"{', '.join(map(str, SEQ_CHOICES))}; use --fixed for other values")

    def request(self, point: dict[str, Any], wl: Workload) -> SolveRequest:
        """The point's solve request: the scenario's search space narrowed by the point, verified by the
        simulator like `vlmplan solve`, without alternatives (a row shows none)."""
        from planner.catalog.loader import load_gpus

        sc = self.base.scenario
        gpus = default_gpus(self.base.prices)
        allowed = [point["gpu"]] if "gpu" in point else sc.search.gpus
        if allowed:
            names = {load_gpus().get(n).name for n in allowed}
            gpus = [g for g in gpus if g.name in names]
        precisions = [point["precision"]] if "precision" in point else list(sc.search.precisions or
                                                                               ["bf16", "fp8", "int8", "int4"])
        kvs = [point["kv"]] if "kv" in point else list(sc.search.kv_cache_dtypes or ["auto", "fp8"])
        arrival, rate, conc = arrival_of(wl)
        if arrival != wl.arrival:
            wl = wl.model_copy(update={"arrival": arrival, "rate_per_s": rate, "trace_s": None})
        return SolveRequest(model=self.base.model, workloads=[wl], slos=point_slos(self.base, point),
                            budget=self.base.budget, gpus=gpus, precisions=precisions,  # type: ignore[arg-type]
                            kv_cache_dtypes=kvs, objective=sc.search.objective,  # type: ignore[arg-type]
                            max_load=sc.search.max_load or MAX_LOAD, verify=True, tp=point.get("tp"),
                            max_num_seqs=point.get("batch"), alternatives=0,
                            topologies=(point.get("topology", "aggregated"),))

    def evaluate(self, point: dict[str, Any]) -> dict[str, Any]:
        """The point's row (a copy: callers may change it)."""
        label = point_label(point)
        hit = self.cache.get(label)
        if hit is not None:
            return dict(hit)
        wl = point_workload(self.base, point)
        row = empty_row(self.base, point, wl)
        row.update(dict.fromkeys(SIMULATED), notes="")
        try:
            sol = solve(self.request(point, wl))
        except UnsupportedError as exc:
            row.update(status="unsupported", binding=f"unsupported: {exc}")
            self.cache[label] = row
            return dict(row)
        if point.get("topology") == "pd":
            fill_pd_solution(row, sol)
        elif point.get("topology") == "epd":
            fill_epd_solution(row, sol)
        else:
            fill_solution(row, sol)
        self.cache[label] = row
        return dict(row)


SIMULATED = ("simulated_ttft_p95_ms", "simulated_tpot_p95_ms", "simulated_e2e_p95_ms", "simulated_requests")
"""Columns of the simulator's check (solver mode only): the chosen deployment's replica at its share of the
load. The latency columns stay the analytic model's, the numbers the solver sized the plan with."""


def _fill_disaggregated(row: dict[str, Any], best: Any) -> None:
    """A disaggregated plan's percentiles, cost and simulator check (pd or epd: the same fields) into ``row``."""
    for metric in ("ttft", "tpot", "e2e"):
        pct = getattr(best, metric)
        for stat in ("p50", "p95", "p99"):
            row[f"{metric}_{stat}_ms"] = num(getattr(pct, stat), 3)
    row["cost_per_hour"] = num(best.cost_per_hour)
    rate = row.get("rate_per_s")
    row["cost_per_1k_requests"] = num(best.cost_per_hour / (rate * 3.6)) if rate else None
    sim = best.simulated
    if sim is not None:
        row.update(simulated_ttft_p95_ms=num(sim.ttft.p95, 3), simulated_tpot_p95_ms=num(sim.tpot.p95, 3),
                   simulated_e2e_p95_ms=num(sim.e2e.p95, 3), simulated_requests=sim.requests)
        if not sim.meets:
            row.update(feasible=False, status="rejected by the simulator", binding=row["binding"] + f"; {sim.failed}")


def fill_pd_solution(row: dict[str, Any], sol: Solution) -> None:
    """The cheapest prefill/decode-disaggregated deployment of ``sol`` (a solve asked for pd only) into ``row``:
    both pools in ``gpu`` and ``binding``, their GPUs and cost together, the pd plan's percentiles and its simulator
    check (``planner.solver.disagg``)."""
    row["notes"] = "; ".join(sol.notes)
    best = sol.disagg.best if sol.disagg is not None else None
    if sol.status == "infeasible" or best is None:
        row.update(status="infeasible", binding=sol.explanation or "pd: no deployment meets the SLOs")
        return
    p, d = best.prefill, best.decode
    gpu = p.cfg.gpu.name if p.cfg.gpu.name == d.cfg.gpu.name else f"{p.cfg.gpu.name}+{d.cfg.gpu.name}"
    row.update(gpu=gpu, gpus=best.gpus, replicas=p.replicas + d.replicas, visual_tokens=best.shape.visual_tokens,
               precision=p.cfg.precision if p.cfg.precision == d.cfg.precision else f"{p.cfg.precision}+"
               f"{d.cfg.precision}", feasible=True, status=sol.status,
               binding=f"{best.describe()}; " + "; ".join(sol.binding))
    _fill_disaggregated(row, best)


def fill_epd_solution(row: dict[str, Any], sol: Solution) -> None:
    """The cheapest encoder-disaggregated deployment of ``sol`` (a solve asked for epd only) into ``row``: its units
    (LM replica + encoders) in ``binding``, all their GPUs and cost, the epd plan's percentiles and its simulator
    check (``planner.solver.epd``)."""
    row["notes"] = "; ".join(sol.notes)
    best = sol.epd.best if sol.epd is not None else None
    if sol.status == "infeasible" or best is None:
        row.update(status="infeasible", binding=sol.explanation or "epd: no deployment meets the SLOs")
        return
    cfg = best.lm.cfg
    fill_config(row, cfg)
    row.update(gpus=best.gpus, replicas=best.replicas, visual_tokens=best.shape.visual_tokens, feasible=True,
               status=sol.status, binding=f"{best.describe()}; " + "; ".join(sol.binding))
    _fill_disaggregated(row, best)


def fill_solution(row: dict[str, Any], sol: Solution) -> None:
    """The solution's chosen deployment, its simulator check and what the solver noted (rejections) into
    ``row``; an infeasible solution's explanation and nearest relaxation into its binding."""
    row["notes"] = "; ".join(sol.notes)
    if sol.status == "infeasible":
        row.update(status="infeasible", binding=f"{sol.explanation} (nearest relaxation: {sol.relaxation})")
        return
    c = sol.chosen[0]
    fill_config(row, c.cfg)
    row.update(gpus=c.gpus, replicas=c.replicas, visual_tokens=c.shape.visual_tokens)
    fill_memory(row, c.memory)
    fill_prediction(row, c.prediction, c.replicas, c.cost_per_hour)
    row.update(feasible=True, status=sol.status, binding="; ".join(sol.binding))
    sim = c.simulated
    if sim is not None:
        row.update(simulated_ttft_p95_ms=num(sim.ttft.p95, 3), simulated_tpot_p95_ms=num(sim.tpot.p95, 3),
                   simulated_e2e_p95_ms=num(sim.e2e.p95, 3), simulated_requests=sim.requests)
