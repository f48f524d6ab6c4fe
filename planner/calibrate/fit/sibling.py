"""Constants a GPU without its own run takes from a fitted sibling of the same die.

The H100 SXM and the H200 share the GH100 die (same SMs, clocks, L2 and NVLink 4; different HBM). A run made on
one of them (a 4-GPU all-reduce, a vit_shapes.py or quant_ops.py run) therefore tells the other's latencies, and
its bandwidth-independent efficiencies once converted to the same absolute bandwidth. ``fit --sibling NAME``.
"""

from __future__ import annotations

from planner.calibrate.fit.fitted import AtBound, Fitted
from planner.catalog.calibration_schema import Calibration
from planner.catalog.loader import load_calibration, load_gpus
from planner.catalog.schema import GpuSpec
from planner.core.errors import RequestError

SIBLING_TRANSFER = {
    "allreduce_hop_latency_us": "as is",
    "elementwise_l2_efficiency": "bandwidth",
    "l2_resident_bytes": "as is",
    "transposed_kernel_latency_us": "as is",
    "transposed_memory_efficiency": "bandwidth",
    "quant_latency_us": "as is",
    "quant_memory_efficiency": "bandwidth",
}
"""Constants a GPU without its own run may take from a sibling of the same die (H100 and H200: GH100, same SMs,
clocks, 50 MB L2 and NVLink 4, different HBM): latencies (also the all-reduce's growth per GPU) and the L2 size as
they are;
efficiencies of kernels not bound by HBM (L2-resident, uncoalesced, casting) converted so that the absolute
bandwidth stays the same (x sibling HBM / this GPU's HBM)."""


def sibling_calibration(name: str) -> Calibration:
    """The fitted calibration of catalog GPU ``name`` (an error if it has none)."""
    gpu = load_gpus().get(name)
    cal = load_calibration(gpu.name)
    if not cal.calibrated or cal.gpu != gpu.name:
        raise RequestError(f"--sibling {name}: {gpu.name} has no fitted calibration to transfer from")
    return cal


def transfer_from_sibling(fitted: dict[str, Fitted], datasets: dict[str, str], gpu: GpuSpec,
                          sibling: Calibration) -> None:
    """Add the ``SIBLING_TRANSFER`` constants that ``fitted`` lacks, from ``sibling`` (a fitted calibration)."""
    sib_gpu = load_gpus().get(sibling.gpu)
    for name, how in SIBLING_TRANSFER.items():
        c = sibling.constants.get(name)
        if name in fitted or c is None or c.fit is None:
            continue
        factor = sib_gpu.hbm_bandwidth_gb_per_s / gpu.hbm_bandwidth_gb_per_s if how == "bandwidth" else 1.0
        value = c.value * factor
        note = (f"transferred from {sibling.gpu} (same die; {c.value:g} there"
                + (f", x {sib_gpu.hbm_bandwidth_gb_per_s:g}/{gpu.hbm_bandwidth_gb_per_s:g} GB/s to keep the absolute "
                   "bandwidth" if how == "bandwidth" else "") + "), fitted there by: " + c.fit.method)
        bound = None
        if c.fit.at_bound is not None and c.fit.bound is not None:
            bound = AtBound(c.fit.at_bound, c.fit.bound, c.fit.unbounded_value).times(factor)
        fitted[name] = Fitted(value, note, c.fit.n_points, c.fit.mape_pct, bound)
        datasets[name] = c.fit.dataset

