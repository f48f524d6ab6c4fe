"""The --vary grammar: dimensions, values and ranges, and the cartesian product of the points.

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
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, get_args

from planner.app.scenario import parse_tokens
from planner.catalog.schema import KvCacheDtype, Precision
from planner.core.errors import RequestError
from planner.spec.slo import parse_slos
from planner.spec.workload import ImageSize, parse_image_size

DEFAULT_POINTS = 10
MAX_POINTS = 100_000
MAX_VALUE = 1e9
"""Largest value of a varied number (rate, tokens, batch, ...); above it a value is a typo."""
_ALIASES = {
    "gpus": "gpu", "precisions": "precision", "kv_cache_dtype": "kv", "kv-cache-dtype": "kv",
    "rate_per_s": "rate", "images": "image", "image_size": "image", "max_model_len": "context",
    "max-model-len": "context", "max_num_seqs": "batch", "max-num-seqs": "batch", "prompt_tokens": "prompt",
    "prompt-tokens": "prompt", "output_tokens": "output", "output-tokens": "output", "slos": "slo",
    "topologies": "topology",
}
DIMENSIONS = ("gpu", "precision", "kv", "rate", "concurrency", "image", "context", "tp", "batch", "prompt",
              "output", "slo", "workload", "topology")
COLUMN = {"gpu": "gpu", "precision": "precision", "kv": "kv_cache_dtype", "rate": "rate_per_s",
          "concurrency": "concurrency", "image": "image", "context": "max_model_len", "tp": "tp",
          "batch": "max_num_seqs", "prompt": "prompt_tokens", "output": "output_tokens", "slo": "slo",
          "workload": "workload", "topology": "topology"}
"""Row column that holds each dimension's value."""
UNITS = {"rate": "requests/s", "concurrency": "clients", "context": "tokens", "batch": "sequences",
         "prompt": "text tokens", "output": "tokens", "tp": "GPUs"}


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
    elif dim == "topology":
        values = [v.strip().lower() for v in body.split(",") if v.strip()]
        for v in values:
            if v not in ("aggregated", "pd", "epd"):
                raise RequestError(f"--vary topology: '{v}' is not one of aggregated, pd, epd")
        labels = list(values)
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
