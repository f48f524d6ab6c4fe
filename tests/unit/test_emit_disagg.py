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


# --------------------------------------------------------------------------- epd (planner/emit/epd.py)

EPD_PLAN = Path(__file__).parent.parent / "fixtures" / "epd" / "plan.yaml"
"""`vlmplan solve -m Qwen/Qwen2.5-VL-7B-Instruct --image 1680x2240 --prompt-tokens 64 --output-tokens 128 --rate 10
--slo ttft_p95=2s --gpus H100 --topologies epd --out DIR`'s plan.yaml."""


def test_epd_scripts_pass_the_vllm_parser_with_the_roles_vllm_needs(tmp_path):
    plan = Plan.load(EPD_PLAN)
    assert plan.topology == "epd" and plan.epd is not None
    written, refused = emit_each(plan, tmp_path, ["vllm"])
    assert not refused
    by_name = {p.name: p for p in written}
    assert set(by_name) == {"encoder.sh", "lm.sh", "proxy.sh"}
    for name, role in (("encoder.sh", "ec_producer"), ("lm.sh", "ec_consumer")):
        bash_syntax_ok(by_name[name])
        text = by_name[name].read_text()
        body = text.split("exec vllm serve", 1)[1].replace('"${PORT:-8001}"', "8001").replace('"${PORT:-8100}"', "8100")
        parsed = validate_vllm_argv(["vllm", "serve", *shlex.split(body.replace('"$@"', "").replace("\\\n", " "))])
        ec = parsed["ec-transfer-config"]
        # vLLM's ECTransferConfig: a connector needs a role; both sides share one folder.
        assert ec["ec_connector"] == "ECExampleConnector" and ec["ec_role"] == role
        assert ec["ec_connector_extra_config"]["shared_storage_path"] == "/ec_cache"
        assert ("--mm-encoder-only" in text) == (name == "encoder.sh")
    enc = by_name["encoder.sh"].read_text()
    assert "--tensor-parallel-size \\\n  1 \\" in enc and "--no-enable-prefix-caching" in enc
    lm = by_name["lm.sh"].read_text()
    assert f"--tensor-parallel-size \\\n  {plan.epd.lm.tp} \\" in lm
    bash_syntax_ok(by_name["proxy.sh"])
    encoders = ",".join(f"http://localhost:{8001 + i}" for i in range(plan.epd.encoders_per_replica))
    assert encoders in by_name["proxy.sh"].read_text()


def test_epd_pod_holds_one_unit_and_passes_the_kubernetes_schema(tmp_path):
    pytest.importorskip("kubernetes_validate")
    plan = Plan.load(EPD_PLAN)
    written, refused = emit_each(plan, tmp_path, ["k8s-vllm"])
    assert not refused
    docs = load_yaml_docs(written[0])
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for d in docs:
        k8s_validate(d)
    dep = docs[0]
    assert dep["spec"]["replicas"] == plan.epd.lm.replicas
    pod = dep["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    n = plan.epd.encoders_per_replica
    assert names == ["lm", *[f"encoder-{i}" for i in range(n)], "proxy"]
    gpus = sum(int(next(iter(c["resources"]["limits"].values()))) for c in pod["containers"] if "resources" in c)
    assert gpus == plan.epd.lm.tp + n  # the unit's GPUs, all on one node
    shared = [v for v in pod["volumes"] if v["name"] == "ec-cache"]
    assert shared == [{"name": "ec-cache", "emptyDir": {"medium": "Memory"}}]
    for c in pod["containers"][:-1]:
        assert {"name": "ec-cache", "mountPath": "/ec_cache"} in c["volumeMounts"]
    assert docs[1]["spec"]["ports"][0]["port"] == 8000  # clients reach the proxy


def test_epd_refuses_nim_in_one_line_and_a_bad_ec_config_fails_the_flag_check(tmp_path):
    from planner.emit.vllm_flags import FlagError, parse_serve_argv

    plan = Plan.load(EPD_PLAN)
    with pytest.raises(RequestError, match="NIM has no encoder-disaggregation"):
        emit_each(plan, tmp_path, ["nim"], dry_run_first=True)
    with pytest.raises(FlagError, match="shared_storage_path"):
        parse_serve_argv(["vllm", "serve", "m", "--ec-transfer-config",
                          '{"ec_connector":"ECExampleConnector","ec_role":"ec_producer"}'])
    with pytest.raises(FlagError, match="ec_role"):
        parse_serve_argv(["vllm", "serve", "m", "--ec-transfer-config", '{"ec_connector":"ECExampleConnector"}'])
