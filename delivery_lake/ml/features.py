"""Delivery features: one row per delivery with only what is known when it leaves the depot.

Read from the curated layer only (`CURATED_INPUTS`): `int_deliveries_enriched` (each delivery
with its order attributes, already filtered by the quality gate and without held cells) for the
dates built and the `HISTORY_DAYS` before them, and the dimension snapshots `dim_clients`,
`dim_drivers`, `dim_depots`, `dim_vehicles`. No raw partition is read and no gate filter or
order dedupe is repeated here: the curated runner did both. `assets/ml.py` declares exactly these
inputs as the Dagster deps of `ml/delivery_features`. Built by DuckDB, published per dispatch date
as `{LAKE}/ml/delivery_features/date=D/data.parquet` (staged locally, then one atomic publish).

Leakage rules (the label is `is_late = not is_on_time`):
- Nothing about the delivery's own outcome (status, delivered_at, attempts, late minutes).
- Depot load is the day's dispatch plan (parcels leaving the depot that day / its capacity in
  `dim_depots`): dispatch waves are planned from orders already received, so it is known at
  dispatch. The day's on-time rate is an outcome and is never read.
- The driver's recent on-time rate uses deliveries dispatched in the previous
  `HISTORY_DAYS` days whose verdict was already known at the start of the dispatch day
  (delivered on time by then, or promise passed): a late parcel from yesterday that is
  still on the road does not count yet.
- Dimensions are current snapshots (tier, SLA, hire date, vehicle type change rarely).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import polars as pl

from delivery_lake import gate
from delivery_lake.config import Settings
from delivery_lake.publish import ONE_ROW_GROUP, stage_dates
from delivery_lake.storage import Lake, Mirror, staging_dir

ZONE = "ml"
TABLE = "delivery_features"
HISTORY_DAYS = 7
# Up to this many dates, lake files and verdicts are asked for by date instead of listed whole.
FEW_DAYS = 31
# The curated table every feature row comes from (one row per delivery, partitioned by dispatch date).
SOURCE = "int_deliveries_enriched"
# Kept for callers that list the dates features can be built for (assets.run._run_ml).
FACT = SOURCE
DIMENSIONS = ("dim_clients", "dim_drivers", "dim_depots", "dim_vehicles")
# Everything the features read, as curated model -> days read before the date built (None: an
# unpartitioned snapshot). The Dagster deps of `ml/delivery_features` are generated from this.
CURATED_INPUTS: dict[str, int | None] = {SOURCE: HISTORY_DAYS, **dict.fromkeys(DIMENSIONS)}
# What a blocked partition of these tables means for a feature date (training and scoring
# leave it out, `gate_exclusions`): its rows are missing or untrusted, so depot load and the
# label mix of the whole date are biased. These are gate verdicts, not reads: the features
# themselves only read what the curated layer let through.
GATED_RAW = ("deliveries", "orders")  # a blocked orders partition leaves its deliveries without promise or label
# The marts' suites check what the features read: fct_deliveries is a projection of
# int_deliveries_enriched, agg_depot_daily_load's capacity_utilization is the depot load.
GATED_MARTS = ("fct_deliveries", "agg_depot_daily_load")

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


def _files(mirror: Mirror, paths: list[str]) -> str:
    # on S3 the files are fetched together first (storage.Mirror): DuckDB would read each one
    # through fsspec in turn, a size request and then its reads
    return "[" + ", ".join(_lit(u) for u in mirror.uris(paths)) + "]"


def source_dates(lake: Lake, dates: list[str]) -> list[str]:
    """The built `SOURCE` partitions the features of `dates` read: those dates and the
    `HISTORY_DAYS` before them (the window `assets/ml.py` declares)."""
    first = date.fromisoformat(min(dates)) - timedelta(days=HISTORY_DAYS)
    span = (date.fromisoformat(max(dates)) - first).days
    if span > FEW_DAYS:
        return [d for d in lake.list_dates("curated", SOURCE) if first.isoformat() <= d <= max(dates)]
    # a few days (a day's features): asked for by name rather than listing the mart's history
    window = [(first + timedelta(days=k)).isoformat() for k in range(span + 1)]
    files = {lake.data_file("curated", SOURCE, d): d for d in window}
    return sorted(files[f] for f in lake.existing(list(files)))


def features_sql(lake: Lake, dates: list[str], mirror: Mirror) -> str | None:
    """The feature query for `dates` (None when `SOURCE` has none of them built), reading the
    lake's files through `mirror`."""
    read = source_dates(lake, dates)
    if not set(read) & set(dates):
        return None
    files = [lake.data_file("curated", SOURCE, d) for d in read]
    dim = {n: _files(mirror, [lake.data_file("curated", n)]) for n in DIMENSIONS}
    in_dates = ", ".join(f"DATE {_lit(d)}" for d in dates)
    return f"""
    WITH deliveries AS (SELECT * FROM read_parquet({_files(mirror, files)}, hive_partitioning = false)),
    target AS (
        SELECT *,
            -- The day's dispatch plan of the depot (what agg_depot_daily_load sums): every
            -- delivery of that date leaving it, the curated layer's rows.
            CASE WHEN depot_id IS NOT NULL THEN sum(parcels) OVER (PARTITION BY date, depot_id) END AS depot_parcels
        FROM deliveries WHERE date IN ({in_dates})
    ),
    history AS (
        -- When the verdict became known: at delivery if on time, else when the promise passed.
        SELECT driver_id, date, is_on_time, least(coalesce(delivered_at, promised_by), promised_by) AS known_at
        FROM deliveries WHERE is_on_time IS NOT NULL
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
        t.delivery_id, t.order_id, t.client_id, t.driver_id, t.depot_id, t.date, t.dispatched_at,
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
        (t.depot_parcels / dp.daily_capacity_parcels)::DOUBLE AS depot_load,
        date_diff('day', dr.hired_on, t.date)::DOUBLE AS driver_tenure_days,
        coalesce(dd.n, 0)::DOUBLE AS driver_recent_deliveries,
        dd.rate AS driver_recent_on_time_rate,
        (NOT t.is_on_time) AS {LABEL}
    FROM target AS t
    LEFT JOIN read_parquet({dim["dim_clients"]}) AS c USING (client_id)
    LEFT JOIN read_parquet({dim["dim_drivers"]}) AS dr USING (driver_id)
    LEFT JOIN read_parquet({dim["dim_vehicles"]}) AS v USING (vehicle_id)
    LEFT JOIN read_parquet({dim["dim_depots"]}) AS dp USING (depot_id)
    LEFT JOIN driver_days AS dd ON dd.date = t.date AND dd.driver_id = t.driver_id
    """


def build_features(lake: Lake, settings: Settings | None, dates: Iterable[str]) -> dict[str, int]:
    """Build and publish the feature partitions of `dates`; returns rows per date written.

    A date with no `SOURCE` partition is skipped (nothing was dispatched, or not built yet)."""
    wanted = sorted(set(dates))
    if not wanted:
        return {}
    out: dict[str, int] = {}
    con = lake.duckdb()
    try:
        with staging_dir(settings) as stage:
            sql = features_sql(lake, wanted, Mirror(lake, stage / "inputs"))
            if sql is None:
                return {}
            con.execute(f"CREATE TEMP TABLE __features AS {sql}")
            counts = dict(con.execute("SELECT date::VARCHAR, count(*) FROM __features GROUP BY ALL").fetchall())
            # Hundreds of dates (a history's backfill) are staged by one partitioned COPY: a COPY
            # per date cost 1.2 s over 685 dates. A date it did not write as one file gets its own.
            small = {d: int(counts[d]) for d in wanted if 0 < counts.get(d, 0) <= ONE_ROW_GROUP}
            columns = [str(r[0]) for r in con.execute("DESCRIBE __features").fetchall()]
            staged = stage_dates(
                con,
                "SELECT * FROM __features WHERE date::VARCHAR IN "
                f"({', '.join(map(_lit, small))}) ORDER BY date, delivery_id",
                "date",
                small,
                columns,
                stage / "dates",
            )
            for d in wanted:
                if d not in counts:
                    continue
                local = staged.get(d)
                if local is None:
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


def dates_reading(lake: Lake, curated_dates: Iterable[str], to_be_built: Iterable[str] = ()) -> set[str]:
    """The feature dates to rebuild when the `SOURCE` partitions of `curated_dates` changed: each
    of those dates and the `HISTORY_DAYS` after it (their driver history reads it), where the
    source is built (or, `to_be_built`, will be by the same run as the features)."""
    built = set(lake.list_dates("curated", FACT)) | set(to_be_built)
    return {
        (date.fromisoformat(d) + timedelta(days=k)).isoformat() for d in curated_dates for k in range(HISTORY_DAYS + 1)
    } & built


def feature_dates(lake: Lake) -> list[str]:
    return lake.list_dates(ZONE, TABLE)


def read_features(lake: Lake, dates: Iterable[str]) -> pl.DataFrame:
    """Feature rows of `dates` (only those published), one frame."""
    wanted = sorted(set(dates))
    if len(wanted) > FEW_DAYS:
        have = set(feature_dates(lake))
        files = [lake.data_file(ZONE, TABLE, d) for d in wanted if d in have]
    else:
        files = sorted(lake.existing([lake.data_file(ZONE, TABLE, d) for d in wanted]))
    if not files:
        return pl.DataFrame()
    con = lake.duckdb()
    try:
        with staging_dir(lake.settings) as stage:
            return con.sql(
                f"SELECT * FROM read_parquet({_files(Mirror(lake, stage), files)}, hive_partitioning = false)"
            ).pl()
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
    # a few dates: only their verdicts and partitions are read, not the tables' whole history
    few = sorted(wanted) if len(wanted) <= FEW_DAYS else None
    whole: dict[str, list[str]] = {}
    clients: dict[str, set[str]] = {}
    for table in GATED_RAW:
        for d, c in gate.blocked_partitions(lake, table, few):
            if d not in wanted:
                continue
            if c is None:
                whole.setdefault(d, []).append(f"raw.{table} failed its blocking checks")
            else:
                clients.setdefault(d, set()).add(c)
    landed: dict[str, set[str]] = {}
    for d, c in lake.list_partitions("raw", "deliveries", few):
        landed.setdefault(d, set()).add(c)
    for d, blocked in clients.items():
        if landed.get(d) and landed[d] <= blocked:
            whole.setdefault(d, []).append(
                f"raw deliveries of every client ({', '.join(sorted(blocked))}) failed their blocking checks"
            )
    for model in GATED_MARTS:
        for d, _ in gate.blocked_partitions(lake, model, few):
            if d in wanted:
                whole.setdefault(d, []).append(f"curated.{model} failed its blocking checks")
    partial = {d: sorted(c) for d, c in sorted(clients.items()) if d not in whole}
    return {d: whole[d] for d in sorted(whole)}, partial


def drop_blocked_clients(frame: pl.DataFrame, partial: dict[str, list[str]]) -> pl.DataFrame:
    """Rows of (date, client) partitions the gate blocked, removed."""
    if not partial or frame.is_empty():
        return frame
    blocked = pl.DataFrame(
        [(date.fromisoformat(d), c) for d, cs in partial.items() for c in cs],
        schema={"date": pl.Date, "client_id": pl.Utf8},
        orient="row",
    )
    return frame.join(blocked, on=["date", "client_id"], how="anti")
