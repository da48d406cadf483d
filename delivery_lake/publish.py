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
from collections.abc import Mapping, Sequence
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
    got = [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
    want = [(str(n), str(t)) for n, t in columns]
    if got != want:
        raise PublishError(f"{zone}.{name}: the rows to publish have columns {got}, declared {want}")
    unknown = set(manifest or {}) - set(MANIFEST_DEFAULTS)
    if unknown:
        raise PublishError(f"{zone}.{name}: unknown manifest fields {sorted(unknown)}")
    keys = list(order_by)
    order = ", ".join([*map(ident, keys), "hash(__out)"]) if keys else "ALL"
    cols = ", ".join(f"CASE WHEN {q} IS NULL THEN NULL ELSE {q} END AS {q}" for q in (ident(n) for n, _ in want))
    with ExitStack() as stack:
        folder = stage if stage is not None else stack.enter_context(staging_dir(settings or lake.settings))
        local = folder / f"{name}_{date or 'all'}.parquet"
        # COPY returns the rows it wrote: no second read of the file to count them.
        copied = con.execute(
            f"COPY (SELECT {cols} FROM {relation} AS __out {where} ORDER BY {order}) "
            f"TO {literal(str(local))} (FORMAT parquet, COMPRESSION zstd)"
        ).fetchone()
        assert copied is not None
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        size = lake.publish_file(local, lake.data_file(zone, name, date), move=True)
    doc: dict[str, Any] = {
        "model": name,
        "date": date,
        "rows": int(copied[0]),
        "bytes": size,
        "sha256": digest,
        "build_id": uuid.uuid4().hex,
        "built_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        **MANIFEST_DEFAULTS,
        **(manifest or {}),
        "columns": [list(c) for c in want],
    }
    lake.write_json(lake.build_manifest(zone, name, date), doc)
    return doc
