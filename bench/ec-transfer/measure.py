#!/usr/bin/env python3
"""Time vLLM's ECExampleConnector path for one request's encoder output on a GPU node (vLLM 0.26/0.33:
vllm/distributed/ec_transfer/ec_connector/example_connector.py): the encoder instance saves the image embeddings
with ``safetensors.torch.save_file`` to ``<shared_storage_path>/<mm_hash>/encoder_cache.safetensors`` and the
prefill instance loads them with ``safetensors.torch.load_file(..., device=cuda)``.

For embeddings of N visual tokens x hidden size (bf16) it times save (GPU -> file) and load (file -> GPU) on
/dev/shm (tmpfs, what a same-node deployment can share) and on the node's disk (/tmp), median of several repeats,
and writes one JSON to $OUT/ec_transfer.json.

Usage (device): OUT=$OUT python3 bench/ec-transfer/measure.py
"""
import json
import os
import shutil
import statistics
import subprocess
import time

import torch
from safetensors.torch import load_file, save_file

SHAPES = [(258, 3584), (1566, 3584), (4802, 3584), (4096, 5120), (1024, 1152)]
"""(visual tokens, hidden): Qwen2.5-VL-7B's 448x448, 1280x960 and 1680x2240 images (hidden 3584), a 5120-wide
32B-class model, a small one."""
REPEATS = 7


def timed(fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    out = os.environ.get("OUT", "/tmp/out")
    os.makedirs(out, exist_ok=True)
    rows = []
    for root in ("/dev/shm/ec_bench", "/tmp/ec_bench"):
        os.makedirs(root, exist_ok=True)
        for tokens, hidden in SHAPES:
            x = torch.randn(tokens, hidden, dtype=torch.bfloat16, device="cuda")
            path = os.path.join(root, f"h{tokens}_{hidden}", "encoder_cache.safetensors")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_ms, load_ms = [], []
            for i in range(REPEATS + 1):
                s = timed(lambda: save_file({"ec_cache": x}, path))
                if i == 0:
                    continue  # first write allocates the file
                os.system("sync") if root.startswith("/tmp") else None
                ld = timed(lambda: load_file(path, device="cuda")["ec_cache"])
                save_ms.append(s)
                load_ms.append(ld)
            mb = tokens * hidden * 2 / 1e6
            rows.append({"storage": root, "tokens": tokens, "hidden": hidden, "megabytes": round(mb, 3),
                         "save_ms_median": round(statistics.median(save_ms), 3),
                         "load_ms_median": round(statistics.median(load_ms), 3),
                         "save_ms": [round(v, 3) for v in save_ms], "load_ms": [round(v, 3) for v in load_ms]})
            print(rows[-1]["storage"], tokens, hidden, f"{mb:.1f} MB", "save", rows[-1]["save_ms_median"],
                  "load", rows[-1]["load_ms_median"], flush=True)
        shutil.rmtree(root, ignore_errors=True)
    prov = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
            "safetensors": __import__("safetensors").__version__,
            "df": subprocess.run(["df", "-h", "/tmp", "/dev/shm"], capture_output=True, text=True).stdout,
            "cpu": subprocess.run(["bash", "-c", "lscpu | grep 'Model name'"], capture_output=True, text=True).stdout,
            "note": "the load is read from the page cache when the file was just written (a same-node deployment "
                    "reads what its encoder wrote moments before)"}
    with open(os.path.join(out, "ec_transfer.json"), "w") as fh:
        json.dump({"provenance": prov, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
