"""NIM target: run.sh (docker run), nim.env (--env-file) and values.yaml (nim-llm chart 1.1.2)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from emit_support import (
    ROOT,
    bash_syntax_ok,
    deployment,
    parse_env_file,
    run_with_fake,
    single_gpu_plan,
    tp4_plan,
    two_node_plan,
)

from planner.core.errors import RequestError
from planner.emit import nim, vllm

CHART_VALUES = ROOT / "tests" / "fixtures" / "nim-llm-values-1.1.2.yaml"


def test_env_file_names_are_documented_and_the_key_is_absent():
    env = parse_env_file(nim.render_env(single_gpu_plan().deployments[0]))
    assert set(env) <= set(nim.NIM_VARIABLES)
    assert "NGC_API_KEY" not in env
    assert env["NIM_TENSOR_PARALLEL_SIZE"] == "1" and env["NIM_MAX_MODEL_LEN"] == "16384"
    assert env["NIM_MAX_NUM_SEQS"] == "64"
    assert env["NIM_SERVED_MODEL_NAME"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert env["NIM_MODEL_PATH"] == "hf://Qwen/Qwen2.5-VL-7B-Instruct"
    assert env["NIM_ENABLE_KV_CACHE_REUSE"] == "1"


def test_documented_list_excludes_names_no_nvidia_source_uses():
    # vlm-facts.md 3.1: NIM_MAX_BATCH_SIZE and NIM_KV_CACHE_PERCENT appear only in third-party repos.
    assert "NIM_MAX_BATCH_SIZE" not in nim.NIM_VARIABLES
    assert "NIM_KV_CACHE_PERCENT" not in nim.NIM_VARIABLES
    assert {v.status for v in nim.NIM_VARIABLES.values()} == {"official", "usage"}
    with pytest.raises(RequestError, match="documented"):
        nim.validate_variable("NIM_MAX_BATCH_SIZE", "8")
    with pytest.raises(RequestError, match="never from a file"):
        nim.validate_variable("NGC_API_KEY", "nvapi-x")


@pytest.mark.parametrize("plan", [single_gpu_plan, tp4_plan, two_node_plan])
def test_passthrough_args_are_the_vllm_plan(plan):
    dep = plan().deployments[0]
    env = parse_env_file(nim.render_env(dep))
    passed = nim.validate_passthrough(env["NIM_PASSTHROUGH_ARGS"])
    from_vllm = vllm.validate(dep, [str(a) for a in vllm.serve_args(dep, node_rank="0", master_addr="10.0.0.1")])
    expected = {k: v for k, v in from_vllm.items()
                if k not in ("served-model-name", "host", "port", "nnodes", "node-rank", "master-addr", "master-port",
                             "api-server-count")}  # a vllm serve flag NIM documents no way to pass: noted instead
    assert passed == expected
    if dep.api_server_count > 1:
        assert "--api-server-count" not in env["NIM_PASSTHROUGH_ARGS"]
        assert f"NOT APPLIED: the plan runs {dep.api_server_count} API servers" in nim.render_env(dep)


def test_profile_only_when_certain():
    assert nim.nim_profile(deployment(tp=2, gpus_per_replica=2)) == "vllm-bf16-tp2-pp1"
    assert nim.nim_profile(tp4_plan().deployments[0]) is None  # fp8 computed online: no generic profile name
    assert nim.nim_profile(two_node_plan().deployments[0]) is None  # PP=2: 2.x generic profiles are pp1
    assert nim.nim_profile(deployment(tp=3, pp=1, gpus_per_replica=3)) is None
    llama = deployment(model="meta-llama/Llama-3.2-11B-Vision-Instruct",
                       served_model="meta-llama/Llama-3.2-11B-Vision-Instruct", vllm_supported=False,
                       hf_architecture="MllamaForConditionalGeneration")
    assert nim.nim_profile(llama) is None  # model-specific NIM: its profile names are not known here


def test_model_specific_nim_for_llama_vision():
    llama = deployment(model="meta-llama/Llama-3.2-11B-Vision-Instruct",
                       served_model="meta-llama/Llama-3.2-11B-Vision-Instruct", vllm_supported=False,
                       hf_architecture="MllamaForConditionalGeneration")
    image = nim.nim_image(llama)
    assert image.ref == "nvcr.io/nim/meta/llama-3.2-11b-vision-instruct:1.1.1" and not image.model_free
    env = parse_env_file(nim.render_env(llama))
    assert "NIM_MODEL_PATH" not in env  # the image brings its own weights from NGC
    assert "-e HF_TOKEN" not in nim.render_run_sh(llama)


def _fake_run(tmp_path: Path, dep, env: dict[str, str]) -> list[str]:
    folder = tmp_path / "nim"
    nim.write(dep, folder)
    bash_syntax_ok(folder / "run.sh")
    return run_with_fake(folder / "run.sh", "docker", env, tmp_path)


def test_run_sh_docker_argv(tmp_path: Path):
    argv = _fake_run(tmp_path, single_gpu_plan().deployments[0], {"NGC_API_KEY": "nvapi-SECRET"})
    folder = tmp_path / "nim"
    assert argv[:2] == ["docker", "run"]
    pairs = list(zip(argv, argv[1:]))
    assert ("-e", "NGC_API_KEY") in pairs  # the value comes from the environment, not the command line
    assert not any("SECRET" in a for a in argv)
    assert ("--env-file", str(folder / "nim.env")) in pairs
    assert ("--gpus", '"device=0"') in pairs  # 1 of the node's 8 GPUs; docker's CSV syntax needs the quotes
    assert ("-v", f"{tmp_path}/.cache/nim:/opt/nim/.cache") in pairs
    assert ("-p", "8000:8000") in pairs
    assert ("--shm-size", "16g") in pairs
    assert argv[-1] == "nvcr.io/nim/nvidia/llm-nim:latest"


def test_run_sh_overrides_and_all_gpus(tmp_path: Path):
    dep = deployment(tp=8, gpus_per_replica=8)  # the whole 8-GPU node
    argv = _fake_run(tmp_path, dep, {"NGC_API_KEY": "k", "HOST_PORT": "9000", "NIM_IMAGE": "my/nim:1"})
    pairs = list(zip(argv, argv[1:]))
    assert ("--gpus", "all") in pairs and ("-p", "9000:8000") in pairs and argv[-1] == "my/nim:1"
    assert ("--shm-size", "32g") in pairs


def test_run_sh_needs_the_key(tmp_path: Path):
    folder = tmp_path / "nim"
    nim.write(single_gpu_plan().deployments[0], folder)
    proc = subprocess.run(["bash", str(folder / "run.sh")], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "NGC_API_KEY" in proc.stderr


def test_multi_node_run_sh_explains_instead_of_starting(tmp_path: Path):
    folder = tmp_path / "nim"
    nim.write(two_node_plan().deployments[0], folder)
    proc = subprocess.run(["bash", str(folder / "run.sh")], env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Helm chart" in proc.stderr


def _key_paths(data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(data, dict) and data:
        return [p for k, v in data.items() for p in _key_paths(v, (*prefix, str(k)))]
    return [prefix]


def _allowed(path: tuple[str, ...], reference: dict[str, Any]) -> bool:
    """A key path exists in the chart's values, or stops under a free-form entry ({} or [] there)."""
    node: Any = reference
    for key in path:
        if isinstance(node, dict) and key in node:
            node = node[key]
            continue
        return node in ({}, [])
    return True


@pytest.mark.parametrize("plan", [single_gpu_plan, tp4_plan, two_node_plan])
def test_values_yaml_uses_only_chart_keys(plan):
    reference = yaml.safe_load(CHART_VALUES.read_text())
    values = yaml.safe_load(nim.render_values(plan().deployments[0]))
    bad = [p for p in _key_paths(values) if not _allowed(p, reference)]
    assert not bad
    assert values["model"]["ngcAPISecret"] == "ngc-api"
    assert all("value" in e or "valueFrom" in e for e in values["env"])
    assert not any(e["name"] == "NGC_API_KEY" for e in values["env"])


def test_values_yaml_multi_node():
    values = yaml.safe_load(nim.render_values(two_node_plan().deployments[0]))
    # 16 GPUs on 8-GPU nodes: 2 pods of 8 GPUs per replica; chart multiNode.workers = pods per replica.
    assert values["multiNode"] == {"enabled": True, "workers": 2, "gpusPerNode": 8,
                                   "leaderWorkerSet": {"enabled": True}}
    assert values["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert values["model"]["jsonLogging"] is False
    assert values["replicaCount"] == 1
    # checkpoint 27.5 GiB/GPU x 16 GPUs = 440 GiB; x1.5 + 10 = 670 GiB, already a multiple of 10.
    assert values["persistence"]["size"] == "670Gi"


def test_values_yaml_escapes_dollar_for_the_kubelet():
    dep = deployment(model="org/$(HF_TOKEN)", served_model="org/$(HF_TOKEN)")
    values = yaml.safe_load(nim.render_values(dep))
    env = {e["name"]: e.get("value") for e in values["env"]}
    assert env["NIM_SERVED_MODEL_NAME"] == "org/$$(HF_TOKEN)"


def test_amd_gpus_are_refused():
    dep = deployment(gpu="MI300X-192GB", gpu_aliases=["MI300X"])
    with pytest.raises(RequestError, match="NVIDIA GPUs"):
        nim.write(dep, Path("/nonexistent"))


def test_env_file_value_with_quotes_survives_literally():
    dep = deployment(mm_processor_kwargs={"note": "it's \"quoted\" $HOME"})
    env = parse_env_file(nim.render_env(dep))
    tokens = shlex.split(env["NIM_PASSTHROUGH_ARGS"])
    assert tokens[tokens.index("--mm-processor-kwargs") + 1] == '{"note":"it\'s \\"quoted\\" $HOME"}'


def test_local_model_folder_is_mounted_read_only(tmp_path: Path):
    model = "/data/my models/qwen vl"
    argv = _fake_run(tmp_path, deployment(model=model, served_model=model), {"NGC_API_KEY": "k"})
    assert ("-v", "/data/my models/qwen vl:/opt/nim/model:ro") in list(zip(argv, argv[1:]))
    env = parse_env_file((tmp_path / "nim" / "nim.env").read_text())
    assert env["NIM_MODEL_PATH"] == "/opt/nim/model"
    with pytest.raises(RequestError, match="':'"):
        nim.write(deployment(model="/data/a:b", served_model="/data/a:b"), tmp_path / "other")
    assert not (tmp_path / "other").exists()
