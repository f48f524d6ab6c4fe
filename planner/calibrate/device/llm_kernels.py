"""Which kernels the validation harness's decoder steps launch, and how long each takes (torch profiler).

The companion of ``vit_kernels.py`` for ``validation_models.DecoderLM``: one decode step (B = 1 and 32,
context 512) and one prefill (512 tokens) of a small and a mid-size decoder in bf16 and fp8, every CUDA kernel
recorded with its duration and classified (gemm, attention, other), so that the reference kernel profile
(``speed.TORCH_REFERENCE``) can be checked against what really runs.
Usage: ``python planner/calibrate/llm_kernels.py --out llm_kernels.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import microbench as mb  # noqa: E402
import validation_models as vm  # noqa: E402
from vit_kernels import kind  # noqa: E402

VERSION = "1.0.0"
RUNS = [(arch, dtype, phase, n) for arch in ("qwen2.5-vl-3b-text", "llama-3.1-8b") for dtype in ("bf16", "fp8")
        for phase, n in (("decode", 1), ("decode", 32), ("prefill", 512))]


def profile_run(arch: str, dtype: str, phase: str, n: int, dev) -> dict:
    cfg = vm.DECODERS[arch]
    model = vm.DecoderLM(cfg, dtype, dev)
    bf = torch.bfloat16
    ctx = 512
    if phase == "decode":
        caches = [(torch.randn(n, model.hkv, ctx + 1, model.hd, device=dev, dtype=bf),
                   torch.randn(n, model.hkv, ctx + 1, model.hd, device=dev, dtype=bf)) for _ in model.layers]
        ids = torch.randint(0, cfg["vocab"], (n,), device=dev)
        cos, sin = vm.rope_tables(torch.full((n,), ctx, device=dev), model.hd)
        model.pick_decode_attention(n, *caches[0])

        def step():
            return model.decode_step(ids, caches, ctx, cos, sin)
    else:
        caches = [(torch.empty(1, model.hkv, n, model.hd, device=dev, dtype=bf),
                   torch.empty(1, model.hkv, n, model.hd, device=dev, dtype=bf)) for _ in model.layers]
        ids = torch.randint(0, cfg["vocab"], (n,), device=dev)
        cos, sin = vm.rope_tables(torch.arange(n, device=dev), model.hd)

        def step():
            return model.prefill(ids, caches, cos, sin)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    per_kind: dict[str, list[float]] = collections.defaultdict(list)
    names: dict[str, list[float]] = collections.defaultdict(list)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            us = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
            per_kind[kind(e.name)].append(us)
            names[e.name[:100]].append(us)
    layers = cfg["layers"]
    out = {"arch": arch, "dtype": dtype, "phase": phase, "n": n, "context": ctx if phase == "decode" else 0,
           "layers": layers, "kernels": {k: len(v) for k, v in per_kind.items()},
           "time_us": {k: sum(v) for k, v in per_kind.items()},
           "all": sorted(([k, len(v), round(sum(v), 2)] for k, v in names.items()), key=lambda t: -t[2])}
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="llm_kernels.json")
    args = ap.parse_args(argv)
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    res = {"provenance": mb.provenance(argv, __file__), "version": VERSION, "points": []}
    for arch, dtype, phase, n in RUNS:
        p = profile_run(arch, dtype, phase, n, dev)
        res["points"].append(p)
        print(json.dumps({k: p[k] for k in ("arch", "dtype", "phase", "n", "kernels", "time_us")}), flush=True)
        for t in p["all"][:14]:
            print("   ", t, flush=True)
        mb._cleanup(collect=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
