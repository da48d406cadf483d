"""Table sync: bringing the tables of a warehouse file (the building file of a refresh) to the
curated state of the lake.

Each table remembers, in `_warehouse_partitions`, the build id of every curated partition it
holds. A sync compares them with the curated manifests and only deletes and reloads the
partitions whose build changed; a table whose columns changed is reloaded whole. Tables are
self-contained (no views over the lake), so the file works with any DuckDB client and no lake
credentials.

Besides the marts, `partition_status` (one row per raw fact partition: gate status, pending
rows, what the marts serve) is rebuilt from the lake's manifests, through the same function
`delivery-lake summary` uses (completeness.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from delivery_lake import completeness
from delivery_lake.sql import ident, literal
from delivery_lake.storage import DATA_FILE, Lake, Mirror, staging_dir
from delivery_lake.transform import ColumnInfo, Model, Project

ZONE = "curated"

META_COMMENT = "Which curated build of each partition every table holds (used by the refresh)."
META_TABLE = "_warehouse_partitions"
# Built from the lake's manifests on every refresh, not from a curated model (see completeness.py).
STATUS_TABLE = "partition_status"


@dataclass
class TableRefresh:
    table: str
    mode: str  # "unchanged" | "incremental" | "full" | "dropped"
    partitions_loaded: int = 0
    partitions_removed: int = 0
    rows: int = 0
    rows_deleted: int = 0
    rows_loaded: int = 0


def curated_state(lake: Lake, model: Model) -> dict[str | None, dict[str, Any]]:
    """Partition (date, or None) -> its manifest, for the partitions whose data file exists."""
    out: dict[str | None, dict[str, Any]] = {}
    # one listing of the data files rather than a HEAD per partition (`**/` also matches the
    # table folder itself: an unpartitioned model's file)
    files = set(lake.glob(lake.table_dir(ZONE, model.name) + "/**/" + DATA_FILE))
    for date, doc in lake.read_build_manifests(ZONE, model.name).items():
        if lake.data_file(ZONE, model.name, date) in files:
            out[date] = doc
    return out


# ---- tables built outside the SQL project ----------------------------------------------------------


def publish_external_table(
    lake: Lake,
    name: str,
    description: str,
    columns: list[tuple[str, str, str]],
    partition_by: str | None = None,
    grain: str | None = None,
) -> None:
    """Declare a curated table another producer writes (same files and build manifests as a
    model: `curated/{name}/[date=D/]data.parquet` + `_meta/curated/...`), e.g. the delay-model
    scores. Every later refresh loads it incrementally like a model's table and keeps it."""
    lake.write_json(
        lake.external_table_spec(name),
        {
            "name": name,
            "description": description,
            "grain": grain,
            "partition_by": partition_by,
            "columns": [list(c) for c in columns],
        },
    )


def external_models(lake: Lake) -> list[Model]:
    out = []
    for spec_path in lake.list_external_table_specs():
        spec = lake.read_json(spec_path)
        out.append(
            Model(
                spec["name"],
                Path(spec_path),
                "python",
                "marts",
                spec["description"],
                spec.get("grain"),
                spec.get("partition_by"),
                0,
                "table",
                (),
                (),
                columns=[ColumnInfo(name, type_, description) for name, type_, description in spec["columns"]],
            )
        )
    return out


def warehouse_models(project: Project, lake: Lake) -> dict[str, Model]:
    """Every table the warehouse holds besides `partition_status`, by name: the project's
    published models and the external tables (whose specs are read from the lake)."""
    return {model.name: model for model in [*project.published(), *external_models(lake)]}


# ---- syncing one file ------------------------------------------------------------------------------


class TableSync:
    """An open warehouse file being brought to the curated state: which build of every partition
    each table holds, and what was done to each table so far. Open it with `TableSync.open`."""

    def __init__(
        self, lake: Lake, project: Project, models: dict[str, Model], path: Path, con: duckdb.DuckDBPyConnection
    ):
        self.lake, self.project, self.models, self.path = lake, project, models, path
        self._con: duckdb.DuckDBPyConnection | None = con
        self._held: dict[str, dict[str | None, str]] = {}
        self._existing: set[str] = set()
        self._results: dict[str, TableRefresh] = {}

    @classmethod
    def open(cls, lake: Lake, project: Project, models: dict[str, Model], path: Path) -> TableSync:
        """Open (or create) the DuckDB file at `path` and read which builds its tables hold.
        Raises duckdb.Error when the file cannot be opened for writing or read."""
        con = lake.duckdb(str(path))
        try:
            sync = cls(lake, project, models, path, con)
            sync._read_held()
        except BaseException:
            con.close()
            raise
        return sync

    # -- bringing tables up to date
    def apply(self, names: Iterable[str] | None = None, skip: frozenset[str] = frozenset()) -> None:
        """Bring these tables (all when None) to the curated state, leaving out the dates in `skip`."""
        for name in self.models if names is None else [n for n in names if n in self.models]:
            result = self._refresh_table(
                self.models[name], self._held.setdefault(name, {}), name in self._existing, skip
            )
            if result.mode != "unchanged":
                self._existing.add(name)
            self._merge(result)

    def results(self) -> list[TableRefresh]:
        """What was done to each table so far (all passes of `apply` added up), in model order."""
        return [self._results[n] for n in self.models if n in self._results]

    def drop_stale(self) -> list[TableRefresh]:
        """Drop the tables of models that no longer exist."""
        con = self._connection()
        dropped = []
        for stale in sorted(self._existing - set(self.models) - {META_TABLE, STATUS_TABLE}):
            con.execute(f"DROP TABLE {ident(stale)}")
            con.execute(f"DELETE FROM {META_TABLE} WHERE model = ?", [stale])
            dropped.append(TableRefresh(stale, "dropped"))
        return dropped

    def refresh_partition_status(self) -> TableRefresh:
        """(Re)build `partition_status` from the lake's manifests as they stand now.

        Its rows depend on the gate and the landing, which change without any curated build,
        so it is recomputed on every refresh; it is only rewritten when a row differs, so a
        refresh that changes nothing leaves the file's catalog and row groups alone."""
        # pyarrow is imported here, not at the top: every `delivery-lake query` imports this
        # package, and only a refresh needs pyarrow.
        import pyarrow as pa

        con = self._connection()
        statuses = completeness.partition_statuses(self.lake, completeness.fact_sources(self.project))
        rows = completeness.warehouse_rows(statuses)
        names = [n for n, _, _ in completeness.COLUMNS]
        want_cols = [(n, t) for n, t, _ in completeness.COLUMNS]
        cols_sql = ", ".join(f"{ident(n)} {t}" for n, t in want_cols)
        con.execute(f"CREATE OR REPLACE TEMP TABLE __partition_status ({cols_sql})")
        # Dates and timestamps travel as text and are cast by DuckDB: ISO strings either way.
        schema = pa.schema([(n, pa.int64() if t == "BIGINT" else pa.string()) for n, t in want_cols])
        staged = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows], schema=schema)
        con.register("__partition_status_arrow", staged)
        try:
            select = ", ".join(f"{ident(n)}::{t}" for n, t in want_cols)
            con.execute(f"INSERT INTO __partition_status SELECT {select} FROM __partition_status_arrow")
        finally:
            con.unregister("__partition_status_arrow")
        exists = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [STATUS_TABLE]
        ).fetchone()[0]  # type: ignore[index]
        have_cols = (
            [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE {STATUS_TABLE}").fetchall()] if exists else []
        )
        result = TableRefresh(STATUS_TABLE, "unchanged", rows=len(rows))
        con.execute("BEGIN")
        try:
            if have_cols != want_cols:
                result.mode = "full"
                con.execute(f"DROP TABLE IF EXISTS {STATUS_TABLE}")
                con.execute(f"CREATE TABLE {STATUS_TABLE} ({cols_sql})")
            else:
                differ = con.execute(
                    f"""SELECT count(*) FROM (
                        (SELECT * FROM __partition_status EXCEPT ALL SELECT * FROM {STATUS_TABLE})
                        UNION ALL
                        (SELECT * FROM {STATUS_TABLE} EXCEPT ALL SELECT * FROM __partition_status))"""
                ).fetchone()[0]  # type: ignore[index]
                if differ:
                    result.mode = "incremental"
                    result.rows_deleted = int(con.execute(f"DELETE FROM {STATUS_TABLE}").fetchone()[0])  # type: ignore[index]
            if result.mode != "unchanged":
                cols = ", ".join(map(ident, names))
                con.execute(
                    f"INSERT INTO {STATUS_TABLE} ({cols}) "
                    f"SELECT {cols} FROM __partition_status ORDER BY table_name, date, client_id"
                )
                result.rows_loaded = len(rows)
            _write_comments(con, STATUS_TABLE, completeness.TABLE_COMMENT, [(n, c) for n, _, c in completeness.COLUMNS])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.execute("DROP TABLE IF EXISTS __partition_status")
        return result

    # -- finishing the file
    def row_groups(self, table: str) -> int:
        """How many row groups `table` occupies."""
        return int(
            self._connection()
            .execute(f"SELECT count(DISTINCT row_group_id) FROM pragma_storage_info({literal(table)})")
            .fetchone()[0]  # type: ignore[index]
        )

    def checkpoint(self, vacuum: bool) -> None:
        """Checkpoint the file; unless `vacuum`, without merging row groups or reclaiming deleted rows."""
        con = self._connection()
        con.execute(f"COMMENT ON TABLE {META_TABLE} IS {literal(META_COMMENT)}")
        if not vacuum:
            con.execute("SET max_vacuum_tasks = 0")
        con.execute("CHECKPOINT")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def settle(self) -> None:
        """Checkpoint a freshly built file (closed) once more, in a session of its own.

        DuckDB's first checkpoint in a new session after a bulk-loaded build rewrites the
        metadata of every table, later ones only what changed (docs/performance.md). Paid here,
        once per full build, instead of by the first daily refresh after it.
        """
        con = self.lake.duckdb(str(self.path))
        try:
            con.execute(f"COMMENT ON TABLE {META_TABLE} IS {literal(META_COMMENT)}")
            con.execute("CHECKPOINT")
        finally:
            con.close()

    # -- internals
    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError(f"{self.path} is closed")
        return self._con

    def _read_held(self) -> None:
        con = self._connection()
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {META_TABLE} "
            "(model VARCHAR, date DATE, build_id VARCHAR, rows BIGINT, built_at VARCHAR)"
        )
        for model, date, build_id in con.execute(f"SELECT model, date::VARCHAR, build_id FROM {META_TABLE}").fetchall():
            self._held.setdefault(model, {})[date] = build_id
        self._existing = {
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
        }

    def _refresh_table(
        self, model: Model, held: dict[str | None, str], exists: bool, skip: frozenset[str] = frozenset()
    ) -> TableRefresh:
        """Bring one table to its curated state; `held` (date -> build id it holds) is updated in place."""
        con = self._connection()
        table = ident(model.name)
        state = curated_state(self.lake, model)
        want_cols = [(c.name, c.type) for c in model.columns]
        have_cols = [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE {table}").fetchall()] if exists else []
        if have_cols != want_cols:
            load, remove, mode = sorted(state, key=str), [], "full"
            con.execute(f"DROP TABLE IF EXISTS {table}")
            cols = ", ".join(f"{ident(n)} {t}" for n, t in want_cols)
            con.execute(f"CREATE TABLE {table} ({cols})")
            con.execute(f"DELETE FROM {META_TABLE} WHERE model = ?", [model.name])
        else:
            load = sorted(
                (date for date, doc in state.items() if held.get(date) != doc["build_id"] and date not in skip),
                key=str,
            )
            remove = sorted((date for date in held if date not in state and date not in skip), key=str)
            mode = "incremental" if load or remove else "unchanged"
        result = TableRefresh(model.name, mode, len(load), len(remove))
        if mode == "unchanged":
            result.rows = int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            return result
        con.execute("BEGIN")
        try:
            # The dates going away or being reloaded, in one statement per table (a backfill of a
            # sparse history reloads hundreds of dates: a DELETE each took seconds).
            dates = [d for d in [*load, *remove] if d is not None]
            if model.is_partitioned and dates:
                deleted = con.execute(
                    f"DELETE FROM {table} WHERE {ident(model.partition_by or '')} IN (SELECT unnest(?::DATE[]))",
                    [dates],
                ).fetchone()
                con.execute(
                    f"DELETE FROM {META_TABLE} WHERE model = ? AND date IN (SELECT unnest(?::DATE[]))",
                    [model.name, dates],
                )
                result.rows_deleted += int(deleted[0])  # type: ignore[index]
            if None in load or None in remove:
                deleted = con.execute(f"DELETE FROM {table}").fetchone()
                con.execute(f"DELETE FROM {META_TABLE} WHERE model = ?", [model.name])
                result.rows_deleted += int(deleted[0])  # type: ignore[index]
            if load:
                cols = ", ".join(ident(c.name) for c in model.columns)
                # One file (a day's partition) is appended in any order: DuckDB's order-preserving
                # insert is slower (docs/performance.md). Several files keep their order, so each
                # row group holds few dates and the zone maps keep a date's DELETE and analysts'
                # date filters cheap.
                con.execute(f"SET preserve_insertion_order = {'false' if len(load) == 1 else 'true'}")
                with staging_dir(self.lake.settings) as stage:
                    # on S3 the partitions are fetched together first (storage.Mirror), not read
                    # through fsspec one file and several round trips at a time
                    uris = Mirror(self.lake, stage).uris([self.lake.data_file(ZONE, model.name, d) for d in load])
                    files = ", ".join(literal(u) for u in uris)
                    inserted = con.execute(
                        f"INSERT INTO {table} ({cols}) "
                        f"SELECT {cols} FROM read_parquet([{files}], hive_partitioning = false)"
                    ).fetchone()
                result.rows_loaded = int(inserted[0])  # type: ignore[index]
                # one statement for every date's row (executemany runs one INSERT per date)
                con.execute(
                    f"INSERT INTO {META_TABLE} SELECT ?, unnest(?::DATE[]), unnest(?::VARCHAR[]), "
                    "unnest(?::BIGINT[]), unnest(?::VARCHAR[])",
                    [
                        model.name,
                        list(load),
                        [state[d]["build_id"] for d in load],
                        [int(state[d]["rows"]) for d in load],
                        [state[d]["built_at"] for d in load],
                    ],
                )
            text = model.description + (f" Grain: {model.grain}." if model.grain else "")
            _write_comments(con, model.name, text, [(c.name, c.description) for c in model.columns])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if mode == "full":
            held.clear()
        for date in remove:
            held.pop(date, None)
        held.update({date: state[date]["build_id"] for date in load})
        result.rows = int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
        return result

    def _merge(self, result: TableRefresh) -> None:
        before = self._results.get(result.table)
        if before is None:
            self._results[result.table] = result
            return
        modes = {before.mode, result.mode}
        before.mode = "full" if "full" in modes else "incremental" if "incremental" in modes else "unchanged"
        before.partitions_loaded += result.partitions_loaded
        before.partitions_removed += result.partitions_removed
        before.rows_deleted += result.rows_deleted
        before.rows_loaded += result.rows_loaded
        before.rows = result.rows


def _write_comments(con: duckdb.DuckDBPyConnection, table: str, text: str, columns: list[tuple[str, str]]) -> None:
    """Table and column comments, written only where they differ: each COMMENT alters the
    catalog, which a refresh that changes nothing must leave alone."""
    row = con.execute(
        "SELECT comment FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [table]
    ).fetchone()
    if row is None or row[0] != text:
        con.execute(f"COMMENT ON TABLE {ident(table)} IS {literal(text)}")
    have = dict(
        con.execute(
            "SELECT column_name, comment FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main'", [table]
        ).fetchall()
    )
    for name, description in columns:
        if description and have.get(name) != description:
            con.execute(f"COMMENT ON COLUMN {ident(table)}.{ident(name)} IS {literal(description)}")
