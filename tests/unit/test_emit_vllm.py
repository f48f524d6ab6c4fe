"""vLLM target: serve.sh and config.yaml, and the vLLM 0.33 flag validator they are checked with."""

from __future__ import annotations

import json
import re
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
    run_with_fake,
    script_argv,
    single_gpu_plan,
    tp4_plan,
    two_node_plan,
    validate_vllm_argv,
)

from planner.core.errors import RequestError
from planner.emit import vllm, vllm_flags

FIXTURE = ROOT / "tests" / "fixtures" / "vllm-0.33-flags.txt"


# --- the validator --------------------------------------------------------------------------------------------

def test_engine_flags_match_the_copied_vllm_033_list():
    listed = {json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()}
    assert len(listed) == 256
    assert {f"--{name}" for name in vllm_flags.ENGINE_FLAGS} == listed


def test_serve_only_flags_are_not_engine_flags():
    # --host/--port/--headless/--config belong to `vllm serve` (FrontendArgs, make_arg_parser), not to EngineArgs:
    # the 0.33 engine list does not contain them, so the validator must add them.
    for name in ("host", "port", "headless", "config", "api-server-count"):
        assert name in vllm_flags.SERVE_FLAGS
        assert name not in vllm_flags.ENGINE_FLAGS


def _argv(*flags: str) -> list[str]:
    return ["vllm", "serve", "Qwen/Qwen2.5-VL-7B-Instruct", *flags]


@pytest.mark.parametrize("flags, message", [
    (["--swap-space", "4"], "not a vLLM"),  # removed between 0.11 and 0.33 (vlm-facts.md 2.1)
    (["--disable-mm-preprocessor-cache"], "not a vLLM"),  # replaced by --mm-processor-cache-gb 0
    (["--kv-cache-dtype", "fp16"], "expected one of"),  # CacheDType has float16/bfloat16/fp8..., no fp16
    (["--quantization", "bitsandbytes"], "expected one of"),  # gone from the 0.33 list
    (["--gpu-memory-utilization", "1.2"], "(0, 1]"),
    (["--gpu-memory-utilization", "nan"], "not a valid float"),
    (["--tensor-parallel-size", "0"], ">= 1"),
    (["--tensor-parallel-size", "two"], "not a valid int"),
    (["--limit-mm-per-prompt", "image=4"], "not a valid json"),  # the pre-0.9 KEY=VALUE form
    (["--limit-mm-per-prompt", '{"image": -1}'], ">= 0"),
    (["--max-num-seqs", "4", "--max-num-seqs", "8"], "given twice"),
    (["--max-num-seqs", "64", "--max-num-batched-tokens", "32"], ">= --max-num-seqs"),
    (["--no-enable-chunked-prefill", "--max-model-len", "16384", "--max-num-batched-tokens", "8192"],
     ">= --max-model-len"),
    (["--nnodes", "2", "--node-rank", "0", "--headless"], "head node"),
    (["--nnodes", "2", "--node-rank", "2"], "< --nnodes"),
    (["--enable-prefix-caching=true"], "takes no value"),
    (["--block-size", "16"], "not modelled"),  # a real flag whose value type vlmplan does not check
    (["--quantization", "fbgemm_fp8"], "deprecated"),
])
def test_validator_rejects(flags: list[str], message: str):
    with pytest.raises(vllm_flags.FlagError, match=re.escape(message)):
        vllm_flags.parse_serve_argv(_argv(*flags))


def test_validator_accepts_and_types_values():
    _, values = vllm_flags.parse_serve_argv(_argv(
        "--tensor-parallel-size", "4", "--gpu-memory-utilization", "0.9", "--no-enable-prefix-caching",
        "--limit-mm-per-prompt", '{"image": {"count": 2, "width": 1024, "height": 768}, "video": 0}',
        "--served-model-name", "a", "b", "--port=8001",
    ))
    assert values == {
        "tensor-parallel-size": 4, "gpu-memory-utilization": 0.9, "enable-prefix-caching": False,
        "limit-mm-per-prompt": {"image": {"count": 2, "width": 1024, "height": 768}, "video": 0},
        "served-model-name": ["a", "b"], "port": 8001,
    }


def test_validator_needs_the_model_first():
    with pytest.raises(vllm_flags.FlagError, match="positional"):
        vllm_flags.parse_serve_argv(["vllm", "serve", "--tensor-parallel-size", "1"])


@pytest.mark.parametrize("data, message", [
    ({"enable-prefix-caching": False}, "dropped"),  # vLLM 0.33 drops a false when `vllm serve` reads the file
    ({"swap-space": 4}, "not a vLLM"),
    ({"max-num-seqs": "64"}, "expected an integer"),
    ({"limit-mm-per-prompt": '{"image": 2}'}, "expected a mapping"),
    ({"config": "other.yaml"}, "cannot include"),
])
def test_config_validator_rejects(data: dict[str, Any], message: str):
    with pytest.raises(vllm_flags.FlagError, match=message):
        vllm_flags.parse_config(data)


# --- serve.sh ---------------------------------------------------------------------------------------------------

def test_single_gpu_serve_sh_argv_is_exactly_the_plan(tmp_path: Path):
    dep = single_gpu_plan().deployments[0]
    script = vllm.render_serve_sh(dep)
    expected = [
        "vllm", "serve", "Qwen/Qwen2.5-VL-7B-Instruct",
        "--tensor-parallel-size", "1", "--pipeline-parallel-size", "1", "--dtype", "bfloat16",
        "--max-model-len", "16384", "--max-num-seqs", "64", "--max-num-batched-tokens", "8192",
        "--gpu-memory-utilization", "0.92", "--enable-prefix-caching", "--enable-chunked-prefill",
        "--limit-mm-per-prompt", '{"image":2}', "--mm-processor-kwargs", '{"max_pixels":1003520}',
        "--api-server-count", "2",  # the plan's two API servers
        "--host", "0.0.0.0", "--port", "8000",
    ]
    assert script_argv(script, {}) == expected
    path = tmp_path / "serve.sh"
    path.write_text(script)
    bash_syntax_ok(path)
    assert run_with_fake(path, "vllm", {}, tmp_path) == expected  # what bash really passes
    assert script.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in script
    assert "vLLM 0.33.0" in script.splitlines()[1]
    assert validate_vllm_argv(expected)["max-num-seqs"] == 64


def test_tp4_serve_sh_false_booleans_and_fp8(tmp_path: Path):
    dep = tp4_plan().deployments[0]
    argv = script_argv(vllm.render_serve_sh(dep), {})
    values = validate_vllm_argv(argv)
    assert values["tensor-parallel-size"] == 4
    assert values["quantization"] == "fp8" and values["kv-cache-dtype"] == "fp8"
    assert "dtype" not in values  # activation dtype left to vLLM for a quantized model
    assert "--no-enable-prefix-caching" in argv and "--no-enable-chunked-prefill" in argv
    assert values["mm-encoder-tp-mode"] == "data"
    assert values["limit-mm-per-prompt"] == {"image": 4, "video": 0}


def test_extra_arguments_pass_through(tmp_path: Path):
    path = tmp_path / "serve.sh"
    path.write_text(vllm.render_serve_sh(single_gpu_plan().deployments[0]))
    proc_argv = _run_args(path, ["--port", "8001"], tmp_path)
    assert proc_argv[-2:] == ["--port", "8001"]


def _run_args(path: Path, extra: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> list[str]:
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    out = tmp_path / "argv.json"
    (bindir / "vllm").write_text(f"#!/usr/bin/env python3\nimport json, sys\njson.dump(sys.argv[1:], "
                                 f"open({str(out)!r}, 'w'))\n")
    (bindir / "vllm").chmod(0o755)
    subprocess.run(["bash", str(path), *extra], env={"PATH": f"{bindir}:/usr/bin:/bin", **(env or {})},
                   check=True, capture_output=True)
    return ["vllm", *json.loads(out.read_text())]


def test_two_node_serve_sh_per_rank(tmp_path: Path):
    dep = two_node_plan().deployments[0]
    script = vllm.render_serve_sh(dep)
    path = tmp_path / "serve.sh"
    path.write_text(script)
    bash_syntax_ok(path)
    for rank in ("0", "1"):
        env = {"NODE_RANK": rank, "MASTER_ADDR": "10.1.2.3"}
        real = _run_args(path, [], tmp_path, env)
        assert real == script_argv(script, env)
        values = validate_vllm_argv(real)
        # 16 GPUs = TP 8 x PP 2 on 8-GPU nodes: 16 / 8 = 2 nodes, 8 ranks each.
        assert values["nnodes"] == 2 and values["node-rank"] == int(rank)
        assert values["master-addr"] == "10.1.2.3" and values["master-port"] == 29501
        assert values.get("headless", False) is (rank == "1")


@pytest.mark.parametrize("env, message", [
    ({"MASTER_ADDR": "10.0.0.1"}, "NODE_RANK"),
    ({"NODE_RANK": "0"}, "MASTER_ADDR"),
    ({"NODE_RANK": "2", "MASTER_ADDR": "10.0.0.1"}, "must be 0..1"),
])
def test_two_node_serve_sh_refuses_missing_or_bad_rank(tmp_path: Path, env: dict[str, str], message: str):
    path = tmp_path / "serve.sh"
    path.write_text(vllm.render_serve_sh(two_node_plan().deployments[0]))
    proc = subprocess.run(["bash", str(path)], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True)
    assert proc.returncode != 0 and message in proc.stderr


NASTY_IDS = [
    "/models/it's a \"model\" with spaces",
    "/models/$HOME/$(touch {tmp}/pwned)/`touch {tmp}/pwned2`;rm -rf x|y&z",
    "/models/back\\slash and *glob? [x] {a,b} ~user #hash !bang",
    "/models/unicodé 模型 $'quoted'",
]


@pytest.mark.parametrize("model", NASTY_IDS)
def test_nasty_model_paths_round_trip_exactly(tmp_path: Path, model: str):
    model = model.replace("{tmp}", str(tmp_path))
    dep = deployment(model=model, served_model=model)
    script = vllm.render_serve_sh(dep)
    path = tmp_path / "serve.sh"
    path.write_text(script)
    bash_syntax_ok(path)
    assert script_argv(script, {})[2] == model
    assert _run_args(path, [], tmp_path)[2] == model
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    config = yaml.safe_load(vllm.render_config_yaml(dep))
    assert config["model"] == model


def test_served_model_name_keeps_the_original_id(tmp_path: Path):
    dep = deployment(precision="int4", served_model="Qwen/Qwen2.5-VL-7B-Instruct-AWQ")
    argv = script_argv(vllm.render_serve_sh(dep), {})
    assert argv[2] == "Qwen/Qwen2.5-VL-7B-Instruct-AWQ"
    values = validate_vllm_argv(argv)
    assert values["served-model-name"] == ["Qwen/Qwen2.5-VL-7B-Instruct"]
    assert "quantization" not in values  # read from the checkpoint's quantization_config


def test_trust_remote_code_only_when_needed():
    assert "--trust-remote-code" not in script_argv(vllm.render_serve_sh(deployment()), {})
    argv = script_argv(vllm.render_serve_sh(deployment(model="OpenGVLab/InternVL3-8B",
                                                       served_model="OpenGVLab/InternVL3-8B",
                                                       trust_remote_code=True)), {})
    assert "--trust-remote-code" in argv


def test_text_model_has_no_multimodal_flags():
    dep = deployment(model="Qwen/Qwen3-8B", served_model="Qwen/Qwen3-8B", limit_mm_per_prompt={},
                     mm_processor_kwargs={}, mm_encoder_tp_mode="data")
    values = validate_vllm_argv(script_argv(vllm.render_serve_sh(dep), {}))
    assert not {"limit-mm-per-prompt", "mm-processor-kwargs", "mm-encoder-tp-mode"} & set(values)


def test_model_removed_from_vllm_is_refused_with_a_pointer_to_nim():
    dep = deployment(model="meta-llama/Llama-3.2-11B-Vision-Instruct",
                     served_model="meta-llama/Llama-3.2-11B-Vision-Instruct",
                     hf_architecture="MllamaForConditionalGeneration", vllm_supported=False)
    with pytest.raises(RequestError, match="0.10.2.*nim") as info:
        vllm.write(dep, Path("/nonexistent"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("overrides, message", [
    ({"max_num_seqs": 512, "max_num_batched_tokens": 256}, ">= --max-num-seqs"),
    ({"enable_chunked_prefill": False, "max_model_len": 32768, "max_num_batched_tokens": 8192}, ">= --max-model-len"),
    ({"quantization": "bitsandbytes", "precision": "int4"}, "expected one of"),
])
def test_plans_vllm_would_refuse_fail_before_writing(tmp_path: Path, overrides: dict[str, Any], message: str):
    with pytest.raises(RequestError, match=message):
        vllm.write(deployment(**overrides), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- config.yaml ------------------------------------------------------------------------------------------------

def _expand_config_like_vllm(data: dict[str, Any]) -> list[str]:
    """A port of vLLM 0.33 ``FlexibleArgumentParser.load_config_file`` as run by ``vllm serve`` (top-level parser,
    which has no ``--no-...`` options): true -> --key, false -> dropped, list -> --key items, dict -> JSON."""
    args: list[str] = []
    for key, value in data.items():
        if isinstance(value, bool):
            if value:
                args.append("--" + key)
        elif isinstance(value, list):
            args += ["--" + key, *[str(v) for v in value]]
        elif isinstance(value, dict):
            args += ["--" + key, json.dumps(value)]
        else:
            args += ["--" + key, str(value)]
    return args


@pytest.mark.parametrize("plan", [single_gpu_plan, tp4_plan, two_node_plan])
def test_config_yaml_is_equivalent_to_serve_sh(plan):
    dep = plan().deployments[0]
    text = vllm.render_config_yaml(dep)
    assert all(line.startswith("#") for line in text.splitlines()[:3])
    data = yaml.safe_load(text)
    vllm_flags.parse_config(data)
    config_values = vllm_flags.parse_config(data)
    _, cli_only = vllm.config_mapping(dep)
    # What vLLM builds from `vllm serve --config config.yaml <cli-only flags> [per-node flags]`.
    model = data["model"]
    rest = {k: v for k, v in data.items() if k != "model"}
    per_node = ["--node-rank", "0", "--master-addr", "10.0.0.1"] if "nnodes" in data else []
    from_config = validate_vllm_argv(["vllm", "serve", model, *_expand_config_like_vllm(rest), *cli_only, *per_node])
    env = {"NODE_RANK": "0", "MASTER_ADDR": "10.0.0.1"}
    from_script = validate_vllm_argv(script_argv(vllm.render_serve_sh(dep), env))
    assert from_config == from_script
    assert {k: v for k, v in config_values.items() if k != "model"} == {
        k: v for k, v in from_script.items() if k not in ("node-rank", "master-addr") and v is not False}


def test_config_yaml_lists_the_false_flags_in_its_header():
    text = vllm.render_config_yaml(tp4_plan().deployments[0])
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "--no-enable-prefix-caching --no-enable-chunked-prefill" in header
    assert "enable-prefix-caching" not in yaml.safe_load(text)


def test_header_comment_cannot_be_broken_by_the_workload_name():
    # Control characters are refused outright (they cannot be carried in argv or env files safely): the plan
    # itself refuses such a name, before any emitter sees it.
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="control character"):
        vllm.write(deployment(served_model="a\nb", model="a\nb"), Path("/nonexistent"))


def test_serve_sh_tokens_are_shell_quoted():
    dep = deployment(mm_processor_kwargs={"max_pixels": 1003520, "note": "a b 'c'"})
    script = vllm.render_serve_sh(dep)
    line = next(x for x in script.splitlines() if "--mm-processor-kwargs" in x)
    token = line.strip().removesuffix("\\").strip().split(" ", 1)[1]
    assert shlex.split(token) == ['{"max_pixels":1003520,"note":"a b \'c\'"}']


def test_every_launch_file_says_which_requests_its_limits_refuse_or_shrink():
    """Issue 13, item 5: the context cap, the images per prompt and max_pixels come from the planned workload;
    the header of every emitted file says what they do to other traffic (the values of the plan, not defaults)."""
    dep = deployment()  # max_model_len 16384, 2 images per prompt, max_pixels 1,003,520
    for text in (vllm.render_serve_sh(dep), vllm.render_config_yaml(dep)):
        line = next(ln for ln in text.splitlines() if "limits:" in ln)
        assert "over 16,384 tokens is rejected" in line
        assert "more than 2 image(s) per prompt are rejected" in line
        assert "over 1,003,520 pixels are downscaled" in line
    text_only = deployment(limit_mm_per_prompt={}, mm_processor_kwargs={})
    assert "image" not in text_only.launch_limits()
