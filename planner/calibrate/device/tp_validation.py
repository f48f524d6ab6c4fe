"""Tensor-parallel forward passes (decode steps and prefills) for validating the speed model's TP path.

Each rank holds a Megatron-style shard of ``validation_models.DecoderLM``: the q/kv heads, the MLP width
and the lm_head's vocabulary split TP ways (as vLLM's QKVParallelLinear, MergedColumnParallelLinear,
RowParallelLinear and ParallelLMHead do), with an NCCL all-reduce of the hidden state after the attention
output projection and after the MLP down projection of every layer (two per layer, as vLLM). Simplified
against vLLM: the token embedding is replicated (vLLM splits it by vocabulary and all-reduces once per
step) and the lm_head's logits are not gathered.

Decode steps are captured with their all-reduces in one CUDA graph per rank and timed by replay, a fixed
number of times on every rank (the collectives keep the ranks in step); prefill is timed the same way.
Rank 0 writes the points in the ``validation_models`` format plus ``tp``.

Usage (one process per GPU is spawned)::

    python planner/calibrate/tp_validation.py --tp 2 --out tp2.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import microbench as mb  # noqa: E402
import validation_models as vm  # noqa: E402

VERSION = "1.0.0"
RUNS = {
    # arch (dims as validation_models.DECODERS, layers possibly cut to fit), decode (B, ctx) grid, prompts
    "llama-3.1-8b": (dict(vm.DECODERS["llama-3.1-8b"]),
                     [(1, 1024), (1, 4096), (8, 2048), (32, 2048), (128, 1024)], [512, 2048, 8192]),
    "llama-3.1-70b-40l": (dict(layers=40, hidden=8192, q_heads=64, kv_heads=8, head_dim=128, inter=28672,
                               vocab=128256, qkv_bias=False, qk_norm=False, tie=False,
                               note="Llama-3.1-70B's layer shapes, 40 of its 80 layers (memory)"),
                          [(1, 1024), (1, 4096), (8, 2048), (32, 2048), (64, 1024)], [512, 2048, 8192]),
}


class ShardLM(vm.DecoderLM):
    """One TP rank: the shard's GEMMs plus the two all-reduces per layer."""

    def _mlp_block(self, L, x, o):
        t = self.lin(o, L["o"])
        dist.all_reduce(t)
        x = x + t
        a = vm.OPS["rms_norm"](x, L["ln2"])
        t = self.lin(vm.OPS["silu_mul"](self.lin(a, L["gu"])), L["d"])
        dist.all_reduce(t)
        return x + t


def shard_dims(dims: dict, tp: int) -> dict:
    s = dict(dims)
    for k in ("q_heads", "kv_heads", "inter", "vocab"):
        assert s[k] % tp == 0, (k, s[k], tp)
        s[k] //= tp
    return s


def _timed_replays(fn, reps: int) -> list[float]:
    """Capture ``fn`` in a CUDA graph and replay it ``reps`` times (the same count on every rank)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    torch.cuda.synchronize()
    dist.barrier()
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        out.append(e0.elapsed_time(e1))
    del g
    return out


def _point(arch: str, dims: dict, tp: int, phase: str, label: str, ts: list[float], **extra) -> dict:
    return dict(arch=arch, family="decoder", dtype="bf16", dims=dims, tp=tp, phase=phase, label=label,
                time_ms=statistics.median(ts), p10_ms=mb._pct(ts, 0.1), p90_ms=mb._pct(ts, 0.9), reps=len(ts),
                cuda_graph=True, graph_time_ms=statistics.median(ts), **extra)


def worker(rank: int, tp: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=tp, device_id=torch.device("cuda", rank))
    dev = torch.device("cuda", rank)
    torch.manual_seed(rank)
    points = []
    for arch, (dims, decode_grid, prompts) in RUNS.items():
        t0 = time.time()
        model = ShardLM(shard_dims(dims, tp), "bf16", dev)
        bf = torch.bfloat16
        for B, L in decode_grid:
            caches = [(torch.randn(B, model.hkv, L + 1, model.hd, device=dev, dtype=bf),
                       torch.randn(B, model.hkv, L + 1, model.hd, device=dev, dtype=bf)) for _ in model.layers]
            model.decode_attn = ("enable_gqa", None)
            ids = torch.randint(0, model.cfg["vocab"], (B,), device=dev)
            cos, sin = vm.rope_tables(torch.full((B,), L, device=dev), model.hd)
            ts = _timed_replays(lambda: model.decode_step(ids, caches, L, cos, sin), 20)  # noqa: B023
            points.append(_point(arch, dims, tp, "decode", f"TP={tp} B={B} ctx={L}", ts, batch=B, context=L))
            del caches
            torch.cuda.empty_cache()
        for P in prompts:
            caches = [(torch.empty(1, model.hkv, P, model.hd, device=dev, dtype=bf),
                       torch.empty(1, model.hkv, P, model.hd, device=dev, dtype=bf)) for _ in model.layers]
            ids = torch.randint(0, model.cfg["vocab"], (P,), device=dev)
            cos, sin = vm.rope_tables(torch.arange(P, device=dev), model.hd)
            ts = _timed_replays(lambda: model.prefill(ids, caches, cos, sin), 10)  # noqa: B023
            points.append(_point(arch, dims, tp, "prefill", f"TP={tp} P={P}", ts, prompt=P))
            del caches
            torch.cuda.empty_cache()
        if rank == 0:
            print(f"[tp{tp}] {arch}: {time.time() - t0:.1f} s", flush=True)
        del model
        torch.cuda.empty_cache()
    if rank == 0:
        res = {"provenance": mb.provenance(sys.argv[1:], __file__), "version": VERSION, "tp": tp,
               "description": __doc__.split("\n\n")[0], "points": points}
        with open(out, "w") as f:
            json.dump(res, f, indent=1, default=str)
        for p in points:
            print(f"{p['arch']:20s} {p['label']:24s} {p['time_ms']:8.3f} ms", flush=True)
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--port", type=int, default=29533)
    ap.add_argument("--out", default="tp_validation.json")
    args = ap.parse_args(argv)
    tmp.spawn(worker, args=(args.tp, args.port, args.out), nprocs=args.tp, join=True)


if __name__ == "__main__":
    main(sys.argv[1:])
