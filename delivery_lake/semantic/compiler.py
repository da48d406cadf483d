"""Metric queries compiled to DuckDB SQL over the warehouse.

A `MetricQuery` names metrics, dimensions, filters and a date range; `compile_query` turns it
into one SELECT. Every identifier comes from the semantic layer and every value from the
question reaches the SQL as a quoted literal (`delivery_lake.sql`); the result is parsed back
with sqlglot, so what runs is always a single read query.

Ratios are `numerator / denominator`, both aggregated over the rows of each output group: the
on-time rate of a week is that week's on-time deliveries over that week's deliveries, and an
average is weighted by its rows, whatever the grain.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from delivery_lake.semantic.layer import Dimension, Metric, SemanticError, SemanticLayer
from delivery_lake.sql import ident, literal

MAX_LIMIT = 1000


@dataclass(frozen=True)
class MetricQuery:
    """A structured question: what (metrics), broken down by what (dimensions; `date` at
    `grain`), for which values (filters: dimension -> allowed keys), over which dates
    (inclusive), in which order and how many rows."""

    metrics: tuple[str, ...]
    group_by: tuple[str, ...] = ()
    grain: str = "day"
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    start: dt.date | None = None
    end: dt.date | None = None
    order_by: str | None = None
    descending: bool = True
    limit: int | None = None
    excluded: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    def filter_map(self) -> dict[str, tuple[str, ...]]:
        return dict(self.filters)


@dataclass(frozen=True)
class Compiled:
    sql: str
    columns: list[str]
    dimension_columns: list[str]
    metric_columns: list[str]


def _time_expr(alias: str, column: str, grain: str) -> str:
    col = f"{alias}.{ident(column)}"
    if grain == "day":
        return col
    return f"CAST(date_trunc({literal(grain)}, {col}) AS DATE)"


def _dimension_expr(layer: SemanticLayer, dim: Dimension, model: str) -> tuple[str, set[str]]:
    """The SQL of `dim` on `model`'s rows, and the joins it needs."""
    column = dim.columns.get(model)
    if column is None:
        metric_names = [m.name for m in layer.metrics.values() if m.model == model]
        raise SemanticError(
            f"{', '.join(metric_names)} cannot be broken down or filtered by {dim.name}: "
            f"the {model} model has no {dim.name}"
        )
    if "." in column:
        join, col = column.split(".", 1)
        return f"{ident(join)}.{ident(col)}", {join}
    return f"f.{ident(column)}", set()


def _on_fact(sql: str) -> str:
    """A metric expression with its columns qualified by the fact table's alias: a joined
    dimension table may have a column of the same name (depots' daily_capacity_parcels)."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    for column in tree.find_all(exp.Column):
        column.set("table", exp.to_identifier("f"))
    return tree.sql(dialect="duckdb")


def _metric_expr(metric: Metric) -> str:
    if metric.is_ratio:
        return f"CAST({_on_fact(str(metric.numerator))} AS DOUBLE) / NULLIF({_on_fact(str(metric.denominator))}, 0)"
    return _on_fact(str(metric.expr))


def _in_list(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(literal(v) for v in values) + ")"


def _model_cte(layer: SemanticLayer, q: MetricQuery, model_name: str, metrics: list[Metric]) -> str:
    model = layer.models[model_name]
    selects, group, joins = [], [], set()
    for name in q.group_by:
        dim = layer.dimension(name)
        if dim.time:
            expr = _time_expr("f", model.time, q.grain)
        else:
            expr, need = _dimension_expr(layer, dim, model_name)
            joins |= need
        selects.append(f"{expr} AS {ident(output_name(dim, q.grain))}")
        group.append(expr)
    selects += [f"{_metric_expr(m)} AS {ident(m.name)}" for m in metrics]
    where = []
    if q.start:
        where.append(f"f.{ident(model.time)} >= DATE {literal(q.start.isoformat())}")
    if q.end:
        where.append(f"f.{ident(model.time)} <= DATE {literal(q.end.isoformat())}")
    for name, values in (*q.filters, *q.excluded):
        expr, need = _dimension_expr(layer, layer.dimension(name), model_name)
        joins |= need
        negate = "NOT " if (name, values) in q.excluded else ""
        where.append(f"{expr} {negate}IN {_in_list(values)}")
    sql = f"SELECT {', '.join(selects)} FROM {ident(model.table)} AS f"
    for jname in sorted(joins):
        j = model.joins[jname]
        on = " AND ".join(f"f.{ident(a)} = {ident(jname)}.{ident(b)}" for a, b in j.on)
        sql += f" LEFT JOIN {ident(j.table)} AS {ident(jname)} ON {on}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if group:
        sql += " GROUP BY " + ", ".join(group)
    return sql


def output_name(dim: Dimension, grain: str) -> str:
    """The column a dimension is returned as: `date`, `week` or `month` for time."""
    if dim.time:
        return {"day": "date", "week": "week", "month": "month"}[grain]
    return dim.name


def compile_query(layer: SemanticLayer, q: MetricQuery) -> Compiled:
    if not q.metrics:
        raise SemanticError("a metric query needs at least one metric")
    if q.grain not in ("day", "week", "month"):
        raise SemanticError(f"unknown grain {q.grain!r}: day, week or month")
    if q.start and q.end and q.start > q.end:
        raise SemanticError(f"the date range starts after it ends ({q.start} > {q.end})")
    if q.limit is not None and not 0 < q.limit <= MAX_LIMIT:
        raise SemanticError(f"limit must be between 1 and {MAX_LIMIT}")
    if len(set(q.group_by)) != len(q.group_by):
        raise SemanticError("a dimension is repeated in the breakdown")
    metrics = [layer.metric(n) for n in q.metrics]
    if q.order_by and q.order_by not in q.metrics:
        raise SemanticError(f"cannot order by {q.order_by!r}: not among the metrics asked for")
    by_model: dict[str, list[Metric]] = {}
    for m in metrics:
        by_model.setdefault(m.model, []).append(m)
    dims = [layer.dimension(n) for n in q.group_by]
    dim_cols = [output_name(d, q.grain) for d in dims]

    ctes = [f"{ident('q_' + name)} AS ({_model_cte(layer, q, name, ms)})" for name, ms in sorted(by_model.items())]
    names = sorted(by_model)
    # Metrics of several models meet on the breakdown's values: a full join, so a group that
    # has deliveries but no feedback still shows (with no rating), and the other way round.
    source = ident("q_" + names[0])
    for other in names[1:]:
        if dim_cols:
            source += f" FULL OUTER JOIN {ident('q_' + other)} USING ({', '.join(ident(c) for c in dim_cols)})"
        else:
            source += f" CROSS JOIN {ident('q_' + other)}"
    select = [ident(c) for c in dim_cols]
    columns = list(dim_cols)
    label_joins = []
    for d, col in zip(dims, dim_cols, strict=True):
        if d.entity:
            alias = ident("label_" + d.name)
            select.append(f"{alias}.{ident(d.entity.name)} AS {ident(d.entity.name)}")
            columns.append(d.entity.name)
            label_joins.append(
                f" LEFT JOIN {ident(d.entity.table)} AS {alias} ON {alias}.{ident(d.entity.key)} = {ident(col)}"
            )
    select += [ident(m.name) for m in metrics]
    columns += [m.name for m in metrics]
    sql = f"WITH {', '.join(ctes)} SELECT {', '.join(select)} FROM {source}{''.join(label_joins)}"
    order = []
    if q.order_by:
        order.append(f"{ident(q.order_by)} {'DESC' if q.descending else 'ASC'} NULLS LAST")
    order += [f"{ident(c)} ASC NULLS LAST" for c in dim_cols]
    if order:
        sql += " ORDER BY " + ", ".join(order)
    if q.limit:
        sql += f" LIMIT {int(q.limit)}"
    tree = sqlglot.parse(sql, read="duckdb")
    if len(tree) != 1 or not isinstance(tree[0], exp.Select):
        raise SemanticError("internal: compiled metric query is not a single SELECT")
    return Compiled(
        sql=tree[0].sql(dialect="duckdb", pretty=True),
        columns=columns,
        dimension_columns=dim_cols,
        metric_columns=[m.name for m in metrics],
    )
