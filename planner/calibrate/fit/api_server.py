"""The API server's occupancy per request, fitted from the CPU time of real vLLM API servers.

vLLM's API server is one Python process (``--api-server-count``, default 1): it tokenises the prompt, decodes and
preprocesses the images, hands the request to the engine and streams every output token back. Past some rate it
is busy all the time and caps the replica's throughput before the GPU does. The load models treat it as a
first-come-first-served queue with ``api_server_count`` servers, each request holding one for
``speed.api_server_ms``: per request, per prompt token, per output token, per image and per megapixel.

The fit, from the measurement files (``fit_api_server``):
- the text terms: non-negative least squares of the API-server process's CPU seconds in each text-only run with
  one API server (run20 ``text_*``, run22 ``api1text_*``; the runs in ``serving.HELD_OUT`` left out) on the run's
  duration (idle work), its requests, their prompt tokens and their output tokens;
- the image terms: the API server's wall time per image on the device's host CPU (``preproc.json``: base64, PIL
  decode, the HF fast processor, noise JPEG as ``vllm bench serve`` sends), a line over megapixels (its
  intercept, negative, is taken as 0). Wall, not CPU: the processor's threads make CPU time exceed the time the
  event loop is held.

What this does not capture (docs/validation/real_vllm.md): past saturation a real API server falls behind on
streaming and the throughput of a text run drops below what it served at a lower offered rate (run20: 26.5
req/s offered 32/s, 22.5 req/s offered 64/s), a collapse the first-come-first-served queue does not model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.calibrate.fit.serving import HELD_OUT
from planner.catalog.loader import catalog_root

MEASUREMENTS = catalog_root() / "calibration" / "measurements" / "h200-141gb"
RUN20 = MEASUREMENTS / "run20_real_vllm"
RUN21 = MEASUREMENTS / "run21_api_servers"

TEXT_RUNS = (("run20_real_vllm/text.json", "text_"), ("run20_real_vllm/vl2.json", "vl2_vltext_"),
             ("run21_api_servers/api1text.json", "api1text_"))
"""Text-only runs with one API server (file under MEASUREMENTS, label prefix); warm-ups left out."""


@dataclass(frozen=True)
class ApiServerFit:
    ms_per_request: float
    ms_per_input_token: float
    ms_per_output_token: float
    ms_per_image: float
    ms_per_megapixel: float
    idle_cores: float
    """The API server's CPU when idle (cores), fitted alongside."""
    runs: int
    cpu_mape_pct: float
    """Mean |error| of the fitted CPU seconds over the runs."""


def _image_wall_ms(preproc: Path) -> tuple[float, float]:
    """(intercept, slope per megapixel) of the API server's wall time per image: noise JPEG (what the bench
    sends), the HF fast processor with the process's default threads (how vLLM 0.26's API server runs it)."""
    rows = json.loads(preproc.read_text())["rows"]
    pts = [(r["megapixels"], r["total_ms"]) for r in rows if r.get("use_fast") and r.get("content") == "noise"
           and r.get("format") == "JPEG" and r.get("torch_threads", 1) > 1]
    mp, ms = np.array(pts).T
    slope, intercept = np.polyfit(mp, ms, 1)
    return float(intercept), float(slope)


def fit_api_server() -> ApiServerFit:
    from scipy.optimize import nnls

    rows, cpu = [], []
    for name, prefix in TEXT_RUNS:
        for run in json.loads((MEASUREMENTS / name).read_text())["runs"]:
            label = run["label"]
            if not label.startswith(prefix) or "warmup" in label or label in HELD_OUT:
                continue
            req = run["requests"]
            rows.append([run["summary"]["duration"], len(req["input_len"]), sum(req["input_len"]),
                         sum(req["output_len"])])
            cpu.append(run["server_cpu_s"]["api_server"])
    a, y = np.array(rows, dtype=float), np.array(cpu)
    x, _ = nnls(a, y)
    mape = float(np.mean(np.abs(a @ x - y) / y)) * 100
    intercept, slope = _image_wall_ms(RUN21 / "preproc.json")
    return ApiServerFit(ms_per_request=float(1e3 * x[1]), ms_per_input_token=float(1e3 * x[2]),
                        ms_per_output_token=float(1e3 * x[3]), ms_per_image=max(0.0, intercept),
                        ms_per_megapixel=slope, idle_cores=float(x[0]), runs=len(y), cpu_mape_pct=mape)


VL_RUNS = (("run20_real_vllm/vl1.json", "vl1_"), ("run20_real_vllm/vl2.json", "vl2_"),
           ("run21_api_servers/api2vl.json", "api2vl_"))
"""Runs of the VL server (one and two API servers) whose requests carry one image each; warm-ups left out."""


@dataclass(frozen=True)
class ApiServerCpuFit:
    cpu_ms_per_megapixel: float
    """API-server CPU (all threads) per input megapixel."""
    runs: int
    mape_pct: float
    """Mean |error| of the API servers' CPU seconds per run, predicted against measured."""
    peak_engine_core_cores: float
    """The most CPUs the EngineCore process used on average over any of these runs (TP = 1)."""


def _image_size(run: dict[str, object]) -> tuple[int, int] | None:
    """(width, height) of the run's one image per request (``dataset.image`` is '(w,h,count)'), None for text."""
    image = run["dataset"].get("image") if isinstance(run["dataset"], dict) else None  # type: ignore[union-attr]
    if not image:
        return None
    w, h, _ = (int(x) for x in str(image).strip("()").split(","))
    return w, h


def fit_api_server_cpu(text: ApiServerFit | None = None) -> ApiServerCpuFit:
    """The API servers' CPU seconds in each VL run with images (run20 vl1/vl2, run21 api2vl), less what the text
    terms of ``fit_api_server`` predict (idle CPU per API server over the run, per request, per output token), as a
    line through the origin over the run's input megapixels. Every such run is used, those of ``serving.HELD_OUT``
    too: the held-out set guards the latency fit, and this constant enters no latency."""
    text = text or fit_api_server()
    mp_sum, rest, base, measured = [], [], [], []
    engine_peak = 0.0
    for name, prefix in VL_RUNS:
        for run in json.loads((MEASUREMENTS / name).read_text())["runs"]:
            label = run["label"]
            size = _image_size(run)
            if not label.startswith(prefix) or "warmup" in label or size is None:
                continue
            servers = 2 if prefix == "api2vl_" else 1
            req = run["requests"]
            n = len(req["input_len"])
            duration = run["summary"]["duration"]
            known = (text.idle_cores * servers * duration + 1e-3 * text.ms_per_request * n
                     + 1e-3 * text.ms_per_output_token * sum(req["output_len"]))
            cpu = run["server_cpu_s"]["api_server"]
            mp_sum.append(n * size[0] * size[1] / 1e6)
            rest.append(cpu - known)
            base.append(known)
            measured.append(cpu)
            engine_peak = max(engine_peak, run["server_cpu_s"].get("VLLM::EngineCor", 0.0) / duration)
    x, y = np.array(mp_sum), np.array(rest)
    slope = float(x @ y / (x @ x))
    pred = np.array(base) + slope * x
    meas = np.array(measured)
    mape = float(np.mean(np.abs(pred - meas) / meas)) * 100
    return ApiServerCpuFit(cpu_ms_per_megapixel=1e3 * slope, runs=len(x), mape_pct=mape,
                           peak_engine_core_cores=engine_peak)
