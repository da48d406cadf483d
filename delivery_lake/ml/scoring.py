"""Batch scoring: the `champion` model scores the latest validated day's deliveries.

Output: `{LAKE}/curated/fct_delivery_risk/date=D/data.parquet` with its build manifest,
declared to the warehouse as an external table (`warehouse.publish_external_table`), then a
warehouse refresh swaps in a new file holding it. Every row names the model version and run
that produced it, so a score can always be traced back to its MLflow run.

The day scored is the latest feature partition not blocked by the quality gate: scores on
data that failed its checks would be served as if they were trustworthy.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from delivery_lake.config import Settings
from delivery_lake.ml import features, registry, training
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
COLUMN_DOCS = {
    "delivery_id": "Delivery key.",
    "order_id": "Order delivered.",
    "client_id": "Client of the order.",
    "driver_id": "Courier.",
    "depot_id": "Depot the parcels left from.",
    "date": "Dispatch date (UTC); the partition.",
    "dispatched_at": "Left the depot (UTC).",
    "late_probability": "Predicted probability of not being delivered by the promise.",
    "risk_band": f"high (>= {HIGH_RISK}), medium (>= {MEDIUM_RISK}) or low.",
    "model_name": "Registered MLflow model.",
    "model_version": "Registered model version that scored the row (the champion at scoring time).",
    "model_run_id": "MLflow run that trained that version.",
    "scored_at": "When the score was computed (UTC).",
}


@dataclass
class ScoringResult:
    date: str | None
    rows: int = 0
    model_version: str | None = None
    model_run_id: str | None = None
    mean_probability: float | None = None
    high_risk: int = 0
    skipped: str | None = None
    warehouse_rows: int | None = None
    seconds: float = 0.0


def latest_scorable_date(lake: Lake) -> tuple[str | None, dict[str, list[str]]]:
    available = features.feature_dates(lake)
    blocked, _ = features.gate_exclusions(lake, available)
    usable = [d for d in available if d not in blocked]
    return (usable[-1] if usable else None), blocked


def score(lake: Lake, settings: Settings, day: str | None = None, refresh_warehouse: bool = True) -> ScoringResult:
    started = time.monotonic()
    blocked: dict[str, list[str]] = {}
    if day is None:
        day, blocked = latest_scorable_date(lake)
    if day is None:
        return ScoringResult(None, skipped="no validated feature partition to score" + (f" (blocked: {sorted(blocked)})" if blocked else ""))
    champ = registry.version_by_alias(registry.client(settings), registry.CHAMPION) if registry.store_exists(settings) else None
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
    if refresh_warehouse:
        result.warehouse_rows = _refresh_warehouse(lake, settings)
    result.seconds = round(time.monotonic() - started, 2)
    return result


def _publish(lake: Lake, settings: Settings, out: pl.DataFrame, day: str) -> None:
    from delivery_lake.warehouse import publish_external_table

    con = lake.duckdb()
    try:
        con.register("__scores", out.to_arrow())
        con.execute(
            "CREATE TEMP TABLE __out AS SELECT delivery_id::VARCHAR AS delivery_id, order_id::VARCHAR AS order_id, "
            "client_id::VARCHAR AS client_id, driver_id::VARCHAR AS driver_id, depot_id::VARCHAR AS depot_id, "
            "date::DATE AS date, dispatched_at::TIMESTAMP AS dispatched_at, late_probability::DOUBLE AS late_probability, "
            "risk_band::VARCHAR AS risk_band, model_name::VARCHAR AS model_name, model_version::VARCHAR AS model_version, "
            "model_run_id::VARCHAR AS model_run_id, scored_at::TIMESTAMPTZ AS scored_at FROM __scores"
        )
        columns = [(str(r[0]), str(r[1])) for r in con.execute("DESCRIBE __out").fetchall()]
        with staging_dir(settings) as stage:
            local = stage / f"{TABLE}_{day}.parquet"
            con.execute(f"COPY (SELECT * FROM __out ORDER BY delivery_id) TO '{local}' (FORMAT parquet, COMPRESSION zstd)")
            digest = hashlib.sha256(local.read_bytes()).hexdigest()
            size = lake.publish_file(local, lake.data_file(ZONE, TABLE, day), move=True)
    finally:
        con.close()
    # Same manifest shape as the curated runner's, so the warehouse reloads only what changed.
    lake.write_json(
        lake.build_manifest(ZONE, TABLE, day),
        {
            "model": TABLE,
            "date": day,
            "rows": out.height,
            "bytes": size,
            "sha256": digest,
            "build_id": uuid.uuid4().hex,
            "built_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "excluded_partitions": {},
            "columns": [list(c) for c in columns],
        },
    )
    publish_external_table(
        lake, TABLE, DESCRIPTION, [(n, t, COLUMN_DOCS.get(n, "")) for n, t in columns], partition_by="date",
        grain="one row per delivery_id of the scored dispatch date",
    )


def _refresh_warehouse(lake: Lake, settings: Settings) -> int:
    from delivery_lake.models import Project
    from delivery_lake.warehouse import Warehouse

    report = Warehouse(lake, Project.load(), settings.warehouse_path).refresh()
    return next((t.rows for t in report.tables if t.table == TABLE), 0)


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
