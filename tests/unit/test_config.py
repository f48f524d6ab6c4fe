"""ResolvedConfig: made by resolve(), its cache key derived from every field."""

from dataclasses import fields, replace

import pytest

from planner.catalog.loader import load_engine, load_gpus, load_models
from planner.spec.config import ResolvedConfig, ServingConfig, Speculation, resolve

ENGINE = load_engine()
QWEN = load_models().get("Qwen/Qwen2.5-VL-7B-Instruct")
H100 = load_gpus().get("H100")


def _resolved(**kw) -> ResolvedConfig:
    return resolve(ServingConfig(model=QWEN, gpu=H100, **kw), ENGINE)


def test_resolve_fills_every_engine_default() -> None:
    c = _resolved()
    assert c.max_model_len == QWEN.decoder.max_position_embeddings
    assert c.gpu_memory_utilization == ENGINE.default_gpu_memory_utilization
    assert c.max_num_batched_tokens >= c.max_num_seqs >= 1
    assert c.limit_images_per_prompt is None and c.images_per_prompt == 999


def test_cache_key_changes_with_every_field() -> None:
    # A field added later joins the key by itself: each field's change must show.
    base = _resolved(max_model_len=8192, max_num_seqs=64)
    other = {"model": load_models().get("Qwen/Qwen2.5-VL-3B-Instruct"), "gpu": load_gpus().get("A100-80GB"),
             "tp": 2, "pp": 2, "precision": "fp8", "kv_cache_dtype": "fp8", "max_model_len": 4096,
             "max_num_seqs": 32, "max_num_batched_tokens": 4096, "gpu_memory_utilization": 0.8,
             "mm_encoder_tp_mode": "data", "limit_images_per_prompt": 2,
             "mm_processor_options": {"max_pixels": 1000}, "api_server_count": 4,
             "speculative": Speculation(method="ngram", num_speculative_tokens=3, acceptance_rate=0.3),
             "enable_prefix_caching": False, "kv_block_tokens": 32, "async_scheduling": False}
    assert set(other) == {f.name for f in fields(ResolvedConfig)}
    for name, value in other.items():
        assert replace(base, **{name: value}).cache_key() != base.cache_key(), name
    seqless = base.cache_key(ignore=("max_num_seqs",))
    assert replace(base, max_num_seqs=32).cache_key(ignore=("max_num_seqs",)) == seqless
    assert _resolved(max_model_len=8192, max_num_seqs=64).cache_key() == base.cache_key()
    with pytest.raises(ValueError):
        base.cache_key(ignore=("no_such_field",))


def test_kv_bytes_per_element() -> None:
    assert _resolved().kv_bytes_per_element == 2
    assert _resolved(kv_cache_dtype="fp8").kv_bytes_per_element == 1
