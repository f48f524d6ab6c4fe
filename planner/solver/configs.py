"""The search space, before anything is modelled: every (GPU type, precision, KV dtype, TP x PP) a request
allows for a workload, each with the engine settings its deployment would get (--max-model-len, image limits).

Enumerating is cheap on purpose: the lazy search (``space``) needs every configuration's lower bound (one
replica of ``tp * pp`` GPUs) before it decides which ones are worth modelling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from planner.catalog.engine_support import supports_encoder_tp_data
from planner.catalog.schema import GpuSpec, ModelSpec, Precision
from planner.catalog.vision_tokens import image_tokens
from planner.core.errors import PlannerError, RequestError
from planner.solver.candidate import Screening
from planner.solver.request import TP_CHOICES, SolveRequest
from planner.spec.config import ServingConfig, Speculation
from planner.spec.shape import RequestShape, request_shape
from planner.spec.speculation import speculation_choices
from planner.spec.workload import Workload

TEMPLATE_ROOM_TOKENS = 256
"""Context reserved beyond the workload's counted tokens for the chat template (system prompt, role and
image markers: ~20 tokens for Qwen2.5-VL's default template, ~30 for Llama 3's), so a request at the
workload's largest size is never rejected for exceeding --max-model-len. A planning margin, not a model
constant: it changes no prediction (vLLM's KV budget does not depend on max_model_len)."""


@dataclass
class Config:
    """One (workload, GPU type, precision, KV dtype, TP x PP): all its max_num_seqs choices are evaluated at once."""

    index: int
    workload: Workload
    base: ServingConfig
    shape: RequestShape
    price: float

    @property
    def gpu(self) -> str:
        return self.base.gpu.name

    @property
    def lb_gpus(self) -> int:
        """No candidate of this configuration uses fewer GPUs (one replica)."""
        return self.base.tp * self.base.pp

    @property
    def lb_cost(self) -> float:
        return self.lb_gpus * self.price


def workload_max_model_len(model: ModelSpec, workload: Workload, base: ServingConfig) -> int:
    """The workload's longest request (largest prompt, most images at the largest size, longest output) plus
    template room, rounded up to a multiple of 1024, capped at the model's context."""
    visual = 0
    if workload.max_images and model.visual_tokens is not None:
        rule = model.visual_tokens
        per_image = max(image_tokens(rule, i.width, i.height, base.mm_processor_options).llm_tokens
                        for i in workload.image_sizes)
        visual = workload.max_images * per_image
    need = workload.max_prompt_tokens + visual + workload.max_output_tokens + TEMPLATE_ROOM_TOKENS
    return min(model.decoder.max_position_embeddings, math.ceil(need / 1024) * 1024)


def chosen_max_model_len(choice: int | str, model: ModelSpec, workload: Workload, base: ServingConfig) -> int:
    """The deployment's --max-model-len for the user's choice (``SolveRequest.max_model_len``)."""
    need = workload_max_model_len(model, workload, base)
    top = model.decoder.max_position_embeddings
    if choice == "workload":
        return need
    if choice == "model":
        return top
    assert isinstance(choice, int)
    if choice > top:
        raise RequestError(f"--max-model-len {choice} is above {model.name}'s context ({top:,} tokens)")
    if choice < need:
        raise RequestError(f"--max-model-len {choice} is below workload '{workload.name}''s longest request "
                           f"({need:,} tokens with template room): vLLM would reject those requests")
    return choice


def mm_options(model: ModelSpec, workload: Workload) -> tuple[dict[str, int], dict[str, object]]:
    """--limit-mm-per-prompt and a processor cap matching the planned images
    (otherwise vLLM reserves encoder memory for its largest image)."""
    rule = model.visual_tokens
    if rule is None:
        return {}, {}
    if not workload.max_images:
        return {"image": 0}, {}
    limit = {"image": workload.max_images}
    if rule.rule in ("qwen2_vl", "qwen3_vl"):
        sizes = [image_tokens(rule, i.width, i.height) for i in workload.image_sizes]
        return limit, {"max_pixels": max(t.resized_width * t.resized_height for t in sizes)}
    if rule.rule == "internvl":
        tiles = [image_tokens(rule, i.width, i.height).num_tiles for i in workload.image_sizes]
        return limit, {"max_dynamic_patch": max(1, max(tiles) - (1 if max(tiles) > 1 else 0))}
    return limit, {}


def parallel_choices(model: ModelSpec, gpu: GpuSpec) -> list[tuple[int, int]]:
    """(TP, PP) pairs vLLM can start ``model`` at on ``gpu``: TP within a node where heads, KV heads and MLP width
    divide as it requires, and two pipeline stages across nodes once a node is full."""
    from planner.catalog.engine_support import tp_problem

    tps = [t for t in TP_CHOICES if t <= gpu.gpus_per_node and tp_problem(model, t) is None]
    choices = [(t, 1) for t in tps]
    if gpu.gpus_per_node in tps:
        choices += [(gpu.gpus_per_node, 2)]
    return choices


def _allowed_precisions(req: SolveRequest, model: ModelSpec, gpu: GpuSpec, screen: Screening) -> list[Precision]:
    """The request's precisions ``gpu`` runs and ``model`` has weights for; a missing quantized checkpoint is
    noted on ``screen`` (vLLM cannot quantize to W4A16/W8A8 at load time: a checkpoint must exist)."""
    out: list[Precision] = []
    for precision in req.precisions:
        if precision not in gpu.precisions:
            continue
        if precision in ("int4", "int8") and precision not in model.quantized_checkpoints:
            note = f"{precision}: no known pre-quantized checkpoint of {model.name}"
            if note not in screen.unsupported:
                screen.unsupported.append(note)
                screen.missing_checkpoints.append(precision)
            continue
        out.append(precision)
    return out


def configs(req: SolveRequest, workload: Workload, screen: Screening, start: int = 0) -> list[Config]:
    """Every configuration of one workload the request allows (cheap: nothing is modelled yet), indexed from
    ``start``. Empty when the workload's requests cannot be shaped for the model (said on ``screen``)."""
    model = req.model_of(workload.name)
    limit_mm, mm_opts = mm_options(model, workload)
    specs, forced = speculative_settings(req, workload, model)
    # The load models cost a request's images in one encoder call of its own, so replicating the encoder per rank
    # can only win where one request carries several images to spread over the ranks.
    data_mode = workload.max_images >= 2 and supports_encoder_tp_data(model)
    out: list[Config] = []
    shape: RequestShape | None = None
    max_len = 0
    for gpu in req.gpus:
        if req.budget.limit(gpu.name) is None:
            continue
        for precision in _allowed_precisions(req, model, gpu, screen):
            for kv in [k for k in req.kv_cache_dtypes if k in gpu.kv_cache_dtypes]:
                for tp, pp in parallel_choices(model, gpu):
                    if req.tp is not None and tp != req.tp:
                        continue
                    base = ServingConfig(model=model, gpu=gpu, tp=tp, pp=pp, precision=precision,
                                         kv_cache_dtype=kv, limit_images_per_prompt=limit_mm.get("image"),
                                         mm_processor_options=mm_opts, enable_prefix_caching=req.prefix_caching)
                    if shape is None:
                        # The request's tokens depend on the model and its processor options only.
                        try:
                            shape = request_shape(base, workload)
                        except PlannerError as exc:
                            screen.unsupported.append(f"{workload.name}: {exc}")
                            return []
                        max_len = chosen_max_model_len(req.max_model_len, model, workload, base)
                    base = replace(base, max_model_len=max_len)
                    price = gpu.price.price_usd_per_gpu_hour
                    if not forced:
                        out.append(Config(start + len(out), workload, base, shape, price))
                    for spec in (specs if pp == 1 else []):  # vLLM's drafts run without pipeline stages
                        out.append(Config(start + len(out), workload, replace(base, speculative=spec), shape, price))
                    if tp > 1 and data_mode and not forced:
                        # The vision encoder replicated per TP rank, each rank encoding its share of the images
                        # (--mm-encoder-tp-mode data): no all-reduce per ViT layer, the whole ViT's weights per GPU.
                        out.append(Config(start + len(out), workload, replace(base, mm_encoder_tp_mode="data"),
                                          shape, price))
    return out


def speculative_settings(req: SolveRequest, workload: Workload, model: ModelSpec) -> tuple[list[Speculation], bool]:
    """(settings searched besides plain decoding, whether plain decoding is left out). ``auto`` adds the model's
    trained draft only where the workload has a TPOT or e2e SLO (speculation buys time per token, and costs solve
    time); a named method is searched alone (the comparison ``--speculative off`` makes the other way)."""
    if req.speculative == "off":
        return [], False
    if req.speculative == "auto" and not any(s.metric in ("tpot", "e2e") for s in req.slos_of(workload.name)):
        return [], False
    specs = speculation_choices(model, req.speculative, req.acceptance_rate)
    return specs, req.speculative != "auto" and bool(specs)
