"""A snapshot of every asset spec, check, sensor and schedule: an accidental change to the graph
(a lost dependency, a partition mapping, a check that no longer runs) fails here and shows up in
review as a diff of `tests/snapshots/definitions.json`.

After an intended change: `UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_definitions_snapshot.py`,
then review and commit the diff.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from assets.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _partitions(pd: Any) -> Any:
    if pd is None:
        return None
    if isinstance(pd, dg.MultiPartitionsDefinition):
        return {d.name: _partitions(d.partitions_def) for d in pd.partitions_defs}
    if isinstance(pd, dg.DynamicPartitionsDefinition):
        return f"dynamic:{pd.name}"
    if isinstance(pd, dg.TimeWindowPartitionsDefinition):
        return f"time_window:{pd.cron_schedule}:{pd.fmt}:end_offset={pd.end_offset}"
    return type(pd).__name__


def describe(d: dg.Definitions) -> dict[str, Any]:
    graph = d.resolve_asset_graph()
    assets: dict[str, Any] = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        deps = {}
        for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string()):
            mapping = graph.get_partition_mapping(key, parent)
            if isinstance(mapping, dg.TimeWindowPartitionMapping):
                deps[parent.to_user_string()] = f"TimeWindow({mapping.start_offset}, {mapping.end_offset})"
            else:
                deps[parent.to_user_string()] = type(mapping).__name__ if mapping is not None else None
        policy = node.freshness_policy
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": deps,
            "partitions": _partitions(node.partitions_def),
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
            "freshness": str(policy.fail_window.to_timedelta()) if policy is not None else None,
            "checks": sorted(c.name for c in node.check_keys),
            "columns": [c.name for c in schema.columns]
            if (schema := node.metadata.get("dagster/column_schema"))
            else [],
        }
    return {
        "assets": assets,
        "sensors": sorted(s.name for s in d.sensors or []),
        "schedules": {s.name: s.cron_schedule for s in d.schedules or []},
    }


def test_the_definitions_match_their_snapshot() -> None:
    got = json.dumps(describe(defs), indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(got)
    want = SNAPSHOT.read_text()
    diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "snapshot", "definitions"))
    assert got == want, (
        f"the Dagster definitions changed; if intended, run UPDATE_SNAPSHOTS=1 (see module doc):\n{diff}"
    )
