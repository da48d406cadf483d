"""The analysts' warehouse: one DuckDB file holding every table model, refreshed by atomic swap.

Three parts, each with a small public interface:
- `files.py`, the file lifecycle (`WarehouseFiles`, `BuildingFile`): the live file, its
  spare, the building file a refresh prepares beside them, the atomic swap and the lock;
- `tables.py`, table sync (`TableSync`): loading the curated Parquet tables into the building
  file, whole or per changed date, plus `partition_status`;
- `reader.py`, reads (`open_reader`, `query`, `describe`): read-only, and without access to any
  other file.
This module joins the first two into a refresh: `Warehouse.refresh`, or `Warehouse.refreshing`
for a session (`RefreshSession`) in which `build_curated` loads each mart into the building
file as soon as its model is built, while the others still build.

The building file starts from the spare (the file the previous refresh replaced, one refresh
behind) when no session still has it open, else from a copy of the live file, else (first
build, `full=True`) from an empty file. A copy costs reading and writing the whole history on
every refresh; bringing the spare forward costs only what changed since it was live (a new day
costs one day's rows, two on the spare). So the warehouse takes twice its size on disk.
`full=True` rebuilds the file from scratch. What these choices cost: docs/performance.md.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from delivery_lake.config import Settings
from delivery_lake.storage import Lake
from delivery_lake.transform import Model, Project, Runner
from delivery_lake.warehouse.errors import WarehouseError
from delivery_lake.warehouse.files import (
    HEADER_BYTES,
    LIVE_MODE,
    PRIVATE_MODE,
    BuildingFile,
    WarehouseFiles,
    file_fingerprint,
)
from delivery_lake.warehouse.reader import (
    REFUSED,
    QueryRefused,
    connect_read_only,
    describe,
    open_reader,
    query,
)
from delivery_lake.warehouse.tables import (
    META_COMMENT,
    META_TABLE,
    STATUS_TABLE,
    ZONE,
    TableRefresh,
    TableSync,
    curated_state,
    external_models,
    publish_external_table,
    warehouse_models,
)

__all__ = [
    "HEADER_BYTES",
    "LIVE_MODE",
    "META_COMMENT",
    "META_TABLE",
    "PRIVATE_MODE",
    "REFUSED",
    "ROW_GROUP_ROWS",
    "SLACK_ROW_GROUPS",
    "SPARE_CATCH_UP_SHARE",
    "STATUS_TABLE",
    "ZONE",
    "BuildingFile",
    "QueryRefused",
    "RefreshSession",
    "TableRefresh",
    "TableSync",
    "Warehouse",
    "WarehouseError",
    "WarehouseFiles",
    "WarehouseReport",
    "build_curated",
    "connect_read_only",
    "curated_state",
    "describe",
    "external_models",
    "file_fingerprint",
    "open_reader",
    "publish_external_table",
    "query",
    "warehouse_models",
]

ROW_GROUP_ROWS = 122_880  # DuckDB's row group size
# Each refresh leaves partly filled row groups behind (a day's remainder; a dimension
# reloaded whole leaves its deleted one). A checkpoint merges them and reclaims deleted
# rows ("vacuum") only once a table holds this many more row groups than its rows need,
# or a refresh deleted half a row group's worth of rows: merging rewrites neighbouring row
# groups, which costs a daily append far more than the append itself (docs/performance.md).
SLACK_ROW_GROUPS = 16
# A refresh that loaded more than this share of the file's rows (a full build, a long
# backfill) leaves a copy of the new file as the spare: catching the old one up next time
# would reload as much again, where a copy costs only reading and writing the file.
SPARE_CATCH_UP_SHARE = 0.25

log = logging.getLogger(__name__)


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


def worth_vacuuming(report: WarehouseReport, row_groups: Callable[[str], int]) -> bool:
    """Vacuum when tables were (re)built or dropped, this refresh deleted half a row group's
    worth of rows, or a changed table holds more than SLACK_ROW_GROUPS row groups beyond
    what its rows need (`row_groups(table)`: how many it holds; see SLACK_ROW_GROUPS)."""
    if any(t.mode in ("full", "dropped") for t in report.tables):
        return True
    if sum(t.rows_deleted for t in report.tables) >= ROW_GROUP_ROWS // 2:
        return True
    for refreshed in report.tables:
        needed = -(-refreshed.rows // ROW_GROUP_ROWS)
        if refreshed.mode == "incremental" and row_groups(refreshed.table) > needed + SLACK_ROW_GROUPS:
            return True
    return False


class Warehouse(WarehouseFiles):
    """The warehouse file at `path` (its lifecycle: `WarehouseFiles`), refreshed from the curated
    layer of `lake` for the models of `project`."""

    def __init__(self, lake: Lake, project: Project, path: Path | str):
        super().__init__(path)
        self.lake, self.project = lake, project

    def curated_state(self, model: Model) -> dict[str | None, dict[str, Any]]:
        """Partition (date, or None) -> its manifest, for the partitions whose data file exists."""
        return curated_state(self.lake, model)

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
        with self.locked():
            session = RefreshSession(self, full)
            try:
                session.open()
                yield session
                session.finish()
            finally:
                session.close()


class RefreshSession:
    """One refresh (see `Warehouse.refreshing`): the building file (`files.py`), the sync of its
    tables (`tables.py`), the worker that syncs them while models build, and the report."""

    def __init__(self, warehouse: Warehouse, full: bool):
        self.warehouse, self.full = warehouse, full
        self.report = WarehouseReport(str(warehouse.path))
        self._building = warehouse.new_building()
        # Published models and external tables, listed once: their specs are read from the lake.
        self.models = warehouse_models(warehouse.project, warehouse.lake)
        self.sync: TableSync | None = None
        self._started = time.monotonic()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def building(self) -> Path:
        """The file this refresh prepares, published when it finishes."""
        return self._building.path

    def open(self) -> None:
        """Put the building file in place (from the spare, a copy of the live file, or new) and open it."""
        warehouse, warnings = self.warehouse, self.report.warnings
        bases = ["spare", "copy", "new"] if warehouse.path.exists() and not self.full else ["new"]
        rebuild = False
        for base in bases:
            if base == "spare":
                taken = warehouse.take_spare(self._building, warnings)
                # Whatever changed the spare may have reached the live file too.
                rebuild = taken is None
                if not taken:
                    continue
            if base == "copy" and (rebuild or not warehouse.copy_live(self._building, warnings)):
                continue
            try:
                self.sync = TableSync.open(warehouse.lake, warehouse.project, self.models, self.building)
            except duckdb.Error:
                if base == "new":
                    raise
                # Unusable: a session in another process still has the spare open (DuckDB's file
                # lock refuses the write), or the file is not one this code can read.
                self._building.discard()
                continue
            self._building.make_private()
            self.report.base = base
            return

    # -- bringing tables up to date while models build
    def follow(self, skip: Iterable[str] | None = None) -> None:
        """Apply tables in a worker thread while models build: first, unless `skip` is None (a
        full rebuild), every table as the curated layer stands now, leaving out the dates in
        `skip` (about to be rebuilt); then each model passed to `feed` as its build finishes.
        The work of a refresh then overlaps the builds (catching the spare up and loading the
        early marts)."""
        sync = self._open_sync()
        first = None if skip is None else frozenset(skip)

        def work() -> None:
            try:
                if first is not None:
                    sync.apply(skip=first)
                while (name := self._queue.get()) is not None:
                    sync.apply([name])
            except BaseException as exc:  # re-raised by finish()
                self._error = exc

        self._worker = threading.Thread(target=work, name="warehouse-refresh", daemon=True)
        self._worker.start()

    def feed(self, name: str) -> None:
        if self._worker is not None:
            self._queue.put(name)

    # -- publishing
    def finish(self) -> None:
        """Apply every table once more, checkpoint, and publish the building file."""
        self._stop_worker()
        if self._error is not None:
            raise self._error
        sync, report = self._open_sync(), self.report
        sync.apply()
        report.tables = [*sync.results(), *sync.drop_stale()]
        report.partition_status = sync.refresh_partition_status()
        report.vacuumed = worth_vacuuming(report, sync.row_groups)
        sync.checkpoint(vacuum=report.vacuumed)
        sync.close()
        if report.base == "new":
            sync.settle()
        # The live file being replaced becomes the next refresh's starting point, unless this
        # refresh changed so much that a copy of the new file is the cheaper one.
        loaded, total = sum(t.rows_loaded for t in report.tables), sum(t.rows for t in report.tables)
        keep_live = report.base != "new" and loaded <= SPARE_CATCH_UP_SHARE * total
        self.warehouse.publish(self._building, keep_live, report.warnings)
        report.bytes = self.warehouse.path.stat().st_size
        report.seconds = round(time.monotonic() - self._started, 3)

    def close(self) -> None:
        """Release everything; after a failure, the building file is discarded unpublished."""
        self._stop_worker()
        if self.sync is not None:
            self.sync.close()
        self._building.discard()

    def _open_sync(self) -> TableSync:
        if self.sync is None:
            raise WarehouseError("the refresh session is not open")
        return self.sync

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None


def build_curated(
    settings: Settings, dates: list[str] | None = None, full: bool = False
) -> tuple[list[Any], WarehouseReport]:
    """Build the marts for `dates` (or everything with `full`) and refresh the warehouse.

    The one library entry point for "refresh the curated layer": the CLI's `build` and the
    benchmark call it; Dagster runs the same Runner and Warehouse through its assets.
    """
    lake = Lake.from_settings(settings)
    project = Project.load()
    with Warehouse(lake, project, settings.warehouse_path).refreshing(full=full) as session:
        # Tables are loaded while the models build: a new file from each model as it is built,
        # the spare first caught up with what is already built (the dates being built aside).
        session.follow(skip=None if full else dates or [])
        results = Runner(lake, project, settings).build(None, dates=dates, full_refresh=full, on_built=session.feed)
    return results, session.report
