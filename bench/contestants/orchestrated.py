"""Contestant `orchestrated`: what `delivery-lake run` costs through the Dagster definitions.

`--mode prepare` (untimed set-up): a lake built by the library (landed, curated, warehouse)
becomes one that `delivery-lake run --new-only` continues from: the run cursor records every
file already in the inbox, and the Dagster instance (under WORK/data/dagster_home) knows the
lake's clients as partitions.
`--mode new-day`: `delivery-lake run --new-only` in this process, with the new day's files in
the inbox: landing, checks, curated layer, warehouse, features, model and scores.
`--mode backfill`: `delivery-lake run` over a whole inbox into an empty lake.

The result holds the runs launched and a breakdown of where the seconds went, from the
process clock and the runs' own event logs (steps by kind; the rest of each run is Dagster's
own work: planning, event writes; the rest of the process is start-up, imports, inbox scan).

    python bench/contestants/orchestrated.py --mode new-day --inbox DIR --work DIR --result FILE
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

STARTED = time.perf_counter()


def _kind(step: str) -> str:
    if step.endswith("_gx_suite"):
        return "checks_s"
    if step.startswith("raw__"):
        return "landing_s"
    if step == "curated__warehouse":
        return "warehouse_s"
    if step.startswith("curated__"):
        return "curated_s"
    return "ml_s"


def breakdown(instance: object, run_ids: list[str]) -> dict[str, float]:
    """Seconds per kind of step over the runs, and each run's remainder as `dagster_s`."""
    out: dict[str, float] = defaultdict(float)
    events = 0
    for run_id in run_ids:
        logs = instance.all_logs(run_id)  # type: ignore[attr-defined]
        events += len(logs)
        starts: dict[str, float] = {}
        steps = 0.0
        for e in logs:
            ev = e.dagster_event
            if ev is None:
                continue
            if ev.event_type_value == "STEP_START":
                starts[e.step_key] = e.timestamp
            elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and e.step_key in starts:
                took = e.timestamp - starts[e.step_key]
                out[_kind(e.step_key)] += took
                steps += took
        out["runs_s"] += logs[-1].timestamp - logs[0].timestamp if logs else 0.0
        out["dagster_s"] += (logs[-1].timestamp - logs[0].timestamp - steps) if logs else 0.0
    result = {k: round(v, 3) for k, v in out.items()}
    result["event_log_entries"] = events
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["prepare", "new-day", "backfill"], required=True)
    p.add_argument("--inbox", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--lake-url", help="default WORK/lake; s3://bucket/prefix with AWS_* in the environment")
    a = p.parse_args()
    work = Path(a.work)
    os.environ["DAGSTER_HOME"] = str(work / "data" / "dagster_home")

    from bench.contestants._day import work_settings

    settings = work_settings(work, Path(a.inbox), **({"lake_url": a.lake_url} if a.lake_url else {}))
    if a.mode == "prepare":
        from delivery_lake.inbox import scan_changes
        from delivery_lake.landing import Landing
        from delivery_lake.storage import Lake

        lake = Lake.from_settings(settings)
        changes = scan_changes(lake, settings.inbox_dir, None)
        lake.write_json(lake.meta_path("cli_cursor.json"), changes.cursor)
        from assets.partitions import CLIENT_PARTITIONS
        from assets.run import dagster_instance

        instance = dagster_instance(settings)
        clients = Landing(lake, settings.inbox_dir, settings).registered_clients()
        instance.add_dynamic_partitions(CLIENT_PARTITIONS.name or "client", clients)
        Path(a.result).write_text(json.dumps({"seconds": 0.0, "files": len(changes.cursor), "clients": len(clients)}))
        return

    from assets.run import dagster_instance, run_inbox
    from bench.checks import warehouse_rows

    imported = time.perf_counter() - STARTED
    began = time.perf_counter()
    outcome = run_inbox(settings, full=a.mode == "backfill")
    seconds = time.perf_counter() - began
    measuring = time.perf_counter()
    if not outcome.success:
        raise SystemExit(f"run failed: {outcome.failure}")
    parts = breakdown(dagster_instance(settings), outcome.run_ids)
    parts["imports_s"] = round(imported, 3)
    parts["outside_runs_s"] = round(seconds - parts.get("runs_s", 0.0), 3)
    rows = warehouse_rows(settings.warehouse_path)
    Path(a.result).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "runs": len(outcome.run_ids),
                "lines": outcome.lines,
                "breakdown": parts,
                "warehouse_rows": rows,
                # the reading above (the runs' event logs, the warehouse): not the contestant's work
                "measuring_s": time.perf_counter() - measuring,
            }
        )
    )


if __name__ == "__main__":
    main()
