"""vLLM target: ``serve.sh`` (one ``vllm serve`` command) and ``config.yaml`` (the same options for ``--config``).

Targets vLLM 0.33.0. Every emitted command line and config file is checked with
:mod:`planner.emit.vllm_flags` before it is written, so a plan that vLLM would refuse at start-up
(e.g. ``max_num_batched_tokens < max_num_seqs``) fails here with a one-line error instead.

Decisions:

* Booleans are written on the command line in both forms (``--enable-prefix-caching`` /
  ``--no-enable-prefix-caching``). In ``config.yaml`` only ``true`` can be written: ``vllm serve`` expands the file
  with the top-level parser, which has no ``--no-...`` options, so a ``false`` is silently dropped
  (vLLM 0.33 ``FlexibleArgumentParser.load_config_file``); the header of ``config.yaml`` lists the ``--no-...``
  flags to add on the command line.
* A replica that spans nodes (TP x PP > GPUs per node) uses vLLM 0.33's native multi-node launcher
  (``--nnodes/--node-rank/--master-addr/--master-port``; non-head nodes run ``--headless``), not Ray. The same
  ``serve.sh`` runs on every node; ``NODE_RANK`` and ``MASTER_ADDR`` come from the environment.
* Models vLLM 0.33 no longer supports (``plan.vllm_supported`` false, e.g. Llama-3.2-Vision, removed after
  0.10.2) are refused with a one-line error pointing at the NIM targets, rather than pinning an old vLLM whose
  flags this module cannot validate.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.core.errors import RequestError
from planner.emit import vllm_flags
from planner.emit.common import (
    MASTER_PORT,
    VLLM_IMAGE_ROCM,
    VLLM_PORT,
    VLLM_VERSION,
    check_text,
    comments,
    dump_yaml,
    gpu_vendor,
    node_layout,
    plan_summary,
    write_text,
)
from planner.plan import DeploymentPlan


@dataclass(frozen=True)
class ShellVar:
    """An argument taken from an environment variable when the script runs (``"${NAME}"``)."""

    name: str

    def render(self) -> str:
        return f'"${{{self.name}}}"'


Arg = str | ShellVar


def check_supported(dep: DeploymentPlan, target: str) -> None:
    """Refuse models that vLLM 0.33 cannot load."""
    if not dep.vllm_supported:
        raise RequestError(
            f"{target}: {dep.model} ({dep.hf_architecture}) is not supported by vLLM {VLLM_VERSION} "
            "(removed after vLLM 0.10.2); use --target nim or k8s-nim"
        )


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _scalar(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def engine_options(dep: DeploymentPlan) -> list[tuple[str, Any]]:
    """The planned options, as (flag name without ``--``, value), in the order they are written.

    Values are int/float/str, bool (``--x`` / ``--no-x``), list (``--served-model-name``) or dict (JSON).
    """
    opts: list[tuple[str, Any]] = []
    if dep.served_model != dep.model:
        # The engine loads the quantized checkpoint; clients keep asking for the model id they know.
        opts.append(("served-model-name", [dep.model]))
    opts += [("tensor-parallel-size", dep.tp), ("pipeline-parallel-size", dep.pp)]
    if dep.precision in ("bf16", "fp16"):
        opts.append(("dtype", "bfloat16" if dep.precision == "bf16" else "float16"))
    if dep.quantization:
        opts.append(("quantization", dep.quantization))
    if dep.kv_cache_dtype == "fp8":
        opts.append(("kv-cache-dtype", "fp8"))
    opts += [
        ("max-model-len", dep.max_model_len),
        ("max-num-seqs", dep.max_num_seqs),
        ("max-num-batched-tokens", dep.max_num_batched_tokens),
        ("gpu-memory-utilization", dep.gpu_memory_utilization),
        ("enable-prefix-caching", dep.enable_prefix_caching),
        ("enable-chunked-prefill", dep.enable_chunked_prefill),
    ]
    if dep.limit_mm_per_prompt:
        opts.append(("limit-mm-per-prompt", dict(dep.limit_mm_per_prompt)))
    if dep.mm_processor_kwargs:
        opts.append(("mm-processor-kwargs", dict(dep.mm_processor_kwargs)))
    if dep.limit_mm_per_prompt and dep.mm_encoder_tp_mode != "weights":
        opts.append(("mm-encoder-tp-mode", dep.mm_encoder_tp_mode))
    if dep.speculative is not None:
        opts.append(("speculative-config", dep.speculative.config_json()))
    if dep.trust_remote_code:
        opts.append(("trust-remote-code", True))
    return opts


def option_tokens(name: str, value: Any) -> list[str]:
    """``--name value`` tokens for one option (the command-line form)."""
    if isinstance(value, bool):
        return [f"--{name}" if value else f"--no-{name}"]
    if isinstance(value, dict):
        return [f"--{name}", _json(value)]
    if isinstance(value, list):
        return [f"--{name}", *[_scalar(v) for v in value]]
    return [f"--{name}", _scalar(value)]


def serve_args(
    dep: DeploymentPlan,
    node_rank: Arg | None = None,
    master_addr: Arg | None = None,
    headless: bool = False,
) -> list[Arg]:
    """Arguments after ``vllm serve``: the model, then the flags. Multi-node flags only for a multi-node replica."""
    args: list[Arg] = [dep.served_model]
    for name, value in engine_options(dep):
        args += option_tokens(name, value)
    if dep.api_server_count > 1:  # vLLM's default is one; a multi-node replica keeps it (solver.frontend)
        args += ["--api-server-count", str(dep.api_server_count)]
    args += ["--host", "0.0.0.0", "--port", str(VLLM_PORT)]
    layout = node_layout(dep)
    if layout.multi_node:
        args += ["--nnodes", str(layout.nodes)]
        if node_rank is not None:
            args += ["--node-rank", node_rank]
        if master_addr is not None:
            args += ["--master-addr", master_addr]
        args += ["--master-port", str(MASTER_PORT)]
        if headless:
            args.append("--headless")
    return args


def validate(dep: DeploymentPlan, args: list[str]) -> dict[str, Any]:
    """Check a concrete argument list against vLLM 0.33; a plan vLLM would refuse becomes a RequestError."""
    try:
        return vllm_flags.parse_serve_argv(["vllm", "serve", *args])[1]
    except vllm_flags.FlagError as exc:
        raise RequestError(f"plan for {dep.workload!r} would not start on vLLM {VLLM_VERSION}: {exc}") from None


def preflight(dep: DeploymentPlan) -> None:
    """Check every node's command line of this plan against vLLM 0.33 (RequestError if it would not start)."""
    layout = node_layout(dep)
    if not layout.multi_node:
        validate(dep, [str(a) for a in serve_args(dep)])
        return
    for rank in range(layout.nodes):
        args = serve_args(dep, node_rank=str(rank), master_addr="10.0.0.1", headless=rank > 0)
        validate(dep, [str(a) for a in args])


def _header(dep: DeploymentPlan, title: str) -> list[str]:
    return [
        f"Generated by vlmplan for vLLM {VLLM_VERSION} ({title}). Do not edit by hand: re-run `vlmplan emit`.",
        (f"Install: the ROCm build of vLLM {VLLM_VERSION}, e.g. the container image {VLLM_IMAGE_ROCM} (the PyPI "
         f"wheel is built for CUDA and does not run on {dep.gpu})" if gpu_vendor(dep) == "amd" else
         f"Install: pip install vllm=={VLLM_VERSION}  (or use the {VLLM_VERSION} container image)"),
        "",
        *plan_summary(dep),
    ]


def render_serve_sh(dep: DeploymentPlan) -> str:
    """``serve.sh``: one ``exec vllm serve ...``; every value shell-quoted; extra flags pass through ``"$@"``."""
    layout = node_layout(dep)
    notes = [
        "",
        "Extra vLLM flags given to this script are appended (and win), e.g. ./serve.sh --port 8001.",
        "Gated models need HF_TOKEN in the environment. Several replicas on one host: give each its own",
        "CUDA_VISIBLE_DEVICES and --port. Health: GET /health; API: http://HOST:8000/v1",
    ]
    if layout.multi_node:
        last = layout.nodes - 1
        others = "NODE_RANK=1" if last == 1 else f"NODE_RANK=1..{last}"
        notes += [
            "",
            f"Each replica spans {layout.nodes} nodes x {layout.gpus_per_node} GPUs "
            "(vLLM native multi-node, mp executor).",
            f"Run this script on each of the {layout.nodes} nodes, with the same model files reachable on all of them:",
            f"  NODE_RANK=0 on the head node (serves the API on port {VLLM_PORT}), {others} on the others;",
            "  MASTER_ADDR=<IP address of the NODE_RANK=0 node, reachable from the others>.",
            f"Ports {MASTER_PORT} (torch.distributed) and NCCL's must be open between the nodes. Needs bash >= 4.4.",
        ]
    lines = ["#!/usr/bin/env bash", comments(_header(dep, "serve.sh") + notes).rstrip("\n"), "set -euo pipefail", ""]
    if layout.multi_node:
        last = layout.nodes - 1
        workers = "|".join(str(r) for r in range(1, layout.nodes))
        lines += [
            f'NODE_RANK="${{NODE_RANK:?set NODE_RANK to 0 on the head node, 1..{last} on the other nodes}}"',
            'MASTER_ADDR="${MASTER_ADDR:?set MASTER_ADDR to the IP address of the NODE_RANK=0 node}"',
            'case "${NODE_RANK}" in',
            "  0) role=() ;;",
            f"  {workers}) role=(--headless) ;;",
            f'  *) echo "NODE_RANK must be 0..{last}, got ${{NODE_RANK}}" >&2; exit 2 ;;',
            "esac",
            "",
        ]
        args = serve_args(dep, node_rank=ShellVar("NODE_RANK"), master_addr=ShellVar("MASTER_ADDR"))
        tail = ['"${role[@]}"', '"$@"']
    else:
        args = serve_args(dep)
        tail = ['"$@"']
    lines.append(_command_lines(["exec", "vllm", "serve"], args, tail))
    return "\n".join(lines) + "\n"


def _command_lines(head: list[str], args: list[Arg], tail: list[str]) -> str:
    """``head model \\`` then one ``--flag value \\`` per line; values quoted with shlex.quote."""
    rendered = [a.render() if isinstance(a, ShellVar) else shlex.quote(a) for a in args]
    groups: list[list[str]] = [[*head, rendered[0]]]
    for token in rendered[1:]:
        if token.startswith("--"):
            groups.append([token])
        else:
            groups[-1].append(token)
    groups.append(tail)
    return " \\\n  ".join(" ".join(g) for g in groups)


def config_mapping(dep: DeploymentPlan) -> tuple[dict[str, Any], list[str]]:
    """(``--config`` mapping, command-line-only flags): false booleans and per-node flags stay on the command line."""
    data: dict[str, Any] = {"model": dep.served_model}
    cli_only: list[str] = []
    for name, value in engine_options(dep):
        if value is False:
            cli_only.append(f"--no-{name}")
        else:
            data[name] = value
    if dep.api_server_count > 1:
        data["api-server-count"] = dep.api_server_count
    data["host"] = "0.0.0.0"
    data["port"] = VLLM_PORT
    layout = node_layout(dep)
    if layout.multi_node:
        data["nnodes"] = layout.nodes
        data["master-port"] = MASTER_PORT
    return data, cli_only


def render_config_yaml(dep: DeploymentPlan) -> str:
    data, cli_only = config_mapping(dep)
    try:
        vllm_flags.parse_config(data)
    except vllm_flags.FlagError as exc:
        raise RequestError(f"plan for {dep.workload!r} would not start on vLLM {VLLM_VERSION}: {exc}") from None
    extra = " ".join(cli_only)
    layout = node_layout(dep)
    if layout.multi_node:
        extra += ' --node-rank "$NODE_RANK" --master-addr "$MASTER_ADDR" (plus --headless when NODE_RANK > 0)'
    usage = "vllm serve --config config.yaml" + (f" {extra.strip()}" if extra.strip() else "")
    notes = [
        "",
        "The same options as serve.sh, in vLLM's --config format (keys are flag names without '--').",
        f"Run: {usage}",
    ]
    if cli_only:
        notes.append(f"{' '.join(cli_only)}: a 'false' in this file is dropped by vLLM {VLLM_VERSION}, "
                     "so these stay on the command line.")
    return comments(_header(dep, "config.yaml") + notes) + dump_yaml(data)


def write(dep: DeploymentPlan, folder: Path) -> list[Path]:
    """Write ``serve.sh`` and ``config.yaml`` for one deployment into ``folder``."""
    check_supported(dep, "vllm")
    check_text(dep.served_model, "model")
    preflight(dep)
    return [
        write_text(folder / "serve.sh", render_serve_sh(dep), executable=True),
        write_text(folder / "config.yaml", render_config_yaml(dep)),
    ]
