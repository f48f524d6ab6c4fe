"""Discrete-event simulation of vLLM 0.33's V1 scheduler on one replica.

What is modelled (``vllm/v1/core/sched/scheduler.py``, V1 defaults):

* **Continuous batching, one engine step at a time.** Each step first gives
  every running request its tokens in admission order (a decode takes one
  token; a partially prefilled request its next chunk), then admits waiting
  requests FCFS while the token budget (``max_num_batched_tokens``) and
  ``max_num_seqs`` allow. Prefill chunks ride in the same forward pass as the
  decodes (chunked prefill is always on in V1).
* **Encoder budget and cache.** A request's images are encoded in the step its
  prompt starts prefilling, if the step's encoder budget and the encoder cache
  (both ``max(max_num_batched_tokens, largest item)`` visual tokens, vLLM's
  ``compute_encoder_budget``) have room; otherwise it waits. Its encoder
  outputs stay cached until its prefill completes.
* **KV cache.** ``kv_capacity_tokens`` (``memory.MemoryBreakdown``) holds every
  running request's context (prefix-cache hits share blocks and are not
  counted; block rounding is taken as half a block per sequence). When the
  decodes of a step do not fit, the most recently admitted running request is
  preempted (V1 preempts by recompute: its KV is dropped and its prompt plus
  the tokens generated so far are prefilled again later, from the front of the
  queue).
* **Step time** from ``StepCost`` (the speed model): GPU time of the mixed
  step, the ViT time of the images encoded in it, and the engine's CPU
  overhead. Tensor parallelism is inside the step time; pipeline parallelism
  runs ``pp`` batches at once (V1's batch queue): modelled as ``pp``
  independent lanes, each with the full-pipeline step time and ``1/pp`` of the
  sequences and KV cache, requests assigned round-robin.

Runs of decode-only steps between events (an arrival, a finish, KV running
out) are advanced in one vectorised numpy call, so the Python loop runs about
once per request event, not once per token.
"""

from planner.load.simulator.arrivals import api_queue_wait, arrival_times
from planner.load.simulator.requests import SimRequests, build_requests, fixed_requests
from planner.load.simulator.result import PCTS, SimResult, percentiles
from planner.load.simulator.simulate import simulate

__all__ = ["PCTS", "SimRequests", "SimResult", "api_queue_wait", "arrival_times", "build_requests",
           "fixed_requests", "percentiles", "simulate"]
