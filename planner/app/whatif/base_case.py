"""The base case of a sweep and each point's variation of it: the scenario resolved once (model, workload,
SLOs, budget, prices), then per point the workload and SLOs the varied dimensions give, and the words that say
what the sweep holds fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from planner.app.scenario import Scenario
from planner.app.whatif.vary import Vary
from planner.core.errors import RequestError
from planner.spec.slo import Slo, parse_budget, parse_slos
from planner.spec.workload import Workload


@dataclass
class Base:
    """Everything a point starts from, resolved once per sweep."""

    scenario: Scenario
    fixed: bool
    model: Any
    workload: Workload
    slos: list[Slo]
    budget: Any
    prices: dict[str, float]
    overrides: dict[str, Any] = field(default_factory=dict)
    """Workload flags given on the command line (prompt, output, images, rate, concurrency)."""
    workloads: dict[str, Workload] = field(default_factory=dict)


def apply_workload_overrides(wl: Workload, overrides: dict[str, Any]) -> Workload:
    """``wl`` with the given request/arrival fields replaced: ``prompt``, ``output`` (tokens), ``images`` (a list
    of ImageSize, empty for none), ``rate`` (Poisson requests/s), ``concurrency`` (closed-loop clients)."""
    upd: dict[str, Any] = {}
    if overrides.get("images") is not None:
        upd.update(images=list(overrides["images"]), images_per_request_dist=None, image_size_dist=None)
    if overrides.get("prompt") is not None:
        upd.update(prompt_tokens=int(overrides["prompt"]), prompt_tokens_dist=None)
    if overrides.get("output") is not None:
        upd.update(output_tokens=int(overrides["output"]), output_tokens_dist=None)
    if overrides.get("rate") is not None and overrides.get("concurrency") is not None:
        raise RequestError("give --rate or --concurrency, not both")
    if overrides.get("rate") is not None:
        upd.update(arrival="poisson", rate_per_s=float(overrides["rate"]), concurrency=None, trace_s=None)
    if overrides.get("concurrency") is not None:
        upd.update(arrival="closed", concurrency=int(overrides["concurrency"]), rate_per_s=None, trace_s=None)
    for key in ("prompt", "output", "rate", "concurrency"):
        v = overrides.get(key)
        if v is not None and (v < 0 or (v == 0 and key != "prompt")):
            raise RequestError(f"--{key if key in ('rate', 'concurrency') else key + '-tokens'} must be positive "
                               f"(got {v})")
    return wl.model_copy(update=upd) if upd else wl


def make_base(scenario: Scenario, fixed: bool, overrides: dict[str, Any] | None = None) -> Base:
    from planner.spec.lookup import parse_prices, resolve_model

    if fixed and scenario.config is None:
        raise RequestError(f"scenario '{scenario.name}' has no 'config' block: --fixed needs a configuration "
                           "(gpu, precision, ...) or --gpu")
    model = resolve_model(scenario.model)
    from planner.catalog.engine_support import require_supported

    require_supported(model)
    if fixed and scenario.config is not None:
        from planner.catalog.loader import load_gpus

        load_gpus().get(scenario.config.gpu)  # an unknown GPU is an input error, not a row
    prices = parse_prices([f"{k}={v}" for k, v in scenario.search.prices.items()])
    if scenario.config is not None and scenario.config.price_usd_per_gpu_hour is not None:
        from planner.catalog.loader import load_gpus

        prices[load_gpus().get(scenario.config.gpu).name] = scenario.config.price_usd_per_gpu_hour
    overrides = dict(overrides or {})
    workload = apply_workload_overrides(scenario.load_workload(), overrides)
    return Base(scenario=scenario, fixed=fixed, model=model, workload=workload, slos=parse_slos(scenario.slo),
                budget=parse_budget(scenario.budget), prices=prices, overrides=overrides)


def point_workload(base: Base, point: dict[str, Any]) -> Workload:
    wl = base.workload
    if "workload" in point:
        ref = point["workload"]
        if ref not in base.workloads:
            base.workloads[ref] = base.scenario.model_copy(update={"workload": ref}).load_workload()
        picked = apply_workload_overrides(base.workloads[ref], base.overrides)
        # Keep the base arrival process unless the chosen workload names its own.
        if picked.arrival == "single" and wl.arrival != "single":
            picked = picked.model_copy(update={"arrival": wl.arrival, "rate_per_s": wl.rate_per_s,
                                               "concurrency": wl.concurrency, "trace_s": wl.trace_s})
        wl = picked
    upd: dict[str, Any] = {}
    if "image" in point:
        img = point["image"]
        count = max(1, len(wl.images))
        upd.update(images=[img] * count if img is not None else [], images_per_request_dist=None,
                   image_size_dist=None)
    if "prompt" in point:
        upd.update(prompt_tokens=int(point["prompt"]), prompt_tokens_dist=None)
    if "output" in point:
        upd.update(output_tokens=int(point["output"]), output_tokens_dist=None)
    if "rate" in point:
        upd.update(arrival="poisson", rate_per_s=float(point["rate"]), concurrency=None, trace_s=None)
    if "concurrency" in point:
        upd.update(arrival="closed", concurrency=int(point["concurrency"]), rate_per_s=None, trace_s=None)
    return wl.model_copy(update=upd) if upd else wl


def arrival_of(wl: Workload) -> tuple[str, float | None, int | None]:
    """The load model's arrival: traces are taken as Poisson at their mean rate."""
    if wl.arrival == "trace":
        rate = wl.trace_rate_per_s
        if rate is None:
            raise RequestError("a trace workload needs at least two distinct arrival times for a what-if sweep")
        return "poisson", rate, None
    return wl.arrival, wl.rate_per_s, wl.concurrency


def image_label(wl: Workload) -> str:
    if not wl.images:
        return "none"
    sizes = [str(i) for i in wl.images]
    return sizes[0] if len(set(sizes)) == 1 and len(sizes) == 1 else "+".join(sizes)


def describe_workload(wl: Workload) -> str:
    imgs = f"{len(wl.images)} x {image_label(wl)}" if wl.images else "no image"
    return f"{wl.name}: {wl.prompt_tokens} text tokens + {imgs} -> {wl.output_tokens} out, {load_words(wl)}"


def load_words(wl: Workload) -> str:
    if wl.arrival == "poisson":
        return f"Poisson {wl.rate_per_s:g} req/s"
    if wl.arrival == "closed":
        return f"{wl.concurrency} closed-loop client{'s' if wl.concurrency != 1 else ''}"
    if wl.arrival == "trace":
        rate = wl.trace_rate_per_s
        return f"trace ({rate:.3g} req/s)" if rate else "trace"
    return "one request at a time"


def held_fixed(base: Base, varies: list[Vary]) -> str:
    """What the sweep holds fixed, in words (plot titles, table captions)."""
    varied = {v.dim for v in varies}
    sc = base.scenario
    parts = [base.model.name.split("/")[-1]]
    if base.fixed and sc.config is not None:
        c = sc.config
        cfg = []
        if "gpu" not in varied or "tp" not in varied:
            tp = "TP" if "tp" in varied else f"{c.tp * c.pp}"
            gpu = "GPU" if "gpu" in varied else c.gpu
            cfg.append(f"{tp} x {gpu}")
        if "precision" not in varied:
            cfg.append(c.precision)
        if "kv" not in varied and c.kv_cache_dtype != "auto":
            cfg.append(f"kv {c.kv_cache_dtype}")
        if "context" not in varied and c.max_model_len:
            cfg.append(f"ctx {c.max_model_len}")
        if "batch" not in varied and c.max_num_seqs:
            cfg.append(f"max_num_seqs {c.max_num_seqs}")
        parts.append(" ".join(cfg))
    else:
        parts.append("cheapest deployment (solver)")
    wl = base.workload
    if "workload" not in varied:
        w = []
        if "prompt" not in varied:
            w.append(f"{wl.prompt_tokens} text tok")
        if "image" not in varied:
            w.append(f"{len(wl.images)} x {image_label(wl)}" if wl.images else "no image")
        if "output" not in varied:
            w.append(f"{wl.output_tokens} out")
        parts.append(f"{wl.name} (" + ", ".join(w) + ")")
    if "rate" not in varied and "concurrency" not in varied:
        parts.append(load_words(wl))
    if "slo" not in varied and base.slos:
        parts.append("SLO " + ", ".join(f"{s.key}<={s.limit_ms:g}ms" for s in base.slos))
    return " | ".join(p for p in parts if p)




def point_slos(base: Base, point: dict[str, Any]) -> list[Slo]:
    return parse_slos(list(point["slo"])) if "slo" in point else base.slos

