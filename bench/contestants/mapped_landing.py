"""Contestant `mapped_landing` / `native_landing`: the same orders landed from our own feed, and
from a foreign export of the same rows through a source mapping (render + landing).

The foreign export is the native files with every column renamed (`ext_<name>`), mapped back by
a generated `sources/`-style mapping: the cost measured is the mapping path itself (reading the
foreign file, the expressions, writing the contract-shaped file with source lines) on top of the
landing both sides share. Dimensions land first, untimed, on both sides.

    python bench/contestants/mapped_landing.py --mode native|mapped --inbox DIR --work DIR --result FILE
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["native", "mapped"], required=True)
    p.add_argument("--inbox", required=True, help="dimensions, plus orders/ (native) or sources/benchsrc/ (mapped)")
    p.add_argument("--mapping", help="the mapping file (mapped mode)")
    p.add_argument("--work", required=True)
    p.add_argument("--result", required=True)
    a = p.parse_args()

    from delivery_lake.config import Settings
    from delivery_lake.contract import DIMENSIONS, TABLES
    from delivery_lake.inbox import list_files, scan_changes
    from delivery_lake.landing import Landing
    from delivery_lake.sources.mapping import load
    from delivery_lake.sources.render import render
    from delivery_lake.storage import Lake

    work = Path(a.work)
    settings = Settings.from_env(
        data_dir=work / "data", lake_url=str(work / "lake"), inbox_dir=Path(a.inbox), warehouse_path=work / "wh.duckdb"
    )
    lake = Lake.from_settings(settings)
    landing = Landing(lake, settings.inbox_dir, settings)
    # Timed: rendering the export (mapped side) and landing the orders; untimed: the dimensions.
    rendered_rows, render_s = 0, 0.0
    if a.mode == "mapped":
        t0 = time.perf_counter()
        for r in render(load(Path(a.mapping)), settings.inbox_dir, settings.duckdb_memory_limit):
            rendered_rows += r.rows_rendered
        render_s = time.perf_counter() - t0
    for t in DIMENSIONS:
        landing.land_dimension(t)
    t0 = time.perf_counter()
    changes = scan_changes(lake, settings.inbox_dir, None)
    dates = sorted(changes.facts.get("orders", {}))
    report = landing.land_fact(TABLES["orders"], {d: None for d in dates})
    seconds = render_s + time.perf_counter() - t0
    Path(a.result).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "render_s": render_s,
                "rows_rendered": rendered_rows,
                "landed": report.landed,
                "quarantined": report.quarantined,
                "files": len(list_files(settings.inbox_dir, "orders")),
                "dates": len(dates),
            }
        )
    )


if __name__ == "__main__":
    main()
