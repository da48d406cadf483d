"""Contestant `ours`: the project's landing, through the library, into a fresh local lake.

Exactly what a full backfill does (assets/raw.py runs one `land_fact` over the whole
date range, `BackfillPolicy.single_run`): every dimension, then every fact table for all
dates found in the inbox.

    python bench/contestants/ours.py --inbox DIR --work DIR --result FILE
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--inbox", required=True)
    p.add_argument("--work", required=True, help="fresh folder: lake/ and data/ are created inside")
    p.add_argument("--result", required=True)
    a = p.parse_args()

    from delivery_lake.config import Settings
    from delivery_lake.contract import DIMENSIONS, FACTS
    from delivery_lake.inbox import list_files
    from delivery_lake.landing import Landing
    from delivery_lake.storage import Lake

    started = time.perf_counter()
    work = Path(a.work)
    settings = Settings.from_env(data_dir=work / "data", lake_url=str(work / "lake"), inbox_dir=Path(a.inbox))
    lake = Lake.from_settings(settings)
    landing = Landing(lake, settings.inbox_dir, settings)
    out: dict[str, dict] = {}
    for t in DIMENSIONS:
        r = landing.land_dimension(t)
        out[t.name] = {"landed": r.landed, "quarantined": r.quarantined, "seconds": r.seconds}
    dates = sorted({f.stem for f in list_files(settings.inbox_dir, "orders")})
    for t in FACTS:
        r = landing.land_fact(t, {d: None for d in dates})
        out[t.name] = {
            "landed": r.landed,
            "quarantined": r.quarantined,
            "seconds": r.seconds,
            "partitions": len(r.partitions),
        }
    Path(a.result).write_text(json.dumps({"seconds": time.perf_counter() - started, "tables": out}))


if __name__ == "__main__":
    main()
