"""Launch configs from a solved plan: vLLM, NVIDIA NIM and Kubernetes.

``emit(plan, out_dir, targets)`` writes one folder per deployment (``<workload>-<model>``, sanitised) with one
sub-folder per target::

    out_dir/chat-qwen2-5-vl-7b-instruct/vllm/serve.sh, config.yaml
    out_dir/chat-qwen2-5-vl-7b-instruct/nim/run.sh, nim.env, values.yaml
    out_dir/chat-qwen2-5-vl-7b-instruct/k8s-vllm/k8s.yaml
    out_dir/chat-qwen2-5-vl-7b-instruct/k8s-nim/k8s.yaml   (values.yaml + install.sh for a multi-node replica)
    out_dir/chat-qwen2-5-vl-7b-instruct/verify/verify.sh, deployment.json   (every time: planner.emit.verify)

Every target is checked for every deployment before its first file is written. ``emit`` refuses the whole request
when one target is refused (e.g. ``vllm`` for a model vLLM 0.33 dropped, ``nim`` on AMD GPUs); ``emit_each`` writes
every target that can be written and returns the refused ones with their reasons (the CLI then writes
``INCOMPLETE.txt`` beside them and exits non-zero, so the folder never looks complete).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from planner.core.errors import RequestError
from planner.emit import k8s, nim, verify, vllm
from planner.emit.common import check_text, deployment_slug
from planner.plan import DeploymentPlan, Plan

TARGETS = ("vllm", "nim", "k8s-vllm", "k8s-nim")

_WRITERS: dict[str, Callable[[DeploymentPlan, Path], list[Path]]] = {
    "vllm": vllm.write,
    "nim": nim.write,
    "k8s-vllm": lambda dep, folder: k8s.write(dep, folder, "vllm"),
    "k8s-nim": lambda dep, folder: k8s.write(dep, folder, "nim"),
}


def _check_targets(targets: list[str]) -> list[str]:
    if not targets:
        raise RequestError(f"no --target given; expected one or more of {', '.join(TARGETS)}")
    for target in targets:
        if target not in TARGETS:
            raise RequestError(f"unknown target '{target}'; expected one of {', '.join(TARGETS)}")
    return list(dict.fromkeys(targets))


def _check_deployment(dep: DeploymentPlan, targets: list[str]) -> None:
    for value, what in ((dep.model, "model"), (dep.served_model, "served model"), (dep.workload, "workload")):
        check_text(value, what)
    if "vllm" in targets or "k8s-vllm" in targets:
        vllm.check_supported(dep, "vllm" if "vllm" in targets else "k8s-vllm")
    if "nim" in targets or "k8s-nim" in targets:
        nim.check_supported(dep, "nim" if "nim" in targets else "k8s-nim")


def folder_names(plan: Plan) -> list[str]:
    """One folder name per deployment; a repeated name gets ``-2``, ``-3``, ..."""
    names: list[str] = []
    for dep in plan.deployments:
        base = deployment_slug(dep)
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def emit(plan: Plan, out_dir: Path, targets: list[str]) -> list[Path]:
    """Write launch configs for every deployment of ``plan`` under ``out_dir``; return the files written. One
    refused target refuses them all (RequestError) before any file is written."""
    written, refused = emit_each(plan, out_dir, targets, dry_run_first=True)
    assert not refused
    return written


def emit_each(plan: Plan, out_dir: Path, targets: list[str],
              dry_run_first: bool = False) -> tuple[list[Path], dict[str, str]]:
    """Write every target that every deployment of ``plan`` supports; return the files written and, per refused
    target, why (also written to ``out_dir/INCOMPLETE.txt``). ``dry_run_first``: raise the first refusal instead
    (nothing written)."""
    wanted = _check_targets(targets)
    if plan.topology == "epd" and plan.status != "infeasible":
        from planner.emit import epd

        return epd.emit_each(plan, out_dir, wanted, dry_run_first)
    if plan.topology == "pd" and plan.status != "infeasible":
        from planner.emit import disagg

        return disagg.emit_each(plan, out_dir, wanted, dry_run_first)
    if plan.status == "infeasible" or not plan.deployments:
        raise RequestError("the plan has no deployment to emit (status: infeasible); relax the SLOs or the budget")
    refused: dict[str, str] = {}
    for target in wanted:
        try:
            for dep in plan.deployments:
                _check_target(dep, target)
        except RequestError as exc:
            if dry_run_first:
                raise
            refused[target] = str(exc)
    wanted = [t for t in wanted if t not in refused]
    written: list[Path] = []
    for dep, name in zip(plan.deployments, folder_names(plan)):
        for target in wanted:
            written += _WRITERS[target](dep, Path(out_dir) / name / target)
        written += verify.write(dep, Path(out_dir) / name / "verify")
    if refused:  # say so in the folder too, so that it never looks complete
        note = Path(out_dir) / "INCOMPLETE.txt"
        note.write_text("vlmplan could not write these targets; the folder is incomplete:\n"
                        + "".join(f"- {t}: {reason}\n" for t, reason in refused.items()))
        written.append(note)
    return written, refused


def _check_target(dep: DeploymentPlan, target: str) -> None:
    """Refuse (RequestError) a target this deployment cannot be launched with; render it once in memory first, so a
    plan vLLM would refuse fails before any file is written."""
    _check_deployment(dep, [target])
    if target in ("vllm", "k8s-vllm"):
        vllm.preflight(dep)
    else:
        nim.env_vars(dep)


def emit_verify(plan: Plan, out_dir: Path) -> list[Path]:
    """Only ``verify.sh`` (and the deployment it checks) for every deployment: what ``solve --out`` writes without
    ``--target``."""
    if plan.status == "infeasible" or plan.topology == "epd":  # epd: clients go through the proxy; no verify.sh yet
        return []
    return [p for dep, name in zip(plan.deployments, folder_names(plan))
            for p in verify.write(dep, Path(out_dir) / name / "verify")]
