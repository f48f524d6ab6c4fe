"""pd launch configs (planner/emit/disagg.py) pass the same checks as the aggregated targets: each pool's
``vllm serve`` line through vLLM 0.33's flag list, every manifest through the Kubernetes schema; NIM refused."""

import shlex
from pathlib import Path

import pytest

from planner.core.errors import RequestError
from planner.emit import emit_each
from planner.plan import Plan
from tests.unit.emit_support import bash_syntax_ok, k8s_validate, load_yaml_docs, validate_vllm_argv

PLAN = Path(__file__).parent.parent / "fixtures" / "pd" / "plan.yaml"


def _argv(script: str) -> list[str]:
    body = script.split("exec vllm serve", 1)[1].replace('"${PORT}"', "8100").replace('"$@"', "")
    return ["vllm", "serve", *shlex.split(body.replace("\\\n", " "))]


def test_pool_scripts_pass_the_vllm_parser(tmp_path):
    plan = Plan.load(PLAN)
    assert plan.topology == "pd" and plan.pd is not None
    written, refused = emit_each(plan, tmp_path, ["vllm"])
    assert not refused
    by_name = {p.name: p for p in written}
    assert set(by_name) == {"prefill.sh", "decode.sh", "proxy.sh"}
    for role in ("prefill", "decode"):
        bash_syntax_ok(by_name[f"{role}.sh"])
        parsed = validate_vllm_argv(_argv(by_name[f"{role}.sh"].read_text()))
        assert parsed  # the real flag list accepted every flag
        text = by_name[f"{role}.sh"].read_text()
        assert '{"kv_connector":"NixlConnector","kv_role":"kv_both"}' in text
        pool = plan.pd.prefill if role == "prefill" else plan.pd.decode
        assert f"--max-num-seqs \\\n  {pool.max_num_seqs}" in text


def test_manifests_pass_the_kubernetes_schema(tmp_path):
    pytest.importorskip("kubernetes_validate")
    plan = Plan.load(PLAN)
    written, refused = emit_each(plan, tmp_path, ["k8s-vllm"])
    assert not refused
    docs = load_yaml_docs(written[0])
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert [k for k, _ in kinds] == ["Deployment", "Service", "Deployment", "Service", "Deployment", "Service"]
    assert any("-prefill" in n for _, n in kinds) and any("-decode" in n for _, n in kinds)
    for d in docs:
        k8s_validate(d)
    pools = [d for d in docs if d["kind"] == "Deployment" and not d["metadata"]["name"].endswith("-proxy")]
    assert sorted(d["spec"]["replicas"] for d in pools) == sorted([plan.pd.prefill.replicas, plan.pd.decode.replicas])


def test_nim_is_refused_in_one_line(tmp_path):
    plan = Plan.load(PLAN)
    with pytest.raises(RequestError, match="NIM has no prefill/decode"):
        emit_each(plan, tmp_path, ["nim"], dry_run_first=True)
    _, refused = emit_each(plan, tmp_path, ["nim", "vllm"])
    assert list(refused) == ["nim"] and "\n" not in refused["nim"]
