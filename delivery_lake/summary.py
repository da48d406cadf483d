"""What is in the lake, from the landing manifests (cheap: no data file is read), and which
raw partitions are blocked or pending (completeness.py, the rows of the warehouse's
`partition_status`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from delivery_lake.completeness import (
    BLOCKED,
    NONE,
    PENDING,
    PartitionStatus,
    fact_sources,
    partition_statuses,
    table_counts,
)
from delivery_lake.config import Settings
from delivery_lake.contract import TABLES
from delivery_lake.storage import UNASSIGNED_CLIENT, Lake


def table_totals(lake: Lake, table: str) -> dict[str, Any]:
    pattern = "/**/*.json" if TABLES[table].is_fact else "/manifest.json"
    counts = dict.fromkeys(("landed", "quarantined", "replayed", "superseded", "pending"), 0)
    partitions = 0
    reasons: dict[str, int] = defaultdict(int)
    placeholders: dict[str, int] = defaultdict(int)
    for path in lake.glob(lake.meta_path("landing", table) + pattern):
        doc = lake.read_json(path)
        for k in counts:
            # Manifests from before replays, corrections and pending rows lack those counts.
            counts[k] += int(doc.get(k) or 0)
        partitions += doc.get("client") != UNASSIGNED_CLIENT
        for r, n in doc["by_reason"].items():
            reasons[r] += n
        for col, n in (doc.get("placeholders") or {}).items():
            placeholders[col] += n
    return {
        **counts,
        "partitions": partitions,
        "by_reason": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        # landed rows per column holding a source mapping's stand-in value
        "placeholders": dict(sorted(placeholders.items())),
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


KPI_MART = "agg_client_daily_kpis"


def mark_incomplete(
    kpis: dict[str, Any], statuses: list[PartitionStatus], mart_sources: list[str] | None = None
) -> None:
    """Flag the last day's client cells that a blocked raw partition (served from nowhere) or a
    held mart cell leaves incomplete, and add the clients the mart left out: their figures would
    otherwise read as zero deliveries (or be missing) where the truth is "not known yet"."""
    rows = {r["client_id"]: r for r in kpis["clients"]}
    for p in statuses:
        if p.date != kpis["date"] or (mart_sources is not None and p.table not in mart_sources):
            continue
        why = []
        if p.status == BLOCKED and p.served == NONE:
            why.append(f"{p.table} blocked")
        if KPI_MART in p.held_in:
            why.append("held")
        if not why:
            continue
        row = rows.get(p.client)
        if row is None:
            row = rows[p.client] = {"client_id": p.client, "client_name": None, "missing": True}
            kpis["clients"].append(row)
        known = row.setdefault("incomplete", [])
        known += [w for w in why if w not in known]
    kpis["clients"].sort(key=lambda r: r["client_id"])


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
        if r.get("incomplete"):
            note = "INCOMPLETE: " + ", ".join(r["incomplete"])
            if r.get("missing"):
                t.add_row(f"{r['client_id']} {r['client_name'] or ''}".strip(), note, "-", "-", "-", "-")
                continue
            t.add_row(
                f"{r['client_id']} {r['client_name'] or ''}".strip(),
                f"{r['deliveries']:,} ({note})",
                "-" if r["on_time_rate"] is None else f"{r['on_time_rate']:.1%}",
                "-" if r["avg_delivery_minutes"] is None else f"{r['avg_delivery_minutes']:.0f}",
                "-" if r["avg_rating"] is None else f"{r['avg_rating']:.2f}",
                f"{r['revenue']:,.2f}",
            )
            continue
        t.add_row(
            f"{r['client_id']} {r['client_name'] or ''}".strip(),
            f"{r['deliveries']:,}",
            "-" if r["on_time_rate"] is None else f"{r['on_time_rate']:.1%}",
            "-" if r["avg_delivery_minutes"] is None else f"{r['avg_delivery_minutes']:.0f}",
            "-" if r["avg_rating"] is None else f"{r['avg_rating']:.2f}",
            f"{r['revenue']:,.2f}",
        )
    return t


def completeness(lake: Lake, project: Any = None) -> list[PartitionStatus]:
    """The partition statuses, computed as the warehouse's `partition_status` is (a mart's held
    cells only mark the tables it reads, which the model project tells)."""
    from delivery_lake.transform import Project

    return partition_statuses(lake, fact_sources(project or Project.load()))


def partition_lines(statuses: list[PartitionStatus]) -> list[str]:
    """One line per blocked or pending partition, blocked first."""
    order = {BLOCKED: 0, PENDING: 1}
    return [
        p.line()
        for p in sorted(
            (p for p in statuses if p.status in order), key=lambda p: (order[p.status], p.table, p.date, p.client)
        )
    ]


def lake_summary(settings: Settings) -> dict[str, Any]:
    lake = Lake.from_settings(settings)
    from delivery_lake.quality import summary_section
    from delivery_lake.transform import Project

    project = Project.load()
    statuses = completeness(lake, project)
    sections: list[Any] = [summary_section(settings)]  # validation results per table (quality gate)
    kpis = warehouse_kpis(settings)
    if kpis is not None:
        mark_incomplete(kpis, statuses, project.fact_sources(KPI_MART))
        sections.append(kpi_section(kpis))  # the curated layer's KPIs (warehouse)
    from delivery_lake.ml.report import summary_section as model_section

    sections.append(model_section(settings))  # the serving delay model and its scores (MLflow)
    return {
        "lake": lake.url,
        "tables": {t: table_totals(lake, t) for t in TABLES},
        "partitions": table_counts(statuses),
        "incomplete": partition_lines(statuses),
        "kpis": kpis,
        "sections": sections,
    }
