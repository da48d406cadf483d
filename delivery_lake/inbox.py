"""What has arrived in the inbox, and which partitions each file touches.

Files are found by convention: `INBOX/<table>/*.csv`, or compressed as `*.csv.gz` (gzip)
or `*.csv.zst` (zstd), read as they stream, never decompressed whole. Any other file in a
feed folder is refused by name (`refused_files`) rather than silently left out. Names
starting with `.` or `_` are ignored: that is where copy tools, editors and exporters
keep files still being written (`.orders.csv.swp`, rsync's `.name.XXXXXX`, `_tmp_...`)
before renaming them, and landing one of those would land half a file.

A source mapping's output is the one other kind of file a feed folder holds: a client's
foreign export rendered onto the contract (sources/render.py) as `<source>--<stem>.parquet`,
already typed, each value that did not convert left NULL and named in `_unparseable` with the
row as text in `_raw_line`. The landing reads it as it reads a CSV, those rows becoming the
rejected lines a CSV reader would have set aside: parsing the foreign file once is what keeps
onboarding a client about as fast as landing our own feeds.

A fact file may touch several dates and clients, so each file is scanned once (one
streaming DuckDB pass over two columns) and the result is cached in the lake under
`_meta/inbox_index/`, keyed by the file's size and modification time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from delivery_lake.config import DEFAULT_PARTITION_START
from delivery_lake.contract import TABLES, Table
from delivery_lake.sql import literal
from delivery_lake.storage import Lake

DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
# Bumped when what a scan counts changes, so older cached entries are scanned again.
# 3: a name's date counts only when it is a real date (2026-02-30 is none).
INDEX_VERSION = 3
# Name ending -> DuckDB's `compression=` (None: plain text): its CSV reader decompresses
# gzip and zstd as it goes, and no other codec (bz2, xz, zip).
READABLE = {".csv": None, ".csv.gz": "gzip", ".csv.zst": "zstd"}
# A source mapping's typed output (see the module's docstring), and its two internal columns.
RENDERED_ENDING = ".parquet"
UNPARSEABLE, RAW_LINE = "_unparseable", "_raw_line"
# DuckDB's max_line_size for a source CSV, and how far the header check reads.
MAX_LINE = 10_000_000


class InputError(ValueError):
    """Bad input that must stop the landing before anything is written."""


@dataclass
class FileEntry:
    path: str
    fingerprint: str
    nominal_date: str | None
    # date -> raw client value -> rows that parsed; lines DuckDB rejected are counted in
    # `malformed` and belong to the file's nominal date
    partitions: dict[str, dict[str, int]] = field(default_factory=dict)
    malformed: int = 0
    header: list[str] = field(default_factory=list)
    # True while only the name's date is known (scan deferred to the landing that reads the
    # file, which learns the real partitions in the same pass; see Landing.land_fact)
    provisional: bool = False

    @property
    def rows(self) -> int:
        return sum(sum(c.values()) for c in self.partitions.values()) + self.malformed

    @property
    def dates(self) -> set[str]:
        out = set(self.partitions)
        if self.malformed and self.nominal_date:
            out.add(self.nominal_date)
        return out

    def to_json(self) -> dict:
        return {
            "v": INDEX_VERSION,
            "fingerprint": self.fingerprint,
            "nominal_date": self.nominal_date,
            "partitions": self.partitions,
            "malformed": self.malformed,
            "header": self.header,
        }


def compression(path: Path | str) -> str | None:
    """DuckDB's `compression=` for a source file (None: plain CSV). KeyError if it is not read."""
    name = Path(path).name.lower()
    for ending, codec in READABLE.items():
        if name.endswith(ending):
            return codec
    raise KeyError(str(path))


def is_rendered(path: Path | str) -> bool:
    """A source mapping's output: `<source>--<stem>.parquet` (any other Parquet file is refused)."""
    name = Path(path).name
    return name.lower().endswith(RENDERED_ENDING) and "--" in name


def _readable(p: Path) -> bool:
    if is_rendered(p):
        return True
    try:
        compression(p)
    except KeyError:
        return False
    return True


def _feed_files(inbox: Path, table: str) -> list[Path]:
    folder = Path(inbox) / table
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name[0] not in "._")


def list_files(inbox: Path, table: str) -> list[Path]:
    """The files of a feed that are landed: plain or compressed CSV."""
    return [p for p in _feed_files(inbox, table) if _readable(p)]


def refused_files(inbox: Path, table: str) -> list[tuple[Path, str]]:
    """The other files of a feed folder, each with why it is not read.

    An exporter that switches to `.xlsx` or `.csv.bz2` must hear about it: left out
    silently, its data would just never arrive.
    """
    return [(p, _refusal(p)) for p in _feed_files(inbox, table) if not _readable(p)]


def _refusal(p: Path) -> str:
    accepted = ", ".join(READABLE)
    if Path(p.stem).suffix.lower() == ".csv":
        return f"{p}: {p.suffix} compression is not read; send it as {accepted}"
    return (
        f"{p}: not a CSV export ({p.suffix or 'no extension'}); only {accepted} files are landed: "
        "export it as UTF-8 CSV or move it out of the inbox"
    )


def name_date(path: Path | str) -> str | None:
    """The date a file's name announces, if it is a real date (`2026-02-30` is not one)."""
    found = DATE_IN_NAME.search(Path(path).name)
    if not found:
        return None
    try:
        return date.fromisoformat(found.group(1)).isoformat()
    except ValueError:
        return None


def fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _open(path: Path, codec: str | None) -> Any:
    if codec == "gzip":
        import gzip

        return gzip.open(path, "rb")
    if codec == "zstd":
        import pyarrow as pa  # the standard library of Python < 3.14 has no zstd

        return pa.input_stream(str(path), compression="zstd")
    return open(path, "rb")


def _head(path: Path) -> tuple[bytes, bool]:
    """The header line, raw, and whether a non-blank line follows it. Read a chunk at a time
    and only as far as that takes: a compressed file is never decompressed whole, a first
    data line of megabytes is not read to its end."""
    codec = compression(path)
    buf = bytearray()
    try:
        with _open(path, codec) as fh:
            while len(buf) <= MAX_LINE:
                end = buf.find(b"\n")
                rest = buf[end + 1 :] if end >= 0 else b""
                if end >= 0 and (rest.strip() or b"\n" in rest):
                    break
                chunk = fh.read(1 << 16)
                if not chunk:
                    break
                buf += chunk
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read as {codec} ({exc}); re-send the file") from None
    header, _, rest = bytes(buf).partition(b"\n")
    return header.removesuffix(b"\r"), bool(rest.split(b"\n", 1)[0].strip())


def _not_utf8(first: bytes) -> str | None:
    """What a header line that is not UTF-8 looks like instead; None if it is UTF-8.

    Without this, a UTF-16 export fails as 'missing every contract column', which sends
    people looking at the columns rather than at the encoding.
    """
    if first.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "looks like UTF-32"
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "looks like UTF-16"
    if b"\x00" in first:
        return "looks like UTF-32" if b"\x00\x00\x00" in first else "looks like UTF-16"
    try:
        first.decode("utf-8")
    except UnicodeDecodeError:
        return "the header has bytes that are not UTF-8: Windows-1252 or Latin-1, perhaps"
    return None


def read_header(path: Path, table: Table) -> list[str]:
    """The file's header, validated against the contract. Raises InputError naming the file and column."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not _readable(path):
        raise InputError(_refusal(path))
    if is_rendered(path):
        return _rendered_header(path, table)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (expected a header with columns {', '.join(table.column_names)})")
    first, has_rows = _head(path)
    problem = _not_utf8(first)
    if problem:
        raise InputError(f"{path}: not UTF-8 text ({problem}); re-export the file as UTF-8")
    if not first.strip():
        raise InputError(
            f"{path}: the first line is blank (expected a header with columns {', '.join(table.column_names)})"
        )
    import csv

    header = [h.strip() for h in next(csv.reader([first.decode("utf-8-sig")]))]
    missing = [c for c in table.file_columns if c not in header]
    if missing:
        raise InputError(f"{path}: header is missing contract column(s) {', '.join(missing)} for table {table.name}")
    if not has_rows:
        raise InputError(f"{path}: header only, no data rows (table {table.name})")
    return header


def _rendered_header(path: Path, table: Table) -> list[str]:
    """A rendered file's columns, checked as a CSV header is (the internal ones left out)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read as Parquet ({exc}); render the source again") from None
    header = [n for n in meta.schema.names if n not in (UNPARSEABLE, RAW_LINE)]
    missing = [c for c in table.file_columns if c not in header]
    if missing:
        raise InputError(f"{path}: missing contract column(s) {', '.join(missing)} for table {table.name}")
    if meta.num_rows == 0:
        raise InputError(f"{path}: no data rows (table {table.name})")
    return header


def rendered_rows_sql(path: Path | str, unparseable: bool) -> str:
    """A rendered file's rows in file order, each with its record number `_record` (header =
    line 1, as a CSV reader numbers lines): the rows that typed, or those with a value that did not."""
    cond = "IS NOT NULL" if unparseable else "IS NULL"
    return (
        f"(SELECT * FROM (SELECT *, row_number() OVER () + 1 AS _record FROM read_parquet({literal(str(path))})) "
        f"WHERE {UNPARSEABLE} {cond})"
    )


def rendered_rejects(name: str, path: Path | str) -> str:
    """Create the rejects table `name` for a rendered file: a row per value that did not convert,
    shaped as the CSV reader's rejects (the line is the record's number, the raw line the row's
    text), so the inbox scan, the quarantine and their counts treat both kinds of file alike."""
    return f"""CREATE TEMP TABLE {name} AS
        SELECT _record AS line, 'CAST' AS error_type, unnest(string_split({UNPARSEABLE}, ';')) AS column_name,
               {RAW_LINE} AS csv_line
        FROM {rendered_rows_sql(path, unparseable=True)}"""


def csv_source_sql(path: Path | str, header: list[str], table: Table, rejects_table: str) -> str:
    """The one way this project reads a source CSV: typed while parsing, bad lines set aside.

    DuckDB casts each contract column as it parses (several times faster than casting text
    afterwards); a line that does not parse (a value that does not cast, a ragged line,
    invalid UTF-8) goes to `rejects_table` with its line number, column and the raw line.
    Columns are named from the header we validated, so DuckDB's sniffer never guesses.
    """
    types = {c.name: c.duckdb_type for c in table.columns}
    columns = ", ".join(f"{literal(h)}: {literal(types.get(h, 'VARCHAR'))}" for h in header)
    opts = [
        "header=true",
        "delim=','",
        "quote='\"'",
        "escape='\"'",
        "auto_detect=false",
        f"columns={{{columns}}}",
        f"max_line_size={MAX_LINE}",
        "store_rejects=true",
        f"rejects_table='{rejects_table}'",
        f"rejects_scan='{rejects_table}_scan'",
    ]
    codec = compression(path)
    if codec:
        opts.append(f"compression='{codec}'")
    return f"read_csv({literal(str(path))}, {', '.join(opts)})"


def ensure_rejects_table(con: object, name: str) -> None:
    """DuckDB only creates the rejects table when a line was rejected."""
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (line BIGINT, error_type VARCHAR, csv_line VARCHAR)")  # type: ignore[attr-defined]


def _scan(lake: Lake, path: Path, table: Table) -> FileEntry:
    import duckdb

    header = read_header(path, table)
    nominal = name_date(path)
    con = lake.duckdb()
    try:
        if is_rendered(path):
            # typed already: the rows that did not type are this file's malformed lines, and
            # nothing is left to parse (only the columns counted are read)
            src = rendered_rows_sql(path, unparseable=False)
            con.execute(rendered_rejects("rej", path))
            parse_all = "count(*)"
        else:
            src = csv_source_sql(path, header, table, "rej")
            # Every contract column is converted (an unused aggregate keeps DuckDB from skipping
            # it), so a line the landing's reader rejects is `malformed` here too.
            parse_all = ", ".join(f'count("{c.name}")' for c in table.columns if c.name in header)
        if table.is_fact:
            pcol, ccol = table.partition_column, table.client_column
            rows = con.execute(
                f"""SELECT CAST("{pcol}" AS DATE)::VARCHAR AS d, coalesce(trim("{ccol}"), '') AS c, """
                f"""count(*) AS n, {parse_all}
                    FROM {src} GROUP BY ALL"""
            ).fetchall()
            rows = [r[:3] for r in rows]
        else:
            # fetchall: the rejects table is complete only once the result is consumed
            rows = [(None, "", con.execute(f"SELECT count(*), {parse_all} FROM {src}").fetchall()[0][0])]
        ensure_rejects_table(con, "rej")
        malformed = con.execute("SELECT count(DISTINCT line) FROM rej").fetchone()[0]  # type: ignore[index]
    except duckdb.Error as exc:
        # a compressed file cut short, for one: name the file, not just DuckDB's complaint
        raise InputError(f"{path}: cannot be read ({str(exc).splitlines()[0]}); re-send the file") from None
    finally:
        con.close()
    if table.is_fact and nominal is None:
        by_date: dict[str, int] = {}
        for d, _c, n in rows:
            if d is not None:
                by_date[d] = by_date.get(d, 0) + n
        nominal = max(sorted(by_date), key=lambda k: by_date[k]) if by_date else None
    parts: dict[str, dict[str, int]] = {}
    for d, c, n in rows:
        key = d if d is not None else (nominal or "unknown")  # only a NULL partition value
        if not table.is_fact:
            key = "all"
        parts.setdefault(key, {})
        parts[key][c] = parts[key].get(c, 0) + n
    return FileEntry(str(path), fingerprint(path), nominal, parts, int(malformed), header)


def inbox_partitions(lake: Lake, inbox: Path) -> set[tuple[str, str, str]] | None:
    """(table, date, client) of every fact row in the inbox, from the index: a run may span the
    pairs outside this set, which hold nothing to land. A file not scanned yet, one that cannot
    be read and one with malformed lines count for every client ("*") of the date in their
    name; None when such a file has no date in its name (it could hold any date)."""
    out: set[tuple[str, str, str]] = set()
    for table in TABLES.values():
        if not table.is_fact:
            continue
        unread: dict[str, str] = {}
        for e in InboxIndex(lake, inbox, table).entries(errors=unread):
            if (e.provisional or e.malformed) and e.nominal_date:
                out.add((table.name, e.nominal_date, "*"))
            for d, clients in e.partitions.items():
                out |= {(table.name, d, c) for c in clients}
        refused = [Path(p) for p in unread] + [p for p, _why in refused_files(inbox, table.name)]
        for path in refused:
            named = name_date(path)
            if named is None:
                return None
            out.add((table.name, named, "*"))
    return out


class InboxIndex:
    """Cached scan results for one table's inbox folder."""

    def __init__(self, lake: Lake, inbox: Path, table: Table):
        self.lake, self.inbox, self.table = lake, Path(inbox), table
        self._cache_path = lake.meta_path("inbox_index", f"{table.name}.json")

    def entries(
        self,
        refresh: bool = True,
        paths: list[Path] | None = None,
        dates: set[str] | None = None,
        defer_scan: bool = False,
        rescan: bool = False,
        errors: dict[str, str] | None = None,
    ) -> list[FileEntry]:
        """Scan results for `paths` (default: every file of the table).

        With `dates`, a file that fails its header check but whose name dates it outside
        `dates` is skipped: a broken file for one day does not block landing the others.
        With `defer_scan`, a file not scanned yet whose name carries a date is returned as a
        provisional entry touching that date only, without reading it. With `rescan`, every
        file is scanned again, whatever the cache holds (an audit wants its own count).
        With `errors`, a file that cannot be read is recorded there (path -> why) and left
        out, instead of raising: one bad file does not hide what the others hold.
        """
        cached: dict = self.lake.read_json(self._cache_path, default={}) or {}
        out: list[FileEntry] = []
        changed = False
        for path in paths if paths is not None else list_files(self.inbox, self.table.name):
            try:
                entry, scanned = self._entry(path, cached, dates, defer_scan, rescan)
            except InputError as exc:
                if errors is None:
                    raise
                errors[str(path)] = str(exc)
                continue
            if entry is None:
                continue
            if scanned:
                cached[str(path)] = entry.to_json()
                changed = True
            out.append(entry)
        if changed and refresh:
            self.lake.write_json(self._cache_path, cached)
        return out

    def _entry(
        self, path: Path, cached: dict, dates: set[str] | None, defer_scan: bool, rescan: bool
    ) -> tuple[FileEntry | None, bool]:
        """One file's entry (None: skipped), and whether it was scanned just now."""
        named = name_date(path)
        if dates is not None:
            try:
                read_header(path, self.table)
            except InputError:
                # by the name's text: a broken `2026-02-30.csv` is no reason to stop other days
                announced = DATE_IN_NAME.search(path.name)
                if announced and announced.group(1) not in dates:
                    return None, False
                raise
        fp = fingerprint(path)
        hit = None if rescan else cached.get(str(path))
        if hit and hit.get("fingerprint") == fp and hit.get("v") == INDEX_VERSION:
            return FileEntry(
                str(path), fp, hit["nominal_date"], hit["partitions"], hit["malformed"], hit["header"]
            ), False
        if defer_scan and named:
            header = read_header(path, self.table)
            return FileEntry(str(path), fp, named, {named: {}}, 0, header, provisional=True), False
        return _scan(self.lake, path, self.table), True

    def remember(self, entries: list[FileEntry]) -> None:
        """Cache scan results learned elsewhere (a landing counts partitions as it reads)."""
        learned = [e for e in entries if not e.provisional]
        if not learned:
            return
        cached: dict = self.lake.read_json(self._cache_path, default={}) or {}
        for e in learned:
            cached[e.path] = e.to_json()
        self.lake.write_json(self._cache_path, cached)


def touched_partitions(entries: list[FileEntry]) -> dict[str, set[str]]:
    """date -> raw client ids touched by these files."""
    out: dict[str, set[str]] = {}
    for e in entries:
        for d, clients in e.partitions.items():
            out.setdefault(d, set()).update(c for c in clients if c)
        if e.malformed and e.nominal_date:
            out.setdefault(e.nominal_date, set())
    return out


def table_for(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise InputError(f"unknown table {name!r}; expected one of {', '.join(TABLES)}") from None


@dataclass
class InboxChanges:
    cursor: dict[str, str]
    dimensions: list[str]
    facts: dict[str, dict[str, set[str]]]  # table -> date -> raw client ids
    # Files that cannot be landed (bad header, empty...), with the reason. They stay out
    # of the cursor, so a corrected file (new fingerprint) is picked up again.
    errors: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.dimensions and not self.facts


def partition_bounds(partition_start: str, today: date | None = None) -> tuple[str, str]:
    """The first and last date a fact partition can have: PARTITION_START, and today in UTC
    (the daily partitions have end_offset=1: today's partition exists, tomorrow's not yet)."""
    return partition_start, (today or datetime.now(UTC).date()).isoformat()


def date_problem(entry: FileEntry, table: Table, bounds: tuple[str, str]) -> str | None:
    """Why a fact file cannot land by its dates (None: it can).

    Checked when the inbox is scanned, before any run: a date outside the partition range
    would otherwise fail the Dagster run that asks for it, naming neither file nor table,
    and a file with no date at all has no partition to go to.
    """
    if not table.is_fact:
        return None
    dates = sorted(entry.dates)
    if not dates or any(not _is_date(d) for d in dates):
        found = DATE_IN_NAME.search(Path(entry.path).name)
        in_name = f"{found.group(1)} in its name is not a real date" if found else "its name holds no YYYY-MM-DD date"
        unread = f" ({entry.malformed} line(s) could not be read)" if entry.malformed else ""
        return (
            f"{entry.path}: no date to file it under: {in_name} and no row has a {table.partition_column}{unread}; "
            "name the file for its day or fix its rows"
        )
    first, last = bounds
    out = []
    early = [d for d in dates if d < first]
    if early:
        out.append(f"{_span(early)} before PARTITION_START {first} (set PARTITION_START to land them)")
    late = [d for d in dates if d > last]
    if late:
        out.append(f"{_span(late)} after today ({last}, UTC), the last date partition")
    return f"{entry.path}: " + "; ".join(out) if out else None


def _span(dates: list[str]) -> str:
    return f"date {dates[0]} is" if len(dates) == 1 else f"dates {dates[0]}..{dates[-1]} are"


def _is_date(d: str) -> bool:
    try:
        date.fromisoformat(d)
    except ValueError:
        return False
    return len(d) == 10


def scan_changes(
    lake: Lake, inbox: Path, cursor: dict[str, str] | None, partition_start: str | None = None
) -> InboxChanges:
    """Files that are new or changed since `cursor` (path -> fingerprint), and what they touch.

    `cursor=None` treats every file as new (a full refresh). A file that cannot land (not a
    readable CSV, a bad header, dates outside the partitions starting at `partition_start`,
    default the lake's settings) is in `errors` by name, and left out of the rest.
    """
    if partition_start is None:
        partition_start = lake.settings.partition_start if lake.settings else DEFAULT_PARTITION_START
    bounds = partition_bounds(partition_start)
    seen = dict(cursor or {})
    dims: list[str] = []
    facts: dict[str, dict[str, set[str]]] = {}
    errors: list[str] = [why for table in TABLES for _p, why in refused_files(inbox, table)]
    for table in TABLES.values():
        changed = []
        for p in list_files(inbox, table.name):
            if (cursor or {}).get(str(p)) == fingerprint(p):
                continue
            try:
                read_header(p, table)
            except InputError as exc:
                errors.append(str(exc))
                continue
            changed.append(p)
        if not changed:
            continue
        if not table.is_fact:
            for p in changed:
                seen[str(p)] = fingerprint(p)
            dims.append(table.name)
            continue
        unread: dict[str, str] = {}
        landable = []
        for e in InboxIndex(lake, inbox, table).entries(paths=changed, errors=unread):
            problem = date_problem(e, table, bounds)
            if problem:
                errors.append(problem)
                continue
            seen[e.path] = e.fingerprint
            landable.append(e)
        errors.extend(unread.values())
        if landable:
            facts[table.name] = touched_partitions(landable)
    return InboxChanges(seen, dims, facts, errors)
