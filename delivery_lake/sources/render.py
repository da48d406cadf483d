"""Render a source's foreign files into contract-shaped, typed Parquet files in the inbox.

Each mapped feed and foreign file becomes `INBOX_DIR/<feed>/<source>--<foreign file stem>.parquet`,
in the contract's column order followed by `source_file` (the foreign file, relative to INBOX_DIR)
and `source_line`, then any `extra` columns, then `_unparseable` and `_raw_line`; the ordinary
landing quarantines and reconciles it like any other file, and its extra columns point a
quarantined row back to the foreign line.

Why Parquet and not CSV: the foreign file is parsed once. Each contract column is cast to its type
here (`TRY_CAST`); a value that does not convert (a date in another format) does not fail the file:
its row keeps NULL there, `_unparseable` names the columns that failed, and `_raw_line` holds the
row's values as the mapping produced them, as a CSV line, so the landing quarantines it as
`unparseable:<column>` with the foreign text rather than as missing. A CSV in between cost the
landing a second parse of every value (the bench's `mapped_over_native_landing`).

DuckDB does the work in one statement per file (`COPY (SELECT ...) TO`): the foreign file is read
as text (`read_csv`, every column VARCHAR, names from its header), streaming, never loaded into
Python. Null tokens and trimming apply to every foreign column first; then lookups, the filter,
the column expressions, prefixes, value maps and time conversion, then the casts.

Rendering is idempotent: the same foreign bytes and mapping give the same output bytes, and an
output that would not change is not rewritten (its modification time, which the inbox index and
the landing's file order use, stays). Files are written atomically (a temporary name starting with
'.', which the inbox ignores, then a rename). What was rendered, and which columns hold
placeholders, is recorded beside the foreign files in `INBOX_DIR/sources/<source>/.rendered/`,
outside the feed folders, whose every file other than a CSV or a rendered Parquet the inbox refuses.
"""

from __future__ import annotations

import filecmp
import functools
import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from sqlglot import exp

from delivery_lake.contract import DUCKDB_TYPES, PLACEHOLDERS, Column
from delivery_lake.inbox import MAX_LINE, RAW_LINE, RENDERED_ENDING, UNPARSEABLE, compression
from delivery_lake.sources.mapping import (
    SOURCES_DIR,
    ColumnSpec,
    Feed,
    Lookup,
    Mapping,
    MappingError,
    check_headers,
    foreign_files,
    foreign_header,
    load,
    open_bytes,
    parse_expression,
)
from delivery_lake.sql import ident, literal

# Rows of each foreign file typed in the conversion check (`check_conversions`).
SAMPLE_ROWS = 2000
RENDERED = ".rendered"
EXTRA = ("source_file", "source_line")
# Zone names that mean UTC itself (a source in one of them needs no conversion).
UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu", "Universal", "Etc/Universal"})


@dataclass
class Rendered:
    """One output file: what it came from and what became of the foreign rows."""

    feed: str
    foreign_file: str | None  # relative to INBOX_DIR; None for constant rows
    output: str
    rows_read: int = 0  # foreign records (constant rows: the rows declared)
    rows_rendered: int = 0
    rows_filtered_out: int = 0  # by `filter`
    rows_collapsed: int = 0  # by `distinct_on`
    placeholders: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: bool = False


# ---------------------------------------------------------------------------------------------
# SQL


def reader_sql(path: Path, header: list[str], delimiter: str) -> str:
    """The foreign file as text: names from its header (already checked), DuckDB's sniffer not asked."""
    cols = ", ".join(f"{literal(h)}: 'VARCHAR'" for h in header)
    opts = [
        "header=true",
        "auto_detect=false",
        f"delim={literal(delimiter)}",
        "quote='\"'",
        "escape='\"'",
        f"columns={{{cols}}}",
        f"max_line_size={MAX_LINE}",
        # DuckDB's default buffer is 16 lines of the longest allowed (160 MB a read); a few are
        # plenty, and keep a render within a small memory limit
        f"buffer_size={4 * MAX_LINE}",
    ]
    codec = compression(path)
    if codec:
        opts.append(f"compression='{codec}'")
    return f"read_csv({literal(str(path))}, {', '.join(opts)})"


def _clean(mapping: Mapping, expr: str) -> str:
    """Trimmed, and NULL where the text is a null token."""
    v = f"trim({expr})" if mapping.trim else expr
    if not mapping.null_tokens:
        return v
    if len(mapping.null_tokens) == 1:  # the common case; one evaluation of `v` instead of two
        return f"nullif({v}, {literal(mapping.null_tokens[0])})"
    return f"CASE WHEN {v} IN ({', '.join(literal(t) for t in mapping.null_tokens)}) THEN NULL ELSE {v} END"


def _qualify(sql: str, alias: str = "f") -> str:
    """The expression with unqualified columns read from `alias` and `lookup.aggregate` from its CTE."""

    def fix(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column) and node.name:
            return exp.column(node.name, table=f"lk_{node.table}" if node.table else alias, quoted=True)
        return node

    return parse_expression(sql, aggregate_ok=True).transform(fix).sql(dialect="duckdb")


def _cleaned_files(mapping: Mapping, files: list[Path], lines: bool, spanning: bool | None = None) -> str:
    """Every file's records, cleaned, with `__file` (rank), `__rec` (ordinal) and, with `lines`,
    `__line`: the line a record starts on in the file.

    A record quoted across several lines counts every line it spans: its line is 1 (the header)
    + its ordinal + the line breaks inside the records before it, i.e. the line an editor shows
    it starting on (a blank line in the file, which the reader skips, would shift this by one).
    The running sum is a sorted window over every column, so it is only computed for a file that
    has such records (`spanning`, else asked of `spans_lines`); elsewhere the line is the ordinal
    + 1, and DuckDB reads only the columns the mapping uses.
    """
    parts = []
    for rank, path in enumerate(files):
        header = foreign_header(path, mapping.delimiter)
        cols = ", ".join(f"{_clean(mapping, ident(h))} AS {ident(h)}" for h in header)
        numbered = f"SELECT *, row_number() OVER () AS __rec FROM {reader_sql(path, header, mapping.delimiter)}"
        if lines and not (spans_lines(path, mapping.delimiter) if spanning is None else spanning):
            numbered = f"SELECT *, __rec + 1 AS __line FROM ({numbered})"
        elif lines:
            text = f"concat_ws('', {', '.join(ident(h) for h in header)})"
            breaks = f"length({text}) - length(replace({text}, chr(10), ''))"
            numbered = (
                "SELECT *, __rec + 1 + coalesce(sum(__nl) OVER (ORDER BY __rec ROWS BETWEEN UNBOUNDED PRECEDING "
                f"AND 1 PRECEDING), 0) AS __line FROM (SELECT *, {breaks} AS __nl FROM ({numbered}))"
            )
        line = ", __line" if lines else ""
        parts.append(f"SELECT {rank} AS __file, __rec{line}, {cols} FROM ({numbered})")
    return " UNION ALL BY NAME ".join(parts)


def foreign_records(inbox: Path, file: str, lines: set[int]) -> dict[int, str]:
    """The records of foreign file `file` (relative to INBOX_DIR, under sources/<source>/) starting
    on `lines`, as the client sent them: a JSON object of its columns, no null token or trimming
    applied. Lines are counted as `source_line` counts them. Empty when the file or its mapping
    is gone (the quarantine row still names file and line)."""
    path = Path(inbox) / file
    parts = Path(file).parts
    if not lines or not path.is_file() or len(parts) < 3 or parts[0] != "sources":
        return {}
    try:
        delimiter = load(parts[1]).delimiter
    except MappingError:
        delimiter = ","
    header = foreign_header(path, delimiter)
    raw = Mapping(path, "", parts[1], "UTC", (), False, delimiter, {})  # no cleaning: values as sent
    numbered = _cleaned_files(raw, [path], lines=True)
    record = "to_json(struct_pack(" + ", ".join(f"{ident(h)} := {ident(h)}" for h in header) + "))::VARCHAR"
    wanted = ", ".join(str(int(n)) for n in sorted(lines))
    con = duckdb.connect()
    try:
        found = con.execute(f"SELECT __line, {record} FROM ({numbered}) WHERE __line IN ({wanted})").fetchall()
    finally:
        con.close()
    return {int(line): text for line, text in found}


def spans_lines(path: Path, delimiter: str = ",") -> bool:
    """Whether some record of the file spans several lines (a quoted value holding a line break):
    the file has more lines than records + the header."""
    st = path.stat()
    return _spans_lines(str(path), delimiter, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _spans_lines(path: str, delimiter: str, _size: int, _mtime: int) -> bool:
    """Keyed by size and modification time too, so a changed file is looked at again."""
    header = foreign_header(Path(path), delimiter)
    con = duckdb.connect()
    try:
        row = con.execute(f"SELECT count(*) FROM {reader_sql(Path(path), header, delimiter)}").fetchone()
    except duckdb.Error as exc:
        raise MappingError([f"{path}: {read_problem(exc)}"]) from None
    finally:
        con.close()
    return scan_lines(Path(path))[0] > (row[0] if row else 0) + 1


def scan_lines(path: Path) -> tuple[int, bool]:
    """Lines of the file (a last line without a line break counts), and whether it holds a quote
    character at all: without one no record can span lines, which spares a count of its records."""
    lines, last, quoted = 0, b"\n", False
    with open_bytes(path) as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            quoted = quoted or b'"' in chunk
            last = chunk[-1:]
    return lines + (last != b"\n"), quoted


def read_problem(exc: duckdb.Error) -> str:
    """What DuckDB's CSV reader found wrong with a foreign file, in a line a person can act on."""
    text = str(exc)
    line = re.search(r"CSV Error on Line: (\d+)", text)
    fields = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    where = f"record {line.group(1)} (header = 1)" if line else "a record"
    if fields:
        # DuckDB stops counting at one field too many, so only the direction is reliable
        expected, found = (int(n) for n in fields.groups())
        more = "more" if found > expected else "fewer"
        why = "an unquoted delimiter" if found > expected else "a cut line"
        return (
            f"{where} has {more} fields than the header's {expected} ({why}?): the file is refused whole "
            "and nothing of it lands; fix or quote that record and drop the file again"
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"cannot be read as CSV at {where}: {first}; the file is refused whole and nothing of it lands"


def _lookup_cte(mapping: Mapping, lookup: Lookup, folder: Path) -> str:
    aggs = []
    for a in lookup.aggregates:
        v = _qualify(a.sql, "s")
        if a.func == "sum":
            # exact decimal addition: a float sum depends on the order threads add in
            aggs.append(f"CAST(sum(TRY_CAST({v} AS DECIMAL(38,6))) AS DOUBLE) AS {ident(a.name)}")
        elif a.func == "count":
            aggs.append(f"count({v}) AS {ident(a.name)}")
        else:
            order = f"{_qualify(a.order_by, 's')}, " if a.order_by else ""
            aggs.append(f"first({v} ORDER BY {order}s.__file, s.__rec) AS {ident(a.name)}")
    files = foreign_files(folder, lookup.from_)
    return (
        f"{ident('lk_' + lookup.name)} AS (SELECT s.{ident(lookup.key)} AS __key, {', '.join(aggs)} "
        f"FROM ({_cleaned_files(mapping, files, lines=False)}) s GROUP BY ALL)"
    )


def _base(spec: ColumnSpec) -> str:
    """The column's text before prefixes, value maps and conversion."""
    if spec.is_constant:
        return "NULL::VARCHAR" if spec.constant is None else literal(spec.constant)
    if spec.date is not None:
        return f"(CAST({_qualify(spec.date)} AS VARCHAR) || ' ' || CAST({_qualify(spec.time or '')} AS VARCHAR))"
    return f"CAST({_qualify(spec.sql or '')} AS VARCHAR)"


def _finish(mapping: Mapping, spec: ColumnSpec, col: Column | None, v: str) -> list[str]:
    """Successive expressions over `v` (each over the previous one's result): prefix, value map,
    conversion. Returned as layers so no expression repeats another's text."""
    layers = []
    if spec.strip_prefix:
        p = literal(spec.strip_prefix)
        layers.append(
            _clean(mapping, f"CASE WHEN starts_with({v}, {p}) THEN {v}[{len(spec.strip_prefix) + 1}:] ELSE {v} END")
        )
    if spec.value_map:
        cases = " ".join(f"WHEN {literal(k)} THEN {literal(t)}" for k, t in spec.value_map.items())
        layers.append(f"CASE {v} {cases} ELSE {v} END")
    dtype = col.dtype if col else "string"
    if dtype == "timestamp" and not spec.is_constant:
        fmts = spec.format
        parsed = (
            f"try_strptime({v}, [{', '.join(literal(f) for f in fmts)}])" if fmts else f"TRY_CAST({v} AS TIMESTAMP)"
        )
        if spec.end_of_day:
            # the whole day counts: a deadline of 2018-01-10 is met by 23:59:59 local time that day
            parsed = f"(date_trunc('day', {parsed}) + INTERVAL 1 DAY - INTERVAL 1 SECOND)"
        aware = any("%z" in f or "%Z" in f for f in fmts)
        if not fmts and not spec.end_of_day and mapping.timezone in UTC_NAMES:
            # Nothing to convert: the landing reads the text as it reads our own feeds (ISO 8601,
            # an offset honoured, naive meaning UTC), so a value that does not parse is still
            # quarantined with the foreign text. A third of a render's time went to the round trip.
            return layers
        if not fmts and not spec.end_of_day:
            # DuckDB's TIMESTAMP cast drops an offset ('10:00+05:00' -> 10:00), so a value that
            # carries one is read as an instant; a naive one is local time in the source's zone
            offset = f"regexp_matches({v}, '(Z|[+-][0-9]{{2}}(:?[0-9]{{2}})?)$')"
            instant = (
                f"CASE WHEN {offset} THEN TRY_CAST({v} AS TIMESTAMPTZ) "
                f"ELSE timezone({literal(mapping.timezone)}, {parsed}) END"
            )
        else:
            instant = parsed if aware else f"timezone({literal(mapping.timezone)}, {parsed})"
        layers.append(f"coalesce(replace(CAST(timezone('UTC', {instant}) AS VARCHAR), ' ', 'T') || 'Z', {v})")
    elif dtype == "date" and spec.format and not spec.is_constant:
        listed = ", ".join(literal(f) for f in spec.format)
        layers.append(f"coalesce(strftime(try_strptime({v}, [{listed}]), '%Y-%m-%d'), {v})")
    return layers  # the default, if any, applies in feed_sql's last step, where it is also flagged


@dataclass
class FeedSql:
    """The SQL of one feed over one foreign file: `select` (ordered, the output), `stats` (counts)."""

    select: str
    stats: str
    defaults: list[str]  # columns whose default counts `stats` returns, in order


def feed_sql(
    mapping: Mapping,
    feed: Feed,
    path: Path,
    folder: Path,
    inbox: Path | None,
    sample: bool = False,
    spanning: bool | None = None,
) -> FeedSql:
    """`sample`: no line numbers, no order, the first SAMPLE_ROWS rows (for checks). `spanning`:
    whether a record of the file spans lines, when the caller knows (see `_cleaned_files`)."""
    specs = _output_specs(feed)
    lines = not sample
    ctes = [f"f AS ({_cleaned_files(mapping, [path], lines=lines, spanning=spanning)})"]
    ctes += [_lookup_cte(mapping, lk, folder) for lk in feed.lookups]
    joins = " ".join(
        f"LEFT JOIN {ident('lk_' + lk.name)} ON {ident('lk_' + lk.name)}.__key = ({_qualify(lk.on)})"
        for lk in feed.lookups
    )
    names = list(specs)
    base = ", ".join(f"{_base(spec)} AS c{i}" for i, (spec, _c) in enumerate(specs.values()))
    conditions = [f"coalesce(({_qualify(feed.filter)})::BOOLEAN, false)"] if feed.filter else []
    if feed.distinct_on and not sample:
        # the first record of each value, found by an aggregate over a second read of the file
        # (an aggregate spills to disk; a window partitioned by the value would hold every row)
        keep_where = f"WHERE {conditions[0]}" if conditions else ""
        ctes.append(
            f"keep AS (SELECT min(f.__rec) AS __rec FROM ({_cleaned_files(mapping, [path], lines=False)}) f "
            f"{joins} {keep_where} GROUP BY {_qualify(feed.distinct_on)})"
        )
        conditions.append("f.__rec IN (SELECT __rec FROM keep)")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    line = "f.__line" if lines else "NULL::BIGINT"
    ctes.append(f"joined AS (SELECT f.__rec, {line} AS __line, {base} FROM f {joins} {where})")
    # each layer rewrites the columns it changes, in turn, over the previous layer's columns
    steps = {i: _finish(mapping, spec, col, f"c{i}") for i, (spec, col) in enumerate(specs.values())}
    prev = "joined"
    for depth in range(max((len(s) for s in steps.values()), default=0)):
        cols = ", ".join(f"{steps[i][depth] if depth < len(steps[i]) else f'c{i}'} AS c{i}" for i in range(len(names)))
        ctes.append(f"l{depth} AS (SELECT __rec, __line, {cols} FROM {prev})")
        prev = f"l{depth}"
    # last step: defaults, and which columns of the row hold a stand-in (contract.PLACEHOLDERS): a
    # constant placeholder always, a defaulted one where the source gave nothing
    marked = feed.placeholders()
    finals, flags = [], []
    for i, (n, (spec, _c)) in enumerate(specs.items()):
        finals.append(f"coalesce(c{i}, {literal(spec.default)}) AS c{i}" if spec.default is not None else f"c{i}")
        if n in marked and n in feed.table.column_names:
            flags.append(f"CASE WHEN c{i} IS NULL THEN {literal(n)} END" if spec.default is not None else literal(n))
    flagged = f"nullif(concat_ws(';', {', '.join(flags)}), '')" if flags else "NULL::VARCHAR"
    ctes.append(f"fin AS (SELECT __rec, __line, {', '.join(finals)}, {flagged} AS __placeholders FROM {prev})")
    prev = "fin"
    source = literal(str(path.relative_to(inbox)) if inbox and path.is_relative_to(inbox) else path.name)
    contract_cols = [f"c{i} AS {ident(n)}" for i, n in enumerate(names) if n in feed.table.column_names]
    extra_cols = [f"c{i} AS {ident(n)}" for i, n in enumerate(names) if n not in feed.table.column_names]
    provenance = [f"__placeholders AS {PLACEHOLDERS}", f"{source} AS source_file", "__line AS source_line"]
    out = ", ".join([*contract_cols, *provenance, *extra_cols])
    # File order: a scan, a filter and a streaming row_number keep it (preserve_insertion_order, as
    # in the landing); a join, a semi-join or the sorted window of a spanning file may not, and
    # need the sort (a fifth of a render's time where it is not needed)
    ordered = bool(feed.lookups or feed.distinct_on or spanning is not False)
    order = f"LIMIT {SAMPLE_ROWS}" if sample else "ORDER BY __rec" if ordered else ""
    with_ = "WITH " + ", ".join(ctes)
    select = f"{with_} SELECT {out} FROM {prev} {order}"
    defaults = [n for n, (spec, _c) in specs.items() if spec.default is not None]
    counts = ", ".join(f"count_if(c{names.index(n)} IS NULL)" for n in defaults)
    filtered = (
        f"(SELECT count_if(coalesce(({_qualify(feed.filter)})::BOOLEAN, false)) FROM f {joins})"
        if feed.filter
        else "(SELECT count(*) FROM f)"
    )
    stats = (
        f"{with_} SELECT (SELECT count(*) FROM f), {filtered}, count(*){', ' + counts if counts else ''} FROM joined"
    )
    return FeedSql(select, stats, defaults)


def _output_specs(feed: Feed) -> dict[str, tuple[ColumnSpec, Column | None]]:
    # every contract column in order but the computed PLACEHOLDERS, then the extra columns
    out: dict[str, tuple[ColumnSpec, Column | None]] = {
        c.name: (feed.columns[c.name], c) for c in feed.table.columns if c.name != PLACEHOLDERS
    }
    out.update({n: (s, None) for n, s in feed.extra.items()})
    return out


def _feed_columns(feed: Feed) -> list[tuple[str, Column | None]]:
    """The output's columns in feed_sql's order, each with its contract column (None: text)."""
    specs = _output_specs(feed)
    contract = [(n, c) for n, (_s, c) in specs.items() if n in feed.table.column_names]
    extra = [(n, None) for n in specs if n not in feed.table.column_names]
    return [*contract, *((n, None) for n in (PLACEHOLDERS, *EXTRA)), *extra]


def _constant_columns(feed: Feed) -> list[tuple[str, Column | None]]:
    cols: list[tuple[str, Column | None]] = [(c.name, c) for c in feed.table.columns if c.name != PLACEHOLDERS]
    return [*cols, *((n, None) for n in (PLACEHOLDERS, *EXTRA))]


def typed_sql(select: str, columns: list[tuple[str, Column | None]]) -> str:
    """`select`'s rows (text) typed as the contract types each column, as the landing's CSV reader
    would: a value that does not convert is left NULL, its column named in `_unparseable` and the
    row kept as CSV text in `_raw_line`, for the landing to quarantine with what it said."""
    typed = [(name, col) for name, col in columns if col is not None and col.duckdb_type != "VARCHAR"]
    out = ", ".join(ident(n) for n, _c in columns)
    if not typed:
        return f"SELECT {out}, NULL::VARCHAR AS {UNPARSEABLE}, NULL::VARCHAR AS {RAW_LINE} FROM ({select})"
    # each value is cast once, in the inner query, beside its text (`__text_<i>`), which the
    # outer query compares against to find what did not convert and then drops
    raw = {name: f"__text_{i}" for i, (name, _c) in enumerate(typed)}
    inner = ", ".join(
        f"TRY_CAST({ident(n)} AS {c.duckdb_type}) AS {ident(n)}, {ident(n)} AS {raw[n]}" for n, c in typed
    )
    excluded = ", ".join(ident(n) for n, _c in typed)
    failed = {n: f"({raw[n]} IS NOT NULL AND {ident(n)} IS NULL)" for n, _c in typed}
    names = ", ".join(f"CASE WHEN {cond} THEN {literal(n)} END" for n, cond in failed.items())
    text = ", ".join(
        f"""coalesce('"' || replace({raw.get(n, ident(n))}::VARCHAR, '"', '""') || '"', '')""" for n, _c in columns
    )
    return (
        f"SELECT {out}, nullif(concat_ws(';', {names}), '') AS {UNPARSEABLE}, "
        f"CASE WHEN {' OR '.join(failed.values())} THEN concat_ws(',', {text}) END AS {RAW_LINE} "
        f"FROM (SELECT * EXCLUDE ({excluded}), {inner} FROM ({select}))"
    )


def constant_sql(mapping: Mapping, feed: Feed) -> str:
    rows = []
    cols = [c for c in feed.table.columns if c.name != PLACEHOLDERS]
    marked = [c.name for c in cols if c.name in feed.placeholders()]
    flagged = literal(";".join(marked)) if marked else "NULL::VARCHAR"
    for row in feed.rows:
        vals = [_base(row[c.name]) for c in cols]
        rows.append(
            f"SELECT {', '.join(f'{v} AS {ident(c.name)}' for v, c in zip(vals, cols, strict=True))}, "
            f"{flagged} AS {PLACEHOLDERS}, {literal(mapping.label)} AS source_file, NULL::BIGINT AS source_line"
        )
    return " UNION ALL ".join(rows)


# ---------------------------------------------------------------------------------------------
# Checks before anything is written


def check(mapping: Mapping, folder: Path, con: duckdb.DuckDBPyConnection | None = None) -> list[str]:
    """Headers, binding and a conversion sample; raises MappingError. Returns warnings: columns where
    some sampled values will not convert (the landing quarantines those rows)."""
    check_headers(mapping, folder)
    problems: list[str] = []
    warnings: list[str] = []
    own = con is None
    con = con or duckdb.connect()
    try:
        jobs = [
            (feed, path)
            for feed in mapping.feeds.values()
            if not feed.is_constant
            for path in foreign_files(folder, feed.from_ or "")
        ]

        def run(job: tuple[Feed, Path]) -> tuple[list[str], list[str]]:
            mine: tuple[list[str], list[str]] = ([], [])
            cur = con.cursor()  # one per thread, on the same database
            try:
                _check_feed(cur, mapping, job[0], job[1], folder, *mine)
            finally:
                cur.close()
            return mine

        # each file is a small, mostly single-threaded query: side by side, in the order reported
        with _pool(len(jobs)) as pool:
            for found, warned in pool.map(run, jobs):
                problems += found
                warnings += warned
    finally:
        if own:
            con.close()
    if problems:
        raise MappingError(problems)
    return warnings


def _pool(jobs: int) -> ThreadPoolExecutor:
    """Threads for `jobs` files, one per core at most (each file is one DuckDB stream)."""
    return ThreadPoolExecutor(max_workers=max(1, min(jobs, os.cpu_count() or 1)))


def _check_feed(
    con: duckdb.DuckDBPyConnection,
    mapping: Mapping,
    feed: Feed,
    path: Path,
    folder: Path,
    problems: list[str],
    warnings: list[str],
) -> None:
    where = f"{mapping.label}: feed {feed.name}"
    sql = feed_sql(mapping, feed, path, folder, None, sample=True)
    try:
        con.execute(f"DESCRIBE {sql.select}")
    except duckdb.Error as exc:
        problems.append(_bind_problem(con, mapping, feed, path, folder, exc))
        return
    specs = _output_specs(feed)
    typed = [(n, c) for n, (_s, c) in specs.items() if c is not None and c.dtype != "string"]
    if not typed:
        return
    sel = ", ".join(
        f"count({ident(n)}), count({_cast(n, c)}), "
        f"first({ident(n)}) FILTER (WHERE {_cast(n, c)} IS NULL AND {ident(n)} IS NOT NULL)"
        for n, c in typed
    )
    try:
        row = con.execute(f"SELECT {sel} FROM ({sql.select})").fetchone() or ()
    except duckdb.Error as exc:
        problems.append(f"{where}: {path}: {read_problem(exc)}")
        return
    for i, (n, c) in enumerate(typed):
        present, converts, example = row[3 * i], row[3 * i + 1], row[3 * i + 2]
        if present and converts * 2 < present:
            # most values failing is a mapping mistake (a wrong column, a wrong format), not dirt
            problems.append(
                f"{where}, column {n}: {present - converts} of {present} sampled values of {path.name} do not "
                f"convert to {c.dtype} (e.g. {example!r}); check the expression, its `format` or the source column"
            )
        elif present and converts < present:
            warnings.append(
                f"{where}, column {n}: {present - converts} of {present} sampled values of {path.name} "
                f"do not convert to {c.dtype} (e.g. {example!r}); the landing will quarantine those rows"
            )


def _cast(name: str, col: Column) -> str:
    return f"TRY_CAST({ident(name)} AS {DUCKDB_TYPES[col.dtype]})"


def _bind_problem(
    con: duckdb.DuckDBPyConnection, mapping: Mapping, feed: Feed, path: Path, folder: Path, exc: duckdb.Error
) -> str:
    """Name the column whose expression DuckDB cannot run (tried one at a time)."""
    nulls = {c: _NULL for c in feed.columns}
    candidates: list[tuple[str, dict[str, ColumnSpec], dict[str, ColumnSpec]]]
    candidates = [(n, {**nulls, n: s}, {}) for n, s in feed.columns.items()]
    candidates += [(n, nulls, {n: s}) for n, s in feed.extra.items()]
    for name, columns, extra in candidates:
        if columns.get(name, _NULL).is_constant and name not in extra:
            continue
        single = Feed(feed.name, feed.table, feed.from_, columns=columns, extra=extra, lookups=feed.lookups)
        try:
            con.execute(f"DESCRIBE {feed_sql(mapping, single, path, folder, None, sample=True).select}")
        except duckdb.Error as col_exc:
            why = str(col_exc).splitlines()[0]
            return f"{mapping.label}: feed {feed.name}, column {name}: DuckDB cannot run it: {why}"
    return f"{mapping.label}: feed {feed.name}: DuckDB cannot run the mapping: {str(exc).splitlines()[0]}"


_NULL = ColumnSpec("_", is_constant=True)


# ---------------------------------------------------------------------------------------------
# Writing


def render(mapping: Mapping, inbox: Path, memory_limit: str | None = None) -> list[Rendered]:
    """Render every mapped feed of every foreign file into the inbox; everything is checked first,
    and the outputs appear together once every file has rendered (a file that cannot be read
    leaves the inbox as it was).

    `memory_limit` caps DuckDB (e.g. the lake's DUCKDB_MEMORY_LIMIT); the sort that numbers lines
    and orders the output spills to a temporary folder beyond it.
    """
    inbox = Path(inbox).resolve()
    folder = mapping.folder(inbox)
    if not folder.is_dir():
        raise MappingError([f"{mapping.label}: no foreign files: {folder} does not exist"])
    out: list[Rendered] = []
    staged: list[tuple[Path, Path]] = []
    spill = tempfile.TemporaryDirectory(prefix="delivery-lake-render-")
    con = duckdb.connect(config={"temp_directory": spill.name})
    con.execute("SET TimeZone = 'UTC'")  # a naive timestamp is UTC here, as in the landing's reader
    if memory_limit:
        con.execute(f"SET memory_limit = {literal(memory_limit)}")
    try:
        check(mapping, folder, con)
        jobs: list[tuple[Feed, Path | None]] = []
        for feed in mapping.feeds.values():
            jobs += [(feed, None)] if feed.is_constant else [(feed, p) for p in foreign_files(folder, feed.from_ or "")]

        def run(job: tuple[Feed, Path | None]) -> tuple[Rendered, list[tuple[Path, Path]]]:
            feed, path = job
            mine: list[tuple[Path, Path]] = []
            cur = con.cursor()  # one per thread; they share the database, its memory limit and spill
            try:
                if path is None:
                    return _write_constant(cur, mapping, feed, inbox, mine), mine
                return _write_feed(cur, mapping, feed, path, folder, inbox, mine), mine
            finally:
                cur.close()

        # A file's render is one ordered stream (its line numbers), so it keeps one core busy:
        # files render side by side, as the landing lands days side by side.
        with _pool(len(jobs)) as pool:
            futures = [pool.submit(run, job) for job in jobs]
        problems: list[str] = []
        failed: BaseException | None = None
        for f in futures:  # every job has finished; all staged files are cleaned up on a failure
            exc = f.exception()
            if exc is None:
                rendered, mine = f.result()
                out.append(rendered)
                staged += mine
            elif isinstance(exc, MappingError):
                problems += exc.problems
            else:
                failed = failed or exc
        if failed is not None:
            raise failed
        if problems:
            raise MappingError(problems)
        for tmp, target in staged:
            os.replace(tmp, target)
        for r in out:  # what an earlier version rendered as CSV would be landed a second time
            (inbox / r.output).with_suffix(".csv").unlink(missing_ok=True)
    finally:
        con.close()
        spill.cleanup()
        for tmp, _target in staged:
            tmp.unlink(missing_ok=True)
    _write_sidecars(mapping, folder, out)
    return out


def output_path(inbox: Path, mapping: Mapping, feed: str, stem: str) -> Path:
    return Path(inbox) / feed / f"{mapping.source}--{stem}{RENDERED_ENDING}"


def _stem(path: Path) -> str:
    name = path.name
    for ending in (".csv.gz", ".csv.zst", ".csv"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return path.stem


def _copy(con: duckdb.DuckDBPyConnection, sql: str, target: Path, staged: list[tuple[Path, Path]]) -> tuple[int, bool]:
    """Write `sql`'s rows beside `target`, staged to replace it (atomically, by `render`) unless
    the bytes would not change: (rows, changed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp"
    keep = False
    try:
        written = con.execute(f"COPY ({sql}) TO {literal(str(tmp))} (FORMAT parquet)").fetchone()
        rows = int(written[0]) if written else 0
        if rows == 0 or (target.exists() and filecmp.cmp(tmp, target, shallow=False)):
            return rows, False
        staged.append((tmp, target))
        keep = True
        return rows, True
    finally:
        if not keep:
            tmp.unlink(missing_ok=True)


def _write_constant(
    con: duckdb.DuckDBPyConnection, mapping: Mapping, feed: Feed, inbox: Path, staged: list[tuple[Path, Path]]
) -> Rendered:
    target = output_path(inbox, mapping, feed.name, "mapping")
    rows, changed = _copy(con, typed_sql(constant_sql(mapping, feed), _constant_columns(feed)), target, staged)
    rendered = Rendered(feed.name, None, str(target.relative_to(inbox)), len(feed.rows), rows, changed=changed)
    for name, spec in feed.placeholders().items():
        rendered.placeholders[name] = {
            "value": spec.constant,
            "reason": spec.placeholder or feed.placeholder,
            "rows": rows,
        }
    return rendered


def _write_feed(
    con: duckdb.DuckDBPyConnection,
    mapping: Mapping,
    feed: Feed,
    path: Path,
    folder: Path,
    inbox: Path,
    staged: list[tuple[Path, Path]],
) -> Rendered:
    target = output_path(inbox, mapping, feed.name, _stem(path))
    where = f"{mapping.label}: feed {feed.name}: {path}"
    try:
        # The counts first (DuckDB reads only the columns they need), where the output's rows do
        # not tell them: a filter, a collapse or defaults to count. A file with more lines than
        # records + header holds a record spanning lines, which numbers lines another way; a file
        # without a quote character cannot hold one.
        sql = feed_sql(mapping, feed, path, folder, inbox, spanning=False)
        lines, quoted = scan_lines(path)
        stats = None
        if quoted or feed.filter or feed.distinct_on or sql.defaults:
            stats = con.execute(sql.stats).fetchone() or (0, 0, 0)
            if lines > int(stats[0]) + 1:
                sql = feed_sql(mapping, feed, path, folder, inbox, spanning=True)
        rows, changed = _copy(con, typed_sql(sql.select, _feed_columns(feed)), target, staged)
    except duckdb.Error as exc:
        raise MappingError([f"{where}: {read_problem(exc)}"]) from None
    # without a filter or a collapse every record is one output row (a lookup joins one row per key)
    read, kept, distinct = (int(stats[0]), int(stats[1]), int(stats[2])) if stats else (rows, rows, rows)
    rendered = Rendered(
        feed.name,
        str(path.relative_to(inbox)) if path.is_relative_to(inbox) else str(path),
        str(target.relative_to(inbox)),
        rows_read=read,
        rows_rendered=rows,
        rows_filtered_out=read - kept,
        rows_collapsed=kept - distinct,
        changed=changed,
    )
    nulls = dict(zip(sql.defaults, stats[3:], strict=True)) if stats else {}
    for name, spec in feed.placeholders().items():
        if spec.is_constant:
            rendered.placeholders[name] = {"value": spec.constant, "reason": spec.placeholder, "rows": rows}
        elif spec.default is not None:
            rendered.placeholders[name] = {"value": spec.default, "reason": spec.placeholder, "rows": int(nulls[name])}
        else:
            rendered.placeholders[name] = {"value": None, "reason": spec.placeholder, "rows": rows}
    return rendered


def sidecar_path(folder: Path, rendered: Rendered) -> Path:
    return Path(folder) / RENDERED / rendered.feed / f"{Path(rendered.output).stem}.json"


def _write_sidecars(mapping: Mapping, folder: Path, out: list[Rendered]) -> None:
    """Per output file, what it came from and its placeholder columns (deterministic: no clock)."""
    for r in out:
        if not r.rows_rendered:
            continue
        doc = {"mapping": mapping.label, "source": mapping.source, **asdict(r)}
        doc.pop("changed")
        target = sidecar_path(folder, r)
        text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)


def read_sidecars(mapping: Mapping, inbox: Path) -> dict[str, dict[str, Any]]:
    """Rendered output (relative to INBOX_DIR) -> its sidecar document."""
    out = {}
    for p in sorted((mapping.folder(inbox) / RENDERED).glob("*/*.json")):
        doc = json.loads(p.read_text(encoding="utf-8"))
        out[doc["output"]] = doc
    return out


def arrived_folders(inbox: Path) -> list[Path]:
    """The source folders `INBOX_DIR/sources/<name>/` holding foreign files."""
    root = Path(inbox) / "sources"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def arrived_clients(inbox: Path) -> dict[str, str]:
    """Client id -> source name, for the arrived sources that are one client each."""
    out = {}
    for folder in arrived_folders(inbox):
        if (SOURCES_DIR / f"{folder.name}.yaml").exists():
            mapping = load(folder.name)
            if mapping.client_id:
                out[mapping.client_id] = mapping.source
    return out


def render_arrived(inbox: Path, memory_limit: str | None = None) -> list[Rendered]:
    """Render every source whose foreign files sit in `INBOX_DIR/sources/<name>/` and that has a
    mapping (`sources/<name>.yaml`): what `delivery-lake run` and the inbox sensor do before they
    look for new feed files, so a foreign export lands like our own. A folder without a mapping is
    an error naming it (its files would otherwise never land), as is a mapping that does not fit."""
    out: list[Rendered] = []
    problems: list[str] = []
    for folder in arrived_folders(inbox):
        if not (SOURCES_DIR / f"{folder.name}.yaml").exists():
            problems.append(
                f"{folder}: foreign files without a mapping: write sources/{folder.name}.yaml "
                f"(`delivery-lake source init {folder.name} {folder}`)"
            )
            continue
        try:
            out += render(load(folder.name), inbox, memory_limit)
        except MappingError as exc:
            problems += exc.problems
    if problems:
        raise MappingError(problems)
    return out
