"""The shape of one request as the engine sees it: text, visual tokens, encoder patches and sequences, output;
with a class per kind of request when the workload's lengths or images vary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.catalog.vision_tokens import image_tokens
from planner.spec.config import ResolvedConfig, ServingConfig
from planner.spec.workload import Workload


@dataclass(frozen=True)
class RequestShape:
    """Tokens of one request as the engine sees them."""

    text_tokens: int
    visual_tokens: int
    encoder_patches: int
    images: int
    output_tokens: int
    cached_tokens: int
    input_megapixels: float = 0.0
    """Pixels of the images as sent (JPEG decode and resize work)."""
    processed_megapixels: float = 0.0
    """Pixels the vision tower sees (encoder patches x patch area)."""
    encoder_sequences: int = 0
    """Attention sequences of the ViT over all images: a tiled encoder (InternVL, LLaVA-NeXT, Idefics3...)
    encodes every tile and thumbnail as its own sequence; 0 means one per image."""
    encoded_share: float = 1.0
    """Share of requests whose images the vision encoder runs: the others repeat an image whose tokens hit the
    prefix cache (``Workload.repeated_image_fraction``)."""
    classes: tuple[tuple[float, RequestShape], ...] = ()
    """When the workload's lengths or images vary: (probability, shape) of each kind of request (the fields
    above are then their means); empty for a fixed request."""

    @property
    def vit_sequences(self) -> int:
        """``encoder_sequences``, or one per image when not set."""
        return self.encoder_sequences or self.images

    @property
    def prompt_tokens(self) -> int:
        return self.text_tokens + self.visual_tokens


def cached_prompt_tokens(cfg: ServingConfig | ResolvedConfig, prompt: Any, shared_text: Any, visual: Any,
                         repeated: Any, hit_fraction: float) -> Any:
    """Prompt tokens a request finds in vLLM's prefix cache (scalars, or numpy arrays of one value per request).

    The prompt is laid out as the shared text prefix, then the images, then the rest of the text. A request
    hits the shared prefix, plus its images' tokens when it repeats images the engine has seen (``repeated``),
    or the workload's bare ``hit_fraction`` of its prompt if that is more. vLLM's KV-cache manager matches
    whole blocks only, and at most ``prompt - 1`` tokens (the last prompt token is always computed, to sample
    the first output token: ``KVCacheManager.get_computed_blocks`` in vLLM 0.26), so the hit rounds down to a
    multiple of ``kv_block_tokens``. With prefix caching off nothing hits. The first request of a prefix
    misses too; a steady workload's thousands of requests make that nil (a finite benchmark's first request is
    the only one that pays it: run25's shared prefixes hit on every request after the first)."""
    if not cfg.enable_prefix_caching:
        return np.zeros_like(prompt) if isinstance(prompt, np.ndarray) else 0
    block = int(cfg.kv_block_tokens) if isinstance(cfg, ResolvedConfig) else int(cfg.kv_block_tokens or 16)
    shared = np.asarray(shared_text) + np.where(repeated, visual, 0)
    hit = np.maximum(shared, np.floor(hit_fraction * np.asarray(prompt)))
    hit = np.maximum(np.minimum(hit, np.asarray(prompt) - 1), 0)
    out = (hit // block * block).astype(np.int64)
    return out if isinstance(prompt, np.ndarray) else int(out)


MAX_CLASSES_PER_DIM = 6
"""Distributions with more support points (empirical samples) are binned into this many quantile groups."""


def _dist_points(dist: Any, fixed: int) -> list[tuple[float, float]]:
    """(probability, value) of an integer distribution, at most MAX_CLASSES_PER_DIM of them (equal-mass
    quantile groups of a long support, each at its group's mean)."""
    if dist is None:
        return [(1.0, float(fixed))]
    p = dist.probabilities()
    v = np.asarray(dist.values, dtype=float)
    order = np.argsort(v, kind="stable")
    p, v = p[order], v[order]
    if len(v) <= MAX_CLASSES_PER_DIM:
        return [(float(pi), float(vi)) for pi, vi in zip(p, v) if pi > 0]
    edges = np.searchsorted(np.cumsum(p), np.linspace(0, 1, MAX_CLASSES_PER_DIM + 1)[1:-1], side="right")
    out = []
    for grp_p, grp_v in zip(np.split(p, edges), np.split(v, edges)):
        if grp_p.sum() > 0:
            out.append((float(grp_p.sum()), float(grp_p @ grp_v / grp_p.sum())))
    return out


def request_shape(cfg: ServingConfig | ResolvedConfig, workload: Workload) -> RequestShape:
    """The engine's view of one request of ``workload``: the representative request, or, when its lengths or
    images vary, the mean over its classes (each class in ``classes``)."""
    repeat = workload.repeated_image_fraction if cfg.enable_prefix_caching else 0.0
    if not workload.has_distributions and repeat in (0.0, 1.0):
        return _fixed_shape(cfg, workload)
    prompts = _dist_points(workload.prompt_tokens_dist, workload.prompt_tokens)
    outputs = _dist_points(workload.output_tokens_dist, workload.output_tokens)
    counts = _dist_points(workload.images_per_request_dist, len(workload.images))
    if workload.image_size_dist is not None:
        sp = workload.image_size_dist.probabilities()
        sizes = [(float(q), s) for q, s in zip(sp, workload.image_size_dist.values) if q > 0]
    else:
        sizes = [(1.0, None)]  # type: ignore[list-item]
    # Requests that repeat an image (its tokens cached, the encoder skipped) and those that do not are two kinds
    # of request: the load models see the spread of their work, not only its mean.
    repeats = [(p, r) for p, r in ((1.0 - repeat, 0.0), (repeat, 1.0)) if p > 0]
    classes = []
    for pp, pv in prompts:
        for po, ov in outputs:
            for pc, cv in counts:
                for ps, sz in sizes:
                    for pr, rv in repeats:
                        k = int(round(cv))
                        imgs = ([sz] * k if sz is not None else list(workload.images)[:k]) if k else []
                        w = workload.model_copy(update={
                            "prompt_tokens": int(round(pv)), "output_tokens": max(1, int(round(ov))), "images": imgs,
                            "prompt_tokens_dist": None, "output_tokens_dist": None, "images_per_request_dist": None,
                            "image_size_dist": None, "repeated_image_fraction": rv})
                        classes.append((pp * po * pc * ps * pr, _fixed_shape(cfg, w)))
    total = sum(p for p, _ in classes)
    classes = [(p / total, c) for p, c in classes]

    def mean(attr: str) -> float:
        return sum(p * getattr(c, attr) for p, c in classes)

    images = mean("images")
    return RequestShape(
        text_tokens=int(round(mean("text_tokens"))), visual_tokens=int(round(mean("visual_tokens"))),
        encoder_patches=int(round(mean("encoder_patches"))),
        encoder_sequences=int(round(mean("vit_sequences"))),
        images=max(1, int(round(images))) if images > 0 else 0,
        output_tokens=max(1, int(round(mean("output_tokens")))), cached_tokens=int(round(mean("cached_tokens"))),
        encoded_share=mean("encoded_share"),
        input_megapixels=mean("input_megapixels"), processed_megapixels=mean("processed_megapixels"),
        classes=tuple(classes))


def _fixed_shape(cfg: ServingConfig | ResolvedConfig, workload: Workload) -> RequestShape:
    visual = patches = sequences = 0
    rule = cfg.model.visual_tokens
    if workload.images and rule is None:
        from planner.core.errors import UnsupportedError

        raise UnsupportedError(f"{cfg.model.name} is a text model: it takes no images")
    sent = 0
    for img in workload.images:
        assert rule is not None
        t = image_tokens(rule, img.width, img.height, cfg.mm_processor_options)
        visual += t.llm_tokens
        patches += t.encoder_patches
        sequences += t.encoder_sequences
        sent += img.width * img.height
    prompt = workload.prompt_tokens + visual
    shared, hit = workload.shared_prefix_tokens, workload.prefix_cache_hit
    repeat = workload.repeated_image_fraction if visual and cfg.enable_prefix_caching else 0.0
    fresh = cached_prompt_tokens(cfg, prompt, shared, visual, False, hit)
    again = cached_prompt_tokens(cfg, prompt, shared, visual, True, hit) if repeat else fresh
    return RequestShape(
        text_tokens=workload.prompt_tokens,
        visual_tokens=visual,
        encoder_patches=patches,
        images=len(workload.images),
        output_tokens=workload.output_tokens,
        cached_tokens=int(round((1 - repeat) * fresh + repeat * again)),
        encoded_share=1.0 - repeat,
        input_megapixels=sent / 1e6,
        processed_megapixels=processed_megapixels(cfg, patches),
        encoder_sequences=sequences,
    )


def processed_megapixels(cfg: ServingConfig | ResolvedConfig, encoder_patches: int) -> float:
    """Pixels the vision tower sees: its patches times the patch area."""
    v = cfg.model.vision
    return encoder_patches * (v.patch_size**2 if v else 0) / 1e6
