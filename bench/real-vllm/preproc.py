"""CPU cost of the API server's image work, per image, by size and format (run on the device's host CPU).

What a vLLM 0.26 API server does to each image of a chat request before the engine sees it: base64-decode the
data URL, decode the image (PIL) and convert it to RGB, then run the model's HF image processor (resize to the
patch grid, rescale, normalise, patchify into `pixel_values`). This script times each step on one thread of the
process, for random-noise images (what `vllm bench serve --dataset-name random-mm` sends: JPEG, quality 75) and
for smoother images (a gradient with little noise, closer to a photo or a scanned page), as JPEG and PNG.

    python3 bench/real-vllm/preproc.py MODEL_DIR OUT.json

Output: one row per (size, content, format, processor): encoded bytes and the median milliseconds of each step
over several repetitions, with the host CPU and library versions.
"""

from __future__ import annotations

import base64
import io
import json
import platform
import statistics
import sys
import time

import numpy as np

SCRIPT_VERSION = "1.0.0"
SIZES = [(448, 448), (1280, 960), (1680, 2240), (2560, 1440), (3840, 2160)]
REPEATS = 5


def make_image(w: int, h: int, content: str, rng: np.random.Generator):
    from PIL import Image

    if content == "noise":
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    else:
        y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
        x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        arr = (0.5 * y + 0.5 * x + rng.normal(0, 4, size=(h, w, 3))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def encode(img, fmt: str) -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 75} if fmt == "JPEG" else {}))
    return base64.b64encode(buf.getvalue()).decode()


def timed(fn, repeats: int = REPEATS) -> tuple[float, object]:
    out = None
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def main() -> int:
    model_dir, out_path = sys.argv[1], sys.argv[2]
    import PIL
    import torch
    import transformers
    from PIL import Image
    from transformers import AutoImageProcessor

    rng = np.random.default_rng(0)
    rows = []
    default_threads = torch.get_num_threads()
    for threads in (1, default_threads):
        torch.set_num_threads(threads)
        for use_fast in (True, False):
            try:
                proc = AutoImageProcessor.from_pretrained(model_dir, use_fast=use_fast)
            except Exception as exc:  # noqa: BLE001 - record which processor could not load
                rows.append({"use_fast": use_fast, "error": f"{type(exc).__name__}: {exc}"})
                continue
            for w, h in SIZES:
                for content in ("noise", "smooth"):
                    img = make_image(w, h, content, rng)
                    for fmt in ("JPEG", "PNG"):
                        data = encode(img, fmt)
                        t_b64, raw = timed(lambda: base64.b64decode(data))
                        t_dec, rgb = timed(lambda: Image.open(io.BytesIO(raw)).convert("RGB"))
                        t_proc, feats = timed(lambda: proc(images=[rgb], return_tensors="pt"))
                        pv = feats["pixel_values"]
                        row = {
                            "width": w, "height": h, "megapixels": w * h / 1e6, "content": content, "format": fmt,
                            "processor": type(proc).__name__, "use_fast": use_fast,
                            "torch_threads": torch.get_num_threads(), "encoded_bytes": len(raw),
                            "b64_ms": t_b64, "decode_ms": t_dec, "processor_ms": t_proc,
                            "total_ms": t_b64 + t_dec + t_proc, "pixel_values_shape": list(pv.shape),
                            "grid_thw": feats["image_grid_thw"].tolist() if "image_grid_thw" in feats else None,
                        }
                        rows.append(row)
                        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()
                                          if k not in ("grid_thw",)}), flush=True)
    result = {
        "script": "bench/real-vllm/preproc.py", "script_version": SCRIPT_VERSION,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": platform.processor() or open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0],
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "pillow": PIL.__version__, "repeats": REPEATS, "rows": rows,
    }
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
