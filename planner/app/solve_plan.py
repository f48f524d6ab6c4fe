"""Solution -> Plan: the saved, emitted answer of `vlmplan solve` (its deployments, their predictions and
simulator checks, the host each replica needs, and the notes)."""

from __future__ import annotations

import math

from planner.app.solve_request import DEFAULT_MODEL
from planner.app.speculation import speculative_plan
from planner.catalog.loader import calibration_status
from planner.core.stats import Percentiles
from planner.core.units import GIB
from planner.plan import (
    DeploymentPlan,
    HostResources,
    ImageSpec,
    PercentilesMs,
    Plan,
    Predicted,
    PredictedMemory,
    Simulated,
    traffic_of,
)
from planner.solver import Candidate, Solution, SolveRequest
from planner.spec.config import ResolvedConfig
from planner.spec.shape import RequestShape
from planner.spec.slo import Slo


def _pct(p: Percentiles) -> PercentilesMs:
    return PercentilesMs(**{k: round(float(v), 3) for k, v in p.model_dump().items()})


def _simulated(c: Candidate) -> Simulated | None:
    sim = c.simulated
    if sim is None:
        return None
    return Simulated(ttft_ms=_pct(sim.ttft), tpot_ms=_pct(sim.tpot), e2e_ms=_pct(sim.e2e),
                     requests_per_s=round(sim.requests_per_s * c.replicas, 4), requests_simulated=sim.requests,
                     seed=sim.seed, saturated=sim.saturated, meets_slos=sim.meets, failed=sim.failed)


def local_model_folder(model_arg: str) -> str | None:
    """The absolute folder of a local model (``--model ./my-llama`` or ``./my-llama/config.json``); None for a
    catalog id."""
    from pathlib import Path

    try:
        path = Path(model_arg).expanduser()
        if not path.exists():
            return None
        return str((path if path.is_dir() else path.parent).resolve())
    except OSError:
        return None


def _host(c: Candidate) -> HostResources | None:
    """CPUs and host memory one replica of ``c`` needs (None when the engine catalog has no host model)."""
    from planner.catalog.loader import load_calibration, load_engine
    from planner.perf.hostcpu import api_server_vcpus, offered_vcpus, replica_memory_gib, replica_vcpus

    host = load_engine().host
    if host is None:
        return None
    per = api_server_vcpus(load_calibration(c.cfg.gpu.name), host, c.shape)
    offered = offered_vcpus(c.cfg)
    return HostResources(vcpus=round(replica_vcpus(host, c.cfg, per), 2), vcpus_per_api_server=round(per, 2),
                         vcpus_offered=None if math.isinf(offered) else offered,
                         memory_gib=round(replica_memory_gib(host, c.cfg.api_server_count), 2),
                         mm_processor_cache_gib=host.mm_processor_cache_gib)


def prefix_caching_reason(cfg: ResolvedConfig, shape: RequestShape) -> str:
    """Why the plan turns vLLM's prefix caching on or off, with what it counts on reading from the cache."""
    prompt = shape.prompt_tokens
    if not cfg.enable_prefix_caching:
        return ("off (--prefix-caching off): every prompt is computed in full, shared prefix and repeated images "
                "included; the engine's cost does not depend on earlier requests")
    why = []
    if shape.encoded_share < 1:
        why.append(f"{1 - shape.encoded_share:.0%} of requests repeat an image, which the encoder then skips")
    if shape.cached_tokens <= 0:
        return ("on (vLLM's default): the workload declares no shared prefix or repeated image, so the plan counts "
                "on no hit; a repeating system prompt would only make it faster")
    return (f"on: {shape.cached_tokens:,} of {prompt:,} prompt tokens per request ({shape.cached_tokens / prompt:.0%}) "
            f"are read from the prefix cache in whole {cfg.kv_block_tokens}-token blocks, not computed"
            + (f"; {why[0]}" if why else ""))


def deployment_plan(c: Candidate, model_arg: str, slos: list[Slo] | None = None) -> DeploymentPlan:
    cfg = c.cfg
    m = cfg.model
    served = m.quantized_checkpoints.get(cfg.precision, m.name) if cfg.precision != "bf16" else m.name
    # fp8 without a pre-quantized checkpoint: vLLM quantizes the bf16 weights online.
    quantization = "fp8" if cfg.precision == "fp8" and served == m.name else None
    local = local_model_folder(model_arg)
    if local is not None and served == m.name:
        served = local  # a local config.json: the engine loads that folder, not a hub repo of the same name
    mem = c.memory
    return DeploymentPlan(
        workload=c.workload,
        model=model_arg,
        served_model=served,
        hf_architecture=m.hf_architecture,
        vllm_supported=m.vllm_supported,
        trust_remote_code=m.trust_remote_code,
        gpu=cfg.gpu.name,
        gpu_aliases=list(cfg.gpu.aliases),
        gpu_memory_gib=round(cfg.gpu.memory_total_mib / 1024, 2),
        gpus_per_replica=cfg.num_gpus,
        gpus_per_node=cfg.gpu.gpus_per_node,
        tp=cfg.tp,
        pp=cfg.pp,
        replicas=c.replicas,
        precision=cfg.precision,
        quantization=quantization,
        kv_cache_dtype=cfg.kv_cache_dtype,
        max_num_seqs=cfg.max_num_seqs,
        max_model_len=cfg.max_model_len,
        max_num_batched_tokens=cfg.max_num_batched_tokens,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        mm_encoder_tp_mode=cfg.mm_encoder_tp_mode,
        limit_mm_per_prompt=({"image": cfg.limit_images_per_prompt}
                             if m.vision is not None and cfg.limit_images_per_prompt is not None else {}),
        mm_processor_kwargs=dict(cfg.mm_processor_options),
        images=[],
        cost_per_hour=round(c.cost_per_hour, 4),
        price_usd_per_gpu_hour=cfg.gpu.price.price_usd_per_gpu_hour,
        api_server_count=cfg.api_server_count,
        speculative=speculative_plan(cfg.speculative),
        enable_prefix_caching=cfg.enable_prefix_caching,
        prefix_caching_reason=prefix_caching_reason(cfg, c.shape),
        host=_host(c),
        predicted=Predicted(
            ttft_ms=_pct(c.prediction.ttft),
            tpot_ms=_pct(c.prediction.tpot),
            e2e_ms=_pct(c.prediction.e2e),
            requests_per_s=round(c.prediction.requests_per_s * c.replicas, 4),
            output_tokens_per_s=round(c.prediction.output_tokens_per_s * c.replicas, 2),
            memory=PredictedMemory(
                weights_gib=round(mem.weights_bytes / GIB, 3),
                kv_cache_gib=round(max(mem.kv_cache_bytes, 0) / GIB, 3),
                activations_gib=round(mem.activations_bytes / GIB, 3),
                overhead_gib=round(mem.overhead_bytes / GIB, 3),
                total_gib=round(mem.total_used_bytes / GIB, 3),
                kv_capacity_tokens=mem.kv_capacity_tokens,
            ),
        ),
        simulated=_simulated(c),
        slos=[f"{s.key}<={s.limit_ms:g}ms" for s in (slos or [])],
        calibration=calibration_status(cfg.gpu.name)[0],  # type: ignore[arg-type]
        error_band=calibration_status(cfg.gpu.name)[1],
    )


def to_plan(sol: Solution, req: SolveRequest, model_arg: str | dict[str, str], notes: list[str]) -> Plan:
    """``model_arg``: the model as the user wrote it, one for all workloads or per workload name."""
    args = model_arg if isinstance(model_arg, dict) else {}
    one = model_arg if isinstance(model_arg, str) else DEFAULT_MODEL

    def arg(workload: str) -> str:
        return args.get(workload) or (one if not args else req.model_of(workload).name)

    deployments = [deployment_plan(c, arg(c.workload), req.slos_of(c.workload)) for c in sol.chosen]
    images = {w.name: [ImageSpec(width=i.width, height=i.height) for i in w.images] for w in req.workloads}
    traffic = {w.name: traffic_of(w) for w in req.workloads}
    deployments = [d.model_copy(update={"images": images.get(d.workload, []), "traffic": traffic.get(d.workload)})
                   for d in deployments]
    extra = list(notes) + list(sol.notes)
    for d in deployments:
        if d.served_model != d.model and local_model_folder(d.model) == d.served_model:
            extra.append(f"{d.workload}: model {d.model} is a local folder: the launch configs serve {d.served_model}")
    if sol.status == "infeasible":
        extra += [sol.explanation, f"nearest relaxation: {sol.relaxation}"]
    pd = None
    if sol.disagg is not None and sol.disagg.best is not None:
        from planner.app.disagg_plan import pd_plan

        pd = pd_plan(sol.disagg.best, arg(sol.disagg.best.workload), req, deployment_plan, _pct)
    elif sol.disagg is not None and sol.disagg.note:
        extra.append(sol.disagg.note)
    epd = None
    if sol.epd is not None and sol.epd.best is not None:
        from planner.app.disagg_plan import epd_plan

        epd = epd_plan(sol.epd.best, arg(sol.epd.best.workload), req, deployment_plan, _pct)
        epd = epd.model_copy(update={"lm": epd.lm.model_copy(update={
            "images": images.get(epd.lm.workload, []), "traffic": traffic.get(epd.lm.workload)})})
    elif sol.epd is not None and sol.epd.note:
        extra.append(sol.epd.note)
    cost = pd.cost_per_hour if pd is not None and sol.topology == "pd" else sum(d.cost_per_hour for d in deployments)
    if epd is not None and sol.topology == "epd":
        cost = epd.cost_per_hour
    return Plan(
        topology=sol.topology,  # type: ignore[arg-type]
        pd=pd,
        epd=epd,
        status=sol.status,
        objective=req.objective,
        max_load=req.max_load,
        cost_per_hour=round(cost, 4),
        deployments=deployments,
        binding=sol.binding if sol.status != "infeasible" else [sol.explanation],
        alternatives=[deployment_plan(c, arg(c.workload), req.slos_of(c.workload)) for c in sol.alternatives],
        notes=extra,
    )
