"""The one place the benchmark calls the curated layer: `delivery_lake.warehouse.build_curated`,
the entry point the CLI's `build` uses too (every model for the given dates, then the
warehouse refresh; `full=True` rebuilds everything and a new warehouse file).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ENTRY_POINT = "delivery_lake.warehouse.build_curated"


def entry_point() -> tuple[str, Callable[..., Any]]:
    from delivery_lake.warehouse import build_curated

    return ENTRY_POINT, build_curated


def refresh(settings: Any, dates: list[str] | None) -> str:
    """Build the curated layer (all of it when `dates` is None); returns the entry point used."""
    label, fn = entry_point()
    if dates is None:
        fn(settings, full=True)
    else:
        fn(settings, dates=dates)
    return label
