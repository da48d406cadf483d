"""The one place the benchmark calls the curated layer: `delivery_lake.warehouse.build_curated`,
the entry point the CLI's `build` uses too (every model for the given dates, then the
warehouse refresh; `full=True` rebuilds everything and a new warehouse file).
"""

from __future__ import annotations

from typing import Any

ENTRY_POINT = "delivery_lake.warehouse.build_curated"


def refresh(settings: Any, dates: list[str] | None) -> str:
    """Build the curated layer (all of it when `dates` is None); returns the entry point used."""
    from delivery_lake.warehouse import build_curated

    if dates is None:
        build_curated(settings, full=True)
    else:
        build_curated(settings, dates=dates)
    return ENTRY_POINT
