"""The quality gate at partition grain, as data: which partitions may flow downstream.

A blocking check that fails writes `passed: false` for its partition; a later pass (the
partition fixed and re-landed) overwrites it. Readers of raw data (the curated layer, the
training set) exclude blocked partitions, so one bad partition never holds back the good
ones, whatever the shape of the run that checked them.

    {LAKE_URL}/_meta/quality/{table}/date=YYYY-MM-DD/client={id}.json   partitioned tables
    {LAKE_URL}/_meta/quality/{table}/status.json                        unpartitioned tables
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from delivery_lake.storage import Lake


def status_path(lake: Lake, table: str, date: str | None = None, client: str | None = None) -> str:
    if date is None:
        return lake.meta_path("quality", table, "status.json")
    if client is None:
        return lake.meta_path("quality", table, f"date={date}.json")
    return lake.meta_path("quality", table, f"date={date}", f"client={client}.json")


def record(
    lake: Lake, table: str, passed: bool, details: dict[str, Any], date: str | None = None, client: str | None = None
) -> None:
    lake.write_json(
        status_path(lake, table, date, client),
        {
            "table": table,
            "date": date,
            "client": client,
            "passed": passed,
            "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **details,
        },
    )


def statuses(lake: Lake, table: str, dates: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The verdicts recorded for `table`: all of them, or those of `dates` (a build of a few days
    need not read the table's whole history of verdicts)."""
    if dates is None:
        patterns = [lake.meta_path("quality", table) + "/**/*.json"]
    else:
        patterns = [p for d in dates for p in (status_path(lake, table, d, "*"), status_path(lake, table, d))]
    return list(lake.read_jsons_matching(patterns).values())


def blocked_partitions(
    lake: Lake, table: str, dates: Iterable[str] | None = None
) -> set[tuple[str | None, str | None]]:
    """(date, client) pairs whose latest blocking check failed; (date, None) blocks a whole date.
    Only those of `dates` when given."""
    return {(s.get("date"), s.get("client")) for s in statuses(lake, table, dates) if not s.get("passed", True)}
