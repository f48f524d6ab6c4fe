"""vlmplan's pd model on published prefill/decode-disaggregated setups (docs/validation/disaggregation.md).

Run: python tests/benchmarks/bench_pd_published.py   (about a minute on a 2-core machine).

(1) Mooncake's vLLM v1 PD benchmark (kvcache-ai/Mooncake, docs/source/performance/vllm/vllm-v1-pd-performance.md):
    Qwen3-8B bf16, 1 prefill + 1 decode vLLM instance, each TP8 on its own 8 x H800 node, KV over RDMA (8 x
    ConnectX-7 RoCE, ~200 GB/s per node), `vllm bench serve --max-concurrency 1`, 50 prompts of N tokens, 128 out.
    vlmplan has no H800: H100-SXM-80GB (the H800 SXM is the H100 SXM with reduced NVLink bandwidth, which TP8
    uses for all-reduce). The pd pair is built with the solver's own code (PdSearch.decode / pair) for
    TP8 pools and a light Poisson load (0.05 req/s: no queueing, as at concurrency 1), then simulated by the
    coupled-pool simulator. The link is the catalog's (network between nodes, 50 GB/s per H100) and, second,
    the benchmark cluster's nominal 25 GB/s per GPU (200 GB/s over 8 GPUs).

(2) Mooncake's SGLang PD benchmark (docs/source/performance/sglang/sglang-benchmark-results-v1.md): 1P1D against
    two regular instances, Qwen2.5-7B-Instruct GPTQ-Int4 on A10 servers. vlmplan: Qwen2.5-VL-7B's decoder (the
    same Qwen2 7B text stack) text-only, int4, A10G-24GB (the A10's GA102 chip and 600 GB/s GDDR6, but the catalog
    gives it 70 dense bf16 TFLOPS against 125 in NVIDIA's A10 datasheet: slower prefill), both setups as
    published: rate 1.0, TP4, 8192 in / 512 out; rate 4.0, TP2, 2048 in / 512 out. Regular = two aggregated
    replicas, Poisson at half the rate each (`vlmplan estimate`, simulated); 1P1D: the decode pool of one replica
    (PdSearch.decode, analytic) and the prefill instance's saturation rate (PdSearch.prefill). The full 1P1D pair
    is not built: one A10G prefill instance is past saturation at both published rates, so vlmplan rejects it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

from planner.app.solve_request import SolveInput, build_request
from planner.solver import disagg
from planner.solver.disagg import PdSearch, _simulate


def _search(model: str, gpu: str, precision: str, prompt: int, out: int, rate: float, budget: str) -> PdSearch:
    inp = SolveInput(model=model, gpus=gpu, precisions=precision, kv_cache_dtypes="auto", no_image=True,
                     prompt_tokens=prompt, output_tokens=out, rate=rate, budget=budget, topologies="pd",
                     speculative="off", prefix_caching="off")
    req, _ = build_request(inp)
    return PdSearch(replace(req, verify=True))


def _pd(search: PdSearch, tp: int, link_gb_per_s: float | None = None):  # type: ignore[no-untyped-def]
    c = next(c for c in search.cfgs if c.base.tp == tp and c.base.pp == 1)
    d = search.decode(c)
    assert d is not None and d.replicas == 1, d
    if link_gb_per_s is not None:
        orig = disagg.link_between
        disagg.link_between = lambda *a: (  # type: ignore[assignment]
            "network between nodes", link_gb_per_s, 0.0)
    try:
        cand = search.pair(c, d)
    finally:
        if link_gb_per_s is not None:
            disagg.link_between = orig
    assert cand is not None and cand.prefill.replicas == 1, cand
    sim = _simulate(search.req, search, cand)
    return cand, sim


def mooncake_vllm() -> None:
    print("(1) Mooncake vLLM v1 PD, Qwen3-8B bf16, TP8 prefill + TP8 decode, concurrency 1, 128 out")
    print("| prompt | published mean TTFT ms | published KV transfer ms | vlmplan transfer ms (50 / 25 GB/s) | "
          "vlmplan prefill pool TTFT mean ms | vlmplan pd TTFT mean ms sim (50 GB/s) | (25 GB/s) | "
          "ratio vlmplan/published (50 GB/s) |")
    print("|---|---|---|---|---|---|---|---|")
    published = {1024: (67.29, 1.50), 2048: (85.31, 2.51), 4096: (124.42, 4.75), 8192: (212.05, 8.84),
                 16384: (387.52, 16.43), 32768: (749.62, 31.65)}
    for n, (ttft, xfer) in published.items():
        s = _search("Qwen/Qwen3-8B", "H100-SXM-80GB", "bf16", n, 128, 0.05, "16xH100")
        a, sa = _pd(s, 8)
        b, sb = _pd(s, 8, 25.0)
        print(f"| {n} | {ttft:.1f} | {xfer:.2f} | {a.transfer_ms:.2f} / {b.transfer_ms:.2f} | "
              f"{a.prefill.prediction.ttft.mean:.1f} | {sa.ttft.mean:.1f} | {sb.ttft.mean:.1f} | "
              f"{sa.ttft.mean / ttft:.2f} |")


def _estimate(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "planner.cli.main", "estimate", *args, "--json"]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)["latency"]


def mooncake_sglang() -> None:
    print("\n(2) Mooncake SGLang PD on A10 (vlmplan: A10G-24GB), Qwen2.5-7B int4: 1P1D vs 2 regular instances")
    print("| case | 1P1D prefill instance: saturation req/s (offered) | 1P1D decode TPOT mean / p99 ms (analytic) | "
          "2 regular TPOT mean / p99 ms (simulated) | TPOT mean ratio 1P1D / regular | 2 regular TTFT mean / p99 ms |")
    print("|---|---|---|---|---|---|")
    for rate, tp, prompt in ((1.0, 4, 8192), (4.0, 2, 2048)):
        s = _search("Qwen/Qwen2.5-VL-7B-Instruct", "A10G-24GB", "int4", prompt, 512, rate, "16xA10G")
        s.req = replace(s.req, max_load=1.0)  # the published runs were not held below a load ceiling
        c = next(c for c in s.cfgs if c.base.tp == tp and c.base.pp == 1)
        d = s.decode(c)
        p = s.prefill(c, [])
        assert d is not None and d.replicas == 1 and p is not None
        sat = p.prediction.max_requests_per_s
        lat = _estimate(["--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "A10G-24GB", "--tp", str(tp),
                         "--precision", "int4", "--no-image", "--prompt-tokens", str(prompt), "--output-tokens", "512",
                         "--rate", f"{rate / 2:g}", "--prefix-caching", "off", "--max-model-len", str(prompt + 512)])
        t, o = lat["ttft_ms"], lat["tpot_ms"]
        print(f"| rate {rate:g}, TP{tp}, {prompt}/512 | {sat:.2f} ({rate:g}) | {d.prediction.tpot.mean:.2f} / "
              f"{d.prediction.tpot.p99:.2f} | {o['mean']:.2f} / {o['p99']:.2f} | "
              f"{d.prediction.tpot.mean / o['mean']:.2f} | {t['mean']:.1f} / {t['p99']:.1f} |")


if __name__ == "__main__":
    mooncake_vllm()
    mooncake_sglang()
