"""Source mappings (sources/*.yaml) proven on real third-party exports: validated against the contract
and the foreign files, rendered into the inbox, landed with the library's own landing, and checked
against figures computed from the foreign CSVs independently (Python's csv and zoneinfo, not DuckDB).

The exports live outside the repository (../shared/datasets, see its README); tests that need them
skip with a message saying where they were looked for.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest
import yaml

from delivery_lake.config import Settings
from delivery_lake.contract import DIMENSIONS, FACTS, PLACEHOLDERS, TABLES
from delivery_lake.inbox import InboxIndex, list_files, refused_files
from delivery_lake.landing import Landing, LandingReport, reconcile
from delivery_lake.sources import render as rendering
from delivery_lake.sources.audit import ForeignAccount, reconcile_foreign
from delivery_lake.sources.mapping import SOURCES_DIR, MappingError, foreign_header, load
from delivery_lake.sources.parsers import add_commands
from delivery_lake.sources.profile import checklist, draft
from delivery_lake.storage import Lake

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
OLIST = DATASETS / "olist_sample"
FOOD = DATASETS / "food_delivery_test.csv"
SAO_PAULO = ZoneInfo("America/Sao_Paulo")
KOLKATA = ZoneInfo("Asia/Kolkata")


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"real third-party dataset not found at {path} (see ../shared/datasets/README.md)")


def _inbox(tmp_path: Path, source: str, files: list[Path]) -> Path:
    """An inbox holding the foreign files under sources/<source>/ (links, nothing copied)."""
    inbox = tmp_path / "inbox"
    folder = inbox / "sources" / source
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f)
    return inbox


def _olist_inbox(tmp_path: Path) -> Path:
    _need(OLIST)
    return _inbox(tmp_path, "olist", sorted(OLIST.glob("*.csv")))


def _rendered_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _feed_files(inbox: Path) -> list[Path]:
    return sorted(p for t in TABLES for p in (inbox / t).glob("*") if (inbox / t).is_dir())


def _land(inbox: Path, tmp_path: Path) -> tuple[Lake, dict[str, LandingReport]]:
    """Every dimension, then every fact for every date its files touch (names carry no date)."""
    settings = Settings.from_env(data_dir=tmp_path / "data", lake_url=str(tmp_path / "lake"), inbox_dir=inbox)
    lake = Lake.from_settings(settings)
    landing = Landing(lake, inbox, settings)
    # a carrier client's source has no couriers or vehicles: those feeds are absent
    reports = {t.name: landing.land_dimension(t) for t in DIMENSIONS if list_files(inbox, t.name)}
    for t in FACTS:
        dates = sorted({d for e in InboxIndex(lake, inbox, t).entries() for d in e.dates})
        if dates:
            reports[t.name] = landing.land_fact(t, {d: None for d in dates})
    return lake, reports


def _reconciles(lake: Lake, inbox: Path) -> None:
    for t in TABLES.values():
        for path, counts in reconcile(lake, inbox, t).items():
            assert "error" not in counts, (path, counts)
            accounted = sum(v for k, v in counts.items() if k != "read")
            assert counts["read"] == accounted, (t.name, path, counts)


def _reconciles_foreign(lake: Lake, inbox: Path) -> dict[tuple[str, str], ForeignAccount]:
    """Every foreign record accounted for; the accounts by (foreign file name, feed)."""
    accounts = reconcile_foreign(inbox, {t.name: reconcile(lake, inbox, t) for t in TABLES.values()})
    assert accounts and all(a.ok for a in accounts), [a.describe() for a in accounts if not a.ok]
    return {(Path(a.foreign_file).name, a.feed): a for a in accounts}


def _landed_per_day(con: Any, lake: Lake) -> dict[str, int]:
    deliveries = lake.glob_uri("raw", "deliveries", True)
    sql = f"SELECT CAST(date AS VARCHAR), count(*) FROM read_parquet('{deliveries}', hive_partitioning=true) GROUP BY 1"
    return dict(con.execute(sql).fetchall())


def _foreign_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _record_lines(path: Path) -> dict[int, dict[str, str]]:
    """Each record of a CSV by the line it starts on (the header is line 1)."""
    out = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        start = 2
        for row in reader:
            out[start] = dict(row)
            start = reader.line_num + 1
    return out


def _utc(text: str, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> datetime:
    return datetime.strptime(text, fmt).replace(tzinfo=tz).astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("name", ["olist", "food_delivery"])
def test_mapping_validates_against_the_contract(name: str) -> None:
    mapping = load(name)
    assert mapping.source == name
    assert set(mapping.feeds) >= {"clients", "orders", "deliveries"}
    for feed in mapping.feeds.values():
        specs = feed.rows[0] if feed.rows else feed.columns
        # every contract column has a source but the computed one (which columns are stand-ins)
        assert set(specs) == set(feed.table.column_names) - {PLACEHOLDERS}, feed.name


@pytest.mark.parametrize(("name", "folder"), [("olist", OLIST), ("food_delivery", DATASETS)])
def test_mapping_validates_against_the_real_files(name: str, folder: Path) -> None:
    _need(folder)
    mapping = load(name, folder)
    assert rendering.check(mapping, folder) == []


BROKEN = {
    "unknown foreign column": (
        "dispatched_at: {sql: order_delivered_carrier_date,",
        "dispatched_at: {sql: order_handed_to_carrier,",
        "feed deliveries, column dispatched_at: olist_orders_dataset.csv has no column 'order_handed_to_carrier'",
    ),
    "constant of the wrong type": (
        "attempts: {constant: 1,",
        "attempts: {constant: once,",
        "feed deliveries, column attempts: constant 'once': does not convert to int",
    ),
    "expression of the wrong type": (
        "rating: review_score",
        "rating: review_id",
        "feed customer_feedback, column rating: ",
    ),
    "required column without a source": (
        '      proof_of_delivery: {constant: none, placeholder: "proof of delivery is not exported"}\n',
        "",
        "feed deliveries, column proof_of_delivery: no source",
    ),
    "value map onto a value the contract does not allow": (
        "shipped: in_transit",
        "shipped: on_the_way",
        "feed deliveries, column status: value map target for 'shipped' 'on_the_way': not allowed",
    ),
    "expression that does not parse": (
        "delivery_id: order_id",
        'delivery_id: "order_id +"',
        "feed deliveries, column delivery_id: does not parse as SQL",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_mapping_fails_before_anything_is_written(case: str, tmp_path: Path) -> None:
    inbox = _olist_inbox(tmp_path)
    old, new, expected = BROKEN[case]
    text = (SOURCES_DIR / "olist.yaml").read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "olist.yaml"
    broken.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(MappingError) as err:
        rendering.render(load(broken), inbox)
    assert f"{broken}: {expected}" in str(err.value)
    assert _feed_files(inbox) == []


def test_foreign_file_with_a_renamed_column_is_refused(tmp_path: Path) -> None:
    """The export changed after the mapping was written: refused by name, nothing rendered."""
    _need(OLIST)
    inbox = _inbox(tmp_path, "olist", [p for p in sorted(OLIST.glob("*.csv")) if p.name != "olist_orders_dataset.csv"])
    renamed = inbox / "sources" / "olist" / "olist_orders_dataset.csv"
    with open(OLIST / "olist_orders_dataset.csv", "rb") as src, open(renamed, "wb") as out:
        out.write(src.readline().replace(b"order_delivered_customer_date", b"order_delivered_to_customer_date"))
        for line in src:
            out.write(line)
    with pytest.raises(MappingError) as err:
        rendering.render(load("olist"), inbox)
    assert (
        "sources/olist.yaml: feed deliveries, column delivered_at: olist_orders_dataset.csv has no column "
        "'order_delivered_customer_date' (renamed? closest: 'order_delivered_to_customer_date')"
    ) in str(err.value)
    assert _feed_files(inbox) == []


@pytest.mark.parametrize("record", [42, 3000])  # in the sample the check reads; past it (found while writing)
def test_foreign_file_with_a_ragged_record_is_refused_by_file_and_record(record: int, tmp_path: Path) -> None:
    """A record with a field too many (an unquoted comma) cannot be read as the header says: the
    whole file is refused, naming it and the record, and nothing of the source is written (the
    feeds rendered before it included)."""
    _need(OLIST)
    inbox = _inbox(tmp_path, "olist", [p for p in sorted(OLIST.glob("*.csv")) if p.name != "olist_orders_dataset.csv"])
    ragged = inbox / "sources" / "olist" / "olist_orders_dataset.csv"
    lines = (OLIST / "olist_orders_dataset.csv").read_bytes().splitlines(keepends=True)
    assert rendering.SAMPLE_ROWS < 3000 < len(lines)
    lines[record - 1] = lines[record - 1].rstrip(b"\r\n") + b",Rua Augusta, 1500\n"
    ragged.write_bytes(b"".join(lines))
    with pytest.raises(MappingError) as err:
        rendering.render(load("olist"), inbox)
    message = str(err.value)
    assert f"{ragged}: record {record} (header = 1) has more fields than the header's 8" in message
    assert "refused whole and nothing of it lands" in message
    assert "Traceback" not in message and "Possible fixes" not in message
    assert _feed_files(inbox) == []
    assert [p for p in inbox.rglob("*") if p.is_file() and "sources" not in p.parts] == []  # no staged leftovers


# ---------------------------------------------------------------------------------------------
# Rendering


def test_render_is_idempotent_and_leaves_the_inbox_readable(tmp_path: Path) -> None:
    inbox = _olist_inbox(tmp_path)
    mapping = load("olist")
    first = rendering.render(mapping, inbox)
    assert all(r.changed for r in first)
    written = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in _feed_files(inbox)}
    assert {p.relative_to(inbox).as_posix() for p in written} == {
        f"{t}/olist--mapping.parquet" for t in ("clients", "depots")
    } | {
        "orders/olist--olist_orders_dataset.parquet",
        "deliveries/olist--olist_orders_dataset.parquet",
        "customer_feedback/olist--olist_order_reviews_dataset.parquet",
    }
    second = rendering.render(mapping, inbox)
    assert not any(r.changed for r in second)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in _feed_files(inbox)} == written
    # sidecars live beside the foreign files: no feed folder holds a file the inbox would refuse
    assert all(refused_files(inbox, t) == [] for t in TABLES)
    sidecars = rendering.read_sidecars(mapping, inbox)
    orders = sidecars["orders/olist--olist_orders_dataset.parquet"]
    assert orders["placeholders"]["order_value"]["rows"] == 4071 - 175  # orders without items in the sample
    assert orders["placeholders"]["priority"]["rows"] == 4071
    assert sidecars["deliveries/olist--olist_orders_dataset.parquet"]["rows_filtered_out"] == 60


def test_rendered_rows_point_to_the_foreign_line_and_are_utc(tmp_path: Path) -> None:
    inbox = _olist_inbox(tmp_path)
    rendering.render(load("olist"), inbox)
    # a quoted comment spanning lines: source_line is the line the record starts on
    starts: dict[tuple[str, str], int] = {}
    with open(OLIST / "olist_order_reviews_dataset.csv", newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        next(reader)
        end = reader.line_num
        for row in reader:
            starts[(row[0], row[1])] = end + 1
            end = reader.line_num
    assert max(starts.values()) > len(starts) + 1  # the file has multi-line records
    feedback = _rendered_rows(inbox / "customer_feedback" / "olist--olist_order_reviews_dataset.parquet")
    assert {(r["feedback_id"], r["order_id"]): r["source_line"] for r in feedback} == starts
    first = _rendered_rows(inbox / "orders" / "olist--olist_orders_dataset.parquet")[0]
    # 2017-10-02 10:56:33 in São Paulo (UTC-3); promised 2017-10-18, the whole day, in summer time (UTC-2)
    assert first["created_at"] == datetime(2017, 10, 2, 13, 56, 33, tzinfo=UTC)
    assert first["promised_by"] == datetime(2017, 10, 19, 1, 59, 59, tzinfo=UTC)
    assert (first["source_file"], first["source_line"]) == ("sources/olist/olist_orders_dataset.csv", 2)
    assert (first["_unparseable"], first["_raw_line"]) == (None, None)


# ---------------------------------------------------------------------------------------------
# Landing what was rendered


@pytest.mark.slow  # lands the real Olist sample: the full suite only
def test_olist_lands_reconciled_with_documented_quarantine_and_kpis(tmp_path: Path) -> None:
    inbox = _olist_inbox(tmp_path)
    rendering.render(load("olist"), inbox)
    lake, reports = _land(inbox, tmp_path)
    _reconciles(lake, inbox)
    accounts = _reconciles_foreign(lake, inbox)
    # the dirt the mapping's comments document, and nothing else
    assert reports["orders"].by_reason == {}
    assert reports["deliveries"].by_reason == {"rule:delivered_has_timestamp": 1}
    assert set(reports["customer_feedback"].by_reason) == {"orphan:order_id", "duplicate"}
    assert reports["customer_feedback"].by_reason["duplicate"] == 2

    orders = {r["order_id"]: r for r in _foreign_rows(OLIST / "olist_orders_dataset.csv")}
    reviews = _foreign_rows(OLIST / "olist_order_reviews_dataset.csv")
    rated_orders_in_sample = sum(r["order_id"] in orders for r in reviews)
    assert reports["customer_feedback"].landed == rated_orders_in_sample
    assert reports["orders"].landed == len(orders)

    # independent: a delivery per order the carrier has; on time = delivered by the end of the estimated day
    shipped = [o for o in orders.values() if o["order_delivered_carrier_date"]]
    per_day = Counter(_utc(o["order_delivered_carrier_date"], SAO_PAULO).date().isoformat() for o in shipped)
    on_time = sum(
        o["order_status"] == "delivered"
        and bool(o["order_delivered_customer_date"])
        and o["order_delivered_customer_date"][:10] <= o["order_estimated_delivery_date"][:10]
        for o in shipped
    )
    expected_rate = on_time / len(shipped)
    # the foreign orders file, counted on its own: every order once as an order; as a delivery
    # unless the carrier never had it (the mapping's filter)
    as_deliveries = accounts[("olist_orders_dataset.csv", "deliveries")]
    assert as_deliveries.records == len(orders)
    assert as_deliveries.filtered_out == len(orders) - len(shipped)
    assert (as_deliveries.landing["landed"], as_deliveries.landing["quarantined"]) == (len(shipped) - 1, 1)
    assert accounts[("olist_order_reviews_dataset.csv", "customer_feedback")].records == len(reviews)

    con = lake.duckdb()
    try:
        landed = _landed_per_day(con, lake)
        # the marts' definition (int_deliveries_enriched.is_on_time), over every delivery dispatched
        rate = con.execute(
            f"""SELECT avg(CASE WHEN d.status = 'delivered' AND d.delivered_at <= o.promised_by THEN 1 ELSE 0 END)
                FROM read_parquet('{lake.glob_uri("raw", "deliveries", True)}') d
                JOIN read_parquet('{lake.glob_uri("raw", "orders", True)}') o USING (order_id)"""
        ).fetchone()[0]
    finally:
        con.close()
    assert sum(landed.values()) >= 0.95 * len(shipped)
    assert sum(landed.values()) == len(shipped) - 1
    assert {d: n for d, n in per_day.items() if landed.get(d) != n} == {
        d: n for d, n in per_day.items() if landed.get(d) == n - 1
    }  # per day equal, but on the one day holding the quarantined delivery
    assert abs(rate - expected_rate) <= 0.005, (rate, expected_rate)

    # stand-ins, per column, counted in the landing's metadata: constants on every order; the
    # value where the items sample has no row for the order (independently: Python's csv)
    itemised = {r["order_id"] for r in _foreign_rows(OLIST / "olist_order_items_dataset.csv")}
    placeholders = reports["orders"].placeholders
    assert placeholders["weight_kg"] == placeholders["pickup_depot_id"] == len(orders)
    assert placeholders["order_value"] == placeholders["parcels"] == sum(o not in itemised for o in orders)
    assert "driver_id" not in reports["deliveries"].placeholders  # a carrier client: empty, not a stand-in
    assert reports["deliveries"].placeholders["attempts"] == reports["deliveries"].landed

    # quarantined rows keep what the client sent: the foreign file, its line, its values as they came
    con = lake.duckdb()
    try:
        q = con.execute(
            f"""SELECT delivery_id, _reason, _foreign_file, _foreign_line, _foreign_values
                FROM read_parquet('{lake.root}/quarantine/deliveries/**/*.parquet')"""
        ).fetchall()
        dupes = con.execute(
            f"""SELECT _foreign_line, _foreign_values
                FROM read_parquet('{lake.root}/quarantine/customer_feedback/**/*.parquet')
                WHERE _reason = 'duplicate'"""
        ).fetchall()
    finally:
        con.close()
    [(delivery_id, reason, foreign_file, foreign_line, values)] = q
    assert (reason, foreign_file) == ("rule:delivered_has_timestamp", "sources/olist/olist_orders_dataset.csv")
    as_sent = {k: v or None for k, v in orders[delivery_id].items()}  # an empty field reads null
    assert json.loads(values) == as_sent
    assert {k: v or None for k, v in _record_lines(OLIST / "olist_orders_dataset.csv")[foreign_line].items()} == as_sent
    review_lines = _record_lines(OLIST / "olist_order_reviews_dataset.csv")
    assert len(dupes) == 2
    for line, values in dupes:  # multi-line comments: the record starting on that line, whole
        assert json.loads(values) == {k: v or None for k, v in review_lines[line].items()}


@pytest.mark.slow  # lands a real 11k-row export: the full suite only
def test_food_delivery_lands_reconciled_with_documented_quarantine(tmp_path: Path) -> None:
    _need(FOOD)
    inbox = _inbox(tmp_path, "food_delivery", [FOOD])
    rendering.render(load("food_delivery"), inbox)
    lake, reports = _land(inbox, tmp_path)
    _reconciles(lake, inbox)
    accounts = _reconciles_foreign(lake, inbox)
    assert {a.records for a in accounts.values()} == {11399}  # one foreign file feeds every feed

    rows = _foreign_rows(FOOD)
    untimed = {r["ID"].strip() for r in rows if r["Time_Orderd"].strip() == "NaN"}

    def km(r: dict[str, str]) -> float:
        la1, lo1, la2, lo2 = (
            math.radians(float(r[c]))
            for c in (
                "Restaurant_latitude",
                "Restaurant_longitude",
                "Delivery_location_latitude",
                "Delivery_location_longitude",
            )
        )
        h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
        return 12742 * math.asin(math.sqrt(h))

    too_far = {r["ID"].strip() for r in rows if km(r) > 1500}
    assert reports["orders"].by_reason == {"missing:created_at": len(untimed)}
    assert reports["orders"].landed == len(rows) - len(untimed)
    deliveries = reports["deliveries"]
    assert deliveries.by_reason["range:distance_km"] == len(too_far)
    assert set(deliveries.by_reason) == {"range:distance_km", "orphan:order_id"}
    # a delivery of an order without time waits for it, then is an orphan
    assert deliveries.by_reason["orphan:order_id"] + deliveries.pending == len(untimed - too_far)
    assert deliveries.landed == len(rows) - len(untimed | too_far)
    assert reports["drivers"].landed == len({r["Delivery_person_ID"].strip() for r in rows})

    picked: Counter[str] = Counter()
    for r in rows:
        if r["ID"].strip() in untimed | too_far:
            continue
        day = datetime.strptime(r["Order_Date"], "%d-%m-%Y")
        t = datetime.strptime(r["Time_Order_picked"].strip(), "%H:%M:%S").time()
        if r["Time_Order_picked"].strip() < r["Time_Orderd"].strip():
            day += timedelta(days=1)  # picked up after midnight
        picked[datetime.combine(day.date(), t, KOLKATA).astimezone(UTC).date().isoformat()] += 1
    con = lake.duckdb()
    try:
        landed = _landed_per_day(con, lake)
    finally:
        con.close()
    assert landed == dict(picked)


# ---------------------------------------------------------------------------------------------
# The checklist and the draft


@pytest.mark.parametrize(
    ("name", "folder", "expected"),
    [
        (
            "olist",
            OLIST,
            ["lookup items: 175 of 4071 rows", "quarantined as duplicate", "rule:delivered_has_timestamp"],
        ),
        ("food_delivery", DATASETS, ["missing:created_at", "range:distance_km", "'NaN' x444"]),
    ],
)
def test_source_check_prints_a_checklist(name: str, folder: Path, expected: list[str]) -> None:
    _need(folder)
    result = checklist(SOURCES_DIR / f"{name}.yaml", folder)
    text = result.render()
    assert result.usable and not result.todo, text
    assert "Checklist:" in text and "[x]" in text and "[!]" in text
    for item in expected:
        assert item in text


def test_source_check_lists_what_a_mapping_lacks(tmp_path: Path) -> None:
    _need(OLIST)
    text = (SOURCES_DIR / "olist.yaml").read_text(encoding="utf-8")
    lacking = tmp_path / "olist.yaml"
    lacking.write_text(
        text.replace("delivered: delivered, shipped: in_transit, canceled: canceled", "delivered: delivered"),
        encoding="utf-8",
    )
    result = checklist(lacking, OLIST)
    assert result.usable
    assert any("column status: 'shipped' (43 rows) not allowed" in t and "value_maps" in t for t in result.todo), (
        result.todo
    )


def test_source_cli_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _need(OLIST)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    broken = tmp_path / "broken.yaml"
    broken.write_text("source: broken\ntimezone: Mars/Olympus\nfeeds: {}\n", encoding="utf-8")
    args = parser.parse_args(["source", "check", str(broken), "--sample", str(OLIST)])
    assert args.func(args) == 1
    assert "is not an IANA time zone" in capsys.readouterr().out
    out = tmp_path / "draft.yaml"
    args = parser.parse_args(["source", "init", "olist2", str(OLIST), "--out", str(out)])
    assert args.func(args) == 0
    assert out.exists()


def test_init_drafts_a_mapping_to_finish() -> None:
    _need(OLIST)
    text = draft("olist2", OLIST)
    doc = yaml.safe_load(text)
    assert doc["source"] == "olist2"
    assert doc["feeds"]["orders"]["from"] == "olist_orders_dataset.csv"
    assert doc["feeds"]["orders"]["columns"]["order_id"] == "order_id"
    assert doc["feeds"]["customer_feedback"]["from"] == "olist_order_reviews_dataset.csv"
    assert "TODO" in text
    assert foreign_header(OLIST / "olist_orders_dataset.csv")[0] == "order_id"


def test_run_renders_arrived_sources_and_names_a_folder_without_mapping(tmp_path: Path) -> None:
    from delivery_lake.sources.mapping import MappingError
    from delivery_lake.sources.render import arrived_clients, render_arrived

    inbox = _olist_inbox(tmp_path)
    assert arrived_clients(inbox) == {"OLIST": "olist"}
    # what an earlier version rendered as CSV would land the same rows a second time
    stale = inbox / "orders" / "olist--olist_orders_dataset.csv"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("order_id\nx\n")
    rendered = render_arrived(inbox)
    assert {r.feed for r in rendered} >= {"clients", "orders", "deliveries", "customer_feedback"}
    assert (inbox / "orders" / "olist--olist_orders_dataset.parquet").exists()
    assert list_files(inbox, "orders") == [inbox / "orders" / "olist--olist_orders_dataset.parquet"]
    (inbox / "sources" / "acme").mkdir()
    (inbox / "sources" / "acme" / "export.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MappingError, match=r"sources/acme: foreign files without a mapping"):
        render_arrived(inbox)


# ---------------------------------------------------------------------------------------------
# End to end through the Dagster definitions


@pytest.mark.slow  # the whole Olist history through `delivery-lake run` (~3-4 min): the full suite only
def test_olist_end_to_end_through_run(tmp_path: Path, run_cli: Any) -> None:
    """The foreign files dropped in the inbox, then `run`: rendered, landed, validated, curated,
    published and a delay model logged; the warehouse's KPIs equal the foreign CSVs'."""
    from delivery_lake.ml import registry
    from delivery_lake.warehouse import connect_read_only

    inbox = _olist_inbox(tmp_path)
    settings = Settings.from_env(
        data_dir=tmp_path / "data",
        lake_url=str(tmp_path / "lake"),
        inbox_dir=inbox,
        warehouse_path=str(tmp_path / "warehouse.duckdb"),
        partition_start="2016-01-01",
    )
    outcome = run_cli(settings)
    assert outcome.success, outcome.failure

    orders = {r["order_id"]: r for r in _foreign_rows(OLIST / "olist_orders_dataset.csv")}
    itemised = {r["order_id"] for r in _foreign_rows(OLIST / "olist_order_items_dataset.csv")}
    shipped = [o for o in orders.values() if o["order_delivered_carrier_date"]]
    on_time = sum(
        o["order_status"] == "delivered"
        and bool(o["order_delivered_customer_date"])
        and o["order_delivered_customer_date"][:10] <= o["order_estimated_delivery_date"][:10]
        for o in shipped
    )
    con = connect_read_only(settings.warehouse_path)
    try:
        n, rate, unpriced, stand_ins, distances = con.execute(
            """SELECT count(*), avg(is_on_time::INT), count_if(order_value IS NULL),
                      count_if(placeholder_columns LIKE '%attempts%'), count(distance_km)
               FROM fct_deliveries WHERE client_id = 'OLIST'"""
        ).fetchone()
        # the KPI mart against the fact on the days it has a row for (a day whose reviews are
        # blocked, rating orders outside the sample, is held back whole: no partial row)
        kpi = con.execute(
            """WITH k AS (SELECT * FROM agg_client_daily_kpis WHERE client_id = 'OLIST'),
                    f AS (SELECT date, count(*) AS n, count_if(is_on_time) AS on_time,
                                 count_if(order_value IS NULL) AS unpriced
                          FROM fct_deliveries WHERE client_id = 'OLIST' GROUP BY date)
               SELECT count(*), count_if(k.deliveries = f.n AND k.on_time = f.on_time
                                         AND k.unpriced_deliveries = f.unpriced)
               FROM k JOIN f USING (date)"""
        ).fetchone()
        by_driver = con.execute("SELECT count(*) FROM agg_driver_daily_performance").fetchone()[0]
        operations = con.execute("SELECT operations FROM dim_clients WHERE client_id = 'OLIST'").fetchone()[0]
    finally:
        con.close()
    assert n >= 0.95 * len(shipped)
    assert abs(rate - on_time / len(shipped)) <= 0.005, (rate, on_time / len(shipped))
    assert kpi[0] > 50 and kpi[0] == kpi[1], kpi
    # stand-ins are flagged and never counted as measured: no price where the items sample has none
    expected_unpriced = sum(o["order_id"] not in itemised for o in shipped)
    assert abs(unpriced - expected_unpriced) <= len(shipped) - n
    assert stand_ins == n and distances == 0  # attempts are a stand-in; a carrier has no distance of ours
    assert (operations, by_driver) == ("carrier", 0)  # the driver mart describes our couriers only
    # the delay model trained on the history and was logged
    c = registry.client(settings)
    versions = c.search_model_versions(f"name = '{registry.MODEL_NAME}'")
    assert versions, outcome.lines
    run = c.get_run(versions[0].run_id)
    assert int(run.data.params["n_train"]) > 1000
    assert "distance_km" in run.data.params["features_without_values"]


# ---------------------------------------------------------------------------------------------
# Timestamps without a declared format (synthetic sources: our generated orders under foreign names)


def _renamed_orders_source(tmp_path: Path, timezone: str, created: dict[int, str]) -> tuple[Path, Path]:
    """An inbox with generated dimensions and one day of generated orders as a foreign file (every
    column `ext_<name>`), the `created_at` of the records at the given 0-based positions replaced;
    and a mapping of it (renames only, no `format`) in the source's time zone."""
    from datetime import date

    from delivery_lake.generator import generate

    inbox = tmp_path / "inbox"
    generate(
        inbox, start=date(2025, 6, 1), days=1, clients=1, orders_per_day=40, seed=3, dirty_rate=0.0, progress=False
    )
    [native] = (inbox / "orders").glob("*.csv")
    with open(native, newline="") as fh:
        orders = list(csv.DictReader(fh))
    for feed in FACTS:  # the facts arrive through the mapping only
        for f in (inbox / feed.name).glob("*.csv"):
            f.unlink()
    for i, text in created.items():
        orders[i]["created_at"] = text
        orders[i]["promised_by"] = "2025-06-09T00:00:00Z"  # after every created_at here
    folder = inbox / "sources" / "renamed"
    folder.mkdir(parents=True)
    with open(inbox / "clients" / "clients.csv", newline="") as fh:
        clients = list(csv.DictReader(fh))
    (inbox / "clients" / "clients.csv").unlink()  # the export carries its clients
    for name, rows in (("orders.csv", orders), ("clients.csv", clients)):
        with open(folder / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=[f"ext_{k}" for k in rows[0]], lineterminator="\n")
            writer.writeheader()
            writer.writerows({f"ext_{k}": v for k, v in r.items()} for r in rows)
    lines = ["source: renamed", f"timezone: {timezone}", 'null_tokens: [""]', "trim: true"]
    lines += ["client: {column: ext_client_id}", "feeds:"]
    for feed, name in (("clients", "clients.csv"), ("orders", "orders.csv")):
        lines += [f"  {feed}:", f'    from: "{name}"', "    columns:"]
        lines += [f"      {c.name}: ext_{c.name}" for c in TABLES[feed].columns if not c.header_optional]
    mapping = tmp_path / "renamed.yaml"
    mapping.write_text("\n".join(lines) + "\n")
    return inbox, mapping


SHIFTED = {
    0: "2025-06-01 10:00:00",  # naive: local time in the source's zone
    1: "2025-06-01T10:00:00+02:00",  # an offset: that instant, whatever the source's zone
    2: "2025-06-01T10:00:00Z",
    3: " 2025-06-01 11:30:00 ",  # trimmed first
    4: "01/06/2025 10:00",  # no declared format: not a timestamp, quarantined as sent
}


def test_timestamps_without_a_format_honour_offsets_and_the_source_zone(tmp_path: Path) -> None:
    inbox, mapping = _renamed_orders_source(tmp_path, "America/Sao_Paulo", SHIFTED)
    rendering.render(load(mapping), inbox)
    rows = {r["source_line"] - 2: r for r in _rendered_rows(inbox / "orders" / "renamed--orders.parquet")}
    rendered = {i: r["created_at"] for i, r in rows.items()}
    # independently: zoneinfo and datetime.fromisoformat, not DuckDB
    expected = {
        0: _utc("2025-06-01 10:00:00", SAO_PAULO),
        1: datetime.fromisoformat("2025-06-01T10:00:00+02:00").astimezone(UTC),
        2: datetime(2025, 6, 1, 10, 0, tzinfo=UTC),
        3: _utc("2025-06-01 11:30:00", SAO_PAULO),
    }
    # 13:00Z, 08:00Z (the offset was dropped before: 13:00Z), 10:00Z, 14:30Z
    assert {i: rendered[i] for i in expected} == expected
    # not a timestamp: no value, the column named and the row kept as sent, for the landing to quarantine
    assert (rendered[4], rows[4]["_unparseable"]) == (None, "created_at")
    raw = next(csv.reader([rows[4]["_raw_line"]]))
    assert raw[list(rows[4]).index("created_at")] == "01/06/2025 10:00"
    assert raw[list(rows[4]).index("source_line")] == "6"


def test_utc_source_timestamps_land_like_our_own_feeds(tmp_path: Path) -> None:
    """A source in UTC needs no conversion: the text goes to the landing as it came, which reads it
    as it reads our feeds (an offset honoured, naive meaning UTC); a value that is not a timestamp
    is quarantined with its line and the foreign record."""
    inbox, mapping = _renamed_orders_source(tmp_path, "UTC", SHIFTED)
    rendering.render(load(mapping), inbox)
    with open(inbox / "sources" / "renamed" / "orders.csv", newline="") as fh:
        foreign = list(csv.DictReader(fh))
    lake, reports = _land(inbox, tmp_path)
    _reconciles(lake, inbox)
    assert reports["orders"].by_reason == {"unparseable:created_at": 1}
    assert reports["orders"].landed == len(foreign) - 1
    con = lake.duckdb()
    try:
        landed = dict(
            con.execute(
                f"SELECT order_id, created_at FROM read_parquet('{lake.glob_uri('raw', 'orders', True)}')"
            ).fetchall()
        )
        [(line, values)] = con.execute(
            f"SELECT _foreign_line, _foreign_values FROM read_parquet('{lake.root}/quarantine/orders/**/*.parquet')"
        ).fetchall()
    finally:
        con.close()
    ids = [r["ext_order_id"] for r in foreign]
    expected = {
        0: datetime(2025, 6, 1, 10, 0, tzinfo=UTC),
        1: datetime(2025, 6, 1, 8, 0, tzinfo=UTC),
        2: datetime(2025, 6, 1, 10, 0, tzinfo=UTC),
        3: datetime(2025, 6, 1, 11, 30, tzinfo=UTC),
    }
    assert {i: landed[ids[i]].astimezone(UTC) for i in expected} == expected
    assert line == 6  # header, then the records from line 2: the fifth record
    assert json.loads(values)["ext_created_at"] == "01/06/2025 10:00"


def test_render_reports_every_unreadable_file_and_leaves_nothing(tmp_path: Path) -> None:
    """Files render side by side: two broken files are both named, and neither they nor the good
    file leave anything in the inbox (the outputs appear together or not at all)."""
    inbox, mapping_path = _renamed_orders_source(tmp_path, "UTC", {})
    folder = inbox / "sources" / "renamed"
    good = (folder / "orders.csv").read_text().splitlines(keepends=True)
    for name, bad_record in (("orders-b.csv", 5), ("orders-c.csv", 9)):
        lines = list(good)
        lines[bad_record - 1] = lines[bad_record - 1].rstrip("\n") + ",one field too many\n"
        (folder / name).write_text("".join(lines))
    text = mapping_path.read_text().replace('from: "orders.csv"', 'from: "orders*.csv"')
    mapping_path.write_text(text)
    with pytest.raises(MappingError) as err:
        rendering.render(load(mapping_path), inbox)
    message = str(err.value)
    assert f"{folder / 'orders-b.csv'}: record 5 (header = 1) has more fields" in message
    assert f"{folder / 'orders-c.csv'}: record 9 (header = 1) has more fields" in message
    assert list((inbox / "orders").glob("*")) == []
    assert not (folder / rendering.RENDERED).exists()
