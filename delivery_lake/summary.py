"""What is in the lake, from the landing manifests (cheap: no data file is read)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from delivery_lake.config import Settings
from delivery_lake.contract import TABLES
from delivery_lake.storage import UNASSIGNED_CLIENT, Lake


def table_totals(lake: Lake, table: str) -> dict[str, Any]:
    pattern = "/**/*.json" if TABLES[table].is_fact else "/manifest.json"
    landed = quarantined = partitions = 0
    reasons: dict[str, int] = defaultdict(int)
    for path in lake.glob(lake.meta_path("landing", table) + pattern):
        doc = lake.read_json(path)
        landed += doc["landed"]
        quarantined += doc["quarantined"]
        partitions += doc.get("client") != UNASSIGNED_CLIENT
        for r, n in doc["by_reason"].items():
            reasons[r] += n
    return {
        "landed": landed,
        "quarantined": quarantined,
        "partitions": partitions,
        "by_reason": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
    }


LAST_DAY_KPIS = """
    SELECT k.client_id, c.client_name, k.deliveries, k.on_time_rate, k.avg_delivery_minutes, k.avg_rating, k.revenue
    FROM agg_client_daily_kpis AS k LEFT JOIN dim_clients AS c USING (client_id)
    WHERE k.date = (SELECT max(date) FROM agg_client_daily_kpis WHERE deliveries > 0)
    ORDER BY k.client_id
"""


def warehouse_kpis(settings: Settings) -> dict[str, Any] | None:
    """KPIs of the last day with deliveries, per client, read from the warehouse (None if absent)."""
    from delivery_lake.warehouse import WarehouseError, connect_read_only

    try:
        con = connect_read_only(settings.warehouse_path)
    except WarehouseError:
        return None
    try:
        last = con.execute("SELECT max(date) FROM agg_client_daily_kpis WHERE deliveries > 0").fetchone()[0]  # type: ignore[index]
        cur = con.execute(LAST_DAY_KPIS)
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        total, on_time = con.execute("SELECT count(*), avg(is_on_time::INT) FROM fct_deliveries").fetchone()  # type: ignore[misc]
    finally:
        con.close()
    return {"date": str(last), "clients": rows, "deliveries": total, "on_time_rate": on_time}


def kpi_section(kpis: dict[str, Any]) -> Any:
    """The warehouse KPIs as a rich table (the last day's on-time rate per client, first)."""
    from rich.table import Table as RichTable

    t = RichTable(
        title=f"Warehouse KPIs for {kpis['date']} (all days: {kpis['deliveries']:,} deliveries, "
        f"{(kpis['on_time_rate'] or 0):.1%} on time)"
    )
    for col in ("client", "deliveries", "on-time rate", "avg minutes to deliver", "avg rating", "revenue"):
        t.add_column(col, justify="left" if col == "client" else "right")
    for r in kpis["clients"]:
        t.add_row(
            f"{r['client_id']} {r['client_name'] or ''}".strip(),
            f"{r['deliveries']:,}",
            "-" if r["on_time_rate"] is None else f"{r['on_time_rate']:.1%}",
            "-" if r["avg_delivery_minutes"] is None else f"{r['avg_delivery_minutes']:.0f}",
            "-" if r["avg_rating"] is None else f"{r['avg_rating']:.2f}",
            f"{r['revenue']:,.2f}",
        )
    return t


def lake_summary(settings: Settings) -> dict[str, Any]:
    lake = Lake.from_settings(settings)
    from delivery_lake.quality import summary_section

    sections: list[Any] = [summary_section(settings)]  # validation results per table (quality gate)
    kpis = warehouse_kpis(settings)
    if kpis is not None:
        sections.append(kpi_section(kpis))  # the curated layer's KPIs (warehouse)
    from delivery_lake.ml.report import summary_section as model_section

    sections.append(model_section(settings))  # the serving delay model and its scores (MLflow)
    return {"lake": lake.url, "tables": {t: table_totals(lake, t) for t in TABLES}, "kpis": kpis, "sections": sections}
