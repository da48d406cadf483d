"""How soon a day dropped into the production profile's inbox shows (issue 24's daemon keys).

Under `make up` the Dagster daemon's inbox sensor and automation lands a drop, builds its
marts, refreshes the warehouse and retrains the delay model, each in runs it launches. This
script drops the day after the newest one in the inbox (or, when that would be a future date,
the day before the oldest; generated, the same clients) and times, from the moment the files
appear:

- `drop_to_warehouse_s`: until the warehouse analysts read holds the new day
  (`agg_client_daily_kpis`, through the read-only reader);
- `drop_to_champion_s`: until the registry holds a model version trained after the drop
  (the delay model retrains on new validated data; whether the new version becomes the
  champion depends on its score, so the key is when the registry is up to date).

Without the profile up it prints why and writes a skipped result: there is no daemon to time.
`--into FILE` adds both keys to a results file `bench.run` wrote (`make bench`: latest.json),
in its format (value, target, met), or says there why they were skipped.

    python -m bench.drop [--result FILE] [--into FILE] [--timeout 600]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.settings import REPO

KEYS = ("drop_to_warehouse_s", "drop_to_champion_s")
NOTE = "one generated day of the registered clients dropped into the inbox under `make up` (daemon ticks included)"


def merge_into(path: Path, doc: dict) -> None:
    """Add the keys of `doc` (a result of this script) to the results file at `path`."""
    from bench.run import _key, machine
    from delivery_lake.storage import write_file_atomic

    results = json.loads(path.read_text()) if path.exists() else {}
    m = machine()
    for name in KEYS:
        extra = {"skipped": doc["skipped"]} if "skipped" in doc else {"new_day": doc.get("new_day")}
        results[name] = _key(name, doc.get(name), m, note=NOTE, **extra)
    write_file_atomic(path, (json.dumps(results, indent=2) + "\n").encode())


def _skip(result: Path | None, into: Path | None, why: str) -> int:
    print(f"drop_to_warehouse_s / drop_to_champion_s: skipped: {why}")
    if result:
        result.write_text(json.dumps({"skipped": why}))
    if into:
        merge_into(into, {"skipped": why})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.drop", description=__doc__)
    p.add_argument("--result", type=Path)
    p.add_argument("--into", type=Path, help="a results file of bench.run to add the keys to")
    p.add_argument("--timeout", type=float, default=600.0)
    a = p.parse_args(argv)

    from infra.stack import SERVICES, StackConfig, dagster_env, merged_env, recorded

    base = merged_env()
    cfg = StackConfig.from_env(base)
    down = [name for name in SERVICES if recorded(cfg, name) is None]
    if down:
        return _skip(a.result, a.into, f"the production profile is not up ({', '.join(down)} not running; `make up`)")
    os.environ.update(dagster_env(cfg, base))

    from delivery_lake.config import Settings
    from delivery_lake.generator import generate
    from delivery_lake.landing import Landing
    from delivery_lake.ml.registry import MODEL_NAME
    from delivery_lake.storage import Lake
    from delivery_lake.warehouse.reader import query

    settings = Settings.from_env()
    days = sorted(p.stem for p in (cfg.inbox_dir / "orders").glob("*.csv"))
    if not days:
        return _skip(a.result, a.into, f"the profile's inbox {cfg.inbox_dir} holds no orders yet: drop a first export")
    clients = len(Landing(Lake.from_settings(settings), cfg.inbox_dir, settings).registered_clients()) or 1
    # the day after the newest, unless that is in the future (the landing refuses future dates):
    # then the day before the oldest, so the script can be run again on the same stack
    after = date.fromisoformat(days[-1]) + timedelta(days=1)
    today = datetime.now(UTC).date()
    new_day = (after if after <= today else date.fromisoformat(days[0]) - timedelta(days=1)).isoformat()

    import duckdb
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    before = {v.version for v in client.search_model_versions(f"name='{MODEL_NAME}'")}

    with tempfile.TemporaryDirectory(dir=cfg.inbox_dir.parent) as tmp:
        generate(Path(tmp), date.fromisoformat(new_day), days=1, clients=clients, progress=False)
        feeds = ("orders", "deliveries", "customer_feedback")
        staged = [(Path(tmp) / t / f"{new_day}.csv", cfg.inbox_dir / t / f"{new_day}.csv") for t in feeds]
        dropped = time.monotonic()
        for src, dest in staged:
            shutil.move(src, dest)  # same file system: each file appears whole
    print(f"dropped {new_day} ({clients} clients) into {cfg.inbox_dir}; waiting (timeout {a.timeout:.0f} s)")
    warehouse_s = champion_s = None
    while time.monotonic() - dropped < a.timeout and (warehouse_s is None or champion_s is None):
        if warehouse_s is None and settings.warehouse_path.exists():
            try:
                _cols, rows = query(
                    settings.warehouse_path, f"SELECT count(*) FROM agg_client_daily_kpis WHERE date = '{new_day}'"
                )
                if rows and rows[0][0]:
                    warehouse_s = time.monotonic() - dropped
                    print(f"warehouse holds {new_day} after {warehouse_s:.1f} s")
            except (duckdb.Error, OSError):  # the file was being swapped as we opened it: look again
                pass
        if champion_s is None:
            versions = {v.version for v in client.search_model_versions(f"name='{MODEL_NAME}'")}
            if versions - before:
                champion_s = time.monotonic() - dropped
                print(f"model registry updated after {champion_s:.1f} s")
        time.sleep(1.0)
    doc = {
        "new_day": new_day,
        "drop_to_warehouse_s": None if warehouse_s is None else round(warehouse_s, 1),
        "drop_to_champion_s": None if champion_s is None else round(champion_s, 1),
        "timeout_s": a.timeout,
    }
    print(json.dumps(doc))
    if a.result:
        a.result.write_text(json.dumps(doc))
    if a.into:
        merge_into(a.into, doc)
    return 0 if warehouse_s is not None else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
