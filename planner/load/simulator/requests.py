"""The requests a simulation serves, as per-request arrays in the units the engine sees (tokens, ms)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.catalog.vision_tokens import image_tokens
from planner.perf.frontend import api_server_ms, api_stream_ms, frontend_ms
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig
from planner.spec.shape import cached_prompt_tokens, processed_megapixels
from planner.spec.workload import Workload


@dataclass(frozen=True)
class SimRequests:
    """Per-request arrays as the engine sees them."""

    prompt: np.ndarray
    """Prompt tokens (text + visual)."""
    cached: np.ndarray
    """Prompt tokens found in the prefix cache."""
    output: np.ndarray
    enc_tokens: np.ndarray
    """Visual tokens (the encoder budget/cache unit)."""
    vision_ms: np.ndarray
    """ViT + projector time of the request's images."""
    frontend_ms: np.ndarray | None = None
    """API-server CPU time on the request's images before the engine sees it (``speed.frontend_ms``): added to
    its TTFT and e2e; an independent delay per request, so the engine still sees Poisson arrivals."""
    api_ms: np.ndarray | None = None
    """How long the request holds one API-server process (``speed.api_server_ms``): requests queue for the
    replica's ``api_server_count`` processes first come, first served, and the wait delays the engine's arrival
    and adds to TTFT and e2e. None: no API-server queue."""
    api_stream_ms: np.ndarray | None = None
    """The part of ``api_ms`` spent streaming the request's output (``speed.api_stream_ms``). A closed loop
    queues only the rest before the engine sees the request and books this part on a process from its first
    token; an open loop queues all of ``api_ms`` on arrival."""

    def __len__(self) -> int:
        return len(self.prompt)


def build_requests(cfg: ResolvedConfig, workload: Workload, cost: StepCost, n: int, seed: int = 0) -> SimRequests:
    """Sample ``n`` requests from ``workload`` and turn their images into visual tokens and ViT time."""
    sample = workload.sample(n, seed)
    rule = cfg.model.visual_tokens
    per_size = []
    for size in sample.sizes:
        if rule is None:
            from planner.core.errors import UnsupportedError

            raise UnsupportedError(f"{cfg.model.name} is a text model: it takes no images")
        t = image_tokens(rule, size.width, size.height, cfg.mm_processor_options)
        per_size.append((t.llm_tokens, t.encoder_patches, t.encoder_sequences))
    visual = np.zeros(n, dtype=np.int64)
    vision = np.zeros(n)
    frontend = np.full(n, frontend_ms(cost.cal, 0.0, 0.0, 0))
    sent_mp = np.zeros(n)
    memo: dict[tuple[int, ...], tuple[int, float, float, float]] = {}
    for i, imgs in enumerate(sample.images):
        if not imgs:
            continue
        hit = memo.get(imgs)
        if hit is None:
            tok = sum(per_size[k][0] for k in imgs)
            patches = sum(per_size[k][1] for k in imgs)
            seqs = sum(per_size[k][2] for k in imgs)
            sent = sum(sample.sizes[k].width * sample.sizes[k].height for k in imgs) / 1e6
            fe = frontend_ms(cost.cal, sent, processed_megapixels(cfg, patches), len(imgs))
            hit = (tok, cost.vision_ms(len(imgs), patches, seqs), fe, sent)
            memo[imgs] = hit
        visual[i], vision[i], frontend[i], sent_mp[i] = hit
    n_images = np.array([len(imgs) for imgs in sample.images], dtype=float)
    api = api_server_ms(cost.cal, sample.prompt_tokens, sample.output_tokens, n_images, sent_mp)
    prompt = sample.prompt_tokens + visual
    # Requests that repeat an image already sent (a draw of their own, so the lengths' draws stay as they were):
    # its tokens hit the prefix cache and the encoder does not run for them.
    repeat = np.zeros(n, dtype=bool)
    if workload.repeated_image_fraction > 0 and cfg.enable_prefix_caching:
        repeat = (np.random.default_rng([seed, 1]).random(n) < workload.repeated_image_fraction) & (visual > 0)
        vision = np.where(repeat, 0.0, vision)
    shared = np.minimum(workload.shared_prefix_tokens, sample.prompt_tokens)
    cached = cached_prompt_tokens(cfg, prompt, shared, visual, repeat, workload.prefix_cache_hit)
    return SimRequests(prompt=prompt, cached=cached, output=sample.output_tokens.astype(np.int64),
                       enc_tokens=np.where(repeat, 0, visual), vision_ms=vision, frontend_ms=frontend,
                       api_ms=np.asarray(api, dtype=float),
                       api_stream_ms=np.asarray(api_stream_ms(cost.cal, sample.output_tokens), dtype=float))


def fixed_requests(n: int, prompt: int, output: int, cached: int = 0, enc_tokens: int = 0,
                   vision_ms: float = 0.0) -> SimRequests:
    """``n`` identical requests."""
    return SimRequests(prompt=np.full(n, prompt, dtype=np.int64), cached=np.full(n, cached, dtype=np.int64),
                       output=np.full(n, output, dtype=np.int64), enc_tokens=np.full(n, enc_tokens, dtype=np.int64),
                       vision_ms=np.full(n, float(vision_ms)))
