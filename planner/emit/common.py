"""Helpers shared by the launch-config emitters: names, node layout, GPU labels, safe text and YAML.

Everything here is a pure function of a :class:`~planner.plan.DeploymentPlan`, so the emitters stay
deterministic (golden tests compare their output byte for byte).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from planner.core.errors import PlannerError, RequestError
from planner.plan import DeploymentPlan

VLLM_VERSION = "0.33.0"
"""The vLLM release the emitted flags are checked against (planner/emit/vllm_flags.py)."""
VLLM_IMAGE_NVIDIA = f"vllm/vllm-openai:v{VLLM_VERSION}"
VLLM_IMAGE_ROCM = f"vllm/vllm-openai-rocm:v{VLLM_VERSION}"
"""ROCm build of the same release (tags vllm/vllm-openai-rocm:v0.x.y are published alongside the CUDA ones)."""
VLLM_PORT = 8000
NIM_PORT = 8000
MASTER_PORT = 29501
"""vLLM 0.33 ``ParallelConfig.master_port`` default, written out so every node agrees."""

HF_SECRET = "hf-token"
NGC_API_SECRET = "ngc-api"
"""nim-llm chart default for ``model.ngcAPISecret`` (values.yaml 1.1.2)."""
NGC_PULL_SECRET = "ngc-secret"
"""nim-llm chart default for ``imagePullSecrets[0].name`` (values.yaml 1.1.2)."""

_CONTROL = re.compile("[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters that cannot be carried safely: C0/C1 controls (newline, NUL, ...), NEL and the Unicode line and
paragraph separators (YAML line breaks), surrogates and non-characters (not allowed in a YAML stream at all)."""


def check_text(value: str, what: str) -> str:
    """Refuse control characters (newline, NUL, ...): they cannot be carried safely in argv, env files or comments."""
    if _CONTROL.search(value):
        raise RequestError(f"{what} {value!r} contains a control character (or line separator); "
                           "expected printable text")
    if not value:
        raise RequestError(f"{what} is empty; expected a model id, path or name")
    return value


def comment(text: str) -> str:
    """One ``# ...`` comment line; control characters are replaced so the text cannot end the comment."""
    return "# " + _CONTROL.sub("?", text) if text else "#"


def comments(lines: list[str]) -> str:
    return "\n".join(comment(line) for line in lines) + "\n"


def sanitize_name(text: str, max_len: int) -> str:
    """A DNS-1035 label (RFC 1035: lowercase letters, digits, '-'; starts with a letter; ends alphanumeric).

    Also a valid DNS-1123 label/subdomain and label value. Long names are cut and given a short hash of the full
    text, so two long names that share a prefix stay distinct.
    """
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = ("m-" + name).rstrip("-")
    if len(name) > max_len:
        digest = hashlib.sha1(text.encode()).hexdigest()[:6]
        name = name[: max_len - 7].rstrip("-") + "-" + digest
    return name


def model_basename(model: str) -> str:
    """``Qwen/Qwen2.5-VL-7B-Instruct`` -> ``Qwen2.5-VL-7B-Instruct``; ``/models/x/`` -> ``x``."""
    parts = [p for p in re.split(r"[/\\]", model) if p]
    return parts[-1] if parts else model


def deployment_slug(dep: DeploymentPlan) -> str:
    """Folder name of one deployment: workload + model, sanitised (``chat-qwen2-5-vl-7b-instruct``)."""
    return sanitize_name(f"{dep.workload}-{model_basename(dep.model)}", 63)


K8S_NAME_MAX = 40
"""Kubernetes object names stay <= 40 characters: a LeaderWorkerSet names its worker StatefulSets
``<name>-<group>`` and their pods ``<name>-<group>-<worker>``, and a StatefulSet adds a 10-character revision hash
to a 63-character label value."""


def k8s_name(dep: DeploymentPlan) -> str:
    return sanitize_name(f"{dep.workload}-{model_basename(dep.model)}", K8S_NAME_MAX)


def is_local_path(model: str) -> bool:
    """A filesystem path rather than a Hugging Face repo id (``org/name``)."""
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or "\\" in model


@dataclass(frozen=True)
class NodeLayout:
    nodes: int
    """Nodes (pods) per replica."""
    gpus_per_node: int
    """GPUs each node (pod) of the replica uses."""

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1


def node_layout(dep: DeploymentPlan) -> NodeLayout:
    """How one TP x PP replica is spread over nodes of ``gpus_per_node`` GPUs.

    vLLM's multi-node ``mp`` executor gives every node ``world_size / nnodes`` ranks (vLLM 0.33
    ``ParallelConfig.nnodes_within_dp``), so the GPU count must split evenly: the fewest nodes that do.
    """
    world = dep.tp * dep.pp
    if dep.gpus_per_replica != world:
        raise RequestError(
            f"plan for {dep.workload!r}: gpus_per_replica={dep.gpus_per_replica} but tp*pp={dep.tp}*{dep.pp}={world}; "
            "expected them to agree"
        )
    if world <= dep.gpus_per_node:
        return NodeLayout(1, world)
    for nodes in range(math.ceil(world / dep.gpus_per_node), world + 1):
        if world % nodes == 0 and world // nodes <= dep.gpus_per_node:
            return NodeLayout(nodes, world // nodes)
    raise AssertionError("unreachable: one GPU per node always splits evenly")  # pragma: no cover


@dataclass(frozen=True)
class GpuScheduling:
    """How Kubernetes finds this GPU: the device-plugin resource and the node label that names the product."""

    vendor: str
    resource: str
    label_key: str
    label_values: tuple[str, ...]


def _nvidia(*values: str) -> GpuScheduling:
    return GpuScheduling("nvidia", "nvidia.com/gpu", "nvidia.com/gpu.product", values)


def _amd(*values: str) -> GpuScheduling:
    return GpuScheduling("amd", "amd.com/gpu", "amd.com/gpu.product-name", values)


GPU_SCHEDULING: dict[str, GpuScheduling] = {
    # NVIDIA GPU Feature Discovery sets nvidia.com/gpu.product to the NVML device name with spaces replaced by '-'
    # (nvidia-smi --query-gpu=name). Some drivers report the H200 as "NVIDIA H200" and some as
    # "NVIDIA-H200-141GB-HBM3e" (both seen on public clusters), so H200 accepts both.
    "H100-SXM-80GB": _nvidia("NVIDIA-H100-80GB-HBM3"),
    "H100-PCIE-80GB": _nvidia("NVIDIA-H100-PCIe"),
    "H100-NVL-94GB": _nvidia("NVIDIA-H100-NVL"),
    "H200-141GB": _nvidia("NVIDIA-H200", "NVIDIA-H200-141GB-HBM3e"),
    "B200-180GB": _nvidia("NVIDIA-B200"),
    "A100-SXM-80GB": _nvidia("NVIDIA-A100-SXM4-80GB"),
    "A100-SXM-40GB": _nvidia("NVIDIA-A100-SXM4-40GB"),
    "A10G-24GB": _nvidia("NVIDIA-A10G"),
    "L4-24GB": _nvidia("NVIDIA-L4"),
    "L40S-48GB": _nvidia("NVIDIA-L40S"),
    "RTX-4090-24GB": _nvidia("NVIDIA-GeForce-RTX-4090"),
    "RTX-A6000-48GB": _nvidia("NVIDIA-RTX-A6000"),
    # AMD GPU operator node labeller: amd.com/gpu.product-name=AMD_Instinct_MI300X_OAM (ROCm/gpu-operator docs).
    "MI300X-192GB": _amd("AMD_Instinct_MI300X_OAM", "AMD_Instinct_MI300X"),
}


@functools.lru_cache(maxsize=256)
def _catalog_name(name: str) -> str | None:
    """The shipped catalog's canonical name for a GPU name or alias (None if the catalog does not know it)."""
    from planner.catalog.loader import load_gpus  # the emitters otherwise need only the plan

    try:
        return load_gpus().get(name).name
    except PlannerError:
        return None


def gpu_scheduling(dep: DeploymentPlan) -> GpuScheduling | None:
    """The entry for the plan's GPU, by name or alias (directly, or through the GPU catalog's aliases);
    None for a GPU we have no label for."""
    by_upper = {k.upper(): v for k, v in GPU_SCHEDULING.items()}
    names = [dep.gpu, *dep.gpu_aliases]
    for name in names:
        hit = by_upper.get(name.upper())
        if hit is not None:
            return hit
    for name in names:
        canonical = _catalog_name(name)
        if canonical is not None and canonical.upper() in by_upper:
            return by_upper[canonical.upper()]
    return None


def gpu_vendor(dep: DeploymentPlan) -> str:
    """``nvidia`` unless the GPU is a known AMD part (or its name says MI/Instinct)."""
    sched = gpu_scheduling(dep)
    if sched is not None:
        return sched.vendor
    names = " ".join([dep.gpu, *dep.gpu_aliases]).upper()
    return "amd" if re.search(r"\bMI\d|INSTINCT", names) else "nvidia"


def cache_size_gib(dep: DeploymentPlan) -> int:
    """Model-cache volume size: the checkpoint (per-GPU weights x GPUs) x 1.5 + 10 GiB, rounded up to 10 GiB."""
    checkpoint_gib = dep.predicted.memory.weights_gib * dep.tp * dep.pp
    return int(math.ceil((checkpoint_gib * 1.5 + 10) / 10) * 10)


def plan_summary(dep: DeploymentPlan) -> list[str]:
    """A few lines describing the plan, for the header comment of every file."""
    p = dep.predicted
    layout = node_layout(dep)
    where = f"{layout.nodes} nodes x {layout.gpus_per_node}" if layout.multi_node else f"{layout.gpus_per_node}"
    lines = [
        f"workload: {dep.workload}",
        f"model: {dep.model}" + (f" (serves checkpoint {dep.served_model})" if dep.served_model != dep.model else ""),
        f"replicas: {dep.replicas}, each TP={dep.tp} x PP={dep.pp} on {where} {dep.gpu} "
        f"({dep.replicas * dep.gpus_per_replica} GPUs in all)",
        f"precision: {dep.precision}" + (f" (--quantization {dep.quantization})" if dep.quantization else "")
        + f", KV cache: {dep.kv_cache_dtype}",
        f"max_num_seqs={dep.max_num_seqs}, max_model_len={dep.max_model_len}, "
        f"max_num_batched_tokens={dep.max_num_batched_tokens}, gpu_memory_utilization={dep.gpu_memory_utilization:g}",
        f"predicted: TTFT p95 {p.ttft_ms.p95:.0f} ms, TPOT p95 {p.tpot_ms.p95:.1f} ms, "
        f"{p.requests_per_s:g} requests/s, memory {p.memory.total_gib:.1f} GiB per GPU "
        f"(KV {p.memory.kv_capacity_tokens} tokens)",
        f"cost: ${dep.cost_per_hour:.2f}/hour at ${dep.price_usd_per_gpu_hour:.2f}/GPU-hour",
        dep.launch_limits(),
    ]
    if dep.host is not None:
        h = dep.host
        lines.append(f"front end: --api-server-count {dep.api_server_count}; per replica {h.vcpus:g} vCPUs (engine + "
                     f"{dep.api_server_count} x {h.vcpus_per_api_server:g} per busy API server)"
                     + (f" of the {h.vcpus_offered:g} its node offers" if h.vcpus_offered else "")
                     + f", {h.memory_gib:g} GiB host RAM (--mm-processor-cache-gb {h.mm_processor_cache_gib:g} per API "
                     f"server and engine core)")
    if dep.speculative is not None:
        sp = dep.speculative
        lines.append(f"speculative decoding: {sp.method}, {sp.num_speculative_tokens} draft tokens per step"
                     + (f" from {sp.draft_model}" if sp.draft_model else "") + f"; planned at acceptance "
                     f"{sp.acceptance_rate:g} ({sp.tokens_per_step:.2f} tokens per step): check "
                     "vllm:spec_decode_num_accepted_tokens / vllm:spec_decode_num_draft_tokens on your traffic")
    if dep.prefix_caching_reason and (not dep.enable_prefix_caching or dep.prefix_caching_reason.startswith("on:")):
        lines.append(f"prefix caching: {dep.prefix_caching_reason}; check vllm:prefix_cache_hits / "
                     "vllm:prefix_cache_queries on your traffic")
    return lines


def dump_yaml(data: Any) -> str:
    """YAML through PyYAML's safe dumper, key order kept, no line folding (stable golden files)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=10_000, allow_unicode=False)


def dump_yaml_all(docs: list[Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=10_000, allow_unicode=False)


def write_text(path: Path, text: str, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if executable:
        path.chmod(0o755)
    return path
