"""The API server's CPU work on an image before the engine sees it (JPEG decode, Hugging Face image processor).

It is the host's CPU, not the GPU, so the fit of ``preprocess_bench.py``'s timings goes into the default
calibration and serves every GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import nnls

from planner.calibrate.fit.fitted import Fitted, mape_pct

FRONTEND_PROCESSORS = {"qwen2_vl_fast": None, "siglip_fast": 729}
"""The preprocess_bench.py processors fitted: Qwen2-VL's processes the image at (nearly) native resolution
(its pixel_values rows are 14x14 patches), SigLIP's resizes it to 384x384 (729 patches)."""


def fit_frontend(pp: dict[str, Any]) -> dict[str, Fitted]:
    """``frontend_ms_per_input_megapixel`` (JPEG decode + resize, per megapixel sent) and
    ``frontend_ms_per_processed_megapixel`` (normalise and patchify, per megapixel the vision tower sees): non-negative
    least squares on relative error over ``preprocess_bench.py``'s decode + fast-processor times, single thread."""
    rows, y = [], []
    for p in pp["points"]:
        for name, fixed_patches in FRONTEND_PROCESSORS.items():
            if f"{name}_ms" not in p:
                continue
            patches = fixed_patches or p[f"{name}_pixel_values"][0]
            rows.append([p["megapixels"], patches * 14 * 14 / 1e6])
            y.append(p["decode_ms"] + p[f"{name}_ms"])
    a, t = np.array(rows), np.array(y)
    coef, _ = nnls(a / t[:, None], np.ones(len(t)))
    err = mape_pct(a @ coef, t)
    cpu = pp.get("provenance", {}).get("cpu_model", "an unnamed CPU")
    how = (f"non-negative least squares (relative error) of decode + processor time on input and processed megapixels, "
           f"Qwen2-VL and SigLIP fast processors, one thread of {cpu}")
    return {"frontend_ms_per_input_megapixel": Fitted(float(coef[0]), how, len(t), err),
            "frontend_ms_per_processed_megapixel": Fitted(float(coef[1]), how, len(t), err)}

