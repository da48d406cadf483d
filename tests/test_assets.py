"""The Dagster side: definitions, partitions, the inbox sensor, the schedule, the CLI run."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.definitions import defs
from assets.partitions import FACT_PARTITIONS, add_partition_metadata
from assets.resources import LakehouseResource
from assets.run import run_inbox
from assets.schedules import nightly_full_refresh
from assets.sensors import RANGE_END, RANGE_START, inbox_sensor
from delivery_lake.config import Settings
from delivery_lake.contract import FACTS, TABLES
from delivery_lake.planning import RunPlan, plan_runs
from delivery_lake.storage import Lake


def _resource(s: Settings) -> LakehouseResource:
    return LakehouseResource(data_dir=str(s.data_dir), lake_url=s.lake_url, inbox_dir=str(s.inbox_dir))


def test_definitions_graph() -> None:
    graph = defs.resolve_asset_graph()
    raw = {k for k in graph.get_all_asset_keys() if k.path[0] == "raw"}
    assert raw == {dg.AssetKey(["raw", t]) for t in TABLES}
    for t in TABLES.values():
        node = graph.get(dg.AssetKey(["raw", t.name]))
        assert node.group_name == "raw"
        assert (node.partitions_def is FACT_PARTITIONS) == t.is_fact
        parents = {p for p in node.parent_keys if p.path[0] == "raw"}
        # Every table it references, facts included: a delivery lands after its order in a run
        # that lands both, so it does not wait in pending/ for an order landing beside it.
        assert parents == {dg.AssetKey(["raw", p]) for p in t.parents}
    sensor = defs.resolve_sensor_def("inbox_sensor")
    assert sensor.minimum_interval_seconds == 3 and sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("nightly_full_refresh").cron_schedule == "0 2 * * *"


def test_planner_cuts_exact_rectangles() -> None:
    clients = ["C001", "C002", "C003", "C004"]
    wanted = {
        "orders": {"2026-01-05": {"C001", "C002", "C004"}, "2026-01-06": {"C001", "C002", "C004"}},
        "deliveries": {"2026-01-05": {"C001", "C002", "C004"}, "2026-01-06": {"C001", "C002", "C004"}},
        "customer_feedback": {"2026-01-08": {"C003", "C999"}},
    }
    plans = plan_runs(wanted, clients)
    assert plans == [
        RunPlan(("deliveries", "orders"), "2026-01-05", "2026-01-06", "C001", "C002"),
        RunPlan(("deliveries", "orders"), "2026-01-05", "2026-01-06", "C004", "C004"),
        RunPlan(("customer_feedback",), "2026-01-08", "2026-01-08", "C003", "C003"),
    ]
    covered = {(t, d, c) for p in plans for t in p.tables for d, c in p.partition_keys(clients)}
    expected = {(t, d, c) for t, by in wanted.items() for d, cs in by.items() for c in cs if c in clients}
    assert covered == expected


def test_planner_spans_partitions_without_data_never_partitions_with_data_not_asked_for() -> None:
    clients = ["C001", "C002", "C003"]
    # Sparse history: dates with gaps, a client missing on some days.
    wanted = {
        "orders": {"2025-01-01": {"C001", "C002"}, "2025-01-09": {"C001", "C003"}, "2025-03-02": {"C002"}},
        "deliveries": {"2025-01-02": {"C001"}, "2025-03-02": {"C002", "C003"}},
    }
    occupied = {(t, d, c) for t, by in wanted.items() for d, cs in by.items() for c in cs}
    # Only what is wanted has data: one run over the bounding rectangle, for both tables.
    assert plan_runs(wanted, clients, occupied) == [
        RunPlan(("deliveries", "orders"), "2025-01-01", "2025-03-02", "C001", "C003")
    ]
    # Data not asked for inside it (landed before, unchanged): not spanned. Orders keep the exact
    # cut; deliveries, whose own rectangle holds no such pair, still get one run.
    busy = occupied | {("orders", "2025-02-01", "C002")}
    plans = plan_runs(wanted, clients, busy)
    assert RunPlan(("deliveries",), "2025-01-02", "2025-03-02", "C001", "C003") in plans
    covered = {(t, d, c) for p in plans for t in p.tables for d, c in p.partition_keys(clients)}
    assert ("orders", "2025-02-01", "C002") not in covered
    assert {(t, d, c) for t, d, c in occupied} <= covered
    assert [p for p in plans if "orders" in p.tables] == plan_runs({"orders": wanted["orders"]}, clients)
    # A file not scanned yet may hold any client of its date: never spanned over.
    unknown = occupied | {("deliveries", "2025-02-10", "*")}
    assert len(plan_runs(wanted, clients, unknown)) > 1


@pytest.mark.slow
def test_cli_run_lands_everything_and_registers_clients(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    import assets.run as orch

    monkeypatch.setattr(orch, "dagster_instance", lambda s: instance)
    outcome = run_inbox(local_settings)
    assert outcome.success, outcome.failure
    clients = instance.get_dynamic_partitions("client")
    lake = Lake.from_settings(local_settings)
    con = lake.duckdb()
    landed_clients = [
        r[0]
        for r in con.execute(
            f"SELECT client_id FROM read_parquet('{lake.uri(lake.data_file('raw', 'clients'))}') ORDER BY 1"
        ).fetchall()
    ]
    assert sorted(clients) == landed_clients and len(clients) == 4
    # Every (date, client) partition of every fact is materialized in Dagster and exists in the lake.
    for t in ("orders", "deliveries", "customer_feedback"):
        mat = instance.get_materialized_partitions(dg.AssetKey(["raw", t]))
        on_disk = {str(dg.MultiPartitionKey({"date": d, "client": c})) for d, c in lake.list_partitions("raw", t)}
        assert {str(k) for k in mat} == on_disk
        assert len(on_disk) == 5 * 4
    # One dimension run + one fact run: the whole range backfilled in a single run; then the
    # downstream layers, e.g. one curated run for the contiguous dates and one for the
    # dimension marts + warehouse.
    labels = [ln.split(" (run")[0] for ln in outcome.lines]
    assert [lb.split(":")[0] for lb in labels[:2]] == [
        "ok   dimensions",
        "ok   customer_feedback, deliveries, orders 2026-01-05..2026-01-09 x C001..C004",
    ]
    assert labels[2:4] == [
        "ok   curated 2026-01-05..2026-01-09",
        "ok   warehouse + dim_clients, dim_depots, dim_drivers, dim_vehicles",
    ]
    assert len(outcome.run_ids) == len(outcome.lines)


def _tick_without_last_day(
    settings: Settings, tmp_path: Path
) -> tuple[dg.DagsterInstance, LakehouseResource, Path, dg.SensorResult]:
    """The sensor's first tick on the inbox with the last day's fact files held back (in the
    returned folder), as if they had not arrived yet."""
    instance = dg.DagsterInstance.ephemeral()
    held = tmp_path / "held"
    for t in ("orders", "deliveries", "customer_feedback"):
        (held / t).mkdir(parents=True)
        shutil.move(str(settings.inbox_dir / t / "2026-01-09.csv"), held / t / "2026-01-09.csv")
    res = _resource(settings)
    with dg.build_sensor_context(instance=instance, resources={"lakehouse": res}) as ctx:
        first = inbox_sensor(ctx)
    assert isinstance(first, dg.SensorResult)
    return instance, res, held, first


def _landings(result: dg.SensorResult) -> list[dg.RunRequest]:
    """The landing runs a tick requested (a drop's refresh runs come with them: test_refresh.py)."""
    return [r for r in result.run_requests if r.job_name in ("land", "land_small")]


def test_inbox_sensor_requests_exactly_the_new_partitions(local_settings: Settings, tmp_path: Path) -> None:
    inbox = local_settings.inbox_dir
    instance, res, held, first = _tick_without_last_day(local_settings, tmp_path)
    added = first.dynamic_partitions_requests[0].partition_keys
    assert sorted(added) == ["C001", "C002", "C003", "C004"]
    instance.add_dynamic_partitions("client", list(added))
    ranges = {(r.tags[RANGE_START], r.tags[RANGE_END]) for r in _landings(first)}
    assert ranges == {("C001|2026-01-05", "C004|2026-01-08")}
    assert dg.AssetKey(["raw", "clients"]) in first.run_requests[0].asset_selection

    # Nothing new: the sensor skips.
    with dg.build_sensor_context(instance=instance, resources={"lakehouse": res}, cursor=first.cursor) as ctx:
        again = inbox_sensor(ctx)
    assert not again.run_requests and again.skip_reason is not None

    # A new day of deliveries only, touching two clients: exactly those partitions, nothing else.
    src = held / "deliveries" / "2026-01-09.csv"
    lines = src.read_bytes().splitlines(keepends=True)
    keep = [lines[0]] + [ln for ln in lines[1:] if b",C002," in ln or b",C003," in ln]
    (inbox / "deliveries" / "2026-01-09.csv").write_bytes(b"".join(keep))
    with dg.build_sensor_context(instance=instance, resources={"lakehouse": res}, cursor=first.cursor) as ctx:
        third = inbox_sensor(ctx)
    assert [(r.tags[RANGE_START], r.tags[RANGE_END], r.asset_selection) for r in _landings(third)] == [
        ("C002|2026-01-09", "C003|2026-01-09", [dg.AssetKey(["raw", "deliveries"])])
    ]
    assert json.loads(third.cursor)[str(inbox / "deliveries" / "2026-01-09.csv")]


def test_a_drop_or_a_release_lands_in_process_a_history_with_a_process_per_step() -> None:
    from assets.executors import EXECUTOR
    from assets.sensors import SMALL_RUN_PARTITIONS, landing_job

    clients = [f"C{i:03d}" for i in range(1, 9)]
    day = RunPlan(("orders", "deliveries", "customer_feedback"), "2026-01-09", "2026-01-09", "C001", "C008")
    assert landing_job(day, clients) == "land_small"  # 24 partitions
    month = RunPlan(("orders",), "2026-01-01", "2026-01-30", "C001", "C008")
    assert len(month.partition_keys(clients)) > SMALL_RUN_PARTITIONS
    assert landing_job(month, clients) == "land"
    assert defs.resolve_job_def("land_small").executor_def is dg.in_process_executor
    assert defs.resolve_job_def("land").executor_def is EXECUTOR


def test_releases_wait_while_a_landing_or_a_refresh_is_in_flight(local_settings: Settings, tmp_path: Path) -> None:
    instance, res, _held, first = _tick_without_last_day(local_settings, tmp_path)

    def skip() -> str:
        with dg.build_sensor_context(instance=instance, resources={"lakehouse": res}, cursor=first.cursor) as ctx:
            result = inbox_sensor(ctx)
        assert not result.run_requests and result.skip_reason is not None
        return result.skip_reason.skip_message or ""

    def run(trigger: str) -> dg.DagsterRun:
        return instance.add_run(
            dg.DagsterRun(
                job_name="land_small", status=dg.DagsterRunStatus.NOT_STARTED, tags={"delivery_lake/trigger": trigger}
            )
        )

    landing = run("inbox")
    assert skip() == f"inbox run {landing.run_id[:8]} is queued or running: releases wait for it"
    instance.report_run_canceled(landing)
    # ended, and the refresh sensor has not requested what follows it yet
    assert skip() == f"the refresh after run {landing.run_id[:8]} is not requested yet: releases wait for it"
    refresh = run("refresh")
    assert skip() == f"refresh run {refresh.run_id[:8]} is queued or running: releases wait for it"
    instance.report_run_canceled(refresh)
    assert skip().startswith("no new files in")


def test_a_drop_whose_tables_touch_different_clients_is_one_run(local_settings: Settings, tmp_path: Path) -> None:
    """A day's orders and deliveries for every client and feedback for one: one run lands all
    three (the feedback's rectangle widened to the others' holds no partition with data it was
    not asked for), where exact rectangles made two runs and the feedback waited for the first."""
    inbox = local_settings.inbox_dir
    instance, res, held, first = _tick_without_last_day(local_settings, tmp_path)
    instance.add_dynamic_partitions("client", list(first.dynamic_partitions_requests[0].partition_keys))

    for t in ("orders", "deliveries"):
        shutil.copy(held / t / "2026-01-09.csv", inbox / t / "2026-01-09.csv")
    lines = (held / "customer_feedback" / "2026-01-09.csv").read_bytes().splitlines(keepends=True)
    only = [ln for ln in lines[1:] if b",C002," in ln]
    assert only and len(only) < len(lines) - 1
    (inbox / "customer_feedback" / "2026-01-09.csv").write_bytes(lines[0] + b"".join(only))
    with dg.build_sensor_context(instance=instance, resources={"lakehouse": res}, cursor=first.cursor) as ctx:
        drop = inbox_sensor(ctx)
    assert [
        (r.tags[RANGE_START], r.tags[RANGE_END], sorted(r.asset_selection), r.job_name) for r in _landings(drop)
    ] == [
        (
            "C001|2026-01-09",
            "C004|2026-01-09",
            sorted(dg.AssetKey(["raw", t]) for t in ("customer_feedback", "deliveries", "orders")),
            "land_small",
        )
    ]


def test_new_clients_become_partitions(local_settings: Settings) -> None:
    instance = dg.DagsterInstance.ephemeral()
    resources = {"lakehouse": _resource(local_settings)}
    dims = [a for a in defs.assets if a.key.path[0] == "raw" and not TABLES[a.key.path[1]].is_fact]
    assert dg.materialize(dims, instance=instance, resources=resources).success
    assert sorted(instance.get_dynamic_partitions("client")) == ["C001", "C002", "C003", "C004"]
    # A fifth client appears in a later snapshot.
    path = local_settings.inbox_dir / "clients" / "clients.csv"
    text = path.read_text()
    row = text.strip().splitlines()[1].split(",")  # a valid client row
    row[0], row[1] = "C006", "Newco"
    path.write_text(text.rstrip("\n") + "\n" + ",".join(row) + "\n")
    clients_asset = [a for a in dims if a.key.path[1] == "clients"]
    assert dg.materialize(clients_asset, instance=instance, resources=resources).success
    clients = ["C001", "C002", "C003", "C004", "C006"]
    assert sorted(instance.get_dynamic_partitions("client")) == clients
    # ...and the fact assets are partitioned by that set: their client dimension is the
    # dynamic partitions the clients asset just grew, the new client included.
    graph = defs.resolve_asset_graph()
    for t in FACTS:
        partitions = graph.get(dg.AssetKey(["raw", t.name])).partitions_def
        assert isinstance(partitions, dg.MultiPartitionsDefinition)
        client_dimension = {d.name: d.partitions_def for d in partitions.partitions_defs}["client"]
        assert sorted(client_dimension.get_partition_keys(dynamic_partitions_store=instance)) == clients


def test_nightly_schedule_requests_the_whole_inbox(local_settings: Settings) -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("client", ["C001", "C002", "C003", "C004"])
        with dg.build_schedule_context(
            instance=instance,
            resources={"lakehouse": _resource(local_settings)},
            scheduled_execution_time=datetime(2026, 1, 10, 2, tzinfo=UTC),
        ) as ctx:
            requests = list(nightly_full_refresh(ctx))
    assert {(r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests} == {("C001|2026-01-05", "C004|2026-01-09")}
    assert {k.path[1] for k in requests[0].asset_selection} == set(TABLES)


@pytest.mark.slow
def test_failed_landing_exits_nonzero_and_names_the_file(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from delivery_lake.cli import main

    bad = local_settings.inbox_dir / "orders" / "2026-01-07.csv"
    bad.write_text("order_id,client_id\nO1,C001\n")
    for k, v in {
        "DATA_DIR": str(local_settings.data_dir),
        "LAKE_URL": local_settings.lake_url,
        "INBOX_DIR": str(local_settings.inbox_dir),
        "DAGSTER_HOME": str(local_settings.data_dir / "dh"),
    }.items():
        monkeypatch.setenv(k, v)
    code = main(["run"])
    assert code == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "2026-01-07.csv" in out.replace(" ", "") and "promised_by" in out
    # The broken day is not landed; the other days are.
    dates = {d for d, _ in Lake.from_settings(local_settings).list_partitions("raw", "orders")}
    assert dates == {"2026-01-05", "2026-01-06", "2026-01-08", "2026-01-09"}


@pytest.mark.parametrize("name", ["food_delivery_test.csv", "olist_sample/olist_orders_dataset.csv"])
def test_real_foreign_exports_fail_with_the_missing_columns(local_settings: Settings, name: str) -> None:
    """Real third-party exports do not follow our contract: the error names file and columns."""
    from delivery_lake.inbox import InputError
    from delivery_lake.landing import Landing

    src = Path(__file__).resolve().parents[2] / "shared" / "datasets" / name
    if not src.exists():
        src = Path("/work/shared/datasets") / name
    if not src.exists():
        pytest.skip(f"shared dataset {name} not present on this machine")
    dest = local_settings.inbox_dir / "orders" / "2026-01-06.csv"
    shutil.copyfile(src, dest)
    lake = Lake.from_settings(local_settings)
    landing = Landing(lake, local_settings.inbox_dir, local_settings)
    for t in ("clients", "depots"):
        landing.land_dimension(TABLES[t])
    with pytest.raises(
        InputError, match=r"missing contract column\(s\) order_id, client_id|missing contract column\(s\) client_id"
    ):
        landing.land_fact(TABLES["orders"], {"2026-01-06": None})


def test_partition_start_comes_from_the_environment() -> None:
    """PARTITION_START is read (through Settings) when the definitions load."""
    import os
    import subprocess
    import sys

    from delivery_lake.config import DEFAULT_PARTITION_START

    code = "from assets.partitions import DAILY_PARTITIONS as p; print(p.get_first_partition_key())"
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PARTITION_START"}
    firsts = [
        subprocess.run(
            [sys.executable, "-c", code], env=e, cwd=root, capture_output=True, text=True, timeout=300, check=True
        ).stdout.strip()
        for e in (env, {**env, "PARTITION_START": "2014-06-01"})
    ]
    assert firsts == [DEFAULT_PARTITION_START, "2014-06-01"]
    with pytest.raises(ValueError, match="PARTITION_START='2014-13-01' is not a date"):
        Settings.from_env(partition_start="2014-13-01")


@pytest.mark.slow
def test_run_refuses_files_without_a_partition_by_name(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """History before PARTITION_START and a file whose name's date is no date (one ragged line,
    no row date): `run` names each, lands the rest, and fails; no Dagster traceback."""
    from assets.partitions import PARTITION_START
    from delivery_lake.cli import main

    orders = local_settings.inbox_dir / "orders"
    rows = (orders / "2026-01-06.csv").read_bytes().split(b"\n")
    history = orders / "history-export.csv"
    history.write_bytes(b"\n".join(rows).replace(b"2026-01-0", b"2014-10-0"))
    bad_name = orders / "2026-02-30.csv"
    bad_name.write_bytes(rows[0] + b"\nO-RAGGED,C001,not enough fields\n")
    for k, v in {
        "DATA_DIR": str(local_settings.data_dir),
        "LAKE_URL": local_settings.lake_url,
        "INBOX_DIR": str(local_settings.inbox_dir),
        "DAGSTER_HOME": str(local_settings.data_dir / "dh"),
        "PARTITION_START": PARTITION_START,
    }.items():
        monkeypatch.setenv(k, v)
    code = main(["run"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 1, out
    assert "Traceback" not in out and "Partition key" not in out
    assert (
        f"SKIP {history}: date 2014-10-06 is before PARTITION_START {PARTITION_START} "
        "(set PARTITION_START to land them)"
    ) in out
    assert f"SKIP {bad_name}: no date to file it under: 2026-02-30 in its name is not a real date" in out
    assert "FAILED: 2 file(s) could not be landed" in out
    # Everything else landed, and the curated layer and warehouse were built.
    lake = Lake.from_settings(local_settings)
    assert {d for d, _ in lake.list_partitions("raw", "orders")} == {
        "2026-01-05",
        "2026-01-06",
        "2026-01-07",
        "2026-01-08",
        "2026-01-09",
    }
    assert local_settings.warehouse_path.exists()


@pytest.mark.slow  # a whole `run` over 30-odd sparse dates (about 25 s)
def test_sparse_history_lands_in_one_run_and_gaps_stay_empty(tmp_path: Path, run_cli) -> None:
    from bench.sparse import spread
    from delivery_lake.generator import generate
    from delivery_lake.quality import gate_counts

    dense, sparse = tmp_path / "dense", tmp_path / "sparse"
    generate(
        dense, start=date(2025, 1, 1), days=2, clients=2, orders_per_day=40, seed=3, dirty_rate=0.0, progress=False
    )
    spread(dense, sparse)
    settings = Settings.from_env(data_dir=tmp_path / "data", lake_url=str(tmp_path / "lake"), inbox_dir=sparse)
    con = duckdb.connect()
    with_rows = {
        t: {
            r[0]
            for r in con.execute(
                f"SELECT DISTINCT {c}[:10] FROM read_csv('{sparse / t}/*.csv', all_varchar = true)"
            ).fetchall()
        }
        for t, c in (("orders", "created_at"), ("deliveries", "dispatched_at"))
    }
    assert len(with_rows["orders"]) > 20  # spread over many dates, with gaps
    outcome = run_cli(settings)
    assert outcome.success, outcome.failure
    # One landing run for every fact partition, however many blocks of dates they form.
    landing = [line for line in outcome.lines if line.startswith("ok   customer_feedback, deliveries, orders")]
    assert len(landing) == 1 and len(outcome.run_ids) <= 6, outcome.lines
    lake = Lake.from_settings(settings)
    first, last = min(with_rows["orders"]), max(with_rows["deliveries"] | with_rows["orders"])
    assert landing[0].split()[4] == f"{first}..{last}"
    # Exactly the dates with rows hold partitions, marts and verdicts: the gaps the run spanned
    # have no empty file, no mart date and no gate entry.
    for table in ("orders", "deliveries"):
        assert set(lake.list_dates("raw", table)) == with_rows[table]
    marts = set(lake.list_dates("curated", "fct_deliveries"))
    assert marts <= with_rows["orders"] | with_rows["deliveries"] and len(marts) > 20
    counts = gate_counts(lake, ["orders", "fct_deliveries"])
    assert counts["orders"]["blocked"] == 0
    assert counts["orders"]["passed"] == len(lake.list_partitions("raw", "orders"))
    assert counts["fct_deliveries"]["passed"] == len(marts) and counts["fct_deliveries"]["blocked"] == 0

    # Each partition's materialization carries its own numbers, not the run's: a landed
    # partition its landed rows, a mart date its rows, a date of the range without data none.
    instance = run_cli.instance

    def latest(key: dg.AssetKey, partition: str) -> dict:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        ).records
        return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}

    # A landing run's summary rides on its last partition; the others name it (its total is
    # not passed off as each partition's row count).
    landed = sum(
        lake.read_json(lake.meta_path("landing", "orders") + f"/date={d}/client={c}.json")["landed"]
        for d, c in lake.list_partitions("raw", "orders")
    )
    orders = dg.AssetKey(["raw", "orders"])
    d0, c0 = lake.list_partitions("raw", "orders")[0]
    first_partition = str(dg.MultiPartitionKey({"date": d0, "client": c0}))
    last = latest(orders, first_partition).get("run_summary_on", first_partition)
    summary = latest(orders, last)
    assert summary["rows_landed"] == landed and "dagster/row_count" not in summary
    for d, c in lake.list_partitions("raw", "orders")[:3]:
        md = latest(orders, str(dg.MultiPartitionKey({"date": d, "client": c})))
        assert md["run_summary_on"] == last and "rows_landed" not in md, (d, c)
    fct = dg.AssetKey(["curated", "fct_deliveries"])
    for d in sorted(marts)[:5]:
        md = latest(fct, d)
        assert (
            md["built"]
            and md["dagster/row_count"] == lake.read_json(lake.build_manifest("curated", "fct_deliveries", d))["rows"]
        )
        assert md["rows_in_run"] > md["dagster/row_count"] and "rows_by_date" not in md
    gap = next(
        (date.fromisoformat(first) + timedelta(days=k)).isoformat()
        for k in range(1, 400)
        if (date.fromisoformat(first) + timedelta(days=k)).isoformat() not in marts | with_rows["deliveries"]
    )
    assert latest(fct, gap)["built"] is False and latest(fct, gap)["dagster/row_count"] == 0
    # the column lineage rides on the run's newest materialization only (and on the definition)
    newest = instance.get_latest_materialization_event(fct).asset_materialization  # type: ignore[union-attr]
    assert "dagster/column_lineage" in newest.metadata
    assert "dagster/column_lineage" not in latest(fct, min(marts))


def test_a_run_starts_importing_gx_when_its_resources_are_built_a_sensor_tick_does_not(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import assets.resources as resources_module

    started: list[str] = []
    monkeypatch.setattr(resources_module, "preload_gx_in_background", lambda: started.append("gx"))
    res = _resource(local_settings)
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={"lakehouse": res}) as ctx:
        inbox_sensor(ctx)
    assert started == []

    @dg.asset
    def probe(lakehouse: LakehouseResource) -> None:
        started.append("step")

    assert dg.materialize([probe], resources={"lakehouse": res}).success
    assert started == ["gx", "step"]


_SPAN = dg.MultiPartitionsDefinition(
    {
        "date": dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-03-01"),
        "client": dg.StaticPartitionsDefinition(["a", "b"]),
    }
)


def _per_partition_asset(use_ours: bool) -> dg.AssetsDefinition:
    @dg.asset(name="span", partitions_def=_SPAN, backfill_policy=dg.BackfillPolicy.single_run())
    def span(context) -> dg.MaterializeResult:  # type: ignore[no-untyped-def]
        keys = context.partition_keys
        wanted = {k: {"n": i, "first": i == 0} for i, k in enumerate(keys) if i % 7 == 0}
        if use_ours:
            add_partition_metadata(context, wanted)
            add_partition_metadata(context, {keys[0]: {"again": True}})  # merged into what is there
            with pytest.raises(dg.DagsterInvariantViolationError, match="does not target"):
                add_partition_metadata(context, {"c|2025-01-01": {"n": -1}})
        else:
            for k, md in wanted.items():
                context.add_asset_metadata(md, partition_key=k)
            context.add_asset_metadata({"again": True}, partition_key=keys[0])
        return dg.MaterializeResult(metadata={"run": len(keys)})

    return span


@pytest.mark.parametrize("private_api", [True, False], ids=["accumulated", "dagster-call"])
def test_partition_metadata_added_in_one_pass_is_what_dagsters_call_per_partition_adds(
    private_api: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`add_partition_metadata` (one pass over a run's keys, linear) leaves every partition's
    materialization the metadata Dagster's `add_asset_metadata` per partition (quadratic) leaves;
    where Dagster's private accumulator is not there, it falls back to that call."""
    if not private_api:
        import assets.partitions

        def moved(*_args: object) -> None:  # as if a Dagster release had renamed its accumulator
            raise AttributeError("_metadata_accumulator")

        monkeypatch.setattr(assets.partitions, "_accumulate", moved)
    seen = {}
    for ours in (True, False):
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            [_per_partition_asset(ours)],
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "a|2025-01-01",
                "dagster/asset_partition_range_end": "b|2025-01-20",
            },
        )
        assert result.success
        seen[ours] = {
            str(m.partition): {k: v.value for k, v in m.metadata.items()}
            for m in result.asset_materializations_for_node("span")
        }
    assert seen[True] == seen[False] and len(seen[True]) == 40
    marked = {p: md for p, md in seen[True].items() if "n" in md}
    assert len(marked) == 6 and all(md["run"] == 40 for md in seen[True].values())
    assert sum(1 for md in seen[True].values() if md.get("again")) == 1
