"""Contestant `library_day`: the work `delivery-lake run --new-only` does for a new day, through the
library alone (no Dagster): the denominator of `orchestrated_day_over_library_day`.

The same steps, on the same lake state, as the Dagster assets and checks run them:
1. land the day of every fact table (orders first, then its children side by side);
2. the GX gate on every partition landed (the raw suites), and stale child verdicts again;
3. the curated dates those partitions feed, and the warehouse refresh;
4. the GX gate on the mart partitions built (the mart suites);
5. the feature dates that read the new curated date (it and the history window after it);
6. retrain the delay model when the plan says there is new validated data (MLflow);
7. risk scores with the champion, and the warehouse refresh that loads them.

`incremental.py --mode new-day` is steps 1 and 3 only (what `incremental_over_full` times).

    python bench/contestants/library_day.py --inbox DIR --work DIR --day YYYY-MM-DD --result FILE
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

STARTED = time.perf_counter()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--inbox", required=True)
    p.add_argument("--work", required=True, help="folder holding lake/, data/ and warehouse/ of a previous day")
    p.add_argument("--day", required=True)
    p.add_argument("--result", required=True)
    a = p.parse_args()

    from bench.checks import warehouse_rows
    from bench.contestants._day import land_day, work_settings
    from delivery_lake.contract import FACTS
    from delivery_lake.landing import Landing
    from delivery_lake.ml import features, registry, scoring, training
    from delivery_lake.quality import Quality, suite_names
    from delivery_lake.storage import Lake
    from delivery_lake.transform import Project
    from delivery_lake.warehouse import Warehouse, build_curated

    settings = work_settings(Path(a.work), Path(a.inbox))
    lake = Lake.from_settings(settings)
    seconds: dict[str, float] = {}

    def step(name: str, began: float) -> float:
        now = time.perf_counter()
        seconds[name] = round(now - began, 3)
        return now

    t = time.perf_counter()
    landing = Landing(lake, settings.inbox_dir, settings)
    land_day(landing, a.day)
    t = step("landing_s", t)

    quality = Quality(lake, settings)
    clients = landing.registered_clients()
    checked = {}
    for f in FACTS:
        landed = quality.landed_partitions(f.name, [(a.day, c) for c in clients])
        if landed:
            checked[f.name] = len(quality.validate_and_record(f.name, sorted(landed)))
    quality.revalidate_stale([f.name for f in FACTS])
    t = step("checks_s", t)

    project = Project.load()
    build_curated(settings, dates=[a.day])
    t = step("curated_s", t)

    partitioned = {m.name for m in project.materialized() if m.is_partitioned}
    marts = [s for s in suite_names() if s in partitioned and lake.exists(lake.data_file("curated", s, a.day))]
    for suite in marts:
        quality.validate_and_record(suite, [(a.day, None)], mart=True)
    t = step("mart_checks_s", t)

    rows = features.build_features(lake, settings, features.dates_reading(lake, [a.day]))
    plan = registry.plan_training(lake, settings)
    trained = training.train(lake, settings, plan).version if plan.should_train else None
    scored = scoring.score(lake, settings)
    Warehouse(lake, project, settings.warehouse_path).refresh()
    step("ml_s", t)

    measuring = time.perf_counter()
    in_warehouse = warehouse_rows(settings.warehouse_path)
    Path(a.result).write_text(
        json.dumps(
            {
                "seconds": measuring - STARTED,
                "breakdown": seconds,
                "checked_partitions": checked,
                "mart_suites": marts,
                "feature_rows": rows,
                "trained_version": trained,
                "scored_rows": scored.rows,
                "warehouse_rows": in_warehouse,
                "measuring_s": time.perf_counter() - measuring,  # the harness's reading, not the work
            }
        )
    )


if __name__ == "__main__":
    main()
