"""CPU cost of a VLM request's image before the GPU sees it (run where transformers is installed).

vLLM's API server decodes each image (base64 JPEG in the request) and runs the model's Hugging Face image
processor on the CPU before the engine schedules the request. This times, on one CPU thread each:

* ``decode``: base64 -> bytes -> PIL JPEG decode -> RGB (quality 90 JPEG of a random-noise-plus-gradient image);
* ``qwen2_vl_fast`` / ``qwen2_vl_slow``: transformers' Qwen2-VL image processor (torchvision "fast" and the
  PIL/numpy one) with the shipped max_pixels 12,845,056, from the decoded PIL image to pixel_values;
* ``siglip_fast`` / ``siglip_slow``: SigLIP's processor (resize to 384x384, normalise), a fixed-size tower.

Sizes: 480x360, 640x480, 1280x960, 1680x2240, 2560x1440, 3840x2160. Median of repeats, in ms.
Usage: ``python planner/calibrate/device/preprocess_bench.py --out preprocess.json``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

VERSION = "1.0.1"  # 1.0.1: moved to planner/calibrate/device/ (the path it records); timing unchanged
SIZES = [(480, 360), (640, 480), (1280, 960), (1680, 2240), (2560, 1440), (3840, 2160)]


def _jpeg_b64(w: int, h: int) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
    img = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def _decode(b64: str):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def _time(fn, reps: int = 7) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="preprocess.json")
    args = ap.parse_args(argv)
    import torch
    import transformers
    from transformers import Qwen2VLImageProcessor, SiglipImageProcessor

    torch.set_num_threads(1)
    procs = {"qwen2_vl_slow": Qwen2VLImageProcessor(max_pixels=12845056)}
    try:
        from transformers import Qwen2VLImageProcessorFast

        procs["qwen2_vl_fast"] = Qwen2VLImageProcessorFast(max_pixels=12845056)
    except Exception as e:  # noqa: BLE001
        print("no fast Qwen2-VL processor:", e)
    procs["siglip_slow"] = SiglipImageProcessor(size={"height": 384, "width": 384})
    try:
        from transformers import SiglipImageProcessorFast

        procs["siglip_fast"] = SiglipImageProcessorFast(size={"height": 384, "width": 384})
    except Exception as e:  # noqa: BLE001
        print("no fast SigLIP processor:", e)
    points = []
    for w, h in SIZES:
        b64 = _jpeg_b64(w, h)
        img = _decode(b64)
        row = {"width": w, "height": h, "megapixels": w * h / 1e6, "jpeg_bytes": len(b64) * 3 // 4,
               "decode_ms": _time(lambda b64=b64: _decode(b64))}
        for name, proc in procs.items():
            try:
                out = proc(images=[img], return_tensors="pt")
                row[f"{name}_ms"] = _time(lambda proc=proc, img=img: proc(images=[img], return_tensors="pt"))
                row[f"{name}_pixel_values"] = list(out["pixel_values"].shape)
            except Exception as e:  # noqa: BLE001
                row[f"{name}_error"] = f"{type(e).__name__}: {e}"[:200]
        points.append(row)
        print(json.dumps(row), flush=True)
    res = {"provenance": {"script": "planner/calibrate/device/preprocess_bench.py", "version": VERSION,
                          "utc_date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "python": platform.python_version(), "transformers": transformers.__version__,
                          "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "threads": 1, "command_line": " ".join(sys.argv)},
           "points": points}
    try:
        with open("/proc/cpuinfo") as f:
            res["provenance"]["cpu_model"] = next(line.split(":", 1)[1].strip() for line in f
                                                  if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
