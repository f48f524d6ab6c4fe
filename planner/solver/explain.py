"""The solution in words: what binds the chosen plan (the tightest SLO, why one replica fewer would not do,
what shapes the tail, the budget) and, when no plan exists, the binding constraint with numbers and the nearest
relaxation.

Every line names numbers a user can check against the plan, so a surprising answer can be traced to its cause.
"""

from __future__ import annotations

import math
from dataclasses import replace

from planner.catalog.loader import load_calibration, load_engine
from planner.load.analytic import build_step_cost, predict
from planner.load.slo_check import observed, tightest
from planner.perf.hostcpu import engine_vcpus, offered_vcpus, replica_vcpus
from planner.solver.candidate import Candidate, Screening
from planner.solver.frontend import FrontEnd
from planner.solver.request import SolveRequest, offered
from planner.spec.slo import Slo
from planner.spec.workload import Workload

TAIL_RATIO = 2.0
"""Simulated TTFT p99 over p95 above which the binding line calls the tail out (a queue's exponential tail has
p99 / p95 = 1.5; twice p95 means something else, slots or KV blocks, holds requests back)."""


def binding_constraints(req: SolveRequest, chosen: list[Candidate], kept: list[Candidate]) -> list[str]:
    """Per chosen deployment: its tightest SLO and why it needs its replicas, what shapes its tail, and whether
    the budget kept a cheaper option out."""
    out: list[str] = []
    for c in chosen:
        slos = req.slos_on(c.workload, c.cfg.gpu.name)
        head = tightest(c.prediction, slos)
        if head is not None:
            room, s, value = head
            margin = ""
            if slos != req.slos_of(c.workload):
                margin = (f" (the SLO less a {req.uncalibrated_margin:.0%} margin: {c.cfg.gpu.name}'s speed model is "
                          f"uncalibrated)")
            out.append(f"{c.workload}: {s.key} {value:.1f} ms of {s.limit_ms:g} ms{margin} "
                       f"({room * 100:.0f}% headroom) is the tightest SLO; {c.replicas} replica(s) needed"
                       + _why_replicas(req, c, slos))
        front = front_end_line(req, c)
        if front:
            out.append(f"{c.workload}: front end: {front}")
        tail = tail_shaper(c)
        if tail:
            out.append(f"{c.workload}: tail: {tail}")
        options = [k for k in kept if k.workload == c.workload]
        if not options:
            continue
        cheapest = min(options, key=lambda k: k.cost_per_hour)
        if cheapest.cost_per_hour < c.cost_per_hour - 1e-9:
            out.append(f"{c.workload}: budget/inventory: the cheapest option ({cheapest.gpus} x "
                       f"{cheapest.cfg.gpu.name}, ${cheapest.cost_per_hour:.2f}/h) does not fit the budget")
    return out


FRONT_BUSY = 0.5
"""API-server utilisation from which the binding report shows the front end even with one API server."""


def _front(c: Candidate) -> FrontEnd:
    return FrontEnd.of(load_calibration(c.cfg.gpu.name), load_engine().host, c.cfg, c.shape)


def front_end_line(req: SolveRequest, c: Candidate) -> str:
    """The chosen deployment's API servers when they bind (more than one, or one busy at least ``FRONT_BUSY`` of
    the time): how long a request holds one, how busy they are, why one fewer would not do, and their CPUs."""
    w = next((x for x in req.workloads if x.name == c.workload), None)
    if w is None or not req.frontend_queue:
        return ""
    kind, total = offered(w)
    if kind != "poisson":
        return ""
    fe = _front(c)
    n = c.cfg.api_server_count
    rate = total / c.replicas
    busy = rate * fe.hold_ms / 1e3 / n
    if n <= 1 and busy < FRONT_BUSY:
        return ""
    line = (f"{n} API server(s) per replica (--api-server-count {n}): each request holds one for {fe.hold_ms:.0f} ms "
            f"(one saturates at {1e3 / fe.hold_ms:.3g} req/s), so at {rate:.3g} req/s per replica they are "
            f"{busy:.0%} busy")
    if n > 1:
        line += "; " + _why_servers(req, c, fe, rate)
    host = load_engine().host
    if host is not None:
        need = replica_vcpus(host, c.cfg, fe.vcpus_per_server)
        offered_cpus = offered_vcpus(c.cfg)
        line += (f"; {need:.1f} vCPUs per replica (engine {engine_vcpus(host, c.cfg):g} + {n} x "
                 f"{fe.vcpus_per_server:.1f})" + ("" if math.isinf(offered_cpus) else
                                                  f" of the {offered_cpus:g} its node offers"))
    return line


def _why_servers(req: SolveRequest, c: Candidate, fe: FrontEnd, rate: float) -> str:
    """Why one API server fewer would not do."""
    fewer = c.cfg.api_server_count - 1
    busy = rate * fe.hold_ms / 1e3 / fewer
    if busy >= 1:
        return f"{fewer} would saturate ({busy:.0%} of their capacity offered)"
    if busy > req.max_load:
        return f"{fewer} would run {busy:.0%} busy (max load {req.max_load:.0%})"
    cost = build_step_cost(c.cfg, load_calibration(c.cfg.gpu.name))
    pred = predict(cost, replace(c.cfg, api_server_count=fewer), c.shape, "poisson", rate, None,
                   c.memory.kv_capacity_tokens)
    for s in req.slos_on(c.workload, c.cfg.gpu.name):
        value = observed(pred, s)
        if value > s.limit_ms:
            return f"with {fewer}, {s.key} would be {value:.1f} ms"
    return f"with {fewer}, the load ceiling binds ({pred.max_requests_per_s:.3g} req/s per replica)"


def tail_shaper(c: Candidate) -> str:
    """What shapes the chosen deployment's tail beyond the SLO it was sized for, with numbers: requests of the
    planned length that fit in the KV cache at once (when fewer than max_num_seqs), preemptions, and a simulated
    TTFT p99 far above its p95. Empty when none does."""
    sim = c.simulated
    parts: list[str] = []
    per_request = c.shape.prompt_tokens + c.shape.output_tokens
    fit = c.memory.kv_capacity_tokens // max(1, per_request)
    seqs = c.cfg.max_num_seqs
    kv_bound = fit < seqs
    if kv_bound:
        parts.append(f"the KV cache holds {c.memory.kv_capacity_tokens:,} tokens, {fit} requests of "
                     f"{per_request:,} tokens at once, fewer than max_num_seqs {seqs}: it caps the batch")
    if sim is not None and sim.preemptions:
        parts.append(f"{sim.preemptions} preemption(s) in {sim.requests:,} simulated requests (KV cache full)")
    if sim is not None and sim.ttft.p95 > 0 and sim.ttft.p99 > TAIL_RATIO * sim.ttft.p95:
        parts.append(f"simulated TTFT p99 {sim.ttft.p99:,.0f} ms is {sim.ttft.p99 / sim.ttft.p95:.1f}x its p95 "
                     f"{sim.ttft.p95:,.0f} ms" + (" (requests wait for KV space)" if kv_bound or sim.preemptions
                                                  else ""))
    if not parts or (len(parts) == 1 and kv_bound and sim is not None and sim.peak_in_system <= fit):
        return ""  # the KV bound never bit: the simulated load never held that many requests
    return "; ".join(parts)


def _why_replicas(req: SolveRequest, c: Candidate, slos: list[Slo]) -> str:
    """Why one replica fewer would not do (Poisson workloads): it saturates, or it would run above the load
    ceiling, or an SLO breaks, or (the analytic model content with it) the simulator's check rejected it."""
    w = next((x for x in req.workloads if x.name == c.workload), None)
    if c.replicas <= 1 or w is None or w.arrival == "single":
        return ""
    kind, total = offered(w)
    if kind != "poisson":
        return ""
    fewer = c.replicas - 1
    cap = c.prediction.max_requests_per_s
    fe = _front(c)
    if req.frontend_queue and fe.ceiling_servers(total / fewer, req.max_load) > max(1, fe.most):
        need = fe.ceiling_servers(total / fewer, req.max_load)
        return (f" (front end: with {fewer}, each replica would need {need} API servers, more than the "
                f"{fe.most} its node's CPUs hold)")
    api_cap = c.cfg.api_server_count * 1e3 / fe.hold_ms if fe.hold_ms > 0 else math.inf
    whose = (f", its {c.cfg.api_server_count} API server(s)' limit" if req.frontend_queue
             and api_cap <= cap * (1 + 1e-6) else "")
    if total / fewer >= cap:
        return f" (capacity: one replica saturates at {cap:.3g} req/s{whose})"
    if total / fewer > req.max_load * cap:
        return (f" (load: with {fewer}, each would run at {total / fewer / cap:.0%} of its {cap:.3g} req/s "
                f"saturation{whose}; max load {req.max_load:.0%})")
    cost = build_step_cost(c.cfg, load_calibration(c.cfg.gpu.name))
    pred = predict(cost, c.cfg, c.shape, "poisson", total / fewer, None, c.memory.kv_capacity_tokens,
                   api_queue=req.frontend_queue)
    for s in slos:
        value = observed(pred, s)
        if value > s.limit_ms:
            return f" (with {fewer}, {s.key} would be {value:.1f} ms)"
    return f" (with {fewer}, the simulator's check failed)"


def explain_infeasible(req: SolveRequest, screens: dict[str, Screening], kept: list[Candidate]) -> tuple[str, str]:
    """(explanation, nearest relaxation) of an infeasible request: the first workload that has no option at all
    says why (restriction, memory, latency, load), else the budget binds."""
    for w in req.workloads:
        options = [k for k in kept if k.workload == w.name]
        if not options:
            found = _no_option(req, w, screens[w.name])
            if found is not None:
                return found
        elif screens[w.name].memory_fits == 0:
            return _memory(req, w, screens[w.name])
    return _budget_binds(req, kept)


def _no_option(req: SolveRequest, w: Workload, s: Screening) -> tuple[str, str] | None:
    """Why a workload has no option at all."""
    label = f"{w.name}: " if len(req.workloads) > 1 else ""
    if req.restriction:
        return (f"{label}no deployment with {req.restriction} meets the SLOs within the budget",
                "allow other values")
    if s.memory_fits == 0:
        return _memory(req, w, s)
    for slo in req.slos_of(w.name):
        best = s.best.get(slo.key)
        if best and best[0] > slo.limit_ms:
            value, where = best
            return (f"{label}latency: the lowest achievable {slo.metric} {slo.stat} is {value:.0f} ms "
                    f"> {slo.limit_ms:g} ms (best: {where}, one request alone)",
                    f"relax the SLO to {slo.key}={math.ceil(value * 1.05)}ms")
    return (f"{label}load: no configuration serves workload '{w.name}' within the SLOs with at most "
            f"{req.max_replicas} replicas", "relax the SLOs or lower the rate")


def _memory(req: SolveRequest, w: Workload, s: Screening) -> tuple[str, str]:
    """No configuration of the workload fits in memory: the precisions have no checkpoint or no GPU, or the
    weights are too large."""
    model = req.model_of(w.name)
    label = f"{w.name}: " if len(req.workloads) > 1 else ""
    if s.largest_replica_gib == 0:
        if s.missing_checkpoints and set(s.missing_checkpoints) == set(req.precisions):
            missing = "/".join(s.missing_checkpoints)
            return (f"{label}{missing}: no known pre-quantized checkpoint of {model.name} (vLLM cannot "
                    f"quantize to int4/int8 at load time)",
                    "allow bf16 or fp8 (--precisions bf16,fp8), or give a quantized checkpoint's config.json "
                    "with --model")
        return (f"{label}no allowed GPU supports the requested precisions "
                f"({', '.join(req.precisions)}) for {model.name}",
                "allow more GPU types or precisions (--gpus / --precisions)")
    return (f"{label}memory: weights need {s.smallest_weights_gib:.0f} GiB at {s.smallest_weights_config} "
            f"(plus KV cache and activations); the largest allowed replica has {s.largest_replica_desc}",
            "allow larger GPUs or more of them per replica, or a lower precision (--precisions int4)")


def _budget_binds(req: SolveRequest, kept: list[Candidate]) -> tuple[str, str]:
    """Every workload has options: the budget is what binds. The relaxation raises only what binds: GPU counts
    over the inventory, and the hourly limit when the plan costs more."""
    need: dict[str, int] = {}
    cheapest_cost = 0.0
    parts = []
    for w in req.workloads:
        cheapest = min((k for k in kept if k.workload == w.name), key=lambda k: (k.cost_per_hour, k.gpus))
        need[cheapest.cfg.gpu.name] = need.get(cheapest.cfg.gpu.name, 0) + cheapest.gpus
        cheapest_cost += cheapest.cost_per_hour
    for gpu, n in need.items():
        have = req.budget.limit(gpu)
        parts.append(f"{n} x {gpu}" + (f" > {have}" if have is not None and n > have else ""))
    msg = f"budget: the cheapest feasible plan needs {', '.join(parts)} (${cheapest_cost:.2f}/h)"
    over_cap = req.budget.max_usd_per_hour is not None and cheapest_cost > req.budget.max_usd_per_hour
    if over_cap:
        msg += f" > ${req.budget.max_usd_per_hour:g}/h"
    raise_ = [f"{n}x{g}" for g, n in need.items() if (have := req.budget.limit(g)) is not None and n > have]
    if over_cap:
        raise_.append(f"${math.ceil(cheapest_cost * 100) / 100:g}/h")
    relax = "raise the budget to " + " and ".join(raise_) if raise_ else "raise the budget"
    return msg, relax


def exhausted_explanation(req: SolveRequest, rejections: int) -> tuple[str, str]:
    """The simulator rejected every round's choice: say so, and name a bursty trace when one is the likely cause
    (the analytic screen takes a trace as Poisson at its mean rate, the simulator replays its bursts)."""
    explanation = (f"simulation: the simulator rejected each of the {rejections} deployments the analytic "
                   f"model chose in {req.verify_rounds + 1} rounds")
    relaxation = "relax the SLOs or raise the budget (the analytic screen is optimistic here)"
    bursty = [w.name for w in req.workloads if w.arrival == "trace" and w.trace_s and not w.rate_per_s]
    if bursty:
        relaxation = (f"the analytic screen takes the trace of {', '.join(bursty)} as Poisson at its mean "
                      f"rate, the simulator replays its bursts: give --rate at the burst rate to size for "
                      f"them, or relax the SLOs")
    return explanation, relaxation
