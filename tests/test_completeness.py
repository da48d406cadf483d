"""Completeness of the raw fact partitions: the warehouse's `partition_status`, the blocked and
pending lines of `delivery-lake summary`, and `delivery-lake history`. The lake is landed and
built for real; the gate verdicts, pending rows, corrections and held mart cells are written
as their producers write them (manifests, gate records, zone files)."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest

from delivery_lake import gate
from delivery_lake.cli import main
from delivery_lake.completeness import COLUMNS, partition_statuses
from delivery_lake.config import Settings
from delivery_lake.generator import generate
from delivery_lake.landing import manifest_path
from delivery_lake.storage import UNASSIGNED_CLIENT, Lake
from delivery_lake.summary import partition_lines
from delivery_lake.transform import Project, Runner
from delivery_lake.warehouse import STATUS_TABLE, Warehouse, query
from tests.helpers import land_all

D1, D2 = "2026-01-05", "2026-01-06"
FAILED = {
    "rows": 40,
    "failed": [
        {
            "expectation": "expect_quarantine_ratio_to_be_at_most",
            "label": "expect_quarantine_ratio_to_be_at_most",
            "observed": "0.31",
            "unexpected_count": None,
        }
    ],
    "warnings": [],
    "error": None,
}
NOT_NULL = {
    "label": "expect_column_values_to_not_be_null(order_id)",
    "expectation": "expect_column_values_to_not_be_null",
    "unexpected_count": 4,
    "unexpected_percent": 10.0,
    "observed": None,
}


@pytest.fixture(scope="module")
def project() -> Project:
    return Project.load()


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory, project: Project) -> Path:
    """Two days x 2 clients, landed and built once; tests work on copies."""
    root = tmp_path_factory.mktemp("completeness")
    inbox = root / "inbox"
    generate(
        inbox,
        start=date.fromisoformat(D1),
        days=2,
        clients=2,
        orders_per_day=60,
        seed=5,
        dirty_rate=0.0,
        progress=False,
    )
    settings = Settings.from_env(data_dir=root / "data", lake_url=str(root / "lake"), inbox_dir=inbox)
    lake, _, _ = land_all(settings)
    Runner(lake, project, settings).build(full_refresh=True)
    return root


@pytest.fixture()
def env(landed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, Lake]:
    shutil.copytree(landed / "lake", tmp_path / "lake")
    settings = Settings.from_env(
        data_dir=tmp_path / "data",
        lake_url=str(tmp_path / "lake"),
        inbox_dir=landed / "inbox",
        warehouse_path=tmp_path / "wh" / "delivery.duckdb",
    )
    # The CLI reads its settings from the environment.
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("LAKE_URL", settings.lake_url)
    monkeypatch.setenv("INBOX_DIR", str(settings.inbox_dir))
    monkeypatch.setenv("WAREHOUSE_PATH", str(settings.warehouse_path))
    return settings, Lake.from_settings(settings)


def _set_manifest(lake: Lake, table: str, d: str, c: str, **counts: int) -> None:
    path = manifest_path(lake, table, d, c)
    doc = lake.read_json(path)
    doc.update(counts)
    lake.write_json(path, doc)


def _write_rows(lake: Lake, zone: str, table: str, d: str, c: str, select: str, tmp: Path) -> None:
    """Copy rows of raw (d, c), with extra columns from `select`, into another zone's partition."""
    local = tmp / f"{zone}_{table}_{d}_{c}.parquet"
    con = lake.duckdb()
    try:
        con.execute(f"COPY ({select.format(raw=lake.data_file('raw', table, d, c))}) TO '{local}' (FORMAT parquet)")
    finally:
        con.close()
    lake.publish_file(local, lake.data_file(zone, table, d, c))


def _hold(
    lake: Lake, model: str, d: str, cells: list[list[str]], last_good: dict[str, list[list[str]]] | None = None
) -> None:
    """Give a built mart partition's manifest the cells and last good copies its build reports."""
    path = lake.build_manifest("curated", model, d)
    doc = lake.read_json(path)
    doc["held_cells"] = cells
    if last_good:
        doc["served_last_good"] = last_good
    lake.write_json(path, doc)


def _status(path: Path) -> dict[tuple[str, str, str], dict]:
    cols, rows = query(path, f"SELECT *, date::VARCHAR AS d FROM {STATUS_TABLE}")
    return {(r[0], r[-1], r[2]): dict(zip(cols, r, strict=True)) for r in rows}


def _scenario(lake: Lake, tmp: Path) -> None:
    """deliveries D2/C001 blocked with no last good copy; orders D2/C002 blocked (a null check
    and the quarantine ratio) and served from its last good copy; deliveries D1/C002 pending on
    3 rows; the client KPI mart left out D2/C001, fct_feedback left out D1/C002."""
    gate.record(lake, "deliveries", False, FAILED, D2, "C001")
    gate.record(lake, "orders", False, {**FAILED, "failed": [NOT_NULL, *FAILED["failed"]]}, D2, "C002")
    gate.record(lake, "orders", True, {"rows": 60, "failed": [], "warnings": []}, D1, "C001")
    _set_manifest(lake, "deliveries", D1, "C002", pending=3, replayed=2, superseded=1)
    _write_rows(
        lake,
        "pending",
        "deliveries",
        D1,
        "C002",
        "SELECT *, 'order_id' AS _pending_on, 'inbox/deliveries/late.csv' AS _source_file, "
        "1::BIGINT AS _source_line FROM read_parquet('{raw}') LIMIT 3",
        tmp,
    )
    _hold(
        lake,
        "agg_client_daily_kpis",
        D2,
        [[D2, "C001", "input blocked: raw.deliveries"]],
        {"raw.orders": [[D2, "C002"]]},
    )
    _hold(lake, "fct_feedback", D1, [[D1, "C002", "parent unavailable: raw.orders"]])


def test_partition_status_has_a_row_per_landed_partition(env: tuple[Settings, Lake], project: Project) -> None:
    settings, lake = env
    report = Warehouse(lake, project, settings.warehouse_path).refresh()
    assert report.partition_status is not None and report.partition_status.mode == "full"
    assert STATUS_TABLE not in {t.table for t in report.tables}  # only curated tables there
    rows = _status(settings.warehouse_path)
    manifests = {}
    for t in ("orders", "deliveries", "customer_feedback"):
        for path in lake.glob(lake.meta_path("landing", t) + "/date=*/client=*.json"):
            doc = lake.read_json(path)
            if doc["client"] != UNASSIGNED_CLIENT:
                manifests[(t, doc["date"], doc["client"])] = doc
    assert set(rows) == set(manifests) and len(rows) == 3 * 2 * 2
    for k, doc in manifests.items():
        r = rows[k]
        assert (r["rows"], r["quarantined_rows"]) == (doc["landed"], doc["quarantined"])
        assert r["pending_rows"] == doc.get("pending", 0) and r["superseded_rows"] == doc.get("superseded", 0)
        # The landing lands, the gate never ran in this test: nothing is known to be wrong.
        assert (r["status"], r["served"], r["held_in"], r["checked_at"], r["reasons"]) == (
            "unchecked",
            "current",
            None,
            None,
            None,
        )
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        types = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {STATUS_TABLE}").fetchall()]
        comments = dict(
            con.execute(
                "SELECT column_name, comment FROM duckdb_columns() WHERE table_name = ?", [STATUS_TABLE]
            ).fetchall()
        )
        table_comment = con.execute(
            "SELECT comment FROM duckdb_tables() WHERE table_name = ?", [STATUS_TABLE]
        ).fetchone()[0]
    finally:
        con.close()
    assert types == [(n, t) for n, t, _ in COLUMNS]
    assert (
        all(comments[n] for n, _, _ in COLUMNS) and "Grain: one row per (table_name, date, client_id)" in table_comment
    )


def test_blocked_pending_and_held_partitions(env: tuple[Settings, Lake], tmp_path: Path, project: Project) -> None:
    settings, lake = env
    wh = Warehouse(lake, project, settings.warehouse_path)
    wh.refresh()
    _scenario(lake, tmp_path)
    report = wh.refresh()
    # Only manifests changed: no curated table reloads, the status table follows anyway.
    assert (
        report.changed == [] and report.partition_status is not None and report.partition_status.mode == "incremental"
    )
    rows = _status(settings.warehouse_path)

    blocked = rows[("deliveries", D2, "C001")]
    assert blocked["status"] == "blocked" and blocked["served"] == "none"
    assert blocked["reasons"] == (
        "expect_quarantine_ratio_to_be_at_most: observed 0.31; "
        "left out of agg_client_daily_kpis: input blocked: raw.deliveries"
    )
    assert blocked["held_in"] == "agg_client_daily_kpis" and blocked["checked_at"] is not None
    assert (
        blocked["rows"] == lake.read_json(manifest_path(lake, "deliveries", D2, "C001"))["landed"] > 0
    )  # blocked, not zero

    orders = rows[("orders", D2, "C002")]
    assert (orders["status"], orders["served"], orders["held_in"]) == ("blocked", "last_good", None)
    assert orders["reasons"] == (
        "expect_column_values_to_not_be_null(order_id): 4 unexpected (10.0%); "
        "expect_quarantine_ratio_to_be_at_most: observed 0.31"
    )

    pending = rows[("deliveries", D1, "C002")]
    assert (pending["status"], pending["pending_rows"], pending["replayed_rows"], pending["superseded_rows"]) == (
        "pending",
        3,
        2,
        1,
    )
    assert pending["served"] == "current" and pending["held_in"] is None  # fct_feedback does not read deliveries
    assert pending["reasons"] == "3 rows wait for their order_id"
    feedback = rows[("customer_feedback", D1, "C002")]
    assert (feedback["status"], feedback["held_in"]) == ("unchecked", "fct_feedback")
    assert feedback["reasons"] == "left out of fct_feedback: parent unavailable: raw.orders"

    assert rows[("orders", D1, "C001")]["status"] == "passed"
    # The KPI mart reads orders too, and the cell (D2, C001) is held there.
    assert rows[("orders", D2, "C001")]["held_in"] == "agg_client_daily_kpis"

    # Refreshes that change nothing keep the same rows; once the file they start from (the
    # spare, one refresh behind) holds them too, the table is not rewritten at all.
    wh.refresh()
    assert _status(settings.warehouse_path) == rows
    again = wh.refresh()
    assert again.partition_status is not None and again.partition_status.mode == "unchanged"
    assert _status(settings.warehouse_path) == rows
    # Rebuilt from scratch: the same table.
    full = Warehouse(lake, project, tmp_path / "full.duckdb")
    full.refresh(full=True)
    assert _status(full.path) == rows

    # The gate passing the fixed partition clears it on the next refresh.
    gate.record(lake, "deliveries", True, {"rows": 40, "failed": [], "warnings": []}, D2, "C001")
    wh.refresh()
    fixed = _status(settings.warehouse_path)[("deliveries", D2, "C001")]
    assert (fixed["status"], fixed["served"]) == ("passed", "current")


def test_a_date_wide_verdict_blocks_every_client(env: tuple[Settings, Lake]) -> None:
    _, lake = env
    gate.record(
        lake,
        "customer_feedback",
        False,
        {"rows": 0, "failed": [], "warnings": [], "error": "validation crashed: boom"},
        D1,
        None,
    )
    got = {(p.table, p.date, p.client): p for p in partition_statuses(lake)}
    for c in ("C001", "C002"):
        p = got[("customer_feedback", D1, c)]
        assert (p.status, p.served, p.reasons) == ("blocked", "none", "validation error: validation crashed: boom")
    assert got[("customer_feedback", D2, "C001")].status == "unchecked"


def test_summary_explains_blocked_and_pending_partitions(
    env: tuple[Settings, Lake], tmp_path: Path, project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, lake = env
    _scenario(lake, tmp_path)
    from delivery_lake.completeness import fact_sources

    lines = partition_lines(partition_statuses(lake, fact_sources(project)))
    assert lines == [
        f"deliveries {D2}/C001 BLOCKED: expect_quarantine_ratio_to_be_at_most: observed 0.31; "
        "left out of agg_client_daily_kpis: input blocked: raw.deliveries (serving: none)",
        f"orders {D2}/C002 BLOCKED: expect_column_values_to_not_be_null(order_id): 4 unexpected (10.0%); "
        "expect_quarantine_ratio_to_be_at_most: observed 0.31 (serving: last_good)",
        f"deliveries {D1}/C002 PENDING: 3 rows wait for their order_id",
    ]
    Warehouse(lake, project, settings.warehouse_path).refresh()
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    for line in lines:
        assert f"  {line}\n" in out
    assert "3 partition(s) blocked or pending:" in out
    # The blocked deliveries count in the table row with their landed rows, not as zero.
    landed = lake.read_json(manifest_path(lake, "deliveries", D2, "C001"))["landed"]
    deliveries_row = next(ln for ln in out.splitlines() if ln.strip("│ ").startswith("deliveries "))
    assert f"1 ({landed:,} rows)" in deliveries_row
    # The KPI row of the held client says it is incomplete instead of showing its figures as whole.
    kpi_row = next(ln for ln in out.splitlines() if "C001" in ln and "INCOMPLETE" in ln)
    assert "deliveries blocked" in kpi_row and "held" in kpi_row


def test_history_lists_every_version_newest_first(
    env: tuple[Settings, Lake], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, lake = env
    raw = lake.data_file("raw", "orders", D1, "C001")
    con = lake.duckdb()
    try:
        key = con.execute(f"SELECT min(order_id) FROM read_parquet('{raw}')").fetchone()[0]
    finally:
        con.close()
    # Both versions in one history file, as the landing keeps a partition's versions together.
    (tmp_path / "h").mkdir()
    _write_rows(
        lake,
        "history",
        "orders",
        D1,
        "C001",
        f"""SELECT * REPLACE ('Town-v0' AS dropoff_city), 'inbox/orders/{D1}.csv' AS _source_file, """
        f"""7::BIGINT AS _source_line,
                   'inbox/orders/fix-1.csv' AS _superseded_by, '2026-01-06T08:00:00+00:00' AS _superseded_at
            FROM read_parquet('{{raw}}') WHERE order_id = '{key}'
            UNION ALL
            SELECT * REPLACE ('Town-v1' AS dropoff_city), 'inbox/orders/fix-1.csv', 2::BIGINT,
                   'inbox/orders/fix-2.csv', '2026-01-07T09:30:00+00:00'
            FROM read_parquet('{{raw}}') WHERE order_id = '{key}'""",
        tmp_path / "h",
    )
    assert main(["history", "orders", key, "--format", "json"]) == 0
    versions = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["date"], v["client"]) for v in versions] == [
        ("current", D1, "C001"),
        ("superseded", D1, "C001"),
        ("superseded", D1, "C001"),
    ]
    assert [(v["source_file"], v["source_line"], v["superseded_by"]) for v in versions[1:]] == [
        ("inbox/orders/fix-1.csv", 2, "inbox/orders/fix-2.csv"),
        (f"inbox/orders/{D1}.csv", 7, "inbox/orders/fix-1.csv"),
    ]
    assert versions[1]["superseded_at"].startswith("2026-01-07T09:30:00")
    assert [v["values"]["dropoff_city"] for v in versions[1:]] == ["Town-v1", "Town-v0"]
    assert all(v["values"]["order_id"] == key for v in versions)

    assert main(["history", "orders", key]) == 0
    text = capsys.readouterr().out
    assert f"orders order_id={key}: 3 version(s), newest first" in text
    assert f"current     {D1}/C001" in text
    assert (
        f"superseded  {D1}/C001 from inbox/orders/fix-1.csv line 2, "
        "replaced by inbox/orders/fix-2.csv at 2026-01-07T09:30:00"
    ) in text
    assert f"dropoff_city: Town-v1 -> {versions[0]['values']['dropoff_city']}" in text

    assert main(["history", "orders", "O-NO-SUCH-ORDER"]) == 1
    err = capsys.readouterr().err
    assert "no orders row with order_id = 'O-NO-SUCH-ORDER'" in err


def test_a_client_whose_partitions_mostly_fail_the_gate_is_named() -> None:
    from delivery_lake.completeness import BLOCKED, PASSED, PartitionStatus, mostly_blocked

    parts = [PartitionStatus("orders", f"2026-01-0{d}", "OLIST", BLOCKED, "rows: range") for d in (1, 2, 3)]
    parts += [PartitionStatus("orders", "2026-01-04", "OLIST", PASSED)]
    parts += [PartitionStatus("orders", f"2026-01-0{d}", "C001", BLOCKED if d == 1 else PASSED) for d in (1, 2, 3)]
    assert mostly_blocked(parts, ["OLIST", "C001"]) == [
        ("OLIST", "3 of 4 fact partitions blocked (most often: rows: range)")
    ]
    assert mostly_blocked(parts, ["C001"]) == []
