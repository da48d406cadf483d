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

    from bench.contestants._day import land_day, work_settings
    from delivery_lake.landing import Landing
    from delivery_lake.storage import Lake

    started = time.perf_counter()
    settings = work_settings(Path(a.work), Path(a.inbox), transform_engine=a.engine)
    out: dict = {}
    if a.mode == "new-day":
        landing = Landing(Lake.from_settings(settings), settings.inbox_dir, settings)
        for t, r in land_day(landing, a.day):
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
