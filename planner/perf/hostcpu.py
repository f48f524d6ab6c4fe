"""What one replica needs from its host: CPUs and memory for the engine core, its GPU workers and its API servers.

vLLM runs, per replica, one EngineCore process (the scheduler loop; at TP x PP = 1 the GPU worker runs inside it),
one worker process per GPU when a replica spans several, and ``--api-server-count`` API-server processes. An API
server holds a request for ``speed.api_server_ms`` of wall time (one Python event loop), but its image work runs
the HF processor's torch threads, so while it preprocesses it burns more than one CPU:
``engine.host.api_server_cpu_ms_per_megapixel`` of CPU for the ``speed.api_server_ms_per_megapixel`` of wall time
it is held. A busy API server therefore needs ``cpu ms / hold ms`` CPUs (at least one, its event loop), and a
replica of ``n`` API servers needs

    vcpus(n) = engine_core + worker_vcpus_per_gpu x GPUs (when GPUs > 1) + n x api_server_vcpus

which the node must offer (``gpu.host_vcpus_per_gpu`` x GPUs). Host memory: the engine's, one multimodal processor
cache (``--mm-processor-cache-gb``) per API server and one in the engine core, and each API server's own.
"""

from __future__ import annotations

import math

import numpy as np

from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import HostCpu
from planner.perf.frontend import api_server_ms
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape


def _per_class(shape: RequestShape) -> tuple[np.ndarray, list[RequestShape]]:
    if shape.classes:
        return np.array([q for q, _ in shape.classes]), [c for _, c in shape.classes]
    return np.array([1.0]), [shape]


def api_hold_ms(cal: Calibration, shape: RequestShape) -> float:
    """Mean time a request holds one API server (``speed.api_server_ms``) over the shape's classes."""
    p, classes = _per_class(shape)
    v = np.array([api_server_ms(cal, s.text_tokens, s.output_tokens, s.images, s.input_megapixels) for s in classes])
    return float(p @ v)


def api_cpu_ms(cal: Calibration, host: HostCpu, shape: RequestShape) -> float:
    """Mean CPU time (all threads) an API server spends on a request: its hold, with the image work's wall time
    replaced by its CPU time."""
    p, classes = _per_class(shape)
    wall_mp = cal.value("api_server_ms_per_megapixel")
    v = np.array([api_server_ms(cal, s.text_tokens, s.output_tokens, s.images, s.input_megapixels)
                  + (host.api_server_cpu_ms_per_megapixel - wall_mp) * s.input_megapixels for s in classes])
    return float(p @ v)


def api_server_vcpus(cal: Calibration, host: HostCpu, shape: RequestShape) -> float:
    """CPUs one API server uses while busy with this workload's requests: CPU time over hold time, at least
    ``host.api_server_min_vcpus`` (its event loop)."""
    hold = api_hold_ms(cal, shape)
    if hold <= 0:
        return host.api_server_min_vcpus
    return max(host.api_server_min_vcpus, api_cpu_ms(cal, host, shape) / hold)


def engine_vcpus(host: HostCpu, cfg: ResolvedConfig) -> float:
    """CPUs of the engine core and, for a replica of several GPUs, one worker process per GPU."""
    workers = host.worker_vcpus_per_gpu * cfg.num_gpus if cfg.num_gpus > 1 else 0.0
    return host.engine_core_vcpus + workers


def replica_vcpus(host: HostCpu, cfg: ResolvedConfig, per_api_server: float, api_servers: int | None = None) -> float:
    """CPUs one replica needs with ``api_servers`` (default ``cfg.api_server_count``) busy API servers."""
    n = cfg.api_server_count if api_servers is None else api_servers
    return engine_vcpus(host, cfg) + n * per_api_server


def offered_vcpus(cfg: ResolvedConfig) -> float:
    """CPUs the replica's node share offers (inf when the GPU's offering does not say)."""
    per_gpu = cfg.gpu.host_vcpus_per_gpu
    return math.inf if per_gpu is None else per_gpu * cfg.num_gpus


def most_api_servers(host: HostCpu, cfg: ResolvedConfig, per_api_server: float) -> int:
    """The most API servers the replica's CPUs hold (0: not even one), capped at ``host.max_api_servers``; one for
    a replica over several nodes (its launch script is shared by the head and the headless nodes, which run none)."""
    room = offered_vcpus(cfg) - engine_vcpus(host, cfg)
    if room < per_api_server - 1e-9:
        return 0
    if cfg.num_gpus > cfg.gpu.gpus_per_node:
        return 1
    if math.isinf(room):
        return host.max_api_servers
    return min(host.max_api_servers, int(math.floor(room / per_api_server + 1e-9)))


def replica_memory_gib(host: HostCpu, api_servers: int) -> float:
    """Host RAM of one replica: the engine's, the processor cache once per API server and once in the engine core,
    and each API server's own."""
    return (host.engine_memory_gib + host.mm_processor_cache_gib * (api_servers + 1)
            + host.api_server_memory_gib * api_servers)
