"""Helpers shared by several test modules (fixtures live in conftest.py). Test modules import
from here, never from each other or from conftest.py."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from delivery_lake.config import Settings
from delivery_lake.contract import DIMENSIONS, FACTS, TABLES
from delivery_lake.inbox import list_files
from delivery_lake.landing import Landing
from delivery_lake.storage import Lake

# First day of the generated exports (the `dirty_export` fixture and the tests' own datasets).
START = date(2026, 1, 5)


def land_all(settings: Settings) -> tuple[Lake, Landing, dict]:
    """Land every dimension, then every fact for each date in the inbox; the reports by table."""
    lake = Lake.from_settings(settings)
    landing = Landing(lake, settings.inbox_dir, settings)
    reports = {}
    for t in DIMENSIONS:
        reports[t.name] = landing.land_dimension(t)
    dates = sorted({f.stem for f in list_files(settings.inbox_dir, "orders")})
    for t in FACTS:
        reports[t.name] = landing.land_fact(t, {d: None for d in dates})
    return lake, landing, reports


def read_table(lake: Lake, zone: str, table: str) -> pa.Table:
    """Every partition of `table` in `zone`, read through DuckDB (hive partition columns included)."""
    con = lake.duckdb()
    try:
        return con.sql(
            f"SELECT * FROM read_parquet('{lake.glob_uri(zone, table, TABLES[table].is_fact)}', hive_partitioning=true)"
        ).to_arrow_table()
    finally:
        con.close()


# The browser tests drive Debian's Chromium through Playwright (it cannot download browsers here).
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"


def require_chromium() -> None:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the browser tests drive Debian's chromium (Playwright cannot "
            "download browsers here). Install it with: apt-get update && apt-get install -y chromium",
            pytrace=False,
        )
