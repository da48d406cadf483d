"""The embedded Dagster instance's storage (assets/instance_storage.py): Dagster's SQLite storage
with event-log connections kept open. What it writes must be what Dagster's own storage reads,
across processes and forks, and the instance file that selects it must be upgraded, not clobbered."""

import multiprocessing
import os
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as db
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.event_api import EventLogRecord
from dagster._core.events import ASSET_EVENTS, DagsterEventType
from dagster._core.storage.event_log.schema import AssetKeyTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from dagster_shared.serdes import deserialize_value

from assets.instance_storage import MAX_ENGINES, PooledSqliteEventLogStorage
from assets.run import EARLIER_INSTANCE_YAMLS, dagster_instance, instance_yaml
from delivery_lake.config import Settings

DAYS = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-03-01")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def daily(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partitions": len(context.partition_keys)})


# Two years of days: a run over most of them is a sparse history's backfill, one asset at a time.
YEARS = dg.DailyPartitionsDefinition(start_date="2023-01-01", end_date="2025-01-01")


@dg.asset(partitions_def=YEARS, backfill_policy=dg.BackfillPolicy.single_run())
def history(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partitions": len(context.partition_keys)})


@dg.asset
def whole() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 1})


def _materialize_range(instance: dg.DagsterInstance, first: str, last: str, asset: dg.AssetsDefinition = daily) -> str:
    result = dg.materialize(
        [asset],
        instance=instance,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
    assert result.success
    return result.run_id


def _count_batches(storage: PooledSqliteEventLogStorage, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batches `storage.store_event_batch` is handed from now on (each still stored)."""
    batches: list[int] = []
    store_batch = storage.store_event_batch

    def counted(events):  # the real batch store, counted
        batches.append(len(events))
        store_batch(events)

    monkeypatch.setattr(storage, "store_event_batch", counted)
    return batches


def _plain_yaml(base: Path) -> None:
    """An instance file for Dagster's own SQLite storage on `base` (not ours)."""
    (base / "plain.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {base}\ntelemetry:\n  enabled: false\n")


def _plain_reader(home: Path) -> dg.DagsterInstance:
    """Dagster's own SQLite storage on the same folder: what the UI reads when started without ours."""
    return dg.DagsterInstance.from_config(str(home), config_filename="plain.yaml")


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    path.mkdir()
    _plain_yaml(path)
    return path


def test_a_range_run_writes_through_kept_connections_and_dagster_reads_it(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = dagster_instance(Settings.from_env(data_dir=tmp_path / "data"))
    storage = instance.event_log_storage
    assert isinstance(storage, PooledSqliteEventLogStorage)
    batches = _count_batches(storage, monkeypatch)
    run_id = _materialize_range(instance, "2025-01-01", "2025-01-31")
    # the run's plan is one event (its 31 partitions as a subset), the 31 materializations a batch
    assert batches == [31]
    for _ in range(MAX_ENGINES + 2):  # more run shards than engines kept: the oldest are closed
        assert dg.materialize([whole], instance=instance).success
    # the index shard's engine and its connection are reused, not rebuilt per event
    assert len(storage._engines) <= MAX_ENGINES
    index = storage._engine("index")
    assert storage._engine("index") is index
    # its connections stay open and idle between events (a second one answers `has_table`
    # while a write holds the first)
    assert index.pool.checkedout() == 0 and index.pool.checkedin() in (1, 2)

    plain = _plain_reader(home)
    assert not isinstance(plain.event_log_storage, PooledSqliteEventLogStorage)
    keys = plain.get_materialized_partitions(daily.key)
    assert keys == {f"2025-01-{d:02d}" for d in range(1, 32)}
    logs = plain.all_logs(run_id)
    materialized = [e for e in logs if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"]
    assert len(materialized) == 31
    assert materialized[0].dagster_event.event_specific_data.materialization.metadata["partitions"].value == 31
    assert plain.get_latest_materialization_event(whole.key) is not None
    # what a batch writes beside the events: the asset's latest materialization, partition tags
    latest = plain.get_latest_materialization_event(daily.key)
    assert latest is not None and latest.dagster_event is not None
    assert latest.dagster_event.partition == "2025-01-31"
    one = plain.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=daily.key, asset_partitions=["2025-01-15"]), limit=5
    ).records
    assert [r.partition_key for r in one] == ["2025-01-15"]
    assert len(plain.get_runs()) == 1 + MAX_ENGINES + 2


def test_a_batch_leaves_the_asset_rows_and_tags_dagsters_event_by_event_path_leaves(home: Path, tmp_path: Path) -> None:
    """A batch writes the asset's row once per kind of event (not once per partition) and its rows
    in one statement per database: the same asset row, event rows and partition tags as Dagster's
    own storage given the same events one at a time."""
    instance = dagster_instance(Settings.from_env(data_dir=tmp_path / "data"))
    run_id = _materialize_range(instance, "2025-01-01", "2025-01-20")
    assert dg.materialize([whole], instance=instance).success
    ours = instance.event_log_storage
    events = [e for e in ours.get_logs_for_run(run_id) if e.is_dagster_event and e.dagster_event_type in ASSET_EVENTS]
    assert len(events) == 21  # the plan (the 20 partitions as one subset), 20 materialized
    theirs = SqliteEventLogStorage(str(tmp_path / "theirs"))
    for e in events:
        theirs.store_event(e)

    def asset_row(storage: SqliteEventLogStorage) -> tuple:
        with storage.index_connection() as conn:
            [(run, stamp, last)] = conn.execute(
                db.select(
                    AssetKeyTable.c.last_run_id,
                    AssetKeyTable.c.last_materialization_timestamp,
                    AssetKeyTable.c.last_materialization,
                ).where(AssetKeyTable.c.asset_key == daily.key.to_string())
            ).fetchall()
        return run, stamp, deserialize_value(last, EventLogRecord).event_log_entry

    assert asset_row(ours) == asset_row(theirs)
    assert asset_row(ours)[2].dagster_event.partition == "2025-01-20"
    tags = lambda s: sorted(  # noqa: E731
        tuple(sorted(t.items())) for t in s.get_event_tags_for_asset(daily.key)
    )
    assert tags(ours) == tags(theirs) and len(tags(ours)) == 20
    stored = lambda s: [  # noqa: E731
        (r.event_log_entry.dagster_event.event_type_value, r.partition_key)
        for r in s.get_records_for_run(
            run_id,
            of_type={DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_MATERIALIZATION_PLANNED},
            limit=100,
        ).records
    ]
    assert stored(ours) == stored(theirs) and len(stored(ours)) == 21


def _child_run(home: str) -> None:
    os.environ["DAGSTER_HOME"] = home
    # a fork of a process whose storage holds open connections: the child opens its own
    instance = dg.DagsterInstance.get()
    _materialize_range(instance, "2025-02-01", "2025-02-10")


@dg.asset_check(asset=daily, blocking=True)
def daily_rows() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def test_a_batch_with_a_check_event_among_asset_events_keeps_both_paths_and_the_order(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's events mix asset events with its checks' (a run's planned events come sorted by
    asset key, the checks' among the assets'): the asset events on either side of a check's still
    go in as batches, the check's by Dagster's own path, and the stored order is the order given."""
    instance = dagster_instance(Settings.from_env(data_dir=tmp_path / "data"))
    result = dg.materialize(
        [daily, daily_rows],
        instance=instance,
        tags={"dagster/asset_partition_range_start": "2025-01-01", "dagster/asset_partition_range_end": "2025-01-10"},
    )
    assert result.success
    logged = instance.event_log_storage.get_logs_for_run(result.run_id)
    done = [e for e in logged if e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION]
    checks = [e for e in logged if e.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED]
    assert len(done) == 10 and len(checks) == 1
    mixed = [*done[:4], checks[0], *done[4:]]

    fresh = PooledSqliteEventLogStorage(str(tmp_path / "fresh"))
    batches: list[int] = []
    one_by_one: list[str] = []
    fast, slow = fresh._store_asset_batch, fresh.store_event

    def batched(events):  # the real batch path, counted
        batches.append(len(events))
        fast(events)

    def single(event):  # Dagster's own path, counted
        one_by_one.append(event.dagster_event_type.value)
        slow(event)

    monkeypatch.setattr(fresh, "_store_asset_batch", batched)
    monkeypatch.setattr(fresh, "store_event", single)
    fresh.store_event_batch(mixed)
    assert batches == [4, 6] and one_by_one == ["ASSET_CHECK_EVALUATION_PLANNED"]
    stored = fresh.get_logs_for_run(result.run_id)
    assert [(e.dagster_event_type, e.dagster_event.partition) for e in stored] == [
        (e.dagster_event_type, e.dagster_event.partition) for e in mixed
    ]
    # the check's planned execution is recorded where Dagster reads it
    assert fresh.get_asset_check_execution_history(daily_rows.check_key, limit=5)


def test_a_forked_process_and_a_second_process_write_beside_the_first(home: Path, tmp_path: Path) -> None:
    instance = dagster_instance(Settings.from_env(data_dir=tmp_path / "data"))
    _materialize_range(instance, "2025-01-01", "2025-01-05")
    storage = instance.event_log_storage
    assert isinstance(storage, PooledSqliteEventLogStorage)
    parent_index = storage._engine("index")

    forked = multiprocessing.get_context("fork").Process(
        target=_materialize_range, args=(instance, "2025-02-01", "2025-02-03")
    )
    forked.start()
    forked.join(120)
    spawned = multiprocessing.get_context("spawn").Process(target=_child_run, args=(str(home),))
    spawned.start()
    spawned.join(120)
    assert (forked.exitcode, spawned.exitcode) == (0, 0)
    # the parent's connection still works after its child wrote through its own
    assert storage._engine("index") is parent_index
    _materialize_range(instance, "2025-01-20", "2025-01-21")

    keys = _plain_reader(home).get_materialized_partitions(daily.key)
    expected = {f"2025-01-0{d}" for d in range(1, 6)} | {"2025-01-20", "2025-01-21"}
    expected |= {f"2025-02-{d:02d}" for d in range(1, 11)}
    assert keys == expected


def test_the_instance_file_is_upgraded_from_ours_and_left_alone_when_someone_else_wrote_it(
    home: Path, tmp_path: Path
) -> None:
    settings = Settings.from_env(data_dir=tmp_path / "data")
    config = home / "dagster.yaml"
    config.write_text(EARLIER_INSTANCE_YAMLS[0])
    instance = dagster_instance(settings)
    assert config.read_text() == instance_yaml(home.resolve())
    assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
    # the runs `make ui` launches: one per trigger at a time (a drop's model run after its marts
    # run), one of a drop at a time (its refresh after its landing)
    coordinator = instance.run_coordinator
    assert type(coordinator).__name__ == "QueuedRunCoordinator"
    assert coordinator.get_run_queue_config().tag_concurrency_limits == [
        {"key": key, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        for key in ("delivery_lake/trigger", "delivery_lake/drop")
    ]
    # and forked from a server that has imported the heavy libraries once (assets/run_launcher.py)
    assert type(instance.run_launcher).__name__ == "WarmRunLauncher"
    # loaded without DAGSTER_HOME set, as `DagsterInstance.from_config(folder)` does
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME")
        assert isinstance(dg.DagsterInstance.from_config(str(home)).event_log_storage, PooledSqliteEventLogStorage)
    # a home moved elsewhere: our file follows it
    config.write_text(instance_yaml(tmp_path / "elsewhere"))
    dagster_instance(settings)
    assert config.read_text() == instance_yaml(home.resolve())

    edited = f"telemetry:\n  enabled: false\nstorage:\n  sqlite:\n    base_dir: {home}\n"
    config.write_text(edited)
    instance = dg.DagsterInstance.get()
    assert config.read_text() == edited
    assert not isinstance(dagster_instance(settings).event_log_storage, PooledSqliteEventLogStorage)
    assert config.read_text() == edited


def test_a_run_over_hundreds_of_partitions_stores_its_materializations_in_one_batch(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """701 days in one run: its materializations in one batch (at a batch size of 500 they went in
    as 500 + 201), its plan in one event, and all of them readable."""
    instance = dagster_instance(Settings.from_env(data_dir=tmp_path / "data"))
    batches = _count_batches(instance.event_log_storage, monkeypatch)
    _materialize_range(instance, "2023-01-01", "2024-12-01", asset=history)
    assert batches == [701]
    plain = _plain_reader(home)
    done = plain.get_materialized_partitions(history.key)
    assert len(done) == 701 and {"2023-01-01", "2024-02-29", "2024-12-01"} <= done and "2024-12-02" not in done


# -- a run's plan as one event per asset: failed and in-progress partitions still read as such ----
CLIENTS = dg.DynamicPartitionsDefinition(name="test_clients")
DATES_BY_CLIENT = dg.MultiPartitionsDefinition(
    {"date": dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-02-01"), "client": CLIENTS}
)


def _seen_in_flight(context: dg.AssetExecutionContext) -> None:
    """Raises (the run fails) when its tags ask; records which partitions the storage reads as in
    progress while the run is running."""
    status = get_and_update_asset_status_cache_value(
        context.instance, context.asset_key, context.assets_def.partitions_def
    )
    assert status is not None
    in_progress = status.deserialize_in_progress_partition_subsets(context.assets_def.partitions_def)
    IN_FLIGHT[context.run.run_id] = sorted(in_progress.get_partition_keys())
    if context.run.tags.get("fail"):
        raise RuntimeError("this run fails")


IN_FLIGHT: dict[str, list[str]] = {}


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def flaky_daily(context: dg.AssetExecutionContext) -> None:
    _seen_in_flight(context)


@dg.asset(partitions_def=DATES_BY_CLIENT, backfill_policy=dg.BackfillPolicy.single_run())
def flaky_facts(context: dg.AssetExecutionContext) -> None:
    _seen_in_flight(context)


def _statuses(instance: dg.DagsterInstance, asset: dg.AssetsDefinition) -> tuple[list[str], list[str]]:
    """(materialized, failed) partitions as the UI's partition status reads them."""
    partitions_def = asset.partitions_def
    assert partitions_def is not None
    with partition_loading_context(dynamic_partitions_store=instance):
        status = get_and_update_asset_status_cache_value(instance, asset.key, partitions_def)
        assert status is not None
        done = status.deserialize_materialized_partition_subsets(partitions_def).get_partition_keys()
        failed = status.deserialize_failed_partition_subsets(partitions_def).get_partition_keys()
        return sorted(map(str, done)), sorted(map(str, failed))


def _range_run(instance: dg.DagsterInstance, asset: dg.AssetsDefinition, first: str, last: str, fail: bool) -> str:
    result = dg.materialize(
        [asset],
        instance=instance,
        raise_on_error=False,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
            **({"fail": "1"} if fail else {}),
        },
    )
    assert result.success is not fail
    return result.run_id


@pytest.mark.parametrize(
    ("asset", "runs"),
    [
        # (first, last, fails): a failed range, part of it redone, then a failed run over some of that
        (
            flaky_daily,
            [
                ("2025-01-01", "2025-01-10", True),
                ("2025-01-04", "2025-01-06", False),
                ("2025-01-06", "2025-01-07", True),
            ],
        ),
        (
            flaky_facts,
            [
                ("a|2025-01-01", "c|2025-01-04", True),
                ("b|2025-01-02", "c|2025-01-03", False),
                ("a|2025-01-03", "b|2025-01-03", True),
            ],
        ),
    ],
    ids=["dates", "dates-by-client"],
)
def test_a_run_planned_in_one_event_shows_its_partitions_in_progress_then_failed_as_dagster_does(
    home: Path, tmp_path: Path, asset: dg.AssetsDefinition, runs: list[tuple[str, str, bool]]
) -> None:
    """Our storage plans a run's partitions in one event per asset; Dagster's own storage writes one
    per partition, from which the UI reads a running run's partitions as in progress and a failed
    run's as failed. Given the same runs, both read the same states, partition by partition."""
    ours = dagster_instance(Settings.from_env(data_dir=tmp_path / "data"))
    assert ours.event_log_storage.supports_partition_subset_in_asset_materialization_planned_events
    (tmp_path / "theirs").mkdir()
    _plain_yaml(tmp_path / "theirs")
    theirs = _plain_reader(tmp_path / "theirs")
    assert not theirs.event_log_storage.supports_partition_subset_in_asset_materialization_planned_events
    seen: dict[str, list] = {"ours": [], "theirs": []}
    for name, instance in (("ours", ours), ("theirs", theirs)):
        instance.add_dynamic_partitions("test_clients", ["a", "b", "c"])
        for first, last, fail in runs:
            run_id = _range_run(instance, asset, first, last, fail)
            seen[name].append((IN_FLIGHT[run_id], _statuses(instance, asset)))
        plan = [
            e
            for e in instance.all_logs(run_id)
            if e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        ]
        assert len(plan) == (1 if name == "ours" else len(IN_FLIGHT[run_id]))
    assert seen["ours"] == seen["theirs"]
    # and what that is: the first run's partitions in progress while it ran, then failed; the
    # second's redone; the third's failed again, whatever an earlier run did to them
    (first_running, (_, first_failed)), (_, (second_done, second_failed)), (third_running, (_, third_failed)) = seen[
        "ours"
    ]
    assert first_running == first_failed and len(first_failed) == (10 if asset is flaky_daily else 12)
    assert set(second_done) < set(first_failed) and set(second_failed) == set(first_failed) - set(second_done)
    assert set(third_running) <= set(third_failed) and set(third_running) & set(second_done)


def test_the_latest_run_of_a_partition_is_the_run_that_planned_it_in_a_subset(home: Path, tmp_path: Path) -> None:
    """The UI's "latest run" of a partition: the newest run whose plan holds it, whether the plan
    named it alone or in a subset; a partition no run planned has none."""
    instance = dagster_instance(Settings.from_env(data_dir=tmp_path / "data"))
    wide = _materialize_range(instance, "2025-01-01", "2025-01-20")
    narrow = _materialize_range(instance, "2025-01-05", "2025-01-06")
    single = dg.materialize([daily], instance=instance, partition_key="2025-01-19")
    latest = lambda p: instance.get_latest_planned_materialization_info(daily.key, partition=p)  # noqa: E731
    assert latest("2025-01-01").run_id == wide and latest("2025-01-20").run_id == wide
    assert latest("2025-01-05").run_id == narrow and latest("2025-01-06").run_id == narrow
    assert latest("2025-01-19").run_id == single.run_id
    assert latest("2025-01-21") is None and latest("2025-02-15") is None
    assert instance.get_latest_planned_materialization_info(daily.key).run_id == single.run_id
