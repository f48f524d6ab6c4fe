"""Kernel profiles: how an implementation splits a layer's non-GEMM work into kernels.

The counts are read off the implementation's source (vLLM's fused ops, or the plain-PyTorch reference the
accuracy benchmark measured), not fitted: keeping them as data lets one roofline cost both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kernels:
    """Kernel launches and bytes moved by one piece of non-GEMM work, per layer.

    ``bytes`` is in units named by the field that holds it (e.g. hidden-state
    elements m x h at 16 bits)."""

    kernels: int
    bytes: float
    kind: str = "simple"
    """``simple`` (vectorised unary/binary ops, copies: L2-resident when small), ``norm`` (normalisations and
    reductions), ``broadcast`` (PyTorch's generic kernel for strided or broadcast operands), ``transposed``
    (the generic kernel reading a transposed operand: uncoalesced) or ``quant`` (one
    tensor's whole dynamic fp8 quantisation: abs-max, scale, divide-and-cast, counted as one "kernel"); each
    kind has its own measured per-kernel latency and bandwidth efficiency."""


@dataclass(frozen=True)
class KernelProfile:
    """How an implementation splits the non-GEMM work of a layer into kernels.

    These are counts read off the implementation's source, not fitted numbers.
    ``VLLM`` is what vLLM 0.33 runs (fused CUDA ops and torch.compile fusions);
    ``TORCH_REFERENCE`` is the plain-PyTorch model of
    ``planner/calibrate/validation_models.py`` that the accuracy benchmark
    measured, so that the benchmark checks the op physics, not the fusions.
    """

    name: str
    norms: Kernels
    """Both RMSNorms of a layer (with the residual adds where fused); bytes in units of m x hidden x 2."""
    residual: Kernels
    """Residual adds not fused into the norms; units of m x hidden x 2."""
    rotary: Kernels
    """Rotary embedding of q and k; bytes in units of the q+k activations."""
    qk_norm: Kernels
    """Per-head q/k RMSNorm (Qwen3, Gemma 3); units of the q+k activations."""
    act: Kernels
    """Gated activation; bytes in units of m x intermediate x 2."""
    kv_write: Kernels
    """Writing the step's K and V into the cache; units of the K+V bytes."""
    attn_layout: Kernels
    """Layout copies around prefill attention; units of m x q_heads x head_dim x 2."""
    act_quant_per_layer: Kernels
    """W8A8 dynamic activation quantisation per layer; units of m x hidden x 2 (or, with
    ``act_quant_every_input``, of one GEMM input m x K x 2, summed over the layer's GEMM inputs)."""
    vit_norms: Kernels
    """A ViT block's two norms; units of n x width x 2."""
    vit_residual: Kernels
    """A ViT block's residual adds; units of n x width x 2."""
    vit_strided_residual: Kernels
    """A block's residual adds and copies when the residual stream keeps the patch convolution's transposed
    layout (no class token is concatenated, which would make it contiguous): units of n x width x 2."""
    vit_act: dict[str, Kernels]
    """A ViT block's activation by kind (``VisionSpec.activation``; key ``default`` for unknown);
    units of n x intermediate x 2."""
    vit_layer_scale: Kernels
    """Layer-scale multiplies (InternViT's ls1/ls2) of a block; units of n x width x 2."""
    act_quant_every_input: bool = False
    """True: every GEMM input (qkv, o, gate_up, down) is quantised by kernels of its own, so the traffic scales
    with each input's width K (the down projection's input is the intermediate size, not the hidden size)."""


VLLM = KernelProfile(
    name="vllm",
    # fused_add_rms_norm twice: reads x and residual, writes both.
    norms=Kernels(2, 8.0, "norm"),
    residual=Kernels(0, 0.0),
    # rotary_embedding: in place on q and k.
    rotary=Kernels(1, 2.0),
    qk_norm=Kernels(2, 2.0, "norm"),
    # silu_and_mul: reads gate and up, writes the product.
    act=Kernels(1, 3.0),
    # reshape_and_cache_flash: reads K, V, writes the cache.
    kv_write=Kernels(1, 2.0),
    attn_layout=Kernels(0, 0.0),
    # torch.compile fuses the quantisation into the norm (qkv, gate_up inputs) and
    # into silu_and_mul (down input); the attention output is quantised on its own.
    act_quant_per_layer=Kernels(1, 1.5, "norm"),
    # two LayerNorm/RMSNorm (read, write) + two residual adds (read two, write one).
    vit_norms=Kernels(2, 4.0, "norm"),
    vit_residual=Kernels(2, 6.0),
    vit_strided_residual=Kernels(2, 6.0),
    # one fused kernel (GELU, QuickGELU or SiluAndMul): reads its input, writes the output.
    vit_act={"default": Kernels(1, 2.0), "silu_gated": Kernels(1, 3.0)},
    vit_layer_scale=Kernels(2, 4.0, "broadcast"),
)

TORCH_REFERENCE = KernelProfile(
    name="torch-reference",
    # Kinds as the torch profiler shows them (run11, H100, torch 2.11): ops on strided views or broadcast
    # operands take PyTorch's generic (non-vectorised) kernel, here the "broadcast" kind.
    # F.rms_norm twice (one layer-norm kernel each: read + write) and two residual adds (read two, write one).
    norms=Kernels(2, 4.0, "norm"),
    residual=Kernels(2, 6.0),
    # rotate-half on a q/k view: x*cos (broadcast cos), neg of a half, cat, addcmul.
    rotary=Kernels(4, 8.0, "broadcast"),
    # F.rms_norm then a multiply by the weight.
    qk_norm=Kernels(2, 4.0, "norm"),
    # F.silu on the gate half (a strided view), then a multiply by the up half.
    act=Kernels(2, 5.0, "broadcast"),
    # two copy_ into the head-major cache (strided).
    kv_write=Kernels(2, 2.0, "broadcast"),
    # none: the cuDNN kernel writes its output in the layout the transpose + reshape asks for (run10, run11).
    attn_layout=Kernels(0, 0.0),
    # per GEMM input, four kernels (run11): abs-max reduction, two on the fp32 scale, divide-and-cast through
    # PyTorch's casting kernel; timed together per input by quant_ops.py (run12), in units of the 2-byte input.
    # Four GEMM inputs a layer (the "kernels" count inputs: eager launches are 4x more).
    act_quant_per_layer=Kernels(4, 4.0, "quant"),
    # F.layer_norm twice (read + write), two residual adds.
    vit_norms=Kernels(2, 4.0, "norm"),
    vit_residual=Kernels(2, 6.0),
    # conv patches without a class token (SigLIP): flatten(2).transpose(1, 2) leaves the residual stream
    # transposed, so both adds take the generic kernel and each norm first copies it contiguous (the torch
    # profiler's op list of the reference tower, H100): 2 adds (3 units) + 2 copies (2 units), reading the
    # transposed stream.
    vit_strided_residual=Kernels(4, 10.0, "transposed"),
    # F.gelu (exact or tanh): one vectorised kernel; quick-GELU x * sigmoid(1.702 x): scalar multiply, sigmoid,
    # multiply (2 + 2 + 3 units); SiLU(gate) * up on strided halves, as the decoder's.
    vit_act={"default": Kernels(1, 2.0), "quick_gelu": Kernels(3, 7.0),
             "silu_gated": Kernels(2, 5.0, "broadcast")},
    # x * ls (a [width] vector) after attention and after the MLP.
    vit_layer_scale=Kernels(2, 4.0, "broadcast"),
    act_quant_every_input=True,
)

