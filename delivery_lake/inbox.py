"""What has arrived in the inbox, and which partitions each file touches.

Files are found by convention (`INBOX/<table>/*.csv`; names starting with `_` or `.`
are ignored). A fact file may touch several dates and clients, so each file is scanned
once (one streaming DuckDB pass over two columns) and the result is cached in the lake
under `_meta/inbox_index/`, keyed by the file's size and modification time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from delivery_lake.contract import TABLES, Table
from delivery_lake.storage import Lake

DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
# Bumped when what a scan counts changes, so older cached entries are scanned again.
INDEX_VERSION = 2


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


def list_files(inbox: Path, table: str) -> list[Path]:
    folder = Path(inbox) / table
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv" and p.name[0] not in "._")


def fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def read_header(path: Path, table: Table) -> list[str]:
    """The file's header, validated against the contract. Raises InputError naming the file and column."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (expected a header with columns {', '.join(table.column_names)})")
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8-sig", errors="replace").strip("\r\n")
        second = fh.readline()
    import csv

    header = [h.strip() for h in next(csv.reader([first]))]
    missing = [c for c in table.column_names if c not in header]
    if missing:
        raise InputError(f"{path}: header is missing contract column(s) {', '.join(missing)} for table {table.name}")
    if not second.strip():
        raise InputError(f"{path}: header only, no data rows (table {table.name})")
    return header


def csv_source_sql(path: Path | str, header: list[str], table: Table, rejects_table: str) -> str:
    """The one way this project reads a source CSV: typed while parsing, bad lines set aside.

    DuckDB casts each contract column as it parses (several times faster than casting text
    afterwards); a line that does not parse (a value that does not cast, a ragged line,
    invalid UTF-8) goes to `rejects_table` with its line number, column and the raw line.
    Columns are named from the header we validated, so DuckDB's sniffer never guesses.
    """
    types = {c.name: c.duckdb_type for c in table.columns}
    columns = ", ".join(f"'{_sql_str(h)}': '{types.get(h, 'VARCHAR')}'" for h in header)
    opts = [
        "header=true",
        "delim=','",
        "quote='\"'",
        "escape='\"'",
        "auto_detect=false",
        f"columns={{{columns}}}",
        "max_line_size=10000000",
        "store_rejects=true",
        f"rejects_table='{rejects_table}'",
        f"rejects_scan='{rejects_table}_scan'",
    ]
    return f"read_csv('{_sql_str(str(path))}', {', '.join(opts)})"


def ensure_rejects_table(con: object, name: str) -> None:
    """DuckDB only creates the rejects table when a line was rejected."""
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (line BIGINT, error_type VARCHAR, csv_line VARCHAR)")  # type: ignore[attr-defined]


def _sql_str(s: str) -> str:
    return s.replace("'", "''")


def _scan(lake: Lake, path: Path, table: Table) -> FileEntry:
    header = read_header(path, table)
    name_date = DATE_IN_NAME.search(path.name)
    con = lake.duckdb()
    try:
        src = csv_source_sql(path, header, table, "rej")
        # Every contract column is converted (an unused aggregate keeps DuckDB from skipping
        # it), so a line the landing's reader rejects is `malformed` here too.
        parse_all = ", ".join(f'count("{c.name}")' for c in table.columns)
        if table.is_fact:
            pcol, ccol = table.partition_column, table.client_column
            rows = con.execute(
                f"""SELECT CAST("{pcol}" AS DATE)::VARCHAR AS d, coalesce(trim("{ccol}"), '') AS c, count(*) AS n, {parse_all}
                    FROM {src} GROUP BY ALL"""
            ).fetchall()
            rows = [r[:3] for r in rows]
        else:
            # fetchall: the rejects table is complete only once the result is consumed
            rows = [(None, "", con.execute(f"SELECT count(*), {parse_all} FROM {src}").fetchall()[0][0])]
        ensure_rejects_table(con, "rej")
        malformed = con.execute("SELECT count(DISTINCT line) FROM rej").fetchone()[0]
    finally:
        con.close()
    nominal = name_date.group(1) if name_date else None
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
    ) -> list[FileEntry]:
        """Scan results for `paths` (default: every file of the table).

        With `dates`, a file that fails its header check but whose name dates it outside
        `dates` is skipped: a broken file for one day does not block landing the others.
        With `defer_scan`, a file not scanned yet whose name carries a date is returned as a
        provisional entry touching that date only, without reading it. With `rescan`, every
        file is scanned again, whatever the cache holds (an audit wants its own count).
        """
        cached: dict = self.lake.read_json(self._cache_path, default={}) or {}
        out: list[FileEntry] = []
        changed = False
        for path in paths if paths is not None else list_files(self.inbox, self.table.name):
            if dates is not None:
                named = DATE_IN_NAME.search(path.name)
                try:
                    read_header(path, self.table)
                except InputError:
                    if named and named.group(1) not in dates:
                        continue
                    raise
            fp = fingerprint(path)
            hit = None if rescan else cached.get(str(path))
            if hit and hit.get("fingerprint") == fp and hit.get("v") == INDEX_VERSION:
                out.append(
                    FileEntry(str(path), fp, hit["nominal_date"], hit["partitions"], hit["malformed"], hit["header"])
                )
                continue
            named = DATE_IN_NAME.search(path.name)
            if defer_scan and named:
                header = read_header(path, self.table)
                out.append(FileEntry(str(path), fp, named.group(1), {named.group(1): {}}, 0, header, provisional=True))
                continue
            entry = _scan(self.lake, path, self.table)
            cached[str(path)] = entry.to_json()
            out.append(entry)
            changed = True
        if changed and refresh:
            self.lake.write_json(self._cache_path, cached)
        return out

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


def scan_changes(lake: Lake, inbox: Path, cursor: dict[str, str] | None) -> InboxChanges:
    """Files that are new or changed since `cursor` (path -> fingerprint), and what they touch.

    `cursor=None` treats every file as new (a full refresh).
    """
    seen = dict(cursor or {})
    dims: list[str] = []
    facts: dict[str, dict[str, set[str]]] = {}
    errors: list[str] = []
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
        for p in changed:
            seen[str(p)] = fingerprint(p)
        if not table.is_fact:
            dims.append(table.name)
            continue
        facts[table.name] = touched_partitions(InboxIndex(lake, inbox, table).entries(paths=changed))
    return InboxChanges(seen, dims, facts, errors)
