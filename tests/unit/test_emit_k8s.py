"""Kubernetes targets: manifests validated offline with kubernetes-validate, LeaderWorkerSet structurally."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from emit_support import (
    DNS_1035,
    bash_syntax_ok,
    check_lws,
    check_manifests,
    containers,
    deployment,
    expand,
    load_yaml_docs,
    single_gpu_plan,
    tp4_plan,
    two_node_plan,
    validate_vllm_argv,
)

from planner.core.errors import RequestError
from planner.emit import common, k8s, vllm

kubernetes_validate = pytest.importorskip("kubernetes_validate")
@pytest.mark.parametrize("plan", [single_gpu_plan, tp4_plan])
@pytest.mark.parametrize("engine", ["vllm", "nim"])
def test_single_node_manifests_validate(plan, engine: str):
    dep = plan().deployments[0]
    docs = yaml.safe_load_all(k8s.render(dep, engine))
    docs = [d for d in docs if d]
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    check_manifests(docs)
    deploy, service = docs
    assert deploy["spec"]["replicas"] == dep.replicas
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    gpus = {"nvidia.com/gpu": str(dep.tp * dep.pp)}
    if dep.host is None:
        assert container["resources"]["limits"] == gpus
    else:  # single-gpu: 7.77 vCPUs -> 8 whole CPUs; 32 GiB host RAM + the 16 GiB memory-backed /dev/shm
        assert dep.host.vcpus == 7.77 and dep.host.memory_gib == 32
        assert container["resources"]["limits"] == {**gpus, "cpu": "8", "memory": "48Gi"}
    assert container["resources"]["requests"] == container["resources"]["limits"]  # Guaranteed QoS
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0] == {"key": "nvidia.com/gpu.product", "operator": "In",
                                           "values": ["NVIDIA-H100-80GB-HBM3"]}
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    ready = "/health" if engine == "vllm" else "/v1/health/ready"
    live = "/health" if engine == "vllm" else "/v1/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == ready
    assert container["livenessProbe"]["httpGet"]["path"] == live
    # startup: 180 probes x 10 s = 30 minutes to download and load the weights
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 1800
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert set(deploy["spec"]["selector"]["matchLabels"].items()) <= set(pod_labels(deploy).items())


def pod_labels(deploy: dict[str, Any]) -> dict[str, str]:
    return deploy["spec"]["template"]["metadata"]["labels"]


def test_vllm_args_after_kubelet_expansion_are_the_plan():
    dep = single_gpu_plan().deployments[0]
    (deploy, _) = [d for d in yaml.safe_load_all(k8s.render(dep, "vllm")) if d]
    (container,) = containers(deploy)
    argv = [expand(a, {}) for a in container["command"] + container["args"]]
    assert argv == ["vllm", "serve", *[str(a) for a in vllm.serve_args(dep)]]
    validate_vllm_argv(argv)


def test_two_node_lws():
    dep = two_node_plan().deployments[0]
    docs = [d for d in yaml.safe_load_all(k8s.render(dep, "vllm")) if d]
    assert [d["kind"] for d in docs] == ["LeaderWorkerSet", "Service"]
    check_manifests(docs)
    lws, service = docs
    # TP 8 x PP 2 = 16 GPUs on 8-GPU nodes -> groups of 16 / 8 = 2 pods, one group per replica.
    assert lws["spec"]["replicas"] == 1 and lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    leader, worker = containers(lws)
    # Every pod of the group asks for the replica's CPUs (22) and host RAM (26 GiB + the 32 GiB /dev/shm of an
    # 8-GPU node): the workers' share is not modelled apart (over-asked, never under).
    assert leader["resources"]["limits"] == worker["resources"]["limits"] == {"nvidia.com/gpu": "8", "cpu": "22",
                                                                              "memory": "58Gi"}
    env = {"LWS_LEADER_ADDRESS": "lws-0.lws.default", "LWS_WORKER_INDEX": "1"}
    lead = validate_vllm_argv([expand(a, env) for a in leader["command"] + leader["args"]])
    work = validate_vllm_argv([expand(a, env) for a in worker["command"] + worker["args"]])
    assert (lead["node-rank"], work["node-rank"]) == (0, 1)
    assert lead["master-addr"] == work["master-addr"] == "lws-0.lws.default"
    assert "headless" not in lead and work["headless"] is True
    assert "readinessProbe" in leader and "readinessProbe" not in worker  # headless workers serve no HTTP
    assert service["metadata"]["name"] != lws["metadata"]["name"]  # LWS makes its own headless Service by name
    assert service["spec"]["selector"] == {"leaderworkerset.sigs.k8s.io/name": lws["metadata"]["name"],
                                           "role": "leader"}
    assert lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["metadata"]["labels"]["role"] == "leader"


def test_lws_check_catches_a_bad_field():
    docs = [d for d in yaml.safe_load_all(k8s.render(two_node_plan().deployments[0], "vllm")) if d]
    docs[0]["spec"]["leaderWorkerTemplate"]["size"] = "2"
    with pytest.raises(AssertionError):
        check_lws(docs[0])
    docs[0]["spec"]["leaderWorkerTemplate"]["size"] = 2
    docs[0]["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["resources"] = "8 GPUs"
    with pytest.raises(kubernetes_validate.ValidationError):
        check_lws(docs[0])


def test_k8s_nim_multi_node_goes_through_the_chart(tmp_path: Path):
    files = k8s.write(two_node_plan().deployments[0], tmp_path, "nim")
    assert sorted(p.name for p in files) == ["install.sh", "values.yaml"]
    bash_syntax_ok(tmp_path / "install.sh")
    text = (tmp_path / "install.sh").read_text()
    assert "helm upgrade --install" in text and "nvapi" not in text


def test_dollar_in_model_id_survives_kubelet_expansion():
    model = "/models/$(HF_TOKEN)/$$x/$HOME"
    dep = deployment(model=model, served_model=model)
    for engine in ("vllm", "nim"):
        (deploy, _) = [d for d in yaml.safe_load_all(k8s.render(dep, engine)) if d]
        (container,) = containers(deploy)
        env = {"HF_TOKEN": "hf_SECRET"}
        if engine == "vllm":
            assert expand(container["args"][0], env) == model
        values = {e["name"]: expand(e["value"], env) for e in container["env"] if "value" in e}
        if engine == "nim":
            assert values["NIM_SERVED_MODEL_NAME"] == model and values["NIM_MODEL_PATH"] == model
        volume = next(v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == "model")
        assert volume["hostPath"]["path"] == model  # hostPath is not expanded by the kubelet


def test_secrets_only_by_reference():
    for plan in (single_gpu_plan, tp4_plan, two_node_plan):
        for engine in ("vllm", "nim"):
            dep = plan().deployments[0]
            if engine == "nim" and common.node_layout(dep).multi_node:
                continue
            for doc in [d for d in yaml.safe_load_all(k8s.render(dep, engine)) if d]:
                for container in containers(doc):
                    for env in container["env"]:
                        if env["name"] in ("HF_TOKEN", "NGC_API_KEY"):
                            assert set(env) == {"name", "valueFrom"} and "secretKeyRef" in env["valueFrom"]


@pytest.mark.parametrize("workload, model", [
    ("chat", "Qwen/Qwen2.5-VL-7B-Instruct"),
    ("9-Lives!!", "/models/My Model v2/"),
    ("x" * 80, "org/" + "y" * 80),
    ("___", "___"),
])
def test_names_are_dns_1035_labels(workload: str, model: str):
    dep = deployment(workload=workload, model=model, served_model=model)
    name = common.k8s_name(dep)
    assert DNS_1035.match(name) and len(name) <= common.K8S_NAME_MAX
    assert DNS_1035.match(common.deployment_slug(dep))


def test_long_names_keep_distinct_hashes():
    a = deployment(workload="w" * 60 + "a")
    b = deployment(workload="w" * 60 + "b")
    assert common.k8s_name(a) != common.k8s_name(b)


# NVML device names as printed by `nvidia-smi --query-gpu=name` (GFD label = name with spaces -> '-').
NVML_NAMES = {
    "H100-SXM-80GB": "NVIDIA H100 80GB HBM3",
    "H100-PCIE-80GB": "NVIDIA H100 PCIe",
    "H100-NVL-94GB": "NVIDIA H100 NVL",
    "H200-141GB": "NVIDIA H200",
    "B200-180GB": "NVIDIA B200",
    "A100-SXM-80GB": "NVIDIA A100-SXM4-80GB",
    "A100-SXM-40GB": "NVIDIA A100-SXM4-40GB",
    "A10G-24GB": "NVIDIA A10G",
    "L4-24GB": "NVIDIA L4",
    "L40S-48GB": "NVIDIA L40S",
    "RTX-4090-24GB": "NVIDIA GeForce RTX 4090",
    "RTX-A6000-48GB": "NVIDIA RTX A6000",
}


@pytest.mark.parametrize("gpu, nvml", sorted(NVML_NAMES.items()))
def test_gpu_product_labels(gpu: str, nvml: str):
    sched = common.GPU_SCHEDULING[gpu]
    assert sched.label_key == "nvidia.com/gpu.product" and sched.resource == "nvidia.com/gpu"
    assert nvml.replace(" ", "-") in sched.label_values


def test_every_catalog_gpu_has_a_label():
    paths = sorted(Path(__file__).resolve().parents[2].joinpath("catalogs", "gpus").glob("*.yaml"))
    names = {yaml.safe_load(path.read_text())["name"] for path in paths}
    assert len(names) >= 13 and names <= set(common.GPU_SCHEDULING)


def test_gpu_found_by_alias_and_amd_uses_rocm():
    dep = deployment(gpu="some-other-name", gpu_aliases=["L40S"])
    assert common.gpu_scheduling(dep).label_values == ("NVIDIA-L40S",)
    amd = deployment(gpu="MI300X-192GB", gpu_aliases=["MI300X"])
    (deploy, _) = [d for d in yaml.safe_load_all(k8s.render(amd, "vllm")) if d]
    check_manifests([deploy])
    (container,) = containers(deploy)
    assert container["image"] == "vllm/vllm-openai-rocm:v0.33.0"
    assert container["resources"]["limits"] == {"amd.com/gpu": "1"}
    with pytest.raises(RequestError, match="NVIDIA"):
        k8s.write(amd, Path("/nonexistent"), "nim")


def test_unknown_gpu_gets_no_affinity_and_a_note():
    dep = deployment(gpu="Mystery-GPU", gpu_aliases=[])
    text = k8s.render(dep, "vllm")
    (deploy, _) = [d for d in yaml.safe_load_all(text) if d]
    assert "affinity" not in deploy["spec"]["template"]["spec"]
    assert "No node label is known for GPU Mystery-GPU" in text


def test_loaded_docs_helper_reads_multi_document_files(tmp_path: Path):
    k8s.write(single_gpu_plan().deployments[0], tmp_path, "vllm")
    assert [d["kind"] for d in load_yaml_docs(tmp_path / "k8s.yaml")] == ["Deployment", "Service"]
