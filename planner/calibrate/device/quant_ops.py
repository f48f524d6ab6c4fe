"""Dynamic fp8 activation quantisation as the validation harness runs it (run on the GPU; needs torch).

run11's kernel lists show the plain-PyTorch reference quantising each W8A8 GEMM input with four kernels that
none of the elementwise microbenchmarks cover: an abs-max reduction (``vector_norm(ord=inf, dtype=float32)``),
two kernels on the fp32 scale, and a divide-and-cast through PyTorch's casting kernel. This times that
sequence (``validation_models.Linears``' eager path), whole and piece by piece, on [M, K] bf16 inputs, with
rotating buffers (inputs from HBM) in CUDA graphs.
Usage: ``python planner/calibrate/quant_ops.py --out quant_ops.json [--smoke]``.
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
F8 = torch.float8_e4m3fn
F8_MAX = 448.0
MS = (1, 8, 32, 128, 512, 2048, 8192)
KS = (2048, 4096, 11008, 14336)


def _pieces(x):
    def whole():
        amax = torch.linalg.vector_norm(x, ord=float("inf"), dtype=torch.float32)
        s = (amax / F8_MAX).clamp_(min=1e-12)
        xq = torch.empty(x.shape, device=x.device, dtype=F8)
        torch.div(x, s, out=xq)
        return xq

    amax0 = torch.linalg.vector_norm(x, ord=float("inf"), dtype=torch.float32)
    s0 = (amax0 / F8_MAX).clamp_(min=1e-12)
    out = torch.empty(x.shape, device=x.device, dtype=F8)
    return {
        "whole": whole,
        "amax": lambda: torch.linalg.vector_norm(x, ord=float("inf"), dtype=torch.float32),
        "scale": lambda: (amax0 / F8_MAX).clamp_(min=1e-12),
        "div_cast": lambda: torch.div(x, s0, out=out),
    }


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="quant_ops.json")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.time()
    dev = mb._dev()
    res: dict = {"provenance": mb.provenance(argv, __file__), "version": VERSION, "points": []}
    mb.gpu_warmup()
    ms, ks = ((1, 64), (256,)) if args.smoke else (MS, KS)
    for m in ms:
        for k in ks:
            nset = mb._n_rotate(3 * m * k, 32)
            sets = [_pieces(torch.randn(m, k, device=dev, dtype=torch.bfloat16)) for _ in range(nset)]
            for piece in ("whole", "amax", "scale", "div_cast"):
                r = mb.bench([s[piece] for s in sets])
                r.update({"piece": piece, "M": m, "K": k, "input_bytes": 2 * m * k, "buffer_sets": nset})
                res["points"].append(r)
            w = res["points"][-4]
            print(f"quant M={m} K={k}: whole {w['time_us']:.1f} us; " + ", ".join(
                f"{p['piece']} {p['time_us']:.1f}" for p in res["points"][-3:]), flush=True)
            del sets
            mb._cleanup()
    res["provenance"]["total_wall_s"] = round(time.time() - t0, 1)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
