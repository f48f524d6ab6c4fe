"""The vision encoder (ViT and projector) of one encoder call, as ops on the per-op roofline, and the
engine's host work around the call."""

from __future__ import annotations

import math

from planner.catalog.calibration_schema import Calibration
from planner.catalog.schema import PrecisionTable, VisionSpec
from planner.perf.kernels import VLLM, KernelProfile, Kernels
from planner.perf.ops import ACT, StepTime
from planner.perf.roofline import Roofline
from planner.spec.config import ResolvedConfig


def vit_has_rotary(v: VisionSpec) -> bool:
    """Whether the ViT applies rotary position embeddings to q and k in every block.

    The Qwen2-VL / Qwen2.5-VL / Qwen3-VL towers (the ones that embed 2-frame patches,
    ``temporal_patch_size`` 2) use 2D RoPE; the CLIP/SigLIP/InternViT towers add learned
    absolute position embeddings once. (Pixtral and Llama 4 also use 2D RoPE; the catalog
    schema has no field that tells them apart yet, so their ViTs are counted without it.)"""
    return v.temporal_patch_size > 1


def vit_activation(profile: KernelProfile, v: VisionSpec) -> Kernels:
    """The kernels of ``v``'s MLP activation under ``profile``."""
    key = "silu_gated" if v.gated_mlp else (v.activation or "default")
    return profile.vit_act.get(key, profile.vit_act["default"])


def vision_encode(rf: Roofline, cfg: ResolvedConfig, precisions: PrecisionTable, patches: int,
                  images: int, profile: KernelProfile = VLLM, eager: bool = True,
                  sequences: int | None = None) -> StepTime:
    """Encode ``images`` images totalling ``patches`` ViT tokens (bf16 ViT) in ``sequences`` attention
    sequences (default: one per image).

    A tiled encoder (InternVL, LLaVA-NeXT, Idefics3, Phi-3.5-vision, MiniCPM-V...) encodes each tile and
    thumbnail as its own image: its linear layers run over all ``patches``, but attention is quadratic per
    sequence (``patches / sequences`` tokens each), not over the image's patches as one sequence
    (``RequestShape.encoder_sequences``).

    vLLM's default ``mm_encoder_tp_mode=weights`` shards the ViT like the
    decoder (split GEMMs + all-reduces); ``data`` replicates it and splits
    the sequences (images, tiles) across the TP ranks. vLLM 0.33 runs the encoder eagerly, so a
    small image is bound by the CPU launching its kernels.
    """
    v = cfg.model.vision
    if v is None or patches <= 0:
        return StepTime(())
    seqs = max(1, sequences if sequences is not None else images)
    split = cfg.tp if cfg.mm_encoder_tp_mode == "weights" else 1
    if cfg.mm_encoder_tp_mode == "data" and cfg.tp > 1:
        ranks = min(cfg.tp, seqs)
        patches = math.ceil(patches / ranks)
        seqs = math.ceil(seqs / ranks)
    d = v.hidden_size
    n = v.num_layers
    heads = v.num_heads // split if v.num_heads % split == 0 else v.num_heads
    hd = d // v.num_heads
    inter = v.intermediate_size // split
    per_seq = max(1, patches // seqs)
    patch_k = v.num_channels * v.temporal_patch_size * v.patch_size**2
    # Conv patches without a class token leave the residual stream in the convolution's transposed layout.
    strided = v.temporal_patch_size == 1 and not v.class_token
    residual = profile.vit_strided_residual if strided else profile.vit_residual
    ops = [
        rf.gemm("vit_patch_embed", patches, d, patch_k, "bf16", precisions),
        rf.gemm("vit_qkv", patches, 3 * d // split, d, "bf16", precisions, n),
        rf.gemm("vit_o", patches, d, d // split, "bf16", precisions, n),
        rf.gemm("vit_mlp_up", patches, (2 if v.gated_mlp else 1) * inter, d, "bf16", precisions, n),
        rf.gemm("vit_mlp_down", patches, d, inter, "bf16", precisions, n),
        rf.kernels("vit_norms", profile.vit_norms, patches * d * ACT, n),
        rf.kernels("vit_residual_add", residual, patches * d * ACT, n),
        rf.kernels("vit_activation", vit_activation(profile, v), patches * inter * ACT, n),
    ]
    if v.layer_scale:
        ops.append(rf.kernels("vit_layer_scale", profile.vit_layer_scale, patches * d * ACT, n))
    if vit_has_rotary(v):
        qk = 2 * patches * (heads * hd) * ACT
        ops.append(rf.kernels("vit_rotary", profile.rotary, qk, n))
    if v.window_attention is not None:
        full = len(v.window_attention.full_attention_layers)
        win = min(v.window_attention.window_patches, per_seq)
        windows = math.ceil(patches / win)
        ops.append(rf.attention_prefill("vit_attention_window", win, win, heads, heads, hd, False, ACT,
                                        n - full, batch=windows))
        ops.append(rf.attention_prefill("vit_attention_full", per_seq, per_seq, heads, heads, hd, False, ACT,
                                        full, batch=seqs))
    else:
        ops.append(rf.attention_prefill("vit_attention", per_seq, per_seq, heads, heads, hd, False, ACT, n,
                                        batch=seqs))
    p = v.projector
    rows = max(1, patches * p.output_dim // max(1, p.input_dim) if p.kind == "resampler" else
               patches * d // p.input_dim)
    if p.hidden_dim:
        ops.append(rf.gemm("projector_fc1", rows, p.hidden_dim, p.input_dim, "bf16", precisions))
        ops.append(rf.gemm("projector_fc2", rows, p.output_dim, p.hidden_dim, "bf16", precisions))
    else:
        ops.append(rf.gemm("projector", rows, p.output_dim, p.input_dim, "bf16", precisions))
    if split > 1:
        ops.append(rf.allreduce("vit_allreduce", patches * d * ACT, split, 2 * n))
    return StepTime(tuple(ops), eager_launch_s=rf.eager_launch if eager else 0.0)



def vision_call_host_ms(cal: Calibration, images: int) -> float:
    """The engine's host work around one vision-encoder call (input layout, position ids, the model runner's
    bookkeeping; fitted from real serving): it holds the engine step like the GPU work does, once per call
    however many images the call encodes. 0 without images."""
    return cal.value("vision_call_overhead_ms") if images > 0 else 0.0

