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

YAML workload files (``workload_yaml.load_workload``) write any count as a number or a
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

import re
from collections.abc import Sequence
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
