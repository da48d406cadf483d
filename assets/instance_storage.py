"""The embedded Dagster instance's storage: Dagster's SQLite storage, with event-log connections kept.

Dagster's SQLite event log builds a new SQLAlchemy engine for every write and closes its SQLite
connection afterwards (`NullPool`). Each event therefore paid for an engine (whose compiled
statement cache dies with it, so every INSERT was compiled again) and for closing the last
connection to a WAL database, which checkpoints the WAL into the file. A run over a span of dates
writes an event per partition and asset (a planned event and a materialization each, mirrored in
the index shard): 3,782 events for a backfill of 140 order partitions over 93 dates, where that
cost was a third of the run's wall time (issue 24, docs/performance.md).

`PooledSqliteEventLogStorage` keeps one engine per database file (the index shard and the most
recently used run shards) with SQLAlchemy's default pool for a SQLite file, so a connection
stays open between events. The files, the schema and what is written are Dagster's own; only
connection handling differs, so an instance home written by either storage is read by the other
(the Dagster UI started without our configuration reads the same history). Concurrent processes
(the UI, `run`, sensors) are what SQLite's WAL mode already allows: a connection kept open does
not hold a lock between transactions.

Selected in the instance's `dagster.yaml` (written by `assets.run.dagster_instance`) as
`storage: custom: {module: assets.instance_storage, class: PooledSqliteStorage}`. The production
profile's instance (infra/dagster.yaml) stores in PostgreSQL and does not use this.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory

# Dagster passes a run's planned events and a step's materializations over many partitions to
# `store_event_batch` only when this is set (read at every event): up to this many per call.
# Set when this storage is loaded, i.e. only in processes whose instance stores with it.
# 5,000 holds one asset's events of a run over 1,000 dates x 5 clients in one batch (3,450 in
# the benchmark's sparse history, written in 7 batches of 500 before: the storage's py-spy
# samples 6.2 -> 5.7 s; end to end within the host's noise, docs/performance.md 2026-12-08);
# a batch is a few MB of event objects while it waits.
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "5000")

# Engines kept per process: the index shard plus the run shards a process writes at once
# (a run and the checks that read it); an older run shard's engine is disposed.
MAX_ENGINES = 8


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log, with an engine (and its open connection) kept per database file."""

    def __init__(self, base_dir: str, inst_data: Any = None):
        self._engines: OrderedDict[str, Any] = OrderedDict()
        self._engines_pid = os.getpid()
        self._engines_lock = threading.Lock()
        self._tables: set[str] = set()
        self._asset_key_cols: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)

    def _engine(self, shard: str) -> Any:
        with self._engines_lock:
            if self._engines_pid != os.getpid():
                # A forked child must not use its parent's SQLite connections: forget them
                # without closing them (the parent still owns them) and open its own.
                for engine in self._engines.values():
                    engine.dispose(close=False)
                self._engines.clear()
                self._engines_pid = os.getpid()
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = create_engine(
                self.conn_string_for_shard(shard), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
            )
            self._engines[shard] = engine
            while len(self._engines) > MAX_ENGINES:
                _old, evicted = self._engines.popitem(last=False)
                evicted.dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Any]:
        # As Dagster's: one connection at a time per storage object (its `_db_lock`), the shard's
        # schema created on first use, each use one transaction.
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Dagster's `store_event` for each event, in one transaction per database file.

        Dagster hands a batch here when `DAGSTER_EVENT_BATCH_SIZE` is set (set above): the
        planned events of a run and the materializations of a step over many partitions. Its
        own SQLite storage stores them one by one, a commit on the run shard and two or three
        on the index per event; here a batch is one commit on the run shard and one on the index,
        and the asset's row is written once per asset and kind of event.
        Events other than asset events (checks, run status) keep Dagster's path, one by one, in
        their place: a run's planned events come sorted by asset key, its checks' among them, and
        a batch holding one check's planned event went whole the slow way (a sparse backfill's
        landing run: 1.0 s)."""
        for (asset_events, _run), group in itertools.groupby(
            events, key=lambda e: (e.is_dagster_event and e.dagster_event_type in ASSET_EVENTS, e.run_id)
        ):
            if asset_events:
                self._store_asset_batch(list(group))
            else:
                for event in group:
                    self.store_event(event)

    def _store_asset_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Asset events of one run, in one transaction per database file."""
        # Each event serialized once into its row; the rows go in as one executemany on the run
        # shard and one on the index (which returns their ids, in order, for the tags).
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            inserted = conn.execute(
                SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id, sort_by_parameter_order=True),
                rows,
            )
            ids = [int(r[0]) for r in inserted]
            if len(ids) != len(events):
                raise RuntimeError("the event log's index returned no id for an asset event")
            # The asset's row ends as the last event of each type leaves it (each sets its columns
            # outright): of a step's 541 materializations of one asset, Dagster's path serialized
            # and upserted the row 541 times, an INSERT failing on the key before each UPDATE.
            last: dict[tuple[Any, Any], int] = {}
            for i, event in enumerate(events):
                dagster_event = event.get_dagster_event()
                last[(dagster_event.asset_key, dagster_event.event_type_value)] = i
            for i in sorted(last.values()):
                self._store_asset_event(conn, events[i], ids[i])
            self._store_asset_event_tags(conn, events, ids)

    def _has_asset_key_col_on_connection(self, conn: Any, column_name: str) -> bool:
        # Asked on every asset event (inspecting the table's columns each time); a column, once
        # there, stays: migrations add columns.
        if column_name in self._asset_key_cols:
            return True
        found = super()._has_asset_key_col_on_connection(conn, column_name)
        if found:
            self._asset_key_cols.add(column_name)
        return found

    def has_table(self, table_name: str) -> bool:
        # Asked on every asset event (whether the index has the tags table); Dagster's answer
        # built an engine per question. A table, once there, stays: migrations add tables.
        if table_name in self._tables:
            return True
        engine = self._engine(INDEX_SHARD_NAME)
        with engine.connect() as conn:
            found = bool(engine.dialect.has_table(conn, table_name))
        if found:
            self._tables.add(table_name)
        return found

    def _close_engines(self) -> None:
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def wipe(self) -> None:
        # wiping deletes the run shards' files: no connection may stay open on a deleted file
        self._close_engines()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._close_engines()


class PooledSqliteStorage(DagsterSqliteStorage):
    """`storage: sqlite` (runs, event logs, schedules under `base_dir`), its event log pooled."""

    def __init__(self, base_dir: str, inst_data: Any = None):
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
