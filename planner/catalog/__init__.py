"""Catalog layer: YAML files under catalogs/ -> validated pydantic specs."""

DEFAULT_ENGINE = "vllm-0.33"
"""The engine release vlmplan plans for: names catalogs/engines/<it>.yaml and the calibration files
catalogs/calibration/<it>-<gpu>.yaml. Kept here, not in ``loader``, so that ``planner.plan`` can name it without
loading the catalog."""
