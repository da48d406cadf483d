"""The analysts' read path cannot touch anything but the warehouse file, and a refresh does not
trust a spare (or a live file) changed since it was published."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from delivery_lake.cli import main
from delivery_lake.config import Settings
from delivery_lake.storage import Lake
from delivery_lake.transform import Project, Runner
from delivery_lake.warehouse import LIVE_MODE, PRIVATE_MODE, Warehouse, query
from tests.helpers import land_all

DAY = "2026-01-07"
KPIS = "agg_client_daily_kpis"
REVENUE_SQL = f"SELECT client_id, revenue FROM {KPIS} WHERE date = DATE '{DAY}' ORDER BY client_id"
REFUSED = "refused: this connection is read-only and cannot read or write files outside the warehouse"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, dirty_export: Path) -> tuple[Settings, Lake, Project]:
    root = tmp_path_factory.mktemp("readonly")
    inbox = root / "inbox"
    shutil.copytree(dirty_export, inbox)
    settings = Settings.from_env(data_dir=root / "data", lake_url=str(root / "lake"), inbox_dir=inbox)
    lake, _, _ = land_all(settings)
    project = Project.load()
    Runner(lake, project, settings).build(full_refresh=True)
    return settings, lake, project


@pytest.fixture()
def wh(built: tuple[Settings, Lake, Project], tmp_path: Path) -> Warehouse:
    _, lake, project = built
    return Warehouse(lake, project, tmp_path / "wh" / "delivery.duckdb")


def _curated_revenue(lake: Lake) -> list[tuple[str, Decimal]]:
    con = duckdb.connect()
    try:
        f = lake.data_file("curated", KPIS, DAY)
        return con.execute(f"SELECT client_id, revenue FROM read_parquet('{f}') ORDER BY client_id").fetchall()
    finally:
        con.close()


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file under these folders -> sha256 of its bytes."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---- the query path ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(built: tuple[Settings, Lake, Project], tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    """A warehouse refreshed twice (so it has a spare), shared by the read-path tests."""
    _, lake, project = built
    w = Warehouse(lake, project, tmp_path_factory.mktemp("live") / "wh" / "delivery.duckdb")
    w.refresh()
    w.refresh()
    assert w.spare_path.exists()
    return w


# Name -> (statement, files it must not create); {placeholders} are filled in by the test.
HOSTILE: dict[str, tuple[str, list[str]]] = {
    "copy over a raw partition": ("COPY (SELECT * FROM fct_deliveries LIMIT 3) TO '{raw_file}' (FORMAT parquet)", []),
    "copy into a partition folder": (
        "COPY (SELECT * FROM fct_deliveries) TO '{partition}/extra.parquet' (FORMAT parquet)",
        ["{partition}/extra.parquet"],
    ),
    "copy to /tmp": ("COPY (SELECT 1 AS x) TO '{outside}/out.csv'", ["{outside}/out.csv"]),
    "attach the spare read-write and update it": (
        f"ATTACH '{{spare}}' AS spare (READ_WRITE); UPDATE spare.{KPIS} SET revenue = 999999",
        [],
    ),
    "attach a new file": ("ATTACH '{outside}/new.duckdb' AS other", ["{outside}/new.duckdb"]),
    "read_csv": ("SELECT * FROM read_csv('/etc/passwd')", []),
    "read_text": ("SELECT * FROM read_text('/etc/passwd')", []),
    "glob": ("SELECT * FROM glob('/root/*')", []),
    "read the lake": ("SELECT count(*) FROM read_parquet('{lake}/curated/**/*.parquet')", []),
    "install": ("INSTALL httpfs", []),
    "load": ("LOAD httpfs", []),
    "turn external access back on": ("SET enable_external_access = true", []),
    "unlock the configuration": ("SET lock_configuration = false", []),
    "profile to a file": (
        "SET profiling_output = '{outside}/profile.json'; PRAGMA enable_profiling = 'json'",
        ["{outside}/profile.json"],
    ),
    "create table": ("CREATE TABLE hacked AS SELECT 1 AS x", []),
    "insert": (f"INSERT INTO {KPIS} SELECT * FROM {KPIS} LIMIT 1", []),
    "export database": ("EXPORT DATABASE '{outside}/export'", ["{outside}/export"]),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_the_query_command_refuses_and_changes_nothing(
    name: str, live: Warehouse, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WAREHOUSE_PATH", str(live.path))
    lake = Path(live.lake.url)
    raw_file = next(p for p in sorted((lake / "raw").rglob("*.parquet")))
    outside = Path("/tmp") / f"delivery-lake-test-{uuid.uuid4().hex}"  # /tmp itself, not pytest's folder
    places = {
        "raw_file": raw_file,
        "partition": raw_file.parent,
        "outside": outside,
        "spare": live.spare_path,
        "lake": lake,
    }
    sql, targets = HOSTILE[name]
    sql = sql.format(**places)
    before = _snapshot(lake, live.path.parent)
    try:
        assert main(["query", sql]) == 1
        out = capsys.readouterr()
        assert out.err.startswith(REFUSED), out.err
        assert out.err.count("\n") == 1 and out.out == ""
        assert _snapshot(lake, live.path.parent) == before
        assert not outside.exists() and not any(Path(t.format(**places)).exists() for t in targets)
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_the_cli_binary_refuses_too(live: Warehouse, tmp_path: Path) -> None:
    env = {**os.environ, "WAREHOUSE_PATH": str(live.path), "DATA_DIR": str(tmp_path)}
    spare = live.spare_path.read_bytes()
    cli = Path(sys.executable).with_name("delivery-lake")
    for sql in (
        f"ATTACH '{live.spare_path}' AS spare (READ_WRITE); UPDATE spare.{KPIS} SET revenue = 999999",
        "SELECT * FROM read_csv('/etc/passwd')",
    ):
        done = subprocess.run([str(cli), "query", sql], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert done.stderr.startswith(REFUSED) and "Traceback" not in done.stderr + done.stdout
    assert live.spare_path.read_bytes() == spare


def test_reading_the_warehouse_still_works(
    live: Warehouse, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WAREHOUSE_PATH", str(live.path))
    before = _snapshot(live.path.parent)
    want = _curated_revenue(live.lake)
    assert len(want) == 4

    assert main(["query", REVENUE_SQL, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["client_id"], Decimal(r["revenue"])) for r in rows] == want
    assert main(["query", REVENUE_SQL, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"{want[0][0]},{want[0][1]}"
    assert main(["query", REVENUE_SQL]) == 0
    assert "4 row(s)" in capsys.readouterr().out

    tables = {m.name for m in live.project.published()} | {"partition_status", "_warehouse_partitions"}
    assert {r[0] for r in query(live.path, "SHOW TABLES")[1]} == tables
    for table in ("partition_status", "_warehouse_partitions"):
        assert query(live.path, f"SELECT count(*) FROM {table}")[1][0][0] > 0
    for m in live.project.published():
        n = query(live.path, f"SELECT count(*) FROM {m.name}")[1][0][0]
        assert (
            n
            == sum(live.lake.read_json(p)["rows"] for p in live.lake.list_build_manifests("curated", m.name).values())
            > 0
        )
        assert [r[0] for r in query(live.path, f"DESCRIBE {m.name}")[1]] == [c.name for c in m.columns]
    summary = dict((r[0], r[4]) for r in query(live.path, f"SUMMARIZE {KPIS}")[1])
    assert summary["client_id"] >= 4  # approx_unique
    comments = dict(
        query(live.path, f"SELECT column_name, comment FROM duckdb_columns() WHERE table_name = '{KPIS}'")[1]
    )
    assert comments["on_time_rate"] == "On-time deliveries / all deliveries dispatched that day."
    # Statements DuckDB accepts on a read-only file without writing it.
    for sql in ("CHECKPOINT", "VACUUM", f"ANALYZE {KPIS}", "CREATE TEMP TABLE scratch AS SELECT 1 AS x"):
        query(live.path, sql)
    assert _snapshot(live.path.parent) == before


def test_summary_readers_share_the_same_hardening(live: Warehouse) -> None:
    from delivery_lake.warehouse import connect_read_only, open_reader

    assert connect_read_only is open_reader
    con = open_reader(live.path)
    try:
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_csv('/etc/passwd')")
        assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
    finally:
        con.close()


# ---- the refresh -----------------------------------------------------------------------------------


def _poison(path: Path, clients: tuple[str, ...] = ("C001", "C002", "C003")) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute(f"UPDATE {KPIS} SET revenue = 999999 WHERE date = DATE '{DAY}' AND client_id IN {clients}")
    finally:
        con.close()


def test_a_poisoned_spare_is_discarded_and_the_warehouse_rebuilt(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = _curated_revenue(wh.lake)
    wh.refresh(full=True)
    assert wh.refresh().base == "spare"
    _poison(wh.spare_path)

    report = wh.refresh()
    assert report.base == "new"
    assert len(report.warnings) == 1
    assert f"spare {wh.spare_path} does not match what was published" in report.warnings[0]
    assert report.warnings[0].endswith(": rebuilding from scratch")
    assert all(t.mode == "full" for t in report.tables)
    assert query(wh.path, REVENUE_SQL)[1] == want
    # The next refreshes trust their spare again.
    assert wh.refresh().base == "spare" and wh.refresh().base == "spare"
    assert query(wh.path, REVENUE_SQL)[1] == want

    # What the check prevents: unchecked, the same poison reaches the live file (nothing in
    # curated changed, so the refresh keeps the spare's partitions).
    _poison(wh.spare_path)
    monkeypatch.setattr(Warehouse, "_unchanged", lambda self, role, path: None)
    assert wh.refresh().base == "spare"
    assert {r[1] for r in query(wh.path, REVENUE_SQL)[1]} >= {Decimal("999999.00")}


def test_a_changed_live_file_is_neither_copied_nor_kept(wh: Warehouse) -> None:
    want = _curated_revenue(wh.lake)
    wh.refresh(full=True)
    wh.refresh()
    _poison(wh.path)

    # Started from the (intact) spare, the new file is right; the changed live file it replaces
    # is not kept as the next spare.
    report = wh.refresh()
    assert report.base == "spare" and query(wh.path, REVENUE_SQL)[1] == want
    assert [w.split(" does not")[0] for w in report.warnings] == [f"live file {wh.path}"]
    assert query(wh.spare_path, REVENUE_SQL)[1] == want
    assert wh.refresh().base == "spare"

    # Without a usable spare a refresh copies the live file, unless it changed.
    wh.spare_path.unlink()
    _poison(wh.path)
    report = wh.refresh()
    assert report.base == "new" and report.warnings[0].endswith(": rebuilding from scratch")
    assert query(wh.path, REVENUE_SQL)[1] == want


def test_no_record_means_no_trust(wh: Warehouse) -> None:
    wh.refresh(full=True)
    wh.published_path.unlink()
    report = wh.refresh()
    assert report.base == "new" and "no fingerprint recorded" in report.warnings[0]
    assert wh.refresh().base == "spare"


def test_file_modes(wh: Warehouse) -> None:
    wh.refresh(full=True)
    with wh.refreshing() as session:
        assert stat.S_IMODE(session.building.stat().st_mode) == PRIVATE_MODE
    assert stat.S_IMODE(wh.path.stat().st_mode) == LIVE_MODE == 0o640
    assert stat.S_IMODE(wh.spare_path.stat().st_mode) == PRIVATE_MODE == 0o600
    assert session.report.base == "spare" and session.report.warnings == []
