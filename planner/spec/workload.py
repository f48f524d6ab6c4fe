"""What a request looks like and how requests arrive.

A ``Workload`` holds one representative request (``prompt_tokens``,
``output_tokens``, ``images``: what ``vlmplan estimate`` reports and the
analytic load model uses) and, optionally, distributions the simulator samples
per request:

* ``prompt_tokens_dist``, ``output_tokens_dist``, ``images_per_request_dist``:
  integers, each ``fixed`` (one value), ``weighted`` (values with weights) or
  ``empirical`` (observed samples, drawn uniformly);
* ``image_size_dist``: image sizes, same three kinds;
* arrivals: ``single`` (one request alone), ``poisson`` (``rate_per_s``),
  ``closed`` (``concurrency`` clients, each sending its next request when the
  previous one finishes) or ``trace`` (``trace_s``: arrival times in seconds).

YAML workload files (``load_workload``) write any count as a number or a
distribution::

    name: mixed-docs
    preset: document-vqa            # optional: start from a preset
    prompt_tokens: {values: [64, 512], weights: [3, 1]}
    output_tokens: {samples: [87, 130, 212, 64]}
    images_per_request: {values: [1, 2], weights: [0.8, 0.2]}
    image_size: {values: ["1680x2240", "640x480"], weights: [1, 1]}
    shared_prefix_tokens: 48        # a system prompt every request starts with (part of prompt_tokens)
    repeated_image_fraction: 0.25   # a quarter of the requests ask again about an image already sent
    # prefix_cache_hit: 0.1         # or a bare hit fraction of the prompt
    arrival: poisson                # poisson | closed | trace | single
    rate_per_s: 4
    # concurrency: 16               # closed
    # trace: [0.0, 0.12, 0.5]  or  trace_file: arrivals.txt (one time in s per line)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planner.core.errors import RequestError
from planner.core.inputs import first_problem

MAX_COUNT = 1 << 30
"""Largest token or image count a workload may give (far above any model's context)."""
MAX_TRACE_S = 1e9
_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_image_size(text: str) -> tuple[int, int]:
    """``"1680x2240"`` -> (1680, 2240)."""
    m = _SIZE.match(text)
    if not m:
        raise RequestError(f"image size '{text}' is not WIDTHxHEIGHT (e.g. 1680x2240)")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 1 or h < 1:
        raise RequestError(f"image size '{text}' must be positive")
    return w, h


class ImageSize(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    width: int = Field(ge=1)
    height: int = Field(ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            w, h = parse_image_size(data)
            return {"width": w, "height": h}
        return data

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


DistKind = Literal["fixed", "weighted", "empirical"]


class IntDist(BaseModel):
    """A distribution of a non-negative integer (tokens, images per request)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    kind: DistKind
    values: tuple[int, ...] = Field(min_length=1)
    """fixed: one value; weighted: the support; empirical: the samples."""
    weights: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> IntDist:
        _check_dist(self.kind, self.values, self.weights)
        if min(self.values) < 0:
            raise ValueError(f"values must be >= 0 (got {min(self.values)})")
        if max(self.values) > MAX_COUNT:
            raise ValueError(f"values must be <= {MAX_COUNT:,} (got {max(self.values):,})")
        return self

    def probabilities(self) -> np.ndarray:
        return _probs(self.kind, len(self.values), self.weights)

    def mean(self) -> float:
        return float(np.dot(self.probabilities(), np.asarray(self.values, dtype=float)))

    def mode(self) -> int:
        return int(self.values[int(np.argmax(self.probabilities()))])

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed" or len(self.values) == 1:
            return np.full(n, self.values[0], dtype=np.int64)
        return np.asarray(self.values, dtype=np.int64)[rng.choice(len(self.values), size=n, p=self.probabilities())]


class SizeDist(BaseModel):
    """A distribution of image sizes."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    kind: DistKind
    values: tuple[ImageSize, ...] = Field(min_length=1)
    weights: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> SizeDist:
        _check_dist(self.kind, self.values, self.weights)
        return self

    def probabilities(self) -> np.ndarray:
        return _probs(self.kind, len(self.values), self.weights)

    def mode(self) -> ImageSize:
        return self.values[int(np.argmax(self.probabilities()))]

    def sample_index(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if len(self.values) == 1:
            return np.zeros(n, dtype=np.int64)
        return rng.choice(len(self.values), size=n, p=self.probabilities())


def _check_dist(kind: str, values: Sequence[Any], weights: Sequence[float] | None) -> None:
    if kind == "fixed" and len(values) != 1:
        raise ValueError(f"a fixed distribution has one value (got {len(values)})")
    if kind == "weighted":
        if weights is None or len(weights) != len(values):
            raise ValueError("a weighted distribution needs one weight per value")
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum (got {list(weights)})")
    elif weights is not None:
        raise ValueError(f"weights are only for weighted distributions (kind {kind})")


def _probs(kind: str, n: int, weights: Sequence[float] | None) -> np.ndarray:
    if kind == "weighted" and weights is not None:
        w = np.asarray(weights, dtype=float)
        return w / w.sum()
    return np.full(n, 1.0 / n)


Arrival = Literal["single", "poisson", "closed", "trace"]


class Workload(BaseModel):
    """A request shape (representative values plus optional distributions) and an arrival process."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = "default"
    prompt_tokens: int = Field(default=512, ge=0, le=MAX_COUNT)
    """Text tokens of the prompt (visual tokens come on top); the mean when ``prompt_tokens_dist`` is set."""
    output_tokens: int = Field(default=256, ge=1, le=MAX_COUNT)
    images: list[ImageSize] = []
    """Images of one representative request, each with its size."""
    prefix_cache_hit: float = Field(default=0.0, ge=0, lt=1)
    """Fraction of the prompt found in the prefix cache, however it got there (prefix caching on); prefer
    ``shared_prefix_tokens`` and ``repeated_image_fraction``, which say why."""
    shared_prefix_tokens: int = Field(default=0, ge=0, le=MAX_COUNT)
    """Text tokens at the start of every prompt that are the same for all requests (a system prompt, few-shot
    examples, a document asked about again and again): part of ``prompt_tokens``. With prefix caching on, the
    engine computes them once and every request shares their KV-cache blocks (whole blocks only)."""
    repeated_image_fraction: float = Field(default=0.0, ge=0, le=1)
    """Share of requests whose images the replica has already seen at the same place in the prompt, right after
    the shared prefix (follow-up questions about the same picture or page): with prefix caching on, those
    images' tokens hit the cache and the vision encoder does not run for them."""
    arrival: Arrival = "single"
    rate_per_s: float | None = Field(default=None, gt=0, le=1e9)
    """Poisson arrival rate (requests/s) when arrival == poisson."""
    concurrency: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    """Closed-loop clients when arrival == closed."""
    prompt_tokens_dist: IntDist | None = None
    output_tokens_dist: IntDist | None = None
    images_per_request_dist: IntDist | None = None
    image_size_dist: SizeDist | None = None
    trace_s: tuple[float, ...] | None = None
    """Arrival times (seconds from the start) when arrival == trace."""

    @model_validator(mode="after")
    def _arrival(self) -> Workload:
        if self.arrival == "poisson" and self.rate_per_s is None:
            raise ValueError("poisson arrival needs rate_per_s")
        if self.arrival == "closed" and self.concurrency is None:
            raise ValueError("closed-loop arrival needs concurrency")
        if self.arrival == "trace":
            if not self.trace_s:
                raise ValueError("trace arrival needs trace_s (arrival times in seconds)")
            if any(b < a for a, b in zip(self.trace_s, self.trace_s[1:])) or self.trace_s[0] < 0:
                raise ValueError("trace_s must be non-negative and non-decreasing")
            if self.trace_s[-1] > MAX_TRACE_S:
                raise ValueError(f"trace_s spans {self.trace_s[-1]:g} s; at most {MAX_TRACE_S:g} s")
        if self.output_tokens_dist is not None and min(self.output_tokens_dist.values) < 1:
            raise ValueError("output_tokens values must be >= 1")
        shortest = min(self.prompt_tokens_dist.values) if self.prompt_tokens_dist else self.prompt_tokens
        if self.shared_prefix_tokens > shortest:
            raise ValueError(f"shared_prefix_tokens ({self.shared_prefix_tokens}) is part of the prompt: it cannot "
                             f"exceed the shortest prompt ({shortest} text tokens)")
        if self.repeated_image_fraction > 0 and not self.images and self.image_size_dist is None:
            raise ValueError("repeated_image_fraction needs images")
        if self.images_per_request_dist is not None and max(self.images_per_request_dist.values) > 0:
            if self.image_size_dist is None and not self.images:
                raise ValueError("images_per_request > 0 needs image_size (or images)")
        return self

    @property
    def has_distributions(self) -> bool:
        return any(d is not None for d in (self.prompt_tokens_dist, self.output_tokens_dist,
                                           self.images_per_request_dist, self.image_size_dist))

    @property
    def max_prompt_tokens(self) -> int:
        """The longest text prompt the workload sends (the distribution's largest value)."""
        return max(self.prompt_tokens_dist.values) if self.prompt_tokens_dist else self.prompt_tokens

    @property
    def max_output_tokens(self) -> int:
        return max(self.output_tokens_dist.values) if self.output_tokens_dist else self.output_tokens

    @property
    def max_images(self) -> int:
        """Most images one request carries."""
        return max(self.images_per_request_dist.values) if self.images_per_request_dist else len(self.images)

    @property
    def image_sizes(self) -> tuple[ImageSize, ...]:
        """Every image size a request may carry."""
        return tuple(dict.fromkeys((*self.images, *(self.image_size_dist.values if self.image_size_dist else ()))))

    @property
    def trace_rate_per_s(self) -> float | None:
        """Mean arrival rate of a trace."""
        if not self.trace_s or len(self.trace_s) < 2 or self.trace_s[-1] <= self.trace_s[0]:
            return None
        return (len(self.trace_s) - 1) / (self.trace_s[-1] - self.trace_s[0])

    def sample(self, n: int, seed: int = 0) -> RequestSample:
        """``n`` requests drawn from the workload's distributions (deterministic for a seed)."""
        rng = np.random.default_rng(seed)
        prompt = (self.prompt_tokens_dist.sample(rng, n) if self.prompt_tokens_dist
                  else np.full(n, self.prompt_tokens, dtype=np.int64))
        output = (self.output_tokens_dist.sample(rng, n) if self.output_tokens_dist
                  else np.full(n, self.output_tokens, dtype=np.int64))
        sizes: tuple[ImageSize, ...]
        if self.images_per_request_dist is None and self.image_size_dist is None:
            # Every request carries the representative images.
            sizes = tuple(dict.fromkeys(self.images))
            per = [tuple(sizes.index(im) for im in self.images)] * n
            return RequestSample(prompt, output, sizes, per)
        counts = (self.images_per_request_dist.sample(rng, n) if self.images_per_request_dist
                  else np.full(n, len(self.images), dtype=np.int64))
        if self.image_size_dist is not None:
            sizes = self.image_size_dist.values
            idx = self.image_size_dist.sample_index(rng, int(counts.sum()))
        else:
            sizes = tuple(dict.fromkeys(self.images))
            pool = [sizes.index(im) for im in self.images]
            idx = np.asarray([pool[i % len(pool)] for i in range(int(counts.sum()))], dtype=np.int64)
        ends = np.cumsum(counts)
        starts = ends - counts
        flat = idx.tolist()
        per = [tuple(flat[s:e]) for s, e in zip(starts.tolist(), ends.tolist())]
        return RequestSample(prompt, output, sizes, per)


class RequestSample:
    """Sampled requests: text prompt and output tokens, and each request's images as indices into ``sizes``."""

    def __init__(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, sizes: tuple[ImageSize, ...],
                 images: list[tuple[int, ...]]) -> None:
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.sizes = sizes
        self.images = images

    def __len__(self) -> int:
        return len(self.prompt_tokens)


DEFAULT_WORKLOAD = Workload(
    name="visual-reasoning",
    prompt_tokens=256,
    output_tokens=256,
    images=[ImageSize(width=640, height=480)],
)
"""Embedded default: one 640x480 image, 256 text tokens in, 256 out (the seed's visual-reasoning case)."""

# The seed's use cases (Red Hat / Neural Magic VLM benchmarks, GuideLLM profiles
# "image size / prompt tokens / generated tokens", e.g. the model card of
# RedHatAI/Qwen2.5-VL-72B-Instruct-quantized.w8a8: 1680x2240 64/128, 640x480
# 128/128, 480x360 0/128). Chat has no published profile: 512 in / 256 out.
PRESETS: dict[str, Workload] = {
    "document-vqa": Workload(name="document-vqa", prompt_tokens=64, output_tokens=128,
                             images=[ImageSize(width=1680, height=2240)]),
    "visual-reasoning": Workload(name="visual-reasoning", prompt_tokens=128, output_tokens=128,
                                 images=[ImageSize(width=640, height=480)]),
    "captioning": Workload(name="captioning", prompt_tokens=0, output_tokens=128,
                           images=[ImageSize(width=480, height=360)]),
    "chat": Workload(name="chat", prompt_tokens=512, output_tokens=256, images=[]),
}


def with_prefix(wl: Workload, shared_prefix_tokens: int | None, repeated_image_fraction: float | None) -> Workload:
    """``wl`` with the command line's --shared-prefix / --repeated-images (None keeps the workload's), checked."""
    update: dict[str, Any] = {}
    if shared_prefix_tokens is not None:
        if shared_prefix_tokens < 0:
            raise RequestError(f"--shared-prefix must be >= 0 tokens (got {shared_prefix_tokens})")
        update["shared_prefix_tokens"] = shared_prefix_tokens
    if repeated_image_fraction is not None:
        if not 0 <= repeated_image_fraction <= 1:
            raise RequestError(f"--repeated-images must be a share of the requests in [0, 1] (got "
                               f"{repeated_image_fraction:g})")
        update["repeated_image_fraction"] = repeated_image_fraction
    if not update:
        return wl
    try:
        return Workload.model_validate({**dict(wl), **update})
    except ValidationError as exc:
        raise RequestError(f"workload: {first_problem(exc, 'workload')[2].removeprefix('Value error, ')}") from None


def preset(name: str) -> Workload:
    if name not in PRESETS:
        raise RequestError(f"workload preset '{name}' is unknown; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


# --------------------------------------------------------------------------- YAML loader

_KEYS = {"name", "preset", "prompt_tokens", "output_tokens", "images_per_request", "image_size", "images",
         "prefix_cache_hit", "shared_prefix_tokens", "repeated_image_fraction", "arrival", "rate_per_s",
         "concurrency", "trace", "trace_file"}


def _clip(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else text[:80] + "..."


def _int_dist(key: str, raw: Any) -> IntDist:
    """``512`` | ``{value: 512}`` | ``{values: [..], weights: [..]}`` | ``{samples: [..]}``."""
    try:
        if isinstance(raw, bool):
            raise TypeError
        if isinstance(raw, float) and raw != int(raw):
            raise ValueError
        if isinstance(raw, (int, float)):
            return IntDist(kind="fixed", values=(int(raw),))
        if isinstance(raw, dict):
            extra = set(raw) - {"value", "values", "weights", "samples", "kind"}
            if extra:
                raise RequestError(f"{key}: unknown keys {sorted(extra)}; use value, values+weights or samples")
            if "value" in raw:
                return IntDist(kind="fixed", values=(int(raw["value"]),))
            if "samples" in raw:
                return IntDist(kind="empirical", values=tuple(int(v) for v in raw["samples"]))
            if "values" in raw:
                vals = tuple(int(v) for v in raw["values"])
                w = raw.get("weights")
                return IntDist(kind="weighted", values=vals,
                               weights=tuple(float(x) for x in w) if w is not None else tuple(1.0 for _ in vals))
        raise TypeError
    except (TypeError, ValueError, OverflowError, ValidationError):
        raise RequestError(f"{key}: {_clip(raw)} is not a count or a distribution "
                           "(a number, {value: N}, {values: [...], weights: [...]} or {samples: [...]})") from None


def _size_dist(key: str, raw: Any) -> SizeDist:
    try:
        if isinstance(raw, str):
            return SizeDist(kind="fixed", values=(ImageSize.model_validate(raw),))
        if isinstance(raw, dict):
            if "value" in raw:
                return SizeDist(kind="fixed", values=(ImageSize.model_validate(raw["value"]),))
            if "samples" in raw:
                return SizeDist(kind="empirical", values=tuple(ImageSize.model_validate(v) for v in raw["samples"]))
            if "values" in raw:
                vals = tuple(ImageSize.model_validate(v) for v in raw["values"])
                w = raw.get("weights")
                return SizeDist(kind="weighted", values=vals,
                                weights=tuple(float(x) for x in w) if w is not None else tuple(1.0 for _ in vals))
            if "width" in raw:
                return SizeDist(kind="fixed", values=(ImageSize.model_validate(raw),))
        raise TypeError
    except RequestError:
        raise
    except (TypeError, ValueError, OverflowError, ValidationError):
        raise RequestError(f"{key}: {_clip(raw)} is not an image size (\"WxH\") or a distribution of sizes") from None


def workload_from_dict(data: dict[str, Any], base_dir: Path | None = None) -> Workload:
    """Build a ``Workload`` from the YAML mapping described in the module docstring."""
    if not isinstance(data, dict):
        raise RequestError(f"a workload file holds a mapping (got {type(data).__name__})")
    unknown = set(data) - _KEYS
    if unknown:
        raise RequestError(f"unknown workload keys {sorted(unknown)}; expected some of {sorted(_KEYS)}")
    base = preset(data["preset"]) if "preset" in data else Workload()
    fields: dict[str, Any] = base.model_dump(exclude={"prompt_tokens_dist", "output_tokens_dist",
                                                      "images_per_request_dist", "image_size_dist"})
    fields["name"] = data.get("name", data.get("preset", "workload"))
    if "prompt_tokens" in data:
        d = _int_dist("prompt_tokens", data["prompt_tokens"])
        fields["prompt_tokens"] = round(d.mean())
        fields["prompt_tokens_dist"] = d if d.kind != "fixed" else None
    if "output_tokens" in data:
        d = _int_dist("output_tokens", data["output_tokens"])
        if min(d.values) < 1:
            raise RequestError(f"output_tokens must be >= 1 (got {min(d.values)}): every request generates a token")
        fields["output_tokens"] = max(1, round(d.mean()))
        fields["output_tokens_dist"] = d if d.kind != "fixed" else None
    if "images" in data:
        if not isinstance(data["images"] or [], list):
            raise RequestError(f"images is a list of image sizes (got {type(data['images']).__name__})")
        fields["images"] = [ImageSize.model_validate(v) for v in data["images"] or []]
    sizes = _size_dist("image_size", data["image_size"]) if "image_size" in data else None
    counts = _int_dist("images_per_request", data["images_per_request"]) if "images_per_request" in data else None
    if sizes is not None or counts is not None:
        n_rep = counts.mode() if counts is not None else max(1, len(fields["images"]))
        size_rep = sizes.mode() if sizes is not None else (
            ImageSize.model_validate(fields["images"][0]) if fields["images"] else None)
        if size_rep is None and (n_rep or (counts is not None and max(counts.values) > 0)):
            raise RequestError("images_per_request > 0 needs image_size")
        fields["images"] = [size_rep] * n_rep if n_rep else []
        if counts is not None and counts.kind != "fixed":
            fields["images_per_request_dist"] = counts
        if sizes is not None and sizes.kind != "fixed":
            fields["image_size_dist"] = sizes
            if counts is None:
                fields["images_per_request_dist"] = IntDist(kind="fixed", values=(max(1, len(fields["images"])),))
        if fields.get("image_size_dist") is None and counts is not None and counts.kind != "fixed" \
                and size_rep is not None:
            fields["image_size_dist"] = SizeDist(kind="fixed", values=(size_rep,))
    for key in ("prefix_cache_hit", "shared_prefix_tokens", "repeated_image_fraction"):
        if key in data:
            fields[key] = data[key]
    for key in ("rate_per_s", "concurrency"):
        if key in data:
            fields[key] = data[key]
    if "trace" in data or "trace_file" in data:
        fields["trace_s"] = tuple(_trace(data, base_dir))
    fields["arrival"] = data.get("arrival", "trace" if fields.get("trace_s") else
                                 "poisson" if fields.get("rate_per_s") else
                                 "closed" if fields.get("concurrency") else fields["arrival"])
    try:
        return Workload.model_validate(fields)
    except ValidationError as exc:
        where, _, msg = first_problem(exc, "workload")
        raise RequestError(f"workload {where}: {msg}") from None


def _trace(data: dict[str, Any], base_dir: Path | None) -> list[float]:
    if "trace" in data:
        raw = data["trace"]
    else:
        path = Path(data["trace_file"])
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        from planner.core.inputs import read_text

        lines = read_text(path, "trace_file").splitlines()
        raw = [line.split(",")[0] for line in lines if line.strip() and not line.startswith("#")]
    try:
        times = sorted(float(x) for x in raw)
    except (TypeError, ValueError):
        raise RequestError("trace: arrival times must be numbers (seconds)") from None
    bad = [t for t in times if not math.isfinite(t) or abs(t) > MAX_TRACE_S]
    if bad:
        raise RequestError(f"trace: arrival time {bad[0]} is not a finite number of seconds (at most {MAX_TRACE_S:g})")
    if not times:
        raise RequestError("trace: no arrival times")
    t0 = times[0]
    return [t - t0 for t in times]


def load_workload(path: str | Path) -> Workload:
    """Read a YAML workload file (see the module docstring); a preset name is accepted too."""
    from planner.core.inputs import clip, load_yaml_file

    p = Path(path)
    if str(path) in PRESETS and not p.exists():
        return PRESETS[str(path)]
    if not p.exists():
        raise RequestError(f"workload file {clip(p, 120)} not found (presets: {', '.join(PRESETS)})")
    data = load_yaml_file(p, "workload file")
    if data is None:
        raise RequestError(f"workload file {clip(p, 120)} is empty (give at least one workload key, or a preset)")
    try:
        return workload_from_dict(data, p.parent)
    except (TypeError, AttributeError, KeyError) as exc:  # a value of the wrong kind where a mapping/list/number goes
        raise RequestError(f"workload file {clip(p, 120)}: a value has the wrong type ({exc})") from exc
    except ValidationError as exc:
        from planner.catalog.loader import format_validation_error

        raise RequestError(f"workload file {clip(p, 120)}: {format_validation_error(exc)}") from exc
