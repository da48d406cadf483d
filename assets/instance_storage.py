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
(the Dagster UI started without our configuration reads the same history), with one exception:
a run plans each asset with one event naming its partitions as a subset, not one event per
partition, and only this storage reads those back per partition (a failed run's partitions as
failed, a running one's as in progress; see `supports_partition_subset_in_asset_materialization_planned_events`).
Concurrent processes (the UI, `run`, sensors) are what SQLite's WAL mode already allows: a
connection kept open does not hold a lock between transactions.

Selected in the instance's `dagster.yaml` (written by `assets.run.dagster_instance`) as
`storage: custom: {module: assets.instance_storage, class: PooledSqliteStorage}`. The production
profile's instance (infra/dagster.yaml) stores in PostgreSQL and does not use this.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
from dagster import AssetKey
from dagster._core.events import ASSET_EVENTS, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.base import PlannedMaterializationInfo
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import deserialize_value

# Dagster passes a run's planned events (one per asset and check, below) and a step's
# materializations over many partitions to `store_event_batch` only when this is set (read at
# every event): up to this many per call. Set when this storage is loaded, i.e. only in processes
# whose instance stores with it. 5,000 holds one asset's materializations of a run over 1,000
# dates x 5 clients in one batch (3,450 in
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
        planned events of a run (one per asset and check) and the materializations of a step
        over many partitions. Its
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
        # shard and one on the index, whose ids the tags need.
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            ids = self._insert_for_ids(conn, rows)
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

    @staticmethod
    def _insert_for_ids(conn: Any, rows: list[dict[str, Any]]) -> list[int]:
        """Insert the rows into the index's event log; their ids, in the rows' order.

        A plain executemany, the ids read back after: SQLAlchemy's `INSERT ... RETURNING` in
        parameter order went through its multi-row VALUES batches, 5x the time of the insert
        itself (1.4 s for a sparse backfill's 10,350 landing materializations). From its first
        insert to its commit the transaction holds SQLite's write lock, and a new row's id is the
        table's highest plus one (rowid allocation), so the rows just inserted hold the highest ids,
        in order. A guard checks that those ids are all this run's rows before they are used."""
        table = SqlEventLogStorageTable
        conn.execute(table.insert(), rows)
        last = conn.execute(db.select(db.func.max(table.c.id))).scalar_one()
        first = int(last) - len(rows) + 1
        run_id = rows[0]["run_id"]
        found = conn.execute(
            db.select(db.func.count()).select_from(table).where(table.c.id >= first, table.c.run_id == run_id)
        ).scalar_one()
        if found == len(rows):
            return list(range(first, int(last) + 1))
        raise RuntimeError(
            f"the event log's index holds {found} of the {len(rows)} rows just inserted for run {run_id} "
            "among its newest ids"
        )

    # -- a run's planned materializations: one event per asset, read back per partition ----------
    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        """A run over many partitions plans each asset with one event holding the run's partition
        subset, where Dagster's storages take one event per partition: the sparse backfill's runs
        created 15,170 planned events (3.5 s of run creation, as much again to store them). Dagster
        offers this only behind `DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS`, because its own
        reads of a partition's planned state look for events carrying that partition, and a failed
        run's partitions would no longer read as failed (nor a running one's as in progress). The
        two reads below also expand the subset events, so those states hold (tests/test_instance_storage.py)."""
        return True

    def _subset_planned(
        self, asset_key: AssetKey, after_storage_id: int | None = None, newest_first: bool = False
    ) -> Iterator[tuple[int, str, Any]]:
        """(storage id, run id, partition subset) of the asset's planned events that name a subset
        of partitions rather than one partition, oldest first (or newest first)."""
        table = SqlEventLogStorageTable
        query = db.select(table.c.id, table.c.run_id, table.c.event).where(
            table.c.asset_key == asset_key.to_string(),
            table.c.partition.is_(None),
            table.c.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value,
        )
        if after_storage_id is not None:
            query = query.where(table.c.id > after_storage_id)
        # events from before the asset was wiped do not count, as in Dagster's own queries
        query = self._add_assets_wipe_filter_to_query(query, self._get_assets_details([asset_key]), [asset_key])
        query = query.order_by(table.c.id.desc() if newest_first else table.c.id.asc())
        with self.index_connection() as conn:
            rows = conn.execute(query).fetchall()
        for storage_id, run_id, body in rows:
            event = deserialize_value(body, EventLogEntry)
            planned = event.get_dagster_event().event_specific_data
            subset = getattr(planned, "partitions_subset", None)
            if subset is not None:
                yield int(storage_id), str(run_id), subset

    def get_latest_asset_partition_materialization_attempts_without_materializations(
        self, asset_key: AssetKey, after_storage_id: int | None = None
    ) -> Mapping[str, tuple[str, int]]:
        """Partition -> (run id, storage id) of its latest planned materialization when no
        materialization followed it (in progress or failed: the caller asks the run's status).
        Dagster's answer from events planned per partition, then the subset events laid over it."""
        latest = dict(
            super().get_latest_asset_partition_materialization_attempts_without_materializations(
                asset_key, after_storage_id=after_storage_id
            )
        )
        planned: dict[str, tuple[str, int]] = {}
        for storage_id, run_id, subset in self._subset_planned(asset_key, after_storage_id):
            for key in subset.get_partition_keys():
                planned[str(key)] = (run_id, storage_id)  # oldest first: a later event replaces it
        if not planned:
            return latest
        table = SqlEventLogStorageTable
        since = min(storage_id for _run, storage_id in planned.values())
        by_partition = (
            db.select(table.c.partition, db.func.max(table.c.id))
            .where(
                table.c.asset_key == asset_key.to_string(),
                table.c.dagster_event_type.in_(
                    [DagsterEventType.ASSET_MATERIALIZATION.value, DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value]
                ),
                table.c.partition.is_not(None),
                table.c.id > since,
            )
            .group_by(table.c.partition)
        )
        with self.index_connection() as conn:
            # the newest materialization or per-partition planned event of each partition since
            newer = {str(p): int(i) for p, i in conn.execute(by_partition).fetchall()}
        for key, (run_id, storage_id) in planned.items():
            if newer.get(key, 0) > storage_id:
                continue  # materialized since, or planned again one by one (then `latest` has it)
            latest[key] = (run_id, storage_id)
        return latest

    def get_latest_planned_materialization_info(
        self, asset_key: AssetKey, partition: str | None = None
    ) -> PlannedMaterializationInfo | None:
        """The latest planned materialization of the asset (of one partition: from events planned
        for it alone or for a subset that holds it)."""
        found = super().get_latest_planned_materialization_info(asset_key, partition)
        if partition is None:
            return found  # the subset events are among the asset's planned events already
        for storage_id, run_id, subset in self._subset_planned(asset_key, newest_first=True):
            if found is not None and found.storage_id > storage_id:
                break
            if partition in {str(k) for k in subset.get_partition_keys()}:
                return PlannedMaterializationInfo(storage_id=storage_id, run_id=run_id)
        return found

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
