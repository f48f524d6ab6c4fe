"""NVIDIA NIM target: ``run.sh`` (``docker run``), ``nim.env`` (``--env-file``) and ``values.yaml`` (nim-llm chart).

Sources (see /work/shared/reference/vlm-facts.md section 3 for the excerpts):

* NIM for VLMs "Configuring a NIM" page, NIM for LLMs configuration pages 1.10-1.12 and the 2.x environment
  variable and "Advanced Configuration" pages (docs.nvidia.com), read as stored copies;
* ``NVIDIA/nim-deploy`` ``helm/nim-llm`` chart 1.1.2 (values.yaml, templates/deployment.yaml,
  templates/multi_node_deployment.yaml).

Decisions:

* Only variables in :data:`NIM_VARIABLES` are written, and each carries its status: ``official`` (in an NVIDIA
  documentation table or page) or ``usage`` (set in NVIDIA's own blueprints and nim-deploy examples; the official
  table row could not be read). A NIM ignores a variable it does not know, so a ``usage`` variable cannot break
  the start; the values that matter most are also passed in ``NIM_PASSTHROUGH_ARGS`` (official in NIM 2.x, where
  it outranks the ``NIM_*`` variables), written as vLLM 0.33 flags and checked by :mod:`planner.emit.vllm_flags`.
* ``NIM_MODEL_PROFILE`` is set only when the profile name is certain: the model-free NIM generates the generic
  profiles ``vllm-<precision>-tp<N>-pp1`` at start-up (NIM LLM "Model Profiles and Selection"), so a bf16 plan with
  PP=1 and TP in 1/2/4/8 gets ``vllm-bf16-tp<N>-pp1``. Otherwise the header says how to list the profiles.
* The NGC API key is read from the environment by ``docker run -e NGC_API_KEY`` and from a Kubernetes Secret by
  the chart; it is never written to disk.
* NIM runs on NVIDIA GPUs only: an AMD plan is refused with a one-line error.
* A plan with speculative decoding is refused: no NIM variable names a draft checkpoint, and whether NIM passes
  ``--speculative-config`` through ``NIM_PASSTHROUGH_ARGS`` and fetches the draft was not checked.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.core.errors import RequestError
from planner.emit import vllm as vllm_emit
from planner.emit import vllm_flags
from planner.emit.common import (
    HF_SECRET,
    NGC_API_SECRET,
    NGC_PULL_SECRET,
    NIM_PORT,
    cache_size_gib,
    check_text,
    comment,
    comments,
    deployment_slug,
    dump_yaml,
    gpu_scheduling,
    gpu_vendor,
    is_local_path,
    node_layout,
    plan_summary,
    write_text,
)
from planner.plan import DeploymentPlan


@dataclass(frozen=True)
class NimVariable:
    status: str
    """``official``: in an NVIDIA NIM documentation page; ``usage``: set in NVIDIA's own repos only."""
    source: str
    meaning: str


_VLM_CONFIG = "NIM for VLMs 'Configuring a NIM' (docs.nvidia.com/nim/vision-language-models/latest/configuration.html)"
_LLM2_ENV = "NIM LLM 2.x environment variables / Advanced Configuration (docs.nvidia.com/nim/large-language-models)"
_USAGE = "NVIDIA blueprints and nim-deploy examples (vlm-facts.md 3.1); official table row not read"

NIM_VARIABLES: dict[str, NimVariable] = {
    "NGC_API_KEY": NimVariable("official", _VLM_CONFIG, "NGC API key (required); never written by vlmplan"),
    "NIM_CACHE_PATH": NimVariable("official", _VLM_CONFIG, "model cache in the container (default /opt/nim/.cache)"),
    "NIM_DISABLE_LOG_REQUESTS": NimVariable("official", _VLM_CONFIG, "0 logs request details"),
    "NIM_JSONL_LOGGING": NimVariable("official", _VLM_CONFIG, "1 for JSON-lines logs"),
    "NIM_LOG_LEVEL": NimVariable("official", _VLM_CONFIG, "DEFAULT, TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    "NIM_MODEL_PROFILE": NimVariable("official", _LLM2_ENV, "profile id or readable name (default: auto-selected)"),
    "NIM_MODEL_PATH": NimVariable("official", _LLM2_ENV, "model for the model-free NIM, e.g. hf://org/name"),
    "NIM_SERVED_MODEL_NAME": NimVariable(
        "official", "NIM for VLMs quickstart ('Find the Model Name')", "model name in the OpenAI API"),
    "NIM_SERVER_PORT": NimVariable("official", _LLM2_ENV, "API port in the container (default 8000)"),
    "NIM_PASSTHROUGH_ARGS": NimVariable("official", _LLM2_ENV, "vLLM CLI arguments (2.x; priority over NIM_*)"),
    "NIM_TENSOR_PARALLEL_SIZE": NimVariable(
        "official", "NIM for VLMs 1.2.0 / NIM for LLMs configuration ('Shared memory flag' note)", "tensor parallel"),
    "NIM_ENABLE_KV_CACHE_REUSE": NimVariable(
        "official", "NIM for LLMs 'KV Cache Reuse' page", "1 turns on prefix (KV cache) reuse"),
    "NIM_NUM_COMPUTE_NODES": NimVariable(
        "official", "nim-llm chart 1.1.2 templates/multi_node_deployment.yaml", "nodes per multi-node replica"),
    "HF_TOKEN": NimVariable("official", _LLM2_ENV, "Hugging Face token for hf:// models"),
    "NIM_PIPELINE_PARALLEL_SIZE": NimVariable("usage", _USAGE, "pipeline parallel"),
    "NIM_MAX_MODEL_LEN": NimVariable("usage", _USAGE, "context length (prompt + output)"),
    "NIM_MAX_NUM_SEQS": NimVariable("usage", _USAGE, "concurrent sequences per replica"),
    "NIM_MAX_NUM_BATCHED_TOKENS": NimVariable("usage", _USAGE, "tokens per scheduler step"),
    "NIM_GPU_MEM_FRACTION": NimVariable("usage", _USAGE, "GPU memory fraction for vLLM profiles"),
    "NIM_KVCACHE_PERCENT": NimVariable("usage", _USAGE, "KV share of GPU memory (TRT-LLM profiles)"),
    "NIM_LOW_MEMORY_MODE": NimVariable("usage", _USAGE, "1 to fit tight GPU memory"),
    "NIM_RELAX_MEM_CONSTRAINTS": NimVariable("usage", _USAGE, "1 to skip the memory pre-check"),
}
"""The NIM variables vlmplan may write. ``NIM_MAX_BATCH_SIZE`` and ``NIM_KV_CACHE_PERCENT`` are deliberately absent:
no NVIDIA source uses them (vlm-facts.md 3.1)."""

MODEL_SPECIFIC_NIMS: dict[str, tuple[str, str]] = {
    # NIM for VLMs 1.1.x support matrix (Llama-3.2-11B-Vision-Instruct, tag 1.1.1 also used by NVIDIA's
    # blueprint Helm values); the 90B image follows the same naming [unverified tag].
    "meta-llama/llama-3.2-11b-vision-instruct": ("nvcr.io/nim/meta/llama-3.2-11b-vision-instruct", "1.1.1"),
    "meta-llama/llama-3.2-90b-vision-instruct": ("nvcr.io/nim/meta/llama-3.2-90b-vision-instruct", "1.1.1"),
}
"""Model-specific NIM images (they download their own weights from NGC), keyed by lower-cased HF id."""

MODEL_FREE_NIM = ("nvcr.io/nim/nvidia/llm-nim", "latest")
"""The model-free (multi-LLM) NIM: serves ``NIM_MODEL_PATH`` (hf://org/name or a path) with generic vLLM profiles.
Pin a tag you have tested: the image moves with ``latest``."""

CONTAINER_CACHE = "/opt/nim/.cache"
CONTAINER_MODEL = "/opt/nim/model"
"""Where a local model folder is mounted (read-only) for the model-free NIM."""


@dataclass(frozen=True)
class NimImage:
    repository: str
    tag: str
    model_free: bool

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


def check_supported(dep: DeploymentPlan, target: str) -> None:
    if dep.speculative is not None:
        raise RequestError(f"{target}: the plan uses speculative decoding ({dep.speculative.method}), which no NIM "
                           "setting this planner knows carries (draft checkpoint, --speculative-config); use --target "
                           "vllm, or re-plan with --speculative off")
    if gpu_vendor(dep) != "nvidia":
        raise RequestError(f"{target}: NIM containers need NVIDIA GPUs, the plan uses {dep.gpu}; use --target vllm")
    if target == "nim" and nim_image(dep).model_free and is_local_path(dep.served_model) and ":" in dep.served_model:
        raise RequestError(f"nim: local model path {dep.served_model!r} contains ':', which docker -v cannot mount; "
                           "move or link the model to a path without ':'")


def nim_image(dep: DeploymentPlan) -> NimImage:
    known = MODEL_SPECIFIC_NIMS.get(dep.model.lower())
    if known is not None:
        return NimImage(known[0], known[1], model_free=False)
    return NimImage(MODEL_FREE_NIM[0], MODEL_FREE_NIM[1], model_free=True)


def nim_profile(dep: DeploymentPlan) -> str | None:
    """The readable profile name when it is certain to exist (model-free NIM, bf16, PP=1, TP in 1/2/4/8)."""
    if nim_image(dep).model_free and dep.precision == "bf16" and dep.quantization is None \
            and dep.pp == 1 and dep.tp in (1, 2, 4, 8):
        return f"vllm-bf16-tp{dep.tp}-pp1"
    return None


def model_path(dep: DeploymentPlan) -> str:
    """``NIM_MODEL_PATH`` for the model-free NIM: hf://<checkpoint>, or the mount point of a local folder."""
    return CONTAINER_MODEL if is_local_path(dep.served_model) else f"hf://{dep.served_model}"


def passthrough_args(dep: DeploymentPlan) -> list[str]:
    """vLLM flags for ``NIM_PASSTHROUGH_ARGS``: the planned engine options except the API name (NIM sets it)."""
    args: list[str] = []
    for name, value in vllm_emit.engine_options(dep):
        if name != "served-model-name":
            args += vllm_emit.option_tokens(name, value)
    return args


def env_vars(dep: DeploymentPlan) -> list[tuple[str, str]]:
    """(name, value) pairs for nim.env and the chart's ``env`` list; every name is in :data:`NIM_VARIABLES`."""
    image = nim_image(dep)
    out: list[tuple[str, str]] = [("NIM_SERVED_MODEL_NAME", dep.model)]
    if image.model_free:
        out.append(("NIM_MODEL_PATH", model_path(dep)))
    profile = nim_profile(dep)
    if profile:
        out.append(("NIM_MODEL_PROFILE", profile))
    out += [
        ("NIM_TENSOR_PARALLEL_SIZE", str(dep.tp)),
        ("NIM_PIPELINE_PARALLEL_SIZE", str(dep.pp)),
        ("NIM_MAX_MODEL_LEN", str(dep.max_model_len)),
        ("NIM_MAX_NUM_SEQS", str(dep.max_num_seqs)),
    ]
    if dep.enable_prefix_caching:
        out.append(("NIM_ENABLE_KV_CACHE_REUSE", "1"))
    out.append(("NIM_PASSTHROUGH_ARGS", shlex.join(passthrough_args(dep))))
    for name, value in out:
        validate_variable(name, value)
    return out


def validate_variable(name: str, value: str) -> None:
    """A variable vlmplan writes must be documented and fit on one env-file line."""
    if name not in NIM_VARIABLES:
        raise RequestError(f"NIM variable {name} is not in the documented list (planner/emit/nim.py)")
    if name == "NGC_API_KEY":
        raise RequestError("NGC_API_KEY must come from the environment or a Secret, never from a file")
    check_text(value, name)


def validate_passthrough(value: str) -> dict[str, Any]:
    """Parse ``NIM_PASSTHROUGH_ARGS`` as NIM does (CLI-style, shell quoting) and check it as vLLM 0.33 flags."""
    return vllm_flags.parse_serve_argv(["vllm", "serve", "model", *shlex.split(value)])[1]


def _header(dep: DeploymentPlan, title: str) -> list[str]:
    image = nim_image(dep)
    kind = "model-free NIM serving " + model_path(dep) if image.model_free else "model-specific NIM"
    lines = [
        f"Generated by vlmplan for NVIDIA NIM ({title}). Do not edit by hand: re-run `vlmplan emit`.",
        f"Image: {image.ref} ({kind}).",
        "",
        *plan_summary(dep),
        "",
    ]
    profile = nim_profile(dep)
    if profile:
        lines.append(f"Profile: {profile} (generic vLLM profile of the model-free NIM).")
    else:
        lines.append(f"Profile: auto-selected; to pin one, list them with: docker run --rm --gpus all -e NGC_API_KEY "
                     f"{image.ref} list-model-profiles")
        lines.append(f"and set NIM_MODEL_PROFILE to the {dep.precision} tp{dep.tp}-pp{dep.pp} profile.")
    if image.model_free:
        lines.append("Model-free NIM: check that this NIM release supports the model's architecture "
                     f"({dep.hf_architecture}).")
    if dep.api_server_count > 1:
        lines.append(f"NOT APPLIED: the plan runs {dep.api_server_count} API servers per replica (vLLM "
                     "--api-server-count); NIM documents no setting for it (NIM_PASSTHROUGH_ARGS carries engine "
                     "arguments), so this NIM runs its own front end, which may cap the replica below the planned "
                     "rate.")
    return lines


def render_env(dep: DeploymentPlan) -> str:
    """``nim.env`` for ``docker run --env-file``: one ``NAME=value`` per line, taken literally (no quotes)."""
    lines = [*_header(dep, "nim.env"), "",
             "docker --env-file format: NAME=value, the value is taken literally up to the end of the line.",
             "NGC_API_KEY is not here: run.sh passes it from your environment."]
    text = comments(lines)
    for name, value in env_vars(dep):
        var = NIM_VARIABLES[name]
        text += "\n" + comment(f"{var.meaning} [{var.status}: {var.source}]") + "\n" + f"{name}={value}\n"
    return text


def render_run_sh(dep: DeploymentPlan) -> str:
    layout = node_layout(dep)
    image = nim_image(dep)
    slug = deployment_slug(dep)
    head = ["#!/usr/bin/env bash", comments(_header(dep, "run.sh")).rstrip("\n")]
    if layout.multi_node:
        message = (f"{slug}: this NIM replica spans {layout.nodes} nodes; deploy it with the nim-llm Helm chart "
                   "and values.yaml (multiNode), see the header of values.yaml")
        head += [
            comment(f"Each replica spans {layout.nodes} nodes: a single docker run cannot start it."),
            "set -euo pipefail",
            "",
            f"echo {shlex.quote(message)} >&2",
            "exit 1",
        ]
        return "\n".join(head) + "\n"
    all_gpus = layout.gpus_per_node >= dep.gpus_per_node
    devices = ",".join(str(i) for i in range(layout.gpus_per_node))
    shm = "32g" if layout.gpus_per_node > 1 else "16g"
    notes = [
        "",
        "Needs: docker with the NVIDIA container toolkit, `docker login nvcr.io` (user $oauthtoken, password =",
        "NGC key), and NGC_API_KEY exported in this shell (passed to the container, never written to disk).",
        "Overrides: NIM_IMAGE, LOCAL_NIM_CACHE, HOST_PORT" + ("" if all_gpus else ", GPU_DEVICES") + ".",
        f"One replica per run: the plan has {dep.replicas}; start the others on other GPUs/hosts"
        + (" (GPU_DEVICES, HOST_PORT)." if not all_gpus else "."),
        f"Health: GET /v1/health/ready; API: http://HOST:{NIM_PORT}/v1",
    ]
    lines = head + [comments(notes).rstrip("\n"), "set -euo pipefail", ""]
    lines += [
        ': "${NGC_API_KEY:?export NGC_API_KEY=<your NGC API key> first}"',
        'here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        f'NIM_IMAGE="${{NIM_IMAGE:-{image.ref}}}"',
        'LOCAL_NIM_CACHE="${LOCAL_NIM_CACHE:-$HOME/.cache/nim}"',
        'HOST_PORT="${HOST_PORT:-8000}"',
    ]
    if not all_gpus:
        lines.append(f'GPU_DEVICES="${{GPU_DEVICES:-{devices}}}"')
    lines += ['mkdir -p "$LOCAL_NIM_CACHE"', ""]
    cmd = [
        f"exec docker run --rm --name {shlex.quote(slug)}",
        "--gpus all" if all_gpus else '--gpus "\\"device=${GPU_DEVICES}\\""',
        f"--shm-size {shm}",
        "-e NGC_API_KEY",
    ]
    if image.model_free:
        cmd.append("-e HF_TOKEN")
    cmd += ['--env-file "$here/nim.env"', f'-v "$LOCAL_NIM_CACHE:{CONTAINER_CACHE}"']
    if image.model_free and is_local_path(dep.served_model):
        cmd.append(f"-v {shlex.quote(f'{dep.served_model}:{CONTAINER_MODEL}:ro')}")
    cmd += ['-u "$(id -u)"', f'-p "$HOST_PORT:{NIM_PORT}"', '"$NIM_IMAGE"']
    lines.append(" \\\n  ".join(cmd))
    return "\n".join(lines) + "\n"


def helm_values(dep: DeploymentPlan) -> dict[str, Any]:
    """Values for the ``nim-llm`` Helm chart (keys of chart 1.1.2's values.yaml)."""
    layout = node_layout(dep)
    image = nim_image(dep)
    # The chart copies env into the container spec, where the kubelet expands $(VAR): double every '$'.
    env: list[dict[str, Any]] = [{"name": n, "value": v.replace("$", "$$")} for n, v in env_vars(dep)]
    if image.model_free:
        env.append({"name": "HF_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": HF_SECRET, "key": "HF_TOKEN", "optional": True}}})
    values: dict[str, Any] = {
        "image": {"repository": image.repository, "tag": image.tag, "pullPolicy": "IfNotPresent"},
        "imagePullSecrets": [{"name": NGC_PULL_SECRET}],
        "model": {
            "name": dep.model,
            "ngcAPISecret": NGC_API_SECRET,
            "nimCache": "/model-store",
            "openaiPort": NIM_PORT,
            "jsonLogging": not layout.multi_node,  # the chart's multi-node docs ask for jsonLogging=false
            "logLevel": "INFO",
        },
        "env": env,
        "resources": {"limits": {"nvidia.com/gpu": layout.gpus_per_node}},
        "persistence": {"enabled": True, "accessMode": "ReadWriteOnce", "size": f"{cache_size_gib(dep)}Gi"},
        "statefulSet": {"enabled": True},
        "replicaCount": dep.replicas,
    }
    sched = gpu_scheduling(dep)
    if sched is not None:
        values["affinity"] = node_affinity(sched.label_key, sched.label_values)
    if layout.multi_node:
        values["multiNode"] = {
            "enabled": True,
            "workers": layout.nodes,
            "gpusPerNode": layout.gpus_per_node,
            "leaderWorkerSet": {"enabled": True},
        }
    return values


def node_affinity(key: str, values: tuple[str, ...]) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": key, "operator": "In", "values": list(values)}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def render_values(dep: DeploymentPlan) -> str:
    layout = node_layout(dep)
    slug = deployment_slug(dep)
    notes = [
        "",
        "Values for the nim-llm Helm chart (keys of chart 1.1.2, NVIDIA/nim-deploy helm/nim-llm). Install:",
        "  kubectl create secret docker-registry ngc-secret --docker-server=nvcr.io "
        "--docker-username='$oauthtoken' --docker-password=\"$NGC_API_KEY\"",
        "  kubectl create secret generic ngc-api --from-literal=NGC_API_KEY=\"$NGC_API_KEY\"",
        "  helm fetch https://helm.ngc.nvidia.com/nim/charts/nim-llm-1.1.2.tgz --username='$oauthtoken' "
        "--password=\"$NGC_API_KEY\"",
        f"  helm upgrade --install {slug} nim-llm-1.1.2.tgz -f values.yaml",
    ]
    if layout.multi_node:
        notes += [
            f"Each replica spans {layout.nodes} nodes x {layout.gpus_per_node} GPUs: multiNode renders a "
            "LeaderWorkerSet (install LWS first).",
            "Chart 1.1.2 supports multi-node only for optimized (TensorRT-LLM) profiles; check list-model-profiles.",
        ]
    return comments(_header(dep, "values.yaml") + notes) + dump_yaml(helm_values(dep))


def write(dep: DeploymentPlan, folder: Path) -> list[Path]:
    check_supported(dep, "nim")
    return [
        write_text(folder / "run.sh", render_run_sh(dep), executable=True),
        write_text(folder / "nim.env", render_env(dep)),
        write_text(folder / "values.yaml", render_values(dep)),
    ]
