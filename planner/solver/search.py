"""Stage 2 over the lazy space: CP-SAT on exact candidates and optimistic bounds, and the best-first query for
alternatives.

A (workload, GPU type) group whose evaluated configurations already gave a candidate with fewer GPUs than any
unevaluated one needs (``Space.lb_gpus``: ``tp * pp`` times the replicas its capacity alone requires) is
*settled*: its best candidate is exact. Unsettled groups enter CP-SAT as one optimistic option (the lower bound of
the cheapest unevaluated level), a relaxation of the true problem. When the relaxed optimum uses only settled
groups it is feasible for the true problem, hence optimal; otherwise the optimistic groups it picked are
evaluated one level further and CP-SAT runs again. The result equals full enumeration (``candidates_for`` +
``prune`` + ``assign``).

OR-Tools is imported only when a model is solved: a round whose optimum is plain (``cpsat.obvious``: one
cheapest option per workload, within the budget) and only names groups to evaluate runs no model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from planner.solver.candidate import Candidate, prune, prune_key
from planner.solver.configs import Config
from planner.solver.request import Objective
from planner.solver.space import Space
from planner.spec.slo import Budget

if TYPE_CHECKING:
    from planner.solver.cpsat import Option


def assign(workloads: list[str], cands: list[Candidate], budget: Budget, objective: Objective
           ) -> tuple[str, list[Candidate]]:
    """Stage 2 over exact candidates: CP-SAT picks one per workload."""
    from planner.solver.cpsat import option, solve_assignment

    status, chosen = solve_assignment(workloads, [option(c) for c in cands], budget, objective)
    return status, [o.candidate for o in chosen if o.candidate is not None]


def optimise(space: Space, on_round: Callable[[list[Candidate]], None] | None = None
             ) -> tuple[str, list[Candidate], list[Candidate]]:
    """Stage 2 over lazily evaluated groups; returns (status, chosen, kept) where ``kept`` holds, per workload,
    the candidates the explanation and the binding report need (latency objective: every Pareto candidate;
    otherwise empty, and the space answers for the cheapest).

    ``on_round(incumbents)``, if given, hears before each CP-SAT round the best candidate evaluated so far of each
    workload that has one (lowest cost, or GPUs then cost): likely the answer, and worth simulating early."""
    from planner.solver.cpsat import Option, obvious, option, solve_assignment

    req = space.req
    names = [w.name for w in req.workloads]
    if req.objective == "latency":
        kept = prune([k for n in names for k in space.all_candidates(n)], "latency")
        status, chosen = assign(names, kept, req.budget, req.objective)
        return status, chosen, kept
    groups: dict[tuple[str, str], list[Config]] = {}
    for n in names:
        for c in space.configs[n]:
            groups.setdefault((n, c.gpu), []).append(c)

    lb = space.lb_gpus
    def rank(k: Candidate) -> tuple[Any, ...]:
        return (k.cost_per_hour, prune_key(k)) if req.objective == "cost" else (k.gpus, k.cost_per_hour,
                                                                                prune_key(k))

    while True:
        opts: list[Option] = []
        pending: dict[int, tuple[list[Config], float]] = {}
        incumbents: dict[str, Candidate] = {}
        for (n, gpu), cfgs in sorted(groups.items()):
            best, low = space.group_best(cfgs, prune_key, lb)
            if best is not None and (n not in incumbents or rank(best) < rank(incumbents[n])):
                incumbents[n] = best
            if low is None or (best is not None and best.gpus < low - 1e-9):
                if best is not None:
                    opts.append(option(best))
                continue
            # Unsettled: one optimistic option, a lower bound of the group's true best.
            g = int(low)
            opt = Option(n, gpu, g, g * cfgs[0].price, 0.0, None)
            pending[id(opt)] = (cfgs, low)
            opts.append(opt)
        if on_round is not None:
            on_round([incumbents[n] for n in names if n in incumbents])
        plain = obvious(names, opts, req.budget, req.objective)
        if plain is not None and any(o.candidate is None for o in plain):
            picked = plain  # a round that only says what to evaluate next: no CP-SAT run needed
        else:
            status, picked = solve_assignment(names, opts, req.budget, req.objective)
            if status == "infeasible":
                return "infeasible", [], []
        lazy = [o for o in picked if o.candidate is None]
        if not lazy:
            return status, [o.candidate for o in picked if o.candidate is not None], []
        for o in lazy:
            cfgs, low = pending[id(o)]
            space.evaluate_level(cfgs, lb, low)


def alternative_group(c0: Candidate, gpu: str, precision: str) -> tuple[str, str] | None:
    """What an alternative stands for: another GPU type (its best precision), or another precision on the
    chosen GPU type; None for the chosen (GPU, precision) itself. One alternative per group, so the list
    shows other GPU types rather than three precisions of the same card."""
    if gpu != c0.cfg.gpu.name:
        return (gpu, "*")
    return None if precision == c0.cfg.precision else (gpu, precision)


def _alternative_key(k: Candidate) -> tuple[float, float]:
    return (k.cost_per_hour, k.prediction.ttft.p95)


def lazy_alternatives(space: Space, chosen: list[Candidate], n: int = 3) -> list[Candidate]:
    """Cheapest candidates on other GPU types or precisions than the chosen one (first workload), best-first
    over the configurations' cost bounds: the groups of ``alternative_group`` are settled in order of cost."""
    if not chosen or n <= 0:
        return []
    c0 = chosen[0]
    groups: dict[tuple[str, str], list[Config]] = {}
    for c in space.configs[c0.workload]:
        k = alternative_group(c0, c.gpu, c.base.precision)
        if k is not None:
            groups.setdefault(k, []).append(c)
    out: list[Candidate] = []
    while groups and len(out) < n:
        # Unsettled groups sort before settled ones of the same cost: they could still tie.
        heads: list[tuple[tuple[float, int, float, str], tuple[str, str], Candidate | None, float | None]] = []
        for g, cfgs in list(groups.items()):
            best, low = space.group_best(cfgs, _alternative_key, space.lb_cost)
            if best is None and low is None:
                del groups[g]  # evaluated, no candidate
            elif low is not None and (best is None or best.cost_per_hour >= low - 1e-9):
                heads.append(((low, 0, 0.0, g[0]), g, None, low))
            elif best is not None:
                heads.append(((best.cost_per_hour, 1, best.prediction.ttft.p95, g[0]), g, best, None))
        if not heads:
            break
        heads.sort(key=lambda h: h[0])
        _, g, best, low = heads[0]
        if best is None:
            assert low is not None
            space.evaluate_level(groups[g], space.lb_cost, low)
            continue
        out.append(best)
        del groups[g]
    return out


def alternatives(chosen: list[Candidate], cands: list[Candidate], n: int = 3) -> list[Candidate]:
    """Cheapest candidates on other GPU types or precisions than the chosen one (first workload), from a full
    enumeration (what ``lazy_alternatives`` must equal)."""
    if not chosen:
        return []
    c0 = chosen[0]
    best: dict[tuple[str, str], Candidate] = {}
    for c in cands:
        if c.workload != c0.workload:
            continue
        k = alternative_group(c0, c.cfg.gpu.name, c.cfg.precision)
        if k is None:
            continue
        if k not in best or _alternative_key(c) < _alternative_key(best[k]):
            best[k] = c
    return sorted(best.values(), key=lambda c: (c.cost_per_hour, c.prediction.ttft.p95, c.cfg.gpu.name))[:n]
