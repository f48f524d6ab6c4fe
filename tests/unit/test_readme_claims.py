"""Claims in the README that are data elsewhere: they must say what the data says."""

from __future__ import annotations

import re
from pathlib import Path

from planner.catalog.loader import load_gpus

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_price_table_is_the_catalogs() -> None:
    rows = re.findall(r"^  \| ([A-Z0-9][\w-]+) \| ([0-9.]+) \| ([\w-]+) \| ([0-9-]+) \|", README.read_text(), re.M)
    table = {name: (float(price), provider, as_of) for name, price, provider, as_of in rows}
    catalog = {g.name: (g.price.price_usd_per_gpu_hour, g.price.provider, g.price.as_of) for g in load_gpus()}
    assert table == catalog
