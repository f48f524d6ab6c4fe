"""Moving one image's embeddings from an encoder-only vLLM instance to the language-model instance (the ``epd``
topology, vLLM's ECExampleConnector): bytes of the file, and its save + load time from the engine catalog's
measured table (``EngineSpec.encoder_transfer``, run27)."""

from __future__ import annotations

import numpy as np

from planner.catalog.schema import EncoderTransfer, ModelSpec


def embedding_megabytes(model: ModelSpec, visual_tokens: float, bytes_per_element: int) -> float:
    """Size (1e6 bytes) of ``visual_tokens`` embeddings: tokens x the LM hidden size x bytes per element (the
    projector's output is the LM's input width)."""
    return float(visual_tokens) * model.decoder.hidden_size * bytes_per_element / 1e6


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Linear in between the points; below the smallest its time (a small file costs the calls' fixed part);
    above the largest the last segment extended."""
    if x <= xs[-1]:
        return float(np.interp(x, xs, ys))
    j = len(xs) - 2
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    return max(0.0, ys[j] + slope * (x - xs[j]))


def transfer_ms(spec: EncoderTransfer, megabytes: float) -> tuple[float, float]:
    """(save ms, load ms) of one embeddings file of ``megabytes`` on tmpfs; (0, 0) for an empty one."""
    if megabytes <= 0:
        return 0.0, 0.0
    xs = [p.megabytes for p in spec.tmpfs]
    return (_interp(megabytes, xs, [p.save_ms for p in spec.tmpfs]),
            _interp(megabytes, xs, [p.load_ms for p in spec.tmpfs]))


def request_transfer_ms(spec: EncoderTransfer, model: ModelSpec, visual_tokens: float, images: int) -> float:
    """Save + load of one request's images, one file per image (each image its own ``mm_hash``), the request's
    visual tokens split evenly over its images, the files moved one after another (conservative: the proxy may
    spread a request's images over several encoders)."""
    if images <= 0 or visual_tokens <= 0:
        return 0.0
    mb = embedding_megabytes(model, visual_tokens / images, spec.embedding_bytes_per_element)
    save, load = transfer_ms(spec, mb)
    return images * (save + load)
