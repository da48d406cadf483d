"""refresh_sensor (assets/refresh.py): a landing run that ended becomes one run of everything
downstream of the dates it changed, and that run keeps the gate at partition grain."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry

from assets.curated import CURATED_PARTITIONED_KEYS, WAREHOUSE_KEY
from assets.definitions import defs
from assets.ml import FEATURES_KEY, MODEL_KEY, RISK_KEY
from assets.refresh import (
    AFTER_RUNS_TAG,
    PART_TAG,
    RANGE_END,
    RANGE_START,
    TRIGGER_TAG,
    Landed,
    landed_since,
    plan_refresh,
    refresh_sensor,
)
from assets.resources import LakehouseResource
from assets.run_tags import DROP_TAG, PRIORITY_TAG
from assets.sensors import inbox_sensor
from delivery_lake import gate
from delivery_lake.config import Settings
from delivery_lake.generator import generate
from delivery_lake.ml import registry
from delivery_lake.ml.features import TABLE as FEATURES_TABLE
from delivery_lake.ml.features import ZONE as FEATURES_ZONE
from delivery_lake.quality import Quality
from delivery_lake.storage import Lake
from delivery_lake.warehouse.reader import query
from tests.helpers import START
from tests.test_quality import edit_rows

NEW_DAY = "2026-01-07"
FEEDS = ("orders", "deliveries", "customer_feedback")


def _resource(s: Settings) -> LakehouseResource:
    return LakehouseResource(data_dir=str(s.data_dir), lake_url=s.lake_url, inbox_dir=str(s.inbox_dir))


def _execute(instance: dg.DagsterInstance, settings: Settings, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """A sensor's run request executed as the daemon would launch it: its assets (with their
    checks), its tags (the partition range), this lake."""
    resources = {**(defs.resources or {}), "lakehouse": _resource(settings)}
    return dg.materialize(
        [*defs.assets, *(defs.asset_checks or [])],
        selection=dg.AssetSelection.assets(*(request.asset_selection or [])),
        instance=instance,
        resources=resources,
        tags=request.tags,
        raise_on_error=False,
    )


def _execute_refresh(
    instance: dg.DagsterInstance, settings: Settings, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    """A refresh request run by its job (`refresh_after_landing`, in-process executor), the lake's
    locations as run config, as a launched run gets them."""
    job = defs.resolve_job_def("refresh_after_landing")
    assert job.executor_def is dg.in_process_executor
    lakehouse = {
        "data_dir": str(settings.data_dir),
        "lake_url": settings.lake_url,
        "inbox_dir": str(settings.inbox_dir),
    }
    return job.execute_in_process(
        run_config={"resources": {"lakehouse": {"config": lakehouse}}},
        instance=instance,
        tags=request.tags,
        asset_selection=request.asset_selection,
        raise_on_error=False,
    )


def _tick(instance: dg.DagsterInstance, settings: Settings, sensor: Any, cursor: str | None) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, resources={"lakehouse": _resource(settings)}, cursor=cursor) as ctx:
        result = sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


def _kpi_clients(settings: Settings, day: str) -> set[str]:
    _cols, rows = query(
        settings.warehouse_path, f"SELECT DISTINCT client_id FROM agg_client_daily_kpis WHERE date = DATE '{day}'"
    )
    return {r[0] for r in rows}


@pytest.mark.slow  # three Dagster runs over a small lake (about 40 s): the full suite only
def test_a_landed_day_becomes_one_refresh_run_and_a_blocked_partition_holds_back_only_itself(
    tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = tmp_path / "inbox"
    generate(inbox, start=START, days=3, clients=3, orders_per_day=300, seed=5, dirty_rate=0.0, progress=False)
    # this test's own MLflow store, whatever an earlier test of the session left in the environment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_ARTIFACTS_DIR", raising=False)
    settings = Settings.from_env(data_dir=tmp_path / "data", lake_url=str(tmp_path / "lake"), inbox_dir=inbox)
    held = tmp_path / "held"
    for t in FEEDS:
        (held / t).mkdir(parents=True)
        shutil.move(str(inbox / t / f"{NEW_DAY}.csv"), held / t / f"{NEW_DAY}.csv")
    instance = run_cli.instance
    # The first two days through `delivery-lake run`, which builds their downstream itself:
    # the sensor has nothing to add, and moves past them.
    assert run_cli(settings).success
    first = _tick(instance, settings, refresh_sensor, None)
    assert not first.run_requests and first.skip_reason and int(first.cursor or 0) > 0
    inbox_cursor = _tick(instance, settings, inbox_sensor, None).cursor

    # The new day arrives, C002's deliveries too broken to pass their gate (12 rows out of range).
    for t in FEEDS:
        shutil.copy(held / t / f"{NEW_DAY}.csv", inbox / t / f"{NEW_DAY}.csv")
    edit_rows(inbox / "deliveries" / f"{NEW_DAY}.csv", "C002", 12, "distance_km", "-1")
    landing = _tick(instance, settings, inbox_sensor, inbox_cursor)
    # One landing run, and the drop's refresh runs requested with it: one run of a drop at a time
    # (infra/dagster.yaml), the landing first in the queue, so the refresh starts when it has ended.
    land, *with_drop = landing.run_requests
    drop = land.tags[DROP_TAG]
    assert land.tags[PRIORITY_TAG] == "2" and land.job_name == "land_small"
    assert [(r.tags[PART_TAG], r.tags[DROP_TAG], r.tags[PRIORITY_TAG], r.job_name) for r in with_drop] == [
        (part, drop, "1", "refresh_after_landing") for part in ("marts", "model", "scores")
    ]
    assert [set(r.asset_selection or []) for r in with_drop] == [
        {*CURATED_PARTITIONED_KEYS, FEATURES_KEY, WAREHOUSE_KEY},
        {MODEL_KEY},
        {RISK_KEY, WAREHOUSE_KEY},
    ]
    assert (with_drop[0].tags[RANGE_START], with_drop[0].tags[RANGE_END]) == (NEW_DAY, NEW_DAY)
    builds: list[int] = []
    real_build = Quality.build_docs

    def counted(self: Quality, identifiers: list | None = None) -> Path:  # the real build, counted
        builds.append(len(identifiers or []))
        return real_build(self, identifiers)

    monkeypatch.setattr(Quality, "build_docs", counted)
    landed = _execute(instance, settings, land)
    assert landed.success
    # The run's three suite checks built their Data Docs once, when the run ended, and every
    # page their metadata links is there.
    evaluations = landed.get_asset_check_evaluations()
    assert len(evaluations) == 3 and len(builds) == 1 and builds[0] >= 3
    linked = [
        Path(row["data_docs"].removeprefix("file://"))
        for e in evaluations
        for row in e.metadata["per_partition"].data.values()
        if row["data_docs"]
    ]
    assert len(linked) >= 3 and all(p.is_file() for p in linked)
    lake = Lake.from_settings(settings)
    assert gate.blocked_partitions(lake, "deliveries") == {(NEW_DAY, "C002")}

    # No refresh of the drop has started after its landing ended (here none is even queued): the
    # sensor refreshes the landing's dates itself.
    refresh = _tick(instance, settings, refresh_sensor, first.cursor)
    # Everything downstream: the marts, the features over the new date and the warehouse in one
    # run; the model in one queued behind it, then the scores and the warehouse again.
    assert [set(r.asset_selection or []) for r in refresh.run_requests] == [
        {*CURATED_PARTITIONED_KEYS, FEATURES_KEY, WAREHOUSE_KEY},
        {MODEL_KEY},
        {RISK_KEY, WAREHOUSE_KEY},
    ]
    request, ml, scores = refresh.run_requests
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (NEW_DAY, NEW_DAY)
    assert RANGE_START not in ml.tags and RANGE_START not in scores.tags
    assert [r.tags[PART_TAG] for r in refresh.run_requests] == ["marts", "model", "scores"]
    # a drop's landing and its refresh go ahead of releases queued before them
    for r in (request, ml, scores):
        assert r.tags[TRIGGER_TAG] == "refresh" and r.tags[AFTER_RUNS_TAG] == landed.run_id[:8]
        assert r.tags[PRIORITY_TAG] == "1"
    assert int(refresh.cursor or 0) > int(first.cursor or 0)

    assert not (settings.warehouse_path.exists() and _kpi_clients(settings, NEW_DAY))
    refreshed = _execute_refresh(instance, settings, with_drop[0])  # the drop's own, as the queue runs it
    assert refreshed.success
    # it started after the landing ended: the sensor does not refresh that landing again
    covered = _tick(instance, settings, refresh_sensor, first.cursor)
    assert not covered.run_requests and int(covered.cursor or 0) > int(first.cursor or 0)
    # The blocked partition holds back only itself: the other clients of the day are published.
    assert _kpi_clients(settings, NEW_DAY) == {"C001", "C003"}
    fct = pq.read_table(lake.data_file("curated", "fct_deliveries", NEW_DAY)).column("client_id").to_pylist()
    assert set(fct) == {"C001", "C003"}
    assert NEW_DAY in lake.list_dates(FEATURES_ZONE, FEATURES_TABLE)
    materialized = {e.asset_key for e in refreshed.get_asset_materialization_events()}
    assert {WAREHOUSE_KEY, FEATURES_KEY, *CURATED_PARTITIONED_KEYS} <= materialized
    # and the mart checks ran in that run, per partitioned mart
    checked = {e.asset_key for e in refreshed.get_asset_check_evaluations()}
    assert dg.AssetKey(["curated", "agg_client_daily_kpis"]) in checked

    # Three days are too few to train: the model's run says so and publishes nothing new.
    trained = _execute_refresh(instance, settings, ml)
    assert trained.success and not trained.get_asset_materialization_events()
    # Its own run, so a model that did not train holds nothing back: the scores step runs (no
    # champion in this store: nothing to score, and the warehouse, refreshed by the marts' run, waits).
    assert registry.version_by_alias(registry.client(settings), registry.CHAMPION) is None
    scored = _execute_refresh(instance, settings, scores)
    assert scored.success and not scored.get_asset_materialization_events()
    steps = {e.step_key for e in scored.all_events if e.event_type_value == "STEP_START"}
    assert steps == {"ml__fct_delivery_risk"}

    # A date of a model rebuilt by hand is refreshed from that date, like a landing of it.
    by_hand = plan_refresh(lake, Landed(curated_dates={NEW_DAY}))
    assert [(r.first, r.last, set(r.keys)) for r in by_hand] == [
        (NEW_DAY, NEW_DAY, {*CURATED_PARTITIONED_KEYS, FEATURES_KEY, WAREHOUSE_KEY}),
        (None, None, {MODEL_KEY}),
        (None, None, {RISK_KEY, WAREHOUSE_KEY}),
    ]

    # The refresh runs materialized no raw table and no model by hand: nothing more to do.
    after = _tick(instance, settings, refresh_sensor, refresh.cursor)
    assert not after.run_requests and int(after.cursor or 0) > int(refresh.cursor or 0)  # past its own records


def _materialized(
    instance: dg.DagsterInstance, run_id: str, table: str, partition: str | None, zone: str = "raw"
) -> None:
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name="__ASSET_JOB",
        event_specific_data=StepMaterializationData(
            dg.AssetMaterialization(asset_key=dg.AssetKey([zone, table]), partition=partition)
        ),
    )
    instance.store_event(
        EventLogEntry(
            error_info=None, level="INFO", user_message="", run_id=run_id, timestamp=time.time(), dagster_event=event
        )
    )


def _run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, trigger: str | None) -> str:
    tags = {TRIGGER_TAG: trigger} if trigger else {}
    run = instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", status=status, tags=tags))
    return run.run_id


def test_a_landing_still_running_holds_the_cursor_until_it_ends() -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("client", ["C001", "C002"])
        done = _run(instance, dg.DagsterRunStatus.SUCCESS, "inbox")
        running = _run(instance, dg.DagsterRunStatus.STARTED, "inbox")
        by_cli = _run(instance, dg.DagsterRunStatus.SUCCESS, "cli")
        _materialized(instance, done, "orders", "C001|2026-01-05")
        _materialized(instance, by_cli, "orders", "C002|2026-01-04")
        _materialized(instance, running, "orders", "C002|2026-01-06")
        _materialized(instance, done, "deliveries", "C001|2026-01-05")
        _materialized(instance, running, "deliveries", "C002|2026-01-06")
        _materialized(instance, done, "clients", None)
        # A refresh run still going holds nothing back (its own materializations are not news).
        refreshing = _run(instance, dg.DagsterRunStatus.STARTED, "refresh")
        _materialized(instance, refreshing, "fct_deliveries", "2026-01-04", zone="curated")

        landed, upto = landed_since(instance, 0)
        # only what precedes the running run's first record; the CLI's own run is left to the CLI
        assert landed.facts == {"orders": {"2026-01-05": {"C001"}}}
        assert landed.dimensions == set() and landed.runs == [done]
        assert upto > 0

        instance.report_run_failed(instance.get_run_by_id(running))  # ended, half-way
        rest, end = landed_since(instance, upto)
        assert rest.facts == {
            "orders": {"2026-01-06": {"C002"}},
            "deliveries": {"2026-01-05": {"C001"}, "2026-01-06": {"C002"}},
        }
        assert rest.dimensions == {"clients"} and sorted(rest.runs) == sorted([done, running])
        nothing, same = landed_since(instance, end)
        assert nothing.empty and same == end
        assert rest.curated_dates == set()

        # A curated date materialized by hand (a run with no trigger tag) is followed from that date.
        by_hand = _run(instance, dg.DagsterRunStatus.SUCCESS, None)
        _materialized(instance, by_hand, "int_deliveries_enriched", "2026-01-03", zone="curated")
        hand, last = landed_since(instance, same)
        assert hand.curated_dates == {"2026-01-03"} and not hand.facts and hand.runs == [by_hand]
        assert last > same


def test_a_drops_landing_waits_for_the_refresh_requested_with_it_and_is_refreshed_if_that_fails() -> None:
    """A drop's landing has ended and its own marts run (requested with it) is queued: the sensor
    holds the cursor before its records rather than refresh the same dates beside it; that run
    canceled, the sensor refreshes the landing's dates itself."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("client", ["C001"])
        landing = instance.add_run(
            dg.DagsterRun(
                job_name="land_small",
                status=dg.DagsterRunStatus.STARTED,
                tags={TRIGGER_TAG: "inbox", DROP_TAG: "d1"},
            )
        )
        _materialized(instance, landing.run_id, "orders", "C001|2026-01-05")
        instance.report_run_failed(landing)  # ended (an end time); how does not matter here
        own = instance.add_run(
            dg.DagsterRun(
                job_name="refresh_after_landing",
                status=dg.DagsterRunStatus.STARTING,  # (queued runs need a code origin)
                tags={TRIGGER_TAG: "refresh", PART_TAG: "marts", DROP_TAG: "d1"},
            )
        )
        held, upto = landed_since(instance, 0)
        assert held.empty and upto == 0
        other_drop = instance.add_run(  # another drop's refresh changes nothing for this one
            dg.DagsterRun(
                job_name="refresh_after_landing",
                status=dg.DagsterRunStatus.SUCCESS,
                tags={TRIGGER_TAG: "refresh", PART_TAG: "marts", DROP_TAG: "d2"},
            )
        )
        assert other_drop and landed_since(instance, 0)[0].empty

        instance.report_run_canceled(own)
        landed, end = landed_since(instance, 0)
        assert landed.facts == {"orders": {"2026-01-05": {"C001"}}} and landed.runs == [landing.run_id]
        assert end > 0


def test_the_refresh_waits_for_queued_landings_so_their_dates_share_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.from_env(data_dir=tmp_path / "data", lake_url=str(tmp_path / "lake"), inbox_dir=tmp_path)
    lake = Lake.from_settings(settings)
    for day, client in [("2026-01-05", "C001"), ("2026-01-05", "C002"), ("2026-01-09", "C001")]:
        path = Path(lake.data_file("raw", "orders", day, client))  # the dates hold raw facts
        path.parent.mkdir(parents=True)
        pq.write_table(pa.table({"order_id": [f"O-{day}-{client}"]}), path)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("client", ["C001", "C002"])
        first = _run(instance, dg.DagsterRunStatus.SUCCESS, "release")
        _materialized(instance, first, "orders", "C001|2026-01-05")
        queued = _run(instance, dg.DagsterRunStatus.STARTING, "release")  # (queued runs need a code origin)
        held = _tick(instance, settings, refresh_sensor, None)
        assert not held.run_requests and held.cursor == "0"
        assert held.skip_reason and f"landing run {queued[:8]} is queued or running" in held.skip_reason.skip_message

        # it lands the same date's other client and ends: one refresh for both
        _materialized(instance, queued, "orders", "C002|2026-01-05")
        instance.report_run_failed(instance.get_run_by_id(queued))  # ended (how does not matter here)
        joined = _tick(instance, settings, refresh_sensor, held.cursor)
        marts = [r for r in joined.run_requests if r.tags[PART_TAG] == "marts"]
        assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in marts] == [("2026-01-05", "2026-01-05")]
        assert marts[0].tags[AFTER_RUNS_TAG] == f"{first[:8]},{queued[:8]}"
        # every refresh asks for its model run and its scores run, after its marts; releases are
        # older dates and keep the default priority
        assert [r.tags[PART_TAG] for r in joined.run_requests][-2:] == ["model", "scores"]
        assert not any(PRIORITY_TAG in r.tags for r in joined.run_requests)

        # Bounded: records held longer than HOLD_FOR_LANDINGS_S are refreshed while landings queue.
        later = _run(instance, dg.DagsterRunStatus.SUCCESS, "inbox")
        _materialized(instance, later, "orders", "C001|2026-01-09")
        _run(instance, dg.DagsterRunStatus.STARTED, "inbox")
        assert not _tick(instance, settings, refresh_sensor, joined.cursor).run_requests
        monkeypatch.setattr("assets.refresh.HOLD_FOR_LANDINGS_S", 0.0)
        late = _tick(instance, settings, refresh_sensor, joined.cursor)
        assert [r.tags.get(RANGE_START) for r in late.run_requests if r.tags[PART_TAG] == "marts"] == ["2026-01-09"]
