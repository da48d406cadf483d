"""The mapping language: how a foreign export becomes the contract's feeds, declared in YAML.

A mapping (`sources/<name>.yaml`) names the source, its time zone, the text that means "no value"
and, per contract feed it feeds, the foreign file(s), the side files joined to them, a row filter
and one entry per contract column:

    source: olist
    timezone: America/Sao_Paulo      # naive foreign timestamps are local time there
    null_tokens: ["", "NaN"]         # compared after trimming
    trim: true
    delimiter: ","                   # optional, "," by default
    client:                          # the source is one client ...
      id: OLIST
      row: {name: Olist, industry: retail, operations: carrier, ...}  # ... its row in the clients feed
    # or `client: {column: <SQL>}`: a foreign column carries the client (map `clients` yourself)
    feeds:
      orders:
        from: olist_orders_dataset.csv               # glob, relative to INBOX_DIR/sources/<source>/
        lookups:
          items:                                     # referenced as items.<aggregate>
            from: olist_order_items_dataset.csv
            key: order_id                            # side file column ...
            on: order_id                             # ... equal to this expression over the main file
            aggregates:
              value: {sum: price}                    # first | count | sum, over side file columns
              seller: {first: seller_id, order_by: order_item_id}
        filter: order_delivered_carrier_date IS NOT NULL    # which rows become this feed's rows
        distinct_on: Delivery_person_ID              # one row per value (the first line), for dimensions
        value_maps:
          status: {shipped: in_transit}              # foreign value -> contract value (others pass through)
        columns:
          order_id: order_id                         # SQL over the foreign columns
          created_at: {sql: order_purchase_timestamp, format: "%Y-%m-%d %H:%M:%S"}
          # no `format`: ISO 8601 text; a value with an offset (Z, +02:00) is that instant, a
          # naive one is local time in `timezone`
          promised_by: {sql: order_estimated_delivery_date, format: "%Y-%m-%d %H:%M:%S", end_of_day: true}
          dispatched_at: {date: Order_Date, time: Time_Order_picked, format: "%d-%m-%Y %H:%M:%S"}
          weather: {sql: Weatherconditions, strip_prefix: "conditions "}
          order_value: {sql: items.value, default: 0, placeholder: "why, where the lookup finds nothing"}
          priority: {constant: standard, placeholder: "why the source has no such column"}
        extra: {...}                                 # non-contract columns carried along (not landed)
      depots:                                        # a feed with no foreign file: constant rows
        placeholder: "why the source has none"
        row: {depot_id: OLIST-NONE, ...}

Every contract column of a mapped feed must be declared (a nullable one as `{constant: null}`), except
`client_id` of a fact, which `client.id` fills, header-optional columns (empty when left out) and
`placeholder_columns`, which the rendering computes per row from the `placeholder:` declarations (a
constant always, a default where the source gave nothing); the landing counts stand-ins per column
and the marts leave stand-in measures out of sums and means. A client that ships through a carrier
(`operations: carrier`) may map driver_id, vehicle_id and distance_km to `{constant: null}`
(contract.CARRIER_OPTIONAL) rather than invent a courier. Everything that can be checked without the data is
checked when the mapping is loaded (`load`); given the folder of foreign files, the columns each
expression reads are checked against the files' headers as well. Every problem is reported at once,
each naming the mapping file, the feed and the column.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlglot
import yaml
from rapidfuzz import process
from sqlglot import exp

from delivery_lake.contract import PLACEHOLDERS, TABLES, Column, Table, optional_for_carrier
from delivery_lake.inbox import compression

REPO = Path(__file__).resolve().parents[2]
SOURCES_DIR = REPO / "sources"
AGGREGATES = ("first", "count", "sum")
_TOP_KEYS = {"source", "description", "timezone", "null_tokens", "trim", "delimiter", "client", "feeds"}
_FEED_KEYS = {
    "from",
    "lookups",
    "filter",
    "distinct_on",
    "value_maps",
    "columns",
    "extra",
    "placeholder",
    "row",
    "rows",
}
_COLUMN_KEYS = {"sql", "constant", "placeholder", "default", "format", "date", "time", "end_of_day", "strip_prefix"}
_LOOKUP_KEYS = {"from", "key", "on", "aggregates"}


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes/no/on/off as booleans, which
    turns a lookup's `on:` key, or a foreign vocabulary's `No` and `Yes`, into True and False."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class MappingError(ValueError):
    """A mapping that cannot be used; `problems` holds one line per problem, each naming file, feed and column."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ColumnSpec:
    """How one output column is made. Exactly one of `sql`, `constant`, `date`+`time` is the source."""

    name: str
    sql: str | None = None
    is_constant: bool = False
    constant: str | None = None  # converted to the contract's text form
    placeholder: str | None = None  # why a stand-in value is used (constant, or default where the source is null)
    default: str | None = None
    format: tuple[str, ...] = ()
    date: str | None = None
    time: str | None = None
    end_of_day: bool = False
    strip_prefix: str | None = None
    value_map: dict[str, str] = field(default_factory=dict)

    @property
    def expressions(self) -> list[str]:
        return [e for e in (self.sql, self.date, self.time) if e is not None]


@dataclass(frozen=True)
class Aggregate:
    name: str
    func: str  # first | count | sum
    sql: str
    order_by: str | None = None


@dataclass(frozen=True)
class Lookup:
    name: str
    from_: str
    key: str
    on: str
    aggregates: tuple[Aggregate, ...]


@dataclass(frozen=True)
class Feed:
    name: str
    table: Table
    from_: str | None  # None: constant rows (`rows`)
    columns: dict[str, ColumnSpec] = field(default_factory=dict)
    rows: tuple[dict[str, ColumnSpec], ...] = ()
    extra: dict[str, ColumnSpec] = field(default_factory=dict)
    lookups: tuple[Lookup, ...] = ()
    filter: str | None = None
    distinct_on: str | None = None
    placeholder: str | None = None

    @property
    def is_constant(self) -> bool:
        return self.from_ is None

    def placeholders(self) -> dict[str, ColumnSpec]:
        """Columns holding stand-in values, with their specs (the whole feed's, for a placeholder feed)."""
        specs = self.rows[0] if self.rows else self.columns
        # an empty value (constant null) is no stand-in: it says nothing, and reads as missing
        return {
            n: s
            for n, s in specs.items()
            if s.placeholder
            or (self.placeholder and n != self.table.key and not (s.is_constant and s.constant is None))
        }


@dataclass(frozen=True)
class Mapping:
    path: Path
    label: str  # how errors name the file: relative to the repository when inside it
    source: str
    timezone: str
    null_tokens: tuple[str, ...]
    trim: bool
    delimiter: str
    feeds: dict[str, Feed]
    client_id: str | None = None
    client_sql: str | None = None

    @property
    def carrier(self) -> bool:
        """Whether its clients may ship through a carrier (declared `operations: carrier`, or
        clients from a foreign column, where the landing decides per client)."""
        if self.client_sql is not None:
            return True
        clients = self.feeds.get("clients")
        spec = clients.rows[0].get("operations") if clients and clients.rows else None
        return spec is not None and spec.constant == "carrier"

    def folder(self, inbox: Path) -> Path:
        """Where the source's foreign files arrive."""
        return Path(inbox) / "sources" / self.source


def mapping_path(name_or_path: str | Path) -> Path:
    """`olist` -> sources/olist.yaml of this repository; a path is taken as it is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        return p
    return SOURCES_DIR / f"{p}.yaml"


def label_of(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# Loading


class _Problems:
    def __init__(self, label: str):
        self.label = label
        self.items: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.items.append(f"{self.label}: {where}: {msg}" if where else f"{self.label}: {msg}")


def load(path: str | Path, folder: Path | None = None) -> Mapping:
    """Read and check a mapping file; with `folder`, check it against the foreign files there too."""
    path = mapping_path(path)
    label = label_of(path)
    if not path.exists():
        raise MappingError([f"{label}: mapping file not found"])
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise MappingError([f"{label}: not valid YAML ({exc})"]) from None
    if not isinstance(doc, dict):
        raise MappingError([f"{label}: expected a mapping with source, timezone and feeds"])
    problems = _Problems(label)
    mapping = _build(path, label, doc, problems)
    if not problems.items:
        _check_expressions(mapping, problems)
    if not problems.items and folder is not None:
        check_headers(mapping, Path(folder), problems)
    if problems.items:
        raise MappingError(problems.items)
    return mapping


def _build(path: Path, label: str, doc: dict, problems: _Problems) -> Mapping:
    for k in sorted(set(doc) - _TOP_KEYS):
        problems.add("", f"unknown key {k!r} (expected {', '.join(sorted(_TOP_KEYS))})")
    source = str(doc.get("source") or "")
    if not source or not source.replace("_", "").replace("-", "").isalnum():
        problems.add("", "`source` must be a name of letters, digits, '_' or '-' (it names inbox files)")
    tz = str(doc.get("timezone") or "")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        problems.add("", f"timezone {tz!r} is not an IANA time zone (e.g. America/Sao_Paulo, UTC)")
    tokens = doc.get("null_tokens", [""])
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        problems.add("", "null_tokens must be a list of quoted strings")
        tokens = []
    trim = doc.get("trim", True)
    if not isinstance(trim, bool):
        problems.add("", "trim must be true or false")
    delimiter = str(doc.get("delimiter", ","))
    client = doc.get("client") or {}
    feeds_doc = doc.get("feeds") or {}
    if not isinstance(feeds_doc, dict) or not feeds_doc:
        problems.add("", "`feeds` must map contract feeds (" + ", ".join(TABLES) + ") to their sources")
        feeds_doc = {}
    client_id = client_sql = None
    feeds: dict[str, Feed] = {}
    # a carrier client (clients.operations) may leave contract.CARRIER_OPTIONAL columns empty; with
    # clients from a foreign column, the landing decides per client
    operations = (client.get("row") or {}).get("operations") if isinstance(client, dict) else None
    carrier = operations == "carrier" or (isinstance(client, dict) and "column" in client)
    if not isinstance(client, dict) or not ({"id", "column"} & set(client)):
        problems.add("client", "declare `client: {id: ..., row: {...}}` or `client: {column: <SQL>}`")
    elif "id" in client:
        client_id = str(client["id"])
        row = dict(client.get("row") or {})
        if "clients" in feeds_doc:
            problems.add("feed clients", "the clients feed comes from `client.row`; do not map it twice")
        row.setdefault("client_id", client_id)
        feeds["clients"] = _feed("clients", {"row": row}, None, problems)
    else:
        client_sql = str(client["column"])
        if "clients" not in feeds_doc:
            problems.add("feed clients", "with `client.column`, map the clients feed from a foreign file")
    for name, spec in feeds_doc.items():
        if name not in TABLES:
            problems.add(f"feed {name}", f"not a contract feed (expected one of {', '.join(TABLES)})")
            continue
        if not isinstance(spec, dict):
            problems.add(f"feed {name}", "expected a mapping with `from` and `columns` (or `row`)")
            continue
        feeds[name] = _feed(
            name, spec, client_id or client_sql, problems, by_column=client_sql is not None, carrier=carrier
        )
    return Mapping(
        path=path,
        label=label,
        source=source,
        timezone=tz,
        null_tokens=tuple(tokens),
        trim=bool(trim),
        delimiter=delimiter,
        feeds=feeds,
        client_id=client_id,
        client_sql=client_sql,
    )


def _feed(
    name: str, spec: dict, client: str | None, problems: _Problems, by_column: bool = False, carrier: bool = False
) -> Feed:
    """One feed; `client` fills a fact's client column: the client id, or (`by_column`) the SQL carrying it."""
    table = TABLES[name]
    where = f"feed {name}"
    for k in sorted(set(spec) - _FEED_KEYS):
        problems.add(where, f"unknown key {k!r} (expected {', '.join(sorted(_FEED_KEYS))})")
    placeholder = spec.get("placeholder")
    if "row" in spec or "rows" in spec:
        if "from" in spec or "columns" in spec:
            problems.add(where, "a feed has either constant `row`/`rows` or `from` + `columns`, not both")
        raw_rows = [spec["row"]] if "row" in spec else spec.get("rows") or []
        rows = []
        for i, raw in enumerate(raw_rows):
            if not isinstance(raw, dict):
                problems.add(where, f"row {i + 1} must map contract columns to values")
                continue
            cols = {}
            for col, v in raw.items():
                cspec = v if isinstance(v, dict) else {"constant": v}
                cols[col] = _column(f"{where}, column {col}", table, col, cspec, problems, constant_only=True)
            _check_complete(where, table, cols, problems)
            rows.append(cols)
        return Feed(name, table, None, rows=tuple(rows), placeholder=placeholder)
    if not spec.get("from"):
        problems.add(where, "`from` must name the foreign file (a glob relative to the source's folder)")
    value_maps = spec.get("value_maps") or {}
    if not isinstance(value_maps, dict):
        problems.add(where, "value_maps must map contract columns to {foreign value: contract value}")
        value_maps = {}
    for col in value_maps:
        if col not in (spec.get("columns") or {}):
            problems.add(f"{where}, column {col}", "a value map for a column that is not mapped")
    columns: dict[str, ColumnSpec] = {}
    for col, v in (spec.get("columns") or {}).items():
        cspec = dict(v) if isinstance(v, dict) else {"sql": v}
        if col in value_maps:
            cspec["value_map"] = value_maps[col]
        columns[col] = _column(f"{where}, column {col}", table, col, cspec, problems, carrier=carrier)
    ccol = table.client_column
    if ccol and ccol not in columns and client is not None:
        columns[ccol] = (
            ColumnSpec(ccol, sql=client) if by_column else ColumnSpec(ccol, is_constant=True, constant=client)
        )
    _check_complete(where, table, columns, problems)
    extra: dict[str, ColumnSpec] = {}
    for col, v in (spec.get("extra") or {}).items():
        if col in table.column_names or col in ("source_file", "source_line"):
            problems.add(f"{where}, extra {col}", "an extra column cannot reuse a contract column's name")
            continue
        extra[col] = _column(
            f"{where}, extra {col}", None, col, dict(v) if isinstance(v, dict) else {"sql": v}, problems
        )
    lookups = []
    for lname, lspec in (spec.get("lookups") or {}).items():
        lookups.append(_lookup(f"{where}, lookup {lname}", lname, lspec, problems))
    return Feed(
        name,
        table,
        str(spec.get("from") or ""),
        columns=columns,
        extra=extra,
        lookups=tuple(lookups),
        filter=_opt_str(spec.get("filter")),
        distinct_on=_opt_str(spec.get("distinct_on")),
        placeholder=placeholder,
    )


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _check_complete(where: str, table: Table, cols: dict[str, ColumnSpec], problems: _Problems) -> None:
    """Every contract column has a source; header-optional columns left out are empty (filled in)."""
    for col in cols:
        if col == PLACEHOLDERS:
            problems.add(
                f"{where}, column {col}",
                "computed from the placeholders declared on the other columns: do not map it",
            )
        elif col not in table.column_names:
            problems.add(f"{where}, column {col}", f"not a column of {table.name} ({', '.join(table.column_names)})")
    for c in table.columns:
        if c.header_optional and c.name not in cols and c.name != PLACEHOLDERS:
            cols[c.name] = ColumnSpec(c.name, is_constant=True, constant=None)
        if c.name not in cols and c.name != PLACEHOLDERS:
            hint = " or {constant: null}" if c.nullable else ""
            problems.add(
                f"{where}, column {c.name}",
                f"no source: map it to a foreign column or expression, or declare "
                f"{{constant: <value>, placeholder: <why the source has none>}}{hint}",
            )


def _lookup(where: str, name: str, spec: Any, problems: _Problems) -> Lookup:
    if not isinstance(spec, dict):
        problems.add(where, "expected {from, key, on, aggregates}")
        return Lookup(name, "", "", "", ())
    for k in sorted(set(spec) - _LOOKUP_KEYS):
        problems.add(where, f"unknown key {k!r} (expected {', '.join(sorted(_LOOKUP_KEYS))})")
    if not spec.get("from") or not spec.get("key"):
        problems.add(where, "`from` (the side file) and `key` (its join column) are required")
    aggs = []
    for aname, aspec in (spec.get("aggregates") or {}).items():
        funcs = [f for f in AGGREGATES if isinstance(aspec, dict) and f in aspec]
        if len(funcs) != 1 or set(aspec) - {*AGGREGATES, "order_by"}:
            problems.add(f"{where}, aggregate {aname}", "expected one of {first|count|sum: <SQL>} (+ order_by)")
            continue
        aggs.append(Aggregate(aname, funcs[0], str(aspec[funcs[0]]), _opt_str(aspec.get("order_by"))))
    if not aggs:
        problems.add(where, "a lookup needs at least one aggregate")
    key = str(spec.get("key") or "")
    return Lookup(name, str(spec.get("from") or ""), key, str(spec.get("on") or key), tuple(aggs))


def _column(
    where: str,
    table: Table | None,
    name: str,
    spec: dict,
    problems: _Problems,
    constant_only: bool = False,
    carrier: bool = False,
) -> ColumnSpec:
    col = _contract_column(table, name)
    if carrier and col is not None and table is not None and optional_for_carrier(table.name, name):
        # the source's client ships through a carrier: the contract lets this column be empty
        col = dataclasses.replace(col, nullable=True)
    for k in sorted(set(spec) - _COLUMN_KEYS - {"value_map"}):
        problems.add(where, f"unknown key {k!r} (expected {', '.join(sorted(_COLUMN_KEYS))})")
    sources = [k for k in ("sql", "constant", "date") if k in spec]
    if constant_only and sources != ["constant"]:
        problems.add(where, "a constant row takes values (or {constant: ..., placeholder: ...}) only")
    if len(sources) != 1:
        problems.add(where, "give exactly one of `sql`, `constant`, or `date` + `time`")
    if ("date" in spec) != ("time" in spec):
        problems.add(where, "`date` and `time` go together (the two foreign columns joined into one timestamp)")
    placeholder = spec.get("placeholder")
    if placeholder is not None and (not isinstance(placeholder, str) or not placeholder.strip()):
        problems.add(where, "placeholder must say why the value is a stand-in")
    constant = default = None
    if "constant" in spec:
        constant = _converted(where, col, spec["constant"], problems, "constant")
    if "default" in spec:
        if not placeholder:
            problems.add(where, "a default stands in for missing data: say why in `placeholder`")
        default = _converted(where, col, spec["default"], problems, "default")
    fmt = spec.get("format")
    formats = tuple(fmt) if isinstance(fmt, list) else (() if fmt is None else (str(fmt),))
    dtype = col.dtype if col else "string"
    if formats and dtype not in ("timestamp", "date"):
        problems.add(where, f"`format` parses dates and times, but the column is {dtype}")
    for f in formats:
        if "%" not in f:
            problems.add(where, f"format {f!r} has no strptime field (e.g. %Y-%m-%d %H:%M:%S)")
    if spec.get("end_of_day") and dtype != "timestamp":
        problems.add(where, f"`end_of_day` makes a date a deadline timestamp, but the column is {dtype}")
    vmap = spec.get("value_map") or {}
    value_map: dict[str, str] = {}
    if not isinstance(vmap, dict):
        problems.add(where, "a value map maps foreign values to contract values")
        vmap = {}
    for k, v in vmap.items():
        if not isinstance(k, str):
            problems.add(where, f"value map key {k!r} is read by YAML as {type(k).__name__}: quote it")
            continue
        target = _converted(where, col, v, problems, f"value map target for {k!r}")
        if target is not None:
            value_map[k] = target
    return ColumnSpec(
        name=name,
        sql=_opt_str(spec.get("sql")),
        is_constant="constant" in spec,
        constant=constant,
        placeholder=placeholder,
        default=default,
        format=formats,
        date=_opt_str(spec.get("date")),
        time=_opt_str(spec.get("time")),
        end_of_day=bool(spec.get("end_of_day")),
        strip_prefix=_opt_str(spec.get("strip_prefix")),
        value_map=value_map,
    )


def _contract_column(table: Table | None, name: str) -> Column | None:
    if table is None:
        return None
    try:
        return table.column(name)
    except KeyError:
        return None


def _converted(where: str, col: Column | None, value: Any, problems: _Problems, what: str) -> str | None:
    try:
        return convert(value, col)
    except ValueError as exc:
        problems.add(where, f"{what} {value!r}: {exc}")
        return None


def convert(value: Any, col: Column | None) -> str | None:
    """A YAML value as the text the landing reads for `col`; ValueError says why it cannot be."""
    if value is None:
        if col is not None and not col.nullable:
            raise ValueError("null, but the column is not nullable")
        return None
    if col is None or col.dtype == "string":
        text = str(value)
    elif col.dtype == "bool":
        if not isinstance(value, bool) and str(value).lower() not in ("true", "false"):
            raise ValueError("does not convert to bool (true or false)")
        text = str(value).lower()
    elif col.dtype == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or str(value).lstrip("-").isdigit()):
            raise ValueError("does not convert to int")
        text = str(int(value))
    elif col.dtype in ("float", "decimal"):
        if isinstance(value, bool):
            raise ValueError(f"does not convert to {col.dtype}")
        try:
            text = repr(float(value)) if not isinstance(value, int) else str(value)
        except (TypeError, ValueError):
            raise ValueError(f"does not convert to {col.dtype}") from None
    elif col.dtype == "date":
        if isinstance(value, datetime) or not isinstance(value, date):
            try:
                value = date.fromisoformat(str(value))
            except ValueError:
                raise ValueError("does not convert to date (YYYY-MM-DD)") from None
        text = value.isoformat()
    else:  # timestamp
        try:
            ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        except ValueError:
            raise ValueError("does not convert to timestamp (ISO 8601 with offset)") from None
        if ts.tzinfo is None:
            raise ValueError("a constant timestamp needs its UTC offset (e.g. 2020-01-01T00:00:00+00:00)")
        text = ts.isoformat()
    if col is not None:
        if col.allowed and text not in col.allowed:
            raise ValueError(f"not allowed by the contract ({', '.join(col.allowed)})")
        if col.dtype in ("int", "float", "decimal"):
            n = float(text)
            if col.min is not None and n < col.min:
                raise ValueError(f"below the contract's minimum {col.min:g}")
            if col.max is not None and n > col.max:
                raise ValueError(f"above the contract's maximum {col.max:g}")
    return text


# ---------------------------------------------------------------------------------------------
# Expressions


@dataclass(frozen=True)
class Ref:
    """A column an expression reads: where it is used, the file pattern and the column."""

    where: str
    pattern: str
    column: str


def parse_expression(sql: str, aggregate_ok: bool = False) -> exp.Expr:
    """One row-level SQL expression (DuckDB dialect); ValueError says why not."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.SqlglotError as exc:
        raise ValueError(f"does not parse as SQL: {str(exc).splitlines()[0]}") from None
    if tree is None:
        raise ValueError("empty expression")
    if isinstance(tree, exp.Alias):
        raise ValueError(f"one expression expected, got {sql!r} (quote a column name with spaces in double quotes)")
    if isinstance(tree, exp.Query) or tree.find(exp.Select, exp.Subquery):
        raise ValueError("subqueries are not mapped; join side files with `lookups`")
    if not aggregate_ok and tree.find(exp.AggFunc, exp.Window):
        raise ValueError("aggregates run in `lookups`; a column is computed from one foreign row")
    return tree


def column_refs(tree: exp.Expr) -> list[tuple[str, str]]:
    """(qualifier, column) of every column the expression reads ('' when unqualified)."""
    return [(c.table or "", c.name) for c in tree.find_all(exp.Column) if c.name]


def _check_expressions(mapping: Mapping, problems: _Problems) -> None:
    """Every expression parses and reads only main-file columns or the feed's lookup aggregates."""
    for feed in mapping.feeds.values():
        if feed.is_constant:
            continue
        for where, sql, aggregate_ok in _feed_expressions(mapping, feed):
            try:
                tree = parse_expression(sql, aggregate_ok)
            except ValueError as exc:
                problems.add(where, str(exc))
                continue
            lookups = {lk.name: {a.name for a in lk.aggregates} for lk in feed.lookups}
            for qual, col in column_refs(tree):
                if not qual:
                    continue
                if ", lookup " in where:
                    problems.add(where, f"{qual}.{col}: a lookup reads its side file's columns, unqualified")
                elif qual not in lookups:
                    problems.add(where, f"{qual}.{col}: no lookup named {qual!r} in this feed")
                elif col not in lookups[qual]:
                    problems.add(where, f"{qual}.{col}: lookup {qual} has no aggregate {col!r}")


def _feed_expressions(mapping: Mapping, feed: Feed) -> list[tuple[str, str, bool]]:
    base = f"feed {feed.name}"
    out: list[tuple[str, str, bool]] = []
    for kind, specs in (("column", feed.columns), ("extra", feed.extra)):
        for name, spec in specs.items():
            out += [(f"{base}, {kind} {name}", e, False) for e in spec.expressions]
    if feed.filter:
        out.append((f"{base}, filter", feed.filter, False))
    if feed.distinct_on:
        out.append((f"{base}, distinct_on", feed.distinct_on, False))
    for lk in feed.lookups:
        out.append((f"{base}, lookup {lk.name}, on", lk.on, False))
        for a in lk.aggregates:
            out.append((f"{base}, lookup {lk.name}, aggregate {a.name}", a.sql, False))
            if a.order_by:
                out.append((f"{base}, lookup {lk.name}, aggregate {a.name}", a.order_by, False))
    return out


def references(mapping: Mapping) -> list[Ref]:
    """Every foreign column the mapping reads, with the file pattern it must be in."""
    out: list[Ref] = []
    for feed in mapping.feeds.values():
        if feed.is_constant:
            continue
        for where, sql, _agg in _feed_expressions(mapping, feed):
            lookup = next((lk for lk in feed.lookups if f", lookup {lk.name}, aggregate " in where), None)
            pattern = lookup.from_ if lookup else feed.from_ or ""
            out += [Ref(where, pattern, c) for q, c in column_refs(parse_expression(sql)) if not q]
        for lk in feed.lookups:
            out.append(Ref(f"feed {feed.name}, lookup {lk.name}, key", lk.from_, lk.key))
    return out


# ---------------------------------------------------------------------------------------------
# Foreign files


def foreign_files(folder: Path, pattern: str) -> list[Path]:
    """The foreign files a `from` pattern matches, by name (names starting with '.' or '_' are
    files still being written)."""
    return sorted(p for p in Path(folder).glob(pattern) if p.is_file() and p.name[0] not in "._")


def open_bytes(path: Path) -> Any:
    """A foreign file's bytes, decompressed as they are read (gzip, zstd by the name's ending)."""
    codec = compression(path)
    if codec == "gzip":
        return gzip.open(path, "rb")
    if codec == "zstd":
        import pyarrow as pa  # no zstd in the standard library of Python < 3.14

        return pa.input_stream(str(path), compression="zstd")
    return open(path, "rb")  # the caller's `with` closes it


def foreign_header(path: Path, delimiter: str = ",") -> list[str]:
    """Column names of a foreign CSV (a byte-order mark and surrounding spaces removed)."""
    with open_bytes(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="") as text:
        first = next(csv.reader(text, delimiter=delimiter), [])
    return [h.strip() for h in first]


def check_headers(mapping: Mapping, folder: Path, problems: _Problems | None = None) -> None:
    """Every referenced foreign column is in the header of every file its pattern matches."""
    own = problems is None
    problems = problems or _Problems(mapping.label)
    headers: dict[Path, list[str]] = {}
    for ref in references(mapping):
        files = foreign_files(folder, ref.pattern)
        if not files:
            problems.add(ref.where, f"no foreign file matches {ref.pattern!r} in {folder}")
            continue
        for f in files:
            if f not in headers:
                headers[f] = foreign_header(f, mapping.delimiter)
            if ref.column in headers[f]:
                continue
            guess = process.extractOne(ref.column, headers[f], score_cutoff=60)
            hint = f" (renamed? closest: {guess[0]!r})" if guess else ""
            problems.add(
                ref.where,
                f"{f.name} has no column {ref.column!r}{hint}; its header: {', '.join(headers[f])}",
            )
    problems.items[:] = list(dict.fromkeys(problems.items))  # a column read by several expressions: once
    if own and problems.items:
        raise MappingError(problems.items)
