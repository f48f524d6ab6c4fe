"""Memory model against hand calculations from public config.json numbers."""

import math

import pytest

from planner.catalog.loader import load_engine, load_gpus, load_models, load_precisions
from planner.core.errors import UnsupportedError
from planner.perf.memory import (
    cross_attention_kv_bytes_per_image,
    kv_bytes_per_sequence,
    kv_bytes_per_token,
    memory_breakdown,
    weights_bytes,
)
from planner.spec.config import ResolvedConfig, ServingConfig, resolve

ENGINE = load_engine()
PREC = load_precisions()
GIB = 1024**3


def cfg(model: str, gpu: str = "H100", **kw) -> ResolvedConfig:
    return resolve(ServingConfig(model=load_models().get(model), gpu=load_gpus().get(gpu), **kw), ENGINE)


def test_qwen25_vl_7b_bf16_weights_match_published_param_count():
    # Model card: 8.29B parameters; bf16 = 2 bytes each.
    dec, vis = weights_bytes(cfg("Qwen/Qwen2.5-VL-7B-Instruct"), PREC)
    expected = 8.29e9 * 2
    assert abs(dec + vis - expected) / expected < 0.02


def test_qwen2_vl_7b_kv_bytes_per_token_bf16():
    # 2 (K,V) x 28 layers x 4 KV heads x 128 head_dim x 2 bytes = 57,344
    assert kv_bytes_per_token(cfg("Qwen/Qwen2-VL-7B-Instruct", max_model_len=32768)) == 2 * 28 * 4 * 128 * 2 == 57344


def test_fp8_kv_cache_halves_kv_bytes():
    c = cfg("Qwen/Qwen2-VL-7B-Instruct", kv_cache_dtype="fp8", max_model_len=32768)
    assert kv_bytes_per_token(c) == 28672


def test_seed_kv_example_is_one_gib():
    # The seed's example: batch 1, 2048 tokens, 32 layers, 32 KV heads of 128, fp16.
    # 2 * 1 * 2048 * 32 * 32 * 128 * 2 bytes = 2^30 bytes = 1.0 GiB (the seed says "~2 GB": wrong).
    c = cfg("llava-hf/llava-1.5-7b-hf")
    d = c.model.decoder
    assert (d.num_layers, d.num_kv_heads, d.head_dim) == (32, 32, 128)
    assert kv_bytes_per_sequence(c, 2048) == 2 * 2048 * 32 * 32 * 128 * 2 == GIB


def test_llama32_vision_cross_attention_kv_per_image():
    # 8 cross-attention layers attend to 4 tiles x 1601 vision states = 6404;
    # 2 (K,V) x 8 layers x 8 KV heads x 128 x 2 bytes x 6404 = 209,846,272 bytes per image.
    c = cfg("meta-llama/Llama-3.2-11B-Vision-Instruct", max_model_len=8192)
    assert cross_attention_kv_bytes_per_image(c) == 2 * 8 * 8 * 128 * 2 * 6404
    # ... and it sits on top of the self-attention KV of the 32 self-attention layers.
    assert kv_bytes_per_token(c) == 2 * 32 * 8 * 128 * 2
    assert kv_bytes_per_sequence(c, 1000, images=1) == 1000 * 2 * 32 * 8 * 128 * 2 + 2 * 8 * 8 * 128 * 2 * 6404


def test_kv_heads_replicated_when_tp_exceeds_kv_heads():
    # Qwen2.5-VL-7B has 4 KV heads: TP=4 leaves one per GPU, TP=... cannot go past
    # the 28 query heads' divisors; use Qwen2.5-VL-3B (2 KV heads, 16 q heads) at TP=4 and TP=8.
    base = kv_bytes_per_token(cfg("Qwen/Qwen2.5-VL-3B-Instruct", max_model_len=8192))
    tp2 = kv_bytes_per_token(cfg("Qwen/Qwen2.5-VL-3B-Instruct", tp=2, max_model_len=8192))
    tp4 = kv_bytes_per_token(cfg("Qwen/Qwen2.5-VL-3B-Instruct", tp=4, max_model_len=8192))
    tp8 = kv_bytes_per_token(cfg("Qwen/Qwen2.5-VL-3B-Instruct", tp=8, max_model_len=8192))
    assert tp2 == base // 2
    assert tp4 == tp8 == tp2  # one KV head per GPU, replicated


def test_pipeline_parallel_splits_layers():
    one = kv_bytes_per_token(cfg("Qwen/Qwen2-VL-7B-Instruct", max_model_len=8192))
    two = kv_bytes_per_token(cfg("Qwen/Qwen2-VL-7B-Instruct", pp=2, max_model_len=8192))
    assert two == one // 2  # 28 layers -> 14 per stage


def test_quantized_weights_shrink_decoder_only():
    bf16 = weights_bytes(cfg("Qwen/Qwen2.5-VL-7B-Instruct"), PREC)
    fp8 = weights_bytes(cfg("Qwen/Qwen2.5-VL-7B-Instruct", precision="fp8"), PREC)
    int4 = weights_bytes(cfg("Qwen/Qwen2.5-VL-7B-Instruct", precision="int4"), PREC)
    assert bf16[1] == fp8[1] == int4[1]  # the ViT stays bf16
    # Linear layers of the decoder: 6.525e9 params (28 layers). Embedding + lm_head stay bf16:
    # 2 x 152064 x 3584 x 2 bytes = 2.18 GB.
    ends = 2 * 152064 * 3584 * 2
    linear = 28 * (3584 * 3584 + 2 * 3584 * 512 + 3584 * 3584 + (3584 + 2 * 512) + 3 * 3584 * 18944)
    assert fp8[0] == pytest.approx(linear * 1 + ends, rel=0.001)
    assert int4[0] == pytest.approx(linear * (0.5 + 2 / 128) + ends, rel=0.001)


def test_kv_capacity_by_hand_from_vllm_formula():
    # Llama-3.1-8B on one H100 (81559 MiB), util 0.90, max_num_seqs 256, max_num_batched_tokens 8192.
    c = cfg("meta-llama/Llama-3.1-8B-Instruct", gpu_memory_utilization=0.90, max_num_seqs=256,
            max_num_batched_tokens=8192, max_model_len=32768)
    m = memory_breakdown(c, ENGINE, PREC)
    requested = math.ceil(81559 * 2**20 * 0.90)
    # Llama-3.1-8B: 32 layers, h 4096, 32 q / 8 kv heads of 128, inter 14336, vocab 128256, untied.
    per_layer = 4096 * 4096 * 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336  # q,o + k,v + gate/up/down
    weights = (32 * per_layer + 2 * 128256 * 4096) * 2 + (32 * 2 * 4096 + 4096) * 2  # + norms
    # Profiling peak: 8192 tokens x (2 x hidden + 3 x intermediate) x 2 bytes (MLP peak), plus the
    # sampler's fp32 logits for 256 sequences over the vocabulary, twice (logits + probabilities).
    activations = 8192 * (2 * 4096 + 3 * 14336) * 2 + 256 * 128256 * 4 * 2
    overhead = (0.16 + 0.36) * GIB  # non-torch + CUDA graphs (catalogs/engines/vllm-0.33.yaml)
    kv = requested - weights - activations - int(overhead)
    per_token = 2 * 32 * 8 * 128 * 2  # 131,072 bytes
    tokens = (kv // (16 * per_token)) * 16
    assert m.weights_bytes == pytest.approx(weights, rel=1e-6)
    assert m.kv_capacity_tokens == pytest.approx(tokens, abs=16)
    # Sanity against a public vLLM log (PR 10511, H100, util 0.90, Llama-3-8B): weights 14.96 GiB.
    assert m.weights_bytes / GIB == pytest.approx(14.96, rel=0.01)


def test_fp8_on_ampere_is_refused():
    with pytest.raises(UnsupportedError, match="fp8"):
        cfg("Qwen/Qwen2.5-VL-7B-Instruct", gpu="A100-80GB", precision="fp8")


def test_too_small_gpu_does_not_fit_and_says_why():
    c = cfg("Qwen/Qwen2.5-VL-72B-Instruct", gpu="A100-40GB", max_model_len=8192)
    m = memory_breakdown(c, ENGINE, PREC)
    assert not m.fits
    assert "KV cache" in m.reason


def test_memory_grows_with_context_and_batch_settings():
    small = memory_breakdown(cfg("Qwen/Qwen2.5-VL-7B-Instruct", max_num_batched_tokens=2048), ENGINE, PREC)
    large = memory_breakdown(cfg("Qwen/Qwen2.5-VL-7B-Instruct", max_num_batched_tokens=16384), ENGINE, PREC)
    assert large.activations_bytes > small.activations_bytes
    assert large.kv_capacity_tokens < small.kv_capacity_tokens
