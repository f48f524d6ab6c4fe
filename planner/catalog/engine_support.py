"""Can the engine run it? The model x engine-version table (``catalogs/engines/support.yaml``) and vLLM's
tensor-parallel divisibility rules, checked before any candidate is built.

* :func:`model_support` looks a model's architecture (or, for a model-specific NIM image, the model) up in an
  engine's row: ``supported``, ``unsupported`` with the table's one-line reason, or ``unknown`` (not in the
  table: planned, e.g. a local config.json of a newer architecture).
* :func:`require_supported` raises :class:`UnsupportedError` (exit 2) for a model the planned engine cannot load.
* :func:`tp_problem` says why vLLM would refuse to start a model at a tensor-parallel size, or None.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError

from planner.catalog.loader import catalog_root, format_validation_error, read_yaml
from planner.catalog.schema import ModelSpec, Strict
from planner.core.errors import CatalogError, UnsupportedError


class EngineRow(Strict):
    kind: Literal["vllm", "nim"]
    version: str | None = None
    image: str
    provenance: str
    supported: list[str] = []
    """Architectures (config.json ``architectures[0]``) the engine loads."""
    unsupported: dict[str, str] = {}
    """Architecture -> why the engine cannot load it (one line)."""
    models: list[str] = []
    """A model-specific image: the only models (HF ids) it serves."""
    encoder_only: list[str] = []
    """Architectures the engine runs as an encoder-only instance (vLLM ``--mm-encoder-only``: the model file marks
    its language model, which is then not loaded): the ``epd`` topology's encoder pool."""
    encoder_only_unsupported: dict[str, str] = {}
    """Architecture -> why it cannot run encoder-only (one line)."""
    encoder_only_provenance: str | None = None
    encoder_tp_data: list[str] = []
    """Architectures whose vision encoder vLLM can replicate per TP rank (``--mm-encoder-tp-mode data``: the model
    class sets ``supports_encoder_tp_data``); the others always shard it (``weights``)."""
    encoder_tp_data_provenance: str | None = None


class SupportTable(Strict):
    schema_version: Literal[1] = 1
    planned: str
    """The engine solve / estimate / whatif plan for (the one the memory and speed models describe)."""
    engines: dict[str, EngineRow] = Field(min_length=1)


@lru_cache(maxsize=1)
def load_support_table() -> SupportTable:
    path = catalog_root() / "engines" / "support.yaml"
    data = read_yaml(path)
    try:
        table = SupportTable.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(f"{path.name}: {format_validation_error(exc)}") from None
    if table.planned not in table.engines:
        raise CatalogError(f"{path.name}: planned engine '{table.planned}' has no row")
    return table


def engine_label(engine: str) -> str:
    row = load_support_table().engines[engine]
    return f"vLLM {row.version}" if row.kind == "vllm" and row.version else row.image


def model_support(model: ModelSpec, engine: str | None = None) -> tuple[str, str]:
    """(``supported`` | ``unsupported`` | ``unknown``, reason) of ``model`` on ``engine`` (default: the planned)."""
    table = load_support_table()
    name = engine or table.planned
    row = table.engines.get(name)
    if row is None:
        raise CatalogError(f"unknown engine '{name}' in catalogs/engines/support.yaml "
                           f"(known: {', '.join(table.engines)})")
    if row.models:
        if model.name.lower() in {m.lower() for m in row.models}:
            return "supported", ""
        return "unsupported", f"{row.image} is a model-specific image serving only {', '.join(row.models)}"
    arch = model.hf_architecture
    if arch in row.unsupported:
        return "unsupported", row.unsupported[arch]
    if arch in row.supported:
        return "supported", ""
    return "unknown", f"{arch} is not in the support table of {name}"


def encoder_only_problem(model: ModelSpec, engine: str | None = None) -> str | None:
    """Why ``engine`` (default: the planned) cannot run ``model``'s vision encoder as its own instance
    (``--mm-encoder-only``); None: it can."""
    table = load_support_table()
    row = table.engines[engine or table.planned]
    arch = model.hf_architecture
    if model.vision is None:
        return f"{model.name} is a text model: it has no vision encoder to run apart"
    if arch in row.encoder_only_unsupported:
        return f"{arch}: {row.encoder_only_unsupported[arch]}"
    if arch not in row.encoder_only:
        return f"{arch} is not in the encoder-only list of {engine or table.planned} (catalogs/engines/support.yaml)"
    return None


def supports_encoder_tp_data(model: ModelSpec, engine: str | None = None) -> bool:
    """Whether ``engine`` (default: the planned) runs ``model`` with ``--mm-encoder-tp-mode data``."""
    table = load_support_table()
    return model.vision is not None and model.hf_architecture in table.engines[engine or table.planned].encoder_tp_data


def require_supported(model: ModelSpec, engine: str | None = None) -> None:
    """Refuse (UnsupportedError, exit 2) a model the engine cannot load, with the table's reason."""
    status, reason = model_support(model, engine)
    if status == "unsupported":
        name = engine or load_support_table().planned
        raise UnsupportedError(f"{model.name} ({model.hf_architecture}) cannot be planned on "
                               f"{engine_label(name)}: {reason}")


def tp_problem(model: ModelSpec, tp: int) -> str | None:
    """Why vLLM would refuse ``model`` at tensor-parallel size ``tp`` (None: it divides as vLLM requires).

    vLLM: attention heads must divide by tp (``verify_with_parallel_config``); KV heads are split when tp is
    smaller (``divide(kv, tp)``) and replicated when it is not (``divide(tp, kv)``); the dense MLP's
    intermediate size is split by tp (``MergedColumnParallelLinear``)."""
    if tp <= 1:
        return None
    d = model.decoder
    if d.num_attention_heads % tp:
        return (f"tp {tp} does not divide the {d.num_attention_heads} attention heads of {model.name} "
                f"(vLLM: heads must be divisible by the tensor-parallel size)")
    kv = d.num_kv_heads
    if (tp < kv and kv % tp) or (tp >= kv and tp % kv):
        return (f"tp {tp} neither divides nor is a multiple of the {kv} KV heads of {model.name} "
                f"(vLLM splits KV heads when tp < {kv} and replicates them when tp >= {kv})")
    if d.moe is None and d.intermediate_size % tp:
        return (f"tp {tp} does not divide the MLP intermediate size {d.intermediate_size} of {model.name} "
                f"(vLLM shards the MLP evenly across the tensor-parallel ranks)")
    return None
