"""emit(): golden files for three plans x four targets, the API's errors, and a property test over random plans.

Regenerate the golden files after an intended change with ``UPDATE_GOLDEN=1 pytest tests/unit/test_emit_golden.py``
and review the diff.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from emit_support import (
    GOLDEN,
    GOLDEN_PLANS,
    HAVE_K8S_VALIDATE,
    bash_syntax_ok,
    check_manifests,
    containers,
    deployment,
    expand,
    load_yaml_docs,
    parse_env_file,
    predicted,
    script_argv,
    single_gpu_plan,
    validate_vllm_argv,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from planner.core.errors import RequestError
from planner.emit import TARGETS, common, emit, nim, vllm_flags
from planner.emit.common import is_local_path
from planner.plan import DeploymentPlan, Plan


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", sorted(GOLDEN_PLANS))
def test_golden(case: str, tmp_path: Path):
    written = emit(GOLDEN_PLANS[case](), tmp_path, list(TARGETS))
    assert sorted(str(p.relative_to(tmp_path)) for p in written) == sorted(_tree(tmp_path))
    for path in written:
        if path.suffix == ".sh":
            assert path.stat().st_mode & stat.S_IXUSR
            bash_syntax_ok(path)
    golden_dir = GOLDEN / case
    if os.environ.get("UPDATE_GOLDEN") == "1":
        for old in sorted(golden_dir.rglob("*"), reverse=True) if golden_dir.exists() else []:
            old.unlink() if old.is_file() else old.rmdir()
        for rel, text in _tree(tmp_path).items():
            (golden_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden_dir / rel).write_text(text)
    assert _tree(tmp_path) == _tree(golden_dir), f"golden files differ; UPDATE_GOLDEN=1 rewrites {golden_dir}"


def test_golden_layout():
    # One folder per deployment (workload + model), one sub-folder per target, and verify/ for a plan that records
    # its workload.
    assert sorted(_tree(GOLDEN / "single-gpu")) == [
        "chat-qwen2-5-vl-7b-instruct/k8s-nim/k8s.yaml",
        "chat-qwen2-5-vl-7b-instruct/k8s-vllm/k8s.yaml",
        "chat-qwen2-5-vl-7b-instruct/nim/nim.env",
        "chat-qwen2-5-vl-7b-instruct/nim/run.sh",
        "chat-qwen2-5-vl-7b-instruct/nim/values.yaml",
        "chat-qwen2-5-vl-7b-instruct/verify/deployment.json",
        "chat-qwen2-5-vl-7b-instruct/verify/verify.sh",
        "chat-qwen2-5-vl-7b-instruct/vllm/config.yaml",
        "chat-qwen2-5-vl-7b-instruct/vllm/serve.sh",
    ]
    assert "agents-qwen3-vl-235b-a22b-instruct/k8s-nim/install.sh" in _tree(GOLDEN / "two-node")


@pytest.mark.parametrize("targets, message", [
    (["docker"], "unknown target 'docker'; expected one of vllm, nim, k8s-vllm, k8s-nim"),
    (["vllm", "k8s"], "unknown target 'k8s'"),
    ([], "no --target given"),
])
def test_bad_targets(tmp_path: Path, targets: list[str], message: str):
    with pytest.raises(RequestError) as info:
        emit(single_gpu_plan(), tmp_path, targets)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_nothing_written_when_one_deployment_is_refused(tmp_path: Path):
    llama = deployment(workload="vision", model="meta-llama/Llama-3.2-11B-Vision-Instruct",
                       served_model="meta-llama/Llama-3.2-11B-Vision-Instruct", vllm_supported=False,
                       hf_architecture="MllamaForConditionalGeneration")
    plan = Plan(status="optimal", cost_per_hour=1.0, deployments=[deployment(), llama])
    with pytest.raises(RequestError, match="nim"):
        emit(plan, tmp_path, ["vllm", "nim"])
    assert not list(tmp_path.iterdir())
    files = emit(plan, tmp_path, ["nim", "k8s-nim"])  # NIM serves Llama-3.2-Vision
    assert {p.relative_to(tmp_path).parts[0] for p in files} == {"chat-qwen2-5-vl-7b-instruct",
                                                                  "vision-llama-3-2-11b-vision-instruct"}


def test_same_name_deployments_get_distinct_folders(tmp_path: Path):
    plan = Plan(status="optimal", cost_per_hour=1.0, deployments=[deployment(), deployment(replicas=1)])
    files = emit(plan, tmp_path, ["vllm", "vllm"])
    assert sorted({p.relative_to(tmp_path).parts[0] for p in files}) == [
        "chat-qwen2-5-vl-7b-instruct", "chat-qwen2-5-vl-7b-instruct-2"]
    assert len(files) == 4  # duplicate target written once


def test_infeasible_plan_is_refused(tmp_path: Path):
    with pytest.raises(RequestError, match="infeasible"):
        emit(Plan(status="infeasible", cost_per_hour=0.0, deployments=[]), tmp_path, ["vllm"])


def test_the_ngc_key_in_the_environment_never_reaches_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NGC_API_KEY", "nvapi-DO-NOT-WRITE")
    monkeypatch.setenv("HF_TOKEN", "hf_DO_NOT_WRITE")
    for case, plan in GOLDEN_PLANS.items():
        for path in emit(plan(), tmp_path / case, list(TARGETS)):
            text = path.read_text()
            assert "DO-NOT-WRITE" not in text and "DO_NOT_WRITE" not in text


def test_plan_round_trips_through_plan_yaml(tmp_path: Path):
    plan = GOLDEN_PLANS["two-node"]()
    plan.save(tmp_path / "plan.yaml")
    again = Plan.load(tmp_path / "plan.yaml")
    a = emit(plan, tmp_path / "a", list(TARGETS))
    b = emit(again, tmp_path / "b", list(TARGETS))
    assert [p.read_text() for p in a] == [p.read_text() for p in b]


@pytest.mark.parametrize("bad", ["a\nb", "a\x00b", "a\x85b", "a\u2028b", "a\x9bb"])
def test_control_characters_are_refused_before_writing(tmp_path: Path, bad: str):
    # Issue 13: the plan schema refuses them when a plan is built or loaded, so no target sees them.
    for fields in ({"model": bad, "served_model": bad}, {"workload": bad}):
        with pytest.raises(ValidationError, match="control character"):
            deployment(**fields)
    assert not list(tmp_path.iterdir())


# --- property test ----------------------------------------------------------------------------------------------

NVIDIA_GPUS = sorted(k for k, v in common.GPU_SCHEDULING.items() if v.vendor == "nvidia")
SAFE_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_categories=("Cc",)),
                    min_size=1, max_size=30)
"""Printable text: quotes, spaces, $, backslashes, accents. Control characters are refused (test below)."""


@st.composite
def plans(draw: Any) -> DeploymentPlan:
    tp = draw(st.sampled_from([1, 2, 4, 8]))
    pp = draw(st.sampled_from([1, 2, 3, 4]))
    gpn = draw(st.sampled_from([1, 2, 4, 8]))
    seqs = draw(st.integers(1, 1024))
    model_len = draw(st.integers(256, 131072))
    chunked = draw(st.booleans())
    low = max(seqs, model_len) if not chunked else seqs
    batched = draw(st.integers(low, low + 65536))
    precision = draw(st.sampled_from(["bf16", "fp16", "fp8", "int8", "int4"]))
    quant = draw(st.sampled_from([None, "fp8", "awq_marlin", "gptq_marlin", "compressed-tensors"]))
    kind = draw(st.sampled_from(["hf", "path", "text"]))
    raw = draw(SAFE_TEXT)
    # ':' in a local path cannot be mounted with docker -v; that refusal has its own test (test_emit_nim.py).
    model = {"hf": "org/" + raw.replace("/", "_"), "path": "/models/" + raw.replace(":", "_"), "text": raw}[kind]
    if is_local_path(model):
        model = model.replace(":", "_")
    images = draw(st.integers(0, 8))
    return DeploymentPlan(
        workload=draw(SAFE_TEXT), model=model, served_model=draw(st.sampled_from([model, model + "-AWQ"])),
        hf_architecture="X", trust_remote_code=draw(st.booleans()), gpu=draw(st.sampled_from(NVIDIA_GPUS)),
        gpu_memory_gib=80.0, gpus_per_replica=tp * pp, gpus_per_node=gpn, tp=tp, pp=pp,
        replicas=draw(st.integers(1, 4)), precision=precision, quantization=quant,
        kv_cache_dtype=draw(st.sampled_from(["auto", "fp8"])), max_num_seqs=seqs, max_model_len=model_len,
        max_num_batched_tokens=batched, gpu_memory_utilization=draw(st.floats(0.05, 1.0)),
        enable_prefix_caching=draw(st.booleans()), enable_chunked_prefill=chunked,
        mm_encoder_tp_mode=draw(st.sampled_from(["weights", "data"])),
        limit_mm_per_prompt={"image": images} if images else {},
        mm_processor_kwargs=draw(st.sampled_from([{}, {"max_pixels": 1003520}, {"max_dynamic_patch": 6},
                                                  {"size": {"longest_edge": 1003520}}, {"note": raw}])),
        cost_per_hour=1.0, price_usd_per_gpu_hour=1.0, predicted=predicted(draw(st.floats(0.1, 200.0))),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(dep=plans())
def test_any_plan_emits_configs_that_pass_the_validators(tmp_path_factory: pytest.TempPathFactory,
                                                         dep: DeploymentPlan):
    out = tmp_path_factory.mktemp("emit")
    files = emit(Plan(status="feasible", cost_per_hour=1.0, deployments=[dep]), out, list(TARGETS))
    check_emitted(dep, out, files)


SOLVED = {
    # (solve flags) -> the plan the CLI writes with --out; one GPU, tensor parallel, and pipeline over two nodes.
    "default": [],
    "72b-h100": ["--model", "Qwen/Qwen2.5-VL-72B-Instruct", "--gpus", "H100", "--precisions", "bf16"],
    "235b-l40s": ["--model", "Qwen/Qwen3-VL-235B-A22B-Instruct", "--gpus", "L40S", "--precisions", "bf16",
                  "--slo", "ttft_p95=30s", "--rate", "0.2"],
}


@pytest.mark.parametrize("case", sorted(SOLVED))
def test_solved_plans_emit_configs_that_pass_the_validators(case: str, tmp_path: Path):
    """Plans the solver really produces (not synthetic ones) pass every validator in every target."""
    from typer.testing import CliRunner

    from planner.cli.main import app

    res = CliRunner().invoke(app, ["solve", *SOLVED[case], "--out", str(tmp_path), *sum((["--target", t] for t in
                                                                                          TARGETS), [])])
    assert res.exit_code == 0, res.output
    plan = Plan.load(tmp_path / "plan.yaml")
    assert plan.deployments
    for dep in plan.deployments:
        folder = next(p for p in tmp_path.iterdir() if p.is_dir())
        check_emitted(dep, tmp_path, sorted(f for f in folder.rglob("*") if f.is_file()))
    if case == "235b-l40s":
        assert plan.deployments[0].pp == 2  # 438 GiB of bf16 weights span two 8 x 48 GB nodes


def check_emitted(dep: DeploymentPlan, out: Path, files: list[Path]) -> None:
    layout = common.node_layout(dep)
    assert layout.nodes * layout.gpus_per_node == dep.tp * dep.pp and layout.gpus_per_node <= dep.gpus_per_node
    by_name = {p.relative_to(out).as_posix().split("/", 1)[1]: p for p in files}

    serve = by_name["vllm/serve.sh"]
    bash_syntax_ok(serve)
    for rank in range(layout.nodes):
        argv = script_argv(serve.read_text(), {"NODE_RANK": str(rank), "MASTER_ADDR": "10.0.0.1"})
        values = validate_vllm_argv(argv)
        assert argv[2] == dep.served_model  # exact round trip through shell quoting
        assert values["max-num-seqs"] == dep.max_num_seqs and values["tensor-parallel-size"] == dep.tp
    vllm_flags.parse_config(yaml.safe_load(by_name["vllm/config.yaml"].read_text()))

    env = parse_env_file(by_name["nim/nim.env"].read_text())
    assert set(env) <= set(nim.NIM_VARIABLES) and "NGC_API_KEY" not in env
    nim.validate_passthrough(env["NIM_PASSTHROUGH_ARGS"])
    bash_syntax_ok(by_name["nim/run.sh"])
    assert yaml.safe_load(by_name["nim/values.yaml"].read_text())["replicaCount"] == dep.replicas

    docs = load_yaml_docs(by_name["k8s-vllm/k8s.yaml"])
    if HAVE_K8S_VALIDATE:
        check_manifests(docs)
    lws_env = {"LWS_LEADER_ADDRESS": "10.0.0.1", "LWS_WORKER_INDEX": "1"}
    for doc in docs:
        for container in containers(doc):
            argv = [expand(a, lws_env) for a in container["command"] + container["args"]]
            assert argv[2] == dep.served_model
            validate_vllm_argv(argv)
    if layout.multi_node:
        bash_syntax_ok(by_name["k8s-nim/install.sh"])
    elif HAVE_K8S_VALIDATE:
        check_manifests(load_yaml_docs(by_name["k8s-nim/k8s.yaml"]))
    assert shlex.split(shlex.quote(dep.served_model)) == [dep.served_model]
