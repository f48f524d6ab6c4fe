"""Kubernetes targets: ``k8s-vllm`` and ``k8s-nim``.

One replica on one node: a ``Deployment`` (apps/v1) plus a ``Service`` (v1) in ``k8s.yaml``. A replica that spans
nodes: ``k8s-vllm`` writes a ``LeaderWorkerSet`` (leaderworkerset.x-k8s.io/v1; one group of ``nodes`` pods per
replica, vLLM's native multi-node flags with the node rank and leader address that LWS injects as
``LWS_WORKER_INDEX`` / ``LWS_LEADER_ADDRESS``) plus a Service for the leaders; ``k8s-nim`` writes the nim-llm Helm
values (``multiNode``), because the chart renders NIM's LeaderWorkerSet together with the SSH keys and MPI host
files NIM's multi-node start-up needs (nim-llm 1.1.2 ``multi_node_deployment.yaml``), which a hand-written
manifest would have to duplicate.

Conventions: GPUs through the device-plugin resource (``nvidia.com/gpu``, ``amd.com/gpu``) and a required node
affinity on the GPU-feature-discovery product label; ``/dev/shm`` as a memory-backed emptyDir; the model cache as
an emptyDir (each pod downloads once; swap in a PersistentVolumeClaim to keep it across restarts); probes on the
engine's health endpoints with a startup probe that allows 30 minutes (60 for multi-node) to download and load the
weights; secrets only through ``secretKeyRef``. Names are DNS-1035 labels of at most 40 characters.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from planner.emit import nim as nim_emit
from planner.emit import vllm as vllm_emit
from planner.emit.common import (
    HF_SECRET,
    NGC_API_SECRET,
    NGC_PULL_SECRET,
    NIM_PORT,
    VLLM_IMAGE_NVIDIA,
    VLLM_IMAGE_ROCM,
    VLLM_PORT,
    VLLM_VERSION,
    check_text,
    comments,
    dump_yaml_all,
    gpu_scheduling,
    gpu_vendor,
    is_local_path,
    k8s_name,
    node_layout,
    plan_summary,
    sanitize_name,
    write_text,
)
from planner.plan import DeploymentPlan

LWS_LEADER_ADDRESS = vllm_emit.ShellVar("LWS_LEADER_ADDRESS")
LWS_WORKER_INDEX = vllm_emit.ShellVar("LWS_WORKER_INDEX")
"""Set by the LeaderWorkerSet controller in every container (lws api/leaderworkerset/v1 ``LwsLeaderAddress``,
``LwsWorkerIndex``); Kubernetes expands ``$(NAME)`` in ``args`` from the container's environment."""


def k8s_escape(text: str) -> str:
    """Protect a literal from Kubernetes' ``$(VAR)`` expansion of ``args``/``command``/``env[].value``.

    The kubelet turns ``$$`` into ``$`` and ``$(NAME)`` into NAME's value (``third_party/forked/golang/expansion``
    ``Expand``), so doubling every ``$`` keeps a model id such as ``org/$(HF_TOKEN)`` exactly as written.
    """
    return text.replace("$", "$$")


def k8s_args(args: list[vllm_emit.Arg]) -> list[str]:
    """Container args: literals escaped, LWS variables as ``$(NAME)`` references."""
    return [f"$({a.name})" if isinstance(a, vllm_emit.ShellVar) else k8s_escape(a) for a in args]

HF_CACHE = "/root/.cache/huggingface"
"""Hugging Face cache of the vllm/vllm-openai image (runs as root)."""


def _labels(dep: DeploymentPlan, engine: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": k8s_name(dep),
        "app.kubernetes.io/component": engine,
        "app.kubernetes.io/managed-by": "vlmplan",
        "vlmplan/workload": sanitize_name(dep.workload, 63),
    }


def _selector(dep: DeploymentPlan) -> dict[str, str]:
    return {"app.kubernetes.io/name": k8s_name(dep)}


def _gpu_resource(dep: DeploymentPlan) -> str:
    sched = gpu_scheduling(dep)
    if sched is not None:
        return sched.resource
    return "amd.com/gpu" if gpu_vendor(dep) == "amd" else "nvidia.com/gpu"


def _scheduling(dep: DeploymentPlan) -> dict[str, Any]:
    """Node affinity on the GPU product label, and a toleration for the usual GPU-node taint."""
    out: dict[str, Any] = {}
    sched = gpu_scheduling(dep)
    if sched is not None:
        out["affinity"] = nim_emit.node_affinity(sched.label_key, sched.label_values)
    out["tolerations"] = [{"key": _gpu_resource(dep), "operator": "Exists", "effect": "NoSchedule"}]
    return out


def _probe(path: str, period_s: int, failures: int, timeout_s: int = 5) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period_s, "timeoutSeconds": timeout_s,
            "failureThreshold": failures}


def _startup_failures(dep: DeploymentPlan) -> int:
    """Startup probe every 10 s: 30 minutes for one node, 60 for a multi-node replica."""
    return 360 if node_layout(dep).multi_node else 180


def _volumes(dep: DeploymentPlan, cache_mount: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container mounts): /dev/shm in memory, the model cache, and a local model folder if any."""
    shm_gib = _shm_gib(dep)
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gib}Gi"}},
        {"name": "model-cache", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": cache_mount},
    ]
    if is_local_path(dep.served_model):
        volumes.append({"name": "model", "hostPath": {"path": dep.served_model, "type": "Directory"}})
        mounts.append({"name": "model", "mountPath": dep.served_model, "readOnly": True})
    return volumes, mounts


def _resources(dep: DeploymentPlan, resource: str, gpus: str) -> dict[str, Any]:
    """Requests and limits of one pod: its GPUs and, when the plan has them, the replica's CPUs (whole CPUs, so
    that with equal requests and limits the pod is Guaranteed and the kubelet's static CPU manager can pin them)
    and host memory plus the memory-backed /dev/shm (its pages count against the pod's memory)."""
    out: dict[str, Any] = {resource: gpus}
    if dep.host is not None:
        out["cpu"] = str(math.ceil(dep.host.vcpus - 1e-9))
        out["memory"] = f"{math.ceil(dep.host.memory_gib + _shm_gib(dep) - 1e-9)}Gi"
    return {"limits": dict(out), "requests": dict(out)}


def _shm_gib(dep: DeploymentPlan) -> int:
    return 32 if node_layout(dep).gpus_per_node > 1 else 16


def _hf_token_env() -> dict[str, Any]:
    return {"name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": HF_SECRET, "key": "HF_TOKEN", "optional": True}}}


def _vllm_container(dep: DeploymentPlan, args: list[str], role: str) -> dict[str, Any]:
    gpus = str(node_layout(dep).gpus_per_node)
    resource = _gpu_resource(dep)
    _, mounts = _volumes(dep, HF_CACHE)
    container: dict[str, Any] = {
        "name": "vllm",
        "image": VLLM_IMAGE_ROCM if gpu_vendor(dep) == "amd" else VLLM_IMAGE_NVIDIA,
        "command": ["vllm", "serve"],
        "args": args,
        "env": [_hf_token_env()],
        "ports": [{"name": "http", "containerPort": VLLM_PORT}],
        "resources": _resources(dep, resource, gpus),
        "volumeMounts": mounts,
    }
    if role != "worker":  # headless workers serve no HTTP
        container["startupProbe"] = _probe("/health", 10, _startup_failures(dep))
        container["readinessProbe"] = _probe("/health", 10, 3)
        container["livenessProbe"] = _probe("/health", 10, 3)
    return container


def _pod_spec(dep: DeploymentPlan, container: dict[str, Any], cache_mount: str, engine: str) -> dict[str, Any]:
    volumes, _ = _volumes(dep, cache_mount)
    spec: dict[str, Any] = {}
    if engine == "nim":
        spec["imagePullSecrets"] = [{"name": NGC_PULL_SECRET}]
        # NIM images run as a non-root user; fsGroup makes the cache volume writable (nim-llm chart defaults).
        spec["securityContext"] = {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}
    spec["containers"] = [container]
    spec["volumes"] = volumes
    spec["terminationGracePeriodSeconds"] = 60
    spec.update(_scheduling(dep))
    return spec


def _deployment(dep: DeploymentPlan, engine: str, pod_spec: dict[str, Any]) -> dict[str, Any]:
    name = k8s_name(dep)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": _labels(dep, engine)},
        "spec": {
            "replicas": dep.replicas,
            "selector": {"matchLabels": _selector(dep)},
            # Replace pods one at a time without asking for extra GPUs.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": _labels(dep, engine)}, "spec": pod_spec},
        },
    }


def _service(dep: DeploymentPlan, engine: str, name: str, selector: dict[str, str], port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": _labels(dep, engine)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def vllm_manifests(dep: DeploymentPlan) -> list[dict[str, Any]]:
    """Deployment + Service, or LeaderWorkerSet + Service for a multi-node replica."""
    layout = node_layout(dep)
    name = k8s_name(dep)
    vllm_emit.preflight(dep)
    if not layout.multi_node:
        args = k8s_args(vllm_emit.serve_args(dep))
        pod = _pod_spec(dep, _vllm_container(dep, args, "server"), HF_CACHE, "vllm")
        return [_deployment(dep, "vllm", pod), _service(dep, "vllm", name, _selector(dep), VLLM_PORT)]
    leader_args = k8s_args(vllm_emit.serve_args(dep, node_rank="0", master_addr=LWS_LEADER_ADDRESS))
    worker_args = k8s_args(vllm_emit.serve_args(dep, node_rank=LWS_WORKER_INDEX, master_addr=LWS_LEADER_ADDRESS,
                                                 headless=True))
    leader_labels = {**_labels(dep, "vllm"), "role": "leader"}
    worker_labels = {**_labels(dep, "vllm"), "role": "worker"}
    lws = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "labels": _labels(dep, "vllm")},
        "spec": {
            "replicas": dep.replicas,
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": layout.nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": {"labels": leader_labels},
                    "spec": _pod_spec(dep, _vllm_container(dep, leader_args, "leader"), HF_CACHE, "vllm"),
                },
                "workerTemplate": {
                    "metadata": {"labels": worker_labels},
                    "spec": _pod_spec(dep, _vllm_container(dep, worker_args, "worker"), HF_CACHE, "vllm"),
                },
            },
        },
    }
    selector = {"leaderworkerset.sigs.k8s.io/name": name, "role": "leader"}
    return [lws, _service(dep, "vllm", f"{name}-leader", selector, VLLM_PORT)]


def nim_manifests(dep: DeploymentPlan) -> list[dict[str, Any]]:
    """Deployment + Service running the NIM container (one node per replica)."""
    image = nim_emit.nim_image(dep)
    gpus = str(node_layout(dep).gpus_per_node)
    resource = _gpu_resource(dep)
    _, mounts = _volumes(dep, nim_emit.CONTAINER_CACHE)
    env: list[dict[str, Any]] = [
        {"name": "NIM_CACHE_PATH", "value": nim_emit.CONTAINER_CACHE},
        {"name": "NGC_API_KEY", "valueFrom": {"secretKeyRef": {"name": NGC_API_SECRET, "key": "NGC_API_KEY"}}},
    ]
    if image.model_free:
        env.append(_hf_token_env())
    env += [{"name": n, "value": k8s_escape(v)} for n, v in nim_env_for_k8s(dep)]
    container: dict[str, Any] = {
        "name": "nim",
        "image": image.ref,
        "env": env,
        "ports": [{"name": "http", "containerPort": NIM_PORT}],
        "resources": _resources(dep, resource, gpus),
        "volumeMounts": mounts,
        "startupProbe": _probe("/v1/health/ready", 10, _startup_failures(dep)),
        "readinessProbe": _probe("/v1/health/ready", 10, 3),
        "livenessProbe": _probe("/v1/health/live", 10, 3),
    }
    pod = _pod_spec(dep, container, nim_emit.CONTAINER_CACHE, "nim")
    return [_deployment(dep, "nim", pod), _service(dep, "nim", k8s_name(dep), _selector(dep), NIM_PORT)]


def nim_env_for_k8s(dep: DeploymentPlan) -> list[tuple[str, str]]:
    """The NIM variables of nim.env; a local model folder is mounted at its own path, so it is used as is."""
    out = []
    for name, value in nim_emit.env_vars(dep):
        if name == "NIM_MODEL_PATH" and is_local_path(dep.served_model):
            value = dep.served_model
        out.append((name, value))
    return out


def _header(dep: DeploymentPlan, engine: str) -> list[str]:
    layout = node_layout(dep)
    what = f"vLLM {VLLM_VERSION}" if engine == "vllm" else f"NVIDIA NIM ({nim_emit.nim_image(dep).ref})"
    kinds = "LeaderWorkerSet + Service" if layout.multi_node else "Deployment + Service"
    lines = [
        f"Generated by vlmplan for Kubernetes, {what}: {kinds}. Do not edit by hand: re-run `vlmplan emit`.",
        "",
        *plan_summary(dep),
        "",
        "Secrets are referenced, never written here. Create them from your environment first:",
    ]
    if engine == "vllm":
        lines.append(f"  kubectl create secret generic {HF_SECRET} --from-literal=HF_TOKEN=\"$HF_TOKEN\"   "
                     "(optional; gated models)")
    else:
        lines += [
            f"  kubectl create secret docker-registry {NGC_PULL_SECRET} --docker-server=nvcr.io "
            "--docker-username='$oauthtoken' --docker-password=\"$NGC_API_KEY\"",
            f"  kubectl create secret generic {NGC_API_SECRET} --from-literal=NGC_API_KEY=\"$NGC_API_KEY\"",
        ]
        if nim_emit.nim_image(dep).model_free:
            lines.append(f"  kubectl create secret generic {HF_SECRET} --from-literal=HF_TOKEN=\"$HF_TOKEN\"   "
                         "(optional; gated models)")
    lines.append("Then: kubectl apply -f k8s.yaml")
    if layout.multi_node:
        lines.append("Needs the LeaderWorkerSet controller (kubernetes-sigs/lws) installed in the cluster.")
    if gpu_scheduling(dep) is None:
        lines.append(f"No node label is known for GPU {dep.gpu}: add a nodeSelector for it by hand.")
    lines.append("The model cache is an emptyDir; replace it with a PersistentVolumeClaim to keep downloads.")
    return lines


def render(dep: DeploymentPlan, engine: str) -> str:
    docs = vllm_manifests(dep) if engine == "vllm" else nim_manifests(dep)
    return comments(_header(dep, engine)) + dump_yaml_all(docs)


def _nim_multi_node_install(dep: DeploymentPlan) -> str:
    slug = k8s_name(dep)
    lines = [
        "#!/usr/bin/env bash",
        comments([
            "Generated by vlmplan for Kubernetes, NVIDIA NIM multi-node: installs the nim-llm Helm chart 1.1.2 with",
            "values.yaml; the chart renders a LeaderWorkerSet (install the LWS controller first).",
            "",
            *plan_summary(dep),
            "",
            "Needs kubectl, helm, and NGC_API_KEY in the environment (read here, never written to disk).",
        ]).rstrip("\n"),
        "set -euo pipefail",
        "",
        ': "${NGC_API_KEY:?export NGC_API_KEY=<your NGC API key> first}"',
        'here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'NAMESPACE="${NAMESPACE:-default}"',
        f"kubectl -n \"$NAMESPACE\" create secret docker-registry {NGC_PULL_SECRET} --docker-server=nvcr.io "
        "--docker-username='$oauthtoken' --docker-password=\"$NGC_API_KEY\" --dry-run=client -o yaml "
        "| kubectl apply -f -",
        f"kubectl -n \"$NAMESPACE\" create secret generic {NGC_API_SECRET} "
        "--from-literal=NGC_API_KEY=\"$NGC_API_KEY\" --dry-run=client -o yaml | kubectl apply -f -",
        'chart="$here/nim-llm-1.1.2.tgz"',
        'if [ ! -f "$chart" ]; then',
        "  helm fetch https://helm.ngc.nvidia.com/nim/charts/nim-llm-1.1.2.tgz --username='$oauthtoken' "
        '--password="$NGC_API_KEY" -d "$here"',
        "fi",
        f'exec helm upgrade --install -n "$NAMESPACE" {slug} "$chart" -f "$here/values.yaml"',
    ]
    return "\n".join(lines) + "\n"


def write(dep: DeploymentPlan, folder: Path, engine: str) -> list[Path]:
    """Write the manifests of one deployment; ``engine`` is ``vllm`` or ``nim``."""
    check_text(dep.served_model, "model")
    if engine == "vllm":
        vllm_emit.check_supported(dep, "k8s-vllm")
        return [write_text(folder / "k8s.yaml", render(dep, "vllm"))]
    nim_emit.check_supported(dep, "k8s-nim")
    if node_layout(dep).multi_node:
        return [
            write_text(folder / "values.yaml", nim_emit.render_values(dep)),
            write_text(folder / "install.sh", _nim_multi_node_install(dep), executable=True),
        ]
    return [write_text(folder / "k8s.yaml", render(dep, "nim"))]
