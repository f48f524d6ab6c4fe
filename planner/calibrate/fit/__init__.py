"""Fit the speed model's constants to a GPU's microbenchmarks (numpy/scipy only).

Input: a JSON written by ``planner/calibrate/device/microbench.py`` (sections
``launch``, ``hbm``, ``gemm``, ``attn_prefill``, ``attn_decode``,
``elementwise``) and optionally one with an ``allreduce`` section (several
GPUs). Output: a ``Calibration`` (``catalogs/calibration/vllm-0.33-<gpu>.yaml``)
whose fitted constants each carry provenance: method, dataset file, number of
points, MAPE of the fitted model on those points, date.

The fit evaluates the planner's own op formulas (``planner.perf.roofline.Roofline``),
so each constant means exactly what the model does with it. Few parameters,
each physical; least squares on log(time) (relative errors):

* ``graph_launch_gap_us``, ``eager_launch_us``: read directly from ``launch``
  (GPU time per kernel inside a 1000-kernel CUDA graph; host time to launch
  one kernel while the GPU is busy).
* ``kernel_latency_us`` + ``elementwise_memory_efficiency``: device-to-device
  copies (``hbm``, buffers up to 256 MiB: larger copies run slower on these
  cards for a reason not established, see the measurements README) as
  ``latency + bytes / (bandwidth x eff)``.
* ``gemm_compute_efficiency``, ``gemm_memory_efficiency``, ``gemm_tile_m/n``:
  bf16 GEMMs over M = 1..16384 on decoder/ViT shapes, roofline with wave
  quantisation; the tile is picked from a few CUTLASS/cuBLAS tile shapes by
  the same criterion (a discrete choice, not a free parameter).
* ``fp8_gemm_compute_efficiency`` (``fp8_e4m3_fastacc``: fast accumulation,
  as vLLM's CUTLASS W8A8 kernel and the validation script run),
  ``int8_gemm_compute_efficiency`` (``torch._int_mm``; M < 32 is padded to 32
  by the kernel and fitted at the padded M): only the compute efficiency, the
  memory side is shared with bf16.
* ``int4_gemm_compute_efficiency``: NOT fitted. The device had no Marlin/
  Machete kernel; torch's tinygemm int4 kernel is a different (much slower at
  M > 8) implementation, so the default is kept.
* ``attention_prefill_compute_efficiency``, ``attention_prefill_overhead_tokens``,
  ``attention_softmax_head_dims``: jointly, over SDPA with the default backend
  (cuDNN on H100/H200): causal GQA and non-causal ViT shapes, batched short
  sequences and the vision towers' own shapes when those files are given.
* ``attention_decode_memory_efficiency``, ``attention_decode_half_bytes``:
  the fastest form/backend per decode shape (what the validation script and
  vLLM's FlashAttention decode pick); the model
  ``latency + (bytes + half) / (bandwidth x eff)`` is linear in bytes.
* ``allreduce_latency_us``, ``allreduce_bus_efficiency``: NCCL all-reduce
  inside a CUDA graph (``graph_time_us``, how vLLM replays decode), ring model
  ``latency + 2(n-1)/n x bytes / (link x eff)``.

Everything else (``p2p_latency_us``, engine overheads, int4) is copied from
the base (default) calibration with its note.

A fitted constant that ends on an edge of its least-squares box (the data
pulled it past a bound: H200 ``quant_memory_efficiency`` at 0.1, the prefill
attention efficiency at 1) carries ``at_bound``, ``bound`` and
``unbounded_value`` (the same fit without that bound) in its fit record;
``vlmplan estimate --explain`` prints them. tests/unit/test_calibration_refit.py
re-runs each shipped file's ``# Fitted by:`` command and compares.

Modules, by what they fit: ``kernels`` (launch gaps, elementwise kinds, fp8 quantisation), ``gemm``,
``attention``, ``allreduce``, ``frontend`` (image preprocessing on the host CPU), ``engine_overhead`` (from
``vllm bench serve`` results), ``serving`` and ``api_server`` (from real vLLM serving runs); ``measurements``
drives one GPU's fit, ``sibling`` transfers constants between GPUs of one die, ``calibration_file`` writes the
result. This package re-exports the names the command line and the tests use.

Usage::

    python -m planner.calibrate.fit MICROBENCH.json [--allreduce AR.json] [--gpu NAME] --out FILE.yaml
"""


from planner.calibrate.fit.calibration_file import NOT_FITTED, build_calibration, calibration_yaml
from planner.calibrate.fit.engine_overhead import (
    BenchRun,
    EngineFit,
    calibration_with_engine_fit,
    fit_engine_overhead,
    read_vllm_bench,
)
from planner.calibrate.fit.fitted import Fitted, calibration_with, mape_pct
from planner.calibrate.fit.frontend import fit_frontend
from planner.calibrate.fit.kernels import EAGER_ELEMENTWISE
from planner.calibrate.fit.measurements import fit_all, fit_files, gpu_for
from planner.calibrate.fit.sibling import SIBLING_TRANSFER, sibling_calibration, transfer_from_sibling

__all__ = ["EAGER_ELEMENTWISE", "NOT_FITTED", "SIBLING_TRANSFER", "BenchRun", "EngineFit", "Fitted",
           "build_calibration", "calibration_with", "calibration_with_engine_fit", "calibration_yaml", "fit_all",
           "fit_engine_overhead", "fit_files", "fit_frontend", "gpu_for", "mape_pct", "read_vllm_bench",
           "sibling_calibration", "transfer_from_sibling"]
