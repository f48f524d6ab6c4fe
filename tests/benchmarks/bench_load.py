"""Load model benchmark: simulator speed, analytic-vs-simulator agreement, and published measurements.

Run: python tests/benchmarks/bench_load.py   (prints its tables in a few minutes)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from planner.catalog.loader import load_engine, load_gpus, load_models, load_precisions  # noqa: E402
from planner.estimate import estimate  # noqa: E402
from planner.load.analytic import build_step_cost, predict  # noqa: E402
from planner.load.run import saturation_throughput  # noqa: E402
from planner.load.simulator import build_requests, fixed_requests, simulate  # noqa: E402
from planner.perf.memory import memory_breakdown  # noqa: E402
from planner.spec.config import ServingConfig, resolve  # noqa: E402
from planner.spec.shape import request_shape  # noqa: E402
from planner.spec.workload import PRESETS, Workload  # noqa: E402

ENGINE = load_engine()
PREC = load_precisions()


def setup(model: str, gpu: str, **kw):
    cfg = resolve(ServingConfig(model=load_models().get(model), gpu=load_gpus().get(gpu), **kw), ENGINE)
    return cfg, build_step_cost(cfg), memory_breakdown(cfg, ENGINE, PREC).kv_capacity_tokens


def bench_speed() -> None:
    print("== simulator speed (10,000 requests, Poisson at half the saturation rate)")
    for label, model, wl in [("Llama-3.1-8B text 512/256", "meta-llama/Llama-3.1-8B-Instruct",
                              Workload(name="t", prompt_tokens=512, output_tokens=256)),
                             ("Qwen2.5-VL-7B visual-reasoning", "Qwen/Qwen2.5-VL-7B-Instruct",
                              PRESETS["visual-reasoning"]),
                             ("Qwen2.5-VL-7B document-vqa", "Qwen/Qwen2.5-VL-7B-Instruct", PRESETS["document-vqa"])]:
        cfg, cost, kv = setup(model, "H100")
        shape = request_shape(cfg, wl)
        rate = 0.5 * predict(cost, cfg, shape, "single", None, None, kv).max_requests_per_s
        reqs = build_requests(cfg, wl, cost, 10000)
        t = time.perf_counter()
        r = simulate(cost, reqs, kv, "poisson", rate_per_s=rate)
        dt = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(50):
            predict(cost, cfg, shape, "poisson", rate, None, kv)
        an = (time.perf_counter() - t) / 50
        print(f"  {label:32s} {dt * 1e3:7.0f} ms = {10000 / dt:9,.0f} requests/s simulated ({r.steps:,} engine steps);"
              f" analytic {an * 1e3:.2f} ms/call")


def bench_agreement() -> None:
    import test_load_analytic as T

    print("== analytic vs simulator: (analytic / simulated - 1) at fractions of the saturation rate")
    print(f"  {'case':32s} {'load':>5s} " + " ".join(f"{m:>9s}" for m in T.METRICS))
    worst = 0.0
    for name in T.CASES:
        errs = T.agreement(name)
        for f in T.LOADS:
            row = [errs[(f, m)] for m in T.METRICS]
            flag = "  <- >10%" if max(abs(x) for x in row) > 0.10 else ""
            worst = max([worst] + [abs(x) for x in row])
            print(f"  {name:32s} {f:5.1f} " + " ".join(f"{x * 100:+8.1f}%" for x in row) + flag)
    print(f"  worst {worst * 100:.1f}%")


def bench_published() -> None:
    data = yaml.safe_load((ROOT / "docs" / "validation" / "load_published.yaml").read_text())
    nim = data["nim_llama33_70b_fp8_tp2"]
    print(f"== published: {nim['source']}")
    prompt, out = nim["prompt_tokens"], nim["output_tokens"]
    # NIM's TensorRT-LLM fp8 profiles may also keep the KV cache in fp8 (not stated): both are shown.
    for kv_dtype in ("auto", "fp8"):
        cfg, cost, kv = setup(nim["model"], nim["gpu"], tp=nim["tp"], precision=nim["precision"],
                              kv_cache_dtype=kv_dtype)
        print(f"  kv cache {kv_dtype}: {kv:,} tokens per replica")
        print(f"  {'conc':>5s} {'TTFT pred':>10s} {'TTFT pub':>9s} {'err':>7s} {'ITL pred':>9s} {'ITL pub':>8s}"
              f" {'err':>7s} {'tok/s pred':>10s} {'tok/s pub':>9s} {'err':>7s}")
        for conc, (ttft, itl, tps) in nim["rows"].items():
            r = simulate(cost, fixed_requests(max(400, 8 * conc), prompt, out), kv, "closed", concurrency=conc)
            pt, pi, pp = float(np.mean(r.ttft_ms)), float(np.mean(r.tpot_ms)), r.output_tokens_per_s
            print(f"  {conc:5d} {pt:10.1f} {ttft:9.1f} {pt / ttft - 1:+7.0%} {pi:9.2f} {itl:8.2f} {pi / itl - 1:+7.0%}"
                  f" {pp:10.1f} {tps:9.1f} {pp / tps - 1:+7.0%}")
    nm = data["neuralmagic_qwen25_vl_7b"]
    print(f"== published: {nm['source']}")
    print(f"  {'gpu':10s} {'prec':5s} {'preset':17s} {'lat pred':>8s} {'lat pub':>7s} {'err':>6s}"
          f" {'QPS sim':>8s} {'QPS an':>7s} {'QPS pub':>7s} {'err':>6s}")
    for gpu, prec, preset, lat, qps in nm["rows"]:
        cfg, cost, kv = setup(nm["model"], gpu, precision=prec)
        wl = PRESETS[preset]
        est = estimate(cfg, wl)
        shape = request_shape(cfg, wl)
        sat = saturation_throughput(cost, lambda n, wl=wl, cfg=cfg, cost=cost: build_requests(cfg, wl, cost, n), kv,
                                    shape, 0)
        an = predict(cost, cfg, shape, "single", None, None, kv).max_requests_per_s
        pl = est.e2e.p50 / 1e3
        print(f"  {gpu:10s} {prec:5s} {preset:17s} {pl:8.2f} {lat:7.1f} {pl / lat - 1:+6.0%}"
              f" {sat:8.1f} {an:7.1f} {qps:7.1f} {sat / qps - 1:+6.0%}")


def bench_published_vllm() -> None:
    """Public vLLM serving sweeps of Llama-3.1-8B (closed loop, fixed lengths)."""
    data = yaml.safe_load((ROOT / "docs" / "validation" / "load_published.yaml").read_text())
    ib = data["inferencebench_llama31_8b_h100"]
    print(f"== published: {ib['source']}")
    cfg, cost, kv = setup(ib["model"], ib["gpu"])
    p, o = ib["assumed_prompt_tokens"], ib["assumed_output_tokens"]
    print(f"  {'conc':>5s} {'TPOT pred':>10s} {'TPOT pub':>9s} {'err':>7s}   (TTFT not compared, and TPOT at 16 "
          "only loosely: prefill interference depends on the unpublished prompt length)")
    for conc, (_ttft, tpot) in ib["rows"].items():
        r = simulate(cost, fixed_requests(max(400, 8 * conc), p, o), kv, "closed", concurrency=conc)
        pt = float(np.median(r.tpot_ms))
        print(f"  {conc:5d} {pt:10.2f} {tpot:9.2f} {pt / tpot - 1:+7.0%}")
    mg = data["musgrave_llama31_8b_a100_40gb"]
    print(f"== published: {mg['source']}")
    cfg, cost, kv = setup(mg["model"], mg["gpu"])
    print(f"  {'conc':>5s} {'tok/s pred':>10s} {'tok/s pub':>9s} {'err':>7s}   (A100 speed model uncalibrated)")
    for conc, tps in mg["rows"].items():
        r = simulate(cost, fixed_requests(max(400, 8 * conc), mg["prompt_tokens"], mg["output_tokens"]), kv,
                     "closed", concurrency=conc)
        pp = r.output_tokens_per_s
        print(f"  {conc:5d} {pp:10.1f} {tps:9.1f} {pp / tps - 1:+7.0%}")


def bench_run_length() -> None:
    """How many simulated requests a percentile needs near saturation (the basis of POISSON_REQUESTS,
    SIM_REQUESTS and SIM_QUICK_*): Qwen2.5-VL-7B visual reasoning on an H100 at 80% of saturation, 8 seeds per
    run length, against the pool of 8 x 24,000 requests."""
    print("== run length: p95 of 8 seeds per length at 80% load (Qwen2.5-VL-7B visual-reasoning, H100)")
    cfg, cost, kv = setup("Qwen/Qwen2.5-VL-7B-Instruct", "H100")
    wl = PRESETS["visual-reasoning"]
    shape = request_shape(cfg, wl)
    rate = 0.8 * predict(cost, cfg, shape, "single", None, None, kv).max_requests_per_s
    runs: dict[int, list] = {}
    for n in (2000, 3000, 12000, 24000):
        runs[n] = [simulate(cost, build_requests(cfg, wl, cost, n, seed=k), kv, "poisson", rate_per_s=rate, seed=k)
                   for k in range(8)]
    pool = {m: np.concatenate([getattr(r, m) for r in runs[24000]]) for m in ("ttft_ms", "tpot_ms")}
    ref = {m: float(np.percentile(v, 95)) for m, v in pool.items()}
    print(f"  pooled 8 x 24,000: TTFT p95 {ref['ttft_ms']:.1f} ms, TPOT p95 {ref['tpot_ms']:.2f} ms")
    for n, rs in runs.items():
        cells = []
        for m in ("ttft_ms", "tpot_ms"):
            v = np.array([np.percentile(getattr(r, m), 95) for r in rs]) / ref[m] - 1
            cells.append(f"{m[:4].upper()} p95 mean {v.mean() * 100:+5.1f}% sd {v.std() * 100:4.1f}% "
                         f"lowest {v.min() * 100:+5.1f}%")
        print(f"  {n:6,d} requests: " + "; ".join(cells))


if __name__ == "__main__":
    bench_speed()
    bench_run_length()
    bench_agreement()
    bench_published()
    bench_published_vllm()
