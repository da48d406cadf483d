"""The one publisher of built partitions (the curated runner's models, the delay-model scores).

The contract a partition's file and build manifest keep, whoever computed the rows:

- a total order, so the same rows give the same file byte for byte: the grain's key columns,
  then a hash of the whole row for rows that share it (no key: every column);
- every column written OPTIONAL: DuckDB writes a column REQUIRED when the statistics of what it
  copies rule out NULL, and those depend on how the rows were computed (a temp table of many
  dates, one date's query plan, a staged file), so the same rows would otherwise give different
  files and the partitions of one table different Parquet schemas;
- zstd Parquet staged locally, its sha256 taken, then one atomic publish (`Lake.publish_file`);
- the build manifest (`Lake.build_manifest`) written after the data file, with the fields the
  warehouse and the checks read: model, date, rows, bytes, sha256, build_id, built_at,
  excluded_partitions, served_last_good, parents_found, held_cells, columns, inputs.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from delivery_lake.config import Settings
from delivery_lake.sql import ident, literal
from delivery_lake.storage import Lake, staging_dir

# Manifest fields a producer other than the curated runner has no value for.
MANIFEST_DEFAULTS: dict[str, Any] = {
    "excluded_partitions": {},
    "served_last_good": {},
    "parents_found": {},
    "held_cells": [],
    "inputs": None,
    # what computed the rows: "duckdb" or "spark" (TRANSFORM_ENGINE); None where no engine ran
    "engine": None,
}


# Dates of at most this many rows are written together (publish_dates): one row group each,
# under the 122,880 rows of DuckDB's row groups, so the file cannot be cut differently.
ONE_ROW_GROUP = 100_000


class PublishError(ValueError):
    """The rows to publish do not have the declared columns."""


def publish_partition(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    zone: str,
    name: str,
    date: str | None,
    columns: Sequence[tuple[str, str]],
    order_by: Sequence[str],
    settings: Settings | None = None,
    *,
    relation: str = "__out",
    where: str = "",
    stage: Path | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish the rows of `relation` (a table or view readable on `con`, filtered by `where`,
    e.g. `WHERE date = DATE '2026-01-07'`) as `{zone}/{name}/[date=D/]data.parquet` and write its
    build manifest; returns the manifest.

    `columns`: the declared (name, DuckDB type) list; the rows must have exactly these (else
    `PublishError`) and the manifest records them. `order_by`: the grain's key columns (empty:
    sort by every column). `stage`: a local folder for the staged file (default: a private one
    under `settings.data_dir`). `manifest`: values of the runner's fields (`MANIFEST_DEFAULTS`).
    """
    want = _checked_columns(con, zone, name, columns, relation, manifest)
    with ExitStack() as stack:
        folder = stage if stage is not None else stack.enter_context(staging_dir(settings or lake.settings))
        return _copy_and_publish(lake, con, zone, name, date, want, order_by, relation, where, folder, manifest)


def _copy_and_publish(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    zone: str,
    name: str,
    date: str | None,
    columns: list[tuple[str, str]],
    order_by: Sequence[str],
    relation: str,
    where: str,
    folder: Path,
    manifest: Mapping[str, Any] | None,
) -> dict[str, Any]:
    local = folder / f"{name}_{date or 'all'}.parquet"
    # COPY returns the rows it wrote: no second read of the file to count them.
    copied = con.execute(
        f"COPY (SELECT {_optional(columns)} FROM {relation} AS __out {where} ORDER BY {_order(order_by)}) "
        f"TO {literal(str(local))} (FORMAT parquet, COMPRESSION zstd)"
    ).fetchone()
    assert copied is not None
    return _publish_staged(lake, zone, name, date, local, int(copied[0]), columns, manifest)


def publish_dates(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    zone: str,
    name: str,
    partition_by: str,
    dates: Sequence[str],
    columns: Sequence[tuple[str, str]],
    order_by: Sequence[str],
    stage: Path,
    manifest: Callable[[str], Mapping[str, Any]],
    *,
    relation: str = "__out",
) -> dict[str, dict[str, Any]]:
    """Publish each date of `dates` of `relation` (its DATE column `partition_by`) as
    `publish_partition` would, file for file and byte for byte; returns each date's manifest.

    A build of hundreds of dates paid a COPY statement per date (a sparse history's backfill:
    3,000 of them, 24 s). Here the dates of up to `ONE_ROW_GROUP` rows are written by one COPY
    partitioned by date, on one thread so that each date's rows reach its file in order, and a
    file is kept only if it has the one row group and the rows `publish_partition` would have
    written; a bigger date (or an empty one, or a file that does not match) gets its own COPY.
    """
    want = _checked_columns(con, zone, name, columns, relation, manifest(dates[0]) if dates else None)
    part = ident(partition_by)
    wanted = ", ".join(f"DATE {literal(d)}" for d in dates) or "NULL"
    counts = {
        str(d): int(n)
        for d, n in con.execute(
            f"SELECT {part}, count(*) FROM {relation} WHERE {part} IN ({wanted}) GROUP BY ALL"
        ).fetchall()
    }
    small = [d for d in dates if 0 < counts.get(d, 0) <= ONE_ROW_GROUP]
    staged = stage_dates(
        con,
        f"SELECT {_optional(want)} FROM {relation} AS __out WHERE {part} IN "
        f"({', '.join(f'DATE {literal(d)}' for d in small)}) ORDER BY {part}, {_order(order_by)}",
        partition_by,
        {d: counts[d] for d in small},
        [n for n, _ in want],
        stage / f"{name}_dates",
    )
    docs: dict[str, dict[str, Any]] = {}
    for d in dates:
        if d in staged:
            docs[d] = _publish_staged(lake, zone, name, d, staged[d], counts[d], want, manifest(d))
        else:
            where = f"WHERE {part} = DATE {literal(d)}"
            docs[d] = _copy_and_publish(lake, con, zone, name, d, want, order_by, relation, where, stage, manifest(d))
    return docs


def stage_dates(
    con: duckdb.DuckDBPyConnection,
    query: str,
    partition_by: str,
    counts: Mapping[str, int],
    columns: Sequence[str],
    folder: Path,
) -> dict[str, Path]:
    """Stage the dates of `query` (ordered by `partition_by`, then the grain) with one COPY
    partitioned by date; returns the staged file of each date of `counts` that came out as the
    COPY of that date alone would have written it: one file of one row group holding `counts[d]`
    rows (at most ONE_ROW_GROUP), with `columns` in order. The caller writes the others itself.

    One thread, so that each date's rows reach its file in the query's order.

    The files are written flat into `folder` (named by uuid) and told apart by their date
    column's statistics, not into a folder per date: making that folder, globbing it and then
    deleting it was three file-system operations per date and model (4,110 of each in a sparse
    history's curated run), and creating and deleting are what this project's disks do slowest."""
    if len(counts) < 2:
        return {}
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]  # type: ignore[index]
    # `threads` is the DuckDB instance's: set back at once (the caller runs nothing meanwhile)
    con.execute("SET threads = 1")
    try:
        con.execute(
            f"COPY ({query}) TO {literal(str(folder))} (FORMAT parquet, COMPRESSION zstd, "
            f"PARTITION_BY ({ident(partition_by)}), WRITE_PARTITION_COLUMNS true, "
            "HIVE_FILE_PATTERN false, FILENAME_PATTERN 'part_{uuid}')"
        )
    finally:
        con.execute(f"SET threads = {int(threads)}")
    paths = [str(f) for f in folder.glob("*.parquet")]  # none when the COPY wrote nothing
    if not paths:
        return {}
    # Each file's date from its date column's min and max, with its rows and row groups, in one
    # read of the footers (a file whose min and max differ, or lack, is claimed by no date: the
    # caller writes that date itself).
    by_date: dict[str, list[tuple[str, int, int]]] = {}
    for f, low, high, rows, groups in con.execute(
        "SELECT file_name, min(stats_min_value), max(stats_max_value), sum(row_group_num_rows), "
        "count(DISTINCT row_group_id) FROM parquet_metadata(?) WHERE path_in_schema = ? GROUP BY file_name",
        [paths, partition_by],
    ).fetchall():
        if low is not None and low == high:
            by_date.setdefault(str(low), []).append((str(f), int(rows), int(groups)))
    single = {d: files[0] for d in counts if len(files := by_date.get(d, [])) == 1}
    if not single:
        return {}
    # one COPY wrote them all: one file's column order is every file's
    first = next(iter(single.values()))[0]
    written = [str(r[0]) for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({literal(first)})").fetchall()]
    if written != list(columns):
        return {}
    return {d: Path(f) for d, (f, rows, groups) in single.items() if (rows, groups) == (counts[d], 1)}


def _checked_columns(
    con: duckdb.DuckDBPyConnection,
    zone: str,
    name: str,
    columns: Sequence[tuple[str, str]],
    relation: str,
    manifest: Mapping[str, Any] | None,
) -> list[tuple[str, str]]:
    got = [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
    want = [(str(n), str(t)) for n, t in columns]
    if got != want:
        raise PublishError(f"{zone}.{name}: the rows to publish have columns {got}, declared {want}")
    unknown = set(manifest or {}) - set(MANIFEST_DEFAULTS)
    if unknown:
        raise PublishError(f"{zone}.{name}: unknown manifest fields {sorted(unknown)}")
    return want


def _order(order_by: Sequence[str]) -> str:
    keys = list(order_by)
    return ", ".join([*map(ident, keys), "hash(__out)"]) if keys else "ALL"


def _optional(columns: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"CASE WHEN {q} IS NULL THEN NULL ELSE {q} END AS {q}" for q in (ident(n) for n, _ in columns))


def _publish_staged(
    lake: Lake,
    zone: str,
    name: str,
    date: str | None,
    local: Path,
    rows: int,
    columns: list[tuple[str, str]],
    manifest: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Publish a staged file and then its build manifest; returns the manifest."""
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    size = lake.publish_file(local, lake.data_file(zone, name, date), move=True)
    doc: dict[str, Any] = {
        "model": name,
        "date": date,
        "rows": rows,
        "bytes": size,
        "sha256": digest,
        "build_id": uuid.uuid4().hex,
        "built_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        **MANIFEST_DEFAULTS,
        **(manifest or {}),
        "columns": [list(c) for c in columns],
    }
    lake.write_json(lake.build_manifest(zone, name, date), doc)
    return doc
