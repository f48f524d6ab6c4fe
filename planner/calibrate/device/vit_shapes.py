"""The vision towers' own shapes, op by op (run on the GPU; needs torch).

run9 showed the speed model's small-ViT errors cancel: GEMMs and non-GEMM work predicted slow, attention fast.
This measures each part at the shapes the validation harness (``validation_models.ViT``) runs, the way it
runs them, so that each can be modelled on its own:

* ``attn``: ``F.scaled_dot_product_attention`` on q/k/v sliced from one ``[B, S, 3, H, hd]`` QKV output
  (the harness's strided layout), default backend, 16 heads; S includes the +1 class-token lengths (577,
  1025) and B images or windows. Also the torch-profiler kernel list of one call (backend, copies).
* ``elementwise``: the towers' non-GEMM ops (LayerNorm with affine, residual add, GELU exact and tanh, the
  three kernels of quick-GELU, a layer-scale multiply) on ``[M, d]`` bf16, 'hot' (one buffer set reused, as
  consecutive kernels of a forward pass find their input in L2) and 'cold' (rotating sets >= 4x L2).
* ``transposed`` (1.1.0): a residual stream left in a patch convolution's transposed layout
  (``conv(x).flatten(2).transpose(1, 2)``, no class token concatenated: SigLIP): ``.contiguous()`` before a
  norm and an add with a contiguous tensor, both through PyTorch's generic kernel, cold and hot.
* ``gemm``: ``F.linear(x, W, b)`` (bias epilogue, as the harness) at the towers' (N, K) and M from 256 to
  8192 patches, rotating buffer sets (weights cold, as layer after layer).

Timing: ``microbench.bench`` (CUDA-graph replays, median of reps).
Usage: ``python planner/calibrate/vit_shapes.py --out vit_shapes.json [--smoke]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import microbench as mb  # noqa: E402

VERSION = "1.1.0"

# (N, K) of the towers' projections: qkv, o, mlp up, mlp down.
GEMM_SHAPES = {
    "clip/internvit d1024": [(3072, 1024), (1024, 1024), (4096, 1024), (1024, 4096)],
    "siglip d1152": [(3456, 1152), (1152, 1152), (4304, 1152), (1152, 4304)],
    "qwen2.5-vl d1280": [(3840, 1280), (1280, 1280), (3420, 1280), (1280, 3420)],
}
GEMM_M = (256, 577, 729, 1024, 1025, 1154, 2048, 2916, 4096, 8192)
ATTN = [(b, s, hd) for hd in (64, 72, 80) for s in (256, 576, 577, 729, 1024, 1025, 2304, 4096) for b in (1, 2, 4)]
ATTN += [(b, 64, 80) for b in (4, 16, 64, 256)]  # Qwen2.5-VL's 8x8-patch windows
EW_M = (256, 577, 1154, 2048, 4096, 8192, 16384)
EW_D = (1024, 4096)


def _profile_kernels(fn) -> list[list]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    out: dict[str, list[float]] = collections.defaultdict(list)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            us = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
            out[e.name[:100]].append(us)
    return [[k, len(v), round(sum(v), 2)] for k, v in out.items()]


def attn(smoke: bool) -> list[dict]:
    dev = mb._dev()
    dt = torch.bfloat16
    h = 16
    out = []
    for b, s, hd in (ATTN[:2] if smoke else ATTN):
        qkv = torch.randn(b, s, 3, h, hd, device=dev, dtype=dt)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        backend = mb._default_backend(q, k, v, False, False)

        def f(q=q, k=k, v=v):
            return F.scaled_dot_product_attention(q, k, v)

        def g(q=q, k=k, v=v, b=b, s=s, hd=hd):
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b * s, h * hd)

        r = mb.bench([f])
        r2 = mb.bench([g])
        flops = 4.0 * b * h * s * s * hd
        r.update({"batch": b, "heads": h, "head_dim": hd, "seq": s, "layout": "harness [B,S,3,H,hd] slices",
                  "default_backend": backend, "flops": flops, "tflops": flops / (r["time_us"] * 1e-6) / 1e12,
                  "with_output_reshape_us": r2["time_us"]})
        if torch.cuda.is_available():
            r["kernels"] = _profile_kernels(g)
        out.append(r)
        print(f"attn B={b} S={s} hd={hd} ({backend}): {r['time_us']:.1f} us ({r2['time_us']:.1f} with reshape), "
              f"{r['tflops']:.0f} TF/s", flush=True)
        del qkv, q, k, v
        mb._cleanup()
    return out


def _ew_ops(d: int, dev):
    dt = torch.bfloat16
    w = torch.randn(d, device=dev, dtype=dt)
    bias = torch.randn(d, device=dev, dtype=dt)
    # name -> (inputs per call, fn(*inputs), bytes moved in units of one [M, d] bf16 tensor)
    return {
        "layer_norm": (1, lambda x: F.layer_norm(x, (d,), w, bias, 1e-6), 2),
        "add": (2, lambda x, y: x + y, 3),
        "gelu": (1, lambda x: F.gelu(x), 2),
        "gelu_tanh": (1, lambda x: F.gelu(x, approximate="tanh"), 2),
        "sigmoid": (1, lambda x: torch.sigmoid(x), 2),
        "mul": (2, lambda x, y: x * y, 3),
        "mul_scalar": (1, lambda x: 1.702 * x, 2),
        "mul_vector": (1, lambda x: x * w, 2),
    }


def elementwise(smoke: bool) -> list[dict]:
    dev = mb._dev()
    dt = torch.bfloat16
    out = []
    ms, ds = ((256, 2048), (1024,)) if smoke else (EW_M, EW_D)
    for d in ds:
        ops = _ew_ops(d, dev)
        for m in ms:
            one = m * d * 2
            for name, (n_in, fn, units) in ops.items():
                for mode in ("hot", "cold"):
                    nset = 1 if mode == "hot" else mb._n_rotate(units * one, 32)
                    bufs = [[torch.randn(m, d, device=dev, dtype=dt) for _ in range(n_in)] for _ in range(nset)]
                    r = mb.bench([(lambda fn=fn, xs=xs: fn(*xs)) for xs in bufs])
                    r.update({"op": name, "mode": mode, "M": m, "d": d, "tensor_bytes": one,
                              "bytes": units * one, "buffer_sets": nset})
                    r["gb_per_s"] = r["bytes"] / (r["time_us"] * 1e-6) / 1e9
                    out.append(r)
                    del bufs
                print(f"ew {name} M={m} d={d}: hot {out[-2]['time_us']:.1f} us cold {out[-1]['time_us']:.1f} us",
                      flush=True)
            mb._cleanup()
    return out


def transposed(smoke: bool) -> list[dict]:
    dev = mb._dev()
    dt = torch.bfloat16
    out = []
    ms, ds = ((256,), (1152,)) if smoke else ((256, 729, 1024, 2916, 4096, 16384), (1024, 1152))
    for d in ds:
        for m in ms:
            one = m * d * 2
            for op, units in (("contiguous", 2), ("add", 3)):
                for mode in ("hot", "cold"):
                    nset = 1 if mode == "hot" else mb._n_rotate(units * one, 32)
                    xs = [torch.randn(1, d, m, device=dev, dtype=dt).transpose(1, 2) for _ in range(nset)]
                    ys = [torch.randn(1, m, d, device=dev, dtype=dt) for _ in range(nset)]
                    if op == "contiguous":
                        fns = [(lambda x=x: x.contiguous()) for x in xs]
                    else:
                        fns = [(lambda x=x, y=y: x + y) for x, y in zip(xs, ys)]
                    r = mb.bench(fns)
                    r.update({"op": op, "mode": mode, "M": m, "d": d, "bytes": units * one, "buffer_sets": nset})
                    r["gb_per_s"] = r["bytes"] / (r["time_us"] * 1e-6) / 1e9
                    out.append(r)
                    del xs, ys
                print(f"transposed {op} M={m} d={d}: hot {out[-2]['time_us']:.1f} us cold {out[-1]['time_us']:.1f} us",
                      flush=True)
            mb._cleanup()
    return out


def gemm(smoke: bool) -> list[dict]:
    dev = mb._dev()
    dt = torch.bfloat16
    out = []
    shapes = [(t, n, k) for t, lst in GEMM_SHAPES.items() for n, k in lst]
    ms = GEMM_M
    if smoke:
        shapes, ms = shapes[:2], (256,)
    for tag, n, k in shapes:
        for m in ms:
            nset = mb._n_rotate(2 * (m * k + n * k + m * n), 16)
            sets = [(torch.randn(m, k, device=dev, dtype=dt), torch.randn(n, k, device=dev, dtype=dt),
                     torch.randn(n, device=dev, dtype=dt)) for _ in range(nset)]
            r = mb.bench([(lambda x=x, w=w, b=b: F.linear(x, w, b)) for x, w, b in sets])
            flops = 2.0 * m * n * k
            r.update({"tower": tag, "M": m, "N": n, "K": k, "bias": True, "flops": flops,
                      "bytes": 2 * (m * k + n * k + m * n), "buffer_sets": nset,
                      "tflops": flops / (r["time_us"] * 1e-6) / 1e12})
            out.append(r)
            print(f"gemm {tag} M={m} N={n} K={k}: {r['time_us']:.1f} us {r['tflops']:.0f} TF/s", flush=True)
            del sets
            mb._cleanup()
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="vit_shapes.json")
    ap.add_argument("--smoke", action="store_true", help="a few tiny points (checks the script, e.g. on CPU)")
    ap.add_argument("--only", choices=("attn", "elementwise", "transposed", "gemm"))
    args = ap.parse_args(argv)
    t0 = time.time()
    res: dict = {"provenance": mb.provenance(argv, __file__), "version": VERSION}
    torch.backends.cuda.matmul.allow_tf32 = False
    mb.gpu_warmup()
    sections = {"attn": attn, "elementwise": elementwise, "transposed": transposed, "gemm": gemm}
    for name, fn in sections.items():
        if args.only and name != args.only:
            continue
        t = time.time()
        res[name] = {"points": fn(args.smoke), "section_wall_s": round(time.time() - t, 1)}
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1, default=str)
    res["provenance"]["total_wall_s"] = round(time.time() - t0, 1)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
