"""The checklist for a new source, and a first draft of its mapping.

`profile_file` describes a foreign CSV the way a person onboarding it needs: DuckDB's sniffer
(delimiter, line ends, date formats, types as the file stands) and, once trimmed and with the null
tokens removed, each column's type, nulls, distinct values and range. `checklist` runs a mapping
over the sample folder and lists what it still lacks (a vocabulary no value map covers, a key
that is not unique, a lookup that finds little, values that will not convert, rows the landing
will quarantine and why), each item naming the feed and column to act on. `draft` writes a first
mapping from the profiles for a person to finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from rapidfuzz import fuzz, process

from delivery_lake.contract import DUCKDB_TYPES, PLACEHOLDERS, TABLES, Table, optional_for_carrier
from delivery_lake.sources import render
from delivery_lake.sources.mapping import (
    Feed,
    Mapping,
    MappingError,
    foreign_files,
    foreign_header,
    load,
)
from delivery_lake.sql import ident, literal

# Text that exports use for "no value"; reported when seen, whether or not the mapping lists it.
COMMON_NULL_TOKENS = ("", "NaN", "nan", "NULL", "null", "None", "N/A", "NA", "n/a", "-", "?")
# Types a cleaned column is tried against, most specific first.
INFERRED = ("BIGINT", "DOUBLE", "TIMESTAMP", "DATE", "TIME", "BOOLEAN")
# A lookup finding fewer main rows than this is worth a look.
LOW_COVERAGE = 0.5
TOP = 8
# Words in a file's name that say which feed it is, and in a column's name what it holds: how
# exports commonly name them. Only for the draft, which a person checks.
FEED_WORDS = {
    "orders": ("orders",),
    "deliveries": ("deliveries", "delivery", "shipments"),
    "customer_feedback": ("reviews", "feedback", "ratings"),
    "clients": ("clients", "sellers", "merchants"),
    "depots": ("depots", "warehouses", "hubs"),
    "drivers": ("drivers", "couriers"),
    "vehicles": ("vehicles", "fleet"),
}
COLUMN_WORDS = {
    "created_at": ("purchase", "created", "order_date", "ordered"),
    "promised_by": ("estimated", "promised", "deadline"),
    "dispatched_at": ("carrier", "picked", "dispatch", "shipped"),
    "delivered_at": ("delivered_customer", "delivered"),
    "submitted_at": ("answer", "submitted", "creation"),
    "rating": ("score", "rating"),
    "comment": ("message", "comment"),
    "driver_id": ("delivery_person", "courier", "driver"),
    "dropoff_city": ("city",),
    "dropoff_postcode": ("zip", "postcode", "postal"),
    "dropoff_lat": ("location_latitude", "lat"),
    "dropoff_lon": ("location_longitude", "lon"),
    "status": ("status",),
    "feedback_id": ("review_id",),
    "delivery_id": ("order_id",),
}


@dataclass
class ColumnProfile:
    name: str
    sniffed: str  # DuckDB's sniffer, on the file as it is
    inferred: str  # once trimmed and without null tokens
    nulls: int
    distinct: int
    min: str | None
    max: str | None
    tokens: dict[str, int] = field(default_factory=dict)  # null tokens seen -> rows
    padded: int = 0  # values with leading or trailing spaces
    top: list[tuple[str, int]] = field(default_factory=list)  # for few distinct values


@dataclass
class FileProfile:
    path: Path
    rows: int
    delimiter: str
    newline: str
    date_format: str | None
    timestamp_format: str | None
    columns: list[ColumnProfile]

    def column(self, name: str) -> ColumnProfile | None:
        return next((c for c in self.columns if c.name == name), None)


def profile_file(path: Path, null_tokens: tuple[str, ...] = ("",), trim: bool = True) -> FileProfile:
    con = duckdb.connect()
    try:
        sniff = con.execute(f"SELECT * FROM sniff_csv({literal(str(path))})").fetchone()
        assert sniff is not None
        delimiter = sniff[0]
        sniffed = {c["name"].strip(): c["type"] for c in sniff[7]}
        header = foreign_header(path, delimiter)
        reader = render.reader_sql(path, header, delimiter)
        tokens = [t for t in COMMON_NULL_TOKENS if t.strip() == t]
        aggs = ["count(*)"]
        for h in header:
            q = ident(h)
            clean = _cleaned(h, trim, null_tokens)
            aggs += [
                f"count({clean})",
                f"count(DISTINCT {clean})",
                f"min({clean})",
                f"max({clean})",
                f"count_if({q} <> trim({q}))",
                *[f"count_if(trim({q}) = {literal(t)})" for t in tokens],
                *[f"count_if({clean} IS NOT NULL AND {_not_a(t, clean)})" for t in INFERRED],
            ]
        row = con.execute(f"SELECT {', '.join(aggs)} FROM {reader}").fetchone()
        assert row is not None
        rows = int(row[0])
        cols = []
        width = 5 + len(tokens) + len(INFERRED)
        for i, h in enumerate(header):
            vals = row[1 + i * width : 1 + (i + 1) * width]
            present, distinct, lo, hi, padded = vals[:5]
            seen = {t: int(n) for t, n in zip(tokens, vals[5 : 5 + len(tokens)], strict=True) if n}
            failures = vals[5 + len(tokens) :]
            inferred = next((t for t, bad in zip(INFERRED, failures, strict=True) if present and not bad), "VARCHAR")
            cols.append(
                ColumnProfile(h, sniffed.get(h, "?"), inferred, rows - present, int(distinct), lo, hi, seen, padded)
            )
        typed = [c for c in cols if c.inferred in ("BIGINT", "DOUBLE", "TIMESTAMP", "DATE", "TIME")]
        if typed:  # the range by value, not as text ('9.9' sorts after '10.5')
            sel = ", ".join(
                f"min(TRY_CAST({_cleaned(c.name, trim, null_tokens)} AS {c.inferred}))::VARCHAR, "
                f"max(TRY_CAST({_cleaned(c.name, trim, null_tokens)} AS {c.inferred}))::VARCHAR"
                for c in typed
            )
            got = con.execute(f"SELECT {sel} FROM {reader}").fetchone() or ()
            for i, c in enumerate(typed):
                c.min, c.max = got[2 * i], got[2 * i + 1]
        for c in cols:
            if c.inferred == "VARCHAR" and 0 < c.distinct <= 12:
                v = f"trim({ident(c.name)})" if trim else ident(c.name)
                c.top = [
                    (str(val), int(n))
                    for val, n in con.execute(
                        f"SELECT {v} AS v, count(*) FROM {reader} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 12"
                    ).fetchall()
                ]
        return FileProfile(path, rows, delimiter, sniff[3], sniff[8], sniff[9], cols)
    finally:
        con.close()


def _cleaned(name: str, trim: bool, null_tokens: tuple[str, ...]) -> str:
    v = f"trim({ident(name)})" if trim else ident(name)
    return f"CASE WHEN {v} IN ({', '.join(literal(t) for t in null_tokens)}) THEN NULL ELSE {v} END"


def _not_a(typ: str, v: str) -> str:
    """True where text `v` is not a value of `typ`. An integer is digits without a leading zero:
    DuckDB casts '58.90' to BIGINT by rounding, and '01151' (a postcode) would lose its zero."""
    if typ == "BIGINT":
        return f"NOT regexp_full_match({v}, '-?(0|[1-9][0-9]*)')"
    return f"TRY_CAST({v} AS {typ}) IS NULL"


def describe(p: FileProfile) -> list[str]:
    fmt = ", ".join(f for f in (p.date_format, p.timestamp_format) if f)
    out = [
        f"{p.path.name}: {p.rows:,} rows, {len(p.columns)} columns, delimiter {p.delimiter!r}, "
        f"line ends {p.newline}{', date format ' + fmt if fmt else ''}"
    ]
    for c in p.columns:
        typ = c.inferred if c.inferred == c.sniffed else f"{c.inferred} (sniffed as {c.sniffed})"
        extra = []
        if c.tokens:
            extra.append("null tokens " + ", ".join(f"{t!r} x{n}" for t, n in c.tokens.items()))
        if c.padded:
            extra.append(f"{c.padded} padded with spaces")
        if c.top:
            extra.append("values " + ", ".join(f"{v!r} x{n}" for v, n in c.top[:TOP]))
        rng = f"{c.min!r} .. {c.max!r}" if c.min is not None else "all null"
        out.append(
            f"    {c.name}: {typ}; {c.nulls} null; ~{c.distinct} distinct; {rng}" + "".join(f"; {e}" for e in extra)
        )
    return out


# ---------------------------------------------------------------------------------------------
# The checklist


@dataclass
class Checklist:
    title: str
    profiles: list[FileProfile] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)  # the mapping lacks it
    notes: list[str] = field(default_factory=list)  # what the landing will do; placeholders to confirm
    usable: bool = True

    def render(self) -> str:
        lines = [self.title, "", "Foreign files:"]
        for p in self.profiles:
            lines += ["  " + line for line in describe(p)]
        lines += ["", "Checklist:"]
        lines += [f"  [x] {d}" for d in self.done]
        lines += [f"  [ ] {t}" for t in self.todo]
        lines += [f"  [!] {n}" for n in self.notes]
        verdict = (
            "the mapping can be rendered"
            if self.usable
            else "the mapping cannot be used until the [ ] items above are fixed"
        )
        lines += ["", f"{len(self.todo)} to do, {len(self.notes)} to confirm: {verdict}."]
        return "\n".join(lines)


def checklist(path: str | Path, sample: Path) -> Checklist:
    """Check the mapping at `path` against the foreign files in `sample`."""
    sample = Path(sample)
    out = Checklist(f"Source mapping {path} against {sample}")
    try:
        mapping = load(path)
    except MappingError as exc:
        out.todo += exc.problems
        out.usable = False
        return out
    out.title = f"Source {mapping.source} ({mapping.label}) against {sample}"
    used = sorted({f for feed in mapping.feeds.values() for f in _files_of(feed, sample)})
    out.profiles = [profile_file(f, mapping.null_tokens, mapping.trim) for f in used]
    out.done.append("the mapping is valid against the contract")
    try:
        warnings = render.check(mapping, sample)
    except MappingError as exc:
        out.todo += exc.problems
        out.usable = False
        return out
    out.done.append("every foreign column the mapping reads is in the files' headers, and every expression runs")
    out.notes += warnings
    _null_tokens(mapping, out)
    con = duckdb.connect()
    try:
        outputs: dict[str, list[str]] = {}
        for feed in mapping.feeds.values():
            outputs[feed.name] = _materialise(con, mapping, feed, sample)
        for feed in mapping.feeds.values():
            for table in outputs[feed.name]:
                _check_output(con, mapping, feed, table, out)
            if not feed.is_constant:
                _lookup_coverage(con, mapping, feed, sample, out)
        _references(con, mapping, outputs, out)
    finally:
        con.close()
    for feed in mapping.feeds.values():
        if feed.placeholder:
            out.notes.append(f"feed {feed.name}: placeholder rows ({feed.placeholder})")
            continue
        for name, spec in feed.placeholders().items():
            value = spec.constant if spec.is_constant else spec.default
            what = f"{value!r}" if value is not None else "derived"
            where = "where the source has none" if spec.default is not None else "in every row"
            out.notes.append(f"feed {feed.name}, column {name}: placeholder {what} {where} ({spec.placeholder})")
    return out


def _files_of(feed: Feed, sample: Path) -> list[Path]:
    if feed.is_constant:
        return []
    out = foreign_files(sample, feed.from_ or "")
    for lk in feed.lookups:
        out += foreign_files(sample, lk.from_)
    return out


def _null_tokens(mapping: Mapping, out: Checklist) -> None:
    for p in out.profiles:
        for c in p.columns:
            missed = {t: n for t, n in c.tokens.items() if t not in mapping.null_tokens}
            if missed:
                out.todo.append(
                    f"{p.path.name}, column {c.name}: "
                    + ", ".join(f"{t!r} ({n} rows)" for t, n in missed.items())
                    + " looks like a null token the mapping does not list (null_tokens)"
                )
            if c.padded and not mapping.trim:
                out.todo.append(f"{p.path.name}, column {c.name}: {c.padded} values padded with spaces; set trim: true")


def _materialise(con: duckdb.DuckDBPyConnection, mapping: Mapping, feed: Feed, sample: Path) -> list[str]:
    """The feed's rendered rows per foreign file, as temp tables (a sample is small)."""
    tables = []
    if feed.is_constant:
        name = f"out_{feed.name}_0"
        con.execute(f"CREATE TEMP TABLE {name} AS {render.constant_sql(mapping, feed)}")
        return [name]
    for i, path in enumerate(foreign_files(sample, feed.from_ or "")):
        name = f"out_{feed.name}_{i}"
        con.execute(f"CREATE TEMP TABLE {name} AS {render.feed_sql(mapping, feed, path, sample, None).select}")
        tables.append(name)
    return tables


def _check_output(con: duckdb.DuckDBPyConnection, mapping: Mapping, feed: Feed, table: str, out: Checklist) -> None:
    t = feed.table
    file = con.execute(f"SELECT first(source_file) FROM {table}").fetchone()
    where = f"feed {feed.name} ({(file or [''])[0]})"
    for c in t.columns:
        if c.name == PLACEHOLDERS:
            continue  # computed from the declared placeholders
        col = ident(c.name)
        spec = (feed.rows[0] if feed.rows else feed.columns)[c.name]
        if c.allowed:
            bad = con.execute(
                f"SELECT {col}, count(*) FROM {table} WHERE {col} IS NOT NULL AND {col} NOT IN "
                f"({', '.join(literal(a) for a in c.allowed)}) GROUP BY 1 ORDER BY 2 DESC LIMIT {TOP}"
            ).fetchall()
            if bad:
                vals = ", ".join(f"{v!r} ({n} rows)" for v, n in bad)
                out.todo.append(
                    f"{where}, column {c.name}: {vals} not allowed ({', '.join(c.allowed)}); "
                    "add them to value_maps, or they are quarantined as not_allowed"
                )
            elif not spec.is_constant:
                out.done.append(f"{where}, column {c.name}: every value is allowed")
        optional = c.nullable or (mapping.carrier and optional_for_carrier(t.name, c.name))
        nulls = 0 if optional else (con.execute(f"SELECT count_if({col} IS NULL) FROM {table}").fetchone() or [0])[0]
        if nulls:
            out.notes.append(f"{where}, column {c.name}: {nulls} rows have no value: quarantined as missing:{c.name}")
        if c.dtype != "string":
            typ = DUCKDB_TYPES[c.dtype]
            stats = con.execute(
                f"SELECT min(TRY_CAST({col} AS {typ}))::VARCHAR, max(TRY_CAST({col} AS {typ}))::VARCHAR, "
                f"count_if(TRY_CAST({col} AS {typ}) IS NULL AND {col} IS NOT NULL), "
                f"first({col}) FILTER (WHERE TRY_CAST({col} AS {typ}) IS NULL AND {col} IS NOT NULL)"
                + (f", count_if(TRY_CAST({col} AS DOUBLE) < {c.min})" if c.min is not None else ", 0")
                + (f", count_if(TRY_CAST({col} AS DOUBLE) > {c.max})" if c.max is not None else ", 0")
                + f" FROM {table}"
            ).fetchone()
            assert stats is not None
            lo, hi, bad_n, example, below, above = stats
            if c.dtype in ("timestamp", "date") and lo is not None and not spec.is_constant:
                out.done.append(f"{where}, column {c.name}: {lo} .. {hi} (UTC)")
            if bad_n:
                out.todo.append(
                    f"{where}, column {c.name}: {bad_n} values do not convert to {c.dtype} (e.g. {example!r}); "
                    "fix the expression or `format`, or they are quarantined"
                )
            if below or above:
                out.notes.append(
                    f"{where}, column {c.name}: {below + above} values outside {c.min}..{c.max}: "
                    f"quarantined as range:{c.name}"
                )
    typed = ", ".join(f"TRY_CAST({ident(c.name)} AS {DUCKDB_TYPES[c.dtype]}) AS {ident(c.name)}" for c in t.columns)
    for rule in t.rules:
        broken = con.execute(f"SELECT count_if(NOT ({rule.sql})) FROM (SELECT {typed} FROM {table})").fetchone()
        if broken and broken[0]:
            out.notes.append(
                f"{where}: {broken[0]} rows break rule {rule.name} ({rule.description}): "
                f"quarantined as rule:{rule.name}"
            )
    key = ident(t.key)
    dup = con.execute(
        f"SELECT count(*), sum(n), first(k) FROM (SELECT {key} AS k, count(*) AS n FROM {table} "
        f"WHERE {key} IS NOT NULL GROUP BY 1 HAVING count(*) > 1)"
    ).fetchone()
    if dup and dup[0]:
        out.notes.append(
            f"{where}, key {t.key}: {dup[0]} values appear more than once ({dup[1]} rows, e.g. {dup[2]!r}): "
            "the last line lands, earlier ones are quarantined as duplicate"
        )
    else:
        out.done.append(f"{where}, key {t.key}: unique")


def _lookup_coverage(
    con: duckdb.DuckDBPyConnection, mapping: Mapping, feed: Feed, sample: Path, out: Checklist
) -> None:
    for path in foreign_files(sample, feed.from_ or ""):
        for lk in feed.lookups:
            cte = render._lookup_cte(mapping, lk, sample)
            f = render._cleaned_files(mapping, [path], lines=False)
            row = con.execute(
                f"WITH f AS ({f}), {cte} SELECT count(*), count(l.__key) FROM f "
                f"LEFT JOIN {ident('lk_' + lk.name)} l ON l.__key = ({render._qualify(lk.on)})"
            ).fetchone()
            assert row is not None
            total, found = int(row[0]), int(row[1])
            share = found / total if total else 1.0
            text = (
                f"feed {feed.name}, lookup {lk.name}: {found} of {total} rows of {path.name} "
                f"({share:.0%}) find a row in {lk.from_}"
            )
            if share < LOW_COVERAGE:
                out.notes.append(text + "; the others take the columns' defaults (placeholders) or nulls")
            else:
                out.done.append(text)


def _references(
    con: duckdb.DuckDBPyConnection, mapping: Mapping, outputs: dict[str, list[str]], out: Checklist
) -> None:
    """Keys this source's rows reference, found among the keys it renders itself."""
    for feed in mapping.feeds.values():
        for c in feed.table.columns:
            if not c.references or c.references[0] not in outputs or not outputs[feed.name]:
                continue
            parent, pkey = c.references
            child = " UNION ALL ".join(f"SELECT {ident(c.name)} AS k FROM {t}" for t in outputs[feed.name])
            keys = " UNION ALL ".join(f"SELECT {ident(pkey)} AS k FROM {t}" for t in outputs[parent])
            row = con.execute(f"SELECT count(*), count_if(k IN ({keys})) FROM ({child}) WHERE k IS NOT NULL").fetchone()
            assert row is not None
            total, found = int(row[0]), int(row[1])
            if total == found:
                out.done.append(f"feed {feed.name}, column {c.name}: every value is a {parent}.{pkey} of this source")
                continue
            fate = (
                "they wait as pending, then are quarantined as orphan:" + c.name
                if TABLES[parent].is_fact
                else f"quarantined as orphan:{c.name} unless another source brings them"
            )
            out.notes.append(
                f"feed {feed.name}, column {c.name}: {total - found} of {total} rows reference a {parent}.{pkey} "
                f"this source does not render: {fate}"
            )


# ---------------------------------------------------------------------------------------------
# A first draft


def draft(name: str, sample: Path) -> str:
    """A mapping for the CSV files in `sample`, guessed from their profiles, for a person to finish."""
    files = foreign_files(Path(sample), "*.csv")
    if not files:
        raise MappingError([f"{sample}: no CSV files to draft a mapping from"])
    profiles = [profile_file(f, COMMON_NULL_TOKENS, True) for f in files]
    tokens = sorted({t for p in profiles for c in p.columns for t in c.tokens} | {""})
    padded = any(c.padded for p in profiles for c in p.columns)
    lines = [
        f"# First draft for {name}, written by `delivery-lake source init` from {len(files)} file(s) in {sample}.",
        "# Every TODO needs a person: check each guess, then run",
        f"#   delivery-lake source check sources/{name}.yaml --sample {sample}",
        "# until its checklist has nothing left to do.",
        f"source: {name}",
        "timezone: UTC  # TODO: the IANA zone the export's naive timestamps are in",
        f"null_tokens: [{', '.join(_yaml_str(t) for t in tokens)}]  # seen in the files",
        f"trim: {'true' if padded else 'false'}",
        "",
        "client:",
        f"  id: {name.upper()[:60]}  # TODO: the client id (or `column: <SQL>` if a column carries it)",
        "  row:",
    ]
    for c in TABLES["clients"].columns:
        if c.name != "client_id":
            lines.append(f"    {c.name}: {{constant: TODO, placeholder: TODO}}")
    lines += ["", "feeds:"]
    for t in TABLES.values():
        if t.name == "clients":
            continue
        best = _best_file(t, profiles)
        if best is None:
            lines += [
                f"  # {t.name}: no file looked like it. Map it, or declare a placeholder row:",
                f"  # {t.name}:",
                "  #   placeholder: TODO why the source has none",
                "  #   row: {" + ", ".join(f"{c.name}: TODO" for c in t.columns if not c.header_optional) + "}",
            ]
            continue
        lines += [f"  {t.name}:", f"    from: {best.path.name}", "    columns:"]
        for c in t.columns:
            if (t.is_fact and c.name == t.client_column) or c.header_optional:
                continue
            lines.append(f"      {c.name}: {_guess(c.name, c.dtype, best)}")
    return "\n".join(lines) + "\n"


def _yaml_str(t: str) -> str:
    return '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _best_file(t: Table, profiles: list[FileProfile]) -> FileProfile | None:
    """The file named like the feed (`olist_orders_dataset` for orders); for a fact, else the file
    whose columns look most like the feed's, when enough of them do (one file may feed several)."""
    words = FEED_WORDS.get(t.name, (t.name,))
    for p in profiles:
        if set(p.path.stem.lower().replace("-", "_").split("_")) & set(words):
            return p
    if not t.is_fact:
        return None
    scored = [(sum(_match(c.name, p) is not None for c in t.columns), p) for p in profiles]
    hits, best = max(scored, key=lambda s: s[0])
    return best if hits >= len(t.columns) // 3 else None


def _match(column: str, p: FileProfile) -> str | None:
    """The foreign column that looks like contract `column`: by name, or by a word exports use for it."""
    names = [c.name for c in p.columns]
    found = process.extractOne(column, names, scorer=fuzz.WRatio, score_cutoff=85)
    if found:
        return str(found[0])
    for hint in COLUMN_WORDS.get(column, ()):
        for name in names:
            if hint in name.lower():
                return name
    return None


def _guess(column: str, dtype: str, p: FileProfile) -> str:
    name = _match(column, p)
    if name is None:
        return "{constant: TODO, placeholder: TODO}  # no column looked like it"
    col = p.column(name)
    assert col is not None
    ref = name if name.isidentifier() else f'"\\"{name}\\""'
    if dtype in ("timestamp", "date"):
        fmt = _format_of(col, p)
        fmt_text = f'"{fmt}"' if fmt else "TODO"
        return f"{{sql: {ref}, format: {fmt_text}}}  # TODO: check (guessed from {col.inferred})"
    return f"{ref}  # TODO: check ({col.inferred}, e.g. {col.min!r})"


def _format_of(col: Any, p: FileProfile) -> str | None:
    if col.inferred == "TIMESTAMP":
        return p.timestamp_format or "%Y-%m-%d %H:%M:%S"
    if col.sniffed == "DATE" or col.inferred == "DATE":
        return p.date_format or "%Y-%m-%d"
    return None
