"""Delivery features: one row per delivery with only what is known when it leaves the depot.

Read from the curated marts (`fct_deliveries`, `agg_depot_daily_load`, `dim_clients`,
`dim_drivers`, `dim_vehicles`), built by DuckDB, published per dispatch date as
`{LAKE}/ml/delivery_features/date=D/data.parquet` (staged locally, then one atomic publish).

Leakage rules (the label is `is_late = not is_on_time`):
- Nothing about the delivery's own outcome (status, delivered_at, attempts, late minutes).
- Depot load is the day's dispatch plan (parcels leaving the depot that day / capacity):
  dispatch waves are planned from orders already received, so it is known at dispatch.
  The mart's `on_time_rate` of that day is an outcome and is never read.
- The driver's recent on-time rate uses deliveries dispatched in the previous
  `HISTORY_DAYS` days whose verdict was already known at the start of the dispatch day
  (delivered on time by then, or promise passed): a late parcel from yesterday that is
  still on the road does not count yet.
- Dimensions are current snapshots (tier, SLA, hire date, vehicle type change rarely).

`fct_deliveries` does not carry `dispatched_at`, `vehicle_id` or `parcels` (yet): those
three come from the raw deliveries/orders partitions the quality gate let through
(`_dispatch_details_sql`). When the mart gains them, that join is skipped automatically.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

import polars as pl

from delivery_lake import gate
from delivery_lake.config import Settings
from delivery_lake.storage import Lake, staging_dir

ZONE = "ml"
TABLE = "delivery_features"
FACT = "fct_deliveries"
DEPOT_LOAD = "agg_depot_daily_load"
HISTORY_DAYS = 7
# Orders are created up to two days before dispatch; three covers midnight crossings (as the marts do).
ORDER_LOOKBACK_DAYS = 3
DISPATCH_DETAILS = ("dispatched_at", "vehicle_id", "parcels")
# What a blocked partition of these tables means for a feature date: its rows are missing or
# untrusted, so depot load and the label mix of the whole date are biased.
GATED_RAW = ("deliveries", "orders")  # a blocked orders partition leaves its deliveries without promise or label
GATED_MARTS = (FACT, DEPOT_LOAD)

CATEGORICAL: tuple[str, ...] = ("priority", "client_tier", "vehicle_type")
NUMERIC: tuple[str, ...] = (
    "distance_km",
    "weight_kg",
    "parcels",
    "sla_hours",
    "hours_to_promise",
    "dispatch_hour",
    "dispatch_weekday",
    "depot_load",
    "driver_tenure_days",
    "driver_recent_deliveries",
    "driver_recent_on_time_rate",
)
FEATURES: tuple[str, ...] = CATEGORICAL + NUMERIC
IDS: tuple[str, ...] = ("delivery_id", "order_id", "client_id", "driver_id", "depot_id", "date", "dispatched_at")
LABEL = "is_late"


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _files(lake: Lake, uris: list[str]) -> str:
    return "[" + ", ".join(_lit(lake.uri(u)) for u in uris) + "]"


def _curated_dates(lake: Lake, model: str, first: str, last: str) -> list[str]:
    return [d for d in lake.list_dates("curated", model) if first <= d <= last]


def _raw_files(lake: Lake, table: str, first: str, last: str) -> list[str]:
    blocked = gate.blocked_partitions(lake, table)
    return [
        lake.data_file("raw", table, d, c)
        for d, c in lake.list_partitions("raw", table)
        if first <= d <= last and (d, c) not in blocked and (d, None) not in blocked
    ]


def _dispatch_details_sql(lake: Lake, first: str, last: str) -> str:
    """delivery_id -> dispatched_at, vehicle_id, parcels from gate-approved raw partitions.

    The switch point: this goes away once `fct_deliveries` carries these columns."""
    deliveries = _raw_files(lake, "deliveries", first, last)
    order_first = (date.fromisoformat(first) - timedelta(days=ORDER_LOOKBACK_DAYS)).isoformat()
    orders = _raw_files(lake, "orders", order_first, last)
    if not deliveries:
        return "SELECT NULL::VARCHAR AS delivery_id, NULL::TIMESTAMP AS dispatched_at, NULL::VARCHAR AS vehicle_id, NULL::BIGINT AS parcels WHERE false"
    parcels = (
        f"""SELECT order_id, parcels FROM read_parquet({_files(lake, orders)}, hive_partitioning = false)
            QUALIFY row_number() OVER (PARTITION BY order_id ORDER BY created_at DESC) = 1"""
        if orders
        else "SELECT NULL::VARCHAR AS order_id, NULL::BIGINT AS parcels WHERE false"
    )
    return f"""
        SELECT d.delivery_id, d.dispatched_at, d.vehicle_id, o.parcels
        FROM read_parquet({_files(lake, deliveries)}, hive_partitioning = false) AS d
        LEFT JOIN ({parcels}) AS o USING (order_id)
        QUALIFY row_number() OVER (PARTITION BY d.delivery_id ORDER BY d.dispatched_at DESC) = 1
    """


def features_sql(lake: Lake, dates: list[str], con: Any) -> str | None:
    """The feature query for `dates` (None when fct_deliveries has none of them)."""
    first, last = min(dates), max(dates)
    hist_first = (date.fromisoformat(first) - timedelta(days=HISTORY_DAYS)).isoformat()
    fct_dates = _curated_dates(lake, FACT, hist_first, last)
    if not any(d in fct_dates for d in dates):
        return None
    fct = _files(lake, [lake.data_file("curated", FACT, d) for d in fct_dates])
    fct_cols = {str(r[0]) for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({fct}, hive_partitioning = false)").fetchall()}
    if all(c in fct_cols for c in DISPATCH_DETAILS):
        target_from = "fct AS f"
    else:
        present = ", ".join(f'"{c}"' for c in DISPATCH_DETAILS if c in fct_cols)
        mart = f"(SELECT * EXCLUDE ({present}) FROM fct)" if present else "fct"
        target_from = f"{mart} AS f LEFT JOIN ({_dispatch_details_sql(lake, first, last)}) AS x USING (delivery_id)"
    load_dates = _curated_dates(lake, DEPOT_LOAD, first, last)
    load = (
        f"SELECT date, depot_id, capacity_utilization FROM read_parquet({_files(lake, [lake.data_file('curated', DEPOT_LOAD, d) for d in load_dates])}, hive_partitioning = false)"
        if load_dates
        else "SELECT NULL::DATE AS date, NULL::VARCHAR AS depot_id, NULL::DOUBLE AS capacity_utilization WHERE false"
    )
    dim = {n: _lit(lake.uri(lake.data_file("curated", n))) for n in ("dim_clients", "dim_drivers", "dim_vehicles")}
    in_dates = ", ".join(f"DATE {_lit(d)}" for d in dates)
    return f"""
    WITH fct AS (SELECT * FROM read_parquet({fct}, hive_partitioning = false)),
    target AS (SELECT * FROM {target_from} WHERE f.date IN ({in_dates})),
    history AS (
        -- When the verdict became known: at delivery if on time, else when the promise passed.
        SELECT driver_id, date, is_on_time, least(coalesce(delivered_at, promised_by), promised_by) AS known_at
        FROM fct WHERE is_on_time IS NOT NULL
    ),
    driver_days AS (
        SELECT t.date, t.driver_id, count(h.driver_id) AS n, avg(h.is_on_time::DOUBLE) AS rate
        FROM (SELECT DISTINCT date, driver_id FROM target) AS t
        LEFT JOIN history AS h
            ON h.driver_id = t.driver_id AND h.date >= t.date - {HISTORY_DAYS} AND h.date < t.date
            AND h.known_at < t.date::TIMESTAMP
        GROUP BY ALL
    )
    SELECT
        t.delivery_id, t.order_id, t.client_id, t.driver_id, t.depot AS depot_id, t.date, t.dispatched_at,
        coalesce(t.priority, 'unknown') AS priority,
        coalesce(c.tier, 'unknown') AS client_tier,
        coalesce(v.vehicle_type, 'unknown') AS vehicle_type,
        t.distance_km::DOUBLE AS distance_km,
        t.weight_kg::DOUBLE AS weight_kg,
        t.parcels::DOUBLE AS parcels,
        c.sla_hours::DOUBLE AS sla_hours,
        date_diff('second', t.dispatched_at, t.promised_by) / 3600.0 AS hours_to_promise,
        hour(t.dispatched_at)::DOUBLE AS dispatch_hour,
        (isodow(t.dispatched_at) - 1)::DOUBLE AS dispatch_weekday,
        l.capacity_utilization::DOUBLE AS depot_load,
        date_diff('day', dr.hired_on, t.date)::DOUBLE AS driver_tenure_days,
        coalesce(dd.n, 0)::DOUBLE AS driver_recent_deliveries,
        dd.rate AS driver_recent_on_time_rate,
        (NOT t.is_on_time) AS {LABEL}
    FROM target AS t
    LEFT JOIN read_parquet({dim["dim_clients"]}) AS c USING (client_id)
    LEFT JOIN read_parquet({dim["dim_drivers"]}) AS dr USING (driver_id)
    LEFT JOIN read_parquet({dim["dim_vehicles"]}) AS v USING (vehicle_id)
    LEFT JOIN ({load}) AS l ON l.date = t.date AND l.depot_id = t.depot
    LEFT JOIN driver_days AS dd ON dd.date = t.date AND dd.driver_id = t.driver_id
    """


def build_features(lake: Lake, settings: Settings | None, dates: Iterable[str]) -> dict[str, int]:
    """Build and publish the feature partitions of `dates`; returns rows per date written.

    A date with no fct_deliveries partition is skipped (nothing was dispatched, or not built yet)."""
    wanted = sorted(set(dates))
    if not wanted:
        return {}
    out: dict[str, int] = {}
    con = lake.duckdb()
    try:
        sql = features_sql(lake, wanted, con)
        if sql is None:
            return {}
        con.execute(f"CREATE TEMP TABLE __features AS {sql}")
        counts = dict(con.execute("SELECT date::VARCHAR, count(*) FROM __features GROUP BY ALL").fetchall())
        with staging_dir(settings) as stage:
            for d in wanted:
                if d not in counts:
                    continue
                local = stage / f"{d}.parquet"
                con.execute(
                    f"COPY (SELECT * FROM __features WHERE date = DATE {_lit(d)} ORDER BY delivery_id) "
                    f"TO {_lit(str(local))} (FORMAT parquet, COMPRESSION zstd)"
                )
                lake.publish_file(local, lake.data_file(ZONE, TABLE, d), move=True)
                out[d] = int(counts[d])
    finally:
        con.close()
    return out


def feature_dates(lake: Lake) -> list[str]:
    return lake.list_dates(ZONE, TABLE)


def read_features(lake: Lake, dates: Iterable[str]) -> pl.DataFrame:
    """Feature rows of `dates` (only those published), one frame."""
    have = set(feature_dates(lake))
    files = [lake.data_file(ZONE, TABLE, d) for d in sorted(set(dates)) if d in have]
    if not files:
        return pl.DataFrame()
    con = lake.duckdb()
    try:
        return con.sql(f"SELECT * FROM read_parquet({_files(lake, files)}, hive_partitioning = false)").pl()
    finally:
        con.close()


def blocked_dates(lake: Lake, dates: Iterable[str]) -> dict[str, list[str]]:
    """date -> why none of its features may be trained on or scored (see `gate_exclusions`)."""
    return gate_exclusions(lake, dates)[0]


def gate_exclusions(lake: Lake, dates: Iterable[str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """What the quality gate takes out of the feature dates `dates`:

    - whole dates (date -> reasons): a mart of that date failed its checks, the raw date was
      blocked as a whole, or every client's deliveries partition of that date was blocked;
    - client partitions (date -> clients): that client's rows of that date are dropped, the
      rest of the date is used. Excluding the whole date for one client's bad partition would,
      with many clients, exclude nearly every date; the cost is a slightly understated depot
      load on that date (the curated layer already left those rows out of the marts).
    """
    wanted = set(dates)
    whole: dict[str, list[str]] = {}
    clients: dict[str, set[str]] = {}
    for table in GATED_RAW:
        for d, c in gate.blocked_partitions(lake, table):
            if d not in wanted:
                continue
            if c is None:
                whole.setdefault(d, []).append(f"raw.{table} failed its blocking checks")
            else:
                clients.setdefault(d, set()).add(c)
    landed: dict[str, set[str]] = {}
    for d, c in lake.list_partitions("raw", "deliveries"):
        landed.setdefault(d, set()).add(c)
    for d, blocked in clients.items():
        if landed.get(d) and landed[d] <= blocked:
            whole.setdefault(d, []).append(f"raw deliveries of every client ({', '.join(sorted(blocked))}) failed their blocking checks")
    for model in GATED_MARTS:
        for d, _ in gate.blocked_partitions(lake, model):
            if d in wanted:
                whole.setdefault(d, []).append(f"curated.{model} failed its blocking checks")
    partial = {d: sorted(c) for d, c in sorted(clients.items()) if d not in whole}
    return {d: whole[d] for d in sorted(whole)}, partial


def drop_blocked_clients(frame: pl.DataFrame, partial: dict[str, list[str]]) -> pl.DataFrame:
    """Rows of (date, client) partitions the gate blocked, removed."""
    if not partial or frame.is_empty():
        return frame
    blocked = pl.DataFrame(
        [(date.fromisoformat(d), c) for d, cs in partial.items() for c in cs], schema={"date": pl.Date, "client_id": pl.Utf8}, orient="row"
    )
    return frame.join(blocked, on=["date", "client_id"], how="anti")
