"""Which kernels the validation harness's vision encoders launch, and how long each takes (torch profiler).

For each tower of ``validation_models.VISION`` at a small and a mid size, one forward pass is profiled after
warm-up; every CUDA kernel is recorded with its duration and classified (gemm, attention, elementwise/other).
Per block and tower this gives the kernel count and time of the non-GEMM, non-attention work that the speed
model's ``TORCH_REFERENCE.vit_block`` / ``vit_act`` stand for.

Usage: ``python planner/calibrate/vit_kernels.py --out vit_kernels.json``.
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

VERSION = "1.0.0"
RUNS = [
    ("qwen2.5-vl-vit", "256 patches", dict(patches=256)),
    ("qwen2.5-vl-vit", "4096 patches", dict(patches=4096)),
    ("siglip-so400m-14", "384px", dict(img=384, images=1)),
    ("clip-vit-l-14-336", "2 images", dict(img=336, images=2)),
    ("internvit-300m", "1 tile", dict(img=448, images=1)),
    ("internvit-300m", "7 tiles", dict(img=448, images=7)),
]


def kind(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("gemm", "cutlass", "sm90_xmma", "nvjet", "cublas", "wgmma")) and "flash" not in n:
        return "gemm"
    if any(k in n for k in ("flash", "fmha", "attention", "cudnn", "sdpa")):
        return "attention"
    return "other"


def profile_run(arch: str, run: dict, dev) -> dict:
    cfg = vm.VISION[arch]
    model = vm.ViT(cfg, dev, run)
    bf = torch.bfloat16
    cos = sin = None
    if cfg["patch"] == "linear":
        n = run["patches"]
        pixels = torch.randn(n, cfg["patch_in"], device=dev, dtype=bf)
        if cfg.get("rope"):
            cos, sin = vm.rope_tables(torch.arange(n, device=dev) % 64, model.hd, theta=1e4)
    else:
        pixels = torch.randn(run.get("images", 1), 3, run["img"], run["img"], device=dev, dtype=bf)
    for _ in range(3):
        model.forward(pixels, cos, sin)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model.forward(pixels, cos, sin)
        torch.cuda.synchronize()
    per_kind: dict[str, list[float]] = collections.defaultdict(list)
    names: dict[str, list[float]] = collections.defaultdict(list)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            us = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
            per_kind[kind(e.name)].append(us)
            names[e.name[:90]].append(us)
    blocks = cfg["blocks"]
    return {"arch": arch, "run": run, "blocks": blocks,
            "kernels": {k: len(v) for k, v in per_kind.items()},
            "time_us": {k: sum(v) for k, v in per_kind.items()},
            "other_kernels_per_block": len(per_kind["other"]) / blocks,
            "other_us_per_block": sum(per_kind["other"]) / blocks,
            "top_other": sorted(((k, len(v), sum(v)) for k, v in names.items() if kind(k) == "other"),
                                key=lambda t: -t[2])[:12]}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="vit_kernels.json")
    args = ap.parse_args(argv)
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    res = {"provenance": mb.provenance(argv, __file__), "version": VERSION, "points": []}
    for arch, label, run in RUNS:
        p = profile_run(arch, run, dev)
        p["label"] = label
        res["points"].append(p)
        print(json.dumps({k: p[k] for k in ("arch", "label", "kernels", "time_us", "other_kernels_per_block",
                                            "other_us_per_block")}), flush=True)
        for t in p["top_other"]:
            print("   ", t, flush=True)
        mb._cleanup(collect=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
