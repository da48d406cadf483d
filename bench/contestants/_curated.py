"""The one place the benchmark calls the curated layer (issue 3), if it exists yet.

The curated runner is being written alongside the benchmark, so its entry point is looked
up rather than imported: the first of ENTRY_POINTS that exists is called as
`fn(settings, dates=[...])` for an incremental refresh and `fn(settings, full=True)` for a
full rebuild. When none exists, callers measure landing only and mark their figure
`partial`. If the runner ends up with another signature, adapt `refresh()` here only.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

ENTRY_POINTS = [
    ("delivery_lake.warehouse", "build_curated"),
    ("delivery_lake.curated", "build"),
    ("delivery_lake.curated", "build_curated"),
    ("delivery_lake.sql_runner", "build"),
    ("delivery_lake.models", "build"),
]


def entry_point() -> tuple[str, Callable[..., Any]] | None:
    for module, name in ENTRY_POINTS:
        if importlib.util.find_spec(module) is None:
            continue
        fn = getattr(importlib.import_module(module), name, None)
        if callable(fn):
            return f"{module}.{name}", fn
    return None


def refresh(settings: Any, dates: list[str] | None) -> str | None:
    """Build the curated layer (all of it when `dates` is None); the entry point used, or None."""
    found = entry_point()
    if found is None:
        return None
    label, fn = found
    if dates is None:
        fn(settings, full=True)
    else:
        fn(settings, dates=dates)
    return label
