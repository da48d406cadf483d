"""Helpers shared by several test modules (fixtures live in conftest.py). Test modules import
from here, never from each other or from conftest.py."""

from __future__ import annotations

import csv
import os
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from delivery_lake.config import Settings
from delivery_lake.contract import DIMENSIONS, FACTS, TABLES
from delivery_lake.generator import generate
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


def inbox_with_an_order_moved_back(inbox: Path, day: str, early: str) -> tuple[dict[str, str], str]:
    """Twelve clean days of one client (from 2026-01-01) where the order of a delivery dispatched
    on `day` was created on `early`, long before, and promised an hour after its delivery: a
    build of `day` must find that order outside its lookback to get the delivery right (on time).
    Returns the delivery's CSV record and the promise."""
    generate(inbox, start=date(2026, 1, 1), days=12, clients=1, orders_per_day=15, seed=3, dirty_rate=0, progress=False)

    def rows(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def write(path: Path, records: list[dict[str, str]]) -> None:
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(records[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(records)

    delivery = next(r for r in rows(inbox / "deliveries" / f"{day}.csv") if r["status"] == "delivered")
    origin = next(
        p
        for p in sorted((inbox / "orders").glob("*.csv"))
        if any(r["order_id"] == delivery["order_id"] for r in rows(p))
    )
    assert origin.stem >= "2026-01-10"  # generated close to dispatch: moving it is what makes the case
    order = next(r for r in rows(origin) if r["order_id"] == delivery["order_id"])
    write(origin, [r for r in rows(origin) if r["order_id"] != delivery["order_id"]])
    order["created_at"] = f"{early}T09:00:00Z"
    delivered_at = datetime.fromisoformat(delivery["delivered_at"].replace("Z", "+00:00"))
    promised = (delivered_at + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    order["promised_by"] = promised
    write(inbox / "orders" / f"{early}.csv", [*rows(inbox / "orders" / f"{early}.csv"), order])
    return delivery, promised


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
