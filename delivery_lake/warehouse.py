"""The analysts' warehouse: one DuckDB file holding every table model, refreshed by atomic swap.

A refresh never writes the live file. It prepares `.<name>.<uuid>.building` beside it, applies
the changes there, checkpoints and closes it, then `os.replace`s it over the live path. So:
- a reader that has the old file open keeps reading the old inode, consistent, unaffected;
- a reader that opens the path gets the old file or the new one, never a half-refreshed one;
- the pipeline never needs DuckDB's write lock on the live file, so an analyst session
  (read-only, as `delivery-lake query` opens it) never blocks a refresh. Refreshes among
  themselves are serialised by a lock file.

What the building file starts from: the file the previous refresh replaced, kept as
`.<name>.spare` (one refresh behind), when no session still has it open; else a copy of the
live file; else (first build, `full=True`) an empty file. Copying costs O(history) on every
refresh (222 MB, 0.45-0.57 s for the 30-day benchmark warehouse); bringing the spare forward
costs only what changed since it was live. So the warehouse takes twice its size on disk.
Nothing is started from (or kept as the spare) unless it is still the file a refresh published:
each publish records both files' fingerprints (`file_fingerprint`, `published_path`); a spare
changed since then is deleted and the warehouse rebuilt from scratch, with a warning.
A refresh is a session (`Warehouse.refreshing`): `build_curated` loads each mart into the
building file as soon as its model is built, while the others still build.

Incremental: each warehouse table remembers, in `_warehouse_partitions`, the build id of every
curated partition it holds. A refresh compares them with the curated manifests and only
deletes and reloads the partitions whose build changed (a new day costs one day's rows, two
on the spare); a table whose columns changed is reloaded whole. `full=True` rebuilds the file
from scratch. Tables are self-contained (no views over the lake), so the file works with any
DuckDB client and no lake credentials.

Besides the marts, every refresh rebuilds `partition_status` (one row per raw fact partition:
gate status, pending rows, what the marts serve) from the lake's manifests, through the same
function `delivery-lake summary` uses (completeness.py).

Readers open the file through `open_reader`: read-only, and without access to any other file.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from delivery_lake.config import Settings
from delivery_lake.sql import ident, literal
from delivery_lake.storage import Lake

if TYPE_CHECKING:  # the runner pulls in sqlglot and Polars; `query` does not need them
    from delivery_lake.transform import Model, Project

ZONE = "curated"

META_COMMENT = "Which curated build of each partition every table holds (used by the refresh)."
META_TABLE = "_warehouse_partitions"
# Built from the lake's manifests on every refresh, not from a curated model (see completeness.py).
STATUS_TABLE = "partition_status"
ROW_GROUP_ROWS = 122_880  # DuckDB's row group size
# Each refresh leaves partly filled row groups behind (a day's remainder; a dimension
# reloaded whole leaves its deleted one). A checkpoint merges them and reclaims deleted
# rows ("vacuum") only once a table holds this many more row groups than its rows need,
# or a refresh deleted half a row group's worth of rows. Merging rewrites neighbouring row
# groups: appending a day to the 30-day benchmark warehouse cost a 0.5-0.65 s checkpoint
# with it, 0.004 s without.
SLACK_ROW_GROUPS = 16
# A refresh that loaded more than this share of the file's rows (a full build, a long
# backfill) leaves a copy of the new file as the spare: catching the old one up next time
# would reload as much again, where a copy costs only reading and writing the file.
SPARE_CATCH_UP_SHARE = 0.25
# The live file is read by the analysts' group (infra/README.md); the spare and the building
# files are the pipeline's alone: nobody else writes the file the next refresh trusts, and no
# analyst session holds the spare open (which would make every refresh copy the live file).
LIVE_MODE = 0o640
PRIVATE_MODE = 0o600
# DuckDB writes its file headers here on every checkpoint (a new iteration number each time).
HEADER_BYTES = 12288

log = logging.getLogger(__name__)


class WarehouseError(RuntimeError):
    pass


@dataclass
class TableRefresh:
    table: str
    mode: str  # "unchanged" | "incremental" | "full" | "dropped"
    partitions_loaded: int = 0
    partitions_removed: int = 0
    rows: int = 0
    rows_deleted: int = 0
    rows_loaded: int = 0


@dataclass
class WarehouseReport:
    path: str
    tables: list[TableRefresh] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0
    vacuumed: bool = True  # whether the checkpoint merged row groups and reclaimed deleted rows
    base: str = "new"  # what the refresh started from: "spare", "copy" (of the live file) or "new"
    # Kept apart from `tables` (the curated ones, which `changed` and the vacuum decision follow).
    partition_status: TableRefresh | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[str]:
        return [t.table for t in self.tables if t.mode != "unchanged"]


@contextmanager
def _refresh_lock(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def file_fingerprint(path: Path) -> dict[str, Any]:
    """What a published file looked like when published: inode, size, modification and change
    times, and a digest of DuckDB's headers.

    Any write to the file after that moves its mtime and ctime (ctime cannot be set back
    without root), and a DuckDB checkpoint rewrites a header; a file put in its place has
    another inode. A digest of the whole file would also catch a writer able to forge times
    (root), but reading the whole file twice per refresh (at publish, and before starting from
    the spare) costs more than the copy of the live file that the spare saves.
    """
    st = path.stat()
    with open(path, "rb") as fh:
        head = hashlib.sha256(fh.read(HEADER_BYTES)).hexdigest()
    return {
        "inode": st.st_ino,
        "bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "header_sha256": head,
    }


class Warehouse:
    def __init__(self, lake: Lake, project: Project, path: Path | str):
        self.lake, self.project, self.path = lake, project, Path(path)

    def curated_state(self, m: Model) -> dict[str | None, dict[str, Any]]:
        """Partition (date, or None) -> its manifest, for the partitions whose data file exists."""
        out: dict[str | None, dict[str, Any]] = {}
        for d, manifest in self.lake.list_build_manifests(ZONE, m.name).items():
            doc = self.lake.read_json(manifest)
            if doc is not None and self.lake.exists(self.lake.data_file(ZONE, m.name, d)):
                out[d] = doc
        return out

    @property
    def spare_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.spare")

    @property
    def published_path(self) -> Path:
        """The fingerprints (`file_fingerprint`) of the live file and the spare as the last
        refresh left them: what the next refreshes may start from."""
        return self.path.with_name(f".{self.path.name}.published.json")

    def published(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.published_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _unchanged(self, role: str, path: Path) -> str | None:
        """None if `path` (the "live" file or the "spare") is as the last refresh published it,
        else why not."""
        want = self.published().get(role)
        if not want:
            return f"no fingerprint recorded in {self.published_path.name}"
        if path.with_name(path.name + ".wal").exists():
            return "a write-ahead log beside it holds uncheckpointed changes"
        have = file_fingerprint(path)
        differ = [k for k in sorted(want) if have.get(k) != want[k]]
        return f"{', '.join(differ)} differ" if differ else None

    def refresh(self, full: bool = False) -> WarehouseReport:
        """Bring every table to the curated state and publish the file."""
        try:
            with self.refreshing(full) as session:
                pass
        except duckdb.Error:
            if full:
                raise
            # The starting file is unusable (e.g. someone changed a table in the live file).
            with self.refreshing(full=True) as session:
                pass
        return session.report

    @contextmanager
    def refreshing(self, full: bool = False) -> Iterator[RefreshSession]:
        """One refresh, under the refresh lock from start to publish. Inside the block, tables can
        be brought up to date while their models still build (`RefreshSession.follow`); leaving
        it applies every table once more, checkpoints and publishes. An exception in the block
        discards the building file: nothing is published."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _refresh_lock(self.path):
            # Under the lock no other refresh runs: building files left here were left by a
            # refresh that died (killed process, power loss) and are never published.
            for pattern in (
                f".{self.path.name}.*.building",
                f".{self.path.name}.*.building.wal",
                f".{self.path.name}.*.keep",
            ):
                for leftover in self.path.parent.glob(pattern):
                    leftover.unlink(missing_ok=True)
            session = RefreshSession(self, full)
            try:
                session.open()
                yield session
                session.finish()
            finally:
                session.close()

    def _take_spare(self, building: Path, report: WarehouseReport) -> bool | None:
        """Move the spare to `building` unless this process still has it open; None when it is
        not what the last refresh published (it is deleted: nothing may start from it).

        Another process's session holds DuckDB's lock on it, which makes the write fail
        (and the refresh fall back to a copy). Within one process those locks do not
        conflict, so open files are looked up by inode: a connection made here before the
        previous refresh (a test, an in-process Dagster run) may still be reading it.
        """
        try:
            st = self.spare_path.stat()
        except FileNotFoundError:
            return False
        fds = Path("/proc/self/fd")
        if not fds.is_dir():  # cannot tell who has it open: do not write to it
            return False
        for fd in os.listdir(fds):
            try:
                other = os.stat(fds / fd)
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return False
        # The spare is one refresh behind: it must still be the file the previous-but-one
        # refresh published (the previous one checked it was then, before making it the spare).
        # A refresh would otherwise trust every partition it holds without reading them.
        why = self._unchanged("spare", self.spare_path)
        if why is not None:
            self._reject(report, "spare", self.spare_path, why)
            return None
        os.replace(self.spare_path, building)
        return True

    def _reject(self, report: WarehouseReport, role: str, path: Path, why: str) -> None:
        if role == "spare":
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".wal").unlink(missing_ok=True)
        message = f"{role} {path} does not match what was published ({why}): rebuilding from scratch"
        report.warnings.append(message)
        log.warning("%s", message)

    # ---------------------------------------------------------------------------------------------
    @staticmethod
    def _worth_vacuuming(con: duckdb.DuckDBPyConnection, report: WarehouseReport) -> bool:
        """Vacuum when tables were (re)built or dropped, this refresh deleted half a row group's
        worth of rows, or a changed table holds more than SLACK_ROW_GROUPS row groups beyond
        what its rows need (see SLACK_ROW_GROUPS)."""
        if any(t.mode in ("full", "dropped") for t in report.tables):
            return True
        if sum(t.rows_deleted for t in report.tables) >= ROW_GROUP_ROWS // 2:
            return True
        for t in report.tables:
            if t.mode == "incremental":
                groups = con.execute(
                    f"SELECT count(DISTINCT row_group_id) FROM pragma_storage_info({literal(t.table)})"
                ).fetchone()[0]  # type: ignore[index]
                if groups > -(-t.rows // ROW_GROUP_ROWS) + SLACK_ROW_GROUPS:
                    return True
        return False

    def _settle(self, database: Path) -> None:
        """Checkpoint a freshly built file once more, in a session of its own.

        DuckDB's first checkpoint in a new session after a bulk-loaded build rewrites the
        metadata of every table (measured on the 30-day warehouse: 0.9-1.7 s, reading 47 MB),
        later ones only what changed (~0.01-0.08 s). Paid here, once per full build, instead of
        by the first daily refresh after it.
        """
        con = self.lake.duckdb(str(database))
        try:
            con.execute(f"COMMENT ON TABLE {META_TABLE} IS {literal(META_COMMENT)}")
            con.execute("CHECKPOINT")
        finally:
            con.close()

    def _refresh_table(
        self,
        con: duckdb.DuckDBPyConnection,
        m: Model,
        held: dict[str | None, str],
        exists: bool,
        skip: frozenset[str] = frozenset(),
    ) -> TableRefresh:
        """Bring one table to its curated state; `held` (date -> build id it holds) is updated in place."""
        state = self.curated_state(m)
        want_cols = [(c.name, c.type) for c in m.columns]
        have_cols = (
            [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE {ident(m.name)}").fetchall()] if exists else []
        )
        if have_cols != want_cols:
            load, remove, mode = sorted(state, key=str), [], "full"
            con.execute(f"DROP TABLE IF EXISTS {ident(m.name)}")
            cols = ", ".join(f"{ident(n)} {t}" for n, t in want_cols)
            con.execute(f"CREATE TABLE {ident(m.name)} ({cols})")
            con.execute(f"DELETE FROM {META_TABLE} WHERE model = ?", [m.name])
        else:
            load = sorted((d for d, doc in state.items() if held.get(d) != doc["build_id"] and d not in skip), key=str)
            remove = sorted((d for d in held if d not in state and d not in skip), key=str)
            mode = "incremental" if load or remove else "unchanged"
        result = TableRefresh(m.name, mode, len(load), len(remove))
        if mode == "unchanged":
            result.rows = int(con.execute(f"SELECT count(*) FROM {ident(m.name)}").fetchone()[0])  # type: ignore[index]
            return result
        con.execute("BEGIN")
        try:
            for d in [*load, *remove]:
                if m.is_partitioned and d is not None:
                    deleted = con.execute(
                        f"DELETE FROM {ident(m.name)} WHERE {ident(m.partition_by or '')} = ?::DATE", [d]
                    ).fetchone()
                    con.execute(f"DELETE FROM {META_TABLE} WHERE model = ? AND date = ?::DATE", [m.name, d])
                else:
                    deleted = con.execute(f"DELETE FROM {ident(m.name)}").fetchone()
                    con.execute(f"DELETE FROM {META_TABLE} WHERE model = ?", [m.name])
                result.rows_deleted += int(deleted[0])  # type: ignore[index]
            if load:
                files = ", ".join(literal(self.lake.uri(self.lake.data_file(ZONE, m.name, d))) for d in load)
                cols = ", ".join(ident(c.name) for c in m.columns)
                # One file (a day's partition) may be appended in any order: DuckDB's
                # order-preserving insert cost a day of fct_deliveries 0.33 s instead of 0.26.
                # Several files keep their order, so each row group holds few dates and the
                # zone maps keep a date's DELETE and analysts' date filters cheap.
                con.execute(f"SET preserve_insertion_order = {'false' if len(load) == 1 else 'true'}")
                inserted = con.execute(
                    f"INSERT INTO {ident(m.name)} ({cols}) "
                    f"SELECT {cols} FROM read_parquet([{files}], hive_partitioning = false)"
                ).fetchone()
                result.rows_loaded = int(inserted[0])  # type: ignore[index]
                con.executemany(
                    f"INSERT INTO {META_TABLE} VALUES (?, ?::DATE, ?, ?, ?)",
                    [[m.name, d, state[d]["build_id"], state[d]["rows"], state[d]["built_at"]] for d in load],
                )
            self._comment(con, m)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if mode == "full":
            held.clear()
        for d in remove:
            held.pop(d, None)
        held.update({d: state[d]["build_id"] for d in load})
        result.rows = int(con.execute(f"SELECT count(*) FROM {ident(m.name)}").fetchone()[0])  # type: ignore[index]
        return result

    def _comment(self, con: duckdb.DuckDBPyConnection, m: Model) -> None:
        text = m.description + (f" Grain: {m.grain}." if m.grain else "")
        _write_comments(con, m.name, text, [(c.name, c.description) for c in m.columns])

    def _refresh_partition_status(self, con: duckdb.DuckDBPyConnection) -> TableRefresh:
        """(Re)build `partition_status` from the lake's manifests as they stand now.

        Its rows depend on the gate and the landing, which change without any curated build,
        so it is recomputed on every refresh; it is only rewritten when a row differs, so a
        refresh that changes nothing leaves the file's catalog and row groups alone."""
        import pyarrow as pa

        from delivery_lake import completeness

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


def _write_comments(con: duckdb.DuckDBPyConnection, table: str, text: str, columns: list[tuple[str, str]]) -> None:
    """Table and column comments, written only where they differ: each COMMENT alters the
    catalog, and a day's refresh re-wrote about 20 per table unchanged."""
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


class RefreshSession:
    """The state of one refresh (see `Warehouse.refreshing`): the building file, its connection,
    which build of every partition it holds, and the report."""

    def __init__(self, warehouse: Warehouse, full: bool):
        self.wh, self.full = warehouse, full
        self.report = WarehouseReport(str(warehouse.path))
        token = uuid.uuid4().hex[:12]
        self.building = warehouse.path.with_name(f".{warehouse.path.name}.{token}.building")
        self.keep = warehouse.path.with_name(f".{warehouse.path.name}.{token}.keep")
        self.con: duckdb.DuckDBPyConnection | None = None
        self.held: dict[str, dict[str | None, str]] = {}
        self.existing: set[str] = set()
        self.tables: dict[str, TableRefresh] = {}
        # Published models and external tables, listed once: their specs are read from the lake.
        self.models = {m.name: m for m in [*warehouse.project.published(), *external_models(warehouse.lake)]}
        self._started = time.monotonic()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- the starting file
    def open(self) -> None:
        bases = ["spare", "copy", "new"] if self.wh.path.exists() and not self.full else ["new"]
        rebuild = False
        for base in bases:
            if base == "spare":
                taken = self.wh._take_spare(self.building, self.report)
                # Whatever changed the spare may have reached the live file too.
                rebuild = taken is None
                if not taken:
                    continue
            if base == "copy":
                if rebuild:
                    continue
                why = self.wh._unchanged("live", self.wh.path)
                if why is not None:
                    self.wh._reject(self.report, "live file", self.wh.path, why)
                    continue
                # The live file is only ever replaced whole and never opened for writing by the
                # pipeline, so this copy is a consistent snapshot.
                shutil.copyfile(self.wh.path, self.building)
            try:
                self._connect()
            except duckdb.Error:
                if base == "new":
                    raise
                # Unusable: a session in another process still has the spare open (DuckDB's file
                # lock refuses the write), or the file is not one this code can read.
                self._discard()
                continue
            self.report.base = base
            return

    def _connect(self) -> None:
        con = self.wh.lake.duckdb(str(self.building))
        try:
            os.chmod(self.building, PRIVATE_MODE)
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {META_TABLE} "
                "(model VARCHAR, date DATE, build_id VARCHAR, rows BIGINT, built_at VARCHAR)"
            )
            for model, d, build_id in con.execute(
                f"SELECT model, date::VARCHAR, build_id FROM {META_TABLE}"
            ).fetchall():
                self.held.setdefault(model, {})[d] = build_id
            self.existing = {
                r[0]
                for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
            }
        except BaseException:
            con.close()
            raise
        self.con = con

    def _discard(self) -> None:
        for leftover in (self.building, self.building.with_name(self.building.name + ".wal"), self.keep):
            leftover.unlink(missing_ok=True)

    # -- bringing tables up to date
    def apply(self, names: Iterable[str] | None = None, skip: frozenset[str] = frozenset()) -> None:
        """Bring these tables (all when None) to the curated state, leaving out the dates in `skip`."""
        assert self.con is not None
        for name in self.models if names is None else [n for n in names if n in self.models]:
            t = self.wh._refresh_table(
                self.con, self.models[name], self.held.setdefault(name, {}), name in self.existing, skip
            )
            if t.mode != "unchanged":
                self.existing.add(name)
            self._merge(t)

    def _merge(self, t: TableRefresh) -> None:
        before = self.tables.get(t.table)
        if before is None:
            self.tables[t.table] = t
            return
        modes = {before.mode, t.mode}
        before.mode = "full" if "full" in modes else "incremental" if "incremental" in modes else "unchanged"
        before.partitions_loaded += t.partitions_loaded
        before.partitions_removed += t.partitions_removed
        before.rows_deleted += t.rows_deleted
        before.rows_loaded += t.rows_loaded
        before.rows = t.rows

    def follow(self, skip: Iterable[str] | None = None) -> None:
        """Apply tables in a worker thread while models build: first, unless `skip` is None (a
        full rebuild), every table as the curated layer stands now, leaving out the dates in
        `skip` (about to be rebuilt); then each model passed to `feed` as its build finishes.
        The work of a refresh then overlaps the builds (a day on the benchmark lake: catching
        the spare up and loading the early marts)."""
        first = None if skip is None else frozenset(skip)

        def work() -> None:
            try:
                if first is not None:
                    self.apply(skip=first)
                while (name := self._queue.get()) is not None:
                    self.apply([name])
            except BaseException as exc:  # re-raised by finish()
                self._error = exc

        self._worker = threading.Thread(target=work, name="warehouse-refresh", daemon=True)
        self._worker.start()

    def feed(self, name: str) -> None:
        if self._worker is not None:
            self._queue.put(name)

    def _stop(self) -> None:
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None

    # -- publishing
    def finish(self) -> None:
        self._stop()
        if self._error is not None:
            raise self._error
        assert self.con is not None
        con, report = self.con, self.report
        self.apply()
        dropped = []
        for stale in sorted(self.existing - set(self.models) - {META_TABLE, STATUS_TABLE}):
            con.execute(f"DROP TABLE {ident(stale)}")
            con.execute(f"DELETE FROM {META_TABLE} WHERE model = ?", [stale])
            dropped.append(TableRefresh(stale, "dropped"))
        report.tables = [*(self.tables[n] for n in self.models), *dropped]
        report.partition_status = self.wh._refresh_partition_status(con)
        con.execute(f"COMMENT ON TABLE {META_TABLE} IS {literal(META_COMMENT)}")
        report.vacuumed = self.wh._worth_vacuuming(con, report)
        if not report.vacuumed:
            con.execute("SET max_vacuum_tasks = 0")
        con.execute("CHECKPOINT")
        con.close()
        self.con = None
        if report.base == "new":
            self.wh._settle(self.building)
        wal = self.building.with_name(self.building.name + ".wal")
        if wal.exists():
            raise WarehouseError(f"{wal} left behind after checkpoint; not publishing")
        with open(self.building, "rb+") as fh:
            os.fsync(fh.fileno())
        # The live file being replaced becomes the next refresh's starting point, unless this
        # refresh changed so much that a copy of the new file is the cheaper one.
        # A live file changed since it was published is not kept (see `_take_spare`).
        loaded, total = sum(t.rows_loaded for t in report.tables), sum(t.rows for t in report.tables)
        path = self.wh.path
        keep_live = report.base != "new" and loaded <= SPARE_CATCH_UP_SHARE * total
        if keep_live and (why := self.wh._unchanged("live", path)) is not None:
            keep_live = False
            report.warnings.append(f"live file {path} does not match what was published ({why}): not kept as the spare")
            log.warning("%s", report.warnings[-1])
        if keep_live:
            os.link(path, self.keep)
        else:
            shutil.copyfile(self.building, self.keep)
            with open(self.keep, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(self.building, LIVE_MODE)
        os.replace(self.building, path)
        # Only now: until the replace above, a linked keep was the live file.
        os.chmod(self.keep, PRIVATE_MODE)
        os.replace(self.keep, self.wh.spare_path)
        # Taken after the renames and mode changes, which move a file's ctime. Written last: a
        # crash before it leaves fingerprints that no longer match, i.e. a rebuild, never trust.
        record = {"live": file_fingerprint(path), "spare": file_fingerprint(self.wh.spare_path)}
        tmp = self.wh.published_path.with_name(self.wh.published_path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(tmp, self.wh.published_path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        report.bytes = path.stat().st_size
        report.seconds = round(time.monotonic() - self._started, 3)

    def close(self) -> None:
        """Release everything; after a failure, the building file is discarded unpublished."""
        self._stop()
        if self.con is not None:
            self.con.close()
            self.con = None
        self._discard()


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
    from delivery_lake.transform import ColumnInfo, Model

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
                columns=[ColumnInfo(n, t, d) for n, t, d in spec["columns"]],
            )
        )
    return out


# ---- reading -------------------------------------------------------------------------------------


class QueryRefused(WarehouseError):
    """A reader's statement tried to write, or to reach a file other than the warehouse."""


REFUSED = "this connection is read-only and cannot read or write files outside the warehouse"
# How DuckDB words what `open_reader` forbids (besides its PermissionException): writes to the
# read-only file, settings after the lock, undoing the external-access switch.
_REFUSAL_MARKS = (
    "read-only mode",
    "configuration has been locked",
    "external access",
    "disabled by configuration",
    "disabled through configuration",
)
_scratch_root: Path | None = None


def _reader_scratch() -> Path:
    """Where reader connections may spill (a private folder per process, removed at exit).

    Without it DuckDB spills to `<warehouse>.tmp/` and allows queries to write files there,
    beside the warehouse, in a folder analysts cannot create anyway."""
    global _scratch_root
    if _scratch_root is None:
        _scratch_root = Path(tempfile.mkdtemp(prefix="delivery-lake-reader-"))
        atexit.register(shutil.rmtree, _scratch_root, True)
    return _scratch_root


def open_reader(path: Path | str) -> duckdb.DuckDBPyConnection:
    """The one way to open the warehouse for reading (`delivery-lake query`, summaries, a
    question service): read-only, with no access to any other file.

    `read_only` alone is a file mode, not a sandbox: such a connection still runs `COPY ... TO`
    any path, `ATTACH` any DuckDB file read-write, `read_csv('/etc/passwd')`, `INSTALL`. With
    `enable_external_access` off (in the connect config: in force before any statement, for
    the whole instance) DuckDB refuses every path but the warehouse file (and its WAL names)
    and the spill folder, which is this process's own (see `_reader_scratch`);
    `lock_configuration` then refuses any `SET`, so a query cannot turn it back on, point the
    spill folder or a profiling/log output elsewhere, or load an extension that is not already
    built in. The lake is out of reach too: the marts are in the file, and analysts need no
    lake credentials.
    """
    path = Path(path)
    if not path.exists():
        raise WarehouseError(f"no warehouse at {path}: run `delivery-lake run` (or `delivery-lake build`) first")
    # One spill folder per file: DuckDB refuses a second connection to a file in the same
    # process with another configuration (readers in threads share one database instance).
    spill = _reader_scratch() / hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    config: dict[str, str | bool | int | float | list[str]] = {
        "enable_external_access": False,
        "temp_directory": str(spill),
    }
    con = duckdb.connect(str(path), read_only=True, config=config)
    try:
        # Set before the lock, not in `config` (TimeZone needs ICU, not loaded yet at connect),
        # and globally: a reader opened while another one holds the instance finds it locked.
        try:
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            con.execute("SET lock_configuration = true")
        except duckdb.InvalidInputException:
            pass  # already locked by a reader in another thread; checked below
        settings = (
            "current_setting('lock_configuration'), current_setting('enable_external_access'), "
            "current_setting('TimeZone')"
        )
        if con.execute(f"SELECT {settings}").fetchone() != (True, False, "UTC"):
            raise WarehouseError(f"could not open {path} read-only without external access")
    except BaseException:
        con.close()
        raise
    return con


connect_read_only = open_reader  # the name summary.py and the scorer import


def _refused(exc: duckdb.Error) -> bool:
    return isinstance(exc, duckdb.PermissionException) or any(mark in str(exc) for mark in _REFUSAL_MARKS)


def query(path: Path | str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one query through `open_reader`. A statement that tries to write or to reach another
    file raises QueryRefused (DuckDB's message in it); other DuckDB errors propagate as
    duckdb.Error."""
    con = open_reader(path)
    try:
        cur = con.execute(sql)
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()
    except duckdb.Error as exc:
        if _refused(exc):
            # One line: DuckDB's first, without the statement it quotes after it.
            raise QueryRefused(f"{REFUSED} ({str(exc).splitlines()[0]})") from exc
        raise
    finally:
        con.close()


def describe(path: Path | str) -> dict[str, Any]:
    """Tables with their comment and row count (what `delivery-lake query` users look up first)."""
    con = open_reader(path)
    try:
        rows = con.execute(
            "SELECT table_name, comment, estimated_size FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
        ).fetchall()
        return {
            "path": str(path),
            "refreshed_at": datetime.fromtimestamp(Path(path).stat().st_mtime, UTC).isoformat(timespec="seconds"),
            "tables": {r[0]: {"comment": r[1], "rows": r[2]} for r in rows},
        }
    finally:
        con.close()


def build_curated(
    settings: Settings, dates: list[str] | None = None, full: bool = False
) -> tuple[list[Any], WarehouseReport]:
    """Build the marts for `dates` (or everything with `full`) and refresh the warehouse.

    The one library entry point for "refresh the curated layer": the CLI's `build` and the
    benchmark call it; Dagster runs the same Runner and Warehouse through its assets.
    """
    from delivery_lake.transform import Project, Runner

    lake = Lake.from_settings(settings)
    project = Project.load()
    with Warehouse(lake, project, settings.warehouse_path).refreshing(full=full) as session:
        # Tables are loaded while the models build: a new file from each model as it is built,
        # the spare first caught up with what is already built (the dates being built aside).
        session.follow(skip=None if full else dates or [])
        results = Runner(lake, project, settings).build(None, dates=dates, full_refresh=full, on_built=session.feed)
    return results, session.report
