"""Launch configs of an encoder-disaggregated plan (``plan.topology == "epd"``).

One unit per language-model (LM) replica, all on one node: the LM instance, ``encoders_per_replica`` encoder-only
instances (one GPU each) and vLLM's E+PD proxy, sharing one memory-backed folder. vLLM 0.33's disaggregated-encoder
example (``examples/disaggregated/disaggregated_encoder/``, the feature doc ``features/disagg_encoder.md``) runs:

* each encoder: ``vllm serve MODEL --mm-encoder-only --enforce-eager --no-enable-prefix-caching
  --max-num-batched-tokens 114688 --ec-transfer-config '{"ec_connector": "ECExampleConnector", "ec_role":
  "ec_producer", "ec_connector_extra_config": {"shared_storage_path": PATH}}'``;
* the LM: its ordinary ``vllm serve`` arguments plus the same config with ``"ec_role": "ec_consumer"``;
* the proxy: ``disagg_epd_proxy.py --encode-servers-urls E1,E2 --prefill-servers-urls disable
  --decode-servers-urls LM`` (from the v0.33.0 source tree, not the wheel): it sends each request's images to the
  encoders, waits, then forwards the request to the LM.

ECExampleConnector passes embeddings as safetensors files (``<path>/<mm_hash>/encoder_cache.safetensors``), so all
of a unit sits in one Kubernetes pod with an ``emptyDir`` of medium ``Memory`` at the path (tmpfs: what run27
measured). Targets: ``vllm`` (``encoder.sh``, ``lm.sh``, ``proxy.sh``) and ``k8s-vllm`` (one Deployment of units
and a Service on the proxy). NIM is refused: its documented configuration has no encoder-transfer setting.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from planner.core.errors import RequestError
from planner.emit import k8s, vllm
from planner.emit.common import comments, deployment_slug, dump_yaml_all, write_text
from planner.plan import DeploymentPlan, Plan

EC_PATH = "/ec_cache"
"""The units' shared folder: a tmpfs (``/dev/shm`` subfolder on a host, an in-memory ``emptyDir`` in a pod)."""
ENCODER_PORT = 8001
"""The first encoder's port; the next ones count up."""
LM_PORT = 8100
PROXY_PORT = 8000
ENCODER_BATCHED_TOKENS = 114688
"""The encoder instances' ``--max-num-batched-tokens`` in vLLM's example scripts: their step budget is all encoder
work (visual tokens), so a large one batches several images per step."""
PROXY_SOURCE = ("https://raw.githubusercontent.com/vllm-project/vllm/v0.33.0/examples/disaggregated/"
                "disaggregated_encoder/disagg_epd_proxy.py")
NIM_REFUSAL = "NIM has no encoder-disaggregation setting (no encoder-cache transfer option in its documented variables)"


def ec_config(role: str, path: str = EC_PATH) -> dict[str, Any]:
    """``--ec-transfer-config`` of one side (``ec_producer``: encoders, ``ec_consumer``: the LM)."""
    return {"ec_connector": "ECExampleConnector", "ec_role": role,
            "ec_connector_extra_config": {"shared_storage_path": path}}


def lm_dep(plan: Plan) -> DeploymentPlan:
    assert plan.epd is not None
    return plan.epd.lm.model_copy(update={"workload": f"{plan.epd.lm.workload}-epd"})


def encoder_dep(plan: Plan) -> DeploymentPlan:
    """The encoder instance as a deployment: the LM's model and multimodal settings on one GPU, no prefix caching
    (it holds no KV cache), a step budget for images; its other engine flags are the LM's (unused by an encoder)."""
    assert plan.epd is not None
    lm = plan.epd.lm
    return lm.model_copy(update={"workload": f"{lm.workload}-encoder", "tp": 1, "pp": 1, "gpus_per_replica": 1,
                                 "replicas": lm.replicas * plan.epd.encoders_per_replica,
                                 "enable_prefix_caching": False, "speculative": None, "api_server_count": 1,
                                 "max_num_batched_tokens": max(lm.max_num_batched_tokens, ENCODER_BATCHED_TOKENS)})


def encoder_args(plan: Plan) -> list[str]:
    dep = encoder_dep(plan)
    args = [str(a) for a in vllm.serve_args(dep)]
    args += ["--mm-encoder-only", "--enforce-eager"]
    args += vllm.option_tokens("ec-transfer-config", ec_config("ec_producer"))
    vllm.validate(dep, args)
    return args


def lm_args(plan: Plan) -> list[str]:
    dep = lm_dep(plan)
    args = [str(a) for a in vllm.serve_args(dep)]
    args += vllm.option_tokens("ec-transfer-config", ec_config("ec_consumer"))
    vllm.validate(dep, args)
    return args


def check(plan: Plan, target: str) -> None:
    if target in ("nim", "k8s-nim"):
        raise RequestError(f"epd plan: {NIM_REFUSAL}")
    if plan.epd is None:
        raise RequestError("the plan has no epd deployment")
    lm = lm_dep(plan)
    vllm.check_supported(lm, target)
    if lm.pp != 1 or lm.tp + plan.epd.encoders_per_replica > lm.gpus_per_node:
        raise RequestError("epd launch configs cover units (LM replica + its encoders) that fit one node")
    encoder_args(plan)
    lm_args(plan)


def _with_port(args: list[str], port: int, var: str) -> str:
    tokens = " \\\n  ".join(shlex.quote(a) for a in args)
    return tokens.replace(f"--port \\\n  {vllm.VLLM_PORT}", f'--port \\\n  "${{{var}:-{port}}}"')


def _encoder_sh(plan: Plan) -> str:
    assert plan.epd is not None
    epd = plan.epd
    head = [
        f"Generated by vlmplan for vLLM {vllm.VLLM_VERSION} (encoder.sh, epd topology). Re-run `vlmplan emit`.",
        f"Encoder-only instance: {epd.encoders_per_replica} per LM replica, one GPU each ({epd.encoder_gpu}), on the "
        "LM's node; run once per encoder with its own CUDA_VISIBLE_DEVICES and PORT (8001, 8002, ...).",
        f"Embeddings go to {EC_PATH} (ECExampleConnector files): make it a tmpfs shared with the LM instance, e.g. "
        f"mkdir -p /dev/shm/ec_cache && ln -s /dev/shm/ec_cache {EC_PATH}.",
        f"Planned: encode {epd.encode_ms:.1f} ms + save/load {epd.transfer_ms:.1f} ms per request with images; "
        f"encoders {epd.encoder_load:.0%} busy.",
    ]
    if not epd.stable:
        head.append("vLLM's docs call one encoder per LM instance (1E1PD) the stable shape; this plan has more.")
    return ("#!/usr/bin/env bash\n" + comments(head) + "set -euo pipefail\n"
            f"exec vllm serve \\\n  {_with_port(encoder_args(plan), ENCODER_PORT, 'PORT')} \\\n  \"$@\"\n")


def _lm_sh(plan: Plan) -> str:
    dep = lm_dep(plan)
    head = [
        f"Generated by vlmplan for vLLM {vllm.VLLM_VERSION} (lm.sh, epd topology). Re-run `vlmplan emit`.",
        f"Language-model instance: {dep.replicas} replica(s), each TP={dep.tp} on {dep.gpu} ({dep.precision}); it "
        f"reads each image's embeddings from {EC_PATH} (written by its node's encoders) instead of encoding.",
        dep.launch_limits(),
    ]
    return ("#!/usr/bin/env bash\n" + comments(head) + "set -euo pipefail\n"
            f"exec vllm serve \\\n  {_with_port(lm_args(plan), LM_PORT, 'PORT')} \\\n  \"$@\"\n")


def _proxy_sh(plan: Plan) -> str:
    assert plan.epd is not None
    n = plan.epd.encoders_per_replica
    encoders = ",".join(f"http://localhost:{ENCODER_PORT + i}" for i in range(n))
    head = [
        "E+PD proxy of one unit: vLLM's disagg_epd_proxy.py (from the v0.33.0 source tree, not the wheel).",
        f"Fetch it first: curl -LO {PROXY_SOURCE}  (pip install fastapi uvicorn httpx aiohttp as it needs).",
        "Its flags are that script's, not checked by vlmplan's vLLM parser check.",
        f"ENCODERS: this unit's {n} encoder URL(s); LM: its LM instance. Clients call the proxy's port.",
    ]
    return ("#!/usr/bin/env bash\n" + comments(head) + "set -euo pipefail\n"
            f'ENCODERS="${{ENCODERS:-{encoders}}}"\n'
            f'LM="${{LM:-http://localhost:{LM_PORT}}}"\n'
            f"exec python3 disagg_epd_proxy.py --host 0.0.0.0 --port {PROXY_PORT} \\\n"
            '  --encode-servers-urls "${ENCODERS}" --prefill-servers-urls disable \\\n'
            '  --decode-servers-urls "${LM}" "$@"\n')


def _at_port(args: list[str], port: int) -> list[str]:
    i = args.index("--port")
    return [*args[: i + 1], str(port), *args[i + 2:]]


def manifests(plan: Plan) -> list[dict[str, Any]]:
    """One Deployment of units (a pod: the LM, its encoders and the proxy, sharing an in-memory folder) and a
    Service on the proxy."""
    assert plan.epd is not None
    lm, enc = lm_dep(plan), encoder_dep(plan)
    n = plan.epd.encoders_per_replica
    lm_container = k8s._vllm_container(lm, k8s.k8s_args(_at_port(lm_args(plan), LM_PORT)), "server")  # type: ignore
    lm_container["name"] = "lm"
    lm_container["ports"] = [{"name": "lm", "containerPort": LM_PORT}]
    containers = [lm_container]
    for i in range(n):
        c = k8s._vllm_container(enc, k8s.k8s_args(_at_port(encoder_args(plan), ENCODER_PORT + i)), "server")  # type: ignore
        c["name"] = f"encoder-{i}"
        c["ports"] = [{"name": f"enc-{i}", "containerPort": ENCODER_PORT + i}]
        c.pop("resources", None)
        c["resources"] = {"limits": {k8s._gpu_resource(enc): "1"}, "requests": {k8s._gpu_resource(enc): "1"}}
        containers.append(c)
    for c in containers:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in c:
                c[probe]["httpGet"]["port"] = c["ports"][0]["containerPort"]
        c["volumeMounts"] = [*c["volumeMounts"], {"name": "ec-cache", "mountPath": EC_PATH}]
    encoders = ",".join(f"http://localhost:{ENCODER_PORT + i}" for i in range(n))
    cmd = ("pip install --no-cache-dir fastapi uvicorn httpx aiohttp && exec python3 /proxy/disagg_epd_proxy.py "
           f"--host 0.0.0.0 --port {PROXY_PORT} --encode-servers-urls {encoders} --prefill-servers-urls disable "
           f"--decode-servers-urls http://localhost:{LM_PORT}")
    containers.append({"name": "proxy", "image": "python:3.12-slim", "command": ["sh", "-c", cmd],
                       "ports": [{"name": "http", "containerPort": PROXY_PORT}],
                       "volumeMounts": [{"name": "proxy", "mountPath": "/proxy"}]})
    pod = k8s._pod_spec(lm, lm_container, k8s.HF_CACHE, "vllm")
    pod["containers"] = containers
    name = k8s.k8s_name(lm)
    pod["volumes"] = [*pod["volumes"], {"name": "ec-cache", "emptyDir": {"medium": "Memory"}},
                      {"name": "proxy", "configMap": {"name": f"{name[:50]}-proxy-script"}}]
    deployment = k8s._deployment(lm, "vllm", pod)
    service = k8s._service(lm, "vllm", name, k8s._selector(lm), PROXY_PORT)
    return [deployment, service]


def write(plan: Plan, out_dir: Path, target: str) -> list[Path]:
    check(plan, target)
    assert plan.epd is not None
    folder = Path(out_dir) / f"{deployment_slug(plan.epd.lm)}-epd" / target
    if target == "vllm":
        return [write_text(folder / "encoder.sh", _encoder_sh(plan), executable=True),
                write_text(folder / "lm.sh", _lm_sh(plan), executable=True),
                write_text(folder / "proxy.sh", _proxy_sh(plan), executable=True)]
    name = k8s.k8s_name(lm_dep(plan))
    head = comments([
        f"Generated by vlmplan for vLLM {vllm.VLLM_VERSION} (k8s.yaml, epd topology).",
        f"Create the proxy's script first: kubectl create configmap {name[:50]}-proxy-script "
        f"--from-file=disagg_epd_proxy.py  (from {PROXY_SOURCE}).",
        f"Each pod is one unit: the LM ({plan.epd.lm.tp} GPU(s)), {plan.epd.encoders_per_replica} encoder(s) (1 GPU "
        f"each) and the proxy, passing embeddings through an in-memory emptyDir at {EC_PATH}.",
    ])
    return [write_text(folder / "k8s.yaml", head + dump_yaml_all(manifests(plan)))]


def emit_each(plan: Plan, out_dir: Path, targets: list[str], dry_run_first: bool = False
              ) -> tuple[list[Path], dict[str, str]]:
    """Every epd target that can be written, and why the others cannot (``planner.emit.emit_each``'s contract)."""
    from planner.emit.disagg import emit_checked

    return emit_checked(check, write, plan, out_dir, targets, dry_run_first)
