"""Batch scoring: the `champion` model scores the latest validated day's deliveries.

Output: `{LAKE}/curated/fct_delivery_risk/date=D/data.parquet` with its build manifest, written
by the curated layer's one publisher (`delivery_lake.publish.publish_partition`: same order,
Parquet schema, sha256 and manifest as a model's partition) and declared to the warehouse as an
external table (`warehouse.publish_external_table`). Scoring does not touch the warehouse: the
warehouse asset depends on `ml/fct_delivery_risk` and loads it like a mart on its next refresh.
Every row names the model version and run that produced it, so a score can always be traced
back to its MLflow run.

The day scored is the latest feature partition not blocked by the quality gate: scores on
data that failed its checks would be served as if they were trustworthy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from delivery_lake.config import Settings
from delivery_lake.ml import features, registry, training
from delivery_lake.publish import publish_partition
from delivery_lake.storage import Lake, staging_dir

TABLE = "fct_delivery_risk"
ZONE = "curated"
# Bands for dispatchers: "high" is roughly twice the usual late rate or more.
HIGH_RISK = 0.5
MEDIUM_RISK = 0.25
DESCRIPTION = (
    "Probability that each delivery of the latest validated dispatch day arrives late, scored by the "
    "`champion` version of the MLflow model `delivery_delay`; model_version / model_run_id trace every row."
)
GRAIN = "one row per delivery_id of the scored dispatch date"
# (name, DuckDB type, description): the published file's columns, in order.
COLUMNS: list[tuple[str, str, str]] = [
    ("delivery_id", "VARCHAR", "Delivery key."),
    ("order_id", "VARCHAR", "Order delivered."),
    ("client_id", "VARCHAR", "Client of the order."),
    ("driver_id", "VARCHAR", "Courier."),
    ("depot_id", "VARCHAR", "Depot the parcels left from."),
    ("date", "DATE", "Dispatch date (UTC); the partition."),
    ("dispatched_at", "TIMESTAMP", "Left the depot (UTC)."),
    ("late_probability", "DOUBLE", "Predicted probability of not being delivered by the promise."),
    ("risk_band", "VARCHAR", f"high (>= {HIGH_RISK}), medium (>= {MEDIUM_RISK}) or low."),
    ("model_name", "VARCHAR", "Registered MLflow model."),
    ("model_version", "VARCHAR", "Registered model version that scored the row (the champion at scoring time)."),
    ("model_run_id", "VARCHAR", "MLflow run that trained that version."),
    ("scored_at", "TIMESTAMP WITH TIME ZONE", "When the score was computed (UTC)."),
]
COLUMN_DOCS = {n: doc for n, _, doc in COLUMNS}


@dataclass
class ScoringResult:
    date: str | None
    rows: int = 0
    model_version: str | None = None
    model_run_id: str | None = None
    mean_probability: float | None = None
    high_risk: int = 0
    skipped: str | None = None
    seconds: float = 0.0


def latest_scorable_date(lake: Lake) -> tuple[str | None, dict[str, list[str]]]:
    available = features.feature_dates(lake)
    blocked, _ = features.gate_exclusions(lake, available)
    usable = [d for d in available if d not in blocked]
    return (usable[-1] if usable else None), blocked


def score(lake: Lake, settings: Settings, day: str | None = None) -> ScoringResult:
    """Score `day` (default: the latest validated feature date) with the champion and publish
    the partition; the warehouse picks it up on its next refresh."""
    started = time.monotonic()
    blocked: dict[str, list[str]] = {}
    if day is None:
        day, blocked = latest_scorable_date(lake)
    if day is None:
        return ScoringResult(
            None,
            skipped="no validated feature partition to score" + (f" (blocked: {sorted(blocked)})" if blocked else ""),
        )
    champ = (
        registry.version_by_alias(registry.client(settings), registry.CHAMPION)
        if registry.store_exists(settings)
        else None
    )
    if champ is None:
        return ScoringResult(day, skipped="no champion model registered yet: train first")
    frame = features.drop_blocked_clients(features.read_features(lake, [day]), features.gate_exclusions(lake, [day])[1])
    if frame.is_empty():
        return ScoringResult(day, skipped=f"no feature rows for {day}")
    model = registry.load_model(f"models:/{registry.MODEL_NAME}@{registry.CHAMPION}")
    p = np.asarray(model.predict_proba(training.to_model_input(frame))[:, 1], dtype=np.float64)
    scored_at = datetime.now(UTC)
    out = frame.select(features.IDS).with_columns(
        pl.Series("late_probability", p),
        pl.Series("risk_band", np.where(p >= HIGH_RISK, "high", np.where(p >= MEDIUM_RISK, "medium", "low"))),
        pl.lit(registry.MODEL_NAME).alias("model_name"),
        pl.lit(str(champ.version)).alias("model_version"),
        pl.lit(champ.run_id).alias("model_run_id"),
        pl.lit(scored_at).alias("scored_at"),
    )
    result = ScoringResult(
        day,
        rows=out.height,
        model_version=str(champ.version),
        model_run_id=champ.run_id,
        mean_probability=float(p.mean()),
        high_risk=int((p >= HIGH_RISK).sum()),
    )
    _publish(lake, settings, out, day)
    result.seconds = round(time.monotonic() - started, 2)
    return result


def _publish(lake: Lake, settings: Settings, out: pl.DataFrame, day: str) -> None:
    """Stage the scores as Parquet, publish them as the `day` partition through the curated
    publisher, and (re)declare the table to the warehouse."""
    from delivery_lake.warehouse import publish_external_table

    casts = ", ".join(f'"{n}"::{t} AS "{n}"' for n, t, _ in COLUMNS)
    with staging_dir(settings) as stage:
        staged = stage / f"{TABLE}_{day}.scores.parquet"
        out.select([n for n, _, _ in COLUMNS]).write_parquet(staged)
        con = lake.duckdb()
        try:
            source = "'" + str(staged).replace("'", "''") + "'"
            con.execute(
                f"CREATE TEMP VIEW __out AS SELECT {casts} FROM read_parquet({source}, hive_partitioning = false)"
            )
            publish_partition(
                lake, con, ZONE, TABLE, day, [(n, t) for n, t, _ in COLUMNS], ["delivery_id"], settings, stage=stage
            )
        finally:
            con.close()
    publish_external_table(lake, TABLE, DESCRIPTION, COLUMNS, partition_by="date", grain=GRAIN)


def read_scores(settings: Settings) -> Any:
    """The warehouse's latest scores summary (None when absent): version, rows, band counts."""
    from delivery_lake.warehouse import WarehouseError, connect_read_only

    try:
        con = connect_read_only(settings.warehouse_path)
    except WarehouseError:
        return None
    try:
        if not con.execute(f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{TABLE}'").fetchone()[0]:  # type: ignore[index]
            return None
        row = con.execute(
            f"SELECT max(date)::VARCHAR, count(*), string_agg(DISTINCT model_version, ','), avg(late_probability), "
            f"count_if(risk_band = 'high') FROM {TABLE} WHERE date = (SELECT max(date) FROM {TABLE})"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return {"date": row[0], "rows": row[1], "model_version": row[2], "mean_probability": row[3], "high_risk": row[4]}
