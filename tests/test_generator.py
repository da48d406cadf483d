"""Tests of the synthetic feed generator: layout, contract validity, determinism,
dirt accounting, the lateness signal and bounded memory."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pytest

try:
    from delivery_lake.contract import DIMENSIONS, FACTS, TABLES
    from delivery_lake.generator import FACT_DIRT, GenerationSummary, generate
except ModuleNotFoundError:  # run from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from delivery_lake.contract import DIMENSIONS, FACTS, TABLES
    from delivery_lake.generator import FACT_DIRT, GenerationSummary, generate

START = dt.date(2026, 1, 5)  # a Monday


def _records(path: Path) -> list[list[str]]:
    """CSV records (header excluded). Latin-1 decoding is lossless, so dirty bytes survive."""
    with path.open(encoding="latin-1", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[1:]


def _dir_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _typed(con: duckdb.DuckDBPyConnection, out: Path, table: str) -> str:
    """A DuckDB relation reading every file of `table` with the contract types (fails on any bad value)."""
    t = TABLES[table]
    cols = ", ".join(f"'{c.name}': '{c.duckdb_type}'" for c in t.columns if c.name in t.file_columns)
    glob = out / table / "*.csv"
    rel = f"t_{table}"
    con.execute(
        f"create or replace view {rel} as select * from read_csv('{glob}', header=true, auto_detect=false, "
        f"delim=',', quote='\"', escape='\"', columns={{{cols}}}, filename=true)"
    )
    con.execute(f"select count(*) from {rel}").fetchall()  # force a full parse
    return rel


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    out = tmp_path_factory.mktemp("clean")
    summary = generate(out, START, days=7, clients=12, orders_per_day=2500, seed=11, dirty_rate=0.0, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    out = tmp_path_factory.mktemp("dirty")
    summary = generate(out, START, days=4, clients=8, orders_per_day=1500, seed=3, dirty_rate=0.03, progress=False)
    return out, summary


def test_layout_and_headers(clean: tuple[Path, GenerationSummary]) -> None:
    out, summary = clean
    days = [(START + dt.timedelta(days=i)).isoformat() for i in range(7)]
    expected = {f"{t.name}/{t.name}.csv" for t in DIMENSIONS} | {f"{t.name}/{d}.csv" for t in FACTS for d in days}
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.csv")}
    assert written == expected
    assert {p.relative_to(out).as_posix() for p in summary.files} == expected
    assert (out / "_generator.json").is_file()
    for path in summary.files:
        table = path.parent.name
        header = path.read_bytes().split(b"\n", 1)[0].decode()
        assert header == ",".join(TABLES[table].file_columns)
    assert summary.bytes_written == sum(p.stat().st_size for p in summary.files)
    meta = json.loads((out / "_generator.json").read_text())
    assert meta["parameters"]["days"] == 7 and meta["rows"] == summary.rows
    assert sum(f["rows"] for f in meta["files"].values()) == sum(summary.rows.values())


def test_row_counts_match_files(clean: tuple[Path, GenerationSummary]) -> None:
    _, summary = clean
    counted = Counter()
    for path in summary.files:
        counted[path.parent.name] += len(_records(path))
    assert dict(counted) == summary.rows
    assert summary.dirty == {t: {} for t in TABLES}
    # ~2500 orders/day on average over a full week; ~1 delivery per order; ~30% feedback.
    assert 7 * 2500 * 0.9 < summary.rows["orders"] < 7 * 2500 * 1.1
    assert 0.9 < summary.rows["deliveries"] / summary.rows["orders"] <= 1.0
    assert 0.2 < summary.rows["customer_feedback"] / summary.rows["deliveries"] < 0.4


def test_ids_and_formats(clean: tuple[Path, GenerationSummary]) -> None:
    out, _ = clean
    clients = _records(out / "clients" / "clients.csv")
    assert [r[0] for r in clients] == [f"C{i:03d}" for i in range(1, 13)]
    depots = _records(out / "depots" / "depots.csv")
    assert [r[0] for r in depots] == ["D01", "D02", "D03", "D04", "D05", "D06"]
    assert len({r[1] for r in depots}) == len(depots)  # distinct cities
    drivers = _records(out / "drivers" / "drivers.csv")
    assert drivers[0][0] == "DR0001" and len(drivers) >= 2 * len(depots)
    orders = _records(out / "orders" / "2026-01-06.csv")
    assert orders[0][0].startswith("O20260106-C")
    assert orders[0][2].endswith("Z") and len(orders[0][2]) == 20  # 2026-01-06T00:01:04Z
    assert all(len(r[12].split(".")[1]) == 2 for r in orders)  # order_value: 2 decimals
    deliveries = _records(out / "deliveries" / "2026-01-06.csv")
    assert deliveries[0][0] == "DL20260106-000001"
    feedback = _records(out / "customer_feedback" / "2026-01-07.csv")
    assert feedback[0][0] == "F20260107-000001"
    # Quoted commas, quotes and newlines occur in comments (valid CSV, not dirt).
    comments = [r[5] for p in sorted((out / "customer_feedback").glob("*.csv")) for r in _records(p)]
    assert any("\n" in c for c in comments) and any('"' in c for c in comments) and any("," in c for c in comments)
    assert any(c == "" for c in comments)  # null comments exist


def test_clean_run_satisfies_contract(clean: tuple[Path, GenerationSummary]) -> None:
    out, summary = clean
    con = duckdb.connect()
    rels = {t: _typed(con, out, t) for t in TABLES}
    for t in TABLES.values():
        rel = rels[t.name]
        n = con.execute(f"select count(*) from {rel}").fetchone()[0]
        assert n == summary.rows[t.name]
        dup = con.execute(f"select count(*) - count(distinct {t.key}) from {rel}").fetchone()[0]
        assert dup == 0, t.name
        for c in t.columns:
            if c.name not in t.file_columns:
                continue  # header-optional: our own exports leave it out
            bad = [f"{c.name} is null"] if not c.nullable else []
            if c.min is not None:
                bad.append(f"{c.name} < {c.min}")
            if c.max is not None:
                bad.append(f"{c.name} > {c.max}")
            if c.allowed:
                bad.append(f"{c.name} not in ({', '.join(repr(a) for a in c.allowed)})")
            if c.references and TABLES[c.references[0]].kind == "dimension":
                ptab, pcol = c.references
                bad.append(f"{c.name} not in (select {pcol} from {rels[ptab]})")
            for cond in bad:
                cnt = con.execute(f"select count(*) from {rel} where {cond}").fetchone()[0]
                assert cnt == 0, f"{t.name}: {cond}"
        for rule in t.rules:
            cnt = con.execute(f"select count(*) from {rel} where not ({rule.sql})").fetchone()[0]
            assert cnt == 0, f"{t.name}: {rule.name}"
        if t.partition_column:
            # Every fact row sits in the file of its partition (UTC) date.
            cnt = con.execute(
                f"select count(*) from {rel} where strftime(timezone('UTC', {t.partition_column}), '%Y-%m-%d') "
                f"<> regexp_extract(filename, '(\\d{{4}}-\\d{{2}}-\\d{{2}})\\.csv$', 1)"
            ).fetchone()[0]
            assert cnt == 0, t.name
    # Status semantics.
    q = f"select count(*) from {rels['deliveries']} where "
    assert con.execute(q + "status = 'delivered' and failure_reason is not null").fetchone()[0] == 0
    assert con.execute(q + "status <> 'delivered' and delivered_at is not null").fetchone()[0] == 0
    assert con.execute(q + "status = 'failed' and failure_reason is null").fetchone()[0] == 0
    shares = dict(
        con.execute(f"select status, count(*) / sum(count(*)) over () from {rels['deliveries']} group by 1").fetchall()
    )
    assert 0.86 < shares["delivered"] < 0.94 and 0.04 < shares["failed"] < 0.10 and 0.015 < shares["returned"] < 0.05
    # Cross-table: every delivery has its order, every feedback its delivery; facts follow the calendar.
    orphans = con.execute(
        f"select count(*) from {rels['deliveries']} d anti join {rels['orders']} o using (order_id)"
    ).fetchone()[0]
    assert orphans == 0
    orphans = con.execute(
        f"select count(*) from {rels['customer_feedback']} f anti join {rels['deliveries']} d using (order_id)"
    ).fetchone()[0]
    assert orphans == 0
    assert (
        con.execute(
            f"select count(*) from {rels['deliveries']} d join {rels['orders']} o using (order_id) "
            "where d.dispatched_at <= o.created_at"
        ).fetchone()[0]
        == 0
    )
    gap = con.execute(
        f"select max(f.submitted_at - coalesce(d.delivered_at, d.dispatched_at)) from {rels['customer_feedback']} f "
        f"join {rels['deliveries']} d using (order_id)"
    ).fetchone()[0]
    assert gap <= dt.timedelta(days=3, hours=12)
    # Weekly seasonality: the Sunday file is clearly smaller than the Friday one.
    per_day = dict(con.execute(f"select dayofweek(created_at), count(*) from {rels['orders']} group by 1").fetchall())
    assert per_day[0] < 0.8 * per_day[5]


def _late_frame(out: Path) -> dict[str, np.ndarray]:
    """One row per delivery with the delay features a model would use, and the label."""
    con = duckdb.connect()
    for t in ("orders", "deliveries", "drivers", "depots", "clients"):
        _typed(con, out, t)
    return con.sql(
        """
        with j as (
            select d.*, o.priority, o.pickup_depot_id, o.parcels, o.promised_by, c.tier,
                   date_diff('day', dr.hired_on, cast(timezone('UTC', d.dispatched_at) as date)) as tenure,
                   cast(timezone('UTC', d.dispatched_at) as date) as dday
            from t_deliveries d join t_orders o using (order_id)
            join t_clients c on c.client_id = d.client_id join t_drivers dr on dr.driver_id = d.driver_id
        ), load as (
            select pickup_depot_id, dday, sum(parcels) / any_value(p.daily_capacity_parcels) as load
            from j join t_depots p on p.depot_id = j.pickup_depot_id group by all
        )
        select j.*, load.load, (status <> 'delivered' or delivered_at > promised_by)::int as late,
               hour(timezone('UTC', dispatched_at)) as hr, isodow(dday) as dow
        from j join load using (pickup_depot_id, dday)
        """
    ).fetchnumpy()


def test_lateness_signal(clean: tuple[Path, GenerationSummary]) -> None:
    out, _ = clean
    df = _late_frame(out)
    late = df["late"].astype(float)
    assert 0.10 <= late.mean() <= 0.35
    dist = df["distance_km"]
    assert late[dist > 25].mean() > late[dist < 8].mean() + 0.08
    prio = df["priority"]
    assert late[prio == "same_day"].mean() > late[prio == "standard"].mean() + 0.05
    assert late[df["tenure"] < 90].mean() > late[df["tenure"] > 365].mean() + 0.05
    assert late[df["hr"] >= 17].mean() > late[df["hr"] < 12].mean() + 0.05
    assert late[df["load"] > 1.0].mean() > late[df["load"] < 0.8].mean()


def test_lateness_is_learnable(clean: tuple[Path, GenerationSummary]) -> None:
    sk = pytest.importorskip("sklearn.linear_model")
    from sklearn.metrics import roc_auc_score

    out, _ = clean
    df = _late_frame(out)
    x = np.column_stack(
        [
            np.log(df["distance_km"]),
            df["priority"] == "express",
            df["priority"] == "same_day",
            df["hr"] >= 16,
            df["hr"] >= 19,
            df["dow"] == 5,
            df["dow"] >= 6,
            np.maximum(df["load"].astype(float) - 0.9, -0.4),
            np.exp(-df["tenure"] / 180.0),
            df["tier"] == "enterprise",
            df["tier"] == "standard",
        ]
    ).astype(float)
    y = df["late"]
    rng = np.random.default_rng(0)
    test = rng.random(len(y)) < 0.3
    model = sk.LogisticRegression(max_iter=1000).fit(x[~test], y[~test])
    auc = roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])
    assert auc > 0.7


def test_feedback_ratings_follow_outcome(clean: tuple[Path, GenerationSummary]) -> None:
    out, _ = clean
    con = duckdb.connect()
    for t in ("orders", "deliveries", "customer_feedback"):
        _typed(con, out, t)
    avg = dict(
        con.execute(
            """select case when d.status <> 'delivered' then 'failed'
                           when d.delivered_at > o.promised_by then 'late' else 'on_time' end, avg(f.rating)
               from t_customer_feedback f join t_deliveries d using (order_id) join t_orders o using (order_id)
               group by 1"""
        ).fetchall()
    )
    assert avg["on_time"] > 4.0 > avg["late"] > avg["failed"] and avg["failed"] < 2.5


def test_deterministic(tmp_path: Path) -> None:
    kw = dict(start=START, days=3, clients=6, orders_per_day=400, dirty_rate=0.02, progress=False)
    generate(tmp_path / "a", seed=5, **kw)
    generate(tmp_path / "b", seed=5, **kw)
    generate(tmp_path / "c", seed=6, **kw)
    a, b, c = (_dir_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert a["orders/2026-01-05.csv"] != c["orders/2026-01-05.csv"]
    # A longer run reproduces the shorter one's first day exactly (per-day RNG streams).
    generate(tmp_path / "d", seed=5, **{**kw, "days": 4})
    d = _dir_bytes(tmp_path / "d")
    assert d["orders/2026-01-05.csv"] == a["orders/2026-01-05.csv"]
    assert d["deliveries/2026-01-05.csv"] == a["deliveries/2026-01-05.csv"]


def test_dirt_is_counted(dirty: tuple[Path, GenerationSummary]) -> None:
    out, summary = dirty
    for table, kinds in FACT_DIRT.items():
        t = TABLES[table]
        ncol = len(t.file_columns)
        records = [r for p in sorted((out / table).glob("*.csv")) for r in _records(p)]
        assert len(records) == summary.rows[table]
        dirt = summary.dirty[table]
        assert set(dirt) == set(kinds)
        assert max(dirt.values()) - min(dirt.values()) <= 1  # kinds cycle evenly
        assert sum(dirt.values()) == pytest.approx(0.03 * summary.rows[table], rel=0.35)
        ragged = sum(len(r) != ncol for r in records)
        non_utf8 = sum(any(ord(ch) > 127 for ch in ",".join(r)) for r in records)
        missing = sum(r[0] == "" for r in records)
        keys = Counter(r[0] for r in records if r[0])
        duplicates = sum(v - 1 for v in keys.values())
        assert ragged == dirt["ragged_line"]
        assert non_utf8 == dirt["non_utf8"]
        assert missing == dirt["missing_key"]
        assert duplicates == dirt["duplicate_id"]
        col = {"orders": "priority", "deliveries": "status", "customer_feedback": "channel"}[table]
        status_col, allowed = t.file_columns.index(col), t.column(col).allowed or ()
        bad_status = sum(r[status_col] not in allowed for r in records if len(r) == ncol)
        assert bad_status == dirt["bad_status"]
    # Raw bytes: non-UTF-8 lines really are invalid UTF-8.
    with pytest.raises(UnicodeDecodeError):
        for p in sorted((out / "orders").glob("*.csv")):
            p.read_bytes().decode("utf-8")
    # Dimension dirt: one duplicate driver key and one bad hire date.
    drivers = _records(out / "drivers" / "drivers.csv")
    assert sum(v - 1 for v in Counter(r[0] for r in drivers).values()) == 1
    assert sum(r[3].endswith("-02-30") for r in drivers) == 1
    assert summary.dirty["drivers"] == {"bad_timestamp": 1, "duplicate_id": 1}


def _parses(stamp: str) -> bool:
    try:
        dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


def test_dirty_rows_stay_in_their_day(dirty: tuple[Path, GenerationSummary]) -> None:
    out, _ = dirty
    for table in FACT_DIRT:
        part = TABLES[table].file_columns.index(TABLES[table].partition_column)
        for p in sorted((out / table).glob("*.csv")):
            stamps = [r[part] for r in _records(p) if len(r) > part]
            valid = [s for s in stamps if _parses(s)]
            assert all(s.startswith(p.stem) for s in valid), p
            assert len(valid) >= 0.9 * len(stamps)


def test_memory_does_not_grow_with_days(tmp_path: Path) -> None:
    def peak(days: int) -> tuple[int, GenerationSummary]:
        tracemalloc.start()
        s = generate(
            tmp_path / f"m{days}", START, days=days, clients=10, orders_per_day=4000, dirty_rate=0.002, progress=False
        )
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top, s

    peak(1)  # warm-up: imports and caches
    p2, s2 = peak(2)
    p8, s8 = peak(8)
    assert s8.rows["orders"] > 3 * s2.rows["orders"]
    assert p8 < 1.5 * p2 + 2_000_000, (p2, p8)
    # The carried-over buffers stay about one day of orders, however long the run.
    assert s8.peak_pending["orders"] < 1.5 * 4000
    assert s8.peak_pending["customer_feedback"] < 0.5 * 4000


def test_zero_days_and_validation(tmp_path: Path) -> None:
    s = generate(tmp_path / "z", START, days=0, clients=3, orders_per_day=10, dirty_rate=0, progress=False)
    assert s.rows["orders"] == 0 and len(s.files) == 4
    assert len(_records(tmp_path / "z" / "depots" / "depots.csv")) == 3
    with pytest.raises(ValueError):
        generate(tmp_path / "bad", START, days=1, clients=0, progress=False)


def test_progress_bar_runs(tmp_path: Path) -> None:
    s = generate(tmp_path / "p", START, days=1, clients=2, orders_per_day=50, progress=True)
    assert s.rows["orders"] > 0
