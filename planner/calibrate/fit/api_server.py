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
