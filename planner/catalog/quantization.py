"""What a pre-quantized checkpoint's ``quantization_config`` says, mapped to a planner precision.

The planner models three weight formats (int4 W4A16, int8, fp8); a config in any other (NVFP4,
bitsandbytes, 3-bit GPTQ, mixed precisions) is refused with UnsupportedError rather than planned as bf16,
which would overstate memory and understate speed. The key may sit at the top level or inside
``text_config`` / ``llm_config`` (composite saves).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from planner.catalog.families.reader import Cfg, Reader
from planner.catalog.schema import Precision
from planner.core.errors import UnsupportedError


@dataclass(frozen=True)
class QuantizationInfo:
    """What a checkpoint's ``quantization_config`` says."""

    method: str
    """quant_method, lower case (gptq, awq, compressed-tensors, fp8, ...)."""
    bits: int | None
    """Weight bits (None where the config does not say)."""
    group_size: int | None
    precision: Precision
    """The planner precision it maps to: int4 (W4A16), int8 (W8A8 / W8A16) or fp8."""


_UNSUPPORTED_QUANT = "supported: gptq/awq 4- or 8-bit, compressed-tensors int4/int8/fp8, fp8"


def _find_quantization(cfg: Cfg) -> tuple[Cfg | None, str]:
    for where, part in (("", cfg), ("text_config.", cfg.get("text_config")), ("llm_config.", cfg.get("llm_config"))):
        if not isinstance(part, dict):
            continue
        for key in ("quantization_config", "compression_config"):
            qc = part.get(key)
            if isinstance(qc, dict) and qc:
                return qc, f"{where}{key}"
    return None, ""


def quantization_of(cfg: Cfg, file: Path) -> QuantizationInfo | None:
    """The quantization ``cfg`` (read from ``file``) declares, None for an unquantized checkpoint."""
    qc, where = _find_quantization(cfg)
    if qc is None:
        return None
    r = Reader(file, f"{where}.")
    method = str(qc.get("quant_method", "")).lower().replace("_", "-")
    if method in ("gptq", "awq", "gptq-marlin", "awq-marlin", "auto-round"):
        bits = r.opt_int(qc, "bits", None) or r.opt_int(qc, "w_bit", None)
        group = r.opt_int(qc, "group_size", None) or r.opt_int(qc, "q_group_size", None)
        if bits in (4, 8):
            return QuantizationInfo(method, bits, group, "int4" if bits == 4 else "int8")
        raise UnsupportedError(
            f"{file}: {where} {method} with {bits}-bit weights is not supported ({_UNSUPPORTED_QUANT})"
        )
    if method in ("fp8", "fbgemm-fp8"):
        return QuantizationInfo(method, 8, None, "fp8")
    if method == "compressed-tensors":
        return _compressed_tensors(qc, file, where)
    if method == "modelopt":
        algo = str(qc.get("quant_algo", "")).upper()
        if algo == "FP8":
            return QuantizationInfo(method, 8, None, "fp8")
        raise UnsupportedError(f"{file}: {where} modelopt quant_algo '{algo}' is not supported ({_UNSUPPORTED_QUANT})")
    raise UnsupportedError(f"{file}: {where} quant_method '{method or '?'}' is not supported ({_UNSUPPORTED_QUANT})")


def _compressed_tensors(qc: Cfg, file: Path, where: str) -> QuantizationInfo:
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise UnsupportedError(f"{file}: {where} compressed-tensors without config_groups is not supported")
    found: set[tuple[Precision, int, int | None]] = set()
    for name, group in groups.items():
        weights = group.get("weights") if isinstance(group, dict) else None
        if not isinstance(weights, dict):
            continue
        bits, kind = weights.get("num_bits"), str(weights.get("type", "int")).lower()
        group_size = weights.get("group_size") if isinstance(weights.get("group_size"), int) else None
        if kind == "int" and bits in (4, 8):
            found.add(("int4" if bits == 4 else "int8", bits, group_size))
        elif kind == "float" and bits == 8:
            found.add(("fp8", 8, group_size))
        else:
            raise UnsupportedError(
                f"{file}: {where} compressed-tensors group '{name}' with {bits}-bit {kind} weights "
                f"(format {qc.get('format')!r}) is not supported ({_UNSUPPORTED_QUANT})"
            )
    precisions = {p for p, _, _ in found}
    if len(precisions) != 1:
        raise UnsupportedError(
            f"{file}: {where} compressed-tensors groups mix precisions {sorted(precisions)}; one precision expected"
        )
    precision, bits, group_size = sorted(found, key=lambda f: (f[2] is None, f[2] or 0))[0]
    return QuantizationInfo("compressed-tensors", bits, group_size, precision)
