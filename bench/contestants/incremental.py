"""Contestant `incremental`: one new day into an existing lake, then the curated refresh.

`--mode new-day`: the lake already holds the first N days, curated layer and warehouse
built (the harness copies the lake of `full-curated`); the inbox now also holds day N+1. Land day N+1 of every fact \
table
(only the files that touch it; the inbox index of the other files is cached in the lake)
and refresh the curated tables for that date.
`--mode full-curated`: build the whole curated layer (and warehouse) over the lake, the
second half of a full rebuild; `--engine spark` builds the models on Spark in local mode.
`--mode daily-refresh`: build the curated tables of `--day` (comma-separated dates) and
refresh the warehouse, as daily runs do (untimed: the harness brings a landed lake to its
everyday state with it, see bench/run.py).

    python bench/contestants/incremental.py --mode new-day --inbox DIR --work DIR --day YYYY-MM-DD --result FILE
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["new-day", "full-curated", "daily-refresh"], required=True)
    p.add_argument("--inbox", required=True)
    p.add_argument("--work", required=True, help="folder holding lake/ and data/ of a previous landing")
    p.add_argument("--day")
    p.add_argument("--engine", default="duckdb", help="what builds the models (TRANSFORM_ENGINE): duckdb or spark")
    p.add_argument("--result", required=True)
    a = p.parse_args()

    import _curated

    from delivery_lake.config import Settings
    from delivery_lake.contract import FACTS
    from delivery_lake.landing import Landing
    from delivery_lake.storage import Lake

    started = time.perf_counter()
    work = Path(a.work)
    settings = Settings.from_env(
        data_dir=work / "data",
        lake_url=str(work / "lake"),
        inbox_dir=Path(a.inbox),
        warehouse_path=work / "warehouse" / "delivery.duckdb",
        transform_engine=a.engine,
    )
    out: dict = {}
    if a.mode == "new-day":
        landing = Landing(Lake.from_settings(settings), settings.inbox_dir, settings)
        # As `delivery-lake run` plans it: the parent table first (a delivery or a feedback
        # waits as pending until its order has landed), then its children side by side, as
        # Dagster runs those raw assets as parallel steps.
        parents = [t for t in FACTS if t.name == "orders"]
        children = [t for t in FACTS if t.name != "orders"]
        reports = [landing.land_fact(t, {a.day: None}) for t in parents]
        with ThreadPoolExecutor(max_workers=len(children)) as pool:
            reports += list(pool.map(lambda t: landing.land_fact(t, {a.day: None}), children))
        for t, r in zip(parents + children, reports, strict=True):
            out[t.name] = {
                "landed": r.landed,
                "quarantined": r.quarantined,
                "files": len(r.files),
                "seconds": r.seconds,
            }
        landed_s = time.perf_counter() - started
        out["curated"] = _curated.refresh(settings, [a.day])
    else:
        landed_s = 0.0
        out["curated"] = _curated.refresh(settings, a.day.split(",") if a.mode == "daily-refresh" else None)
    out["landing_seconds"] = landed_s
    out["warehouse"] = str(settings.warehouse_path) if settings.warehouse_path.exists() else None
    Path(a.result).write_text(json.dumps({"seconds": time.perf_counter() - started, **out}))


if __name__ == "__main__":
    main()
