"""What the day contestants share: a work folder's settings, and a new day landed as
`delivery-lake run` plans it.

Imported inside the contestants' `main` (after their clocks start), like the library they call.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def work_settings(work: Path, inbox: Path, **overrides: Any) -> Any:
    """Settings for a work folder laid out as the harness copies it: `data/`, `lake/` (unless
    `lake_url` says otherwise) and `warehouse/delivery.duckdb`."""
    from delivery_lake.config import Settings

    values: dict[str, Any] = {
        "data_dir": work / "data",
        "lake_url": str(work / "lake"),
        "inbox_dir": inbox,
        "warehouse_path": work / "warehouse" / "delivery.duckdb",
    }
    return Settings.from_env(**{**values, **overrides})


def land_day(landing: Any, day: str) -> list[tuple[Any, Any]]:
    """(table, report) for each fact table's `day`: the parent table first (a delivery or a
    feedback waits as pending until its order has landed), then its children side by side, as
    Dagster runs those raw assets as parallel steps."""
    from delivery_lake.contract import FACTS

    parents = [t for t in FACTS if t.name == "orders"]
    children = [t for t in FACTS if t.name != "orders"]
    reports = [landing.land_fact(t, {day: None}) for t in parents]
    with ThreadPoolExecutor(max_workers=len(children)) as pool:
        reports += list(pool.map(lambda t: landing.land_fact(t, {day: None}), children))
    return list(zip(parents + children, reports, strict=True))
