"""Hand-built plans for the emitter tests (tests/unit/test_emit_*.py) and the checks they share.

The plans are written out field by field, not produced by the solver, so the emitter tests do not move when the
solver's numbers do. The predicted figures are placeholders: the emitters only copy them into header comments.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from planner.emit import vllm_flags
from planner.plan import DeploymentPlan, HostResources, Plan

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "emit"


def predicted(weights_gib: float) -> dict[str, Any]:
    pct = {"mean": 100.0, "p50": 90.0, "p90": 150.0, "p95": 180.0, "p99": 250.0}
    tpot = {"mean": 20.0, "p50": 19.0, "p90": 24.0, "p95": 26.0, "p99": 30.0}
    return {
        "ttft_ms": pct, "tpot_ms": tpot, "e2e_ms": pct, "requests_per_s": 2.5, "output_tokens_per_s": 500.0,
        "memory": {"weights_gib": weights_gib, "kv_cache_gib": 40.0, "activations_gib": 2.0, "overhead_gib": 1.5,
                   "total_gib": 70.0, "kv_capacity_tokens": 500000},
    }


def deployment(**overrides: Any) -> DeploymentPlan:
    """A single-GPU Qwen2.5-VL-7B plan on one H100; ``overrides`` replace fields."""
    base: dict[str, Any] = {
        "workload": "chat", "model": "Qwen/Qwen2.5-VL-7B-Instruct", "served_model": "Qwen/Qwen2.5-VL-7B-Instruct",
        "hf_architecture": "Qwen2_5_VLForConditionalGeneration", "gpu": "H100-SXM-80GB",
        "gpu_aliases": ["H100", "H100-SXM"], "gpu_memory_gib": 79.65, "gpus_per_replica": 1, "gpus_per_node": 8,
        "tp": 1, "pp": 1, "replicas": 2, "precision": "bf16", "kv_cache_dtype": "auto", "max_num_seqs": 64,
        "max_model_len": 16384, "max_num_batched_tokens": 8192, "gpu_memory_utilization": 0.92,
        "limit_mm_per_prompt": {"image": 2}, "mm_processor_kwargs": {"max_pixels": 1003520},
        "cost_per_hour": 9.52, "price_usd_per_gpu_hour": 4.76, "predicted": predicted(15.6),
    }
    base.update(overrides)
    return DeploymentPlan.model_validate(base)


SINGLE_GPU_HOST = HostResources(vcpus=7.77, vcpus_per_api_server=2.39, vcpus_offered=24, memory_gib=32,
                                mm_processor_cache_gib=4)
"""Two API servers for document pages on an H100 (what ``solve`` plans: perf.hostcpu)."""


def single_gpu_plan() -> Plan:
    """Carries its workload, so emit also writes verify/verify.sh (golden too); two API servers per replica, with
    the replica's CPUs and host memory (Kubernetes requests them)."""
    traffic = {"arrival": "poisson", "rate_per_s": 5.0, "prompt_tokens": 256, "prompt_tokens_range": [256, 256],
               "output_tokens": 256, "output_tokens_range": [256, 256], "images_per_request": 1.0,
               "images_per_request_range": [1, 1], "image_sizes": [{"width": 1280, "height": 960, "weight": 1.0}]}
    return Plan(status="optimal", cost_per_hour=9.52,
                deployments=[deployment(slos=["ttft_p95<=500ms"], traffic=traffic,
                                           api_server_count=2, host=SINGLE_GPU_HOST)])


def tp4_plan() -> Plan:
    """Qwen2.5-VL-72B, fp8 weights computed online from the bf16 checkpoint, fp8 KV, TP=4 on H100, no chunked
    prefill (so max_num_batched_tokens >= max_model_len) and the ViT replicated (mm_encoder_tp_mode=data)."""
    dep = deployment(
        workload="docs", model="Qwen/Qwen2.5-VL-72B-Instruct", served_model="Qwen/Qwen2.5-VL-72B-Instruct",
        gpus_per_replica=4, tp=4, replicas=1, precision="fp8", quantization="fp8", kv_cache_dtype="fp8",
        max_num_seqs=128, max_model_len=32768, max_num_batched_tokens=32768, enable_chunked_prefill=False,
        enable_prefix_caching=False, mm_encoder_tp_mode="data", limit_mm_per_prompt={"image": 4, "video": 0},
        cost_per_hour=19.04, predicted=predicted(18.2),
    )
    return Plan(status="optimal", cost_per_hour=19.04, deployments=[dep])


def two_node_plan() -> Plan:
    """Qwen3-VL-235B-A22B in bf16 over two 8-GPU H100 nodes per replica (TP=8 within a node, PP=2 across)."""
    dep = deployment(
        workload="agents", model="Qwen/Qwen3-VL-235B-A22B-Instruct",
        served_model="Qwen/Qwen3-VL-235B-A22B-Instruct", hf_architecture="Qwen3VLMoeForConditionalGeneration",
        gpus_per_replica=16, tp=8, pp=2, replicas=1, max_num_seqs=256, max_model_len=32768,
        max_num_batched_tokens=16384, mm_processor_kwargs={}, cost_per_hour=76.16, predicted=predicted(27.5),
        host=HostResources(vcpus=22.0, vcpus_per_api_server=1.0, vcpus_offered=384, memory_gib=26,
                           mm_processor_cache_gib=4),
    )
    return Plan(status="optimal", cost_per_hour=76.16, deployments=[dep])


GOLDEN_PLANS = {"single-gpu": single_gpu_plan, "tp4": tp4_plan, "two-node": two_node_plan}


# --- checks shared by the tests ----------------------------------------------------------------------------------

def exec_command(script: str) -> str:
    """The text of the script's ``exec ...`` command, continuation lines joined."""
    start = script.index("\nexec ") + 1
    return script[start:].replace("\\\n", " ")


def script_argv(script: str, env: dict[str, str]) -> list[str]:
    """argv of ``serve.sh``'s command via shlex (no shell): variables replaced from ``env``, ``"$@"`` dropped."""
    tokens = shlex.split(exec_command(script))
    assert tokens[0] == "exec"
    out: list[str] = []
    for token in tokens[1:]:
        if token == "$@":
            continue
        if token == "${role[@]}":
            out += ["--headless"] if env.get("NODE_RANK", "0") != "0" else []
            continue
        out.append(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], token))
    return out


def run_with_fake(script_path: Path, tool: str, env: dict[str, str], tmp: Path) -> list[str]:
    """Run a script under bash with ``tool`` (vllm, docker) replaced by a stub that records its argv as JSON."""
    bindir = tmp / "fakebin"
    bindir.mkdir(exist_ok=True)
    out = tmp / f"{tool}-argv.json"
    stub = bindir / tool
    stub.write_text(f"#!/usr/bin/env python3\nimport json, sys\njson.dump(sys.argv[1:], open({str(out)!r}, 'w'))\n")
    stub.chmod(0o755)
    full_env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp), **env}
    subprocess.run(["bash", str(script_path)], env=full_env, check=True, capture_output=True, text=True)
    return [tool, *json.loads(out.read_text())]


def bash_syntax_ok(path: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def validate_vllm_argv(argv: list[str]) -> dict[str, Any]:
    return vllm_flags.parse_serve_argv(argv)[1]


def load_yaml_file(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# --- env files and Kubernetes -----------------------------------------------------------------------------------

def parse_env_file(text: str) -> dict[str, str]:
    """docker --env-file: '#' lines and blank lines skipped, NAME=value taken literally (no quote removal)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"not NAME=value: {line!r}"
        assert name not in out, f"{name} twice"
        out[name] = value
    return out


try:
    import kubernetes_validate  # noqa: F401  (test-only dependency)

    HAVE_K8S_VALIDATE = True
except ImportError:  # pragma: no cover
    HAVE_K8S_VALIDATE = False

K8S_VERSIONS = ("1.30.0", "1.37.0")
"""An older supported release and the newest schema bundled with kubernetes-validate 1.37."""

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def k8s_validate(doc: dict[str, Any]) -> None:
    """Validate against the Kubernetes OpenAPI schemas bundled with kubernetes-validate (offline, strict)."""
    import kubernetes_validate

    if not HAVE_K8S_VALIDATE:  # pragma: no cover
        pytest.skip("kubernetes-validate is not installed")
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of command/args/env values, ported from
    kubernetes third_party/forked/golang/expansion/expand.go (``Expand`` / ``tryReadVariableName``):
    ``$$`` -> ``$``; ``$(NAME)`` -> value if NAME is defined, else left as is; anything else copied."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env.get(name, f"$({name})"))
                    i = end + 1
                    continue
                out.append("$(")
                i += 2
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


LWS_KEYS = {"replicas", "leaderWorkerTemplate", "rolloutStrategy", "startupPolicy", "networkConfig"}
LWT_KEYS = {"leaderTemplate", "workerTemplate", "size", "restartPolicy", "subGroupPolicy", "volumeClaimTemplates",
            "persistentVolumeClaimRetentionPolicy"}
"""Fields of LeaderWorkerSetSpec / LeaderWorkerTemplate (kubernetes-sigs/lws api/leaderworkerset/v1
leaderworkerset_types.go)."""


def check_lws(doc: dict[str, Any]) -> None:
    """LeaderWorkerSet: top-level fields and enums from the Go types; the pod templates with the core v1 schema."""
    assert doc["apiVersion"] == "leaderworkerset.x-k8s.io/v1" and doc["kind"] == "LeaderWorkerSet"
    assert DNS_1035.match(doc["metadata"]["name"])
    spec = doc["spec"]
    assert set(spec) <= LWS_KEYS and isinstance(spec["replicas"], int) and spec["replicas"] >= 1
    assert spec.get("startupPolicy", "LeaderCreated") in ("LeaderCreated", "LeaderReady")
    lwt = spec["leaderWorkerTemplate"]
    assert set(lwt) <= LWT_KEYS and isinstance(lwt["size"], int) and lwt["size"] >= 1
    assert lwt["restartPolicy"] in ("Default", "RecreateGroupOnPodRestart", "RecreateGroupAfterStart", "None")
    for key in ("leaderTemplate", "workerTemplate"):
        k8s_validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": lwt[key]})


def check_manifests(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] == "LeaderWorkerSet":
            check_lws(doc)
        else:
            k8s_validate(doc)
        assert DNS_1035.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "Deployment":
        return doc["spec"]["template"]["spec"]["containers"]
    if doc["kind"] == "LeaderWorkerSet":
        lwt = doc["spec"]["leaderWorkerTemplate"]
        return lwt["leaderTemplate"]["spec"]["containers"] + lwt["workerTemplate"]["spec"]["containers"]
    return []
