"""What a request looks like and how requests arrive."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.errors import RequestError

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
    model_config = ConfigDict(extra="forbid", frozen=True)
    width: int = Field(ge=1)
    height: int = Field(ge=1)


class Workload(BaseModel):
    """A request shape and an arrival process (fixed values; distributions come with the load model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    prompt_tokens: int = Field(default=512, ge=1)
    """Text tokens of the prompt (visual tokens come on top)."""
    output_tokens: int = Field(default=256, ge=1)
    images: list[ImageSize] = []
    """Images of one request, each with its size."""
    prefix_cache_hit: float = Field(default=0.0, ge=0, lt=1)
    """Fraction of the prompt found in the prefix cache."""
    arrival: Literal["single", "poisson", "closed"] = "single"
    rate_per_s: float | None = Field(default=None, gt=0)
    """Poisson arrival rate (requests/s) when arrival == poisson."""
    concurrency: int | None = Field(default=None, ge=1)
    """Closed-loop clients when arrival == closed."""

    @model_validator(mode="after")
    def _arrival(self) -> Workload:
        if self.arrival == "poisson" and self.rate_per_s is None:
            raise ValueError("poisson arrival needs rate_per_s")
        if self.arrival == "closed" and self.concurrency is None:
            raise ValueError("closed-loop arrival needs concurrency")
        return self


DEFAULT_WORKLOAD = Workload(
    name="visual-reasoning",
    prompt_tokens=256,
    output_tokens=256,
    images=[ImageSize(width=640, height=480)],
)
"""Embedded default: one 640x480 image, 256 text tokens in, 256 out (the seed's visual-reasoning case)."""
