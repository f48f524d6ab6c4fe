"""Catalog layer: YAML files under catalogs/ -> validated pydantic specs."""
