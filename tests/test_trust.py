"""Numbers analysts can trust: re-sent and corrected files, late parents, orphans, blocked data.

Every test drives `delivery-lake run` through the Dagster definitions (or the landing where the
point is the landing's decision) and checks the marts against an independent computation from
the CSV files with Python's csv module, not with the code under test.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from assets.resources import LakehouseResource
from assets.sensors import inbox_sensor
from delivery_lake import gate
from delivery_lake.config import Settings
from delivery_lake.contract import DIMENSIONS, FACTS, TABLES
from delivery_lake.generator import generate
from delivery_lake.inbox import fingerprint, list_files
from delivery_lake.landing import Landing, reconcile, releasable
from delivery_lake.storage import Lake
from tests.helpers import START

# End-to-end: real landings, Dagster runs and MLflow; not in the fast tier (`make test-fast`).
pytestmark = pytest.mark.slow

DATES = ["2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08", "2026-01-09"]
DAY = "2026-01-07"
STATES = ("landed", "quarantined", "replayed", "superseded", "pending")


@pytest.fixture(scope="module")
def clean_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five clean days x 3 clients: every held, superseded or blocked row is one a test made."""
    out = tmp_path_factory.mktemp("trust") / "inbox"
    generate(out, start=START, days=5, clients=3, orders_per_day=120, seed=19, dirty_rate=0.0, progress=False)
    return out


@pytest.fixture()
def ts(tmp_path: Path, clean_export: Path) -> Settings:
    inbox = tmp_path / "inbox"
    shutil.copytree(clean_export, inbox)
    return Settings.from_env(data_dir=tmp_path / "data", lake_url=str(tmp_path / "lake"), inbox_dir=inbox)


# ---- an independent computation from the CSV files ----------------------------------------------


def _records(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(), newline="")))


def _latest(inbox: Path, table: str) -> dict[str, dict[str, str]]:
    """key -> the version of the file that arrived last (modification time, then name)."""
    out: dict[str, dict[str, str]] = {}
    for f in sorted(list_files(inbox, table), key=lambda p: (p.stat().st_mtime_ns, str(p))):
        for r in _records(f):
            out[r[TABLES[table].key]] = r
    return out


def _ts(v: str) -> datetime:
    return datetime.fromisoformat(v.replace("Z", "+00:00"))


def independent_kpis(inbox: Path) -> dict[tuple[str, str], tuple[int, int, Decimal]]:
    """(dispatch date, client) -> (deliveries, on time, revenue), by the marts' definitions."""
    orders = _latest(inbox, "orders")
    out: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0, Decimal("0.00")])
    for d in _latest(inbox, "deliveries").values():
        o = orders[d["order_id"]]
        cell = out[(d["dispatched_at"][:10], d["client_id"])]
        cell[0] += 1
        cell[1] += d["status"] == "delivered" and _ts(d["delivered_at"]) <= _ts(o["promised_by"])
        cell[2] += Decimal(o["order_value"])
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def mart_kpis(lake: Lake) -> dict[tuple[str, str], tuple[int, int, Decimal]]:
    con = duckdb.connect()
    rows = con.execute(
        f"""SELECT date::VARCHAR, client_id, deliveries, on_time, revenue
            FROM read_parquet('{lake.table_dir("curated", "agg_client_daily_kpis")}/*/data.parquet')"""
    ).fetchall()
    return {(d, c): (n, t, r) for d, c, n, t, r in rows if n}


def data_files(lake: Lake, *zones: str) -> dict[str, tuple[str, int]]:
    """path -> (sha256, mtime_ns) of every Parquet file in the zones (local lake)."""
    out = {}
    for zone in zones:
        for p in sorted(Path(lake.root, zone).rglob("*.parquet")):
            out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def blocked(lake: Lake) -> dict[str, set]:
    return {t.name: gate.blocked_partitions(lake, t.name) for t in FACTS if gate.blocked_partitions(lake, t.name)}


def assert_every_file_reconciles(lake: Lake, settings: Settings) -> None:
    for t in TABLES.values():
        for path, v in reconcile(lake, settings.inbox_dir, t).items():
            assert v["read"] == sum(v[s] for s in STATES), (t.name, path, v)


def _write(path: Path, rows: list[dict[str, str]], header: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue())


# ---- the situations of issue 19 ----------------------------------------------------------------


def test_an_exact_re_send_of_a_day_changes_no_file_and_blocks_nothing(ts: Settings, run_cli) -> None:
    assert run_cli(ts).success
    lake = Lake.from_settings(ts)
    before = data_files(lake, "raw", "quarantine", "history", "pending")
    for table in ("orders", "deliveries", "customer_feedback"):
        src = ts.inbox_dir / table / f"{DAY}.csv"
        shutil.copyfile(src, ts.inbox_dir / table / f"{DAY}-retry.csv")
    outcome = run_cli(ts, full=False)

    assert outcome.success, outcome.failure
    assert data_files(lake, "raw", "quarantine", "history", "pending") == before
    assert blocked(lake) == {}
    for table in ("orders", "deliveries", "customer_feedback"):
        per_file = reconcile(lake, ts.inbox_dir, TABLES[table])
        retry = per_file[str(ts.inbox_dir / table / f"{DAY}-retry.csv")]
        assert retry["replayed"] == retry["read"] > 0 and retry["quarantined"] == 0
    assert_every_file_reconciles(lake, ts)
    assert mart_kpis(lake) == independent_kpis(ts.inbox_dir)


def test_a_corrected_re_export_lands_the_corrections_keeps_history_and_blocks_nothing(ts: Settings, run_cli) -> None:
    assert run_cli(ts).success
    lake = Lake.from_settings(ts)
    src = ts.inbox_dir / "orders" / f"{DAY}.csv"
    rows = _records(src)
    header = list(rows[0])
    corrected = []
    for i, r in enumerate(rows):
        if i % 4 == 0:  # every 4th order's promise moved two days later
            r = r | {"promised_by": (_ts(r["promised_by"]) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        corrected.append(r)
    _write(ts.inbox_dir / "orders" / f"{DAY}-corrected.csv", corrected, header)
    outcome = run_cli(ts, full=False)

    assert outcome.success, outcome.failure
    assert blocked(lake) == {}
    con = duckdb.connect()
    old = con.execute(
        f"""SELECT order_id, promised_by, _source_file, _superseded_by
            FROM read_parquet('{lake.root}/history/orders/*/*/data.parquet') ORDER BY order_id"""
    ).fetchall()
    changed = {r["order_id"]: r for i, r in enumerate(rows) if i % 4 == 0}
    assert {o for o, *_ in old} == set(changed)
    assert all(f == str(src) and by == str(ts.inbox_dir / "orders" / f"{DAY}-corrected.csv") for _o, _p, f, by in old)
    assert all(p == _ts(changed[o]["promised_by"]) for o, p, *_ in old)
    # The history zone is plain hive-partitioned Parquet: pyarrow reads it as well as DuckDB.
    assert pq.ParquetDataset(f"{lake.root}/history/orders", partitioning="hive").read().num_rows == len(changed)
    landed = dict(
        con.execute(
            f"SELECT order_id, promised_by FROM read_parquet('{lake.root}/raw/orders/*/*/data.parquet') "
            "WHERE order_id IN ?",
            [list(changed)],
        ).fetchall()
    )
    assert all((landed[o] - _ts(r["promised_by"])).days == 2 for o, r in changed.items())
    assert_every_file_reconciles(lake, ts)
    # After the refresh the day's KPIs are those of the corrected file, computed independently.
    assert mart_kpis(lake) == independent_kpis(ts.inbox_dir)


def test_children_landed_a_run_before_their_orders_are_released_by_the_orders_run(
    ts: Settings, run_cli, tmp_path: Path
) -> None:
    held = tmp_path / "held-orders"
    shutil.move(str(ts.inbox_dir / "orders"), held)
    first = run_cli(ts)
    assert first.success, first.failure
    lake = Lake.from_settings(ts)
    pending = {t: lake.list_partitions("pending", t) for t in ("deliveries", "customer_feedback")}
    assert all(pending.values())
    assert blocked(lake) == {}  # waiting for a parent is not bad data
    manifests = [lake.read_json(p) for p in lake.glob(lake.meta_path("landing", "deliveries") + "/*/*.json")]
    assert sum(m["pending"] for m in manifests) == sum(len(_records(f)) for f in list_files(ts.inbox_dir, "deliveries"))

    shutil.move(str(held), ts.inbox_dir / "orders")
    second = run_cli(ts, full=False)
    assert second.success, second.failure
    assert any(line.startswith("release:") for line in second.lines)
    assert {t: lake.list_partitions("pending", t) for t in pending} == {t: [] for t in pending}
    assert blocked(lake) == {}
    assert_every_file_reconciles(lake, ts)
    assert mart_kpis(lake) == independent_kpis(ts.inbox_dir)


def test_the_inbox_sensor_requests_the_release_of_pending_rows(ts: Settings, tmp_path: Path) -> None:
    lake = Lake.from_settings(ts)
    landing = Landing(lake, ts.inbox_dir, ts)
    for t in DIMENSIONS:
        landing.land_dimension(t)
    landing.land_fact(TABLES["deliveries"], {DAY: None})  # before its orders: every row waits
    assert releasable(lake, ts) == {}
    landing.land_fact(TABLES["orders"], {d: None for d in DATES})
    wanted = releasable(lake, ts)
    assert wanted == {"deliveries": {DAY: {"C001", "C002", "C003"}}}

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("client", ["C001", "C002", "C003"])
    seen = {str(p): fingerprint(p) for t in TABLES for p in list_files(ts.inbox_dir, t)}
    res = LakehouseResource(data_dir=str(ts.data_dir), lake_url=ts.lake_url, inbox_dir=str(ts.inbox_dir))
    with dg.build_sensor_context(instance=instance, resources={"lakehouse": res}, cursor=json.dumps(seen)) as ctx:
        result = inbox_sensor(ctx)
    [request] = result.run_requests
    assert request.asset_selection == [dg.AssetKey(["raw", "deliveries"])]
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
        f"C001|{DAY}",
        f"C003|{DAY}",
    )
    assert request.tags["delivery_lake/trigger"] == "release"


def test_an_orphan_waits_through_the_grace_period_then_is_quarantined_with_its_reason(ts: Settings) -> None:
    header = list(_records(ts.inbox_dir / "deliveries" / f"{DATES[0]}.csv")[0])
    planted = {}
    for d in (DATES[0], DATES[2]):
        path = ts.inbox_dir / "deliveries" / f"{d}.csv"
        rows = _records(path)
        rows[3]["order_id"] = f"O-NOWHERE-{d}"
        planted[d] = (rows[3]["delivery_id"], rows[3]["client_id"])
        _write(path, rows, header)
    lake = Lake.from_settings(ts)
    landing = Landing(lake, ts.inbox_dir, ts)
    for t in DIMENSIONS:
        landing.land_dimension(t)
    for t in FACTS:
        landing.land_fact(t, {d: None for d in DATES})

    con = duckdb.connect()
    # The lake holds data up to DATES[4]: four partition dates past DATES[0] (grace 3: orphan),
    # two past DATES[2] (still pending).
    q = con.execute(
        f"""SELECT delivery_id, _reason, _source_file, _source_line
            FROM read_parquet('{lake.root}/quarantine/deliveries/*/*/data.parquet') """
        """WHERE _reason LIKE 'orphan:order_id'"""
    ).fetchall()
    assert q == [(planted[DATES[0]][0], "orphan:order_id", str(ts.inbox_dir / "deliveries" / f"{DATES[0]}.csv"), 5)]
    p = con.execute(
        f"""SELECT delivery_id, _pending_on, _source_line """
        f"""FROM read_parquet('{lake.root}/pending/deliveries/*/*/data.parquet')"""
    ).fetchall()
    assert p == [(planted[DATES[2]][0], "order_id", 5)]
    assert blocked(lake) == {}
    # Nothing blocks for the orphan either: one quarantined row is under the threshold.
    assert_every_file_reconciles(lake, ts)


def test_a_verdict_is_recomputed_when_a_parent_partition_it_checked_changes(ts: Settings) -> None:
    from delivery_lake.quality import Quality

    lake = Lake.from_settings(ts)
    landing = Landing(lake, ts.inbox_dir, ts)
    for t in DIMENSIONS:
        landing.land_dimension(t)
    for t in FACTS:
        landing.land_fact(t, {d: None for d in DATES})
    quality = Quality(lake, ts)
    for t in FACTS:
        quality.validate_and_record(t.name, lake.list_partitions("raw", t.name))
    assert {t.name: quality.stale(t.name) for t in FACTS} == {t.name: [] for t in FACTS}
    assert blocked(lake) == {}

    # An order that deliveries already reference disappears from a re-export of its day.
    src = ts.inbox_dir / "orders" / f"{DAY}.csv"
    rows = _records(src)
    deliveries = [r for f in list_files(ts.inbox_dir, "deliveries") for r in _records(f)]
    gone = next(r for r in rows if any(d["order_id"] == r["order_id"] for d in deliveries))
    _write(src, [r for r in rows if r is not gone], list(rows[0]))
    landing.land_fact(TABLES["orders"], {DAY: None})
    quality.validate_and_record("orders", lake.list_partitions("raw", "orders", dates=[DAY]))
    child = next(d for d in deliveries if d["order_id"] == gone["order_id"])
    cell = (child["dispatched_at"][:10], child["client_id"])
    assert cell in quality.stale("deliveries")

    revalidated = quality.revalidate_stale(["deliveries", "customer_feedback"])
    assert cell in {(r.date, r.client) for r in revalidated["deliveries"]}
    assert cell in gate.blocked_partitions(lake, "deliveries")  # the FK check saw the order gone
    assert quality.stale("deliveries") == []
