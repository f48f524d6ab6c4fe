"""Shape effects the main microbenchmark does not cover (run on the GPU; needs torch).

Two questions from the vision-encoder validation points (Qwen2.5-VL's ViT predicted ~15-20% fast):

* ``gemm_align``: bf16 ``torch.mm`` (cuBLAS) with a dimension that is not a multiple of 8 elements
  (16 bytes), e.g. Qwen2.5-VL's ViT MLP width 3420, against the same GEMM padded to a multiple of 64.
  Both time the same true FLOPs; the ratio is the alignment penalty.
* ``attn_batched``: non-causal SDPA (default backend) over many short independent sequences
  (a ViT's window attention: B windows of S tokens, 16 heads) and over one long sequence, at
  head dims 64, 72, 80, 96, 128: efficiency against sequence length when the GPU has plenty of
  work (B x H x S / 128 >> SMs).

Timing: ``microbench.bench`` (CUDA-graph replays of rotating buffers, median of reps).
Usage: ``python planner/calibrate/shape_effects.py --out shape_effects.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import microbench as mb  # noqa: E402

VERSION = "1.0.0"


def gemm_align() -> list[dict]:
    dev = mb._dev()
    out = []
    shapes = []
    for m in (1024, 4096, 16384):
        for n, k in ((1280, 3420), (3420, 1280), (6840, 1280), (1152, 4304), (4304, 1152)):
            shapes.append((m, n, k))
    for m, n, k in shapes:
        for tag, nn, kk in (("true", n, k), ("pad64", -(-n // 64) * 64, -(-k // 64) * 64)):
            fns, nbytes, _, _ = mb._make_gemm_fn("bf16", m, nn, kk, dev, mb._n_rotate(2 * (m * kk + nn * kk), 4))
            r = mb.bench(fns)
            r.update({"M": m, "N": nn, "K": kk, "shape_of": [m, n, k], "variant": tag,
                      "flops": 2.0 * m * nn * kk, "bytes": nbytes})
            r["tflops"] = r["flops"] / (r["time_us"] * 1e-6) / 1e12
            out.append(r)
            print(f"gemm {tag:5s} M={m} N={nn} K={kk}: {r['time_us']:.1f} us {r['tflops']:.0f} TF/s", flush=True)
            mb._cleanup()
    return out


def attn_batched() -> list[dict]:
    dev = mb._dev()
    dt = torch.bfloat16
    out = []
    configs = []
    for hd in (64, 72, 80, 96, 128):
        for s in (64, 256, 1024):
            configs.append((max(1, 65536 // s), 16, hd, s))  # 64K tokens in windows of s
        configs.append((1, 16, hd, 16384))
    for b, h, hd, s in configs:
        q, k, v = (torch.randn(b, h, s, hd, device=dev, dtype=dt) for _ in range(3))
        backend = mb._default_backend(q, k, v, False, False)
        fn = mb._sdpa_fn(q, k, v, False, False, None)
        r = mb.bench([fn])
        flops = 4.0 * b * h * s * s * hd
        r.update({"batch": b, "heads": h, "head_dim": hd, "seq": s, "causal": False, "default_backend": backend,
                  "flops": flops, "tflops": flops / (r["time_us"] * 1e-6) / 1e12})
        out.append(r)
        print(f"attn B={b} H={h} hd={hd} S={s} ({backend}): {r['time_us']:.1f} us {r['tflops']:.0f} TF/s", flush=True)
        del q, k, v
        mb._cleanup()
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="shape_effects.json")
    args = ap.parse_args(argv)
    t0 = time.time()
    res: dict = {"provenance": mb.provenance(argv, __file__), "version": VERSION}
    torch.backends.cuda.matmul.allow_tf32 = False
    mb.gpu_warmup()
    res["gemm_align"] = {"description": "bf16 torch.mm, weight [N,K]; 'true' shape vs each dim padded to 64",
                         "points": gemm_align()}
    res["attn_batched"] = {"description": "non-causal SDPA, default backend, [B,H,S,D] contiguous",
                           "points": attn_batched()}
    res["provenance"]["total_wall_s"] = round(time.time() - t0, 1)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
