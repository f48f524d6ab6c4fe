"""Offline validator for vLLM 0.33 ``vllm serve`` command lines and ``--config`` YAML files.

Built from the vLLM 0.33.0 wheel on PyPI (read as source, not imported: it needs torch and a GPU):

* ``ENGINE_FLAGS``: every option of ``AsyncEngineArgs.add_cli_args`` (``vllm/engine/arg_utils.py``), the list in
  ``vllm-0.33-flags.txt`` (copied to ``tests/fixtures/vllm-0.33-flags.txt``; a test keeps the two equal).
* ``SERVE_FLAGS``: what ``vllm serve`` adds on top (``vllm/entrypoints/common/cli_args.py`` ``make_arg_parser``:
  ``--headless``, ``--api-server-count``, ``--config``, ``--grpc``, and the fields of ``BaseFrontendArgs`` /
  ``FrontendArgs`` such as ``--host`` and ``--port``).
* ``SPECS``: value type and allowed values of the flags vlmplan emits, from the same source files
  (``vllm/config/cache.py`` ``CacheDType``, ``vllm/model_executor/layers/quantization/__init__.py``
  ``QuantizationMethods``, ``vllm/config/model.py`` ``ModelDType``, ``vllm/config/multimodal.py``
  ``MMEncoderTPMode``, ``vllm/config/parallel.py`` and ``vllm/config/scheduler.py`` for ranges and cross-checks).

A flag vlmplan does not emit is still recognised (so a user's extra flag is not called unknown) but its value is not
checked: the validator refuses to guess its arity and reports it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VERSION = "0.33.0"

ENGINE_FLAGS: frozenset[str] = frozenset({
    "additional-config", "aggregate-engine-logging", "all2all-backend", "allow-deprecated-quantization",
    "allowed-local-media-path", "allowed-media-domains", "async-scheduling", "attention-backend", "attention-config",
    "aux-output-config", "block-size", "code-revision", "collect-detailed-traces", "compilation-config",
    "config-format", "convert", "cp-kv-cache-interleave-size", "cpu-distributed-timeout-seconds", "cpu-offload-gb",
    "cpu-offload-params", "cudagraph-capture-sizes", "cudagraph-metrics", "custom-histogram-buckets",
    "data-parallel-address", "data-parallel-backend", "data-parallel-external-lb", "data-parallel-hybrid-lb",
    "data-parallel-multi-port-external-lb", "data-parallel-rank", "data-parallel-rpc-port", "data-parallel-size",
    "data-parallel-size-local", "data-parallel-start-rank", "dbo-decode-token-threshold",
    "dbo-prefill-token-threshold", "dcp-comm-backend", "dcp-kv-cache-interleave-size", "dcp-q-replicate",
    "decode-context-parallel-size", "default-mm-loras", "device-ids", "device-memory-utilization",
    "diffusion-config", "disable-cascade-attn", "disable-chunked-mm-input", "disable-custom-all-reduce",
    "disable-hybrid-kv-cache-manager", "disable-log-stats", "disable-nccl-for-dp-synchronization",
    "disable-sliding-window", "distributed-executor-backend", "distributed-timeout-seconds", "download-dir",
    "dp-sync-interval", "dtype", "ec-manager-config", "ec-transfer-config", "elastic-ep-max-dp-size",
    "enable-batch-sharded-sampling", "enable-chunked-prefill", "enable-cumem-allocator", "enable-dbo",
    "enable-elastic-ep", "enable-ep-weight-filter", "enable-eplb", "enable-expert-parallel",
    "enable-fault-tolerance", "enable-flashinfer-autotune", "enable-hc-sp", "enable-layerwise-nvtx-tracing",
    "enable-log-requests", "enable-logging-iteration-details", "enable-lora",
    "enable-mamba-cache-stochastic-rounding", "enable-mamba-shared-prefix-checkpoint", "enable-mfu-metrics",
    "enable-mixed-moe-lora-format", "enable-mm-embeds", "enable-moe-shared-loras", "enable-nccl-comm-suspend",
    "enable-prefix-caching", "enable-prompt-embeds", "enable-return-routed-experts", "enable-shm-tensor-arena",
    "enable-sleep-mode", "enable-tower-connector-lora", "enable-trace-replay", "enforce-eager", "engram-config",
    "eplb-config", "expert-placement-strategy", "fail-on-environ-validation", "fault-tolerance-config",
    "fully-sharded-loras", "gdn-prefill-backend", "generation-config", "gpu-memory-utilization", "help",
    "hf-config-path", "hf-overrides", "hf-token", "ignore-patterns", "interleave-mm-strings", "io-processor-plugin",
    "ir-op-priority", "jit-monitor-mode", "jit-monitor-verbose", "kda-decode-backend", "kda-prefill-backend",
    "kernel-config", "kv-cache-dtype", "kv-cache-dtype-skip-layers", "kv-cache-memory-bytes", "kv-cache-metrics",
    "kv-cache-metrics-sample", "kv-events-config", "kv-offloading-backend", "kv-offloading-size",
    "kv-sharing-fast-prefill", "kv-transfer-config", "language-model-only", "limit-mm-per-prompt", "linear-backend",
    "load-format", "log-config-file", "log-level", "logging-config", "logits-processors", "logprobs-mode",
    "long-prefill-token-threshold", "long-prefill-token-threshold-adaptive", "lora-dtype", "lora-target-modules",
    "mamba-backend", "mamba-block-size", "mamba-cache-dtype", "mamba-cache-mode", "mamba-cache-philox-rounds",
    "mamba-ssm-cache-dtype", "mamba-ssu-algorithm", "master-addr", "master-port", "max-cpu-loras",
    "max-cudagraph-capture-size", "max-logprobs", "max-lora-cls-labels", "max-lora-rank", "max-loras",
    "max-model-len", "max-num-active-seqs", "max-num-batched-tokens", "max-num-queued-reqs", "max-num-queued-tokens",
    "max-num-scheduled-tokens", "max-num-seqs", "max-parallel-loading-workers", "media-io-kwargs",
    "mm-device-do-normalize", "mm-encoder-attn-backend", "mm-encoder-attn-dtype", "mm-encoder-fp8-scale-path",
    "mm-encoder-fp8-scale-save-margin", "mm-encoder-fp8-scale-save-path", "mm-encoder-only", "mm-encoder-tp-mode",
    "mm-hasher-algorithm", "mm-ipc-gpu-memory-gb", "mm-processor-cache-gb", "mm-processor-cache-type",
    "mm-processor-device", "mm-processor-kwargs", "mm-shm-cache-max-object-size-mb", "mm-tensor-ipc", "model",
    "model-class-overrides", "model-impl", "model-loader-extra-config", "moe-backend", "monokernel", "nnodes",
    "node-rank", "num-gpu-blocks-override", "numa-bind", "numa-bind-cpus", "numa-bind-nodes", "offload-backend",
    "offload-group-size", "offload-num-in-group", "offload-params", "offload-prefetch-step", "optimization-level",
    "otlp-traces-endpoint", "override-generation-config", "per-request-spec-decode-metrics", "performance-mode",
    "pipeline-parallel-size", "pooler-config", "prefill-context-parallel-size", "prefill-schedule-interval",
    "prefix-cache-retention-interval", "prefix-caching-hash-algo", "prefix-match-unit", "profiler-config",
    "pt-load-map-location", "quantization", "quantization-config", "ray-workers-use-nsight", "reasoning-config",
    "reasoning-parser", "reasoning-parser-plugin", "renderer-num-workers", "replayssm-buffer-len",
    "return-sampling-mask", "revision", "runner", "safetensors-load-strategy", "safetensors-prefetch-block-size",
    "safetensors-prefetch-num-threads", "scheduler-cls", "scheduler-reserve-full-isl", "scheduling-policy", "seed",
    "served-model-name", "show-hidden-metrics-for-version", "shutdown-timeout", "skip-mm-profiling",
    "skip-tokenizer-init", "sleep-mode-backend", "sleep-mode-offload-cudagraph", "sleep-preserve-parameter-names",
    "sparse-indexer-topk-backend", "spec-method", "spec-model", "spec-tokens", "specialize-active-lora",
    "speculative-config", "stream-interval", "structured-outputs-config", "swa-bounded-replay",
    "tensor-parallel-size", "tokenizer", "tokenizer-mode", "tokenizer-revision", "trust-remote-code", "ubatch-size",
    "use-fp64-gumbel", "use-replayssm", "use-tqdm-on-load", "video-pruning-method", "video-pruning-rate",
    "watchdog-config", "watermark", "watermark-config", "weight-transfer-config", "worker-cls",
    "worker-extension-cls",
})
"""Option names (without ``--``) of ``AsyncEngineArgs`` in vLLM 0.33.0, plus ``help``."""

SERVE_FLAGS: frozenset[str] = frozenset({
    "allow-credentials", "allowed-headers", "allowed-methods", "allowed-origins",
    "anthropic-disabled-thinking-effort", "api-key", "api-server-count", "chat-template",
    "chat-template-content-format", "cohere-format", "cohere-is-reasoning-model", "config",
    "data-parallel-supervisor-port", "default-chat-template-kwargs", "disable-access-log-for-endpoints",
    "disable-fastapi-docs", "disable-uvicorn-access-log", "dp-supervisor-probe-failure-threshold",
    "dp-supervisor-probe-interval-s", "dp-supervisor-probe-timeout-s", "enable-auto-tool-choice",
    "enable-flash-late-interaction", "enable-force-include-usage", "enable-log-deltas", "enable-log-outputs",
    "enable-offline-docs", "enable-per-request-metrics", "enable-prompt-tokens-details", "enable-request-id-headers",
    "enable-scale-out", "enable-server-load-tracking", "enable-ssl-refresh", "enable-tokenizer-info-endpoint",
    "exclude-tools-when-tool-choice-none", "fingerprint-mode", "fingerprint-value", "grpc", "grpc-port",
    "h11-max-header-count", "h11-max-incomplete-event-size", "headless", "host", "log-error-stack", "lora-modules",
    "max-log-len", "middleware", "port", "reasoning-effort-map", "response-role", "return-tokens-as-token-ids",
    "root-path", "sse-keep-alive-interval", "ssl-ca-certs", "ssl-cert-reqs", "ssl-certfile", "ssl-ciphers",
    "ssl-keyfile", "tokens-only", "tool-call-parser", "tool-parser-plugin", "tool-server", "tool-strict-level",
    "trust-request-chat-template", "trust-request-mm-kwargs", "uds", "uvicorn-log-level",
})
"""Options ``vllm serve`` adds to the engine options in vLLM 0.33.0 (frontend and serve-only)."""

KNOWN_FLAGS: frozenset[str] = ENGINE_FLAGS | SERVE_FLAGS

CACHE_DTYPES = (
    "auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla", "nvfp4_ds_mla",
    "turboquant_k8v4", "turboquant_4bit_nc", "turboquant_k3v4_nc", "turboquant_3bit_nc", "octave_k3v4", "octave_k3v3",
    "octave_k3v3_compact", "ultraquant_4bit", "int4_per_token_head", "int8_per_token_head", "fp8_per_token_head",
    "nvfp4", "nvfp4_4over6",
)
"""``vllm/config/cache.py`` ``CacheDType`` (0.33.0)."""

QUANTIZATION_METHODS = (
    "awq", "auto_awq", "fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4", "modelopt_mxfp8",
    "modelopt_mixed", "auto_gptq", "gptq", "gptq_marlin", "awq_marlin", "humming", "compressed-tensors",
    "experts_int8", "quark", "moe_wna16", "torchao", "inc", "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8", "online",
    "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "int8_per_channel_weight_only", "nvfp4_per_token", "mxfp8",
)
"""``vllm/model_executor/layers/quantization/__init__.py`` ``QuantizationMethods`` (0.33.0)."""

DEPRECATED_QUANTIZATION = ("fbgemm_fp8", "fp_quant")
"""Need ``--allow-deprecated-quantization`` in 0.33.0 (``DEPRECATED_QUANTIZATION_METHODS``)."""

MODEL_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
"""``vllm/config/model.py`` ``ModelDType`` (0.33.0)."""

MM_ENCODER_TP_MODES = ("weights", "data")
"""``vllm/config/multimodal.py`` ``MMEncoderTPMode`` (0.33.0)."""


class FlagError(ValueError):
    """An emitted command line or config file that vLLM 0.33 would reject (or silently misread)."""


@dataclass(frozen=True)
class Spec:
    kind: str
    """``int``, ``float``, ``str``, ``json``, ``choice``, ``bool`` (BooleanOptionalAction: ``--x``/``--no-x``),
    ``store_true`` (``--x`` only), ``names`` (nargs='+' strings)."""
    check: Callable[[Any], str | None] | None = None
    """Returns an error message for a parsed value that is out of range."""
    choices: tuple[str, ...] = ()


def _at_least(low: int) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be >= {low}"


def _port(v: int) -> str | None:
    return None if 0 < v < 65536 else "must be a TCP port (1..65535)"


def _fraction(v: float) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]"  # CacheConfig: Field(gt=0, le=1)


def _limit_mm(v: Any) -> str | None:
    # ModelConfig.limit_mm_per_prompt: dict[str, int | dict[str, int]]
    if not isinstance(v, dict):
        return "must be a JSON object such as {\"image\": 2}"
    for key, item in v.items():
        if isinstance(item, bool) or not isinstance(item, (int, dict)):
            return f"value of {key!r} must be an integer or an object"
        if isinstance(item, int) and item < 0:
            return f"count of {key!r} must be >= 0"
        if isinstance(item, dict) and not all(isinstance(x, int) and not isinstance(x, bool) for x in item.values()):
            return f"options of {key!r} must be integers"
    return None


def _json_object(v: Any) -> str | None:
    return None if isinstance(v, dict) else "must be a JSON object"


KV_ROLES = ("kv_producer", "kv_consumer", "kv_both")
"""``KVTransferConfig.kv_role`` (vllm/config/kv_transfer.py)."""


def _kv_transfer(v: Any) -> str | None:
    """``--kv-transfer-config``: a KVTransferConfig object naming a connector and a role."""
    if not isinstance(v, dict):
        return "must be a JSON object such as {\"kv_connector\": \"NixlConnector\", \"kv_role\": \"kv_both\"}"
    if not isinstance(v.get("kv_connector"), str):
        return "needs kv_connector (a connector name, e.g. NixlConnector)"
    if v.get("kv_role") not in KV_ROLES:
        return f"kv_role must be one of {', '.join(KV_ROLES)}"
    return None


EC_ROLES = ("ec_producer", "ec_consumer", "ec_both")
"""``ECTransferConfig.ec_role`` (vllm/config/ec_transfer.py in the 0.26.0 wheel)."""


def _ec_transfer(v: Any) -> str | None:
    """``--ec-transfer-config``: an ECTransferConfig object naming a connector and a role (vLLM raises when a
    connector has no role); ECExampleConnector needs its shared_storage_path."""
    if not isinstance(v, dict):
        return "must be a JSON object such as {\"ec_connector\": \"ECExampleConnector\", \"ec_role\": \"ec_producer\"}"
    if not isinstance(v.get("ec_connector"), str):
        return "needs ec_connector (a connector name, e.g. ECExampleConnector)"
    if v.get("ec_role") not in EC_ROLES:
        return f"ec_role must be one of {', '.join(EC_ROLES)}"
    extra = v.get("ec_connector_extra_config", {})
    if not isinstance(extra, dict):
        return "ec_connector_extra_config must be a JSON object"
    if v["ec_connector"] == "ECExampleConnector" and not isinstance(extra.get("shared_storage_path"), str):
        return "ECExampleConnector needs ec_connector_extra_config.shared_storage_path (else it writes to /tmp)"
    return None


SPECULATIVE_METHODS = ("ngram", "eagle", "eagle3", "mtp")
"""``SpeculativeConfig.method`` values a plan may carry (vllm/config/speculative.py lists more)."""


def _speculative(v: Any) -> str | None:
    """``--speculative-config``: a SpeculativeConfig object with a method, ``num_speculative_tokens`` > 0, a draft
    ``model`` where the method needs one (eagle, eagle3) and ngram's prompt-lookup window."""
    if not isinstance(v, dict):
        return "must be a JSON object such as {\"method\": \"ngram\", \"num_speculative_tokens\": 3}"
    if v.get("method") not in SPECULATIVE_METHODS:
        return f"method must be one of {', '.join(SPECULATIVE_METHODS)}"
    k = v.get("num_speculative_tokens")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        return "num_speculative_tokens must be an integer > 0"
    if v["method"] in ("eagle", "eagle3") and not isinstance(v.get("model"), str):
        return f"method {v['method']} needs model (the draft checkpoint)"
    if v["method"] == "ngram":
        lo, hi = v.get("prompt_lookup_min"), v.get("prompt_lookup_max")
        if not isinstance(lo, int) or not isinstance(hi, int) or not 1 <= lo <= hi:
            return "ngram needs 1 <= prompt_lookup_min <= prompt_lookup_max"
    unknown = set(v) - {"method", "num_speculative_tokens", "model", "prompt_lookup_min", "prompt_lookup_max",
                        "draft_tensor_parallel_size"}
    return f"unknown key(s) {', '.join(sorted(unknown))}" if unknown else None


SPECS: dict[str, Spec] = {
    "tensor-parallel-size": Spec("int", _at_least(1)),
    "pipeline-parallel-size": Spec("int", _at_least(1)),
    "max-model-len": Spec("int", _at_least(1)),
    "max-num-seqs": Spec("int", _at_least(1)),
    "max-num-batched-tokens": Spec("int", _at_least(1)),
    "gpu-memory-utilization": Spec("float", _fraction),
    "kv-cache-dtype": Spec("choice", choices=CACHE_DTYPES),
    "quantization": Spec("choice", choices=QUANTIZATION_METHODS),
    "dtype": Spec("choice", choices=MODEL_DTYPES),
    "limit-mm-per-prompt": Spec("json", _limit_mm),
    "mm-processor-kwargs": Spec("json", _json_object),
    "kv-transfer-config": Spec("json", _kv_transfer),
    "speculative-config": Spec("json", _speculative),
    "ec-transfer-config": Spec("json", _ec_transfer),
    "mm-encoder-only": Spec("bool"),
    "enforce-eager": Spec("bool"),
    "mm-encoder-tp-mode": Spec("choice", choices=MM_ENCODER_TP_MODES),
    "trust-remote-code": Spec("bool"),
    "enable-prefix-caching": Spec("bool"),
    "enable-chunked-prefill": Spec("bool"),
    "served-model-name": Spec("names"),
    "host": Spec("str"),
    "port": Spec("int", _port),
    "nnodes": Spec("int", _at_least(1)),
    "node-rank": Spec("int", _at_least(0)),
    "master-addr": Spec("str"),
    "master-port": Spec("int", _port),
    "headless": Spec("store_true"),
    "api-server-count": Spec("int", _at_least(1)),
    "config": Spec("str"),
    "model": Spec("str"),
}
assert set(SPECS) <= KNOWN_FLAGS, sorted(set(SPECS) - KNOWN_FLAGS)


def _convert(name: str, spec: Spec, raw: str) -> Any:
    try:
        if spec.kind == "int":
            return int(raw)
        if spec.kind == "float":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        if spec.kind == "json":
            return json.loads(raw)
    except ValueError:
        raise FlagError(f"--{name} {raw!r}: not a valid {spec.kind}") from None
    if spec.kind == "choice" and raw not in spec.choices:
        raise FlagError(f"--{name} {raw!r}: expected one of {', '.join(spec.choices)}")
    return raw


def _check(name: str, spec: Spec, value: Any) -> None:
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise FlagError(f"--{name} {value!r}: {problem}")


def parse_serve_argv(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``vllm serve MODEL --flag value ...`` (argv[0] = ``vllm``); return (model, {flag: value}).

    Raises :class:`FlagError` on an unknown flag, a flag given twice, a missing or malformed value, a value out of
    range, or a flag whose arity the validator does not model.
    """
    if argv[:2] != ["vllm", "serve"]:
        raise FlagError(f"expected 'vllm serve ...', got {' '.join(argv[:2])!r}")
    rest = argv[2:]
    if not rest or rest[0].startswith("-"):
        raise FlagError("vllm serve: the model must come first, as a positional argument")
    model, tokens = rest[0], rest[1:]
    values: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--"):
            raise FlagError(f"unexpected positional argument {token!r}")
        name, eq, inline = token[2:].partition("=")
        negated = False
        if name not in KNOWN_FLAGS and name.startswith("no-") and name[3:] in SPECS \
                and SPECS[name[3:]].kind == "bool":
            name, negated = name[3:], True
        if name not in KNOWN_FLAGS:
            raise FlagError(f"--{name}: not a vLLM {VERSION} 'vllm serve' option")
        spec = SPECS.get(name)
        if spec is None:
            raise FlagError(f"--{name}: known to vLLM {VERSION} but its value type is not modelled by vlmplan")
        if name in values:
            raise FlagError(f"--{name} given twice")
        if spec.kind in ("bool", "store_true"):
            if eq:
                raise FlagError(f"--{name} takes no value")
            values[name] = not negated
            continue
        if eq:
            raw_values = [inline]
        elif spec.kind == "names":
            raw_values = []
            while i < len(tokens) and not tokens[i].startswith("-"):
                raw_values.append(tokens[i])
                i += 1
        else:
            if i >= len(tokens) or (tokens[i].startswith("--") and spec.kind != "json"):
                raise FlagError(f"--{name}: missing value")
            raw_values = [tokens[i]]
            i += 1
        if not raw_values:
            raise FlagError(f"--{name}: missing value")
        value: Any = raw_values if spec.kind == "names" else _convert(name, spec, raw_values[0])
        _check(name, spec, value)
        values[name] = value
    check_combination(values)
    return model, values


def parse_config(data: Any) -> dict[str, Any]:
    """Check a ``--config`` mapping (keys are flag names without ``--``); return {flag: value}.

    vLLM 0.33 turns ``true`` into ``--key``, but drops ``false`` when ``vllm serve`` parses the file (the top-level
    parser, which lacks the ``--no-key`` options of the serve sub-parser, expands it; ``FlexibleArgumentParser
    .load_config_file``), so a ``false`` here is an error: it would be silently ignored.
    """
    if not isinstance(data, dict):
        raise FlagError("config file must be a YAML mapping of flag names to values")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in KNOWN_FLAGS:
            raise FlagError(f"config key {key!r}: not a vLLM {VERSION} 'vllm serve' option")
        spec = SPECS.get(key)
        if spec is None:
            raise FlagError(f"config key {key!r}: known to vLLM {VERSION} but not modelled by vlmplan")
        if key == "config":
            raise FlagError("config key 'config': a config file cannot include another")
        if spec.kind in ("bool", "store_true"):
            if value is not True:
                raise FlagError(f"config key {key!r}: {value!r} is dropped by vLLM {VERSION}; "
                                f"use --no-{key} on the command line")
            values[key] = True
            continue
        if spec.kind == "json":
            if not isinstance(value, dict):
                raise FlagError(f"config key {key!r}: expected a mapping")
            # vLLM serialises a nested mapping with json.dumps and parses it back with json.loads.
            values[key] = _convert(key, spec, json.dumps(value))
        elif spec.kind == "names":
            items = value if isinstance(value, list) else [value]
            if not items or not all(isinstance(x, str) for x in items):
                raise FlagError(f"config key {key!r}: expected a string or a list of strings")
            values[key] = items
        else:
            if isinstance(value, (dict, list, bool)) or value is None:
                raise FlagError(f"config key {key!r}: expected a scalar, got {value!r}")
            if spec.kind == "int" and not isinstance(value, int):
                raise FlagError(f"config key {key!r}: expected an integer, got {value!r}")
            values[key] = _convert(key, spec, str(value))
        _check(key, spec, values[key])
    check_combination(values)
    return values


def check_combination(values: dict[str, Any]) -> None:
    """Cross-flag rules vLLM 0.33 enforces at start-up (``SchedulerConfig.verify_max_model_len``)."""
    batched = values.get("max-num-batched-tokens")
    seqs = values.get("max-num-seqs")
    model_len = values.get("max-model-len")
    if batched is not None and seqs is not None and batched < seqs:
        raise FlagError(f"--max-num-batched-tokens {batched} must be >= --max-num-seqs {seqs}")
    if values.get("enable-chunked-prefill") is False and batched is not None and model_len is not None \
            and batched < model_len:
        raise FlagError(f"--max-num-batched-tokens {batched} must be >= --max-model-len {model_len} "
                        "when chunked prefill is off")
    if values.get("quantization") in DEPRECATED_QUANTIZATION:
        raise FlagError(f"--quantization {values['quantization']} is deprecated in vLLM {VERSION}")
    if "node-rank" in values and "nnodes" in values and values["node-rank"] >= values["nnodes"]:
        raise FlagError(f"--node-rank {values['node-rank']} must be < --nnodes {values['nnodes']}")
    if values.get("headless") and values.get("node-rank", 0) == 0:
        raise FlagError("--headless on node rank 0: the head node must serve the API")
    if values.get("headless") and "api-server-count" in values:
        raise FlagError("--api-server-count with --headless: a headless node runs no API server")

