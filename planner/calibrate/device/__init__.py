"""Measurement scripts that run on a GPU machine (torch, CUDA; preprocess_bench.py needs transformers).

Each is a standalone script (``python planner/calibrate/device/<script>.py --out FILE.json``) that writes one
JSON with a ``provenance`` block, the inputs of ``planner.calibrate.fit``. They import only torch, the standard
library and each other (by file, so that they run without vlmplan installed), and are typed loosely on purpose
(excluded from mypy).

Until issue 14 they lived one folder up, as ``planner/calibrate/<script>.py``: the usage lines in their
docstrings still say so, and are left as they were because the shipped measurements record each script's sha256
(catalogs/calibration/measurements/README.md maps the old paths to these). Editing a script changes its sha256,
so a changed script gets a new version.
"""
