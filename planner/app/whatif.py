"""What-if sweeps: one base scenario, one or more varied dimensions, one row per point.

A dimension is written ``DIM=V1,V2,...`` or, for numbers and image sizes, as a
range ``DIM=A..B`` (``A..B:N`` for N evenly spaced points, ends included)::

    gpu=A100,H100,L40S            precision=bf16,fp8,int4        kv=auto,fp8
    rate=1..40:10  (requests/s)   concurrency=1,8,32             image=640x480,1680x2240,none
    context=8k,32k,128k           tp=1..8 (powers of two)        batch=1,4,16 (max_num_seqs)
    prompt=64,512,2048            output=128,512                 slo=ttft_p95=500ms,ttft_p95=2s+tpot_p95=50ms
    workload=document-vqa,captioning,my-workload.yaml

Default points of ``A..B`` without ``:N``: integers every value up to 50 of
them (``tp`` and ``batch``: the powers of two inside), otherwise 10 evenly
spaced. An ``slo`` value joins several SLOs with ``+``. Several ``--vary``
span their cartesian product, the first one outermost.

Each point is evaluated either by the solver (its cheapest deployment under
the scenario's SLOs and budget; a varied ``gpu``/``precision``/``kv`` restricts
its search, a varied ``tp``/``batch`` keeps only the candidates that have it)
or, in fixed mode, on the scenario's one configuration: the memory model and
the analytic load model (``planner.load.analytic``) of one replica. Fixed-mode
points reuse the resolved config, memory breakdown, step-cost tables and
request shapes of earlier points, so a rate or image sweep of 1,000 points
builds the step-cost tables once.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

from planner.app.scenario import Scenario, parse_tokens
from planner.catalog.schema import KvCacheDtype, Precision
from planner.core.errors import PlannerError, RequestError, UnsupportedError
from planner.core.units import GIB
from planner.spec.slo import Slo, parse_budget, parse_slos
from planner.spec.workload import ImageSize, Workload, parse_image_size

DEFAULT_POINTS = 10
MAX_POINTS = 100_000
MAX_VALUE = 1e9
"""Largest value of a varied number (rate, tokens, batch, ...); above it a value is a typo."""
_ALIASES = {
    "gpus": "gpu", "precisions": "precision", "kv_cache_dtype": "kv", "kv-cache-dtype": "kv",
    "rate_per_s": "rate", "images": "image", "image_size": "image", "max_model_len": "context",
    "max-model-len": "context", "max_num_seqs": "batch", "max-num-seqs": "batch", "prompt_tokens": "prompt",
    "prompt-tokens": "prompt", "output_tokens": "output", "output-tokens": "output", "slos": "slo",
}
DIMENSIONS = ("gpu", "precision", "kv", "rate", "concurrency", "image", "context", "tp", "batch", "prompt",
              "output", "slo", "workload")
COLUMN = {"gpu": "gpu", "precision": "precision", "kv": "kv_cache_dtype", "rate": "rate_per_s",
          "concurrency": "concurrency", "image": "image", "context": "max_model_len", "tp": "tp",
          "batch": "max_num_seqs", "prompt": "prompt_tokens", "output": "output_tokens", "slo": "slo",
          "workload": "workload"}
"""Row column that holds each dimension's value."""
UNITS = {"rate": "requests/s", "concurrency": "clients", "context": "tokens", "batch": "sequences",
         "prompt": "text tokens", "output": "tokens", "tp": "GPUs"}
SOLVER_SEQS = (8, 16, 32, 64, 128, 256)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Vary:
    """One swept dimension: canonical name, parsed values and their labels."""

    dim: str
    values: tuple[Any, ...]
    labels: tuple[str, ...]

    @property
    def numeric(self) -> bool:
        return self.dim in ("rate", "concurrency", "context", "tp", "batch", "prompt", "output")


def _canonical(dim: str) -> str:
    d = dim.strip().lower()
    d = _ALIASES.get(d, d)
    if d not in DIMENSIONS:
        raise RequestError(f"--vary dimension '{dim}' is not one of {', '.join(DIMENSIONS)}")
    return d


def _linspace(a: float, b: float, n: int) -> list[float]:
    if n == 1:
        return [a]
    return [a + (b - a) * i / (n - 1) for i in range(n)]


def _split_range(dim: str, text: str) -> tuple[str, str, int | None] | None:
    """``A..B`` or ``A..B:N`` -> (A, B, N); None when ``text`` is not a range."""
    if ".." not in text:
        return None
    body, _, count = text.partition(":")
    lo, _, hi = body.partition("..")
    n: int | None = None
    if count:
        try:
            n = int(count)
        except ValueError:
            raise RequestError(f"--vary {dim}: '{text}' has a point count '{count}' that is not an integer") from None
        if not 1 <= n <= MAX_POINTS:
            raise RequestError(f"--vary {dim}: point count {n} must be between 1 and {MAX_POINTS}")
    if not lo.strip() or not hi.strip():
        raise RequestError(f"--vary {dim}: range '{text}' is not A..B or A..B:N")
    return lo.strip(), hi.strip(), n


def _number(dim: str, text: str, integer: bool) -> float:
    raw = text.strip().lower().removesuffix("/s")
    tokens = dim in ("context", "prompt", "output")
    try:
        value = float(parse_tokens(raw, dim)) if tokens and raw not in ("0", "0.0") else float(raw)
    except (ValueError, RequestError):
        kind = "a token count (8192, 8k, 128k)" if tokens else "a number"
        raise RequestError(f"--vary {dim}: '{text}' is not {kind}") from None
    if not math.isfinite(value) or value > MAX_VALUE:
        raise RequestError(f"--vary {dim}: '{text[:40]}' must be a finite number <= {MAX_VALUE:g}")
    if integer and value != int(value):
        raise RequestError(f"--vary {dim}: '{text}' is not an integer")
    low = 0 if dim == "prompt" else 1e-12
    if value < low:
        raise RequestError(f"--vary {dim}: '{text}' must be {'>= 0' if dim == 'prompt' else 'positive'}")
    return float(value)


def _numeric_values(dim: str, text: str, default_points: int) -> list[float]:
    integer = dim != "rate"
    rng = _split_range(dim, text)
    if rng is None:
        return [_number(dim, v, integer) for v in text.split(",") if v.strip()]
    lo_s, hi_s, n = rng
    lo, hi = _number(dim, lo_s, integer), _number(dim, hi_s, integer)
    if hi < lo:
        raise RequestError(f"--vary {dim}: range '{text}' goes down ({hi_s} < {lo_s})")
    if n is None and dim in ("tp", "batch"):
        pows = [2.0**k for k in range(0, 20) if lo <= 2**k <= hi]
        if not pows:
            raise RequestError(f"--vary {dim}: range '{text}' holds no power of two (give A..B:N for others)")
        return pows
    if n is None:
        n = int(hi - lo + 1) if integer and hi - lo + 1 <= 50 else default_points
    vals = _linspace(lo, hi, n)
    if integer:
        vals = [float(v) for v in dict.fromkeys(round(v) for v in vals)]
    return vals


def _image_values(text: str, default_points: int) -> list[ImageSize | None]:
    rng = _split_range("image", text)
    if rng is None:
        out: list[ImageSize | None] = []
        for v in text.split(","):
            v = v.strip()
            if not v:
                continue
            if v.lower() in ("none", "0", "no", "text"):
                out.append(None)
            else:
                w, h = parse_image_size(v)
                out.append(ImageSize(width=w, height=h))
        return out
    lo_s, hi_s, n = rng
    (w0, h0), (w1, h1) = parse_image_size(lo_s), parse_image_size(hi_s)
    n = n or default_points
    sizes = [(round(w0 + (w1 - w0) * t), round(h0 + (h1 - h0) * t)) for t in _linspace(0.0, 1.0, n)]
    return [ImageSize(width=w, height=h) for w, h in dict.fromkeys(sizes)]


def _fmt_num(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:.4g}"


def parse_vary(text: str, default_points: int = DEFAULT_POINTS) -> Vary:
    """``"rate=1..40:10"`` -> Vary('rate', (1.0, 5.33, ...), labels)."""
    dim_s, eq, body = text.partition("=")
    if not eq or not body.strip():
        raise RequestError(f"--vary '{text}' is not DIM=V1,V2 or DIM=A..B[:N] (e.g. rate=1..40:10, gpu=A100,H100)")
    dim = _canonical(dim_s)
    body = body.strip()
    values: list[Any]
    labels: list[str]
    if dim in ("rate", "concurrency", "context", "tp", "batch", "prompt", "output"):
        nums = _numeric_values(dim, body, default_points)
        values = [v if dim == "rate" else int(v) for v in nums]
        labels = [_fmt_num(v) for v in nums]
    elif dim == "image":
        sizes = _image_values(body, default_points)
        values, labels = list(sizes), [str(s) if s else "none" for s in sizes]
    elif dim == "gpu":
        from planner.catalog.loader import load_gpus

        values = [load_gpus().get(v.strip()).name for v in body.split(",") if v.strip()]
        labels = list(values)
    elif dim in ("precision", "kv"):
        allowed = get_args(Precision) if dim == "precision" else get_args(KvCacheDtype)
        values = [v.strip().lower() for v in body.split(",") if v.strip()]
        for v in values:
            if v not in allowed:
                raise RequestError(f"--vary {dim}: '{v}' is not one of {', '.join(allowed)}")
        labels = list(values)
    elif dim == "slo":
        values = []
        for group in body.split(","):
            parts = [p.strip() for p in group.replace(";", "+").split("+") if p.strip()]
            if not parts:
                continue
            parse_slos(parts)  # validate now
            values.append(tuple(parts))
        labels = ["+".join(v) for v in values]
    else:  # workload
        values = [v.strip() for v in body.split(",") if v.strip()]
        labels = list(values)
    if not values:
        raise RequestError(f"--vary {dim}: no values in '{body}'")
    if len(set(labels)) != len(labels):
        raise RequestError(f"--vary {dim}: a value is given twice in '{body}'")
    return Vary(dim, tuple(values), tuple(labels))


def parse_varies(items: list[str] | None, default_points: int = DEFAULT_POINTS) -> list[Vary]:
    varies = [parse_vary(t, default_points) for t in items or []]
    dims = [v.dim for v in varies]
    dup = sorted({d for d in dims if dims.count(d) > 1})
    if dup:
        raise RequestError(f"--vary {dup[0]} is given twice; list all its values in one --vary")
    if "rate" in dims and "concurrency" in dims:
        raise RequestError("--vary rate and --vary concurrency exclude each other (Poisson vs closed-loop arrivals)")
    total = math.prod(len(v.values) for v in varies)
    if total > MAX_POINTS:
        raise RequestError(f"the sweep has {total:,} points; at most {MAX_POINTS:,} are allowed")
    return varies


def points(varies: list[Vary]) -> list[dict[str, Any]]:
    """Cartesian product of the varied values, the first dimension outermost."""
    if not varies:
        return [{}]
    return [dict(zip([v.dim for v in varies], combo)) for combo in itertools.product(*[v.values for v in varies])]


def point_label(point: dict[str, Any]) -> str:
    parts = []
    for dim, value in point.items():
        if dim == "image":
            text = str(value) if value else "none"
        elif dim == "slo":
            text = "+".join(value)
        elif isinstance(value, float):
            text = _fmt_num(value)
        else:
            text = str(value)
        parts.append(f"{dim}={text}")
    return " ".join(parts) or "base"


# --------------------------------------------------------------------------- the base case


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


def _base(scenario: Scenario, fixed: bool, overrides: dict[str, Any] | None = None) -> Base:
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


def _point_workload(base: Base, point: dict[str, Any]) -> Workload:
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


def _arrival(wl: Workload) -> tuple[str, float | None, int | None]:
    """The load model's arrival: traces are taken as Poisson at their mean rate."""
    if wl.arrival == "trace":
        rate = wl.trace_rate_per_s
        if rate is None:
            raise RequestError("a trace workload needs at least two distinct arrival times for a what-if sweep")
        return "poisson", rate, None
    return wl.arrival, wl.rate_per_s, wl.concurrency


def _image_label(wl: Workload) -> str:
    if not wl.images:
        return "none"
    sizes = [str(i) for i in wl.images]
    return sizes[0] if len(set(sizes)) == 1 and len(sizes) == 1 else "+".join(sizes)


def describe_workload(wl: Workload) -> str:
    imgs = f"{len(wl.images)} x {_image_label(wl)}" if wl.images else "no image"
    return f"{wl.name}: {wl.prompt_tokens} text tokens + {imgs} -> {wl.output_tokens} out, {_load_words(wl)}"


def _load_words(wl: Workload) -> str:
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
            w.append(f"{len(wl.images)} x {_image_label(wl)}" if wl.images else "no image")
        if "output" not in varied:
            w.append(f"{wl.output_tokens} out")
        parts.append(f"{wl.name} (" + ", ".join(w) + ")")
    if "rate" not in varied and "concurrency" not in varied:
        parts.append(_load_words(wl))
    if "slo" not in varied and base.slos:
        parts.append("SLO " + ", ".join(f"{s.key}<={s.limit_ms:g}ms" for s in base.slos))
    return " | ".join(p for p in parts if p)


# --------------------------------------------------------------------------- rows


def _num(x: float | None, nd: int = 4) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), nd)


def _empty_row(base: Base, point: dict[str, Any], wl: Workload) -> dict[str, Any]:
    arrival, rate, conc = _arrival(wl)
    row: dict[str, Any] = {
        "point": point_label(point),
        "mode": "fixed" if base.fixed else "solve",
        "model": base.model.name,
        "workload": point.get("workload", wl.name),
        "gpu": "", "gpus": None, "tp": None, "pp": None, "replicas": None, "precision": "",
        "kv_cache_dtype": "", "max_model_len": None, "max_num_seqs": None,
        "prompt_tokens": wl.prompt_tokens, "visual_tokens": None, "output_tokens": wl.output_tokens,
        "image": _image_label(wl), "arrival": arrival, "rate_per_s": rate, "concurrency": conc,
        "slo": "+".join(f"{s.key}={s.limit_ms:g}ms" for s in _point_slos(base, point)),
        "feasible": False, "status": "", "binding": "",
        "cost_per_hour": None, "cost_per_1k_requests": None, "requests_per_s": None, "max_requests_per_s": None,
        "output_tokens_per_s": None, "saturated": None, "mean_batch": None, "calibration": "",
    }
    for metric in ("ttft", "tpot", "e2e"):
        for stat in ("p50", "p95", "p99"):
            row[f"{metric}_{stat}_ms"] = None
    for k in ("weights_gib", "kv_cache_gib", "activations_gib", "overhead_gib", "total_gib", "usable_gib",
              "gpu_memory_gib", "kv_capacity_tokens"):
        row[k] = None
    for dim in ("gpu", "precision", "kv", "tp", "context", "batch"):
        if dim in point:
            row[COLUMN[dim]] = point[dim]
    return row


def _point_slos(base: Base, point: dict[str, Any]) -> list[Slo]:
    return parse_slos(list(point["slo"])) if "slo" in point else base.slos


def _fill_prediction(row: dict[str, Any], pred: Any, replicas: int, cost_per_hour: float) -> None:
    for metric in ("ttft", "tpot", "e2e"):
        p = getattr(pred, metric)
        for stat in ("p50", "p95", "p99"):
            row[f"{metric}_{stat}_ms"] = _num(getattr(p, stat), 3)
    rps = pred.requests_per_s * replicas
    row["requests_per_s"] = _num(rps)
    row["max_requests_per_s"] = _num(pred.max_requests_per_s * replicas)
    row["output_tokens_per_s"] = _num(pred.output_tokens_per_s * replicas, 2)
    row["saturated"] = bool(pred.saturated)
    row["mean_batch"] = _num(pred.mean_batch, 2)
    row["cost_per_hour"] = _num(cost_per_hour)
    row["cost_per_1k_requests"] = _num(cost_per_hour / (rps * 3.6)) if rps > 0 and not pred.saturated else None


def _fill_memory(row: dict[str, Any], mem: Any) -> None:
    row["weights_gib"] = _num(mem.weights_bytes / GIB, 3)
    row["kv_cache_gib"] = _num(max(mem.kv_cache_bytes, 0) / GIB, 3)
    row["activations_gib"] = _num(mem.activations_bytes / GIB, 3)
    row["overhead_gib"] = _num(mem.overhead_bytes / GIB, 3)
    row["total_gib"] = _num(mem.total_used_bytes / GIB, 3)
    row["usable_gib"] = _num(mem.requested_bytes / GIB, 3)
    row["gpu_memory_gib"] = _num(mem.total_bytes / GIB, 3)
    row["kv_capacity_tokens"] = int(mem.kv_capacity_tokens)


def _fill_config(row: dict[str, Any], cfg: Any) -> None:
    from planner.catalog.loader import calibration_status

    row.update(gpu=cfg.gpu.name, tp=cfg.tp, pp=cfg.pp, precision=cfg.precision, kv_cache_dtype=cfg.kv_cache_dtype,
               max_model_len=cfg.max_model_len, max_num_seqs=cfg.max_num_seqs,
               calibration=calibration_status(cfg.gpu.name)[0])


def slo_verdict(pred: Any, slos: list[Slo]) -> tuple[bool, str]:
    """(all met, the binding SLO in words: the violated one furthest over, else the one with least headroom)."""
    if not slos:
        return True, ""
    scored = []
    for s in slos:
        value = float(getattr(getattr(pred, s.metric), s.stat))
        scored.append(((value - s.limit_ms) / s.limit_ms, s, value))
    scored.sort(key=lambda t: -t[0])
    over, s, value = scored[0]
    if over > 0:
        return False, f"slo: {s.key} {value:,.1f} ms > {s.limit_ms:g} ms"
    return True, f"slo: {s.key} {value:,.1f} ms of {s.limit_ms:g} ms ({-over * 100:.0f}% headroom)"


# --------------------------------------------------------------------------- fixed mode


@dataclass
class _ConfigEntry:
    cfg: Any = None
    mem: Any = None
    cost: Any = None
    error: str = ""


SIM_REQUESTS = 2000
"""Requests per simulated point (``load="simulate"``): the warm-up and drain are left out of the statistics."""


class FixedEvaluator:
    """Memory + load model of one configuration per point, with caches shared across points.

    ``load``: 'analytic' (``planner.load.analytic``, representative request) or 'simulate' (the discrete-event
    simulator of ``planner.load.simulator`` over ``SIM_REQUESTS`` requests sampled from the workload's
    distributions, seed 0; the saturation throughput still comes from the analytic model).
    """

    def __init__(self, base: Base, load: str = "analytic") -> None:
        from planner.catalog.loader import load_engine, load_precisions

        if load not in ("analytic", "simulate"):
            raise RequestError(f"load model '{load}' is not analytic or simulate")
        self.load = load
        self.base = base
        self.engine = load_engine()
        self.precisions = load_precisions()
        self.configs: dict[tuple, _ConfigEntry] = {}
        self.shapes: dict[tuple, Any] = {}
        self.preds: dict[tuple, Any] = {}

    def _config(self, point: dict[str, Any]) -> tuple[tuple, _ConfigEntry]:
        c = self.base.scenario.config
        assert c is not None
        key = (point.get("gpu", c.gpu), int(point.get("tp", c.tp)), c.pp, point.get("precision", c.precision),
               point.get("kv", c.kv_cache_dtype), point.get("context", c.max_model_len),
               point.get("batch", c.max_num_seqs))
        hit = self.configs.get(key)
        if hit is not None:
            return key, hit
        entry = _ConfigEntry()
        try:
            entry = self._build(key)
        except PlannerError as exc:
            entry.error = str(exc)
        self.configs[key] = entry
        return key, entry

    def _build(self, key: tuple) -> _ConfigEntry:
        from planner.load.analytic import build_step_cost
        from planner.perf.memory import memory_breakdown
        from planner.spec.config import ServingConfig, resolve
        from planner.spec.lookup import resolve_gpu

        gpu_name, tp, pp, precision, kv, max_len, seqs = key
        c = self.base.scenario.config
        assert c is not None
        gpu = resolve_gpu(gpu_name, self.base.prices)
        batched = c.max_num_batched_tokens
        if batched is not None and seqs is not None and batched < seqs:
            batched = seqs
        cfg = ServingConfig(model=self.base.model, gpu=gpu, tp=tp, pp=pp, precision=precision, kv_cache_dtype=kv,
                            max_model_len=max_len, max_num_seqs=seqs, max_num_batched_tokens=batched,
                            gpu_memory_utilization=c.gpu_memory_utilization, mm_encoder_tp_mode=c.mm_encoder_tp_mode,
                            limit_images_per_prompt=c.limit_images, mm_processor_options=dict(c.mm_processor_kwargs))
        cfg = resolve(cfg, self.engine)
        mem = memory_breakdown(cfg, self.engine, self.precisions)
        cost = build_step_cost(cfg) if mem.fits else None
        return _ConfigEntry(cfg=cfg, mem=mem, cost=cost)

    def _shape(self, cfg: Any, wl: Workload) -> Any:
        from planner.spec.shape import request_shape

        key = (id(cfg.model), tuple(sorted((k, repr(v)) for k, v in cfg.mm_processor_options.items())),
               tuple((i.width, i.height) for i in wl.images), wl.prompt_tokens, wl.output_tokens,
               wl.prefix_cache_hit)
        hit = self.shapes.get(key)
        if hit is None:
            hit = request_shape(cfg, wl)
            self.shapes[key] = hit
        return hit

    def evaluate(self, point: dict[str, Any]) -> dict[str, Any]:
        from planner.load.analytic import predict

        base = self.base
        wl = _point_workload(base, point)
        row = _empty_row(base, point, wl)
        key, entry = self._config(point)
        if entry.error:
            row.update(status="unsupported", binding=f"unsupported: {entry.error}")
            return row
        cfg, mem = entry.cfg, entry.mem
        _fill_config(row, cfg)
        row["gpus"] = cfg.num_gpus
        row["replicas"] = 1
        _fill_memory(row, mem)
        try:
            shape = self._shape(cfg, wl)
        except PlannerError as exc:
            row.update(status="unsupported", binding=f"unsupported: {exc}")
            return row
        row["visual_tokens"] = shape.visual_tokens
        price = cfg.gpu.price.price_usd_per_gpu_hour
        cost_per_hour = cfg.num_gpus * price
        row["cost_per_hour"] = _num(cost_per_hour)
        if not mem.fits:
            row.update(status="does not fit", binding=f"memory: {mem.reason}")
            return row
        need = shape.prompt_tokens + shape.output_tokens
        if cfg.max_model_len is not None and need > cfg.max_model_len:
            row.update(status="too long", binding=f"context: the request needs {need:,} tokens > max_model_len "
                                                  f"{cfg.max_model_len:,}")
            return row
        arrival, rate, conc = _arrival(wl)
        pkey = (key, shape, arrival, rate, conc)
        pred = self.preds.get(pkey)
        if pred is None:
            pred = predict(entry.cost, cfg, shape, arrival, rate, conc, mem.kv_capacity_tokens)
            self.preds[pkey] = pred
        if self.load == "simulate":
            skey = (pkey, repr(wl.model_dump(exclude={"name", "rate_per_s", "concurrency", "arrival"})))
            sim = self.preds.get(skey)
            if sim is None:
                sim = _simulate(entry, wl, arrival, rate, conc, pred.max_requests_per_s)
                self.preds[skey] = sim
            pred = sim
        _fill_prediction(row, pred, 1, cost_per_hour)
        ok, binding = slo_verdict(pred, _point_slos(base, point))
        if pred.saturated:
            offered = f"{rate:g} req/s" if arrival == "poisson" else f"{conc} clients"
            row.update(status="saturated", binding=f"load: {offered} exceeds the capacity of "
                                                   f"{pred.max_requests_per_s:.3g} req/s")
            return row
        budget_msg = _budget_verdict(base, cfg, cost_per_hour)
        if budget_msg:
            row.update(status="over budget", binding=budget_msg)
            return row
        if not ok:
            row.update(status="misses slo", binding=binding)
            return row
        if not binding and arrival == "poisson" and rate:
            cap = pred.max_requests_per_s
            binding = f"load: {rate / cap * 100:.0f}% of capacity ({cap:.3g} req/s)"
        row.update(feasible=True, status="ok", binding=binding)
        return row


def _simulate(entry: _ConfigEntry, wl: Workload, arrival: str, rate: float | None, conc: int | None,
              max_requests_per_s: float) -> Any:
    """A LoadPrediction from the discrete-event simulator (percentiles of the measured requests)."""
    from planner.core.stats import Percentiles
    from planner.load.analytic import LoadPrediction
    from planner.load.simulator import build_requests, percentiles, simulate

    reqs = build_requests(entry.cfg, wl, entry.cost, SIM_REQUESTS, seed=0)
    res = simulate(entry.cost, reqs, entry.mem.kv_capacity_tokens, arrival, rate, conc, seed=0)

    def pct(x: Any) -> Percentiles:
        return Percentiles(**percentiles(x))

    return LoadPrediction(ttft=pct(res.ttft_ms), tpot=pct(res.tpot_ms), e2e=pct(res.e2e_ms),
                          requests_per_s=res.requests_per_s, output_tokens_per_s=res.output_tokens_per_s,
                          saturated=bool(res.saturated), max_requests_per_s=max_requests_per_s,
                          mean_batch=res.mean_batch)


def _budget_verdict(base: Base, cfg: Any, cost_per_hour: float) -> str:
    limit = base.budget.limit(cfg.gpu.name)
    if limit is None:
        return f"budget: {cfg.gpu.name} is not in the budget ({base.budget.describe()})"
    if cfg.num_gpus > limit:
        return f"budget: {cfg.num_gpus} x {cfg.gpu.name} > {limit} allowed"
    cap = base.budget.max_usd_per_hour
    if cap is not None and cost_per_hour > cap + 1e-9:
        return f"budget: ${cost_per_hour:.2f}/h > ${cap:g}/h"
    return ""


# --------------------------------------------------------------------------- solver mode


class SolverEvaluator:
    """The solver's cheapest deployment per point (identical points are solved once)."""

    def __init__(self, base: Base, varies: list[Vary]) -> None:
        self.base = base
        self.cache: dict[str, dict[str, Any]] = {}
        dims = {v.dim for v in varies}
        if "context" in dims:
            raise RequestError("--vary context needs --fixed: the solver sizes max_model_len to the request itself")
        for v in varies:
            if v.dim == "batch":
                bad = [x for x in v.values if x not in SOLVER_SEQS]
                if bad:
                    raise RequestError(f"--vary batch={bad[0]}: the solver only considers max_num_seqs in "
                                       f"{', '.join(map(str, SOLVER_SEQS))}; use --fixed for other values")

    def _request(self, point: dict[str, Any], wl: Workload) -> Any:
        from planner.catalog.loader import load_gpus
        from planner.solver import MAX_LOAD, SolveRequest, default_gpus

        sc = self.base.scenario
        gpus = default_gpus(self.base.prices)
        allowed = [point["gpu"]] if "gpu" in point else sc.search.gpus
        if allowed:
            names = {load_gpus().get(n).name for n in allowed}
            gpus = [g for g in gpus if g.name in names]
        precisions = [point["precision"]] if "precision" in point else list(sc.search.precisions or
                                                                               ["bf16", "fp8", "int8", "int4"])
        kvs = [point["kv"]] if "kv" in point else list(sc.search.kv_cache_dtypes or ["auto", "fp8"])
        arrival, rate, conc = _arrival(wl)
        if arrival != wl.arrival:
            wl = wl.model_copy(update={"arrival": arrival, "rate_per_s": rate, "trace_s": None})
        return SolveRequest(model=self.base.model, workloads=[wl], slos=_point_slos(self.base, point),
                            budget=self.base.budget, gpus=gpus, precisions=precisions,  # type: ignore[arg-type]
                            kv_cache_dtypes=kvs, objective=sc.search.objective,  # type: ignore[arg-type]
                            max_load=sc.search.max_load or MAX_LOAD)

    def evaluate(self, point: dict[str, Any]) -> dict[str, Any]:
        label = point_label(point)
        hit = self.cache.get(label)
        if hit is not None:
            return dict(hit)
        wl = _point_workload(self.base, point)
        row = _empty_row(self.base, point, wl)
        try:
            req = self._request(point, wl)
            sol = _solve(req, point.get("tp"), point.get("batch"))
        except UnsupportedError as exc:
            row.update(status="unsupported", binding=f"unsupported: {exc}")
            self.cache[label] = row
            return dict(row)
        if sol.status == "infeasible":
            row.update(status="infeasible", binding=f"{sol.explanation} (nearest relaxation: {sol.relaxation})")
        else:
            c = sol.chosen[0]
            _fill_config(row, c.cfg)
            row.update(gpus=c.gpus, replicas=c.replicas, visual_tokens=c.shape.visual_tokens)
            _fill_memory(row, c.memory)
            _fill_prediction(row, c.prediction, c.replicas, c.cost_per_hour)
            row.update(feasible=True, status=sol.status, binding="; ".join(sol.binding))
        self.cache[label] = row
        return dict(row)


def _solve(req: Any, tp: int | None, seqs: int | None) -> Any:
    """``solver.solve``, keeping only candidates with the given TP / max_num_seqs when those are varied."""
    from planner import solver as S

    if tp is None and seqs is None:
        return S.solve(req)
    t0 = time.perf_counter()
    screens: dict[str, S.Screening] = {}
    cands: list[Any] = []
    for w in req.workloads:
        screens[w.name] = S.Screening()
        cands.extend(c for c in S.candidates_for(req, w, screens[w.name])
                     if (tp is None or c.cfg.tp == tp) and (seqs is None or c.cfg.max_num_seqs == seqs))
    kept = S.prune(cands, req.objective)
    names = [w.name for w in req.workloads]
    status, chosen = S.assign(names, kept, req.budget, req.objective)
    if status == "infeasible":
        if not kept:
            what = " and ".join(x for x in (f"tp={tp}" if tp else "", f"max_num_seqs={seqs}" if seqs else "") if x)
            return S.Solution("infeasible", [], [], [], f"no deployment with {what} meets the SLOs within the budget",
                              "allow other values", screens, time.perf_counter() - t0)
        explanation, relaxation = S.explain_infeasible(req, screens, kept)
        return S.Solution("infeasible", [], [], [], explanation, relaxation, screens, time.perf_counter() - t0)
    binding = S.binding_constraints(req, chosen, kept)
    return S.Solution(status, chosen, [], binding, "", "", screens,  # type: ignore[arg-type]
                      time.perf_counter() - t0)


# --------------------------------------------------------------------------- sweep


@dataclass
class SweepResult:
    scenario: Scenario
    mode: str
    varies: list[Vary]
    rows: list[dict[str, Any]]
    held_fixed: str
    slos: list[Slo]
    wall_s: float
    load: str = "analytic"

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "model": self.rows[0]["model"] if self.rows else self.scenario.model,
            "mode": self.mode,
            "load_model": self.load if self.mode == "fixed" else "analytic (solver)",
            "held_fixed": self.held_fixed,
            "vary": {v.dim: list(v.labels) for v in self.varies},
            "slo": [f"{s.key}={s.limit_ms:g}ms" for s in self.slos],
            "points": len(self.rows),
            "feasible": sum(1 for r in self.rows if r["feasible"]),
            "wall_s": round(self.wall_s, 3),
            "rows": self.rows,
        }


ProgressFn = Callable[[int, int], None]


def sweep(scenario: Scenario, varies: list[Vary], fixed: bool = False, progress: ProgressFn | None = None,
          overrides: dict[str, Any] | None = None, load: str = "analytic") -> SweepResult:
    """Evaluate every point of the cartesian product of ``varies`` on ``scenario``.

    ``overrides``: workload fields replacing the scenario's (see ``apply_workload_overrides``).
    ``load``: the fixed mode's load model, 'analytic' or 'simulate' (the solver always uses the analytic one).
    """
    t0 = time.perf_counter()
    if load != "analytic" and not fixed:
        raise RequestError("--simulate needs --fixed: the solver screens candidates with the analytic load model")
    base = _base(scenario, fixed, overrides)
    pts = points(varies)
    evaluator: FixedEvaluator | SolverEvaluator = (FixedEvaluator(base, load) if fixed
                                                   else SolverEvaluator(base, varies))
    rows = []
    for i, p in enumerate(pts):
        rows.append(evaluator.evaluate(p))
        if progress is not None:
            progress(i + 1, len(pts))
    return SweepResult(scenario=scenario, mode="fixed" if fixed else "solve", varies=varies, rows=rows,
                       held_fixed=held_fixed(base, varies), slos=base.slos, wall_s=time.perf_counter() - t0, load=load)


def evaluate_scenario(scenario: Scenario, fixed: bool | None = None) -> dict[str, Any]:
    """One row for the scenario itself (fixed when it has a config, unless ``fixed`` says otherwise)."""
    use_fixed = scenario.config is not None if fixed is None else fixed
    return sweep(scenario, [], fixed=use_fixed).rows[0]


__all__ = ["Vary", "parse_vary", "parse_varies", "points", "sweep", "SweepResult", "evaluate_scenario",
           "held_fixed", "describe_workload", "slo_verdict", "apply_workload_overrides"]
