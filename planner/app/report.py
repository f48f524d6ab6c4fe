"""Human-readable tables and catalog listings (rich), and JSON for machines."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from planner.catalog.loader import load_gpus, load_models
from planner.core.units import GIB
from planner.estimate import Estimate
from planner.spec.modeldesc import full_attention_layers, param_counts

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def _f(x: float, nd: int = 2) -> str:
    return f"{x:,.{nd}f}"


def print_estimate(est: Estimate, explain: bool = False) -> None:
    data = est.to_json()
    cfg, mem, lat = data["config"], data["memory"], data["latency"]
    req = data["request"]
    cal = data["calibration"]
    _print_config(data)
    console.print(
        f"request: {req['text_tokens']} text + {req['visual_tokens']} visual tokens "
        f"({req['images']} image(s), {req['encoder_patches']} ViT patches) -> {req['output_tokens']} out"
    )
    t = Table(title="memory per GPU", show_header=True)
    t.add_column("component")
    t.add_column("GiB", justify="right")
    for label, key in [("weights (decoder)", "decoder_weights_gib"), ("weights (vision)", "vision_weights_gib"),
                       ("activations (peak)", "activations_gib"), ("overhead (non-torch, CUDA graphs)",
                                                                   "overhead_gib"),
                       ("KV cache", "kv_cache_gib")]:
        t.add_row(label, _f(mem[key]))
    t.add_row("total used", _f(mem["total_gib_used"]))
    t.add_row(f"usable ({cfg['gpu_memory_utilization']} x {_f(mem['total_gib'])})", _f(mem["usable_gib"]))
    console.print(t)
    console.print(
        f"KV: {mem['kv_bytes_per_token']:,} bytes/token/GPU, capacity {mem['kv_capacity_tokens']:,} tokens"
        + ("" if mem["fits"] else f"  [bold red]DOES NOT FIT[/]: {mem['reason']}")
    )
    lt = Table(title=f"latency ({lat['load']}; speed model {cal['status']} for {data['gpu']})")
    lt.add_column("metric")
    for k in ("mean", "p50", "p90", "p95", "p99"):
        lt.add_column(k, justify="right")
    for label, key in [("TTFT ms", "ttft_ms"), ("TPOT ms", "tpot_ms"), ("e2e ms", "e2e_ms")]:
        lt.add_row(label, *[_f(lat[key][k], 1) for k in ("mean", "p50", "p90", "p95", "p99")])
    console.print(lt)
    status = cal.get("validation", "")
    if status:
        console.print(f"calibration: {data['gpu']} {status.upper() if status == 'uncalibrated' else status}: "
                      f"{cal.get('error_band', '')}")
    if explain and cal.get("at_fit_bound"):
        console.print(fit_bound_line(cal["gpu"], cal["at_fit_bound"]))
    console.print(
        f"GPU times: vision encode {_f(lat['vision_encode_ms'])} ms{_host_note(lat)}, "
        f"prefill {_f(lat['prefill_ms'])} ms "
        f"({data['bound']['prefill']}-bound), decode step {_f(lat['decode_step_ms'])} ms at batch "
        f"{lat['decode_batch']} x {lat['decode_context']} tokens ({data['bound']['decode']}-bound); engine "
        f"overhead {_f(lat['engine_overhead_ms'])} ms/step"
    )
    tp = data["throughput"]
    console.print(f"throughput: {_f(tp['requests_per_s'], 3)} req/s, {_f(tp['output_tokens_per_s'], 1)} output tok/s")
    load = data.get("load")
    if load:
        sat, ana = _f(load["saturation_requests_per_s"], 3), _f(load["analytic_max_requests_per_s"], 3)
        grows = "; the queue grows: SATURATED" if load["saturated"] else ""
        offered = ""
        share, ceiling = load.get("offered_load"), load.get("max_load")
        if share is not None and not load["saturated"]:
            offered = f"; offered load {share:.0%} of it"
            if ceiling is not None and share > ceiling:
                offered += f" (above the solver's {ceiling:.0%} ceiling: little headroom for bursts)"
        console.print(f"saturation: {sat} req/s per replica (every slot busy; analytic {ana}){offered}; "
                      f"mean batch {_f(load['mean_batch'], 1)}, preemptions {load['preemptions']}{grows}")
        slo = load.get("slo")
        if slo:
            verdict = "met" if slo["met"] else "MISSED"
            if slo["max_rate_per_s"] is not None:
                best = f"highest rate meeting them {_f(slo['max_rate_per_s'], 3)} req/s"
            elif slo["max_concurrency"] is not None:
                best = f"most clients meeting them {slo['max_concurrency']}"
            else:
                best = "not met at any load"
            console.print(f"SLO {', '.join(slo['targets'])}: {verdict}; {best}")
    if explain:
        for phase, rows in explain_json(est).items():
            et = Table(title=f"{phase}: per-op breakdown")
            for col in ("op", "count", "ms", "GFLOP", "MB", "bound"):
                et.add_column(col, justify="left" if col in ("op", "bound") else "right")
            for r in rows:
                et.add_row(r["op"], str(r["count"]), _f(r["ms"], 3), _f(r["gflop"], 1), _f(r["mb"], 1), r["bound"])
            console.print(et)


def fit_bound_line(gpu: str, at_bound: dict[str, dict[str, Any]]) -> str:
    """One line naming the constants of ``gpu``'s calibration that sit at a bound of their fit, with the value the
    fit gives without that bound."""
    items = [f"{name} at {b['side']} bound {b['bound']:g}"
             + (f" (unbounded {b['unbounded_value']:.3g})" if b.get("unbounded_value") is not None else "")
             for name, b in at_bound.items()]
    return f"fit bounds: {gpu} " + ", ".join(items)


def explain_json(est: Estimate) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for phase, step in (("vision_encode", est.vision), ("prefill", est.prefill), ("decode_step", est.decode)):
        out[phase] = [
            {
                "op": op.name,
                "count": op.count,
                "ms": round(op.total_s * 1e3, 5),
                "gflop": round(op.flops * op.count / 1e9, 3),
                "mb": round(op.bytes * op.count / 1e6, 3),
                "bound": op.bound,
            }
            for op in step.ops
        ]
    return out


def gpus_json() -> list[dict[str, Any]]:
    from planner.catalog.loader import load_calibration

    rows = []
    for g in load_gpus():
        rows.append({
            "name": g.name,
            "aliases": g.aliases,
            "architecture": g.architecture,
            "memory_gb": g.memory_gb,
            "memory_total_gib": round(g.memory_total_mib / 1024, 2),
            "hbm_bandwidth_gb_per_s": g.hbm_bandwidth_gb_per_s,
            "bf16_dense_tflops": g.bf16_dense_tflops,
            "fp8_dense_tflops": g.fp8_dense_tflops,
            "int8_dense_tops": g.int8_dense_tops,
            "int4_dense_tops": g.int4_dense_tops,
            "interconnect": g.interconnect.kind,
            "interconnect_gb_per_s": g.interconnect.bandwidth_gb_per_s,
            "tdp_w": g.tdp_w,
            "precisions": g.precisions,
            "price_usd_per_gpu_hour": g.price.price_usd_per_gpu_hour,
            "price_source": f"{g.price.provider} {g.price.as_of}",
            "calibrated": load_calibration(g.name).calibrated,
        })
    return rows


def print_gpus(as_json: bool) -> None:
    rows = gpus_json()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="GPU catalog (dense tensor throughput; prices are on-demand USD per GPU-hour)")
    for col in ("name", "mem GiB", "HBM GB/s", "bf16 TF", "fp8 TF", "link", "$/h", "speed model"):
        t.add_column(col, justify="left" if col in ("name", "link", "speed model") else "right")
    for r in rows:
        t.add_row(r["name"], _f(r["memory_total_gib"], 1), f"{r['hbm_bandwidth_gb_per_s']:,.0f}",
                  f"{r['bf16_dense_tflops']:,.0f}", "-" if r["fp8_dense_tflops"] is None else
                  f"{r['fp8_dense_tflops']:,.0f}", f"{r['interconnect']} {r['interconnect_gb_per_s']:.0f}",
                  _f(r["price_usd_per_gpu_hour"]), "calibrated" if r["calibrated"] else "uncalibrated")
    console.print(t)


def models_json() -> list[dict[str, Any]]:
    rows = []
    for m in load_models():
        pc = param_counts(m)
        d = m.decoder
        rows.append({
            "name": m.name,
            "kind": m.kind,
            "params_b": round(pc.total / 1e9, 3),
            "vision_params_b": round(pc.vision / 1e9, 3),
            "layers": d.num_layers,
            "hidden_size": d.hidden_size,
            "kv_heads": d.num_kv_heads,
            "kv_bytes_per_token_bf16": 2 * full_attention_layers(d) * d.num_kv_heads * d.head_dim * 2,
            "max_position_embeddings": d.max_position_embeddings,
            "moe": None if d.moe is None else f"{d.moe.num_experts}e top-{d.moe.top_k}",
            "visual_token_rule": m.visual_tokens.rule if m.visual_tokens else None,
            "vllm_supported": m.vllm_supported,
        })
    return rows


def print_models(as_json: bool) -> None:
    rows = models_json()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="model catalog")
    for col in ("name", "params B", "layers", "KV B/token", "max ctx", "MoE", "image rule"):
        t.add_column(col, justify="left" if col in ("name", "MoE", "image rule") else "right")
    for r in rows:
        t.add_row(r["name"], _f(r["params_b"], 2), str(r["layers"]), f"{r['kv_bytes_per_token_bf16']:,}",
                  f"{r['max_position_embeddings']:,}", r["moe"] or "-", r["visual_token_rule"] or "text")
    console.print(t)


def print_plan(plan: Any, req: Any, sol: Any) -> None:
    """The solver's answer for people: deployment, predictions vs SLOs, what binds, alternatives."""
    for note in plan.notes if plan.status != "infeasible" else plan.notes[:-2]:
        console.print(f"note: {note}")
    if plan.status == "infeasible":
        console.print(f"[bold red]infeasible[/]: {sol.explanation}")
        console.print(f"nearest relaxation: {sol.relaxation}")
        return
    console.print(f"status: [bold]{plan.status}[/] (CP-SAT, objective {plan.objective}); "
                  f"total ${plan.cost_per_hour:,.2f}/h; budget {req.budget.describe()}; solved in {sol.wall_s:.2f} s")
    t = Table(title="chosen deployment")
    for col in ("workload", "GPU", "GPUs", "tp x pp", "precision", "kv", "max seqs", "max len", "replicas", "$/h"):
        t.add_column(col, justify="right" if col in ("GPUs", "max seqs", "max len", "replicas", "$/h") else "left")
    for d in plan.deployments:
        prec = d.precision + (f" +{d.speculative.method}" if d.speculative is not None else "")
        t.add_row(d.workload, d.gpu, str(d.gpus_per_replica * d.replicas), f"{d.tp} x {d.pp}", prec,
                  d.kv_cache_dtype, str(d.max_num_seqs), f"{d.max_model_len:,}", str(d.replicas),
                  f"{d.cost_per_hour:,.2f}")
    console.print(t)
    for gpu, status, band in dict.fromkeys((d.gpu, d.calibration, d.error_band) for d in plan.deployments):
        if status:
            console.print(f"calibration: {gpu} {status.upper() if status == 'uncalibrated' else status}: {band}")
    for d in plan.deployments:
        slo_list = req.slos_of(d.workload) if hasattr(req, "slos_of") else req.slos
        how = "analytic load model" + (", then simulated" if d.simulated is not None else "")
        st = Table(title=f"{d.workload}: per request, one replica at its share of the load ({how})")
        for col in ("metric", "p50", "p90", "p95", "p99", "SLO", "headroom"):
            st.add_column(col, justify="left" if col == "metric" else "right")
        slos = {s.key: s for s in slo_list}
        rows = [("", d.predicted)] + ([("sim ", d.simulated)] if d.simulated is not None else [])
        for metric in ("ttft", "tpot", "e2e"):
            for tag, source in rows:
                p = getattr(source, f"{metric}_ms")
                limits = [s for k, s in slos.items() if s.metric == metric]
                slo_txt = ", ".join(f"{s.stat} <= {s.limit_ms:g}" for s in limits) or "-"
                room = "-"
                if limits:
                    s = limits[0]
                    value = getattr(p, s.stat)
                    room = f"{(s.limit_ms - value) / s.limit_ms * 100:.0f}%"
                st.add_row(f"{tag}{metric.upper()} ms", _f(p.p50, 1), _f(p.p90, 1), _f(p.p95, 1), _f(p.p99, 1),
                           slo_txt, room)
        console.print(st)
        mem = d.predicted.memory
        console.print(f"memory per GPU: weights {_f(mem.weights_gib)} GiB, KV cache {_f(mem.kv_cache_gib)} GiB "
                      f"({mem.kv_capacity_tokens:,} tokens), activations {_f(mem.activations_gib)} GiB; serves "
                      f"{_f(d.predicted.requests_per_s, 2)} req/s")
        console.print(d.launch_limits())
        if not d.enable_prefix_caching or d.prefix_caching_reason.startswith("on:"):
            console.print(f"prefix caching: {d.prefix_caching_reason}")
        if d.speculative is not None:
            console.print(f"speculative decoding: {_spec_words(d.speculative.config_json())}, acceptance "
                          f"{d.speculative.acceptance_rate:g} assumed ({d.speculative.tokens_per_step:.2f} tokens per "
                          "step); read yours from vLLM's vllm:spec_decode_* metrics and re-plan with --acceptance-rate")
        if d.simulated is not None:
            sim = d.simulated
            console.print(f"simulated: {sim.requests_simulated:,} requests per replica (seed {sim.seed}): "
                          + ("meets every SLO" if sim.meets_slos else f"[bold red]breaks {sim.failed}[/]"))
    for b in plan.binding:
        console.print(f"binding: {b}")
    if plan.alternatives:
        first = plan.deployments[0].workload if plan.deployments else ""
        at = Table(title=f"best alternatives on other GPU types or precisions (workload {first}, analytic)")
        for col in ("GPU", "GPUs", "tp x pp", "precision", "replicas", "$/h", "p95 TTFT ms", "calibration"):
            at.add_column(col, justify="left" if col in ("GPU", "precision", "calibration") else "right")
        for a in plan.alternatives:
            prec = a.precision + (f" +{a.speculative.method}" if a.speculative is not None else "")
            at.add_row(a.gpu, str(a.gpus_per_replica * a.replicas), f"{a.tp} x {a.pp}", prec, str(a.replicas),
                       f"{a.cost_per_hour:,.2f}", _f(a.predicted.ttft_ms.p95, 1), a.calibration)
        console.print(at)
    from planner.app.disagg_report import print_topologies

    print_topologies(console, plan, sol)


__all__ = ["GIB", "print_estimate", "explain_json", "fit_bound_line", "print_gpus", "print_models"]


def _print_config(data: dict[str, Any]) -> None:
    """The estimate's first line(s): model, GPUs and engine settings; speculative decoding when on."""
    cfg = data["config"]
    console.print(
        f"{data['model']} on {cfg['tp'] * cfg['pp']} x {data['gpu']} (tp={cfg['tp']}, pp={cfg['pp']}), "
        f"{cfg['precision']} weights, kv {cfg['kv_cache_dtype']}, max_model_len {cfg['max_model_len']}, "
        f"max_num_seqs {cfg['max_num_seqs']}, util {cfg['gpu_memory_utilization']}"
    )
    if "speculative" in cfg:
        spec = cfg["speculative"]
        rate = f", drafts on {spec['draft_rate']:g} of steps" if "draft_rate" in spec else ""
        sync = "; vLLM schedules synchronously with this method" if spec.get("async_scheduling") is False else ""
        console.print(f"speculative decoding: {_spec_words(spec)}, acceptance {spec['acceptance_rate']:g}{rate} "
                      f"assumed{sync}")
    req = data["request"]
    if not cfg["enable_prefix_caching"]:
        console.print("prefix caching: off (every prompt computed in full)")
    elif req["cached_tokens"] > 0:
        repeat = f"; {1 - req['encoded_share']:.0%} of requests repeat an image, not encoded again" \
            if req["encoded_share"] < 1 else ""
        console.print(f"prefix caching: {req['cached_tokens']:,} of {req['prompt_tokens']:,} prompt tokens per request "
                      f"read from the cache ({req['cached_tokens'] / req['prompt_tokens']:.0%}){repeat}")


def _spec_words(conf: dict[str, Any]) -> str:
    """``--speculative-config`` in words: method, draft tokens, draft checkpoint."""
    draft = f" ({conf['model']})" if conf.get("model") else ""
    return f"{conf['method']}{draft}, {conf['num_speculative_tokens']} draft token(s) per step"


def _host_note(lat: dict) -> str:
    """The engine's host work around the encoder call, where there is one."""
    host = lat.get("vision_host_ms", 0.0)
    return f" (+ {_f(host)} ms engine host work per encoder call)" if host else ""
