"""The curated layer on Apache Spark (TRANSFORM_ENGINE=spark, local mode): every mart equals the
one DuckDB builds from the same lake, on the dirty dataset and on the paths a build can take
(a held cell, a day built alone, a parent found outside the lookback, a Python model)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import sqlglot
from polars.testing import assert_frame_equal
from sqlglot import exp

from delivery_lake import gate
from delivery_lake.config import Settings
from delivery_lake.storage import Lake
from delivery_lake.transform import Project, Runner
from delivery_lake.transform.base import Model, ModelError
from delivery_lake.transform.spark import to_spark_sql
from delivery_lake.warehouse.reader import open_reader
from tests.helpers import START, inbox_with_an_order_moved_back, land_all

DAYS = [f"2026-01-{d:02d}" for d in range(START.day, START.day + 5)]
BLOCKED = (DAYS[2], "C001")
SERVED = (DAYS[1], "C003")
MANIFEST_FIELDS = ("rows", "held_cells", "excluded_partitions", "served_last_good", "parents_found")


@dataclass
class Lakes:
    duckdb: Settings
    spark: Settings


def _settings(root: Path, inbox: Path, engine: str) -> Settings:
    return Settings.from_env(
        data_dir=root / "data", lake_url=str(root / "lake"), inbox_dir=inbox, transform_engine=engine
    )


def _two_lakes(root: Path, inbox: Path, prepare: Callable[[Lake], None] | None = None) -> Lakes:
    """The inbox landed at root/duckdb (then `prepare`d) and copied to root/spark; each is built
    by its engine after."""
    duck = _settings(root / "duckdb", inbox, "duckdb")
    lake, _, _ = land_all(duck)
    if prepare is not None:
        prepare(lake)
    shutil.copytree(duck.lake_url, root / "spark" / "lake")
    return Lakes(duck, _settings(root / "spark", inbox, "spark"))


@pytest.fixture(scope="module")
def project() -> Project:
    return Project.load()


def _block_two_partitions(lake: Lake) -> None:
    """A deliveries partition blocked (its cell is held) and an orders partition blocked with
    its version before in lastgood/ (read from there: one input from two folders)."""
    gate.record(lake, "deliveries", False, {"check": "test"}, BLOCKED[0], BLOCKED[1])
    day, client = SERVED
    path = Path(lake.data_file("raw", "orders", day, client))
    last_good = Path(lake.data_file("lastgood", "orders", day, client))
    last_good.parent.mkdir(parents=True)
    shutil.copyfile(path, last_good)
    pl.read_parquet(path).with_columns(pl.col("promised_by") - pl.duration(hours=12)).write_parquet(path)
    gate.record(lake, "orders", False, {"check": "test"}, day, client)


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory, dirty_export: Path, project: Project) -> Lakes:
    """The dirty export landed, one deliveries partition blocked by the gate (so cells are held),
    and every model built on each engine."""
    root = tmp_path_factory.mktemp("spark")
    inbox = root / "inbox"
    shutil.copytree(dirty_export, inbox)
    both = _two_lakes(root, inbox, _block_two_partitions)
    for s in (both.duckdb, both.spark):
        results = Runner(Lake.from_settings(s), project, s).build(full_refresh=True)
        assert not [r.model for r in results if r.skipped]
        lake = Lake.from_settings(s)
        assert (lake.read_json(lake.build_manifest("curated", "dim_clients")) or {})["engine"] == s.transform_engine
        # what Spark staged for the publisher is gone once published
        assert lake.fs.find(lake.meta_path("staging")) == []
    return both


def _tolerance(m: Model, column: str) -> float:
    """How far two engines' floats may differ: the unit of the rounding the model declares for
    the column (the last digit can differ when a mean's sum is added in another order and lands
    on a half), else a relative 1e-9."""
    if m.compiled_sql is None:
        return 0.0
    tree = sqlglot.parse_one(m.compiled_sql, read="duckdb")
    digits = [
        int(r.args["decimals"].name)
        for a in tree.find_all(exp.Alias)
        if a.alias == column
        for r in a.find_all(exp.Round)
        if r.args.get("decimals")
    ]
    return 10.0 ** -min(digits) if digits else 0.0


def _frame(s: Settings, m: Model, date: str | None = None) -> pl.DataFrame:
    lake = Lake.from_settings(s)
    if date is not None:
        files = [lake.data_file("curated", m.name, date)]
    elif m.is_partitioned:
        files = [lake.data_file("curated", m.name, d) for d in lake.list_dates("curated", m.name)]
    else:
        files = [lake.data_file("curated", m.name)]
    return pl.concat([pl.read_parquet(f, hive_partitioning=False) for f in files]).sort(m.grain_columns)


def assert_same_mart(a: pl.DataFrame, b: pl.DataFrame, m: Model) -> None:
    assert a.schema == b.schema, m.name
    assert a.height == b.height, m.name
    floats = [c for c, t in a.schema.items() if t == pl.Float64]
    assert_frame_equal(a.drop(floats), b.drop(floats), check_exact=True)
    for c in floats:
        assert a[c].is_null().to_list() == b[c].is_null().to_list(), (m.name, c)
        both = pl.DataFrame({"a": a[c], "b": b[c]}).drop_nulls()
        unit = _tolerance(m, c)
        worst = both.select(((pl.col("a") - pl.col("b")).abs() - pl.col("a").abs() * 1e-9).max()).item()
        assert worst is None or worst <= unit * 1.000001, (m.name, c, worst, unit)


def _manifest(s: Settings, m: Model, date: str | None) -> dict:
    lake = Lake.from_settings(s)
    doc = lake.read_json(lake.build_manifest("curated", m.name, date)) or {}
    return {k: doc.get(k) for k in MANIFEST_FIELDS}


@pytest.mark.spark
def test_every_mart_built_on_spark_equals_duckdbs(lakes: Lakes, project: Project) -> None:
    held = []
    for m in project.materialized():
        duck, spark = _frame(lakes.duckdb, m), _frame(lakes.spark, m)
        assert duck.height > 0, m.name
        assert_same_mart(duck, spark, m)
        lake = Lake.from_settings(lakes.duckdb)
        for d in lake.list_dates("curated", m.name) if m.is_partitioned else [None]:
            assert _manifest(lakes.spark, m, d) == _manifest(lakes.duckdb, m, d), (m.name, d)
            held += _manifest(lakes.duckdb, m, d)["held_cells"] or []
    # the blocked partition's cell is held, and the other read from lastgood/, on both engines:
    # the comparison covered those paths
    assert [BLOCKED[0], BLOCKED[1], "blocked: raw.deliveries"] in held
    fct = _manifest(lakes.spark, project["fct_deliveries"], DAYS[2])
    assert fct["served_last_good"] == {"raw.orders": [list(SERVED)]}


@pytest.fixture(scope="module")
def connect_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark Connect server from the pyspark wheel on a free loopback port (stopped by pid)."""
    from infra import spark_connect
    from infra.processes import free_port

    port = free_port()
    service = spark_connect.start(port, tmp_path_factory.mktemp("spark-connect"))
    try:
        yield f"sc://127.0.0.1:{port}"
    finally:
        service.stop()


@pytest.mark.spark
def test_spark_remote_builds_the_same_marts_on_a_spark_connect_server(
    lakes: Lakes, project: Project, connect_url: str, tmp_path: Path
) -> None:
    """SPARK_REMOTE points the same code at a cluster: a Spark Connect server, here one on
    loopback. The whole curated layer rebuilt through it equals DuckDB's."""
    remote = Settings.from_env(
        data_dir=tmp_path / "data",
        lake_url=str(tmp_path / "lake"),
        inbox_dir=lakes.spark.inbox_dir,
        transform_engine="spark",
        spark_remote=connect_url,
    )
    shutil.copytree(lakes.spark.lake_url, remote.lake_url)
    lake = Lake.from_settings(remote)
    for d in lake.list_dates("curated", "fct_deliveries"):  # nothing left from the local build
        lake.delete(lake.data_file("curated", "fct_deliveries", d))
    # As a user runs it: the CLI with the two settings in its environment (and in a process of
    # its own: a process holding a local Spark session, as this one does, cannot open a remote one).
    env = {
        **os.environ,
        "DATA_DIR": str(remote.data_dir),
        "LAKE_URL": remote.lake_url,
        "INBOX_DIR": str(remote.inbox_dir),
        "TRANSFORM_ENGINE": "spark",
        "SPARK_REMOTE": connect_url,
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "delivery-lake"), "build", "--full-refresh"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (lake.read_json(lake.build_manifest("curated", "fct_deliveries", DAYS[0])) or {})["engine"] == "spark"
    for m in project.materialized():
        assert_same_mart(_frame(lakes.duckdb, m), _frame(remote, m), m)
    # `build` refreshed the warehouse from what Spark built, as it does from DuckDB's marts
    con = open_reader(remote.warehouse_path)
    try:
        loaded = con.execute("SELECT count(*), count(DISTINCT delivery_id) FROM fct_deliveries").fetchall()
    finally:
        con.close()
    rows = _frame(lakes.duckdb, project["fct_deliveries"]).height
    assert loaded == [(rows, rows)]


@pytest.mark.spark
def test_a_day_built_alone_on_spark_equals_the_full_build(lakes: Lakes, project: Project, tmp_path: Path) -> None:
    """A day's refresh reads each input over its lookback window, a different plan from the
    full build's; the day's file must not change, and its manifest is DuckDB's for the same build."""
    day = DAYS[-1]
    partitioned = [m.name for m in project.materialized() if m.is_partitioned]
    copies = {}
    for engine, built in (("duckdb", lakes.duckdb), ("spark", lakes.spark)):
        copies[engine] = _settings(tmp_path / engine, built.inbox_dir, engine)
        shutil.copytree(built.lake_url, copies[engine].lake_url)
        Runner(Lake.from_settings(copies[engine]), project, copies[engine]).build(partitioned, dates=[day])
    for name in partitioned:
        m = project[name]
        assert_same_mart(_frame(lakes.duckdb, m, day), _frame(copies["spark"], m, day), m)
        assert _manifest(copies["spark"], m, day) == _manifest(copies["duckdb"], m, day), name


@pytest.mark.spark
def test_an_order_outside_the_lookback_is_found_on_spark(tmp_path: Path, project: Project) -> None:
    """The runner's parent lookup (keys found in partitions outside the window) is mirrored into
    Spark: the delivery gets its order's promise there too."""
    day, early = "2026-01-12", "2026-01-02"
    delivery, promised = inbox_with_an_order_moved_back(tmp_path / "inbox", day, early)
    both = _two_lakes(tmp_path, tmp_path / "inbox")
    models = ["int_deliveries_enriched", "fct_deliveries", "agg_client_daily_kpis"]
    for s in (both.duckdb, both.spark):
        Runner(Lake.from_settings(s), project, s).build(models, dates=[day])
    fct = _frame(both.spark, project["fct_deliveries"], day)
    got = fct.filter(pl.col("delivery_id") == delivery["delivery_id"]).row(0, named=True)
    assert got["promised_by"].strftime("%Y-%m-%dT%H:%M:%SZ") == promised and got["is_on_time"] is True
    for name in models:
        m = project[name]
        assert_same_mart(_frame(both.duckdb, m, day), _frame(both.spark, m, day), m)
    assert _manifest(both.spark, project["int_deliveries_enriched"], day)["parents_found"] == {
        "raw.orders": [[early, "C001"]]
    }


@pytest.mark.spark
def test_a_model_spark_cannot_run_is_refused_by_file(lakes: Lakes, tmp_path: Path) -> None:
    """A function Spark lacks fails the model with its file named and Spark's reason in one line,
    and leaves its published files as they were."""
    root = tmp_path / "models"
    shutil.copytree(Path(Project.load().root), root)
    model = root / "marts" / "dim_clients.sql"
    text = model.read_text()
    model.write_text(text.replace("select", "select jaro_winkler_similarity('a', 'b') as oops,", 1))
    broken = Project.load(root, cache=False)
    copy = _settings(tmp_path, lakes.spark.inbox_dir, "spark")
    shutil.copytree(lakes.spark.lake_url, copy.lake_url)
    lake = Lake.from_settings(copy)
    before = lake.read_json(lake.build_manifest("curated", "dim_clients"))
    with pytest.raises(ModelError) as err:
        Runner(lake, broken, copy).build_model("dim_clients", full_refresh=True)
    message = str(err.value)
    assert message.startswith(f"{model}: on Spark: ") and "\n" not in message, message
    assert "jaro" in message.lower()
    assert lake.read_json(lake.build_manifest("curated", "dim_clients")) == before


def test_a_struct_spread_into_columns_is_transpiled_field_by_field() -> None:
    """DuckDB's unnest of a struct in a projection (int_deliveries_enriched's latest order) has
    no Spark counterpart in sqlglot's output: one field access per field instead."""
    sql = "select order_id, unnest(arg_max(struct_pack(depot_id, v := w + 1), created_at)) from o group by order_id"
    assert to_spark_sql(sql) == (
        "SELECT order_id, MAX_BY(STRUCT(depot_id, w + 1 AS v), created_at).depot_id AS `depot_id`, "
        "MAX_BY(STRUCT(depot_id, w + 1 AS v), created_at).v AS `v` FROM o GROUP BY order_id"
    )


def test_an_unknown_engine_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFORM_ENGINE", "flink")
    with pytest.raises(ValueError, match=r"TRANSFORM_ENGINE='flink': expected one of duckdb, spark"):
        Settings.from_env()
    monkeypatch.setenv("TRANSFORM_ENGINE", "Spark")
    assert Settings.from_env().transform_engine == "spark"
