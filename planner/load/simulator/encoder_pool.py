"""Encoder disaggregation (``epd``) as a queue in front of a language-model replica: ``encoders`` encoder-only
instances serve the images of each request first come, first served (an exact event loop over the arrivals),
the embeddings are saved and loaded (a delay per request), and the LM replica then serves the requests in the
order they come out of that path, their images already encoded (no ViT time, no encoder-cache tokens).

A request's TTFT and e2e are its encoder path (wait + encode + transfer) plus what the LM simulator gives it;
TPOT is the LM's. Requests without images (or whose images are repeats the LM's prefix cache holds: ``encode_ms``
0) skip the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from planner.load.simulator.arrivals import api_queue_wait, arrival_times
from planner.load.simulator.requests import SimRequests
from planner.load.simulator.result import SimResult
from planner.load.simulator.simulate import simulate
from planner.perf.stepcost import StepCost
from planner.spec.config import ResolvedConfig


@dataclass(frozen=True)
class EpdSimResult:
    lm: SimResult
    """The LM replica's simulation, its requests in the order they reached it (``order``)."""
    order: np.ndarray
    """``order[j]``: the original request the LM served j-th."""
    path_ms: np.ndarray
    """Per original request: encoder wait + encode + transfer (0 for a request without images)."""
    wait_ms: np.ndarray
    """Per original request: its wait for an encoder."""

    def _path_measured(self) -> np.ndarray:
        return self.path_ms[self.order][self.lm.measured]

    @property
    def saturated(self) -> bool:
        return self.lm.saturated or self.encoder_queue_grows

    @property
    def ttft_ms(self) -> np.ndarray:
        return self.lm.ttft_ms + self._path_measured()

    @property
    def e2e_ms(self) -> np.ndarray:
        return self.lm.e2e_ms + self._path_measured()

    @property
    def tpot_ms(self) -> np.ndarray:
        return self.lm.tpot_ms

    @property
    def encoder_queue_grows(self) -> bool:
        """The encoders' wait keeps growing over the run (second half's mean wait over twice the first's plus a
        millisecond): the pool is saturated."""
        w = self.wait_ms
        half = len(w) // 2
        return half > 0 and float(np.mean(w[half:])) > 2 * float(np.mean(w[:half])) + 1.0


def encoder_waits(arrival_s: np.ndarray, encode_ms: np.ndarray, encoders: int) -> np.ndarray:
    """Waits (ms) of requests arriving at ``arrival_s`` (ascending) for ``encoders`` first-come-first-served
    servers, each request holding one for ``encode_ms`` (0: it does not use the encoders and waits 0)."""
    wait = np.zeros(len(arrival_s))
    use = encode_ms > 0
    if use.any():
        wait[use] = api_queue_wait(arrival_s[use], encode_ms[use] * 1e-3, encoders) * 1e3
    return wait


def permuted(reqs: SimRequests, order: np.ndarray) -> SimRequests:
    """``reqs`` in ``order``, their images already encoded (no ViT time, no encoder-cache tokens)."""
    def pick(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[order]

    return replace(reqs, prompt=reqs.prompt[order], cached=reqs.cached[order], output=reqs.output[order],
                   enc_tokens=np.zeros(len(order), dtype=np.int64), vision_ms=np.zeros(len(order)),
                   frontend_ms=pick(reqs.frontend_ms), api_ms=pick(reqs.api_ms), api_stream_ms=pick(reqs.api_stream_ms))


def simulate_epd(cost: StepCost, cfg: ResolvedConfig, reqs: SimRequests, kv_capacity_tokens: int,
                 encode_ms: np.ndarray, transfer_ms: np.ndarray, encoders: int, arrival: str,
                 rate_per_s: float | None = None, trace_s: tuple[float, ...] | None = None,
                 seed: int = 0) -> EpdSimResult:
    """One LM replica of ``cfg`` behind ``encoders`` encoder instances, open-loop ``arrival`` ('poisson' at
    ``rate_per_s`` or 'trace'). ``encode_ms`` and ``transfer_ms``: per request (the encoder's service time and the
    embeddings' save + load)."""
    n = len(reqs)
    arr = arrival_times(n, arrival, rate_per_s, trace_s, seed)
    if arr is None:
        raise ValueError("the epd simulation serves open-loop arrivals only")
    wait = encoder_waits(arr, encode_ms, encoders)
    path = np.where(encode_ms > 0, wait + encode_ms + transfer_ms, 0.0)
    at_lm = arr + path * 1e-3
    order = np.argsort(at_lm, kind="stable")
    res = simulate(cost, permuted(reqs, order), kv_capacity_tokens, "trace", trace_s=tuple(at_lm[order].tolist()),
                   seed=seed, cfg=cfg)
    return EpdSimResult(lm=res, order=order, path_ms=path, wait_ms=wait)
