"""Turn user-facing names into specs: model ids or local config.json paths, GPU names, prices."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from planner.catalog.loader import load_gpus, load_models
from planner.catalog.schema import GpuSpec, ModelSpec, Price
from planner.core.errors import RequestError

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_GPU = "H100-SXM-80GB"
MAX_PRICE_USD_PER_HOUR = 100_000.0


def resolve_model(name_or_path: str) -> ModelSpec:
    """A catalog id (case-insensitive, with or without the org) or a local
    config.json / folder holding one."""
    from planner.core.inputs import clip

    if len(name_or_path) > 1024 or "\x00" in name_or_path:
        raise RequestError(f"model '{clip(name_or_path)}' is not a catalog id or a path ({len(name_or_path):,} "
                           "characters)")
    path = Path(name_or_path).expanduser()
    try:
        exists = path.exists()
    except OSError as exc:
        raise RequestError(f"model '{clip(name_or_path)}': {exc.strerror or exc}") from None
    if exists:
        from planner.catalog.hf_import import load_model_from_path

        return load_model_from_path(path)
    return load_models().get(name_or_path)


def resolve_gpu(name: str, prices: dict[str, float] | None = None) -> GpuSpec:
    gpu = load_gpus().get(name)
    if prices and gpu.name in prices:
        return with_price(gpu, prices[gpu.name], "user override")
    return gpu


def with_price(gpu: GpuSpec, usd_per_hour: float, provider: str) -> GpuSpec:
    price = Price(provider=provider, price_usd_per_gpu_hour=usd_per_hour, as_of="user")
    return gpu.model_copy(update={"price": price})


def parse_prices(items: list[str] | None, prices_file: Path | None = None) -> dict[str, float]:
    """``["H100=2.9", "L40S=1.1"]`` and/or a YAML/JSON file ``{H100: 2.9}`` ->
    {canonical GPU name: USD per GPU-hour}. Later entries win."""
    raw: list[tuple[str, Any]] = []
    if prices_file is not None:
        from planner.core.inputs import load_json_file, load_yaml_file

        data = (load_yaml_file(prices_file, "prices file") if prices_file.suffix in (".yaml", ".yml")
                else load_json_file(prices_file, "prices file"))
        if not isinstance(data, dict):
            raise RequestError(f"prices file {prices_file} must map GPU names to USD per GPU-hour")
        raw.extend(data.items())
    for item in items or []:
        for part in item.split(","):
            if "=" not in part:
                raise RequestError(f"price '{part}' is not GPU=USD_PER_HOUR (e.g. H100=2.9)")
            k, v = part.split("=", 1)
            raw.append((k.strip(), v.strip()))
    out: dict[str, float] = {}
    for key, value in raw:
        try:
            usd = float(str(value).lstrip("$"))
        except ValueError:
            raise RequestError(f"price for {key} is not a number: '{value}'") from None
        if not math.isfinite(usd) or usd <= 0 or usd > MAX_PRICE_USD_PER_HOUR:
            raise RequestError(f"price for {str(key)[:60]} must be a finite number in (0, "
                               f"{MAX_PRICE_USD_PER_HOUR:,.0f}] USD per GPU-hour (got {str(value)[:40]})")
        out[load_gpus().get(str(key)).name] = usd
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise RequestError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise RequestError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def parse_json_option(flag: str, text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"{flag} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise RequestError(f"{flag} must be a JSON object, e.g. '{{\"max_pixels\": 1003520}}'")
    return value
