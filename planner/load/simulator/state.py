"""The state of one engine's scheduling loop between steps, named (``LaneState``) rather than kept in locals.

Requests are indexed 0..n-1 within their lane. A request moves through ``phase`` NOT_ARRIVED -> WAITING ->
PREFILLING -> DECODING -> FINISHED; a preemption sends it back to WAITING with its KV dropped (V1 preempts by
recompute). Decoding requests share one counter ``K`` (decode steps so far): a request decoding with context
``base + K`` needs no update per step, so a run of decode-only steps is one addition.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

NOT_ARRIVED, WAITING, PREFILLING, DECODING, FINISHED = range(5)


@dataclass(slots=True, eq=False)
class LaneState:
    """Where every request of a lane stands, and the engine's clock and counters."""

    arr: list[float]
    """When the engine received each request (s)."""
    first: list[float]
    """When each request's first token was sampled (s)."""
    fin: list[float]
    """When each request's last token was sampled (s)."""
    target: list[int]
    """Tokens to prefill: the prompt, or after a preemption the prompt and the tokens generated so far."""
    done: list[int]
    """Of ``target``, tokens computed or found in the prefix cache."""
    gen: list[int] = field(default_factory=list)
    """Tokens generated."""
    base: list[int] = field(default_factory=list)
    """Decoding: the context is ``base + K``."""
    kv: list[int] = field(default_factory=list)
    """Prefilling: KV tokens held."""
    encoded: list[bool] = field(default_factory=list)
    """Whether the request's images are encoded (their outputs held in the encoder cache)."""
    version: list[int] = field(default_factory=list)
    """Bumped on preemption, so stale finish events in ``heap`` are skipped."""
    phase: list[int] = field(default_factory=list)
    waiting: deque[int] = field(default_factory=deque)
    """FCFS queue; preempted requests go back to its front."""
    running: dict[int, None] = field(default_factory=dict)
    """Admitted requests in admission order (``popitem`` gives the latest, the one V1 preempts)."""
    prefilling: dict[int, None] = field(default_factory=dict)
    """Admitted requests still prefilling, in admission order (they get their chunks first)."""
    heap: list[tuple[int, int, int]] = field(default_factory=list)
    """Decoding requests by the counter ``K`` at which they finish: (K, version, id)."""
    n_dec: int = 0  # requests decoding
    base_sum: int = 0  # sum of ``base`` over decoding requests: their contexts sum to base_sum + n_dec K
    cached_dec: int = 0  # prefix-cached tokens of decoding requests (shared blocks, not counted against the KV)
    kv_pf: int = 0  # KV tokens held by prefilling requests
    enc_used: int = 0  # visual tokens held in the encoder cache
    K: int = 0  # decode steps run so far
    next_arr: int = 0  # the next request to arrive (open loop) or to be sent (closed loop)
    t: float = 0.0
    """The clock (s): the end of the last step."""
    t_prev: float = 0.0
    """The start of the step that ended at ``t``."""
    busy: float = 0.0
    """Integral of running sequences over time (s)."""
    finished: int = 0
    preemptions: int = 0
    steps: int = 0

    @staticmethod
    def fresh(prompt: list[int], cached: list[int]) -> LaneState:
        """Nothing arrived yet: every request's target is its prompt, its cached prefix already done."""
        n = len(prompt)
        return LaneState(arr=[0.0] * n, first=[float("nan")] * n, fin=[float("nan")] * n, target=list(prompt),
                         done=list(cached), gen=[0] * n, base=[0] * n, kv=[0] * n, encoded=[False] * n,
                         version=[0] * n, phase=[NOT_ARRIVED] * n)

    def kv_used(self, slack: float) -> float:
        """KV tokens held by the running requests, with ``slack`` tokens of block rounding each."""
        return self.base_sum + self.n_dec * self.K - self.cached_dec + self.kv_pf + slack * len(self.running)
