"""Column-level lineage of the table models: for each output column, the columns of the assets it
is computed from, read from the SQL by sqlglot (`sqlglot.lineage`).

Views are not assets: lineage walks through the views a table model compiles in (given to sqlglot
as `sources`) and stops at the nearest assets, a table model (`curated`, model) or a raw source
(`raw`, table). A Python model has no SQL: each output column named like a column of one of its
inputs (its refs, then its sources) is taken from that column, through views as for SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from delivery_lake.contract import TABLES
from delivery_lake.transform.base import HELD_CELLS, ZONE, Model, quote, source_view

if TYPE_CHECKING:
    from sqlglot import exp

# sqlglot is imported where it is used (see parse.py): a cached project never imports it.

# (layer, table, column): ("curated", "int_deliveries_enriched", "promised_by") or ("raw", "orders", "promised_by")
ColumnDep = tuple[str, str, str]


def _schema(models: Mapping[str, Model]) -> dict[str, dict[str, str]]:
    """The columns of every relation a model reads that is not a view: raw sources, table models
    and the runner's held cells (needed to expand `select *` and qualify columns)."""
    schema: dict[str, dict[str, str]] = {}
    for t, table in TABLES.items():
        cols = {c.name: c.duckdb_type for c in table.columns}
        if table.is_fact:
            cols["date"] = "DATE"
        schema[source_view("raw", t)] = cols
    schema[HELD_CELLS] = {"date": "DATE", "client_id": "VARCHAR"}
    for m in models.values():
        if not m.is_view:
            schema[m.name] = {c.name: c.type for c in m.columns}
    return schema


def _expand_struct_unnest(tree: exp.Expr) -> exp.Expr:
    """`unnest(f(struct_pack(a, b := x)))` as a projection yields one column per field, which
    sqlglot does not follow; rewrite it as `f(a) AS a, f(x) AS b` (same inputs per column)."""
    from sqlglot import exp

    for select in list(tree.find_all(exp.Select)):
        projections: list[exp.Expr] = []
        changed = False
        for p in select.expressions:
            struct = p.find(exp.Struct) if isinstance(p, exp.Explode) else None
            fields: list[tuple[str, exp.Expr]] = []
            for f in struct.expressions if struct is not None else []:
                if isinstance(f, exp.Column):
                    fields.append((f.name, f))
                elif isinstance(f, exp.PropertyEQ | exp.Alias):
                    fields.append((f.alias_or_name if isinstance(f, exp.Alias) else f.this.name, f.expression))
            if struct is None or len(fields) != len(struct.expressions):
                projections.append(p)
                continue
            changed = True
            for name, value in fields:
                one = p.this.copy()
                target = one.find(exp.Struct)
                assert target is not None
                target.replace(value.copy())
                projections.append(exp.alias_(one, name, quoted=True))
        if changed:
            select.set("expressions", projections)
    return tree


def _parse(sql: str) -> exp.Expr:
    import sqlglot

    return _expand_struct_unnest(sqlglot.parse_one(sql, read="duckdb"))


def _asset_of(relation: str, models: Mapping[str, Model]) -> tuple[str, str] | None:
    """The asset a relation read by lineage stands for: a raw source or a table model."""
    for t in TABLES:
        if relation == source_view("raw", t):
            return "raw", t
    if relation in models and not models[relation].is_view:
        return ZONE, relation
    return None  # held_cells: the runner's relation, not an asset


def _sql_lineage(sql: str, views: list[Model], models: Mapping[str, Model]) -> dict[str, list[ColumnDep]]:
    from sqlglot import exp
    from sqlglot.lineage import lineage

    sources: dict[str, Any] = {v.name: _parse(v.compiled_sql or "") for v in views}
    nodes = lineage(None, _parse(sql), schema=_schema(models), sources=sources, dialect="duckdb")
    assert isinstance(nodes, dict)
    out: dict[str, list[ColumnDep]] = {}
    for column, node in nodes.items():
        deps: list[ColumnDep] = []
        for n in node.walk():
            if n.downstream or not isinstance(n.source, exp.Table):
                continue
            asset = _asset_of(n.source.name, models)
            if asset is not None:
                deps.append((*asset, n.name.rpartition(".")[2]))
        out[column] = sorted(set(deps))
    return out


def _views_of(names: list[str], models: Mapping[str, Model]) -> list[Model]:
    """The views `names` compile in, transitively, in dependency (`models`) order."""
    seen: set[str] = set()
    stack = [n for n in names if models[n].is_view]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack += [r for r in models[n].refs if models[r].is_view]
    return [m for m in models.values() if m.name in seen]


def trace_column_lineage(models: Mapping[str, Model], name: str) -> dict[str, list[ColumnDep]]:
    """Output column of table model `name` -> the (layer, table, column) it is computed from,
    `models` being the described project in dependency order."""
    m = models[name]
    if m.language == "sql":
        return _sql_lineage(m.compiled_sql or "", _views_of(list(m.refs), models), models)
    inputs = [(r, {c.name for c in models[r].columns}) for r in m.refs]
    inputs += [(source_view(*s), set(_schema(models)[source_view(*s)])) for s in m.sources]
    picks = {}
    for c in m.columns:
        relation = next((r for r, cols in inputs if c.name in cols), None)
        if relation is not None:
            picks[c.name] = f"{quote(relation)}.{quote(c.name)}"
    if not picks:
        return {c.name: [] for c in m.columns}
    relations = list(dict.fromkeys(p.split(".")[0] for p in picks.values()))
    sql = f"SELECT {', '.join(f'{p} AS {quote(c)}' for c, p in picks.items())} FROM {', '.join(relations)}"
    found = _sql_lineage(sql, _views_of(list(m.refs), models), models)
    return {c.name: found.get(c.name, []) for c in m.columns}
