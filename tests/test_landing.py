"""Landing on both backends: layout, types, reconciliation, idempotence, crash safety, bad input."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delivery_lake import inbox as inbox_module
from delivery_lake.config import Settings
from delivery_lake.contract import DIMENSIONS, FACTS, TABLES
from delivery_lake.inbox import InputError, list_files
from delivery_lake.landing import Landing, reconcile
from delivery_lake.storage import UNASSIGNED_CLIENT, Lake
from tests.helpers import land_all, read_table

DAY = "2026-01-06"


def accounted(r: object) -> int:
    """Every way a row can be accounted for, from a LandingReport or a reconcile() entry."""
    states = ("landed", "quarantined", "replayed", "superseded", "pending")
    return sum(r[s] if isinstance(r, dict) else getattr(r, s) for s in states)


def count_records(path: Path) -> int:
    """Independent count of CSV records (quoted newlines included), not using DuckDB."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    return sum(1 for _ in csv.reader(io.StringIO(text, newline=""))) - 1


def test_layout_types_and_reconciliation(settings: Settings) -> None:
    lake, _landing, reports = land_all(settings)
    clients = sorted(read_table(lake, "raw", "clients").column("client_id").to_pylist())

    # Layout: raw/{table}/date=YYYY-MM-DD/client={id}/data.parquet, one file per partition.
    parts = lake.list_partitions("raw", "orders")
    assert {d for d, _ in parts} == {"2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08", "2026-01-09"}
    assert {c for _, c in parts} == set(clients)
    files = lake.fs.glob(lake.table_dir("raw", "orders") + "/**")
    data_files = [f for f in files if f.endswith(".parquet")]
    assert len(data_files) == len(parts)
    assert lake.exists(lake.data_file("raw", "clients"))

    # Typed columns, hive partitions readable.
    orders = read_table(lake, "raw", "orders")
    assert pa.types.is_timestamp(orders.schema.field("created_at").type)
    assert orders.schema.field("created_at").type.tz in ("UTC", "Etc/UTC")
    assert pa.types.is_float64(orders.schema.field("weight_kg").type)
    assert pa.types.is_int64(orders.schema.field("parcels").type)
    assert pa.types.is_decimal(orders.schema.field("order_value").type)
    assert pa.types.is_date32(orders.schema.field("date").type)
    # Every landed row sits in the partition of its own timestamp and client.
    con = lake.duckdb()
    mismatched = con.execute(
        f"""SELECT count(*) FROM read_parquet('{lake.glob_uri("raw", "deliveries", True)}', hive_partitioning=true)
            WHERE CAST(dispatched_at AS DATE) <> date OR client_id <> client"""
    ).fetchone()[0]
    assert mismatched == 0
    # No duplicate keys within what landed.
    dupes = con.execute(
        f"SELECT count(*) - count(DISTINCT order_id) FROM read_parquet('{lake.glob_uri('raw', 'orders', True)}')"
    ).fetchone()[0]
    assert dupes == 0
    con.close()

    # read = landed + quarantined + replayed + superseded + pending, per source file, against an
    # independent CSV count.
    for table in TABLES.values():
        per_file = reconcile(lake, settings.inbox_dir, table)
        assert per_file, table.name
        for path, c in per_file.items():
            assert c["read"] == accounted(c), (table.name, path, c)
            assert c["read"] == count_records(Path(path)), (table.name, path)
    # The dirty export really was dirty, and the dirt was caught with reasons.
    reasons = reports["orders"].by_reason | reports["deliveries"].by_reason | reports["customer_feedback"].by_reason
    assert reports["deliveries"].quarantined > 0
    assert any(r.startswith("malformed:") for r in reasons)
    assert any(r.startswith("unparseable:") for r in reasons)
    assert "duplicate" in reasons
    assert any(r.startswith("orphan:") for r in reasons)
    assert any(r.startswith("rule:") for r in reasons)


def test_quarantine_keeps_original_values_file_and_line(local_settings: Settings) -> None:
    lake, _landing, _ = land_all(local_settings)
    q = read_table(lake, "quarantine", "orders").to_pylist()
    assert q
    for row in q[:50]:
        assert row["_reason"] and row["_source_file"].endswith(".csv") and row["_source_line"] >= 2
    # The quarantined line really is the line the record sits on (files have no quoted newlines in orders).
    sample = [r for r in q if r["order_id"] is not None][:20]
    for row in sample:
        lines = Path(row["_source_file"]).read_bytes().split(b"\n")
        assert lines[row["_source_line"] - 1].decode("utf-8", "replace").startswith(row["order_id"] + ",")
    malformed = [r for r in q if r["_reason"].startswith("malformed:")]
    assert malformed and all(r["_raw_line"] for r in malformed)
    assert {r["client"] for r in malformed} == {UNASSIGNED_CLIENT}


def _digest(lake: Lake, zone: str, table: str) -> dict[str, str]:
    out = {}
    for d, c in lake.list_partitions(zone, table):
        with lake.fs.open(lake.data_file(zone, table, d, c), "rb") as fh:
            rows = pq.read_table(fh).to_pylist()
        out[f"{d}/{c}"] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return out


def test_relanding_is_idempotent(settings: Settings) -> None:
    lake, landing, reports = land_all(settings)
    before = _digest(lake, "raw", "deliveries")
    count_before = read_table(lake, "raw", "deliveries").num_rows
    again = landing.land_fact(TABLES["deliveries"], {DAY: None})
    assert again.landed == sum(p.landed for p in reports["deliveries"].partitions if p.date == DAY)
    assert _digest(lake, "raw", "deliveries") == before
    assert read_table(lake, "raw", "deliveries").num_rows == count_before


def test_crash_mid_write_leaves_previous_partition_intact(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    lake, landing, _ = land_all(settings)
    before = _digest(lake, "raw", "orders")
    # Change the source so a successful re-landing would produce different partitions...
    src = settings.inbox_dir / "orders" / f"{DAY}.csv"
    lines = src.read_bytes().split(b"\n")
    src.write_bytes(b"\n".join(lines[:1] + lines[1 : len(lines) // 2]) + b"\n")

    # ...then crash after the first partition is published.
    real_publish = Lake.publish_file
    calls = {"n": 0}

    def crashing(self: Lake, local_file: str | Path, dest: str, move: bool = False) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            if not self.is_s3:
                # die half-way through copying the bytes: the temp file is partial
                with open(local_file, "rb") as fh, open(dest + ".tmp-crash", "wb") as out:
                    out.write(fh.read()[:100])
            raise OSError("simulated crash")
        return real_publish(self, local_file, dest, move)

    monkeypatch.setattr(Lake, "publish_file", crashing)
    with pytest.raises(OSError, match="simulated crash"):
        landing.land_fact(TABLES["orders"], {DAY: None})
    monkeypatch.setattr(Lake, "publish_file", real_publish)

    after = _digest(lake, "raw", "orders")  # every partition still reads as a whole file
    changed = [k for k in before if before[k] != after[k]]
    assert len(changed) <= 1  # at most the one partition that was fully published
    assert all(k.startswith(DAY) for k in changed)
    assert {k: v for k, v in after.items() if not k.startswith(DAY)} == {
        k: v for k, v in before.items() if not k.startswith(DAY)
    }
    # A reader of the whole table never trips over the partial temp file.
    assert read_table(lake, "raw", "orders").num_rows > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"order_id,client_id,created_at\n", "missing contract column(s) promised_by"),
        (
            b"order_id,client_id,created_at,promised_by,pickup_depot_id,dropoff_city,dropoff_postcode,dropoff_lat,"
            b"dropoff_lon,weight_kg,parcels,priority,order_value,payment_method\n",
            "header only",
        ),
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(local_settings: Settings, content: bytes, message: str) -> None:
    lake, landing, _ = land_all(local_settings)
    before = _digest(lake, "raw", "orders")
    bad = local_settings.inbox_dir / "orders" / f"{DAY}-extra.csv"
    bad.write_bytes(content)
    with pytest.raises(InputError) as err:
        landing.land_fact(TABLES["orders"], {DAY: None})
    assert str(bad) in str(err.value)
    assert message in str(err.value)
    assert _digest(lake, "raw", "orders") == before


def test_extra_columns_are_recorded_not_fatal(local_settings: Settings) -> None:
    lake, landing, _ = land_all(local_settings)
    path = local_settings.inbox_dir / "depots" / "depots.csv"
    rows = list(csv.reader(io.StringIO(path.read_text())))
    rows[0].append("manager")
    for r in rows[1:]:
        r.append("someone")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.write_text(buf.getvalue())
    report = landing.land_dimension(TABLES["depots"])
    assert report.extra_columns == {str(path): ["manager"]}
    assert "manager" not in read_table(lake, "raw", "depots").column_names


def _csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8", "replace"), newline="")))


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.write_text(buf.getvalue())


def _data_files(lake: Lake, zone: str, table: str) -> dict[str, tuple[str, int]]:
    """path -> (sha256, mtime_ns) of every data file of a zone's table (local lake)."""
    root = Path(lake.table_dir(zone, table))
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*.parquet"))
    }


def test_a_corrected_file_supersedes_and_keeps_the_old_version_as_history(local_settings: Settings) -> None:
    lake, landing, _ = land_all(local_settings)
    src = local_settings.inbox_dir / "orders" / f"{DAY}.csv"
    con = lake.duckdb()
    order_id = con.execute(
        f"SELECT min(order_id) FROM read_parquet('{lake.glob_uri('raw', 'orders', True)}', hive_partitioning=true) "
        f"WHERE date = '{DAY}'"
    ).fetchone()[0]
    rows = _csv_rows(src)
    header = rows[0]
    line = next(i for i, r in enumerate(rows) if r and r[0] == order_id) + 1  # record-based, header = line 1
    fields = list(rows[line - 1])
    old_value = fields[header.index("order_value")]
    fields[header.index("order_value")] = "4321.00"  # a correction of order_value in a later file
    correction = local_settings.inbox_dir / "orders" / f"{DAY}-correction.csv"
    _write_csv(correction, [header, fields])
    report = landing.land_fact(TABLES["orders"], {DAY: None})

    landed = con.execute(
        f"SELECT order_value::VARCHAR FROM read_parquet('{lake.glob_uri('raw', 'orders', True)}') WHERE order_id = ?",
        [order_id],
    ).fetchall()
    assert landed == [("4321.00",)]
    history = con.execute(
        f"""SELECT order_value::VARCHAR, _source_file, _source_line, _superseded_by
            FROM read_parquet('{lake.glob_uri("history", "orders", True)}') WHERE order_id = ?""",
        [order_id],
    ).fetchall()
    assert history == [(f"{float(old_value):.2f}", str(src), line, str(correction))]
    # A correction is not bad data: nothing quarantined for it, counted as superseded.
    quarantined = con.execute(
        f"SELECT count(*) FROM read_parquet('{lake.glob_uri('quarantine', 'orders', True)}') WHERE order_id = ?",
        [order_id],
    ).fetchone()[0]
    assert quarantined == 0
    assert report.superseded == 1
    for path, v in reconcile(lake, local_settings.inbox_dir, TABLES["orders"]).items():
        assert v["read"] == accounted(v), path


def test_a_re_sent_file_changes_no_file_and_counts_as_replayed(local_settings: Settings) -> None:
    lake, landing, reports = land_all(local_settings)
    before = {z: _data_files(lake, z, "deliveries") for z in ("raw", "quarantine")}
    src = local_settings.inbox_dir / "deliveries" / f"{DAY}.csv"
    copy = local_settings.inbox_dir / "deliveries" / f"{DAY}-resent.csv"
    copy.write_bytes(src.read_bytes())
    report = landing.land_fact(TABLES["deliveries"], {DAY: None})

    assert {z: _data_files(lake, z, "deliveries") for z in ("raw", "quarantine")} == before
    assert report.changed_partitions == []
    day_first = [p for p in reports["deliveries"].partitions if p.date == DAY]
    # Every line of the copy, bad ones included, is a replay of the original file: the day's
    # landed, quarantined and pending counts are what they were, so its quality is unchanged.
    assert report.replayed == count_records(copy)
    for state in ("landed", "quarantined", "pending"):
        assert getattr(report, state) == sum(getattr(p, state) for p in day_first), state
    for path, v in reconcile(lake, local_settings.inbox_dir, TABLES["deliveries"]).items():
        assert v["read"] == accounted(v), path


def test_two_versions_of_a_key_in_one_file_remain_a_conflict(local_settings: Settings) -> None:
    lake, landing, _ = land_all(local_settings)
    src = local_settings.inbox_dir / "orders" / f"{DAY}.csv"
    rows = _csv_rows(src)
    header = rows[0]
    once = [r for r in rows[1:] if r and sum(1 for x in rows[1:] if x and x[0] == r[0]) == 1]
    first = next(r for r in once if r[0].startswith("O"))
    changed = list(first)
    changed[header.index("order_value")] = "777.00"
    _write_csv(src, [*rows, changed])
    report = landing.land_fact(TABLES["orders"], {DAY: None})
    con = lake.duckdb()
    q = con.execute(
        f"SELECT _reason FROM read_parquet('{lake.glob_uri('quarantine', 'orders', True)}') WHERE order_id = ?",
        [first[0]],
    ).fetchall()
    landed = con.execute(
        f"SELECT order_value::VARCHAR FROM read_parquet('{lake.glob_uri('raw', 'orders', True)}') WHERE order_id = ?",
        [first[0]],
    ).fetchall()
    assert q == [("duplicate",)] and landed == [("777.00",)]
    assert report.by_reason["duplicate"] >= 1


def test_backfill_reads_each_csv_once_and_indexes_what_it_read(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fact file nobody indexed yet is counted by the landing that reads it, not scanned twice."""
    lake = Lake.from_settings(local_settings)
    landing = Landing(lake, local_settings.inbox_dir, local_settings)
    for t in DIMENSIONS:
        landing.land_dimension(t)

    def no_scan(*_a: object, **_k: object) -> None:
        raise AssertionError("second pass over a CSV")

    monkeypatch.setattr(inbox_module, "_scan", no_scan)
    dates = sorted({f.stem for f in list_files(local_settings.inbox_dir, "orders")})
    reports = {t.name: landing.land_fact(t, {d: None for d in dates}) for t in FACTS}
    monkeypatch.undo()

    for t in FACTS:
        cached = lake.read_json(lake.meta_path("inbox_index", f"{t.name}.json"))
        files = list_files(local_settings.inbox_dir, t.name)
        assert sorted(cached) == sorted(str(p) for p in files)
        for p in files:
            # what the landing learned is exactly what the index scan finds
            assert cached[str(p)] == inbox_module._scan(lake, p, t).to_json()
            assert sum(sum(c.values()) for c in cached[str(p)]["partitions"].values()) + cached[str(p)][
                "malformed"
            ] == count_records(p)
        assert reports[t.name].read == accounted(reports[t.name])
    for path, v in reconcile(lake, local_settings.inbox_dir, TABLES["orders"]).items():
        assert v["read"] == accounted(v), path


def test_file_touching_dates_its_name_does_not_announce(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file named for one day holding another day's rows is still filed under the right dates."""
    plans: list[list[str]] = []
    original = Landing._land

    def spy(self: Landing, table, entries, requested):  # type: ignore[no-untyped-def]
        if table.name == "orders":
            plans.append(sorted(d for e in entries for d in e.dates))
        return original(self, table, entries, requested)

    monkeypatch.setattr(Landing, "_land", spy)
    orders = local_settings.inbox_dir / "orders"
    misnamed = orders / "2026-01-05-late.csv"
    (orders / DAY).with_suffix(".csv").rename(misnamed)  # 2026-01-06's rows, named 2026-01-05
    expected = {}
    rows = list(csv.DictReader(io.StringIO(misnamed.read_bytes().decode("utf-8", "replace"), newline="")))
    for r in rows:
        expected[(r["created_at"] or "")[:10]] = expected.get((r["created_at"] or "")[:10], 0) + 1
    lake = Lake.from_settings(local_settings)
    landing = Landing(lake, local_settings.inbox_dir, local_settings)
    for t in DIMENSIONS:
        landing.land_dimension(t)
    dates = {f"2026-01-0{i}": None for i in range(5, 10)}
    reports = {t.name: landing.land_fact(t, dates) for t in FACTS}
    assert DAY in {d for d, _ in lake.list_partitions("raw", "orders")}
    per_file = reconcile(lake, local_settings.inbox_dir, TABLES["orders"])
    assert per_file[str(misnamed)]["read"] == count_records(misnamed)
    for f, v in per_file.items():
        assert v["read"] == v["landed"] + v["quarantined"], f
    # every row of the misnamed file with a parseable DAY timestamp sits in a DAY partition or its quarantine
    con = lake.duckdb()
    landed_day = con.execute(
        f"SELECT count(*) FROM read_parquet('{lake.glob_uri('raw', 'orders', True)}', hive_partitioning=true) "
        f"WHERE date = '{DAY}'"
    ).fetchone()[0]
    assert 0 < landed_day <= expected[DAY]
    # planned by its name first, then landed again once its real dates were learned
    assert len(plans) == 2 and DAY not in plans[0] and DAY in plans[1]
    assert reports["orders"].read == reports["orders"].landed + reports["orders"].quarantined


def test_reconcile_counts_with_its_own_scan_not_the_cached_index(local_settings: Settings) -> None:
    lake, _landing, _ = land_all(local_settings)
    cache = lake.meta_path("inbox_index", "orders.json")
    index = lake.read_json(cache)
    path = sorted(index)[0]
    day = sorted(index[path]["partitions"])[0]
    client = sorted(index[path]["partitions"][day])[0]
    index[path]["partitions"][day][client] += 1000  # a cache that lies
    lake.write_json(cache, index)
    per_file = reconcile(lake, local_settings.inbox_dir, TABLES["orders"])
    assert per_file[path]["read"] == count_records(Path(path))
    assert per_file[path]["read"] == per_file[path]["landed"] + per_file[path]["quarantined"]


def test_client_id_that_is_not_path_safe_is_quarantined_not_written_as_a_folder(local_settings: Settings) -> None:
    """A client id names a folder (client=<id>): one with '/' or a space would escape the
    partition or be spelt differently by each writer, so the contract quarantines it."""
    import re

    unsafe = "ACME West/2"
    pattern = re.compile(rb"\bC002\b")  # bytes: the dirty export holds invalid UTF-8 on purpose
    touched = [
        local_settings.inbox_dir / "clients" / "clients.csv",
        *(local_settings.inbox_dir / "orders").glob("*.csv"),
    ]
    for p in touched:
        p.write_bytes(pattern.sub(unsafe.encode(), p.read_bytes()))
    lake, _, reports = land_all(local_settings)
    assert reports["clients"].by_reason.get("rule:client_id_path_safe") == 1
    con = lake.duckdb()
    quarantined = con.execute(
        f"""SELECT client, count(*), count(*) FILTER (_reasons LIKE '%orphan:client_id%' OR _raw_line IS NOT NULL)
            FROM read_parquet('{lake.glob_uri("quarantine", "orders", True)}', hive_partitioning=true)
            WHERE client_id = ? GROUP BY ALL""",
        [unsafe],
    ).fetchall()
    landed = con.execute(
        f"SELECT count(*) FROM read_parquet('{lake.glob_uri('raw', 'orders', True)}') WHERE client_id = ?", [unsafe]
    ).fetchone()[0]
    assert landed == 0
    # every such row is an orphan, except lines the reader rejected before any rule ran
    [(client, rows, orphans)] = quarantined
    assert client == UNASSIGNED_CLIENT and rows > 100 and orphans == rows
    folders = {p.name for p in Path(lake.root).rglob("client=*")}
    assert not any("ACME" in f or "%" in f for f in folders)
    assert "client=C001" in folders
    for r in reports.values():
        assert r.read == accounted(r)


def test_duckdb_spills_under_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A query bigger than memory_limit spills into DATA_DIR/.duckdb_tmp, not into ./.tmp of
    whatever folder the process runs in."""
    import dataclasses

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    settings = dataclasses.replace(
        Settings.from_env(data_dir=tmp_path / "data", lake_url=str(tmp_path / "data" / "lake")),
        duckdb_memory_limit="30MB",
    )
    con = Lake.from_settings(settings).duckdb()
    total = con.execute(
        "SELECT count(*), sum(x) FROM "
        "(SELECT (i * 7919) % 1000003 AS x, repeat('a', 20) AS s FROM range(3000000) t(i) ORDER BY x, s)"
    ).fetchone()
    assert total == (3_000_000, sum((i * 7919) % 1000003 for i in range(3_000_000)))
    # It did spill, there (DuckDB removes the folder it made when the connection closes).
    assert [p.name for p in (tmp_path / "data" / ".duckdb_tmp").iterdir()]
    assert not (cwd / ".tmp").exists()
    con.close()


def test_local_listing_matches_fsspec(local_settings: Settings) -> None:
    """Lake.glob lists a local lake with the standard library: the same paths as fsspec's glob
    for every pattern the library uses, `**` included."""
    lake, _, _ = land_all(local_settings)
    patterns = [
        lake.table_dir("raw", "orders") + "/date=*/client=*/data.parquet",
        lake.table_dir("raw", "orders") + "/date=*/**/data.parquet",
        lake.table_dir("raw", "clients") + "/data.parquet",
        lake.table_dir("quarantine", "orders") + "/date=*/*/data.parquet",
        lake.meta_path("landing", "orders") + "/**/*.json",
        lake.meta_path("landing", "clients") + "/manifest.json",
        lake.meta_path("no_such_zone", "orders") + "/*.json",
    ]
    for pattern in patterns:
        assert lake.glob(pattern) == sorted(lake.fs.glob(pattern)), pattern
    assert len(lake.glob(patterns[0])) == len(lake.list_partitions("raw", "orders")) > 10
    assert lake.glob(patterns[3])  # the dirty export quarantines orders


def test_a_local_lake_reads_without_fsspec(local_settings: Settings) -> None:
    """A process working on a local lake never imports fsspec (60-120 ms of every start), and
    what it reads through `os` agrees with fsspec: existence, JSON, a file's version."""
    lake, _, _ = land_all(local_settings)
    clients = lake.data_file("raw", "clients")
    info = lake.fs.info(clients)
    assert lake.version(clients) == f"{info['size']} {info['mtime']}"
    manifest = lake.meta_path("landing", "clients", "manifest.json")
    code = (
        "import json, sys\n"
        "from delivery_lake.storage import Lake\n"
        f"lake = Lake({lake.url!r})\n"
        f"doc = lake.read_json({manifest!r})\n"
        f"print(json.dumps([lake.exists({clients!r}), lake.exists({clients!r} + '.gone'), lake.version({clients!r}),\n"
        f"    doc['table'] if doc else None, lake.read_json({manifest!r} + '.gone', 'default'),\n"
        "    len(lake.list_partitions('raw', 'orders')), 'fsspec' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert json.loads(out) == [
        True,
        False,
        lake.version(clients),
        "clients",
        "default",
        len(lake.list_partitions("raw", "orders")),
        False,
    ]
    assert lake.list_partitions("raw", "orders")
    with pytest.raises(FileNotFoundError):
        lake.version(clients + ".gone")


def test_relative_inbox_reuses_the_index(local_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same inbox named relative to the working folder is the same inbox: no CSV is scanned again."""
    land_all(local_settings)
    monkeypatch.chdir(local_settings.inbox_dir.parent)
    relative = Settings.from_env(
        data_dir=local_settings.data_dir,
        lake_url=local_settings.lake_url,
        inbox_dir=Path(local_settings.inbox_dir.name),
    )
    assert relative.inbox_dir == local_settings.inbox_dir

    def no_scan(*_a: object, **_k: object) -> None:
        raise AssertionError("an indexed CSV was scanned again")

    monkeypatch.setattr(inbox_module, "_scan", no_scan)
    landing = Landing(Lake.from_settings(relative), relative.inbox_dir, relative)
    report = landing.land_fact(TABLES["orders"], {DAY: None})
    assert report.landed > 0


# ---- what the inbox holds besides plain UTF-8 CSV ------------------------------------------------

DATES = ["2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08", "2026-01-09"]


def _land_dates(settings: Settings) -> Lake:
    lake = Lake.from_settings(settings)
    landing = Landing(lake, settings.inbox_dir, settings)
    for t in DIMENSIONS:
        landing.land_dimension(t)
    for t in FACTS:
        landing.land_fact(t, dict.fromkeys(DATES))
    return lake


def _zone_rows(lake: Lake, zone: str, table: str) -> list[tuple]:
    """Every row of a zone's table, with the source file named by its day only."""
    rows = read_table(lake, zone, table).to_pylist()
    for r in rows:
        r.pop("_landed_at", None)
        if "_source_file" in r:
            r["_source_file"] = Path(r["_source_file"]).name.split(".")[0]
    return sorted(tuple(sorted((k, str(v)) for k, v in r.items())) for r in rows)


def _cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    from delivery_lake.cli import main

    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("LAKE_URL", settings.lake_url)
    monkeypatch.setenv("INBOX_DIR", str(settings.inbox_dir))
    return main(list(argv))


def test_compressed_exports_land_like_the_plain_csv(local_settings: Settings, tmp_path: Path) -> None:
    plain = _land_dates(local_settings)
    inbox = tmp_path / "inbox_compressed"
    shutil.copytree(local_settings.inbox_dir, inbox)
    for table in ("orders", "deliveries"):
        for day, suffix in (("2026-01-06", ".csv.gz"), ("2026-01-07", ".csv.zst")):
            src = inbox / table / f"{day}.csv"
            if suffix == ".csv.gz":
                with gzip.open(inbox / table / f"{day}{suffix}", "wb") as out:
                    out.write(src.read_bytes())
            else:
                with pa.CompressedOutputStream(str(inbox / table / f"{day}{suffix}"), "zstd") as out:
                    out.write(src.read_bytes())
            src.unlink()
    settings = Settings.from_env(data_dir=tmp_path / "data2", lake_url=str(tmp_path / "lake2"), inbox_dir=inbox)
    assert {p.name for p in list_files(inbox, "orders")} >= {"2026-01-06.csv.gz", "2026-01-07.csv.zst"}
    assert inbox_module.name_date(inbox / "orders" / "2026-01-06.csv.gz") == "2026-01-06"
    compressed = _land_dates(settings)

    for table in ("orders", "deliveries"):
        for zone in ("raw", "quarantine", "pending"):
            if zone == "pending" and not plain.list_partitions(zone, table):
                continue
            assert _zone_rows(compressed, zone, table) == _zone_rows(plain, zone, table), (zone, table)
    # Line numbers in quarantine are lines of the decompressed file.
    q = [
        r
        for r in read_table(compressed, "quarantine", "orders").to_pylist()
        if r["_source_file"].endswith((".gz", ".zst"))
    ]
    assert {Path(r["_source_file"]).suffix for r in q} == {".gz", ".zst"}
    texts = {
        f: (
            gzip.decompress(Path(f).read_bytes())
            if f.endswith(".gz")
            else pa.input_stream(f, compression="zstd").read()
        ).split(b"\n")
        for f in {r["_source_file"] for r in q}
    }
    for r in q:
        line = texts[r["_source_file"]][r["_source_line"] - 1].decode("utf-8", "replace")
        if r["_raw_line"]:  # invalid UTF-8 in it is replaced, so compare its leading field
            assert line.split(",")[0] == r["_raw_line"].split(",")[0]
        elif r["order_id"]:
            assert line.startswith(r["order_id"] + ",")
    plain_counts = {
        Path(p).name.split(".")[0]: v for p, v in reconcile(plain, local_settings.inbox_dir, TABLES["orders"]).items()
    }
    for path, v in reconcile(compressed, inbox, TABLES["orders"]).items():
        assert v == plain_counts[Path(path).name.split(".")[0]] and v["read"] == accounted(v), path


def test_files_it_does_not_read_are_refused_by_name(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = local_settings.inbox_dir / "orders"
    xlsx = orders / "2026-01-10.xlsx"
    xlsx.write_bytes(b"PK\x03\x04 not really a workbook")
    bz2 = orders / "2026-01-10.csv.bz2"
    bz2.write_bytes(b"BZh91AY&SY")
    # Files being written under a temporary name are not the exporter's yet: ignored.
    (orders / ".2026-01-10.csv.swp").write_bytes(b"\x00")
    (orders / "_tmp_2026-01-10.xlsx").write_bytes(b"\x00")
    lake = Lake.from_settings(local_settings)

    changes = inbox_module.scan_changes(lake, local_settings.inbox_dir, None)
    assert len(changes.errors) == 2
    [xlsx_error] = [e for e in changes.errors if e.startswith(f"{xlsx}: ")]
    assert "not a CSV export (.xlsx)" in xlsx_error
    [bz2_error] = [e for e in changes.errors if e.startswith(f"{bz2}: ")]
    assert ".bz2 compression is not read" in bz2_error
    assert set(changes.facts["orders"]) == set(DATES)  # the readable files are unaffected

    _land_dates(local_settings)
    per_file = reconcile(lake, local_settings.inbox_dir, TABLES["orders"])
    assert per_file[str(xlsx)] == {"error": xlsx_error}
    capsys.readouterr()
    assert _cli(local_settings, monkeypatch, "reconcile") == 1
    out = capsys.readouterr().out
    assert f"UNREAD   {xlsx_error}" in out and f"UNREAD   {bz2_error}" in out
    assert "2 file(s) do not reconcile" in " ".join(out.split())
    assert ".swp" not in out and "_tmp_" not in out


def test_a_utf16_export_is_refused_as_not_utf8(local_settings: Settings) -> None:
    src = local_settings.inbox_dir / "orders" / f"{DAY}.csv"
    bad = local_settings.inbox_dir / "orders" / f"{DAY}-utf16.csv"
    bad.write_bytes(src.read_bytes().decode("utf-8", "replace").encode("utf-16"))  # with its BOM
    assert bad.read_bytes()[:2] == b"\xff\xfe"
    expected = f"{bad}: not UTF-8 text (looks like UTF-16); re-export the file as UTF-8"
    with pytest.raises(InputError) as err:
        inbox_module.read_header(bad, TABLES["orders"])
    assert str(err.value) == expected
    bad.write_bytes(src.read_bytes().decode("utf-8", "replace").encode("utf-16-le"))  # no BOM: NUL bytes
    with pytest.raises(InputError, match=r"looks like UTF-16"):
        inbox_module.read_header(bad, TABLES["orders"])
    bad.write_bytes("order_id,client_id,créé\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"not UTF-8 text \(the header has bytes that are not UTF-8"):
        inbox_module.read_header(bad, TABLES["orders"])
    bad.write_bytes(src.read_bytes().decode("utf-8", "replace").encode("utf-16"))
    changes = inbox_module.scan_changes(Lake.from_settings(local_settings), local_settings.inbox_dir, None)
    assert changes.errors == [expected]


def test_reconcile_audits_every_file_when_one_cannot_be_read(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _land_dates(local_settings)
    # A dimension is audited first: an unreadable one used to end the audit there.
    bad = local_settings.inbox_dir / "clients" / "clients-utf16.csv"
    bad.write_bytes((local_settings.inbox_dir / "clients" / "clients.csv").read_text().encode("utf-16"))
    capsys.readouterr()
    assert _cli(local_settings, monkeypatch, "reconcile", "-v") == 1
    lines = capsys.readouterr().out.splitlines()
    files = [p for t in TABLES for p in list_files(local_settings.inbox_dir, t)]
    assert len(lines) == len(files) + 1
    for p in files:
        [line] = [ln for ln in lines if f" {p}" in ln]
        if p == bad:
            assert line == f"UNREAD   {bad}: not UTF-8 text (looks like UTF-16); re-export the file as UTF-8"
        else:
            assert line.startswith(f"ok  {p}: read "), line
    assert lines[-1] == "1 file(s) do not reconcile"


def _with_dates(src: Path, dest: Path, old: str, new: str) -> None:
    """`src` and the next day's file as one export, its dates moved from `old...` to `new...`."""
    nxt = src.with_name(f"2026-01-0{int(src.stem[-1]) + 1}.csv")
    both = src.read_bytes() + b"\n".join(nxt.read_bytes().split(b"\n")[1:])
    dest.write_bytes(both.replace(old.encode(), new.encode()))


def test_dates_outside_the_partitions_are_refused_by_the_scan(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export of history before PARTITION_START (or of days still to come) is named with
    its dates when the inbox is scanned, instead of failing a Dagster run on a partition key."""
    orders = local_settings.inbox_dir / "orders"
    old = orders / "export-history.csv"
    _with_dates(orders / f"{DAY}.csv", old, "2026-01-0", "2014-10-0")  # rows of 2014-10-05..07
    lake = Lake.from_settings(local_settings)
    entry = inbox_module.InboxIndex(lake, local_settings.inbox_dir, TABLES["orders"]).entries(paths=[old])[0]
    first, last = min(entry.dates), max(entry.dates)
    assert first.startswith("2014-10-") and first < last

    changes = inbox_module.scan_changes(lake, local_settings.inbox_dir, None, partition_start="2015-01-01")
    assert changes.errors == [
        f"{old}: dates {first}..{last} are before PARTITION_START 2015-01-01 (set PARTITION_START to land them)"
    ]
    assert str(old) not in changes.cursor  # found again once PARTITION_START allows it
    assert not any(d.startswith("2014") for d in changes.facts["orders"])
    # The lake's settings decide by default (PARTITION_START, via Settings.from_env).
    monkeypatch.setenv("PARTITION_START", "2014-01-01")
    earlier = Settings.from_env(
        data_dir=local_settings.data_dir, lake_url=local_settings.lake_url, inbox_dir=local_settings.inbox_dir
    )
    monkeypatch.delenv("PARTITION_START")
    assert earlier.partition_start == "2014-01-01"
    changes = inbox_module.scan_changes(Lake.from_settings(earlier), local_settings.inbox_dir, None)
    assert changes.errors == [] and str(old) in changes.cursor
    assert {first, last} <= set(changes.facts["orders"])

    # Days after today (UTC) have no partition yet either.
    future = orders / "export-future.csv"
    _with_dates(orders / f"{DAY}.csv", future, "2026-01-0", "2099-10-0")
    old.unlink()
    [error] = inbox_module.scan_changes(lake, local_settings.inbox_dir, None).errors
    assert error.startswith(f"{future}: dates 2099-10-") and "after today" in error


def test_a_name_date_must_be_a_real_date(local_settings: Settings) -> None:
    assert inbox_module.name_date("orders/2026-02-30.csv") is None
    assert inbox_module.name_date("orders/2026-02-28.csv.gz") == "2026-02-28"
    orders = local_settings.inbox_dir / "orders"
    lake = Lake.from_settings(local_settings)
    # Rows with dates: the file goes by its most common row date, not by the name.
    misnamed = orders / "2026-02-30.csv"
    shutil.copyfile(orders / f"{DAY}.csv", misnamed)
    [entry] = inbox_module.InboxIndex(lake, local_settings.inbox_dir, TABLES["orders"]).entries(paths=[misnamed])
    assert entry.nominal_date == DAY and "2026-02-30" not in entry.dates
    # One ragged line and no date anywhere: refused by name.
    header = (orders / f"{DAY}.csv").read_bytes().split(b"\n")[0]
    misnamed.write_bytes(header + b"\nO-RAGGED,C001,not enough fields\n")
    changes = inbox_module.scan_changes(lake, local_settings.inbox_dir, None)
    assert changes.errors == [
        f"{misnamed}: no date to file it under: 2026-02-30 in its name is not a real date and no row has a "
        "created_at (1 line(s) could not be read); name the file for its day or fix its rows"
    ]
    assert set(changes.facts["orders"]) == set(DATES)


def _write_rows(path: Path, table: str, rows: list[dict[str, str]], extra: tuple[str, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=[*TABLES[table].file_columns, *extra])
        w.writeheader()
        w.writerows(rows)


def test_carrier_clients_may_leave_courier_vehicle_and_distance_empty(tmp_path: Path) -> None:
    """clients.operations = carrier exempts that client's deliveries from driver, vehicle and
    distance (contract.CARRIER_OPTIONAL), and only those columns; an own-fleet client's empty
    driver is still quarantined. A clients file without the header-optional column still lands."""
    inbox = tmp_path / "inbox"
    client = {
        "industry": "retail",
        "tier": "standard",
        "sla_hours": "48",
        "region": "north",
        "onboarded_on": "2025-01-01",
        "contact_email": "",
        "is_active": "true",
    }
    _write_rows(
        inbox / "clients" / "clients.csv",
        "clients",
        [
            {**client, "client_id": "SHIPCO", "name": "Ships via carrier", "operations": "carrier"},
            {**client, "client_id": "FLEET", "name": "Our fleet", "operations": ""},
        ],
        extra=("operations",),
    )
    _write_rows(
        inbox / "depots" / "depots.csv",
        "depots",
        [
            {
                "depot_id": "D1",
                "city": "Leeds",
                "region": "north",
                "lat": "53.8",
                "lon": "-1.5",
                "daily_capacity_parcels": "500",
                "opened_on": "2020-01-01",
            }
        ],
    )
    _write_rows(
        inbox / "drivers" / "drivers.csv",
        "drivers",
        [
            {
                "driver_id": "DR1",
                "depot_id": "D1",
                "full_name": "A",
                "hired_on": "2021-01-01",
                "employment_type": "employee",
                "license_class": "B",
            }
        ],
    )
    _write_rows(
        inbox / "vehicles" / "vehicles.csv",
        "vehicles",
        [
            {
                "vehicle_id": "V1",
                "depot_id": "D1",
                "vehicle_type": "van",
                "capacity_kg": "900",
                "fuel_type": "diesel",
                "registered_on": "2021-01-01",
            }
        ],
    )
    orders, deliveries = [], []
    for i, (cl, driver, vehicle, km, attempts) in enumerate(
        [
            ("SHIPCO", "", "", "", "1"),
            ("SHIPCO", "DR1", "V1", "4.5", "1"),
            ("SHIPCO", "", "", "", ""),
            ("FLEET", "", "V1", "3.0", "1"),
            ("FLEET", "DR1", "", "3.0", "1"),
            ("FLEET", "DR1", "V1", "", "1"),
            ("FLEET", "DR1", "V1", "2.0", "1"),
        ]
    ):
        orders.append(
            {
                "order_id": f"O{i}",
                "client_id": cl,
                "created_at": f"{DAY}T08:00:00Z",
                "promised_by": f"{DAY}T20:00:00Z",
                "pickup_depot_id": "D1",
                "dropoff_city": "Leeds",
                "dropoff_postcode": "",
                "dropoff_lat": "53.8",
                "dropoff_lon": "-1.5",
                "weight_kg": "2",
                "parcels": "1",
                "priority": "standard",
                "order_value": "10.00",
                "payment_method": "card",
            }
        )
        deliveries.append(
            {
                "delivery_id": f"X{i}",
                "order_id": f"O{i}",
                "client_id": cl,
                "driver_id": driver,
                "vehicle_id": vehicle,
                "dispatched_at": f"{DAY}T09:00:00Z",
                "delivered_at": f"{DAY}T10:00:00Z",
                "status": "delivered",
                "attempts": attempts,
                "distance_km": km,
                "failure_reason": "",
                "proof_of_delivery": "photo",
            }
        )
    _write_rows(inbox / "orders" / f"{DAY}.csv", "orders", orders)
    _write_rows(inbox / "deliveries" / f"{DAY}.csv", "deliveries", deliveries)

    settings = Settings.from_env(data_dir=tmp_path / "data", lake_url=str(tmp_path / "lake"), inbox_dir=inbox)
    lake = Lake.from_settings(settings)
    landing = Landing(lake, inbox, settings)
    for t in DIMENSIONS:
        landing.land_dimension(t)
    landing.land_fact(TABLES["orders"], {DAY: None})
    got = landing.land_fact(TABLES["deliveries"], {DAY: None})
    # SHIPCO: both empty-courier rows land, but the empty `attempts` is no carrier exemption
    # FLEET: each empty driver, vehicle or distance is quarantined, naming the column
    assert got.landed == 3  # X0, X1, X6
    assert got.by_reason == {
        "missing:attempts": 1,
        "missing:driver_id": 1,
        "missing:vehicle_id": 1,
        "missing:distance_km": 1,
    }
    landed = read_table(lake, "raw", "deliveries").to_pylist()
    assert sorted((r["delivery_id"], r["driver_id"], r["distance_km"]) for r in landed) == [
        ("X0", None, None),
        ("X1", "DR1", 4.5),
        ("X6", "DR1", 2.0),
    ]
    ops = {r["client_id"]: r["operations"] for r in read_table(lake, "raw", "clients").to_pylist()}
    assert ops == {"SHIPCO": "carrier", "FLEET": None}

    # the same clients without the column: every client is own-fleet, SHIPCO's empty courier is missing
    _write_rows(
        inbox / "clients" / "clients.csv",
        "clients",
        [{**client, "client_id": "SHIPCO", "name": "S"}, {**client, "client_id": "FLEET", "name": "F"}],
    )
    landing.land_dimension(TABLES["clients"])
    again = landing.land_fact(TABLES["deliveries"], {DAY: None})
    assert again.landed == 2 and again.by_reason["missing:driver_id"] == 3  # X0, X2 (its first reason), X3
