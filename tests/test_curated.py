"""Curated marts on a landed dirty dataset: KPIs against an independent Polars computation,
gating, incremental day-by-day builds, determinism, and the same on S3."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from delivery_lake import gate, publish
from delivery_lake.config import Settings
from delivery_lake.contract import DIMENSIONS, FACTS, TABLES
from delivery_lake.generator import COMMENTS, generate
from delivery_lake.inbox import list_files
from delivery_lake.landing import Landing
from delivery_lake.storage import Lake, drain_staging_trash
from delivery_lake.transform import Project, Runner, affected_dates
from delivery_lake.transform import runner as runner_module
from delivery_lake.transform.runner import FEW_DATES
from delivery_lake.warehouse import Warehouse
from tests.helpers import inbox_with_an_order_moved_back, land_all

DAYS = ["2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08", "2026-01-09"]
PARTITIONED = [
    "int_deliveries_enriched",
    "fct_deliveries",
    "fct_feedback",
    "agg_client_daily_kpis",
    "agg_driver_daily_performance",
    "agg_depot_daily_load",
]


@dataclass
class Built:
    settings: Settings
    lake: Lake
    project: Project


def _settings(root: Path, inbox: Path) -> Settings:
    return Settings.from_env(data_dir=root / "data", lake_url=str(root / "lake"), inbox_dir=inbox)


@pytest.fixture(scope="module")
def project() -> Project:
    return Project.load()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, dirty_export: Path, project: Project) -> Built:
    """The dirty export landed and every model built (read-only for tests; see `copy_of`)."""
    root = tmp_path_factory.mktemp("curated")
    inbox = root / "inbox"
    shutil.copytree(dirty_export, inbox)
    settings = _settings(root, inbox)
    lake, _, _ = land_all(settings)
    results = Runner(lake, project, settings).build(full_refresh=True)
    assert not [r for r in results if r.skipped]
    return Built(settings, lake, project)


def copy_of(built: Built, tmp_path: Path) -> Built:
    shutil.copytree(Path(built.settings.lake_url), tmp_path / "lake")
    settings = _settings(tmp_path, built.settings.inbox_dir)
    return Built(settings, Lake.from_settings(settings), built.project)


def curated(lake: Lake, model: str) -> pl.DataFrame:
    return pl.read_parquet(f"{lake.root}/curated/{model}/**/*.parquet", hive_partitioning=False)


def raw(lake: Lake, table: str) -> pl.DataFrame:
    if TABLES[table].is_fact:
        return pl.read_parquet(f"{lake.root}/raw/{table}/**/*.parquet", hive_partitioning=True)
    return pl.read_parquet(f"{lake.root}/raw/{table}/data.parquet")


def manifest(lake: Lake, model: str, d: str | None) -> dict:
    return lake.read_json(lake.build_manifest("curated", model, d))


# ---- the independent computation (Polars, straight from raw Parquet) ----------------------------------


def expected_deliveries(lake: Lake) -> pl.DataFrame:
    d = raw(lake, "deliveries")
    o = raw(lake, "orders").select(
        "order_id",
        "pickup_depot_id",
        "promised_by",
        "weight_kg",
        "parcels",
        "priority",
        "order_value",
        pl.col("placeholder_columns").alias("order_placeholders"),
    )
    j = d.join(o, on="order_id", how="left")
    # stand-ins of the delivery and its order (a source mapping's placeholders): measures become null
    stand_ins = pl.concat_list(
        pl.col("placeholder_columns").str.split(";").fill_null(pl.lit([], pl.List(pl.Utf8))),
        pl.col("order_placeholders")
        .str.split(";")
        .fill_null(pl.lit([], pl.List(pl.Utf8)))
        .list.eval(pl.element().replace("pickup_depot_id", "depot_id")),
    )
    j = j.with_columns(stand_ins.alias("stand_ins")).with_columns(
        *(
            pl.when(pl.col("stand_ins").list.contains(m)).then(None).otherwise(pl.col(m)).alias(m)
            for m in ("attempts", "distance_km", "weight_kg", "parcels", "order_value")
        ),
        pl.col("stand_ins").list.unique().list.sort().list.join(";").replace("", None).alias("placeholder_columns"),
    )
    delivered = pl.col("status") == "delivered"
    late_s = (pl.col("delivered_at") - pl.col("promised_by")).dt.total_seconds()
    return j.select(
        "delivery_id",
        "order_id",
        "client_id",
        "driver_id",
        pl.col("pickup_depot_id").alias("depot"),
        "date",
        "promised_by",
        "delivered_at",
        "status",
        (delivered & (pl.col("delivered_at") <= pl.col("promised_by"))).alias("is_on_time"),
        pl.when(delivered & pl.col("promised_by").is_not_null())
        .then(pl.max_horizontal(late_s, 0) / 60.0)
        .alias("late_minutes"),
        "distance_km",
        "attempts",
        "weight_kg",
        "priority",
        "order_value",
        "vehicle_id",
        "placeholder_columns",
        "parcels",  # not in the mart, used by the aggregates below
        pl.when(delivered)
        .then((pl.col("delivered_at") - pl.col("dispatched_at")).dt.total_seconds() / 60.0)
        .alias("minutes"),
    )


def expected_client_kpis(lake: Lake) -> pl.DataFrame:
    d = expected_deliveries(lake)
    per_delivery = d.group_by("date", "client_id").agg(
        pl.len().alias("deliveries"),
        (pl.col("status") == "delivered").sum().alias("delivered"),
        (pl.col("status") == "failed").sum().alias("failed"),
        (pl.col("status") == "returned").sum().alias("returned"),
        pl.col("is_on_time").fill_null(False).sum().alias("on_time"),
        (pl.col("is_on_time").fill_null(False).sum() / pl.len()).alias("on_time_rate"),
        pl.col("minutes").mean().round(2).alias("avg_delivery_minutes"),  # the mart rounds float means
        pl.col("order_value").cast(pl.Float64).sum().alias("revenue"),
        pl.col("order_value").is_null().sum().alias("unpriced_deliveries"),
    )
    fb = raw(lake, "customer_feedback").group_by("date", "client_id").agg(pl.col("rating").mean().alias("avg_rating"))
    out = per_delivery.join(fb, on=["date", "client_id"], how="full", coalesce=True)
    return out.with_columns(
        pl.col("deliveries", "delivered", "failed", "returned", "on_time", "unpriced_deliveries").fill_null(0),
        pl.col("revenue").fill_null(0.0),
    )


# ---- tests -----------------------------------------------------------------------------------------------


def test_the_dataset_exercises_the_hard_cases(built: Built) -> None:
    d = expected_deliveries(built.lake)
    assert d.filter(pl.col("status") == "failed").height > 0
    assert d.filter(pl.col("status") == "returned").height > 0
    assert d.filter((pl.col("status") == "delivered") & ~pl.col("is_on_time")).height > 0  # late
    q = pl.read_parquet(f"{built.lake.root}/quarantine/deliveries/**/*.parquet", hive_partitioning=True)
    assert q.height > 0  # dirty rows were quarantined, and must not reach the marts
    assert set(curated(built.lake, "fct_deliveries")["delivery_id"]).isdisjoint(
        set(q["delivery_id"].drop_nulls()) - set(d["delivery_id"])
    )


def test_fct_deliveries_matches_raw(built: Built) -> None:
    got = curated(built.lake, "fct_deliveries").sort("delivery_id")
    want = expected_deliveries(built.lake).drop("parcels").rename({"minutes": "delivery_minutes"})
    assert sorted(got.columns) == sorted(want.columns)
    want = want.select(got.columns).sort("delivery_id")
    assert_frame_equal(got, want.cast(got.schema), check_exact=False, rel_tol=1e-12, abs_tol=1e-9)
    # One row per delivery, in the partition of its dispatch date.
    assert got["delivery_id"].n_unique() == got.height
    for d in DAYS:
        part = pl.read_parquet(built.lake.data_file("curated", "fct_deliveries", d))
        assert part.height > 0 and part["date"].cast(pl.Utf8).unique().to_list() == [d]


def test_client_daily_kpis_match_an_independent_computation(built: Built) -> None:
    got = (
        curated(built.lake, "agg_client_daily_kpis")
        .with_columns(pl.col("revenue").cast(pl.Float64))
        .sort("date", "client_id")
    )
    want = expected_client_kpis(built.lake).sort("date", "client_id").select(got.columns)
    assert got.height == want.height == len(DAYS) * 4
    assert_frame_equal(got, want, check_dtypes=False, check_exact=False, rel_tol=1e-12, abs_tol=1e-9)
    assert got["on_time_rate"].min() < 1 and got["failed"].sum() > 0 and got["returned"].sum() > 0


def test_driver_and_depot_aggregates_match(built: Built) -> None:
    d = expected_deliveries(built.lake)
    drivers = curated(built.lake, "agg_driver_daily_performance").sort("date", "driver_id")
    want = (
        d.group_by("date", "driver_id")
        .agg(
            pl.len().alias("deliveries"),
            pl.col("is_on_time").fill_null(False).sum().alias("on_time_deliveries"),
            pl.col("distance_km").sum().round(3).alias("distance_km"),
            pl.col("vehicle_id").n_unique().alias("vehicles_used"),
        )
        .sort("date", "driver_id")
    )
    assert_frame_equal(
        drivers.select(want.columns), want, check_dtypes=False, check_exact=False, rel_tol=1e-12, abs_tol=1e-9
    )
    depots = curated(built.lake, "agg_depot_daily_load").sort("date", "depot_id")
    cap = raw(built.lake, "depots").select("depot_id", "daily_capacity_parcels")
    want = (
        d.filter(pl.col("depot").is_not_null())
        .group_by("date", pl.col("depot").alias("depot_id"))
        .agg(
            pl.len().alias("deliveries"),
            pl.col("parcels").sum().alias("parcels"),
            pl.col("driver_id").n_unique().alias("drivers_active"),
        )
        .join(cap, on="depot_id")
        .with_columns((pl.col("parcels") / pl.col("daily_capacity_parcels")).alias("capacity_utilization"))
        .sort("date", "depot_id")
    )
    assert_frame_equal(
        depots.select(want.columns), want, check_dtypes=False, check_exact=False, rel_tol=1e-12, abs_tol=1e-9
    )


def test_dimensions_and_feedback(built: Built) -> None:
    for t in DIMENSIONS:
        dim = pl.read_parquet(built.lake.data_file("curated", f"dim_{t.name}"))
        assert dim[t.key].sort().to_list() == raw(built.lake, t.name)[t.key].sort().to_list()
    depots = pl.read_parquet(built.lake.data_file("curated", "dim_depots"))
    assert depots["drivers"].sum() == raw(built.lake, "drivers").height
    fb = curated(built.lake, "fct_feedback")
    assert fb["feedback_id"].sort().to_list() == raw(built.lake, "customer_feedback")["feedback_id"].sort().to_list()
    # Accuracy on generated comments. Ground truth: the mood pool the generator drew the
    # comment from (it draws from the pool of the rating's mood: 1-2, 3, 4-5 stars).
    labelled = fb.filter(pl.col("comment").is_not_null())
    pools = {
        c.strip(): mood
        for mood, group in zip(("negative", "neutral", "positive"), COMMENTS, strict=True)
        for c in group
    }
    truth = labelled["comment"].replace_strict(pools, default=None)
    assert truth.null_count() <= 2  # dirty rows may carry a comment no pool has
    assert (labelled["sentiment"] == truth).drop_nulls().mean() == 1.0
    # Against the stars: dirt (a rating changed after the comment was drawn) is the only disagreement.
    mood = (
        pl.when(pl.col("rating") <= 2)
        .then(pl.lit("negative"))
        .when(pl.col("rating") == 3)
        .then(pl.lit("neutral"))
        .otherwise(pl.lit("positive"))
    )
    agreement = labelled.select((pl.col("sentiment") == mood).mean()).item()
    assert labelled.height > 100 and agreement >= 0.99
    assert (
        fb.filter(pl.col("comment").is_null())["sentiment"].null_count()
        == fb.filter(pl.col("comment").is_null()).height
    )


def test_blocked_partitions_never_reach_the_marts(built: Built, tmp_path: Path) -> None:
    b = copy_of(built, tmp_path)
    day = "2026-01-07"
    before = {m: manifest(b.lake, m, day)["sha256"] for m in PARTITIONED}
    gate.record(b.lake, "deliveries", False, {"check": "test"}, date=day, client="C001")
    gate.record(b.lake, "customer_feedback", False, {"check": "test"}, date=day)  # the whole date
    Runner(b.lake, b.project, b.settings).build(PARTITIONED, dates=[day])

    fct = pl.read_parquet(b.lake.data_file("curated", "fct_deliveries", day))
    assert fct.height > 0 and "C001" not in fct["client_id"].to_list()
    kpis = pl.read_parquet(b.lake.data_file("curated", "agg_client_daily_kpis", day))
    assert "C001" not in kpis["client_id"].to_list() and kpis["avg_rating"].null_count() == kpis.height
    assert pl.read_parquet(b.lake.data_file("curated", "fct_feedback", day)).height == 0
    m = manifest(b.lake, "fct_deliveries", day)
    assert m["excluded_partitions"] == {"raw.deliveries": [[day, "C001"]]}
    # Other dates untouched; a neighbouring date that reads C001's orders is unaffected too.
    assert (
        manifest(b.lake, "fct_deliveries", "2026-01-08")["build_id"]
        == manifest(built.lake, "fct_deliveries", "2026-01-08")["build_id"]
    )

    # Fixed and passed: the rebuild gives back exactly the original files (builds are deterministic).
    gate.record(b.lake, "deliveries", True, {"check": "test"}, date=day, client="C001")
    gate.record(b.lake, "customer_feedback", True, {"check": "test"}, date=day)
    Runner(b.lake, b.project, b.settings).build(PARTITIONED, dates=[day])
    assert {m: manifest(b.lake, m, day)["sha256"] for m in PARTITIONED} == before


def test_blocked_dimension_fails_its_marts_only(built: Built, tmp_path: Path) -> None:
    b = copy_of(built, tmp_path)
    gate.record(b.lake, "clients", False, {"check": "test"})
    before = manifest(b.lake, "dim_clients", None)
    results = {r.model: r for r in Runner(b.lake, b.project, b.settings).build(["dim_clients", "dim_depots"])}
    assert "raw.clients is blocked by the quality gate" in (results["dim_clients"].skipped or "")
    assert results["dim_depots"].skipped is None
    assert manifest(b.lake, "dim_clients", None) == before


def test_a_new_day_rebuilds_only_that_day(tmp_path: Path, inbox: Path, built: Built) -> None:
    settings = _settings(tmp_path, inbox)
    lake = Lake.from_settings(settings)
    landing = Landing(lake, inbox, settings)
    for t in DIMENSIONS:
        landing.land_dimension(t)
    for t in FACTS:
        landing.land_fact(t, {d: None for d in DAYS[:-1]})
    project = built.project
    Runner(lake, project, settings).build(full_refresh=True)
    files = {m: {d: lake.data_file("curated", m, d) for d in DAYS[:-1]} for m in PARTITIONED}
    stamps = {
        m: {d: (Path(p).stat().st_mtime_ns, manifest(lake, m, d)["build_id"]) for d, p in fs.items()}
        for m, fs in files.items()
    }

    new = DAYS[-1]
    assert {f.stem for f in list_files(inbox, "orders")} >= {new}
    for t in FACTS:
        landing.land_fact(t, {new: None})
    dates = affected_dates(
        project, {t.name: [new] for t in FACTS}, {d for t in FACTS for d in lake.list_dates("raw", t.name)}
    )
    assert dates == [new]
    results = Runner(lake, project, settings).build(PARTITIONED, dates=dates)
    assert {r.model: r.dates for r in results} == {m: [new] for m in PARTITIONED}
    for m, fs in files.items():
        assert {d: (Path(p).stat().st_mtime_ns, manifest(lake, m, d)["build_id"]) for d, p in fs.items()} == stamps[
            m
        ], m
        # The incremental build of the new day equals the full build of the whole dataset.
        assert manifest(lake, m, new)["sha256"] == manifest(built.lake, m, new)["sha256"], m


def test_a_date_reads_each_input_over_its_own_lookback(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """int_deliveries_enriched reads orders three days back and deliveries of the built date
    only; the file is the same as the full build's, byte for byte."""
    b = copy_of(built, tmp_path)
    runner = Runner(b.lake, b.project, b.settings)
    windows: dict[str, tuple[str, str] | None] = {}
    listed = runner.raw_partitions

    def spy(table: str, window: tuple[str, str] | None = None) -> list[tuple[str, str]]:
        windows[table] = window
        return listed(table, window)

    monkeypatch.setattr(runner, "raw_partitions", spy)
    day = DAYS[3]
    runner.build(["int_deliveries_enriched"], dates=[day])
    assert windows == {"deliveries": (day, day), "orders": (DAYS[0], day)}
    built_again = manifest(b.lake, "int_deliveries_enriched", day)
    assert built_again["build_id"] != manifest(built.lake, "int_deliveries_enriched", day)["build_id"]
    assert built_again["sha256"] == manifest(built.lake, "int_deliveries_enriched", day)["sha256"]


def test_full_refresh_is_explicit_and_prunes(built: Built, tmp_path: Path) -> None:
    b = copy_of(built, tmp_path)
    runner = Runner(b.lake, b.project, b.settings)
    with pytest.raises(ValueError, match="pass the dates to build, or full_refresh=True"):
        runner.build_model("fct_deliveries")
    # A curated date whose raw data is gone is removed by a full refresh (and only by one).
    stale = "2026-01-01"
    shutil.copytree(
        Path(b.lake.partition_dir("curated", "fct_deliveries", DAYS[0])),
        Path(b.lake.partition_dir("curated", "fct_deliveries", stale)),
    )
    b.lake.write_json(
        b.lake.build_manifest("curated", "fct_deliveries", stale), {"build_id": "x", "rows": 0, "built_at": ""}
    )
    runner.build_model("fct_deliveries", [DAYS[0]])
    assert stale in b.lake.list_dates("curated", "fct_deliveries")
    result = Runner(b.lake, b.project, b.settings).build_model("fct_deliveries", full_refresh=True)
    assert result.removed == [stale] and result.dates == DAYS
    assert b.lake.list_dates("curated", "fct_deliveries") == DAYS
    assert not b.lake.exists(b.lake.build_manifest("curated", "fct_deliveries", stale))


def test_end_to_end_on_each_backend(settings: Settings) -> None:
    """Land, build one day and refresh the warehouse on the local folder and on S3."""
    lake, _, _ = land_all(settings)
    project = Project.load()
    day = DAYS[2]
    Runner(lake, project, settings).build(dates=[day])
    assert lake.exists(lake.data_file("curated", "fct_deliveries", day))
    doc = json.loads(lake.fs.cat_file(lake.build_manifest("curated", "fct_deliveries", day)))
    report = Warehouse(lake, project, settings.warehouse_path).refresh()
    assert {t.table for t in report.tables} >= {"fct_deliveries", "dim_clients"}
    con = lake.duckdb()
    try:
        n_raw = con.execute(
            f"SELECT count(*) FROM read_parquet('{lake.glob_uri('raw', 'deliveries', True)}', "
            f"hive_partitioning = true) WHERE date = '{day}'"
        ).fetchone()[0]
    finally:
        con.close()
    from delivery_lake.warehouse import query

    assert query(settings.warehouse_path, "SELECT count(*) FROM fct_deliveries")[1] == [(n_raw,)] == [(doc["rows"],)]
    # The day's build read local copies on S3 (storage.Mirror), a full refresh reads the lake in
    # place: the same rows either way, and no copy outlives its build.
    staged = settings.data_dir / ".staging"

    def no_stage_left() -> bool:
        drain_staging_trash()  # stages are deleted in the background: waited for here
        left = [p for p in staged.rglob("*") if p != staged / ".trash"] if staged.exists() else []
        return left == []

    assert no_stage_left()

    def day_rows() -> dict[str, list[tuple[object, ...]]]:
        con = lake.duckdb()
        try:
            return {
                m: sorted(
                    con.execute(
                        f"SELECT * FROM read_parquet('{lake.uri(lake.data_file('curated', m, day))}')"
                    ).fetchall(),
                    key=repr,
                )
                for m in ("int_deliveries_enriched", "fct_deliveries", "agg_client_daily_kpis")
            }
        finally:
            con.close()

    by_day = day_rows()
    assert all(by_day.values())
    Runner(lake, project, settings).build(full_refresh=True)
    assert day_rows() == by_day
    assert no_stage_left()


def test_models_of_a_date_build_side_by_side_after_their_inputs(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner builds independent models concurrently but never before the models they ref."""
    b = copy_of(built, tmp_path)
    spans: dict[str, tuple[float, float]] = {}
    original = Runner.build_model

    def timed(self: Runner, name: str, *args: object, **kw: object):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        try:
            return original(self, name, *args, **kw)
        finally:
            spans[name] = (started, time.monotonic())

    monkeypatch.setattr(Runner, "build_model", timed)
    results = Runner(b.lake, b.project, b.settings).build(dates=[DAYS[1]])
    assert [r.model for r in results] == [m.name for m in b.project.materialized()]
    assert not [r for r in results if r.skipped]
    for name, (start, _end) in spans.items():
        for ref in b.project.inputs(name)[0]:
            assert spans[ref][1] <= start, f"{name} started before its input {ref} finished"
    by_model = {r.model: r for r in results}
    assert by_model["fct_deliveries"].rows_by_date[DAYS[1]] == by_model["fct_deliveries"].rows > 0
    assert by_model["agg_client_daily_kpis"].rows_by_date[DAYS[1]] > 0


def test_published_files_are_in_grain_order(built: Built) -> None:
    """Each file is sorted by its grain's key (what makes rebuilds byte-identical, with a row hash for ties)."""
    day = DAYS[2]
    for model, keys in [
        ("fct_deliveries", ["delivery_id"]),
        ("agg_driver_daily_performance", ["date", "driver_id"]),
        ("fct_feedback", ["feedback_id"]),
    ]:
        frame = pl.read_parquet(built.lake.data_file("curated", model, day))
        assert frame.height > 10, model
        assert frame.select(keys).equals(frame.select(keys).sort(keys)), model
    dims = pl.read_parquet(built.lake.data_file("curated", "dim_drivers"))
    assert dims["driver_id"].to_list() == sorted(dims["driver_id"].to_list())


def test_an_order_landed_twice_does_not_fan_out_its_delivery(built: Built, tmp_path: Path) -> None:
    """The same order_id in two raw partitions (a re-export under another client): the delivery
    keeps one row, with the attributes of the copy created last."""
    b = copy_of(built, tmp_path)
    day = DAYS[2]
    before = pl.read_parquet(b.lake.data_file("curated", "int_deliveries_enriched", day))
    target = before.filter(pl.col("created_at").is_not_null())["order_id"][0]
    orders = raw(b.lake, "orders").filter(pl.col("order_id") == target)
    assert orders.height == 1
    original = orders.row(0, named=True)
    later = orders.drop("date", "client").with_columns(
        pl.col("created_at") + pl.duration(minutes=5),
        pl.lit(4321.5).cast(orders.schema["order_value"]).alias("order_value"),
    )
    dest = Path(b.lake.data_file("raw", "orders", str(original["date"]), "C999"))
    dest.parent.mkdir(parents=True)
    later.write_parquet(dest)

    Runner(b.lake, b.project, b.settings).build(["int_deliveries_enriched"], dates=[day])
    after = pl.read_parquet(b.lake.data_file("curated", "int_deliveries_enriched", day))
    assert after.height == before.height
    row = after.filter(pl.col("order_id") == target)
    assert row.height == before.filter(pl.col("order_id") == target).height == 1
    assert row["order_value"].to_list() == [4321.5]
    assert row["created_at"].to_list() == [original["created_at"] + timedelta(minutes=5)]


def test_a_dimension_whose_inputs_did_not_change_is_not_rebuilt(built: Built, tmp_path: Path) -> None:
    """A new day of facts does not rebuild (nor reload into the warehouse) the dimensions."""
    b = copy_of(built, tmp_path)
    dims = ["dim_clients", "dim_depots", "dim_drivers", "dim_vehicles"]
    before = {m: manifest(b.lake, m, None) for m in dims}
    wh = Warehouse(b.lake, b.project, tmp_path / "wh.duckdb")
    wh.refresh()

    results = {r.model: r for r in Runner(b.lake, b.project, b.settings).build(dates=[DAYS[-1]])}
    assert {m for m, r in results.items() if r.up_to_date} == set(dims)
    assert {m: results[m].rows for m in dims} == {m: before[m]["rows"] for m in dims}
    assert {m: manifest(b.lake, m, None) for m in dims} == before  # not even rewritten
    assert not set(dims) & set(wh.refresh().changed)

    # Clients re-landed with the same rows: the landing rewrites nothing, so nothing is rebuilt.
    Landing(b.lake, b.settings.inbox_dir, b.settings).land_dimension(TABLES["clients"])
    assert all(r.up_to_date for r in Runner(b.lake, b.project, b.settings).build(dims))
    # A client renamed (in a copy of the shared inbox): only the model reading clients is rebuilt.
    inbox = tmp_path / "inbox"
    shutil.copytree(b.settings.inbox_dir, inbox)
    b = Built(_settings(tmp_path, inbox), b.lake, b.project)
    [src] = list_files(b.settings.inbox_dir, "clients")
    lines = src.read_text().splitlines(keepends=True)
    cells = lines[1].split(",")
    cells[1] = "Renamed Trading Co"
    src.write_text(lines[0] + ",".join(cells) + "".join(lines[2:]))
    Landing(b.lake, b.settings.inbox_dir, b.settings).land_dimension(TABLES["clients"])
    results = {r.model: r for r in Runner(b.lake, b.project, b.settings).build(dims)}
    assert {m for m, r in results.items() if not r.up_to_date} == {"dim_clients"}
    rebuilt = manifest(b.lake, "dim_clients", None)
    assert (
        rebuilt["build_id"] != before["dim_clients"]["build_id"]
        and rebuilt["sha256"] != before["dim_clients"]["sha256"]
    )
    assert set(wh.refresh().changed) & set(dims) == {"dim_clients"}

    # Changed model code or library (the project digest), or a full refresh, rebuilds them all.
    edited = Project(b.project.root, b.project.models, digest="another library")
    assert not any(r.up_to_date for r in Runner(b.lake, edited, b.settings).build(dims))
    assert not any(r.up_to_date for r in Runner(b.lake, b.project, b.settings).build(dims, full_refresh=True))
    assert all(r.up_to_date for r in Runner(b.lake, b.project, b.settings).build(dims))


def test_the_models_of_a_run_share_one_duckdb_instance(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One instance per run, a cursor per model (a new instance per model cost ~0.3 CPU s of the
    benchmark's daily refresh), with each model's temp tables private to its cursor."""
    b = copy_of(built, tmp_path)
    opened: list[str] = []
    original = Lake.duckdb

    def counting(self: Lake, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        opened.append(str(args[0]) if args else ":memory:")
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Lake, "duckdb", counting)
    results = Runner(b.lake, b.project, b.settings).build(PARTITIONED, dates=DAYS[1:3])
    assert opened == [":memory:"]
    assert {r.model: r.rows_by_date for r in results} == {
        m: {d: manifest(built.lake, m, d)["rows"] for d in DAYS[1:3]} for m in PARTITIONED
    }


def test_the_biggest_model_of_a_wave_starts_first(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Among models ready together, the one with the biggest output last time starts first:
    fct_deliveries before the three small aggregates that become ready with it."""
    import dataclasses

    from delivery_lake.transform import ModelResult

    b = copy_of(built, tmp_path)
    started: list[str] = []

    def record(self: Runner, name: str, dates: list[str] | None = None, full_refresh: bool = False) -> ModelResult:
        started.append(name)
        return ModelResult(name, dates=list(dates or [None]))

    monkeypatch.setattr(Runner, "build_model", record)
    one_worker = dataclasses.replace(b.settings, duckdb_threads=1)  # one at a time: the order is the choice
    Runner(b.lake, b.project, one_worker).build(dates=[DAYS[-1]])
    aggs = ["agg_client_daily_kpis", "agg_depot_daily_load", "agg_driver_daily_performance"]
    assert manifest(b.lake, "fct_deliveries", DAYS[-1])["rows"] > max(
        manifest(b.lake, a, DAYS[-1])["rows"] for a in aggs
    )
    assert started[0] == "int_deliveries_enriched"
    assert all(started.index("fct_deliveries") < started.index(a) for a in aggs), started


def test_a_date_rebuilt_alone_is_byte_identical_to_the_full_build(built: Built, tmp_path: Path) -> None:
    """A file depends on its inputs only, not on which other dates were built in the same run
    (DuckDB 2 writes a Parquet column REQUIRED or OPTIONAL from the statistics of what it copies)."""
    b = copy_of(built, tmp_path)
    dates = b.lake.list_dates("curated", "fct_deliveries")
    full = {(m, d): manifest(b.lake, m, d)["sha256"] for m in PARTITIONED for d in dates}
    for d in dates:
        Runner(b.lake, b.project, b.settings).build(PARTITIONED, dates=[d])
    alone = {(m, d): manifest(b.lake, m, d)["sha256"] for m in PARTITIONED for d in dates}
    assert len(dates) >= 3
    assert {k for k in full if full[k] != alone[k]} == set()
    # One Parquet schema for every partition of a model: nothing is REQUIRED by accident of the data.
    con = b.lake.duckdb()
    try:
        for m in PARTITIONED:
            files = [b.lake.uri(b.lake.data_file("curated", m, d)) for d in dates]
            kinds = con.execute(
                f"SELECT DISTINCT repetition_type FROM parquet_schema({files!r}) WHERE name != 'duckdb_schema'"
            ).fetchall()
            assert kinds == [("OPTIONAL",)], m
    finally:
        con.close()


# ---- held input: parents outside the lookback, blocked partitions, last good versions ---------------


def _held(doc_or_result: dict | object) -> list[list[str]]:
    return doc_or_result["held_cells"] if isinstance(doc_or_result, dict) else doc_or_result.held_cells  # type: ignore[attr-defined]


def test_an_order_created_long_before_dispatch_is_found_outside_the_lookback(tmp_path: Path) -> None:
    """int_deliveries_enriched reads orders 3 days back; a delivery whose order was created 10 days
    before dispatch still gets that order's promise: the lookback decides what is read first, not
    what is found. The incremental build equals the full refresh byte for byte."""
    inbox = tmp_path / "inbox"
    day, early = "2026-01-12", "2026-01-02"
    delivery, promised = inbox_with_an_order_moved_back(inbox, day, early)

    settings = _settings(tmp_path, inbox)
    lake, _, _ = land_all(settings)
    assert (early, "C001") in lake.list_partitions("raw", "orders")
    models = ["int_deliveries_enriched", "fct_deliveries", "agg_client_daily_kpis"]
    results = {r.model: r for r in Runner(lake, Project.load(), settings).build(models, dates=[day])}

    fct = pl.read_parquet(lake.data_file("curated", "fct_deliveries", day))
    got = fct.filter(pl.col("delivery_id") == delivery["delivery_id"]).row(0, named=True)
    assert got["promised_by"].strftime("%Y-%m-%dT%H:%M:%SZ") == promised
    assert got["is_on_time"] is True and got["late_minutes"] == 0
    # Independent: every delivery of the day joined to its order from the CSVs, wherever it was created.
    orders = pl.concat([pl.read_csv(p, infer_schema=False) for p in sorted((inbox / "orders").glob("*.csv"))])
    want = (
        pl.read_csv(inbox / "deliveries" / f"{day}.csv", infer_schema=False)
        .join(orders.select("order_id", "promised_by"), on="order_id", how="left")
        .select(
            "delivery_id",
            "promised_by",
            ((pl.col("status") == "delivered") & (pl.col("delivered_at") <= pl.col("promised_by"))).alias("is_on_time"),
        )
        .sort("delivery_id")
    )
    assert want["promised_by"].null_count() == 0
    assert_frame_equal(
        fct.select("delivery_id", pl.col("promised_by").dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "is_on_time").sort(
            "delivery_id"
        ),
        want,
    )
    doc = manifest(lake, "int_deliveries_enriched", day)
    assert doc["parents_found"] == {"raw.orders": [[early, "C001"]]} and doc["held_cells"] == []
    assert results["int_deliveries_enriched"].held_cells == [] == results["agg_client_daily_kpis"].held_cells
    kpis = pl.read_parquet(lake.data_file("curated", "agg_client_daily_kpis", day)).row(0, named=True)
    assert kpis["on_time"] == want["is_on_time"].sum()

    incremental = {m: manifest(lake, m, day)["sha256"] for m in models}
    Runner(lake, Project.load(), settings).build(models, full_refresh=True)
    assert {m: manifest(lake, m, day)["sha256"] for m in models} == incremental
    assert (
        manifest(lake, "int_deliveries_enriched", day)["parents_found"] == {}
    )  # a full refresh reads every order already


def test_a_blocked_deliveries_partition_holds_its_cell_instead_of_zeros(built: Built, tmp_path: Path) -> None:
    """Feedback of (D, C) is good, its deliveries are blocked: the client KPIs have no row for the
    cell (not one with deliveries = 0 and revenue = 0.00), and the build says which cell and why."""
    b = copy_of(built, tmp_path)
    day, client = DAYS[2], "C002"
    assert (
        raw(b.lake, "customer_feedback")
        .filter((pl.col("date").cast(pl.Utf8) == day) & (pl.col("client") == client))
        .height
        > 0
    )
    gate.record(b.lake, "deliveries", False, {"check": "test"}, day, client)
    results = {r.model: r for r in Runner(b.lake, b.project, b.settings).build(PARTITIONED, dates=[day])}

    cell = [[day, client, "blocked: raw.deliveries"]]
    for m in (
        "int_deliveries_enriched",
        "fct_deliveries",
        "agg_client_daily_kpis",
        "agg_driver_daily_performance",
        "agg_depot_daily_load",
    ):
        assert _held(results[m]) == cell == _held(manifest(b.lake, m, day)), m
    assert _held(results["fct_feedback"]) == []  # its own input is whole
    kpis = pl.read_parquet(b.lake.data_file("curated", "agg_client_daily_kpis", day))
    assert client not in kpis["client_id"].to_list() and kpis.height == 3
    want = expected_client_kpis(built.lake).filter(
        (pl.col("date").cast(pl.Utf8) == day) & (pl.col("client_id") != client)
    )
    assert_frame_equal(
        kpis.with_columns(pl.col("revenue").cast(pl.Float64)).sort("client_id"),
        want.sort("client_id").select(kpis.columns),
        check_dtypes=False,
        check_exact=False,
        rel_tol=1e-12,
        abs_tol=1e-9,
    )
    assert client in pl.read_parquet(b.lake.data_file("curated", "fct_feedback", day))["client_id"].to_list()
    for m in ("agg_driver_daily_performance", "agg_depot_daily_load"):
        assert pl.read_parquet(b.lake.data_file("curated", m, day))["complete"].unique().to_list() == [False], m
        assert curated(b.lake, m).filter(pl.col("date").cast(pl.Utf8) != day)["complete"].all(), m


def _orders_of(lake: Lake, d: str, client: str) -> pl.DataFrame:
    return pl.read_parquet(lake.data_file("raw", "orders", d, client))


def test_a_blocked_orders_partition_holds_the_cells_of_its_deliveries(built: Built, tmp_path: Path) -> None:
    """Orders of (D, C) blocked, their deliveries good: no mart computes an on-time rate without
    the promise. The deliveries' cells are held (absent from the client KPIs, none of their
    deliveries in fct_deliveries with a null promise), and the driver and depot marts say so."""
    b = copy_of(built, tmp_path)
    blocked_day, client = DAYS[1], "C003"
    gate.record(b.lake, "orders", False, {"check": "test"}, blocked_day, client)
    Runner(b.lake, b.project, b.settings).build(PARTITIONED, dates=DAYS)

    # Independent: the deliveries whose order lies in the blocked partition, per (date, client).
    blocked_orders = _orders_of(b.lake, blocked_day, client)["order_id"]
    hit = (
        raw(b.lake, "deliveries")
        .filter(pl.col("order_id").is_in(blocked_orders.implode()))
        .group_by(pl.col("date").cast(pl.Utf8), "client_id")
        .len()
        .sort("date", "client_id")
    )
    assert hit.height >= 2  # dispatched on the day and the next ones
    held = {(d, c): n for d, c, n in hit.iter_rows()}
    for d in DAYS:
        doc = manifest(b.lake, "int_deliveries_enriched", d)
        want = [
            [d, c, f"parent unavailable: raw.orders ({n} row{'s' if n != 1 else ''})"]
            for (dd, c), n in held.items()
            if dd == d
        ]
        assert doc["held_cells"] == want, d
        assert manifest(b.lake, "agg_client_daily_kpis", d)["held_cells"] == want, d

    kpis = curated(b.lake, "agg_client_daily_kpis")
    cells = set(zip(kpis["date"].cast(pl.Utf8), kpis["client_id"], strict=True))
    assert cells.isdisjoint(held) and len(cells) == len(DAYS) * 4 - len(held)
    want_kpis = expected_client_kpis(built.lake).filter(
        ~pl.struct(pl.col("date").cast(pl.Utf8), "client_id").is_in([{"date": d, "client_id": c} for d, c in held])
    )
    assert_frame_equal(
        kpis.with_columns(pl.col("revenue").cast(pl.Float64)).sort("date", "client_id"),
        want_kpis.sort("date", "client_id").select(kpis.columns),
        check_dtypes=False,
        check_exact=False,
        rel_tol=1e-12,
        abs_tol=1e-9,
    )
    fct = curated(b.lake, "fct_deliveries")
    assert fct["promised_by"].null_count() == 0 and fct["is_on_time"].null_count() == 0
    assert not set(zip(fct["date"].cast(pl.Utf8), fct["client_id"], strict=True)) & set(held)
    held_dates = {d for d, _ in held}
    for m in ("agg_driver_daily_performance", "agg_depot_daily_load"):
        complete = curated(b.lake, m).group_by(pl.col("date").cast(pl.Utf8)).agg(pl.col("complete").unique())
        assert {d: v for d, v in complete.iter_rows()} == {d: [d not in held_dates] for d in DAYS}, m


@pytest.mark.parametrize("held_rows", [10**9, 10], ids=["small-enough", "too-many-rows"])
def test_inputs_of_many_small_files_are_read_once_and_build_the_same_marts(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_rows: int
) -> None:
    """A raw fact of many small files is read into the build's memory once (MANY_FILES, HELD_ROWS)
    instead of at each scan: the same files, held cells and parents found as when it is read in
    place, with a blocked orders partition so the parent check and its held cells take part. An
    input of more rows than HELD_ROWS is read in place whatever its files."""
    blocked_day, client = DAYS[2], "C002"
    lakes = {}
    for kind in ("in_place", "held"):
        b = copy_of(built, tmp_path / kind)
        gate.record(b.lake, "orders", False, {"check": "test"}, blocked_day, client)
        lakes[kind] = b
    held: list[str] = []
    read = Runner._fact_sql

    def spied(self: Runner, con, table: str, paths: list[str], reads) -> str:
        got = read(self, con, table, paths, reads)
        if got.startswith('SELECT * FROM "__held_'):
            held.append(table)
        return got

    monkeypatch.setattr(Runner, "_fact_sql", spied)
    b = lakes["in_place"]
    assert len(b.lake.list_partitions("raw", "orders")) < runner_module.MANY_FILES  # read in place
    Runner(b.lake, b.project, b.settings).build(PARTITIONED, dates=DAYS)
    assert held == []
    monkeypatch.setattr(runner_module, "MANY_FILES", 2)
    monkeypatch.setattr(runner_module, "HELD_ROWS", held_rows)
    b = lakes["held"]
    Runner(b.lake, b.project, b.settings).build(PARTITIONED, dates=DAYS)
    if held_rows == 10:
        assert held == []
    else:  # every model reading a raw fact held it: deliveries, orders and feedback
        assert set(held) == {"deliveries", "orders", "customer_feedback"}, held
    volatile = ("build_id", "built_at")
    found = False
    for m in PARTITIONED:
        for d in DAYS:
            want, got = (manifest(lakes[k].lake, m, d) for k in ("in_place", "held"))
            assert {k: v for k, v in got.items() if k not in volatile} == {
                k: v for k, v in want.items() if k not in volatile
            }, (m, d)
            found |= bool(got["held_cells"])
    assert found  # the blocked orders held some deliveries' cells on both sides


def test_a_blocked_partition_with_a_last_good_copy_is_read_from_it(built: Built, tmp_path: Path) -> None:
    """Orders of (D, C) re-landed with other promises and blocked, the version before kept in
    lastgood/: the marts are computed from that version, and the builds say they were."""
    b = copy_of(built, tmp_path)
    blocked_day, client = DAYS[1], "C003"
    path = Path(b.lake.data_file("raw", "orders", blocked_day, client))
    last_good = Path(b.lake.data_file("lastgood", "orders", blocked_day, client))
    last_good.parent.mkdir(parents=True)
    shutil.copyfile(path, last_good)
    changed = pl.read_parquet(path).with_columns(pl.col("promised_by") - pl.duration(hours=12))
    changed.write_parquet(path)
    gate.record(b.lake, "orders", False, {"check": "test"}, blocked_day, client)
    Runner(b.lake, b.project, b.settings).build(PARTITIONED, dates=DAYS)

    # The changed version would move on-time counts: reading it by mistake could not pass below.
    hit = raw(b.lake, "deliveries").filter(pl.col("order_id").is_in(changed["order_id"].implode()))
    assert hit["date"].cast(pl.Utf8).unique().len() >= 2
    kpis = (
        curated(b.lake, "agg_client_daily_kpis")
        .with_columns(pl.col("revenue").cast(pl.Float64))
        .sort("date", "client_id")
    )
    want = (
        expected_client_kpis(built.lake).sort("date", "client_id").select(kpis.columns)
    )  # the old orders, read independently
    assert kpis.height == len(DAYS) * 4
    assert_frame_equal(kpis, want, check_dtypes=False, check_exact=False, rel_tol=1e-12, abs_tol=1e-9)
    assert (
        curated(b.lake, "fct_deliveries")["promised_by"]
        .sort()
        .equals(curated(built.lake, "fct_deliveries")["promised_by"].sort())
    )
    for m in ("int_deliveries_enriched", "fct_deliveries", "agg_client_daily_kpis"):
        doc = manifest(b.lake, m, DAYS[2])
        assert doc["served_last_good"] == {"raw.orders": [[blocked_day, client]]}, m
        assert doc["held_cells"] == [] and "raw.orders" not in doc["excluded_partitions"], m
    assert all(curated(b.lake, m)["complete"].all() for m in ("agg_driver_daily_performance", "agg_depot_daily_load"))


def test_dates_with_data_are_listed_only_for_the_dates_asked(built: Built) -> None:
    """What a model step builds of its run's partition keys: the dates its raw facts have, and the
    dates it has a file for; for a month or less of keys only those dates are listed, beyond that
    the whole table is (both ways give the same answer)."""
    runner = Runner(built.lake, built.project, built.settings)
    first = date.fromisoformat(DAYS[0])
    before, after = (first - timedelta(days=3)).isoformat(), (first + timedelta(days=20)).isoformat()
    keys = [before, DAYS[1], after]
    for model in ("fct_deliveries", "agg_client_daily_kpis"):
        assert runner.available_dates(model, keys) == [DAYS[1]]
        assert runner.built_dates(model, keys) == [DAYS[1]]
        many = [(first + timedelta(days=k)).isoformat() for k in range(-10, 30)]  # 40 dates: whole listings
        assert runner.available_dates(model, many) == runner.available_dates(model) == DAYS
        assert runner.built_dates(model, many) == DAYS
        assert runner.available_dates(model, []) == []


def test_dates_staged_together_lie_flat_and_are_told_apart_by_their_date(tmp_path: Path) -> None:
    """`publish.stage_dates` writes one file per date straight into its folder (no folder per
    date) and tells them apart by the date column's statistics: a date whose file does not hold
    the rows it should is not handed back (its caller writes it alone), nor is a date not asked for."""
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT DATE '2026-01-01' + (i % 4)::INT AS date, i FROM range(40) r(i)")
    folder = tmp_path / "stage"
    staged = publish.stage_dates(
        con,
        "SELECT * FROM t WHERE date < DATE '2026-01-04' ORDER BY date, i",
        "date",
        {"2026-01-01": 10, "2026-01-02": 10, "2026-01-03": 9},  # 2026-01-03 holds 10 rows, not 9
        ["date", "i"],
        folder,
    )
    assert set(staged) == {"2026-01-01", "2026-01-02"}
    for d, f in staged.items():
        assert f.parent == folder
        got = con.execute(f"SELECT date::VARCHAR, count(*), min(i) FROM read_parquet('{f}') GROUP BY ALL").fetchall()
        assert got == [(d, 10, {"2026-01-01": 0, "2026-01-02": 1}[d])]
        assert pq.read_metadata(f).num_row_groups == 1
    assert [p for p in folder.iterdir() if p.is_dir()] == []
    assert len(list(folder.glob("*.parquet"))) == 3  # 2026-01-04 was not selected


def test_dates_built_together_are_the_files_and_manifests_each_gets_alone(
    tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build of more than FEW_DATES dates publishes them with one COPY partitioned by date
    (`publish_dates`): each date's file is the one it gets when built alone, byte for byte, with
    the same manifest; a date over the one-row-group limit, and an empty one, get their own COPY."""
    inbox = tmp_path / "inbox"
    generate(
        inbox, start=date(2026, 1, 1), days=10, clients=2, orders_per_day=30, seed=4, dirty_rate=0.03, progress=False
    )
    settings = _settings(tmp_path, inbox)
    lake, _, _ = land_all(settings)
    monkeypatch.setattr(publish, "ONE_ROW_GROUP", 20)  # a day's deliveries (about 30) go alone, aggregates together
    alone: list[tuple[str, str]] = []
    copy_one = publish._copy_and_publish

    def counted(*args):  # the real single-date publish, counted
        alone.append((args[3], args[4]))
        return copy_one(*args)

    monkeypatch.setattr(publish, "_copy_and_publish", counted)
    results = {r.model: r for r in Runner(lake, project, settings).build(full_refresh=True)}
    dates = lake.list_dates("curated", "fct_deliveries")
    assert len(dates) > FEW_DATES and not [r for r in results.values() if r.skipped]
    together = {(m, d): manifest(lake, m, d) for m in PARTITIONED for d in lake.list_dates("curated", m)}
    # the rows each manifest claims are the rows of its file, and the runner reports the same
    for (m, d), doc in together.items():
        assert doc["rows"] == pq.read_metadata(lake.data_file("curated", m, d)).num_rows == results[m].rows_by_date[d]
    big = {(m, d) for (m, d), doc in together.items() if doc["rows"] > 20 or doc["rows"] == 0}
    assert big and len(big) < len(together)
    assert {(m, d) for m, d in alone if d is not None} == big  # whole tables: one COPY each, as always
    for d in dates:
        Runner(lake, project, settings).build(PARTITIONED, dates=[d])
    volatile = ("build_id", "built_at")
    for (m, d), doc in together.items():
        again = manifest(lake, m, d)
        assert {k: v for k, v in doc.items() if k not in volatile} == {
            k: v for k, v in again.items() if k not in volatile
        }, (m, d)
