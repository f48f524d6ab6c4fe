"""GPU catalog: every file validates, names resolve, and the figures pass physical sanity checks.

Expected values are hand calculations from public specifications; each cites its source.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from planner.catalog.loader import catalog_root, load_gpus, parse_file
from planner.catalog.schema import GPU_FIGURES, GpuSpec
from planner.core.errors import CatalogError

GPU_FILES = sorted((catalog_root() / "gpus").glob("*.yaml"))
GPUS = list(load_gpus())
TODAY = dt.date.today()

# Names the planner must accept (case-insensitive) -> canonical name.
EXPECTED_NAMES = {
    "H100-SXM-80GB": "H100-SXM-80GB",
    "H100": "H100-SXM-80GB",
    "H100-SXM": "H100-SXM-80GB",
    "H100-PCIE-80GB": "H100-PCIE-80GB",
    "H100-PCIE": "H100-PCIE-80GB",
    "H200-141GB": "H200-141GB",
    "H200": "H200-141GB",
    "H200-SXM": "H200-141GB",
    "B200-180GB": "B200-180GB",
    "B200": "B200-180GB",
    "A100-SXM-80GB": "A100-SXM-80GB",
    "A100": "A100-SXM-80GB",
    "A100-80GB": "A100-SXM-80GB",
    "A100-SXM-40GB": "A100-SXM-40GB",
    "A100-40GB": "A100-SXM-40GB",
    "L40S-48GB": "L40S-48GB",
    "L40S": "L40S-48GB",
    "L4-24GB": "L4-24GB",
    "L4": "L4-24GB",
    "A10G-24GB": "A10G-24GB",
    "A10G": "A10G-24GB",
    "RTX-4090-24GB": "RTX-4090-24GB",
    "RTX-4090": "RTX-4090-24GB",
    "4090": "RTX-4090-24GB",
    "RTX-A6000-48GB": "RTX-A6000-48GB",
    "RTX-A6000": "RTX-A6000-48GB",
    "A6000": "RTX-A6000-48GB",
    "MI300X-192GB": "MI300X-192GB",
    "MI300X": "MI300X-192GB",
    "H100-NVL-94GB": "H100-NVL-94GB",
    "H100-NVL": "H100-NVL-94GB",
}

FP8_ARCHITECTURES = {"ada", "hopper", "blackwell", "cdna3"}
"""Architectures with fp8 tensor/matrix cores (Ada SM 8.9, Hopper 9.0, Blackwell 10.0, AMD CDNA3)."""

COMPUTE_CAPABILITY = {"ampere": {"8.0", "8.6"}, "ada": {"8.9"}, "hopper": {"9.0"}, "blackwell": {"10.0"}}
"""CUDA compute capability per architecture (NVIDIA CUDA GPUs table, developer.nvidia.com/cuda-gpus)."""


def _norm(name: str) -> str:
    """Lookup key as the loader documents it: case-insensitive, '_' and '-' equivalent, outer spaces ignored."""
    return name.strip().lower().replace("_", "-")


def _ids(gpus: list[GpuSpec]) -> list[str]:
    return [g.name for g in gpus]


def _capability(gpu: GpuSpec) -> float | None:
    return float(gpu.compute_capability) if gpu.compute_capability is not None else None


# --------------------------------------------------------------------------- validation and names


def test_catalog_holds_every_required_gpu() -> None:
    names = {g.name for g in GPUS}
    assert set(EXPECTED_NAMES.values()) <= names
    assert len(GPU_FILES) == len(GPUS)


@pytest.mark.parametrize("path", GPU_FILES, ids=[p.name for p in GPU_FILES])
def test_every_gpu_file_validates(path: Path) -> None:
    spec = parse_file(path, GpuSpec)
    # One GPU per file, file named after the canonical name.
    assert path.stem == spec.name.lower()


@pytest.mark.parametrize("name,canonical", sorted(EXPECTED_NAMES.items()))
def test_names_resolve_case_insensitively(name: str, canonical: str) -> None:
    index = load_gpus()
    for variant in (name, name.lower(), name.upper(), f"  {name} "):
        assert index.get(variant).name == canonical


def test_unknown_gpu_names_raise_with_a_suggestion() -> None:
    with pytest.raises(CatalogError, match="unknown gpu 'H100-SXM-8OGB'.*H100-SXM-80GB"):
        load_gpus().get("H100-SXM-8OGB")


def test_aliases_are_unambiguous() -> None:
    """No normalised name or alias belongs to two GPUs (the loader also refuses this at load time)."""
    owner: dict[str, str] = {}
    for gpu in GPUS:
        for key in {_norm(n) for n in [gpu.name, *gpu.aliases]}:
            assert owner.setdefault(key, gpu.name) == gpu.name, f"'{key}' names {owner[key]} and {gpu.name}"


# --------------------------------------------------------------------------- provenance and prices


@pytest.mark.parametrize("gpu", GPUS, ids=_ids(GPUS))
def test_provenance_names_only_known_figures(gpu: GpuSpec) -> None:
    """The schema checks that every set figure has a source; this catches misspelt provenance keys."""
    assert set(gpu.provenance) <= set(GPU_FIGURES)
    for figure in gpu.provenance:
        assert getattr(gpu, figure) is not None, f"{gpu.name}: provenance for unset figure '{figure}'"


@pytest.mark.parametrize("gpu", GPUS, ids=_ids(GPUS))
def test_price_is_positive_and_dated(gpu: GpuSpec) -> None:
    assert gpu.price.price_usd_per_gpu_hour > 0
    as_of = dt.date.fromisoformat(gpu.price.as_of)
    assert dt.date(2024, 1, 1) <= as_of <= TODAY
    assert gpu.price.provider and gpu.price.url
    for source in gpu.sources.values():
        assert source.retrieved is not None, f"{gpu.name}: source '{source.title}' has no retrieved date"
        assert dt.date.fromisoformat(source.retrieved) <= TODAY


# --------------------------------------------------------------------------- physical sanity


@pytest.mark.parametrize("gpu", GPUS, ids=_ids(GPUS))
def test_driver_total_memory_matches_the_marketed_size(gpu: GpuSpec) -> None:
    """nvidia-smi/rocm-smi total within 10% of the datasheet size, read as decimal GB or as GiB.

    E.g. H100: 81559 MiB / (80e9 B / 2^20) = 1.069; L40S: 46068 MiB / (48 * 1024 MiB) = 0.937.
    """
    decimal_mib = gpu.memory_gb * 1e9 / 2**20
    binary_mib = gpu.memory_gb * 1024
    assert any(0.9 <= gpu.memory_total_mib / ref <= 1.1 for ref in (decimal_mib, binary_mib))


@pytest.mark.parametrize("gpu", GPUS, ids=_ids(GPUS))
def test_fp8_throughput_exists_exactly_on_fp8_architectures(gpu: GpuSpec) -> None:
    assert (gpu.fp8_dense_tflops is not None) == (gpu.architecture in FP8_ARCHITECTURES)


@pytest.mark.parametrize("gpu", GPUS, ids=_ids(GPUS))
def test_fp8_precision_iff_fp8_throughput(gpu: GpuSpec) -> None:
    assert ("fp8" in gpu.precisions) == (gpu.fp8_dense_tflops is not None)


@pytest.mark.parametrize("gpu", [g for g in GPUS if g.architecture == "hopper"], ids=lambda g: g.name)
def test_hopper_fp8_is_twice_bf16(gpu: GpuSpec) -> None:
    """Hopper datasheets: FP8 tensor rate = 2 x BF16 (H100 SXM 1,979 vs 989.4 dense; PCIe 1,513 vs 756.5)."""
    assert gpu.fp8_dense_tflops == pytest.approx(2 * gpu.bf16_dense_tflops, rel=0.005)


@pytest.mark.parametrize("gpu", GPUS, ids=_ids(GPUS))
def test_narrower_types_are_never_slower(gpu: GpuSpec) -> None:
    """Each halving of operand width keeps or doubles tensor throughput: bf16 <= fp8/int8 <= int4."""
    narrower = [x for x in (gpu.fp8_dense_tflops, gpu.int8_dense_tops) if x is not None]
    assert all(gpu.bf16_dense_tflops <= x for x in narrower)
    if gpu.int4_dense_tops is not None:
        assert all(x <= gpu.int4_dense_tops for x in narrower)


@pytest.mark.parametrize("gpu", GPUS, ids=_ids(GPUS))
def test_compute_capability_matches_architecture(gpu: GpuSpec) -> None:
    if gpu.vendor == "amd":
        assert gpu.compute_capability is None
    else:
        assert gpu.compute_capability in COMPUTE_CAPABILITY[gpu.architecture]


@pytest.mark.parametrize("gpu", GPUS, ids=_ids(GPUS))
def test_vllm_precisions_follow_kernel_minimum_capabilities(gpu: GpuSpec) -> None:
    """vLLM 0.33 minimum capabilities (compressed_tensors schemes): fp8 W8A8 8.9, int8 W8A8 7.5, W4A16 7.5;
    fp8 KV cache on >= 8.0. MI300X runs all of them through ROCm kernels (Aiter/Triton)."""
    cc = _capability(gpu)
    expected = {"bf16", "fp16", "int8", "int4"}
    if cc is None or cc >= 8.9:
        expected.add("fp8")
    assert set(gpu.precisions) == expected
    assert len(gpu.precisions) == len(set(gpu.precisions))
    assert set(gpu.kv_cache_dtypes) == ({"auto", "fp8"} if cc is None or cc >= 8.0 else {"auto"})


# Per-direction link bandwidth, GB/s, from link counts and lane rates.
PCIE4_X16 = 16e9 * 16 * 128 / 130 / 8 / 1e9  # 16 GT/s x 16 lanes, 128b/130b coding = 31.5 GB/s (PCI-SIG)
PCIE5_X16 = 2 * PCIE4_X16  # 32 GT/s = 63.0 GB/s
LINK_BANDWIDTH_GB_PER_S = {
    "H100-SXM-80GB": 18 * 25,  # NVLink4: 18 links x 25 GB/s per direction (H100 datasheet 900 GB/s total)
    "H200-141GB": 18 * 25,  # same NVLink4 fabric as H100 SXM
    "B200-180GB": 18 * 50,  # NVLink5: 18 links x 50 GB/s (1.8 TB/s total)
    "A100-SXM-80GB": 12 * 25,  # NVLink3: 12 links x 25 GB/s (600 GB/s total)
    "A100-SXM-40GB": 12 * 25,
    "H100-NVL-94GB": 600 / 2,  # NVLink bridge, 600 GB/s bidirectional per pair
    "MI300X-192GB": 7 * 128 / 2,  # 7 Infinity Fabric links x 128 GB/s bidirectional (896 GB/s aggregate)
    "H100-PCIE-80GB": PCIE5_X16,
    "L40S-48GB": PCIE4_X16,
    "L4-24GB": PCIE4_X16,
    "A10G-24GB": PCIE4_X16,
    "RTX-4090-24GB": PCIE4_X16,
    "RTX-A6000-48GB": PCIE4_X16,
}


@pytest.mark.parametrize("name,expected", sorted(LINK_BANDWIDTH_GB_PER_S.items()))
def test_interconnect_bandwidth_is_per_direction(name: str, expected: float) -> None:
    link = load_gpus().get(name).interconnect
    assert link.bandwidth_gb_per_s == pytest.approx(expected, rel=0.03)
    assert link.kind == ("pcie" if expected < 100 else "xgmi" if name.startswith("MI") else "nvlink")


# bf16 dense = SMs x 4 tensor cores x clock x FLOPs per tensor core per clock.
TENSOR_PEAK = {
    # name: (tensor-core clock GHz, dense bf16 FLOPs per tensor core per clock), source
    "H100-SXM-80GB": (1.830, 1024),  # Hopper TC: 512 FMA/clk; 1.83 GHz (glennklockwood H100 page)
    "A100-SXM-80GB": (1.410, 512),  # Ampere GA100 TC: 256 FMA/clk; 1.41 GHz boost (A100 whitepaper)
    "RTX-A6000-48GB": (1.800, 256),  # GA102 pro TC with FP32 accumulate: 128 FMA/clk; 1.80 GHz boost
    "RTX-4090-24GB": (2.520, 128),  # AD102 GeForce, FP32 accumulate: 64 FMA/clk; 2.52 GHz (Ada whitepaper)
}


@pytest.mark.parametrize("name,clock_and_rate", sorted(TENSOR_PEAK.items()))
def test_bf16_peak_matches_sm_count_times_clock(name: str, clock_and_rate: tuple[float, int]) -> None:
    clock_ghz, flops_per_tc_clock = clock_and_rate
    gpu = load_gpus().get(name)
    assert gpu.num_sms is not None
    expected_tflops = gpu.num_sms * 4 * clock_ghz * flops_per_tc_clock / 1000
    assert gpu.bf16_dense_tflops == pytest.approx(expected_tflops, rel=0.01)


@pytest.mark.parametrize("gpu", GPUS, ids=_ids(GPUS))
def test_tensor_parallel_node_and_latency_are_plausible(gpu: GpuSpec) -> None:
    assert gpu.gpus_per_node in (2, 4, 8)
    # Assumed small-message latencies: NVLink/xGMI a few us, PCIe about 10 us.
    assert gpu.interconnect.latency_us <= (10.0 if gpu.interconnect.kind == "pcie" else 5.0)
