"""GPU micro-benchmarks for calibrating vlmplan's roofline speed model.

Standalone: imports only torch and the standard library, so that
``vlmplan calibrate run`` can call it on a user's GPU, and so that it can be
run directly::

    python planner/calibrate/microbench.py --out microbench.json
    python planner/calibrate/microbench.py --smoke          # tiny shapes, CPU ok

Sections (``--only`` / ``--skip`` take comma-separated names):

  hbm          device copy + read-only reduction, 64 KiB .. 4 GiB -> GB/s
  gemm         bf16 mm, fp8 e4m3 W8A8 (torch._scaled_mm, per-tensor scales),
               int8 (torch._int_mm), int4 weight-only (torch._weight_int4pack_mm)
  attn_prefill SDPA causal (GQA) and non-causal (ViT) per backend
  attn_decode  q len 1 against a KV cache, GQA, packed-GQA and enable_gqa forms
  elementwise  RMSNorm and SiLU*mul, eager and torch.compile'd
  launch       per-kernel launch cost, eager vs inside a CUDA graph
  allreduce    NCCL all-reduce bf16, one process per GPU (needs >= 2 GPUs)

Timing: warm-up, then the op is captured N times into a CUDA graph (rotating
among input buffer sets so the working set exceeds L2 where that matters) and
the graph replays are timed with CUDA events; per-op time = replay / N; the
median (and p10/p90) over replays is reported.  Ops that take > 20 ms are
timed eagerly with events.  All inputs are random (never zeros).

Every function returns plain dicts/lists; ``main(argv)`` writes one JSON with a
``provenance`` block and one entry per section.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import traceback

import torch

SCRIPT_VERSION = "1.1.0"

GiB = 1024 ** 3
MiB = 1024 ** 2
KiB = 1024


# --------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------

def _file_sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _nvidia_smi(index: str | None) -> dict:
    fields = ["name", "memory.total", "driver_version", "clocks.max.sm",
              "clocks.max.memory", "power.limit", "pci.bus_id", "clocks.sm",
              "temperature.gpu"]
    cmd = ["nvidia-smi", "--query-gpu=" + ",".join(fields),
           "--format=csv,noheader,nounits"]
    if index is not None:
        cmd += ["-i", str(index)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        line = out.stdout.strip().splitlines()[0]
        vals = [v.strip() for v in line.split(",")]
        d = dict(zip(fields, vals))
        res = {
            "name": d.get("name"),
            "memory_total_mib": _num(d.get("memory.total")),
            "driver_version": d.get("driver_version"),
            "max_sm_clock_mhz": _num(d.get("clocks.max.sm")),
            "max_mem_clock_mhz": _num(d.get("clocks.max.memory")),
            "power_limit_w": _num(d.get("power.limit")),
            "pci_bus_id": d.get("pci.bus_id"),
            "sm_clock_mhz_at_start": _num(d.get("clocks.sm")),
            "temperature_c_at_start": _num(d.get("temperature.gpu")),
        }
    except Exception as e:  # noqa: BLE001
        res = {"error": f"nvidia-smi failed: {e!r}"}
    try:
        topo = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True,
                              text=True, timeout=20).stdout
        res["topo"] = topo.strip()[:2000]
    except Exception:  # noqa: BLE001
        pass
    return res


def _num(s):
    try:
        f = float(s)
        return int(f) if f.is_integer() else f
    except (TypeError, ValueError):
        return s


def provenance(argv: list[str] | None = None, script_path: str | None = None) -> dict:
    """Environment description attached to every result file."""
    p: dict = {
        "script": os.path.basename(script_path or __file__),
        "script_version": SCRIPT_VERSION,
        "script_sha256": _file_sha256(script_path or __file__),
        "command_line": " ".join([sys.executable] + list(sys.argv)),
        "argv": list(sys.argv[1:] if argv is None else argv),
        "utc_date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": (torch.backends.cudnn.version()
                          if torch.backends.cudnn.is_available() else None),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE"),
    }
    try:
        import triton  # noqa: F401
        p["triton_version"] = triton.__version__
    except Exception:  # noqa: BLE001
        p["triton_version"] = None
    if torch.cuda.is_available():
        dev = torch.cuda.current_device()
        prop = torch.cuda.get_device_properties(dev)
        p.update({
            "device": "cuda",
            "gpu_name": torch.cuda.get_device_name(dev),
            "gpu_count": torch.cuda.device_count(),
            "sm_count": prop.multi_processor_count,
            "l2_cache_bytes": getattr(prop, "L2_cache_size", None),
            "total_memory_bytes": prop.total_memory,
            "compute_capability": f"{prop.major}.{prop.minor}",
        })
        try:
            p["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001
            p["nccl_version"] = None
        vis = os.environ.get("CUDA_VISIBLE_DEVICES")
        phys = vis.split(",")[dev] if vis else str(dev)
        p["physical_gpu_index"] = phys
        p["nvidia_smi"] = _nvidia_smi(phys)
    else:
        p.update({"device": "cpu", "gpu_name": None, "cpu": platform.processor()})
    return p


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------

def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _stats_us(times_us: list[float], **extra) -> dict:
    d = {
        "time_us": statistics.median(times_us),
        "p10_us": _pct(times_us, 0.10),
        "p90_us": _pct(times_us, 0.90),
        "min_us": min(times_us),
        "reps": len(times_us),
    }
    d.update(extra)
    return d


def bench(fns, *, target_ms: float = 60.0, min_reps: int = 5, max_reps: int = 50,
          graph_target_ms: float = 1.0, max_inner: int = 200, use_graph: bool = True,
          eager_above_ms: float = 20.0) -> dict:
    """Time a list of equivalent zero-arg callables (one per rotating buffer set).

    Returns median/p10/p90 per single call in microseconds, plus the method.
    On CUDA: warm-up on a side stream, eager estimate, then a CUDA graph holding
    ``inner`` calls (cycling through ``fns``) replayed ``reps`` times.
    On CPU: host timer around each call.
    """
    if not isinstance(fns, (list, tuple)):
        fns = [fns]
    n = len(fns)
    if not torch.cuda.is_available():
        for f in fns:
            f()
        est = time.perf_counter()
        for f in fns:
            f()
        est = (time.perf_counter() - est) / n * 1e3
        reps = int(max(min_reps, min(max_reps, target_ms / max(est, 1e-3))))
        ts = []
        for i in range(reps):
            t0 = time.perf_counter()
            fns[i % n]()
            ts.append((time.perf_counter() - t0) * 1e6)
        return _stats_us(ts, method="cpu_host_timer", inner=1)

    cur = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(cur)
    with torch.cuda.stream(side):
        for _ in range(2):
            for f in fns:
                f()
    cur.wait_stream(side)
    torch.cuda.synchronize()
    e0 = torch.cuda.Event(enable_timing=True)
    e1 = torch.cuda.Event(enable_timing=True)
    e0.record()
    for f in fns:
        f()
    e1.record()
    torch.cuda.synchronize()
    est = e0.elapsed_time(e1) / n  # ms per call, eager (includes launch gaps)

    if not use_graph or est > eager_above_ms:
        reps = int(max(min_reps, min(max_reps, target_ms / max(est, 1e-4))))
        ts = []
        for i in range(reps):
            e0.record()
            fns[i % n]()
            e1.record()
            torch.cuda.synchronize()
            ts.append(e0.elapsed_time(e1) * 1e3)
        return _stats_us(ts, method="eager_cuda_events", inner=1, eager_estimate_us=est * 1e3)

    inner = int(max(n, min(max_inner, math.ceil(graph_target_ms / max(est, 1e-4)))))
    inner = int(math.ceil(inner / n) * n)
    try:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(inner):
                fns[i % n]()
        g.replay()
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        torch.cuda.synchronize()
        r = bench(fns, target_ms=target_ms, min_reps=min_reps, max_reps=max_reps,
                  use_graph=False)
        r["graph_error"] = repr(e)[:300]
        return r
    e0.record()
    g.replay()
    e1.record()
    torch.cuda.synchronize()
    per_replay = e0.elapsed_time(e1)
    reps = int(max(min_reps, min(max_reps, target_ms / max(per_replay, 1e-4))))
    ts = []
    for _ in range(reps):
        e0.record()
        g.replay()
        e1.record()
        torch.cuda.synchronize()
        ts.append(e0.elapsed_time(e1) * 1e3 / inner)
    del g
    return _stats_us(ts, method="cuda_graph_replay", inner=inner, eager_estimate_us=est * 1e3)


class Budget:
    """Wall-clock budget shared by the sections; points past it are skipped."""

    def __init__(self, seconds: float | None):
        self.t0 = time.time()
        self.seconds = seconds

    def left(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (time.time() - self.t0)

    def over(self) -> bool:
        return self.left() <= 0


def _dev():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _l2_bytes() -> int:
    if torch.cuda.is_available():
        return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 * MiB) or 50 * MiB)
    return 32 * MiB


def _n_rotate(bytes_per_set: int, max_sets: int = 32) -> int:
    """Buffer sets needed so the rotating working set is >= 4x L2."""
    want = 4 * _l2_bytes()
    return int(max(1, min(max_sets, math.ceil(want / max(bytes_per_set, 1)))))


def _free_mem() -> int:
    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    return 8 * GiB


def _cleanup(collect: bool = False):
    if collect:
        import gc
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _err(e: BaseException) -> str:
    return (type(e).__name__ + ": " + str(e)).replace("\n", " ")[:400]


def gpu_warmup(seconds: float = 1.5):
    """Bring clocks up before the first measurement."""
    if not torch.cuda.is_available():
        return
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t0 = time.time()
    while time.time() - t0 < seconds:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()
    del a
    _cleanup()


# --------------------------------------------------------------------------
# a. HBM bandwidth
# --------------------------------------------------------------------------

def bench_hbm(smoke: bool = False, budget: Budget | None = None) -> dict:
    dev = _dev()
    sizes = [64 * KiB * 2 ** i for i in range(17)]  # 64 KiB .. 4 GiB
    if smoke:
        sizes = [64 * KiB, 1 * MiB, 8 * MiB]
    points = []
    for size in sizes:
        if budget and budget.over():
            points.append({"bytes_buffer": size, "skipped": "time budget"})
            continue
        if 2.2 * size > _free_mem() - 2 * GiB:
            points.append({"bytes_buffer": size, "skipped": "memory"})
            continue
        nset = _n_rotate(2 * size, max_sets=64)
        try:
            n = size // 2
            srcs = [torch.randn(n, device=dev, dtype=torch.bfloat16) for _ in range(nset)]
            dsts = [torch.empty_like(s) for s in srcs]
            fns = [(lambda s=s, d=d: d.copy_(s)) for s, d in zip(srcs, dsts)]
            r = bench(fns)
            r.update({"op": "copy", "bytes_buffer": size, "bytes_moved": 2 * size,
                      "buffer_sets": nset})
            r["gb_per_s"] = r["bytes_moved"] / (r["time_us"] * 1e-6) / 1e9
            points.append(r)
            del dsts
            n32 = size // 4
            srcs = [s.view(torch.float32)[:n32] for s in srcs]
            outs = [torch.empty((), device=dev, dtype=torch.float32) for _ in srcs]
            fns = [(lambda s=s, o=o: torch.sum(s, dim=0, out=o)) for s, o in zip(srcs, outs)]
            r = bench(fns)
            r.update({"op": "sum_fp32", "bytes_buffer": size, "bytes_moved": size,
                      "buffer_sets": nset})
            r["gb_per_s"] = r["bytes_moved"] / (r["time_us"] * 1e-6) / 1e9
            points.append(r)
            del srcs, outs, fns
        except Exception as e:  # noqa: BLE001
            points.append({"bytes_buffer": size, "error": _err(e)})
        _cleanup()
    return {"description": "device-to-device copy (bytes_moved = read + write) and fp32 "
                           "sum reduction (bytes_moved = read), bf16/fp32 random data; "
                           "rotating buffer sets so the working set is >= 4x L2 where possible",
            "points": points}


# --------------------------------------------------------------------------
# b. GEMM
# --------------------------------------------------------------------------

GEMM_SHAPES = [  # name, N (out features), K (in features)
    ("llama8b_qkv", 6144, 4096),
    ("llama8b_o", 4096, 4096),
    ("llama8b_gate_up", 28672, 4096),
    ("llama8b_down", 4096, 14336),
    ("qwen7b_qkv", 4608, 3584),
    ("qwen7b_gate_up", 37888, 3584),
    ("qwen7b_down", 3584, 18944),
    ("qwen3b_qkv", 2560, 2048),
    ("qwen3b_down", 2048, 11008),
    ("llama70b_qkv", 10240, 8192),
    ("llama70b_o", 8192, 8192),
    ("llama70b_gate_up_tp4", 14336, 8192),
    ("llama70b_down_tp2", 8192, 14336),
    ("vit_qkv_d1280", 3840, 1280),
    ("vit_mlp_d1024", 4096, 1024),
    ("llama8b_lm_head", 128256, 4096),
]
GEMM_M = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
LM_HEAD_MAX_M = 1024
INT4_MAX_M = 1024
GEMM_DTYPES = ["bf16", "fp8_e4m3", "fp8_e4m3_fastacc", "int8", "int4_wo_g128"]


def _make_gemm_fn(dtype: str, M: int, N: int, K: int, dev, nset: int):
    """Returns (fns, bytes, m_used, notes). Weight layout [N, K] (as nn.Linear)."""
    notes = {}
    fns = []
    if dtype == "bf16":
        for _ in range(nset):
            a = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            w = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
            c = torch.empty(M, N, device=dev, dtype=torch.bfloat16)
            fns.append(lambda a=a, w=w, c=c: torch.mm(a, w.t(), out=c))
        nbytes = 2 * M * K + 2 * N * K + 2 * M * N
        return fns, nbytes, M, notes
    if dtype.startswith("fp8"):
        fast = dtype.endswith("fastacc")
        f8 = torch.float8_e4m3fn
        for _ in range(nset):
            a = torch.randn(M, K, device=dev, dtype=torch.bfloat16).to(f8)
            w = torch.randn(N, K, device=dev, dtype=torch.bfloat16).to(f8)
            sa = torch.tensor(0.5, device=dev, dtype=torch.float32)
            sb = torch.tensor(0.25, device=dev, dtype=torch.float32)
            fns.append(lambda a=a, w=w, sa=sa, sb=sb: torch._scaled_mm(
                a, w.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16,
                use_fast_accum=fast))
        notes["use_fast_accum"] = fast
        nbytes = M * K + N * K + 2 * M * N
        return fns, nbytes, M, notes
    if dtype == "int8":
        for _ in range(nset):
            a = torch.randint(-127, 127, (M, K), device=dev, dtype=torch.int8)
            w = torch.randint(-127, 127, (N, K), device=dev, dtype=torch.int8)
            fns.append(lambda a=a, w=w: torch._int_mm(a, w.t()))
        nbytes = M * K + N * K + 4 * M * N
        notes["out_dtype"] = "int32"
        return fns, nbytes, M, notes
    if dtype == "int4_wo_g128":
        if dev.type != "cuda":
            raise RuntimeError("int4 tinygemm path is CUDA-only")
        gs = 128
        for _ in range(nset):
            a = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            q = torch.randint(0, 256, (N, K // 2), device=dev, dtype=torch.uint8)
            wp = torch._convert_weight_to_int4pack(q, 8)
            sz = torch.randn(K // gs, N, 2, device=dev, dtype=torch.bfloat16) * 0.01
            fns.append(lambda a=a, wp=wp, sz=sz: torch._weight_int4pack_mm(a, wp, gs, sz))
        nbytes = 2 * M * K + N * K // 2 + (K // gs) * N * 4 + 2 * M * N
        notes["group_size"] = gs
        notes["kernel"] = "torch tinygemm (_weight_int4pack_mm); vLLM uses Marlin/Machete"
        return fns, nbytes, M, notes
    raise ValueError(dtype)


def bench_gemm(smoke: bool = False, budget: Budget | None = None,
               dtypes: list[str] | None = None) -> dict:
    dev = _dev()
    shapes = GEMM_SHAPES
    ms = GEMM_M
    if smoke:
        shapes = [("tiny_a", 256, 128), ("tiny_b", 128, 256)]
        ms = [1, 16, 64]
    dtypes = dtypes or GEMM_DTYPES
    points = []
    for dtype in dtypes:
        for name, N, K in shapes:
            for M in ms:
                if name.endswith("lm_head") and M > LM_HEAD_MAX_M:
                    continue
                if dtype.startswith("int4") and M > INT4_MAX_M:
                    continue
                base = {"dtype": dtype, "shape": name, "M": M, "N": N, "K": K,
                        "flops": 2 * M * N * K}
                if budget and budget.over():
                    base["skipped"] = "time budget"
                    points.append(base)
                    continue
                wbytes = N * K * (2 if dtype == "bf16" else 1)
                nset = _n_rotate(wbytes + 2 * M * K, max_sets=16)
                m_try = [M]
                if dtype.startswith("fp8") and M % 16:
                    m_try.append(16 * math.ceil(M / 16))
                if dtype == "int8" and M <= 16:
                    m_try.append(32)
                last_err = None
                for m_used in m_try:
                    try:
                        fns, nbytes, _, notes = _make_gemm_fn(dtype, m_used, N, K, dev, nset)
                        r = bench(fns, target_ms=40.0, max_reps=30)
                        r.update(base)
                        r.update(notes)
                        r["bytes"] = nbytes
                        r["buffer_sets"] = nset
                        if m_used != M:
                            r["m_padded_to"] = m_used
                            r["pad_reason"] = last_err
                        r["tflops"] = r["flops"] / (r["time_us"] * 1e-6) / 1e12
                        r["gb_per_s"] = nbytes / (r["time_us"] * 1e-6) / 1e9
                        points.append(r)
                        last_err = None
                        break
                    except Exception as e:  # noqa: BLE001
                        last_err = _err(e)
                    finally:
                        fns = None
                        _cleanup()
                if last_err is not None:
                    base["error"] = last_err
                    points.append(base)
    return {"description": "C[M,N] = A[M,K] @ W[N,K]^T (nn.Linear layout; W passed as "
                           "column-major K x N). bytes = A + W (+scales) + C at their dtypes. "
                           "fp8: torch._scaled_mm e4m3 x e4m3 -> bf16 with per-tensor scales; "
                           "int8: torch._int_mm -> int32; int4: torch._weight_int4pack_mm "
                           "bf16 activations, group 128. M that a kernel rejects is padded and "
                           "recorded as m_padded_to (flops still counted for the true M).",
            "points": points}


# --------------------------------------------------------------------------
# c/d. attention
# --------------------------------------------------------------------------

def _sdpa_backends():
    from torch.nn.attention import SDPBackend
    return {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}


def _default_backend(q, k, v, is_causal, enable_gqa) -> str:
    names = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable", -1: "error"}
    try:
        i = torch._fused_sdp_choice(q, k, v, is_causal=is_causal, enable_gqa=enable_gqa)
        return names.get(int(i), str(i))
    except Exception as e:  # noqa: BLE001
        return "unknown: " + _err(e)[:80]


def _sdpa_fn(q, k, v, causal, gqa, backend):
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    if backend is None:
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    def f():
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    return f


def bench_attn_prefill(smoke: bool = False, budget: Budget | None = None) -> dict:
    dev = _dev()
    dt = torch.bfloat16
    configs = []  # (kind, batch, hq, hkv, hd, seq, causal)
    seqs = [128, 512, 1024, 2048, 4096, 8192, 16384]
    for hq, hkv in [(32, 8), (28, 4)]:
        for s in seqs:
            configs.append(("llm_causal", 1, hq, hkv, 128, s, True))
    for hd in [64, 72, 80]:
        for s in [256, 1024, 4096, 16384]:
            configs.append(("vit_full", 1, 16, 16, hd, s, False))
    if smoke:
        configs = [("llm_causal", 1, 4, 2, 32, 64, True), ("vit_full", 1, 2, 2, 40, 64, False)]
    backends = _sdpa_backends() if dev.type == "cuda" else {"default": None}
    points = []
    for kind, B, hq, hkv, hd, s, causal in configs:
        gqa = hq != hkv
        base = {"kind": kind, "batch": B, "q_heads": hq, "kv_heads": hkv, "head_dim": hd,
                "seq": s, "causal": causal, "dtype": "bf16"}
        pairs = 2 * B * hq * s * s * hd * 2  # QK^T + PV, 2 flops per MAC
        base["flops"] = pairs // 2 if causal else pairs
        base["bytes_min"] = 2 * B * s * hd * (2 * hq + 2 * hkv)  # q,o + k,v once
        try:
            nset = _n_rotate(base["bytes_min"], 8)
            qs = [torch.randn(B, hq, s, hd, device=dev, dtype=dt) for _ in range(nset)]
            ks = [torch.randn(B, hkv, s, hd, device=dev, dtype=dt) for _ in range(nset)]
            vs = [torch.randn(B, hkv, s, hd, device=dev, dtype=dt) for _ in range(nset)]
            base["default_backend"] = _default_backend(qs[0], ks[0], vs[0], causal, gqa)
        except Exception as e:  # noqa: BLE001
            points.append(dict(base, error=_err(e)))
            continue
        for bname, b in backends.items():
            if budget and budget.over():
                points.append(dict(base, backend=bname, skipped="time budget"))
                continue
            try:
                fns = [_sdpa_fn(q, k, v, causal, gqa, b) for q, k, v in zip(qs, ks, vs)]
                r = bench(fns)
                r.update(base)
                r["backend"] = bname
                r["tflops"] = base["flops"] / (r["time_us"] * 1e-6) / 1e12
                points.append(r)
            except Exception as e:  # noqa: BLE001
                points.append(dict(base, backend=bname, error=_err(e)))
            _cleanup()
        del qs, ks, vs
        _cleanup()
    return {"description": "torch SDPA bf16, [B,H,S,D] contiguous; causal LLM prefill with GQA "
                           "(enable_gqa) and non-causal ViT full attention. flops counts the "
                           "causal half only. Each backend forced via sdpa_kernel; "
                           "default_backend = torch._fused_sdp_choice. vLLM uses FlashAttention "
                           "2/3 varlen kernels: these are proxies.",
            "points": points}


def bench_attn_decode(smoke: bool = False, budget: Budget | None = None,
                      max_kv_bytes: float = 40e9) -> dict:
    dev = _dev()
    dt = torch.bfloat16
    batches = [1, 4, 16, 64, 256]
    ctxs = [256, 1024, 4096, 16384, 32768]
    heads = [(32, 8, 128), (28, 4, 128)]
    if smoke:
        batches, ctxs, heads = [1, 4], [64, 256], [(4, 2, 32)]
    backends = _sdpa_backends() if dev.type == "cuda" else {"default": None}
    points = []
    for hq, hkv, hd in heads:
        g = hq // hkv
        for B in batches:
            for L in ctxs:
                kv_bytes = 2 * B * hkv * L * hd * 2
                base = {"batch": B, "context": L, "q_heads": hq, "kv_heads": hkv,
                        "head_dim": hd, "dtype": "bf16", "kv_bytes": kv_bytes,
                        "flops": 2 * 2 * B * hq * L * hd}
                if kv_bytes > max_kv_bytes or 1.3 * kv_bytes > _free_mem() - 3 * GiB:
                    points.append(dict(base, skipped="memory"))
                    continue
                if budget and budget.over():
                    points.append(dict(base, skipped="time budget"))
                    continue
                try:
                    nset = _n_rotate(kv_bytes, 128)
                    ks = [torch.randn(B, hkv, L, hd, device=dev, dtype=dt) for _ in range(nset)]
                    vs = [torch.randn(B, hkv, L, hd, device=dev, dtype=dt) for _ in range(nset)]
                    qs = [torch.randn(B, hq, 1, hd, device=dev, dtype=dt) for _ in range(nset)]
                except Exception as e:  # noqa: BLE001
                    points.append(dict(base, error=_err(e)))
                    _cleanup()
                    continue
                for form in ["packed_gqa", "enable_gqa"]:
                    if form == "packed_gqa":
                        # q heads of one kv group as g query rows (what FA decode does)
                        qq = [q.view(B, hkv, g, hd) for q in qs]
                        gqa = False
                    else:
                        qq = qs
                        gqa = hq != hkv
                    dflt = _default_backend(qq[0], ks[0], vs[0], False, gqa)
                    for bname, b in backends.items():
                        try:
                            fns = [_sdpa_fn(q, k, v, False, gqa, b) for q, k, v in zip(qq, ks, vs)]
                            r = bench(fns, target_ms=30.0, max_reps=30)
                            r.update(base)
                            r.update({"form": form, "backend": dflt if b is None else bname,
                                      "default_backend": dflt, "buffer_sets": nset})
                            r["gb_per_s"] = kv_bytes / (r["time_us"] * 1e-6) / 1e9
                            points.append(r)
                        except Exception as e:  # noqa: BLE001
                            points.append(dict(base, form=form, backend=bname, error=_err(e)))
                del ks, vs, qs
                _cleanup()
    return {"description": "decode attention: q len 1 per sequence vs a contiguous bf16 KV "
                           "cache [B, kv_heads, L, hd]. packed_gqa: the q heads of one KV group "
                           "passed as g query rows (non-causal), as FlashAttention's decode "
                           "path does; enable_gqa: SDPA's own GQA. Each SDPA backend forced in turn "
                           "(default_backend = torch._fused_sdp_choice). kv_bytes = K+V read once. "
                           "Proxy for vLLM's paged FlashAttention decode. fp8 KV not measured: "
                           "torch has no native fp8-KV attention kernel and dequant+SDPA is "
                           "not representative.",
            "fp8_kv": "skipped: no native fp8-KV attention kernel in torch",
            "points": points}


# --------------------------------------------------------------------------
# e. elementwise / norm
# --------------------------------------------------------------------------

def _rmsnorm_eager(x, w, eps=1e-6):
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), w, eps)


def _silu_mul_eager(x):
    d = x.shape[-1] // 2
    return torch.nn.functional.silu(x[..., :d]) * x[..., d:]


def _add_rmsnorm_eager(x, r, w, eps=1e-6):
    r = x + r
    return torch.nn.functional.rms_norm(r, (r.shape[-1],), w, eps), r


def bench_elementwise(smoke: bool = False, budget: Budget | None = None,
                      compile_: bool = True) -> dict:
    dev = _dev()
    dt = torch.bfloat16
    tokens = [1, 16, 128, 1024, 4096, 16384]
    hiddens = [2048, 4096, 8192]
    inters = [11008, 14336, 28672]
    if smoke:
        tokens, hiddens, inters = [1, 64], [128], [256]
    variants = {"eager": (_rmsnorm_eager, _silu_mul_eager, _add_rmsnorm_eager)}
    compile_err = None
    if compile_:
        try:
            variants["compiled"] = (torch.compile(_rmsnorm_eager, dynamic=True),
                                    torch.compile(_silu_mul_eager, dynamic=True),
                                    torch.compile(_add_rmsnorm_eager, dynamic=True))
        except Exception as e:  # noqa: BLE001
            compile_err = _err(e)
    points = []
    for vname, (rms, silu_mul, add_rms) in variants.items():
        for T in tokens:
            for H in hiddens:
                base = {"op": "rmsnorm", "variant": vname, "tokens": T, "hidden": H,
                        "bytes": 2 * T * H * 2 + 2 * H}
                if budget and budget.over():
                    points.append(dict(base, skipped="time budget"))
                    continue
                try:
                    nset = _n_rotate(base["bytes"], 32)
                    xs = [torch.randn(T, H, device=dev, dtype=dt) for _ in range(nset)]
                    w = torch.randn(H, device=dev, dtype=dt)
                    r = bench([(lambda x=x: rms(x, w)) for x in xs])
                    r.update(base)
                    r["gb_per_s"] = base["bytes"] / (r["time_us"] * 1e-6) / 1e9
                    points.append(r)
                    base2 = {"op": "add_rmsnorm", "variant": vname, "tokens": T, "hidden": H,
                             "bytes": 4 * T * H * 2 + 2 * H}
                    rs = [torch.randn(T, H, device=dev, dtype=dt) for _ in range(nset)]
                    r = bench([(lambda x=x, rr=rr: add_rms(x, rr, w)) for x, rr in zip(xs, rs)])
                    r.update(base2)
                    r["gb_per_s"] = base2["bytes"] / (r["time_us"] * 1e-6) / 1e9
                    points.append(r)
                    del xs, rs
                except Exception as e:  # noqa: BLE001
                    points.append(dict(base, error=_err(e)))
                _cleanup()
            for inter in inters:
                base = {"op": "silu_mul", "variant": vname, "tokens": T, "inter": inter,
                        "bytes": T * 2 * inter * 2 + T * inter * 2}
                if budget and budget.over():
                    points.append(dict(base, skipped="time budget"))
                    continue
                try:
                    nset = _n_rotate(base["bytes"], 32)
                    xs = [torch.randn(T, 2 * inter, device=dev, dtype=dt) for _ in range(nset)]
                    r = bench([(lambda x=x: silu_mul(x)) for x in xs])
                    r.update(base)
                    r["gb_per_s"] = base["bytes"] / (r["time_us"] * 1e-6) / 1e9
                    points.append(r)
                    del xs
                except Exception as e:  # noqa: BLE001
                    points.append(dict(base, error=_err(e)))
                _cleanup()
    return {"description": "bf16 RMSNorm (F.rms_norm), residual add + RMSNorm, SiLU(x1)*x2; "
                           "'eager' = torch ops as is, 'compiled' = torch.compile(dynamic=True) "
                           "(Inductor/Triton fused, like vLLM's fused custom ops). bytes = ideal "
                           "fused traffic (inputs read once, outputs written once).",
            "compile_error": compile_err, "points": points}


# --------------------------------------------------------------------------
# f. launch overhead
# --------------------------------------------------------------------------

def bench_launch(smoke: bool = False, budget: Budget | None = None) -> dict:
    dev = _dev()
    n = 200 if smoke else 2000
    x = torch.randn(1, device=dev)
    res = {}
    _sync()
    for _ in range(50):
        x.add_(1.0)
    _sync()
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1.0)
    _sync()
    res["eager_us_per_kernel_host"] = (time.perf_counter() - t0) / n * 1e6
    if dev.type == "cuda":
        # eager launch rate with the GPU kept busy (pure CPU-side launch cost)
        big = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
        for _ in range(6):
            big @ big
        t0 = time.perf_counter()
        for _ in range(n):
            x.add_(1.0)
        res["eager_launch_cpu_us_per_kernel"] = (time.perf_counter() - t0) / n * 1e6
        _sync()
        k = 1000
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            x.add_(1.0)
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(g):
            for _ in range(k):
                x.add_(1.0)
        g.replay()
        _sync()
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        ts = []
        for _ in range(20):
            e0.record()
            g.replay()
            e1.record()
            _sync()
            ts.append(e0.elapsed_time(e1) * 1e3 / k)
        res["graph_us_per_kernel"] = statistics.median(ts)
        res["graph_us_per_kernel_p10_p90"] = [_pct(ts, 0.1), _pct(ts, 0.9)]
        # one-kernel graph: cost of a replay call itself
        g1 = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g1):
            x.add_(1.0)
        g1.replay()
        _sync()
        t0 = time.perf_counter()
        for _ in range(n):
            g1.replay()
        _sync()
        res["graph_replay_host_us_1kernel"] = (time.perf_counter() - t0) / n * 1e6
        # eager kernel time measured by events, individually
        ts = []
        for _ in range(200):
            e0.record()
            x.add_(1.0)
            e1.record()
            _sync()
            ts.append(e0.elapsed_time(e1) * 1e3)
        res["eager_event_us_single_kernel"] = statistics.median(ts)
        del g, g1
    res["description"] = ("x.add_(1) on a 1-element tensor. eager_us_per_kernel_host: host time "
                          "per launch for back-to-back launches incl. sync; "
                          "eager_launch_cpu_us_per_kernel: host launch cost while the GPU is busy; "
                          "graph_us_per_kernel: GPU time per kernel inside a 1000-kernel CUDA graph; "
                          "graph_replay_host_us_1kernel: host cost per replay of a 1-kernel graph.")
    return res


# --------------------------------------------------------------------------
# g. NCCL all-reduce
# --------------------------------------------------------------------------

def _allreduce_worker(rank: int, world: int, port: int, sizes: list[int], outfile: str,
                      smoke: bool):
    import torch.distributed as dist
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    dt = torch.bfloat16 if cuda else torch.float32
    esz = 2 if cuda else 4
    points = []
    for size in sizes:
        numel = max(1, size // esz)
        t = torch.randn(numel, device=dev, dtype=dt)
        try:
            for _ in range(5):
                dist.all_reduce(t)
            if cuda:
                torch.cuda.synchronize()
            dist.barrier()
            reps = 10 if size >= 64 * MiB else (30 if size >= 1 * MiB else 100)
            ts = []
            if cuda:
                e0 = torch.cuda.Event(enable_timing=True)
                e1 = torch.cuda.Event(enable_timing=True)
                for _ in range(reps):
                    e0.record()
                    dist.all_reduce(t)
                    e1.record()
                    torch.cuda.synchronize()
                    ts.append(e0.elapsed_time(e1) * 1e3)
            else:
                for _ in range(reps):
                    t0 = time.perf_counter()
                    dist.all_reduce(t)
                    ts.append((time.perf_counter() - t0) * 1e6)
            r = _stats_us(ts, method="eager_events")
            # CUDA-graph captured all-reduce (how vLLM runs decode), small messages only
            if cuda and size <= 64 * MiB:
                try:
                    inner = 20
                    g = torch.cuda.CUDAGraph()
                    s = torch.cuda.Stream()
                    s.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(s):
                        dist.all_reduce(t)
                    torch.cuda.current_stream().wait_stream(s)
                    torch.cuda.synchronize()
                    with torch.cuda.graph(g):
                        for _ in range(inner):
                            dist.all_reduce(t)
                    g.replay()
                    torch.cuda.synchronize()
                    dist.barrier()
                    gts = []
                    for _ in range(10):
                        e0.record()
                        g.replay()
                        e1.record()
                        torch.cuda.synchronize()
                        gts.append(e0.elapsed_time(e1) * 1e3 / inner)
                    r["graph_time_us"] = statistics.median(gts)
                    del g
                except Exception as e:  # noqa: BLE001
                    r["graph_error"] = _err(e)
            r.update({"bytes": numel * esz, "world_size": world,
                      "dtype": "bf16" if cuda else "fp32"})
            r["algbw_gb_per_s"] = r["bytes"] / (r["time_us"] * 1e-6) / 1e9
            r["busbw_gb_per_s"] = r["algbw_gb_per_s"] * 2 * (world - 1) / world
            points.append(r)
        except Exception as e:  # noqa: BLE001
            points.append({"bytes": size, "world_size": world, "error": _err(e)})
        del t
        if cuda:
            torch.cuda.empty_cache()
        dist.barrier()
    if rank == 0:
        with open(outfile, "w") as f:
            json.dump(points, f)
    dist.destroy_process_group()


def bench_allreduce(smoke: bool = False, budget: Budget | None = None,
                    worlds: list[int] | None = None) -> dict:
    import tempfile

    import torch.multiprocessing as mp
    ngpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if ngpu < 2 and not smoke:
        return {"skipped": f"needs >= 2 GPUs, found {ngpu}", "points": []}
    if worlds is None:
        worlds = [w for w in (2, 4, 8) if w <= max(ngpu, 2)]
        if ngpu > 2 and ngpu not in worlds:
            worlds.append(ngpu)
    sizes = [4 * KiB * 4 ** i for i in range(10)] + [1 * GiB]  # 4 KiB .. 1 GiB
    sizes = sorted(set(sizes))
    if smoke:
        sizes = [4 * KiB, 256 * KiB]
    out = {"description": "torch.distributed all_reduce (sum), one process per GPU, NCCL "
                          "(gloo on CPU smoke). time_us: median of eagerly launched ops timed "
                          "with events on rank 0; graph_time_us: per op inside a CUDA graph "
                          "of 20 all-reduces. busbw = algbw * 2(n-1)/n.",
           "nccl_env": {k: v for k, v in os.environ.items() if k.startswith("NCCL_")},
           "points": []}
    for w in worlds:
        if budget and budget.over():
            out["points"].append({"world_size": w, "skipped": "time budget"})
            continue
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
            fn = tf.name
        port = 29500 + (os.getpid() % 1000) + w
        try:
            mp.spawn(_allreduce_worker, args=(w, port, sizes, fn, smoke), nprocs=w, join=True)
            with open(fn) as f:
                out["points"].extend(json.load(f))
        except Exception as e:  # noqa: BLE001
            out["points"].append({"world_size": w, "error": _err(e)})
        finally:
            try:
                os.unlink(fn)
            except OSError:
                pass
    return out


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------

SECTIONS = ["launch", "hbm", "gemm", "attn_prefill", "attn_decode", "elementwise", "allreduce"]


def run_section(name: str, smoke: bool, budget: Budget, args=None) -> dict:
    t0 = time.time()
    try:
        if name == "hbm":
            r = bench_hbm(smoke, budget)
        elif name == "gemm":
            dts = args.gemm_dtypes.split(",") if args and args.gemm_dtypes else None
            r = bench_gemm(smoke, budget, dts)
        elif name == "attn_prefill":
            r = bench_attn_prefill(smoke, budget)
        elif name == "attn_decode":
            r = bench_attn_decode(smoke, budget)
        elif name == "elementwise":
            r = bench_elementwise(smoke, budget, compile_=not (args and args.no_compile))
        elif name == "launch":
            r = bench_launch(smoke, budget)
        elif name == "allreduce":
            r = bench_allreduce(smoke, budget)
        else:
            raise ValueError(name)
    except Exception as e:  # noqa: BLE001
        r = {"error": _err(e), "traceback": traceback.format_exc()[-2000:]}
    r["section_wall_s"] = round(time.time() - t0, 2)
    return r


def summarize(res: dict) -> str:
    """Short human-readable table of headline numbers."""
    lines = []
    pv = res.get("provenance", {})
    lines.append(f"# microbench on {pv.get('gpu_name')} (torch {pv.get('torch_version')}, "
                 f"cuda {pv.get('cuda_version')})")
    h = res.get("hbm", {}).get("points", [])
    for op in ("copy", "sum_fp32"):
        ps = [p for p in h if p.get("op") == op and "gb_per_s" in p]
        if ps:
            best = max(ps, key=lambda p: p["gb_per_s"])
            big = max(ps, key=lambda p: p["bytes_buffer"])
            lines.append(f"hbm {op:9s} peak {best['gb_per_s']:8.0f} GB/s @ {best['bytes_buffer']/MiB:.0f} MiB;"
                         f" @ {big['bytes_buffer']/MiB:.0f} MiB {big['gb_per_s']:.0f} GB/s")
    g = res.get("gemm", {}).get("points", [])
    for dt in GEMM_DTYPES:
        ps = [p for p in g if p.get("dtype") == dt and "tflops" in p]
        if ps:
            best = max(ps, key=lambda p: p["tflops"])
            m1 = [p for p in ps if p["M"] == 1]
            bw = max((p["gb_per_s"] for p in m1), default=float("nan"))
            lines.append(f"gemm {dt:16s} peak {best['tflops']:6.0f} TFLOP/s ({best['shape']} M={best['M']}); "
                         f"M=1 best {bw:6.0f} GB/s; n={len(ps)}")
    ap = res.get("attn_prefill", {}).get("points", [])
    for p in ap:
        if "tflops" in p and p["seq"] in (2048, 16384) and p["head_dim"] == 128 and p["q_heads"] == 32:
            lines.append(f"prefill attn S={p['seq']:5d} {p['backend']:9s} {p['time_us']:9.1f} us "
                         f"{p['tflops']:5.0f} TFLOP/s (default {p.get('default_backend')})")
    ad = res.get("attn_decode", {}).get("points", [])
    for p in ad:
        if "gb_per_s" in p and p["q_heads"] == 32 and p["backend"] == "cudnn" and (p["batch"], p["context"]) in (
                (1, 4096), (16, 4096), (64, 16384), (256, 4096)):
            lines.append(f"decode attn B={p['batch']:3d} L={p['context']:5d} {p['form']:10s} "
                         f"{p['time_us']:8.1f} us {p['gb_per_s']:6.0f} GB/s ({p['backend']})")
    el = res.get("elementwise", {}).get("points", [])
    for p in el:
        if "gb_per_s" in p and p.get("tokens") == 4096 and p.get("hidden", p.get("inter")) in (4096, 14336):
            lines.append(f"elementwise {p['op']:11s} {p['variant']:8s} T=4096 {p['time_us']:7.1f} us "
                         f"{p['gb_per_s']:6.0f} GB/s")
    la = res.get("launch", {})
    if "graph_us_per_kernel" in la:
        lines.append(f"launch: eager {la.get('eager_us_per_kernel_host', 0):.2f} us/kernel, "
                     f"graph {la['graph_us_per_kernel']:.2f} us/kernel")
    ar = res.get("allreduce", {}).get("points", [])
    for p in ar:
        if "busbw_gb_per_s" in p and p["bytes"] in (4 * KiB, 1 * MiB, 16 * MiB, 256 * MiB, 1 * GiB):
            lines.append(f"allreduce n={p['world_size']} {p['bytes']/KiB:9.0f} KiB {p['time_us']:9.1f} us "
                         f"busbw {p['busbw_gb_per_s']:6.1f} GB/s graph {p.get('graph_time_us', float('nan')):.1f} us")
    for k, v in res.items():
        if isinstance(v, dict) and "error" in v:
            lines.append(f"SECTION {k} ERROR: {v['error'][:200]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="microbench.json")
    ap.add_argument("--only", default=None, help="comma-separated sections")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, few reps (CPU ok)")
    ap.add_argument("--time-budget-s", type=float, default=None,
                    help="skip remaining points once this much wall time has passed")
    ap.add_argument("--gemm-dtypes", default=None)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args(argv)

    sections = args.only.split(",") if args.only else list(SECTIONS)
    sections = [s for s in sections if s not in set(args.skip.split(","))]
    budget = Budget(args.time_budget_s)
    res: dict = {"provenance": provenance(argv, __file__)}
    res["provenance"]["sections"] = sections
    res["provenance"]["smoke"] = args.smoke
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        gpu_warmup()

    def dump():
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1, default=str)
        os.replace(tmp, args.out)

    for s in sections:
        print(f"[microbench] section {s} (t={time.time() - budget.t0:.0f}s)", flush=True)
        res[s] = run_section(s, args.smoke, budget, args)
        print(f"[microbench] section {s} done in {res[s].get('section_wall_s')}s", flush=True)
        dump()
    res["provenance"]["total_wall_s"] = round(time.time() - budget.t0, 1)
    dump()
    print(summarize(res), flush=True)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
