"""End-to-end forward passes of real VLM/LLM architectures with random weights.

Independent validation set for vlmplan's speed model.  Plain PyTorch (no HF
model classes), mimicking what vLLM executes:

* Decoders (Llama / Qwen2 / Qwen3 / Mistral / Phi-3 style): embedding; per layer
  RMSNorm, fused QKV linear (+bias for Qwen2), optional per-head q/k RMSNorm
  (Qwen3), rotate-half RoPE, attention, O proj, residual, RMSNorm, fused
  gate_up linear, SiLU*mul, down proj, residual; final norm; lm_head on the last
  position (prefill) or on every sequence (decode) followed by greedy argmax.
  - decode: batch B, each sequence with context L, q length 1, a preallocated
    contiguous KV cache per layer ([B, kv_heads, L+1, hd]: head-major so that
    SDPA reads it without a copy), new K/V written at position L, attention over
    L+1 positions via SDPA: for every point the fastest of {enable_gqa, q heads
    of a KV group packed as query rows (FlashAttention's GQA decode layout)} x
    {flash, efficient, cudnn} is picked by a quick timing on layer-0 shapes
    (recorded in attn_backend / attn_candidates_us); the whole step is captured
    in a CUDA graph and timed by replay (eager_time_ms: the same step launched
    eagerly).
  - prefill: one sequence of P tokens, causal SDPA (enable_gqa, default
    backend), K/V written to a cache. time_ms: eager (vLLM runs prefill
    piecewise-compiled); graph_time_ms: the same forward replayed from a CUDA
    graph (no launch overhead). Vision encoders likewise.
  - dtypes: bf16, and fp8 = every linear layer of the blocks through
    torch._scaled_mm e4m3 with a per-tensor weight scale and dynamic per-tensor
    activation quantisation (as vLLM's fp8 W8A8); embeddings/lm_head bf16.
* Vision encoders (non-causal, eager): Qwen2.5-VL ViT (window attention), SigLIP
  so400m/14, CLIP ViT-L/14-336, InternViT-300M (+ their projectors/mergers).
* Elementwise ops (RMSNorm, SiLU*mul, RoPE, fp8 activation quant) run as plain
  torch ops ("eager": several kernels each, more than vLLM's fused custom ops)
  or, with --compile-elementwise, through torch.compile (Inductor-fused, closer
  to vLLM); each point records which ("elementwise").

Usage::

    python planner/calibrate/validation_models.py --out validation.json
    python planner/calibrate/validation_models.py --smoke   # tiny, CPU ok
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

try:
    from . import microbench as mb
except ImportError:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import microbench as mb  # type: ignore

SCRIPT_VERSION = "1.3.0"  # 1.3.0: InternViT runs are real images cut into tiles (images x tiles)
GiB = 1024 ** 3

# public config.json dimensions
DECODERS = {
    "llama-3.1-8b": dict(layers=32, hidden=4096, q_heads=32, kv_heads=8, head_dim=128,
                         inter=14336, vocab=128256, qkv_bias=False, qk_norm=False, tie=False),
    "qwen2.5-7b": dict(layers=28, hidden=3584, q_heads=28, kv_heads=4, head_dim=128,
                       inter=18944, vocab=152064, qkv_bias=True, qk_norm=False, tie=False,
                       note="same text tower as Qwen2.5-VL-7B"),
    "qwen3-8b": dict(layers=36, hidden=4096, q_heads=32, kv_heads=8, head_dim=128,
                     inter=12288, vocab=151936, qkv_bias=False, qk_norm=True, tie=False),
    "mistral-small-24b": dict(layers=40, hidden=5120, q_heads=32, kv_heads=8, head_dim=128,
                              inter=32768, vocab=131072, qkv_bias=False, qk_norm=False, tie=False),
    "qwen2.5-vl-3b-text": dict(layers=36, hidden=2048, q_heads=16, kv_heads=2, head_dim=128,
                               inter=11008, vocab=151936, qkv_bias=True, qk_norm=False, tie=True),
    "phi-3.5-text": dict(layers=32, hidden=3072, q_heads=32, kv_heads=32, head_dim=96,
                         inter=8192, vocab=32064, qkv_bias=False, qk_norm=False, tie=False),
    "qwen2.5-32b": dict(layers=64, hidden=5120, q_heads=40, kv_heads=8, head_dim=128,
                        inter=27648, vocab=152064, qkv_bias=True, qk_norm=False, tie=False,
                        bf16_min_gpu_gib=120),
}

VISION = {
    "qwen2.5-vl-vit": dict(blocks=32, d=1280, heads=16, mlp=3420, act="swiglu", norm="rms",
                           bias=True, full_blocks=(7, 15, 23, 31), window=64, patch="linear",
                           patch_in=3 * 2 * 14 * 14, rope=True,
                           merger=dict(group=4, hidden=5120, out=3584)),
    "siglip-so400m-14": dict(blocks=27, d=1152, heads=16, mlp=4304, act="gelu_tanh", norm="ln",
                             bias=True, patch="conv", patch_size=14, cls=False, post_ln=True),
    "clip-vit-l-14-336": dict(blocks=24, d=1024, heads=16, mlp=4096, act="quick_gelu",
                              norm="ln", bias=True, patch="conv", patch_size=14, cls=True,
                              pre_ln=True),
    "internvit-300m": dict(blocks=24, d=1024, heads=16, mlp=4096, act="gelu", norm="ln",
                           bias=True, patch="conv", patch_size=14, cls=True, layer_scale=True,
                           projector=dict(shuffle=0.5, hidden=4096, out=4096)),
}
# (arch, run label, kwargs): images = real images, tiles = tiles (crops, thumbnail included) each image is cut
# into, every tile encoded as its own attention sequence (the ViT's batch dim is images x tiles), img = pixels
# per side of a tile, patches for qwen. Before 1.3.0 the InternViT runs gave the tile count as `images` (the
# same forward pass: a batch of 13 448-px tiles), so the planner side was checked with 13 one-tile images and
# never with one 13-tile image; stored points from those runs are read as one image of `images` tiles.
VISION_RUNS = [
    ("qwen2.5-vl-vit", "1024 patches", dict(patches=1024)),
    ("qwen2.5-vl-vit", "4096 patches", dict(patches=4096)),
    ("qwen2.5-vl-vit", "16384 patches", dict(patches=16384)),
    ("siglip-so400m-14", "384px (729 patches)", dict(img=384, images=1)),
    ("siglip-so400m-14", "896px (4096 patches, Gemma-3)", dict(img=896, images=1,
                                                              pool_to=256, proj_out=2560)),
    ("clip-vit-l-14-336", "1 image (577 tokens)", dict(img=336, images=1)),
    ("clip-vit-l-14-336", "5 images (577 tokens each)", dict(img=336, images=5)),
    ("internvit-300m", "1 tile (1025 tokens)", dict(img=448, images=1, tiles=1)),
    ("internvit-300m", "7 tiles", dict(img=448, images=1, tiles=7)),
    ("internvit-300m", "13 tiles", dict(img=448, images=1, tiles=13)),
]

VISION_RUNS_EXTRA = [  # --vision-set extra (1.2.0): more sizes, measured after the speed model was fitted
    ("qwen2.5-vl-vit", "256 patches", dict(patches=256)),
    ("qwen2.5-vl-vit", "2048 patches", dict(patches=2048)),
    ("qwen2.5-vl-vit", "8192 patches", dict(patches=8192)),
    ("siglip-so400m-14", "384px x 4 images", dict(img=384, images=4)),
    ("clip-vit-l-14-336", "2 images (577 tokens each)", dict(img=336, images=2)),
    ("internvit-300m", "3 tiles", dict(img=448, images=1, tiles=3)),
]

DECODE_BATCHES = [1, 8, 32, 128]
DECODE_CTXS = [512, 2048, 8192]
PREFILL_LENS = [128, 512, 2048, 8192]

F8 = torch.float8_e4m3fn
F8_MAX = 448.0


# --------------------------------------------------------------------------
# elementwise ops (module level so --compile-elementwise can swap them)
# --------------------------------------------------------------------------

def rms_norm(x, w, eps=1e-6):
    return F.rms_norm(x, (x.shape[-1],), w, eps)


def silu_mul(x):
    d = x.shape[-1] // 2
    return F.silu(x[..., :d]) * x[..., d:]


def rope(x, cos, sin):
    """rotate-half RoPE; x [T, H, hd], cos/sin [T, 1, hd]."""
    h = x.shape[-1] // 2
    rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
    return torch.addcmul(x * cos, rot, sin)


def _fp8_scale_cast(x, amax):
    s = (amax / F8_MAX).clamp(min=1e-12)
    return (x / s).to(F8), s


def _make_fp8_quant_compiled():
    """dynamic per-tensor e4m3 quantisation for compiled mode: amax through
    torch's own (split) reduction kernel (Inductor's dynamic-shape full reduction
    was found to be very slow for large M on H100), then one compiled
    scale-and-cast kernel."""
    inner = torch.compile(_fp8_scale_cast, dynamic=True)

    def quant(x):
        amax = torch.linalg.vector_norm(x, ord=float("inf"), dtype=torch.float32)
        return inner(x, amax)
    return quant


OPS = {"rms_norm": rms_norm, "silu_mul": silu_mul, "rope": rope, "fp8_quant": None}


def compile_ops():
    import torch._dynamo
    torch._dynamo.config.cache_size_limit = 64
    for k in ("rms_norm", "silu_mul", "rope"):
        OPS[k] = torch.compile(OPS[k], dynamic=True)
    OPS["fp8_quant"] = _make_fp8_quant_compiled()


def rope_tables(positions: torch.Tensor, hd: int, theta: float = 1e6, dtype=torch.bfloat16):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, device=positions.device, dtype=torch.float32) / hd))
    f = positions.float()[:, None] * inv[None, :]
    emb = torch.cat((f, f), dim=-1)
    return emb.cos().to(dtype)[:, None, :], emb.sin().to(dtype)[:, None, :]


# --------------------------------------------------------------------------
# linear layers (bf16 or fp8 W8A8)
# --------------------------------------------------------------------------

class Linears:
    """Weight factory + matmul for one precision."""

    def __init__(self, dtype: str, dev):
        self.dtype = dtype
        self.dev = dev
        self.pad16 = False
        self.div_out = False
        if dtype == "fp8":
            self._probe()

    def _probe(self):
        a = torch.randn(1, 64, device=self.dev, dtype=torch.bfloat16).to(F8)
        b = torch.randn(32, 64, device=self.dev, dtype=torch.bfloat16).to(F8)
        s = torch.tensor(1.0, device=self.dev)
        try:
            torch._scaled_mm(a, b.t(), scale_a=s, scale_b=s, out_dtype=torch.bfloat16)
        except Exception:  # noqa: BLE001
            self.pad16 = True
        try:
            x = torch.randn(4, 64, device=self.dev, dtype=torch.bfloat16)
            o = torch.empty(4, 64, device=self.dev, dtype=F8)
            torch.div(x, s, out=o)
            self.div_out = True
        except Exception:  # noqa: BLE001
            self.div_out = False

    def weight(self, n: int, k: int):
        w = torch.randn(n, k, device=self.dev, dtype=torch.bfloat16).mul_(k ** -0.5)
        if self.dtype != "fp8":
            return (w, None)
        sc = (w.abs().amax().float() / F8_MAX).clamp_(min=1e-12)
        wq = (w / sc.to(torch.bfloat16)).to(F8)
        del w
        return (wq, sc)

    @staticmethod
    def nbytes(w) -> int:
        return w[0].numel() * w[0].element_size()

    def __call__(self, x, w, bias=None):
        wt, sc = w
        if sc is None:
            return F.linear(x, wt, bias)
        m = x.shape[0]
        if self.pad16 and m % 16:
            x = F.pad(x, (0, 0, 0, 16 - m % 16))
        # dynamic per-tensor activation scale (vLLM scaled_fp8_quant, dynamic)
        if OPS["fp8_quant"] is not None:
            xq, s = OPS["fp8_quant"](x)
        else:
            amax = torch.linalg.vector_norm(x, ord=float("inf"), dtype=torch.float32)
            s = (amax / F8_MAX).clamp_(min=1e-12)
            if self.div_out:
                xq = torch.empty(x.shape, device=x.device, dtype=F8)
                torch.div(x, s, out=xq)
            else:
                xq = (x / s).to(F8)
        y = torch._scaled_mm(xq, wt.t(), scale_a=s, scale_b=sc, bias=bias,
                             out_dtype=torch.bfloat16, use_fast_accum=True)
        return y[:m] if y.shape[0] != m else y


# --------------------------------------------------------------------------
# decoder LM
# --------------------------------------------------------------------------

class DecoderLM:
    def __init__(self, cfg: dict, dtype: str, dev):
        self.cfg = cfg
        self.dev = dev
        self.lin = Linears(dtype, dev)
        bf = torch.bfloat16
        h, hd = cfg["hidden"], cfg["head_dim"]
        self.hq, self.hkv, self.hd = cfg["q_heads"], cfg["kv_heads"], hd
        nq, nkv = self.hq * hd, self.hkv * hd
        self.inter = cfg["inter"]
        self.embed = torch.randn(cfg["vocab"], h, device=dev, dtype=bf)
        self.lm_head = self.embed if cfg.get("tie") else \
            torch.randn(cfg["vocab"], h, device=dev, dtype=bf).mul_(h ** -0.5)
        self.final_norm = 1 + 0.1 * torch.randn(h, device=dev, dtype=bf)
        self.layers = []
        for _ in range(cfg["layers"]):
            L = {
                "ln1": 1 + 0.1 * torch.randn(h, device=dev, dtype=bf),
                "ln2": 1 + 0.1 * torch.randn(h, device=dev, dtype=bf),
                "qkv": self.lin.weight(nq + 2 * nkv, h),
                "qkv_b": (0.02 * torch.randn(nq + 2 * nkv, device=dev, dtype=bf)
                          if cfg.get("qkv_bias") else None),
                "o": self.lin.weight(h, nq),
                "gu": self.lin.weight(2 * self.inter, h),
                "d": self.lin.weight(h, self.inter),
            }
            if cfg.get("qk_norm"):
                qn = 1 + 0.1 * torch.randn(self.hq, hd, device=dev, dtype=bf)
                kn = 1 + 0.1 * torch.randn(self.hkv, hd, device=dev, dtype=bf)
                L["qk_norm"] = torch.cat((qn, kn), 0)  # [hq+hkv, hd]
            self.layers.append(L)
        self.attn_backend = None
        self.decode_attn = ("packed_gqa", None)  # (form, SDPBackend or None=default)

    def weight_bytes(self) -> int:
        n = self.embed.numel() * 2
        if self.lm_head is not self.embed:
            n += self.lm_head.numel() * 2
        for L in self.layers:
            n += sum(Linears.nbytes(L[k]) for k in ("qkv", "o", "gu", "d"))
        return n

    @staticmethod
    def estimate_weight_bytes(cfg: dict, dtype: str) -> int:
        h, hd, I = cfg["hidden"], cfg["head_dim"], cfg["inter"]
        per = (cfg["q_heads"] + 2 * cfg["kv_heads"]) * hd * h + h * cfg["q_heads"] * hd \
            + 3 * h * I
        e = 1 if dtype == "fp8" else 2
        emb = cfg["vocab"] * h * 2 * (1 if cfg.get("tie") else 2)
        return cfg["layers"] * per * e + emb

    def kv_bytes(self, B: int, L: int) -> int:
        return 2 * len(self.layers) * B * (L + 1) * self.hkv * self.hd * 2

    def _qkv(self, L, a, cos, sin):
        T = a.shape[0]
        qkv = self.lin(a, L["qkv"], L["qkv_b"])
        nqk = (self.hq + self.hkv) * self.hd
        qk = qkv[:, :nqk].view(T, self.hq + self.hkv, self.hd)
        v = qkv[:, nqk:].view(T, self.hkv, self.hd)
        if "qk_norm" in L:
            qk = F.rms_norm(qk, (self.hd,), None, 1e-6) * L["qk_norm"]
        qk = OPS["rope"](qk, cos, sin)
        return qk[:, :self.hq], qk[:, self.hq:], v

    def _mlp_block(self, L, x, o):
        x = x + self.lin(o, L["o"])
        a = OPS["rms_norm"](x, L["ln2"])
        gu = self.lin(a, L["gu"])
        x = x + self.lin(OPS["silu_mul"](gu), L["d"])
        return x

    def _probe_backend(self, q, k, v, causal, gqa):
        if self.attn_backend is None:
            self.attn_backend = mb._default_backend(q, k, v, causal, gqa)

    # decode -----------------------------------------------------------------
    def decode_step(self, ids, caches, pos: int, cos, sin, argmax: bool = True):
        B = ids.shape[0]
        x = self.embed[ids]
        for L, (kc, vc) in zip(self.layers, caches):
            a = OPS["rms_norm"](x, L["ln1"])
            q, k, v = self._qkv(L, a, cos, sin)
            kc[:, :, pos].copy_(k)
            vc[:, :, pos].copy_(v)
            o = self.decode_attention(q, kc, vc)
            x = self._mlp_block(L, x, o.reshape(B, self.hq * self.hd))
        logits = F.linear(OPS["rms_norm"](x, self.final_norm), self.lm_head)
        return logits.argmax(-1) if argmax else logits

    def decode_attention(self, q, kc, vc, form=None, backend=None):
        """q [B, hq, hd] vs cache [B, hkv, L+1, hd] -> [B, hq, hd]-shaped output."""
        if form is None:
            form, backend = self.decode_attn
        B = q.shape[0]
        if form == "packed_gqa":
            qq = q.reshape(B, self.hkv, self.hq // self.hkv, self.hd)
            gqa = False
        else:
            qq = q.unsqueeze(2)
            gqa = self.hq != self.hkv
        self._probe_backend(qq, kc, vc, False, gqa)
        if backend is None:
            return F.scaled_dot_product_attention(qq, kc, vc, enable_gqa=gqa)
        from torch.nn.attention import sdpa_kernel
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(qq, kc, vc, enable_gqa=gqa)

    def pick_decode_attention(self, B: int, kc, vc) -> dict:
        """Time every (form, SDPA backend) on layer-0 shapes; keep the fastest.

        Stands in for vLLM's FlashAttention decode kernel: we take the best kernel
        torch offers for this shape."""
        cands = {}
        if not torch.cuda.is_available():
            self.decode_attn = ("enable_gqa", None)
            return cands
        q = torch.randn(B, self.hq, self.hd, device=kc.device, dtype=kc.dtype)
        best = None
        for form in ("enable_gqa", "packed_gqa"):
            for bname, b in mb._sdpa_backends().items():
                try:
                    r = mb.bench([lambda f=form, b=b: self.decode_attention(q, kc, vc, f, b)],
                                 target_ms=5.0, min_reps=3, max_reps=10, max_inner=20)
                    cands[f"{form}/{bname}"] = round(r["time_us"], 2)
                    if best is None or r["time_us"] < best[0]:
                        best = (r["time_us"], form, b, bname)
                except Exception as e:  # noqa: BLE001
                    cands[f"{form}/{bname}"] = "error: " + mb._err(e)[:80]
        if best is not None:
            self.decode_attn = (best[1], best[2])
            self.attn_backend = f"{best[1]}/{best[3]}"
        return cands

    # prefill ----------------------------------------------------------------
    def prefill(self, ids, caches, cos, sin, argmax: bool = True):
        P = ids.shape[0]
        x = self.embed[ids]
        gqa = self.hq != self.hkv
        for L, (kc, vc) in zip(self.layers, caches):
            a = OPS["rms_norm"](x, L["ln1"])
            q, k, v = self._qkv(L, a, cos, sin)
            kc[0].copy_(k.transpose(0, 1))
            vc[0].copy_(v.transpose(0, 1))
            qt = q.transpose(0, 1).unsqueeze(0)
            self._probe_backend(qt, kc, vc, True, gqa)
            o = F.scaled_dot_product_attention(qt, kc, vc, is_causal=True, enable_gqa=gqa)
            x = self._mlp_block(L, x, o[0].transpose(0, 1).reshape(P, self.hq * self.hd))
        logits = F.linear(OPS["rms_norm"](x[-1:], self.final_norm), self.lm_head)
        return logits.argmax(-1) if argmax else logits


def _time_eager(fn, reps_target_s=1.0, min_reps=3, max_reps=20, warmup=1):
    for _ in range(warmup):
        fn()
    mb._sync()
    ts = []
    t_start = time.time()
    est = None
    cuda = torch.cuda.is_available()
    while True:
        if cuda:
            e0 = torch.cuda.Event(enable_timing=True)
            e1 = torch.cuda.Event(enable_timing=True)
            e0.record()
            fn()
            e1.record()
            torch.cuda.synchronize()
            ts.append(e0.elapsed_time(e1))
        else:
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        est = est or ts[0]
        n = len(ts)
        if n >= max_reps or (n >= min_reps and time.time() - t_start > reps_target_s):
            break
    return ts


def _ms_stats(ts):
    return {"time_ms": mb.statistics.median(ts), "p10_ms": mb._pct(ts, 0.1),
            "p90_ms": mb._pct(ts, 0.9), "min_ms": min(ts), "reps": len(ts)}


def _time_graph(fn, reps_target_s=0.6, min_reps=5, max_reps=30) -> dict:
    """Capture fn() in a CUDA graph (after a side-stream warm-up) and time replays."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    ts = _time_eager(g.replay, reps_target_s=reps_target_s, min_reps=min_reps,
                     max_reps=max_reps, warmup=2)
    del g
    return _ms_stats(ts)


def run_decode(model: DecoderLM, B: int, Lctx: int, reps_target_s=0.6) -> dict:
    dev = model.dev
    bf = torch.bfloat16
    caches = [(torch.randn(B, model.hkv, Lctx + 1, model.hd, device=dev, dtype=bf),
               torch.randn(B, model.hkv, Lctx + 1, model.hd, device=dev, dtype=bf))
              for _ in model.layers]
    ids = torch.randint(0, model.cfg["vocab"], (B,), device=dev)
    cos, sin = rope_tables(torch.full((B,), Lctx, device=dev), model.hd)
    step = lambda: model.decode_step(ids, caches, Lctx, cos, sin)  # noqa: E731
    res = {}
    model.attn_backend = None
    res["attn_candidates_us"] = model.pick_decode_attention(B, *caches[0])
    # eager (also warm-up / probe)
    ts = _time_eager(step, reps_target_s=0.2, min_reps=2, max_reps=3)
    res["eager_time_ms"] = mb.statistics.median(ts)
    if torch.cuda.is_available():
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                step()
            torch.cuda.current_stream().wait_stream(s)
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                step()
            ts = _time_eager(g.replay, reps_target_s=reps_target_s, min_reps=5, max_reps=30,
                             warmup=2)
            res.update(_ms_stats(ts))
            res["cuda_graph"] = True
            del g
        except Exception as e:  # noqa: BLE001
            res["graph_error"] = mb._err(e)
            ts = _time_eager(step, reps_target_s=reps_target_s, min_reps=3, max_reps=10)
            res.update(_ms_stats(ts))
            res["cuda_graph"] = False
    else:
        ts = _time_eager(step, reps_target_s=0.1, min_reps=2, max_reps=3)
        res.update(_ms_stats(ts))
        res["cuda_graph"] = False
    del caches
    return res


def run_prefill(model: DecoderLM, P: int, reps_target_s=1.0) -> dict:
    dev = model.dev
    bf = torch.bfloat16
    caches = [(torch.empty(1, model.hkv, P, model.hd, device=dev, dtype=bf),
               torch.empty(1, model.hkv, P, model.hd, device=dev, dtype=bf))
              for _ in model.layers]
    ids = torch.randint(0, model.cfg["vocab"], (P,), device=dev)
    cos, sin = rope_tables(torch.arange(P, device=dev), model.hd)
    fn = lambda: model.prefill(ids, caches, cos, sin)  # noqa: E731
    ts = _time_eager(fn, reps_target_s=reps_target_s, min_reps=3, max_reps=15, warmup=2)
    res = _ms_stats(ts)
    res["cuda_graph"] = False
    _add_graph_timing(res, fn, reps_target_s)
    del caches
    return res


def _add_graph_timing(res: dict, fn, reps_target_s: float):
    """Secondary timing of the same forward replayed from a CUDA graph (no launch
    overhead); the primary time_ms stays the eager one."""
    if not torch.cuda.is_available():
        return
    try:
        g = _time_graph(fn, reps_target_s=reps_target_s, min_reps=3, max_reps=15)
        res.update({"graph_time_ms": g["time_ms"], "graph_p10_ms": g["p10_ms"],
                    "graph_p90_ms": g["p90_ms"], "graph_reps": g["reps"]})
    except Exception as e:  # noqa: BLE001
        res["graph_error"] = mb._err(e)


# --------------------------------------------------------------------------
# vision encoders
# --------------------------------------------------------------------------

class ViT:
    def __init__(self, cfg: dict, dev, run: dict):
        self.cfg = cfg
        self.dev = dev
        bf = torch.bfloat16
        d, H = cfg["d"], cfg["heads"]
        self.d, self.H, self.hd = d, H, d // H
        self.lin = Linears("bf16", dev)
        r = lambda *s: torch.randn(*s, device=dev, dtype=bf)  # noqa: E731
        bias = cfg.get("bias", True)
        self.blocks = []
        for _ in range(cfg["blocks"]):
            b = {"n1w": 1 + 0.1 * r(d), "n2w": 1 + 0.1 * r(d),
                 "n1b": 0.02 * r(d) if cfg["norm"] == "ln" else None,
                 "n2b": 0.02 * r(d) if cfg["norm"] == "ln" else None,
                 "qkv": self.lin.weight(3 * d, d), "qkv_b": 0.02 * r(3 * d) if bias else None,
                 "proj": self.lin.weight(d, d), "proj_b": 0.02 * r(d) if bias else None}
            if cfg["act"] == "swiglu":
                b["fc1"] = self.lin.weight(2 * cfg["mlp"], d)
                b["fc1_b"] = 0.02 * r(2 * cfg["mlp"]) if bias else None
            else:
                b["fc1"] = self.lin.weight(cfg["mlp"], d)
                b["fc1_b"] = 0.02 * r(cfg["mlp"]) if bias else None
            b["fc2"] = self.lin.weight(d, cfg["mlp"])
            b["fc2_b"] = 0.02 * r(d) if bias else None
            if cfg.get("layer_scale"):
                b["ls1"], b["ls2"] = 0.1 * r(d), 0.1 * r(d)
            self.blocks.append(b)
        ps = cfg.get("patch_size", 14)
        if cfg["patch"] == "linear":
            self.patch_w = self.lin.weight(d, cfg["patch_in"])
        else:
            self.patch_w = r(d, 3, ps, ps).mul_((3 * ps * ps) ** -0.5)
            self.patch_b = 0.02 * r(d)
        if run.get("img"):
            side = run["img"] // ps
            ntok = side * side + (1 if cfg.get("cls") else 0)
            self.pos = 0.02 * r(1, ntok, d)
            self.cls = 0.02 * r(1, 1, d) if cfg.get("cls") else None
        self.pre_ln = (1 + 0.1 * r(d), 0.02 * r(d)) if cfg.get("pre_ln") else None
        self.post_ln = (1 + 0.1 * r(d), 0.02 * r(d)) if cfg.get("post_ln") else None
        if cfg.get("merger"):
            m = cfg["merger"]
            self.merger = {"ln": 1 + 0.1 * r(d), "fc1": self.lin.weight(m["hidden"], d * m["group"]),
                           "fc1_b": 0.02 * r(m["hidden"]), "fc2": self.lin.weight(m["out"], m["hidden"]),
                           "fc2_b": 0.02 * r(m["out"])}
        if cfg.get("projector"):
            p = cfg["projector"]
            din = int(d / (p["shuffle"] ** 2))
            self.projector = {"ln": (1 + 0.1 * r(din), 0.02 * r(din)),
                              "fc1": self.lin.weight(p["hidden"], din), "fc1_b": 0.02 * r(p["hidden"]),
                              "fc2": self.lin.weight(p["out"], p["hidden"]), "fc2_b": 0.02 * r(p["out"])}
        if run.get("proj_out"):
            self.gemma_proj = {"norm": 1 + 0.1 * r(d), "w": self.lin.weight(run["proj_out"], d)}
        self.attn_backend = None

    def weight_bytes(self) -> int:
        n = 0
        for b in self.blocks:
            n += sum(Linears.nbytes(b[k]) for k in ("qkv", "proj", "fc1", "fc2"))
        return n

    def _norm(self, x, w, b):
        if self.cfg["norm"] == "rms":
            return OPS["rms_norm"](x, w)
        return F.layer_norm(x, (x.shape[-1],), w, b, 1e-6)

    def _act(self, x):
        a = self.cfg["act"]
        if a == "swiglu":
            return OPS["silu_mul"](x)
        if a == "gelu_tanh":
            return F.gelu(x, approximate="tanh")
        if a == "quick_gelu":
            return x * torch.sigmoid(1.702 * x)
        return F.gelu(x)

    def _attn(self, b, a, blk_idx, cos, sin):
        B, S, d = a.shape
        H, hd = self.H, self.hd
        qkv = self.lin(a.reshape(B * S, d), b["qkv"], b["qkv_b"]).view(B, S, 3, H, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B,S,H,hd]
        if cos is not None:
            qk = OPS["rope"](qkv[:, :, :2].reshape(B * S, 2 * H, hd), cos, sin).view(B, S, 2, H, hd)
            q, k = qk[:, :, 0], qk[:, :, 1]
        win = self.cfg.get("window")
        if win and blk_idx not in self.cfg["full_blocks"] and S % win == 0:
            nw = B * S // win
            q, k, v = (t.reshape(nw, win, H, hd).transpose(1, 2) for t in (q, k, v))
        else:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if self.attn_backend is None:
            self.attn_backend = mb._default_backend(q, k, v, False, False)
        o = F.scaled_dot_product_attention(q, k, v)
        o = o.transpose(1, 2).reshape(B * S, d)
        return self.lin(o, b["proj"], b["proj_b"]).view(B, S, d)

    def forward(self, pixels, cos=None, sin=None):
        cfg = self.cfg
        if cfg["patch"] == "linear":
            x = self.lin(pixels, self.patch_w).unsqueeze(0)  # [1, N, d]
        else:
            x = F.conv2d(pixels, self.patch_w, self.patch_b, stride=cfg.get("patch_size", 14))
            x = x.flatten(2).transpose(1, 2)
            if self.cls is not None:
                x = torch.cat((self.cls.expand(x.shape[0], 1, self.d), x), 1)
            x = x + self.pos
        if self.pre_ln:
            x = F.layer_norm(x, (self.d,), *self.pre_ln, 1e-5)
        for i, b in enumerate(self.blocks):
            o = self._attn(b, self._norm(x, b["n1w"], b["n1b"]), i, cos, sin)
            x = x + (o * b["ls1"] if "ls1" in b else o)
            a = self._norm(x, b["n2w"], b["n2b"])
            B, S, d = a.shape
            h = self._act(self.lin(a.reshape(B * S, d), b["fc1"], b["fc1_b"]))
            o = self.lin(h, b["fc2"], b["fc2_b"]).view(B, S, d)
            x = x + (o * b["ls2"] if "ls2" in b else o)
        if self.post_ln:
            x = F.layer_norm(x, (self.d,), *self.post_ln, 1e-6)
        if cfg.get("merger"):
            m = cfg["merger"]
            y = OPS["rms_norm"](x, self.merger["ln"]).reshape(-1, self.d * m["group"])
            y = F.gelu(self.lin(y, self.merger["fc1"], self.merger["fc1_b"]))
            x = self.lin(y, self.merger["fc2"], self.merger["fc2_b"])
        if cfg.get("projector"):
            B, S, d = x.shape
            side = int(math.isqrt(S - 1))
            y = x[:, 1:].reshape(B, side // 2, 2, side // 2, 2, d).permute(0, 1, 3, 2, 4, 5)
            y = y.reshape(B * (side // 2) ** 2, 4 * d)
            y = F.layer_norm(y, (4 * d,), *self.projector["ln"], 1e-5)
            y = F.gelu(self.lin(y, self.projector["fc1"], self.projector["fc1_b"]))
            x = self.lin(y, self.projector["fc2"], self.projector["fc2_b"])
        if hasattr(self, "gemma_proj"):
            B, S, d = x.shape
            side = int(math.isqrt(S))
            y = x.transpose(1, 2).reshape(B, d, side, side)
            k = max(1, side // 16)
            y = F.avg_pool2d(y, k, k).flatten(2).transpose(1, 2)
            y = OPS["rms_norm"](y, self.gemma_proj["norm"])
            x = self.lin(y.reshape(-1, d), self.gemma_proj["w"])
        return x


def run_vision(arch: str, cfg: dict, run: dict, dev) -> dict:
    model = ViT(cfg, dev, run)
    bf = torch.bfloat16
    cos = sin = None
    if cfg["patch"] == "linear":
        N = run["patches"]
        pixels = torch.randn(N, cfg["patch_in"], device=dev, dtype=bf)
        tokens, images = N, 1
        if cfg.get("rope"):
            # 2D rope: half the rotary dims from row, half from column (same cost as 1D)
            cos, sin = rope_tables(torch.arange(N, device=dev) % 64, model.hd, theta=1e4)
    else:
        ps = cfg.get("patch_size", 14)
        images = run.get("images", 1)
        tiles = run.get("tiles", 1)
        # Each tile is its own sequence: the ViT's batch holds every tile of every image.
        pixels = torch.randn(images * tiles, 3, run["img"], run["img"], device=dev, dtype=bf)
        tokens = ((run["img"] // ps) ** 2 + (1 if cfg.get("cls") else 0)) * tiles
    fn = lambda: model.forward(pixels, cos, sin)  # noqa: E731
    ts = _time_eager(fn, reps_target_s=0.8, min_reps=3, max_reps=20, warmup=2)
    res = _ms_stats(ts)
    _add_graph_timing(res, fn, 0.5)
    tiles = run.get("tiles", 1) if cfg["patch"] != "linear" else 1
    res.update({"tokens_per_image": tokens, "images": images, "tiles_per_image": tiles,
                "sequences": images * tiles, "total_tokens": tokens * images,
                "cuda_graph": False, "attn_backend": model.attn_backend,
                "weight_bytes": model.weight_bytes()})
    del model
    return res


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------

def _smoke_decoder(cfg: dict) -> dict:
    c = dict(cfg)
    mha = cfg["q_heads"] == cfg["kv_heads"]
    c.update(layers=2, q_heads=4, kv_heads=4 if mha else 2, head_dim=32, hidden=128,
             inter=256, vocab=512)
    return c


def _smoke_vision(cfg: dict) -> dict:
    c = dict(cfg)
    c.update(blocks=2, d=128, heads=2, mlp=256)
    if c.get("full_blocks"):
        c["full_blocks"] = (1,)
        c["patch_in"] = 48
    if c.get("merger"):
        c["merger"] = dict(group=4, hidden=256, out=64)
    if c.get("projector"):
        c["projector"] = dict(shuffle=0.5, hidden=128, out=64)
    return c


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="end-to-end validation forward passes")
    ap.add_argument("--out", default="validation.json")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--archs", default=None, help="comma-separated decoder/vision names")
    ap.add_argument("--dtypes", default="bf16,fp8")
    ap.add_argument("--skip-vision", action="store_true")
    ap.add_argument("--skip-decoders", action="store_true")
    ap.add_argument("--vision-set", choices=("base", "extra"), default="base",
                    help="base: the runs of 1.1.x; extra: the further sizes added in 1.2.0")
    ap.add_argument("--decode-batches", default=None)
    ap.add_argument("--decode-ctxs", default=None)
    ap.add_argument("--prefill-lens", default=None)
    ap.add_argument("--compile-elementwise", action="store_true",
                    help="torch.compile the RMSNorm/SiLU*mul/RoPE helpers (fused like vLLM)")
    ap.add_argument("--time-budget-s", type=float, default=None)
    ap.add_argument("--mem-margin-gib", type=float, default=3.0)
    args = ap.parse_args(argv)

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    budget = mb.Budget(args.time_budget_s)
    prov = mb.provenance(argv, __file__)
    prov["script_version"] = SCRIPT_VERSION
    prov["microbench_sha256"] = mb._file_sha256(mb.__file__)
    prov["smoke"] = args.smoke
    prov["elementwise"] = "compiled" if args.compile_elementwise else "eager"
    res = {"provenance": prov,
           "description": __doc__,
           "points": []}
    if args.compile_elementwise:
        compile_ops()
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        mb.gpu_warmup(1.0)
    archs = set(args.archs.split(",")) if args.archs else None
    dtypes = args.dtypes.split(",")
    batches = [int(x) for x in args.decode_batches.split(",")] if args.decode_batches else DECODE_BATCHES
    ctxs = [int(x) for x in args.decode_ctxs.split(",")] if args.decode_ctxs else DECODE_CTXS
    plens = [int(x) for x in args.prefill_lens.split(",")] if args.prefill_lens else PREFILL_LENS
    margin = int(args.mem_margin_gib * GiB)
    total_mem = torch.cuda.get_device_properties(0).total_memory if dev.type == "cuda" else 64 * GiB
    if args.smoke:
        batches, ctxs, plens = [1, 2], [16, 40], [16, 48]
        margin = 0

    def dump():
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1, default=str)
        os.replace(tmp, args.out)

    def add(p):
        res["points"].append(p)
        t = p.get("time_ms")
        msg = f"{t:9.3f} ms" if t is not None else (p.get("skipped") or p.get("error", "")[:160])
        print(f"[validation] {p['arch']:20s} {p['phase']:7s} {p.get('dtype', ''):5s} "
              f"{p.get('label', '')}: {msg}", flush=True)

    # ---- vision encoders (cheap; first) ----
    if not args.skip_vision:
        for arch, label, run in (VISION_RUNS if args.vision_set == "base" else VISION_RUNS_EXTRA):
            if archs and arch not in archs:
                continue
            cfg = VISION[arch]
            if args.smoke:
                cfg = _smoke_vision(cfg)
                run = dict(run)
                if "patches" in run:
                    run["patches"] = 128
                else:
                    run["img"] = 56
                    run["images"] = min(run.get("images", 1), 2)
                    run["tiles"] = min(run.get("tiles", 1), 2)
                    if run.get("proj_out"):
                        run["proj_out"] = 64
            base = {"arch": arch, "family": "vision", "phase": "encode", "label": label,
                    "dtype": "bf16", "dims": cfg, "run": run, "elementwise": prov["elementwise"]}
            if budget.over():
                add(dict(base, skipped="time budget"))
                continue
            try:
                add(dict(base, **run_vision(arch, cfg, run, dev)))
            except Exception as e:  # noqa: BLE001
                add(dict(base, error=mb._err(e), traceback=traceback.format_exc()[-1500:]))
            mb._cleanup(collect=True)
            dump()

    # ---- decoders ----
    if not args.skip_decoders:
        for arch, cfg in DECODERS.items():
            if archs and arch not in archs:
                continue
            if args.smoke:
                cfg = _smoke_decoder(cfg)
            for dtype in dtypes:
                base = {"arch": arch, "family": "decoder", "dtype": dtype,
                        "dims": {k: v for k, v in cfg.items() if k != "bf16_min_gpu_gib"}}
                if dtype == "bf16" and cfg.get("bf16_min_gpu_gib") and not args.smoke \
                        and total_mem < cfg["bf16_min_gpu_gib"] * GiB:
                    add(dict(base, phase="all", skipped=f"bf16 needs >= {cfg['bf16_min_gpu_gib']} GiB GPU"))
                    continue
                est = DecoderLM.estimate_weight_bytes(cfg, dtype)
                if est > mb._free_mem() - margin - 2 * GiB:
                    add(dict(base, phase="all", skipped=f"memory: weights {est / GiB:.1f} GiB"))
                    continue
                if budget.over():
                    add(dict(base, phase="all", skipped="time budget"))
                    continue
                try:
                    model = DecoderLM(cfg, dtype, dev)
                except Exception as e:  # noqa: BLE001
                    add(dict(base, phase="all", error="build: " + mb._err(e)))
                    mb._cleanup()
                    continue
                base["weight_bytes"] = model.weight_bytes()
                base["fp8_pad_m_to_16"] = model.lin.pad16 if dtype == "fp8" else None
                base["elementwise"] = prov["elementwise"]
                for B in batches:
                    for Lc in ctxs:
                        p = dict(base, phase="decode", batch=B, context=Lc,
                                 label=f"B={B} ctx={Lc}", kv_bytes=model.kv_bytes(B, Lc))
                        if p["kv_bytes"] > mb._free_mem() - margin:
                            add(dict(p, skipped="memory"))
                            continue
                        if budget.over():
                            add(dict(p, skipped="time budget"))
                            continue
                        try:
                            p.update(run_decode(model, B, Lc))
                            p["attn_backend"] = model.attn_backend
                        except Exception as e:  # noqa: BLE001
                            p["error"] = mb._err(e)
                            p["traceback"] = traceback.format_exc()[-1500:]
                        add(p)
                        mb._cleanup()
                model.attn_backend = None
                for P in plens:
                    p = dict(base, phase="prefill", batch=1, prompt=P, label=f"P={P}")
                    if budget.over():
                        add(dict(p, skipped="time budget"))
                        continue
                    try:
                        p.update(run_prefill(model, P))
                        p["attn_backend"] = model.attn_backend
                    except Exception as e:  # noqa: BLE001
                        p["error"] = mb._err(e)
                        p["traceback"] = traceback.format_exc()[-1500:]
                    add(p)
                    mb._cleanup()
                del model
                mb._cleanup(collect=True)
                dump()
    prov["total_wall_s"] = round(time.time() - budget.t0, 1)
    dump()
    print(summarize(res), flush=True)
    return res


def summarize(res: dict) -> str:
    lines = [f"# validation on {res['provenance'].get('gpu_name')}"]
    for p in res["points"]:
        if "time_ms" not in p:
            continue
        if p["family"] == "vision" or (p["phase"] == "decode" and p["batch"] in (1, 32)
                                       and p["context"] == 2048) or \
                (p["phase"] == "prefill" and p["prompt"] in (512, 2048)):
            lines.append(f"{p['arch']:20s} {p['phase']:7s} {p['dtype']:5s} {p['label']:32s} "
                         f"{p['time_ms']:9.3f} ms")
    n_err = sum(1 for p in res["points"] if "error" in p)
    n_skip = sum(1 for p in res["points"] if "skipped" in p)
    n_ok = sum(1 for p in res["points"] if "time_ms" in p)
    lines.append(f"points: {n_ok} measured, {n_skip} skipped, {n_err} errors")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
