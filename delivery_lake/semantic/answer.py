"""Running metric queries on the warehouse, read-only, with the caveats an answer needs.

The connection is `warehouse.open_reader`'s: read-only and without access to any other file.
Caveats come from `partition_status`, the completeness table the quality gate publishes: a
partition in the asked range that is blocked, pending, or left out of a mart makes the numbers
partial, and the answer says so instead of showing a quietly smaller total.
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from delivery_lake.semantic.compiler import Compiled, MetricQuery, compile_query
from delivery_lake.semantic.layer import SemanticLayer
from delivery_lake.sql import ident, literal
from delivery_lake.warehouse import STATUS_TABLE, file_fingerprint, open_reader

# Raw fact tables behind each model's rows: their partitions' completeness is the model's.
MODEL_SOURCES = {
    "deliveries": ("orders", "deliveries"),
    "feedback": ("customer_feedback",),
    "depot_load": ("orders", "deliveries"),
    "risk": ("orders", "deliveries"),
}


@dataclass
class Answer:
    columns: list[str]
    rows: list[list[Any]]
    sql: str
    caveats: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "sql": self.sql, "caveats": self.caveats}


def plain(value: Any) -> Any:
    """JSON-ready: numbers as numbers, dates as ISO strings."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def build_id(path: Path | str) -> str:
    """Identifies the warehouse file currently published (a refresh swaps in a new file, so
    inode and times change): part of every cache key."""
    fp = file_fingerprint(Path(path))
    return "-".join(str(fp.get(k)) for k in sorted(fp))


def table_columns(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'main'"
    ).fetchall():
        out.setdefault(str(table), set()).add(str(column))
    return out


def caveats(
    con: duckdb.DuckDBPyConnection, layer: SemanticLayer, q: MetricQuery, tables: dict[str, set[str]]
) -> list[str]:
    notes: list[str] = []
    models = sorted({layer.metric(m).model for m in q.metrics})
    for model in models:
        table = layer.models[model].table
        if table not in tables:
            notes.append(f"{table} is not in the warehouse yet (for {model} metrics): no rows to answer from")
    if STATUS_TABLE not in tables:
        return notes
    sources = sorted({s for m in models for s in MODEL_SOURCES.get(m, ())})
    if not sources:
        return notes
    where = ["table_name IN (" + ", ".join(literal(s) for s in sources) + ")"]
    params: list[Any] = []
    if q.start:
        where.append("date >= ?")
        params.append(q.start)
    if q.end:
        where.append("date <= ?")
        params.append(q.end)
    clients = q.filter_map().get("client")
    if clients:
        where.append("client_id IN (" + ", ".join("?" for _ in clients) + ")")
        params += list(clients)
    rows = con.execute(
        f"""SELECT status, count(*), count(DISTINCT date), min(date), max(date), sum(pending_rows)
            FROM {STATUS_TABLE}
            WHERE {" AND ".join(where)} AND (status IN ('blocked', 'pending') OR held_in IS NOT NULL)
            GROUP BY status ORDER BY status""",
        params,
    ).fetchall()
    for status, parts, days, first, last, pending in rows:
        span = f"{first}" if first == last else f"{first} to {last}"
        if status == "blocked":
            notes.append(
                f"{parts} partition(s) on {days} day(s) ({span}) were blocked by the quality gate: "
                "their rows are not counted, so totals for those days are partial"
            )
        elif status == "pending":
            notes.append(
                f"{parts} partition(s) on {days} day(s) ({span}) hold {pending} row(s) waiting for their orders: "
                "not counted yet"
            )
        else:
            notes.append(f"{parts} partition(s) on {days} day(s) ({span}) are left out of some marts (held back)")
    if q.start or q.end:
        model_tables = [layer.models[m].table for m in models if layer.models[m].table in tables]
        if model_tables:
            span = " UNION ALL ".join(
                f'SELECT min("date") AS lo, max("date") AS hi FROM {ident(t)}' for t in model_tables
            )
            lo, hi = con.execute(f"SELECT min(lo), max(hi) FROM ({span})").fetchone() or (None, None)
            if lo is None:
                notes.append("the warehouse holds no dates for these metrics yet")
            else:
                if q.start and q.start < lo:
                    notes.append(f"the warehouse's data starts on {lo}: nothing before it is counted")
                if q.end and q.end > hi:
                    notes.append(f"the warehouse's data ends on {hi}: nothing after it is counted")
    return notes


def run_query(
    layer: SemanticLayer, q: MetricQuery, warehouse: Path | str, con: duckdb.DuckDBPyConnection | None = None
) -> Answer:
    """Compile `q` and run it on the warehouse file, read-only."""
    compiled: Compiled = compile_query(layer, q)
    own = con is None
    reader = open_reader(warehouse) if con is None else con
    try:
        tables = table_columns(reader)
        notes = caveats(reader, layer, q, tables)
        missing = [layer.models[layer.metric(m).model].table for m in q.metrics]
        if any(t not in tables for t in missing):
            return Answer(compiled.columns, [], compiled.sql, notes)
        rows = [[plain(v) for v in row] for row in reader.execute(compiled.sql).fetchall()]
    finally:
        if own:
            reader.close()
    if not rows:
        notes.append("no rows match: nothing was dispatched or submitted for this selection in the range")
    return Answer(compiled.columns, rows, compiled.sql, notes)
