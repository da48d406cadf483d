"""Land inbox CSV files as typed, date x client partitioned Parquet, quarantining bad rows.

How one landing works (for a fact table and a set of (date, client) partitions):

1. Every source file involved is checked first (exists, not empty, has data rows, header
   has every contract column). A bad file stops the landing before anything is written.
2. Files touching the requested dates are read by DuckDB as text, streaming, one file at a
   time; lines that are not valid CSV (ragged, invalid UTF-8) are set aside by DuckDB's
   rejects table with their line number.
3. One SQL statement generated from the contract types every column with TRY_CAST and
   collects every broken rule of a row in `_reasons`: missing, unparseable, range,
   not_allowed, orphan (dimension keys known at landing), rule:<name>.
4. Duplicate keys: among otherwise valid rows the copy from the file that arrived last
   (modification time, then name) and, within it, the last line wins; earlier copies are
   quarantined with reason `duplicate`.
5. Each partition is written to a local staging folder, then published as one object
   (see storage.py), followed by its quarantine object and its manifest.

Rows whose client cannot be trusted (missing or unknown client) land in no client
partition: they are quarantined under `client=_unassigned` of their date. Rows whose
partition timestamp cannot be parsed, and malformed lines, are filed under the date in
the file name (or the file's most common date). So every line of every file ends up in
exactly one place, and `read = landed + quarantined` holds per file.
"""

from __future__ import annotations

import csv
import hashlib
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from delivery_lake import gate
from delivery_lake.config import Settings
from delivery_lake.contract import TABLES, Table
from delivery_lake.inbox import FileEntry, InboxIndex, InputError, csv_source_sql, ensure_rejects_table, read_header
from delivery_lake.sql import ident, literal
from delivery_lake.storage import DATA_FILE, UNASSIGNED_CLIENT, Lake, staging_dir


class LandingError(RuntimeError):
    pass


# What became of a row that parsed and passed every rule, besides landing:
REPLAYED = "replayed"  # same key and content as the version landed from an earlier file
SUPERSEDED = "superseded"  # an earlier file's version that a later file corrected (kept in history/)
PENDING = "pending"  # waits for its parent fact (a delivery's order) to land (kept in pending/)
STATES = ("landed", "quarantined", REPLAYED, SUPERSEDED, PENDING)
# A child's parent is looked up first among the parent partitions of these days around the
# child's date (orders are created before their deliveries); keys not found there are looked up
# in the whole parent table, so this only decides what is read first, never what is found.
PARENT_WINDOW_DAYS = 3


def _zero() -> dict[str, int]:
    return dict.fromkeys(STATES, 0)


@dataclass
class PartitionResult:
    table: str
    date: str | None
    client: str | None
    landed: int = 0
    quarantined: int = 0
    replayed: int = 0
    superseded: int = 0
    pending: int = 0
    bytes: int = 0
    # False when the partition's data file was already exactly what this landing produced
    # (a re-sent file): nothing was rewritten, so nothing downstream needs to change.
    changed: bool = True
    by_reason: dict[str, int] = field(default_factory=dict)
    by_file: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def accounted(self) -> int:
        return self.landed + self.quarantined + self.replayed + self.superseded + self.pending


@dataclass
class LandingReport:
    table: str
    partitions: list[PartitionResult] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    extra_columns: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    read: int = 0
    schema: dict[str, str] = field(default_factory=dict)
    preview: list[dict[str, Any]] = field(default_factory=list)
    # the files read, with their partitions as counted by this landing
    entries: list[FileEntry] = field(default_factory=list)

    @property
    def landed(self) -> int:
        return sum(p.landed for p in self.partitions)

    @property
    def quarantined(self) -> int:
        return sum(p.quarantined for p in self.partitions)

    @property
    def replayed(self) -> int:
        return sum(p.replayed for p in self.partitions)

    @property
    def superseded(self) -> int:
        return sum(p.superseded for p in self.partitions)

    @property
    def pending(self) -> int:
        return sum(p.pending for p in self.partitions)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.partitions)

    @property
    def changed_partitions(self) -> list[tuple[str | None, str | None]]:
        return [(p.date, p.client) for p in self.partitions if p.changed]

    @property
    def by_reason(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for p in self.partitions:
            for r, n in p.by_reason.items():
                out[r] += n
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def check_reconciled(self) -> None:
        accounted = sum(p.accounted for p in self.partitions)
        if self.read != accounted:
            raise LandingError(
                f"{self.table}: rows do not reconcile: read {self.read} != landed {self.landed} "
                f"+ quarantined {self.quarantined} + replayed {self.replayed} + superseded {self.superseded} "
                f"+ pending {self.pending}"
            )


# ---- SQL generated from the contract -------------------------------------------------------


def reason_exprs(table: Table, parent_keys: dict[str, str]) -> list[str]:
    """CASE expressions over typed columns naming each broken rule (casts were checked by the reader)."""
    out: list[str] = []
    for c in table.columns:
        col = ident(c.name)
        if not c.nullable:
            out.append(f"CASE WHEN {col} IS NULL THEN 'missing:{c.name}' END")
        if c.min is not None:
            out.append(f"CASE WHEN {col} < {c.min} THEN 'range:{c.name}' END")
        if c.max is not None:
            out.append(f"CASE WHEN {col} > {c.max} THEN 'range:{c.name}' END")
        if c.allowed:
            values = ", ".join(literal(v) for v in c.allowed)
            out.append(f"CASE WHEN {col} NOT IN ({values}) THEN 'not_allowed:{c.name}' END")
        if c.references and c.references[0] in parent_keys:
            keys = parent_keys[c.references[0]]
            out.append(
                f"CASE WHEN {col} IS NOT NULL AND {col} NOT IN (SELECT k FROM {keys}) THEN 'orphan:{c.name}' END"
            )
    for r in table.rules:
        out.append(f"CASE WHEN NOT ({r.sql}) THEN 'rule:{r.name}' END")
    return out


def _typed_select(table: Table, parent_keys: dict[str, str], nominal_dates: list[str | None]) -> str:
    """Rows of `src` with `_rs` (the broken rules, empty when valid), `_date` and `_client`."""
    reasons = "list_filter([" + ", ".join(reason_exprs(table, parent_keys)) + "], lambda x: x IS NOT NULL)"
    if table.is_fact:
        pcol, ccol = ident(table.partition_column or ""), ident(table.client_column or "")
        # A missing partition timestamp files the row under its file's nominal date.
        nominal = (
            "CASE _file_rank "
            + " ".join(f"WHEN {i} THEN {literal(d or 'unknown')}" for i, d in enumerate(nominal_dates))
            + " END"
        )
        date_expr = f"coalesce(CAST({pcol} AS DATE)::VARCHAR, {nominal})"
        client_ok = f"{ccol} IN (SELECT k FROM {parent_keys['clients']})" if "clients" in parent_keys else "true"
        client_expr = f"CASE WHEN {client_ok} THEN {ccol} ELSE {literal(UNASSIGNED_CLIENT)} END"
    else:
        date_expr, client_expr = "NULL::VARCHAR", "NULL::VARCHAR"
    conditions = [e.removeprefix("CASE WHEN ").rsplit(" THEN ", 1)[0] for e in reason_exprs(table, parent_keys)]
    # A rule that evaluates to NULL is not broken: NULL OR false is NULL, coalesced to false.
    ok = "NOT coalesce(" + " OR ".join(f"({c})" for c in conditions) + ", false)" if conditions else "true"
    # The reasons list is only built for failing rows (CASE evaluates branches selectively).
    return f"""
        SELECT *, CASE WHEN {ok} THEN []::VARCHAR[] ELSE {reasons} END AS _rs,
               NULL::VARCHAR AS _state, NULL::VARCHAR AS _pending_on, {date_expr} AS _date, {client_expr} AS _client
        FROM src
    """


@dataclass
class _BatchResult:
    partitions: list[PartitionResult] = field(default_factory=list)
    read: int = 0
    preview: list[dict[str, Any]] = field(default_factory=list)
    registered: set[str] = field(default_factory=set)
    learned: list[FileEntry] = field(default_factory=list)


class CountRow(NamedTuple):
    """Rows of one (file, partition, raw client) by what became of them."""

    rank: int
    file: str
    date: str | None
    client: str | None
    raw_client: str
    landed: int
    quarantined: int
    replayed: int
    superseded: int
    pending: int

    @property
    def total(self) -> int:
        return self.landed + self.quarantined + self.replayed + self.superseded + self.pending


@dataclass
class _Counts:
    """One aggregate over `typed` (and `rejected`) that planning, manifests and the index share."""

    typed: list[CountRow]
    # (_file_rank, _date, rejected lines)
    rejected: list[tuple[int, str | None, int]]


class _PlanChanged(Exception):
    """A file planned by the date in its name touches other dates; carries what was learned."""

    def __init__(self, learned: list[FileEntry]):
        super().__init__(f"{len(learned)} file(s) touch dates their names did not announce")
        self.learned = learned


class Landing:
    def __init__(self, lake: Lake, inbox: Path, settings: Settings):
        self.lake, self.inbox, self.settings = lake, Path(inbox), settings
        # Whole-table key sets of fact parents, loaded once per landing and only when a child's
        # parent was not found near its own date (see _hold_for_parents).
        self._parent_lock = threading.Lock()

    def index(self, table: Table) -> InboxIndex:
        return InboxIndex(self.lake, self.inbox, table)

    def registered_clients(self) -> list[str]:
        path = self.lake.data_file("raw", "clients")
        if not self.lake.exists(path):
            return []
        con = self.lake.duckdb()
        try:
            return [
                r[0]
                for r in con.execute(
                    f"SELECT client_id FROM read_parquet('{self.lake.uri(path)}') ORDER BY 1"
                ).fetchall()
            ]
        finally:
            con.close()

    def valid_keys(self, table: Table) -> list[str]:
        """Keys of the inbox rows that pass the contract, without landing anything.

        The sensor uses it to register client partitions before the clients land, with
        exactly the rule set the landing applies.
        """
        entries = self.index(table).entries()
        if not entries:
            return []
        con = self.lake.duckdb()
        try:
            parent_keys = self._load_parent_keys(con, table)
            self._load_sources(con, table, entries)
            con.execute(
                f"CREATE TEMP TABLE typed AS {_typed_select(table, parent_keys, [e.nominal_date for e in entries])}"
            )
            return [
                r[0]
                for r in con.execute(
                    f"SELECT DISTINCT {ident(table.key)} FROM typed WHERE len(_rs) = 0 ORDER BY 1"
                ).fetchall()
            ]
        finally:
            con.close()

    def land_dimension(self, table: Table) -> LandingReport:
        entries = self.index(table).entries()
        if not entries:
            raise InputError(f"{self.inbox / table.name}: no CSV files for dimension {table.name}")
        return self._land(table, entries, requested=None)

    def land_fact(self, table: Table, partitions: dict[str, list[str] | None]) -> LandingReport:
        """Land `date -> clients` (None = every client found) for a fact table."""
        dates = set(partitions)
        index = self.index(table)
        # Files not indexed yet are planned by the date in their name and counted while
        # they are read (one pass over the CSV, not two); the batch that reads one checks
        # the plan before publishing anything (see _land).
        all_entries = index.entries(dates=dates, defer_scan=True)
        while True:
            # The files touching the requested dates, closed over the other dates those files
            # touch, so duplicate resolution always sees the same set of files for a date.
            closure = set(dates)
            while True:
                grow = {d for e in all_entries if e.dates & closure for d in e.dates} - closure
                if not grow:
                    break
                closure |= grow
            # A deferred file this landing will not read could still touch a requested date:
            # only a scan can tell, so those are scanned now.
            unread = [Path(e.path) for e in all_entries if e.provisional and not e.dates & closure]
            if not unread:
                break
            scanned = {e.path: e for e in index.entries(paths=unread)}
            all_entries = [scanned.get(e.path, e) for e in all_entries]
        if not any(e.dates & dates for e in all_entries):
            raise InputError(f"{self.inbox / table.name}: no CSV files touch dates {', '.join(sorted(dates))}")
        entries = [e for e in all_entries if e.dates & closure]
        try:
            report = self._land(table, entries, requested=partitions)
        except _PlanChanged as changed:
            # A file touched dates its name did not announce. Its real partitions are now
            # indexed, so landing again plans it right (batches already published are
            # landed again; publishing is idempotent).
            index.remember(changed.learned)
            return self.land_fact(table, partitions)
        deferred = {e.path for e in entries if e.provisional}
        if deferred:
            index.remember([e for e in report.entries if e.path in deferred])
        return report

    # -----------------------------------------------------------------------------------------
    def _land(
        self, table: Table, entries: list[FileEntry], requested: dict[str, list[str] | None] | None
    ) -> LandingReport:
        started = time.monotonic()
        # File rank decides versions: later arrivals (modification time, then name) win.
        entries = sorted(entries, key=lambda e: (Path(e.path).stat().st_mtime_ns, e.path))
        report = LandingReport(table=table.name, files=[e.path for e in entries])
        report.schema = {c.name: c.duckdb_type for c in table.columns}
        # 1. Validate every file before touching anything.
        for e in entries:
            header = read_header(Path(e.path), table)
            extra = [h for h in header if h not in table.column_names]
            if extra:
                report.extra_columns[e.path] = extra

        landed_at = datetime.now(UTC).isoformat(timespec="seconds")
        # 2. One batch per group of files sharing dates (a daily export: one file per batch),
        # so memory is bounded by a day's data, never by the size of the backfill. Batches
        # are independent: up to DUCKDB_THREADS of them run at once, each on its own
        # connection (a cursor: temp tables are private) to one DuckDB instance, which
        # shares its thread pool and warm buffers. The per-file ordinal that gives line
        # numbers keeps a file's reader on one thread, so parallelism across days is what
        # uses the machine.
        jobs = []
        for batch in _batches(entries) if table.is_fact else [entries]:
            batch_dates = set().union(*(e.dates for e in batch))
            wanted = None if requested is None else {d: c for d, c in requested.items() if d in batch_dates}
            if wanted is None or wanted:
                jobs.append((batch, wanted))
        workers = max(1, min(self.settings.duckdb_threads, len(jobs)))
        registered: set[str] = set()
        learned: dict[str, FileEntry] = {}
        changed: list[_PlanChanged] = []
        base = self.lake.duckdb()
        # Each batch's query runs on its calling thread: more DuckDB threads would only
        # contend with the other batches for the same cores.
        base.execute(f"SET threads = {max(1, self.settings.duckdb_threads // workers)}")
        ctx = _LandingContext(base=base, table=table, landed_at=landed_at)
        try:
            ctx.parent_keys = self._load_parent_keys(base, table)  # shared by the batches' cursors
            ctx.clock = self._lake_clock(table, requested)
            ctx.verdicts = _passed_versions(self.lake, table.name) if table.is_fact else {}
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(self._land_batch, ctx, b, w) for b, w in jobs]
                for fut in futures:  # in batch order, so the report is deterministic
                    try:
                        result = fut.result()
                    except _PlanChanged as exc:
                        changed.append(exc)
                        continue
                    report.partitions.extend(result.partitions)
                    report.read += result.read
                    report.preview = report.preview or result.preview
                    registered |= result.registered
                    learned.update({e.path: e for e in result.learned})
        finally:
            base.close()
        if changed:
            raise _PlanChanged([e for exc in changed for e in exc.learned] + list(learned.values()))
        report.entries = [learned.get(e.path, e) for e in entries]
        report.seconds = round(time.monotonic() - started, 3)
        if requested is None:
            report.check_reconciled()
        else:
            self._check_partition_reconciliation(report, report.entries, requested, registered)
        return report

    def _lake_clock(self, table: Table, requested: dict[str, list[str] | None] | None) -> str | None:
        """How far the parent feeds have got: the newest partition date of this table's fact
        parents. The grace period of pending rows is counted in those dates, so a child only
        becomes an orphan once its parent's feed has moved on without it (a parent feed that is
        merely late holds its children as pending), and a replay of the same files decides the
        same way."""
        return parent_clock(self.lake, table)

    def _land_batch(
        self, ctx: _LandingContext, entries: list[FileEntry], requested: dict[str, list[str] | None] | None
    ) -> _BatchResult:
        table = ctx.table
        out = _BatchResult()
        con = ctx.base.cursor()
        try:
            self._load_sources(con, table, entries)
            con.execute(
                f"CREATE TEMP TABLE typed AS {_typed_select(table, ctx.parent_keys, [e.nominal_date for e in entries])}"
            )
            self._load_rejects(con, table, entries)
            self._classify_versions(con, table, entries)
            if table.is_fact:
                self._hold_for_parents(con, ctx, entries)
            self._replayed_bad_rows(con, table)
            self._lines(con)
            if "clients" in ctx.parent_keys:
                out.registered = {r[0] for r in con.execute(f"SELECT k FROM {ctx.parent_keys['clients']}").fetchall()}
            counts = self._counts(con, table)
            if requested is None:
                out.read = sum(r.total for r in counts.typed) + sum(n for *_, n in counts.rejected)
            if table.is_fact:
                out.learned = self._index_entries(entries, counts)
            targets = self._targets(table, requested, counts)
            with staging_dir(self.settings) as stage:
                out.partitions = _PartitionWriter(self.lake, con, ctx, stage).write(targets, counts)
            out.preview = self._preview(con, table)
            return out
        finally:
            con.close()

    def _load_parent_keys(self, con: Any, table: Table) -> dict[str, str]:
        out: dict[str, str] = {}
        for parent in table.parents:
            if TABLES[parent].is_fact:
                continue  # fact parents are looked up per batch (_hold_for_parents)
            path = self.lake.data_file("raw", parent)
            if not self.lake.exists(path):
                raise LandingError(f"{table.name} references {parent}, which has not been landed yet")
            name = f"keys_{parent}"
            con.execute(
                f"CREATE TABLE {name} AS SELECT DISTINCT {ident(TABLES[parent].key)} AS k "
                f"FROM read_parquet('{self.lake.uri(path)}')"
            )
            out[parent] = name
        return out

    def _load_sources(self, con: Any, table: Table, entries: list[FileEntry]) -> None:
        """`src`: every file's typed rows with a per-file row ordinal; `rejected`: the lines that did not parse.

        DuckDB keeps file order with preserve_insertion_order, so row_number() OVER () is the
        ordinal of a row among the file's parsed rows (a streaming window, no sort).
        """
        con.execute("SET preserve_insertion_order = true")
        cols = ", ".join(
            f"NULLIF(trim({ident(c.name)}), '') AS {ident(c.name)}" if c.dtype == "string" else ident(c.name)
            for c in table.columns
        )
        parts = []
        for i, e in enumerate(entries):
            header = e.header  # read and checked against the contract when the file was indexed
            parts.append(
                f"SELECT {cols}, {literal(e.path)} AS _file, {i} AS _file_rank, row_number() OVER () AS _ord "
                f"FROM {csv_source_sql(e.path, header, table, f'rej{i}')}"
            )
        # A view: `typed` is the one materialisation; the rejects tables fill while it is built.
        con.execute("CREATE TEMP VIEW src AS " + " UNION ALL ".join(parts))

    def _load_rejects(self, con: Any, table: Table, entries: list[FileEntry]) -> None:
        """`rejected`: one row per line the reader set aside, with every reason (call after reading)."""
        for i in range(len(entries)):
            ensure_rejects_table(con, f"rej{i}")
        reason = (
            "CASE WHEN error_type = 'CAST' THEN 'unparseable:' || column_name "
            "ELSE 'malformed:' || lower(replace(error_type, ' ', '_')) END"
        )
        rejects = " UNION ALL ".join(
            f"""SELECT {i} AS _file_rank, {literal(e.path)} AS _file,
                       {literal(e.nominal_date or "unknown") if table.is_fact else "NULL::VARCHAR"} AS _date, line,
                       string_agg(DISTINCT {reason}, ';' ORDER BY {reason}) AS reasons, first(csv_line) AS csv_line,
                       false AS _replayed
                FROM rej{i} GROUP BY line"""
            for i, e in enumerate(entries)
        )
        con.execute(f"CREATE TEMP TABLE rejected AS {rejects}")
        self._split_rejected(con, table, entries)

    def _split_rejected(self, con: Any, table: Table, entries: list[FileEntry]) -> None:
        """Best-effort column values of rejected lines, so their ids stay findable in quarantine.

        The raw line is kept whole in `_raw_line`; here Python's csv module (rejected lines
        are few) splits it by the file's header. A ragged line still yields its leading
        fields, which is where keys sit.
        """
        headers = {i: e.header for i, e in enumerate(entries)}
        rows = []
        for rank, line, text in con.execute("SELECT _file_rank, line, csv_line FROM rejected").fetchall():
            fields = next(csv.reader([text or ""]), [])
            by_name = dict(zip(headers[rank], (f.strip() or None for f in fields), strict=False))
            rows.append((rank, line, *(by_name.get(c.name) for c in table.columns)))
        cols = ", ".join(f"{ident(c.name)} VARCHAR" for c in table.columns)
        con.execute(f"CREATE TEMP TABLE rejected_fields (_file_rank BIGINT, line BIGINT, {cols})")
        if rows:
            marks = ", ".join("?" for _ in range(len(table.columns) + 2))
            con.executemany(f"INSERT INTO rejected_fields VALUES ({marks})", rows)

    def _classify_versions(self, con: Any, table: Table, entries: list[FileEntry]) -> None:
        """Decide, for each key seen more than once among valid rows, which copy lands.

        - Within one file, the last line is that file's version; its other lines of the key are
          a conflict, quarantined as `duplicate`.
        - Across files, the latest file's version is the key's content. Earlier versions with
          the same content are `replayed` (counted, not rewritten), different ones `superseded`
          (kept in history/ with the file that replaced them).
        - Of the copies carrying the winning content the earliest one lands, so a re-sent file
          leaves the partition byte-identical.

        Keys seen twice are rare: they are found with a grouped aggregate and fixed with a small
        UPDATE, so `typed` keeps its file order and needs no sort.
        """
        key = ident(table.key)
        content = "hash(" + ", ".join(ident(c.name) for c in table.columns) + ")"
        con.execute(
            f"""CREATE TEMP TABLE versions AS
                WITH v AS (
                    SELECT t.{key} AS k, t._file_rank AS f, t._ord AS o, {content} AS h
                    FROM typed t
                    SEMI JOIN (SELECT {key} AS k FROM typed WHERE len(_rs) = 0 GROUP BY ALL HAVING count(*) > 1) d
                        ON t.{key} = d.k
                    WHERE len(t._rs) = 0
                ),
                ranked AS (
                    SELECT *,
                           max(o) OVER (PARTITION BY k, f) AS file_last,
                           first(h ORDER BY f DESC, o DESC) OVER (PARTITION BY k) AS win_h,
                           max(f) OVER (PARTITION BY k) AS win_f
                    FROM v
                ),
                keeper AS (  -- the earliest file whose version carries the winning content
                    SELECT k, min(f) AS keep_f FROM ranked WHERE o = file_last AND h = win_h GROUP BY k
                )
                SELECT f, o, win_f,
                       CASE WHEN o <> file_last THEN 'duplicate'
                            WHEN h <> win_h THEN '{SUPERSEDED}'
                            ELSE '{REPLAYED}' END AS state
                FROM ranked JOIN keeper USING (k)
                WHERE o <> file_last OR f <> keep_f"""
        )
        con.execute(
            """UPDATE typed SET _rs = CASE WHEN v.state = 'duplicate' THEN ['duplicate'] ELSE _rs END,
                                _state = CASE WHEN v.state = 'duplicate' THEN NULL ELSE v.state END
               FROM versions v WHERE typed._file_rank = v.f AND typed._ord = v.o"""
        )
        # Who replaced a superseded version, and when that file arrived (its modification time,
        # so a replay of the same files writes the same history).
        con.execute("CREATE TEMP TABLE files (rank BIGINT, path VARCHAR, arrived VARCHAR)")
        con.executemany(
            "INSERT INTO files VALUES (?, ?, ?)",
            [
                (i, e.path, datetime.fromtimestamp(Path(e.path).stat().st_mtime, UTC).isoformat(timespec="seconds"))
                for i, e in enumerate(entries)
            ],
        )

    def _replayed_bad_rows(self, con: Any, table: Table) -> None:
        """A bad row (or unparseable line) that an earlier file already brought, word for word,
        is a replay too: re-sending a file must not quarantine its bad lines twice, or a re-sent
        day would double its quarantine ratio and block."""
        content = "hash(" + ", ".join(ident(c.name) for c in table.columns) + ", _rs)"
        con.execute(
            f"""UPDATE typed SET _state = '{REPLAYED}', _rs = []::VARCHAR[]
                FROM (SELECT _file_rank AS f, _ord AS o,
                             min(_file_rank) OVER (PARTITION BY {content}) AS first_f
                      FROM typed WHERE len(_rs) > 0) r
                WHERE typed._file_rank = r.f AND typed._ord = r.o AND r.first_f < r.f"""
        )
        con.execute(
            """UPDATE rejected SET _replayed = true
               FROM (SELECT _file_rank AS f, line AS l, min(_file_rank) OVER (PARTITION BY csv_line) AS first_f
                     FROM rejected) r
               WHERE rejected._file_rank = r.f AND rejected.line = r.l AND r.first_f < r.f"""
        )

    def _hold_for_parents(self, con: Any, ctx: _LandingContext, entries: list[FileEntry]) -> None:
        """Hold back rows whose parent fact has not landed: `pending` within the grace period,
        quarantined as `orphan:<column>` after it (ORPHAN_GRACE_DAYS partition dates).

        A child never lands without its parent, so the marts never compute a delivery from an
        order that is not there and no check blocks a partition for a parent that is merely late.
        The lookup reads the parent's key column near the batch's dates first; only keys not
        found there are looked up in the whole parent table.
        """
        table = ctx.table
        batch_dates = sorted(d for e in entries for d in e.dates if d != "unknown")
        for column, parent in _fact_parents(table):
            col = ident(column)
            pkey = ident(TABLES[parent].key)
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE wanted AS SELECT DISTINCT {col} AS k FROM typed
                    WHERE len(_rs) = 0 AND _state IS NULL AND {col} IS NOT NULL"""
            )
            if not con.execute("SELECT count(*) FROM wanted").fetchone()[0]:
                continue
            near = self._parent_files(parent, batch_dates)
            if near:
                con.execute(
                    f"""DELETE FROM wanted WHERE k IN (
                            SELECT {pkey} FROM read_parquet([{", ".join(literal(f) for f in near)}]))"""
                )
            if con.execute("SELECT count(*) FROM wanted").fetchone()[0]:
                everywhere = self._all_parent_keys(ctx, parent)
                con.execute(f"DELETE FROM wanted WHERE k IN (SELECT k FROM {everywhere})")
            if not con.execute("SELECT count(*) FROM wanted").fetchone()[0]:
                continue
            expired = (
                "false"
                if ctx.clock is None
                else f"date_diff('day', TRY_CAST(_date AS DATE), DATE {literal(ctx.clock)}) "
                f"> {int(self.settings.orphan_grace_days)}"
            )
            con.execute(
                f"""UPDATE typed SET _rs = CASE WHEN {expired} THEN ['orphan:{column}'] ELSE _rs END,
                                    _state = CASE WHEN {expired} THEN NULL ELSE '{PENDING}' END
                    WHERE len(_rs) = 0 AND _state IS NULL AND {col} IN (SELECT k FROM wanted)"""
            )
            con.execute(
                f"UPDATE typed SET _pending_on = {literal(column)} WHERE _state = '{PENDING}' AND _pending_on IS NULL"
            )

    def _parent_files(self, parent: str, dates: list[str]) -> list[str]:
        if not dates:
            return []
        first = date.fromisoformat(min(dates)) - timedelta(days=PARENT_WINDOW_DAYS)
        last = date.fromisoformat(max(dates)) + timedelta(days=1)
        days = [(first + timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]
        return [
            self.lake.uri(self.lake.data_file("raw", parent, d, c))
            for d, c in self.lake.list_partitions("raw", parent, dates=days)
        ]

    def _all_parent_keys(self, ctx: _LandingContext, parent: str) -> str:
        """A table of every landed key of `parent`, built once per landing on the shared instance."""
        name = f"all_keys_{parent}"
        with self._parent_lock:
            if name not in ctx.loaded:
                files = [
                    self.lake.uri(self.lake.data_file("raw", parent, d, c))
                    for d, c in self.lake.list_partitions("raw", parent)
                ]
                cur = ctx.base.cursor()
                try:
                    if files:
                        cur.execute(
                            f"CREATE TABLE {name} AS SELECT DISTINCT {ident(TABLES[parent].key)} AS k "
                            f"FROM read_parquet([{', '.join(literal(f) for f in files)}])"
                        )
                    else:
                        cur.execute(f"CREATE TABLE {name} (k VARCHAR)")
                finally:
                    cur.close()
                ctx.loaded.add(name)
        return name

    def _lines(self, con: Any) -> None:
        """Record-based line numbers (header = line 1) of rows that do not land, accounting for rejected lines.

        A parsed row with ordinal k sits on line k + 1 + (rejected lines before it); the j-th
        rejected line r_j has r_j - j - 1 parsed rows before it.
        """
        con.execute(
            """CREATE TEMP TABLE rej_gaps AS
               SELECT _file_rank, line - row_number() OVER (PARTITION BY _file_rank ORDER BY line) - 1 AS good_before
               FROM rejected"""
        )
        con.execute(
            f"""CREATE TEMP TABLE bad_lines AS
               SELECT t._file_rank, t._ord, t._ord + 1 + count(g.good_before) AS _line
               FROM (SELECT _file_rank, _ord FROM typed WHERE len(_rs) > 0 OR _state IN ('{SUPERSEDED}', '{PENDING}')) t
               LEFT JOIN rej_gaps g ON g._file_rank = t._file_rank AND g.good_before < t._ord
               GROUP BY t._file_rank, t._ord"""
        )

    def _counts(self, con: Any, table: Table) -> _Counts:
        raw_client = f"coalesce({ident(table.client_column)}, '')" if table.client_column else "''"
        typed = con.execute(
            f"""SELECT _file_rank, _file, _date, _client, {raw_client},
                       count(*) FILTER (len(_rs) = 0 AND _state IS NULL),
                       count(*) FILTER (len(_rs) > 0),
                       count(*) FILTER (_state = '{REPLAYED}'),
                       count(*) FILTER (_state = '{SUPERSEDED}'),
                       count(*) FILTER (_state = '{PENDING}')
                FROM typed GROUP BY ALL"""
        ).fetchall()
        rejected = con.execute("SELECT _file_rank, _date, count(*) FROM rejected GROUP BY ALL").fetchall()
        return _Counts([CountRow(*r) for r in typed], rejected)

    def _index_entries(self, entries: list[FileEntry], counts: _Counts) -> list[FileEntry]:
        """Index entries of the provisional files of this batch, from what was just read.

        The same partition rule as the index scan (a row's date, else the name's date; the
        trimmed raw client). Raises _PlanChanged when a file touches a date outside the
        batch, before anything is published.
        """
        provisional = {i: e for i, e in enumerate(entries) if e.provisional}
        if not provisional:
            return []
        parts: dict[int, dict[str, dict[str, int]]] = {i: {} for i in provisional}
        malformed: dict[int, int] = dict.fromkeys(provisional, 0)
        for row in counts.typed:
            if row.rank in parts:
                by_client = parts[row.rank].setdefault(row.date or "unknown", {})
                by_client[row.raw_client] = by_client.get(row.raw_client, 0) + row.total
        for rank, _d, n in counts.rejected:
            if rank in malformed:
                malformed[rank] += n
        learned = [
            FileEntry(e.path, e.fingerprint, e.nominal_date, parts[i], malformed[i], e.header)
            for i, e in provisional.items()
        ]
        planned = set().union(*(e.dates for e in entries))
        if any(not e.dates <= planned for e in learned):
            raise _PlanChanged(learned)
        return learned

    def _targets(
        self, table: Table, requested: dict[str, list[str] | None] | None, counts: _Counts
    ) -> list[tuple[str | None, str | None]]:
        if not table.is_fact:
            return [(None, None)]
        assert requested is not None
        present: dict[str | None, set[str | None]] = defaultdict(set)
        for row in counts.typed:
            present[row.date].add(row.client)
        for _r, d, _n in counts.rejected:
            present[d].add(UNASSIGNED_CLIENT)
        out: list[tuple[str | None, str | None]] = []
        for d in sorted(requested):
            clients = requested[d]
            found = {c for c in present.get(d, set()) if c is not None}
            wanted = found - {UNASSIGNED_CLIENT} if clients is None else set(clients)
            for c in sorted(wanted):
                # A client asked for with no row that day and nothing landed before gets no empty
                # partition (a run may name it only to land the date's rows of no client); one
                # landed before is emptied, so a corrected export can take rows away.
                if c in found or self.lake.exists(manifest_path(self.lake, table.name, d, c)):
                    out.append((d, c))
            # Rows that belong to no client are quarantined with every landing of their date.
            if UNASSIGNED_CLIENT in found:
                out.append((d, UNASSIGNED_CLIENT))
        return out

    def _preview(self, con: Any, table: Table, n: int = 5) -> list[dict[str, Any]]:
        cols = [c.name for c in table.columns]
        rows = con.execute(
            f"SELECT {', '.join(ident(c) for c in cols)} FROM typed WHERE len(_rs) = 0 AND _state IS NULL LIMIT {n}"
        ).fetchall()
        return [
            {c: (v.isoformat() if hasattr(v, "isoformat") else v) for c, v in zip(cols, r, strict=True)} for r in rows
        ]

    def _check_partition_reconciliation(
        self,
        report: LandingReport,
        entries: list[FileEntry],
        requested: dict[str, list[str] | None],
        registered: set[str],
    ) -> None:
        """Per date: rows the inbox index counted for the landed partitions == every row accounted for."""
        for d, clients in requested.items():
            got = sum(p.accounted for p in report.partitions if p.date == d)
            expected = 0
            for e in entries:
                for c, n in e.partitions.get(d, {}).items():
                    if clients is None or c in clients or c not in registered:
                        expected += n
                if e.nominal_date == d:
                    expected += e.malformed
            report.read += expected
            if got != expected:
                raise LandingError(
                    f"{report.table} {d}: read {expected} rows but accounted for {got} "
                    "(landed + quarantined + replayed + superseded + pending)"
                )


@dataclass
class _LandingContext:
    """What the batches of one landing share."""

    base: Any
    table: Table
    landed_at: str
    parent_keys: dict[str, str] = field(default_factory=dict)
    clock: str | None = None
    # (date, client) -> sha256 of the data file a passing verdict was computed on
    verdicts: dict[tuple[str | None, str | None], str] = field(default_factory=dict)
    loaded: set[str] = field(default_factory=set)


def parent_clock(lake: Lake, table: Table) -> str | None:
    """The newest landed partition date among the fact parents of `table` (None without any)."""
    if not table.is_fact:
        return None
    dates = [d for _, parent in _fact_parents(table) for d in lake.list_dates("raw", parent)[-1:]]
    return max(dates) if dates else None


def _fact_parents(table: Table) -> list[tuple[str, str]]:
    """(column, parent table) of the references from this table to other fact tables."""
    return [
        (c.name, c.references[0])
        for c in table.columns
        if c.references and c.references[0] != table.name and TABLES[c.references[0]].is_fact
    ]


def _passed_versions(lake: Lake, table: str) -> dict[tuple[str | None, str | None], str]:
    """Partitions whose latest verdict passed, with the data file's sha256 it was computed on."""
    return {
        (s.get("date"), s.get("client")): s["data_sha256"]
        for s in gate.statuses(lake, table)
        if s.get("passed") and s.get("data_sha256")
    }


class _PartitionWriter:
    """Writes one batch's target partitions: data, quarantine, pending rows and history.

    Each kind is cut into per-partition files by one COPY ... PARTITION_BY in a local staging
    folder, then published object by object (storage.py). A partition whose content is what
    the lake already holds is not published again (a re-sent file rewrites nothing); the
    manifest, published last, vouches for every object of the partition.
    """

    def __init__(self, lake: Lake, con: Any, ctx: _LandingContext, stage: Path):
        self.lake, self.con, self.ctx, self.stage = lake, con, ctx, stage
        self.table = ctx.table
        self.cols = ", ".join(ident(c.name) for c in self.table.columns)

    def write(self, targets: list[tuple[str | None, str | None]], counts: _Counts) -> list[PartitionResult]:
        con, table = self.con, self.table
        con.execute("CREATE OR REPLACE TEMP TABLE targets (d VARCHAR, c VARCHAR)")
        keys = [(d or "_", c or "_") for d, c in targets]
        # One statement for all targets (executemany runs one INSERT per row: slow for a day's partitions).
        if keys:
            con.execute("INSERT INTO targets VALUES " + ", ".join(["(?, ?)"] * len(keys)), [v for k in keys for v in k])
        wanted = set(keys)
        everything = all((r.date or "_", r.client or "_") in wanted for r in counts.typed)
        # A backfill wants every partition of the batch: no need to filter (or copy) `typed`.
        picked_from = (
            "typed"
            if everything
            else "typed SEMI JOIN targets ON coalesce(_date, '_') = d AND coalesce(_client, '_') = c"
        )
        con.execute(
            "CREATE OR REPLACE TEMP VIEW picked AS "
            f"SELECT coalesce(_date, '_') AS d, coalesce(_client, '_') AS c, * FROM {picked_from}"
        )
        # No ORDER BY: `typed` is in file order and DuckDB keeps insertion order in the write.
        con.execute(
            f"""COPY (SELECT d, c, {self.cols} FROM picked WHERE len(_rs) = 0 AND _state IS NULL)
                TO '{self.stage / "good"}' (FORMAT parquet, PARTITION_BY (d, c), FILENAME_PATTERN 'data')"""
        )
        self._side_tables()
        results = self._results(targets, counts)
        digests = {kind: self._digests(kind) for kind in ("bad_rows", "pending_rows", "history_rows")}
        existing_bad = self._existing("quarantine", results)
        existing_pending = self._existing("pending", results)
        existing_history = self._existing("history", results)
        out = []
        for (d, c), res in results.items():
            old = self.lake.read_json(manifest_path(self.lake, table.name, res.date, res.client)) or {}
            manifest: dict[str, Any] = {}
            self._publish_side(
                "quarantine", "bad_rows", res, (d, c), digests, old, existing_bad, manifest, empty_ok=True
            )
            self._publish_side("pending", "pending_rows", res, (d, c), digests, old, existing_pending, manifest)
            self._publish_side("history", "history_rows", res, (d, c), digests, old, existing_history, manifest)
            if res.client != UNASSIGNED_CLIENT:
                self._publish_data(res, (d, c), old, manifest)
            manifest |= {
                "table": table.name,
                "date": res.date,
                "client": res.client,
                "landed": res.landed,
                "quarantined": res.quarantined,
                "replayed": res.replayed,
                "superseded": res.superseded,
                "pending": res.pending,
                "by_reason": res.by_reason,
                "by_file": res.by_file,
                "bytes": res.bytes,
                "landed_at": self.ctx.landed_at if res.changed or not old else old.get("landed_at", self.ctx.landed_at),
            }
            self.lake.write_json(manifest_path(self.lake, table.name, res.date, res.client), manifest)
            out.append(res)
        return out

    # -- staging ---------------------------------------------------------------------------
    def _side_tables(self) -> None:
        """Quarantined, pending and superseded rows of the picked partitions (usually a handful)."""
        con, table = self.con, self.table
        text_cols = ", ".join(f"{ident(c.name)}::VARCHAR AS {ident(c.name)}" for c in table.columns)
        field_cols = ", ".join(f"f.{ident(c.name)}" for c in table.columns)
        unassigned = literal(UNASSIGNED_CLIENT) if table.is_fact else "'_'"
        landed_at = literal(self.ctx.landed_at)
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE bad_rows AS
                SELECT d, c, {text_cols}, _rs[1] AS _reason, array_to_string(_rs, ';') AS _reasons,
                       _file AS _source_file, b._line::BIGINT AS _source_line, NULL::VARCHAR AS _raw_line,
                       {landed_at} AS _landed_at
                FROM picked p JOIN bad_lines b USING (_file_rank, _ord) WHERE len(_rs) > 0
                UNION ALL
                SELECT coalesce(r._date, '_'), {unassigned}, {field_cols},
                       split_part(r.reasons, ';', 1), r.reasons, r._file, r.line::BIGINT, r.csv_line, {landed_at}
                FROM rejected r JOIN rejected_fields f USING (_file_rank, line)
                SEMI JOIN targets ON coalesce(r._date, '_') = d AND {unassigned} = c
                WHERE NOT r._replayed"""
        )
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE pending_rows AS
                SELECT d, c, {self.cols}, _pending_on, _file AS _source_file, b._line::BIGINT AS _source_line
                FROM picked p JOIN bad_lines b USING (_file_rank, _ord) WHERE _state = '{PENDING}'"""
        )
        key = ident(table.key)
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE history_rows AS
                SELECT d, c, {", ".join(f"p.{ident(c.name)}" for c in table.columns)},
                       p._file AS _source_file, b._line::BIGINT AS _source_line,
                       f.path AS _superseded_by, f.arrived AS _superseded_at
                FROM picked p JOIN bad_lines b USING (_file_rank, _ord)
                JOIN versions v ON v.f = p._file_rank AND v.o = p._ord
                JOIN files f ON f.rank = v.win_f
                WHERE p._state = '{SUPERSEDED}'"""
        )
        order = {
            "bad_rows": "_source_file, _source_line",
            "pending_rows": "_source_file, _source_line",
            "history_rows": f"{key}, _superseded_at, _source_file, _source_line",
        }
        for name, by in order.items():
            if con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]:
                con.execute(
                    f"""COPY (SELECT * FROM {name} ORDER BY d, c, {by}) TO '{self.stage / name}'
                        (FORMAT parquet, PARTITION_BY (d, c), FILENAME_PATTERN 'data')"""
                )

    def _digests(self, name: str) -> dict[tuple[str, str], str]:
        """A content digest per partition (arrival stamps left out), to tell a change from a replay."""
        cols = [r[0] for r in self.con.execute(f"DESCRIBE {name}").fetchall() if r[0] not in ("d", "c", "_landed_at")]
        rows = self.con.execute(
            f"SELECT d, c, count(*), sum(hash({', '.join(ident(c) for c in cols)}))::VARCHAR FROM {name} GROUP BY ALL"
        ).fetchall()
        return {(d, c): f"{n}:{h}" for d, c, n, h in rows}

    def _existing(self, zone: str, results: dict[tuple[str, str], PartitionResult]) -> set[str]:
        """Objects of `zone` under this batch's dates (only those may need emptying)."""
        found: set[str] = set()
        for d in sorted({res.date for res in results.values()}, key=str):
            folder = self.lake.partition_dir(zone, self.table.name, d)
            found.update(self.lake.glob(folder + ("/*/" if d else "/") + DATA_FILE))
        return found

    def _results(
        self, targets: list[tuple[str | None, str | None]], counts: _Counts
    ) -> dict[tuple[str, str], PartitionResult]:
        # `changed` turns true as soon as an object of the partition is published or removed.
        results: dict[tuple[str, str], PartitionResult] = {
            (d or "_", c or "_"): PartitionResult(self.table.name, d, c, changed=False) for d, c in targets
        }
        for row in counts.typed:
            res = results.get((row.date or "_", row.client or "_"))
            if res is not None:
                slot = res.by_file.setdefault(row.file, _zero())
                for state, n in (
                    ("landed", row.landed),
                    ("quarantined", row.quarantined),
                    (REPLAYED, row.replayed),
                    (SUPERSEDED, row.superseded),
                    (PENDING, row.pending),
                ):
                    slot[state] += int(n)
        for d, c, reason, f, unparsed, n in self.con.execute(
            "SELECT d, c, _reason, _source_file, _raw_line IS NOT NULL, count(*) "
            "FROM bad_rows GROUP BY ALL ORDER BY 1, 2, 6 DESC"
        ).fetchall():
            res = results[(d, c)]
            res.by_reason[reason] = res.by_reason.get(reason, 0) + int(n)
            if unparsed:  # lines the reader rejected are not in `picked`
                res.by_file.setdefault(f, _zero())["quarantined"] += int(n)
        unassigned = UNASSIGNED_CLIENT if self.table.is_fact else "_"
        for d, f, n in self.con.execute(
            "SELECT coalesce(_date, '_'), _file, count(*) FROM rejected WHERE _replayed GROUP BY ALL"
        ).fetchall():
            res = results.get((d, unassigned))
            if res is not None:
                res.by_file.setdefault(f, _zero())[REPLAYED] += int(n)
        for res in results.values():
            for state in STATES:
                setattr(res, state, sum(v[state] for v in res.by_file.values()))
        return results

    # -- publishing --------------------------------------------------------------------------
    def _staged(self, name: str, key: tuple[str, str]) -> Path | None:
        return _single_file(self.stage / name / f"d={key[0]}" / f"c={key[1]}")

    def _publish_side(
        self,
        zone: str,
        name: str,
        res: PartitionResult,
        key: tuple[str, str],
        digests: dict[str, dict[tuple[str, str], str]],
        old: dict[str, Any],
        existing: set[str],
        manifest: dict[str, Any],
        empty_ok: bool = False,
    ) -> None:
        dest = self.lake.data_file(zone, self.table.name, res.date, res.client)
        digest = digests[name].get(key)
        manifest[f"{zone}_digest"] = digest
        staged = self._staged(name, key)
        if staged is not None:
            if digest == old.get(f"{zone}_digest") and dest in existing:
                return  # the same rows are there already
            self.lake.publish_file(staged, dest, move=True)
            res.changed = True
        elif dest in existing:
            res.changed = True
            if empty_ok:
                # An empty quarantine object, not a delete: a reader listing the zone sees the
                # partition go from some rows to none, never a half-deleted folder.
                empty = self.stage / f"empty_{name}.parquet"
                if not empty.exists():
                    self.con.execute(
                        f"COPY (SELECT * EXCLUDE (d, c) FROM {name} LIMIT 0) TO '{empty}' (FORMAT parquet)"
                    )
                self.lake.publish_file(empty, dest)
            else:
                # Pending and history objects exist only while they hold rows (the release scan
                # lists pending/), so emptied ones go; Lake.delete verifies the delete.
                self.lake.delete(dest)

    def _publish_data(
        self, res: PartitionResult, key: tuple[str, str], old: dict[str, Any], manifest: dict[str, Any]
    ) -> None:
        dest = self.lake.data_file("raw", self.table.name, res.date, res.client)
        good = self._staged("good", key)
        if good is None and res.landed:
            # The writer named the folder differently (an escaped value): never publish an
            # empty file for rows the manifest would count as landed.
            raise LandingError(f"{self.table.name} {res.date}/{res.client}: {res.landed} rows counted, no file written")
        if good is None:
            good = self.stage / "empty_good.parquet"
            if not good.exists():
                self.con.execute(f"COPY (SELECT {self.cols} FROM typed LIMIT 0) TO '{good}' (FORMAT parquet)")
        sha = hashlib.sha256(good.read_bytes()).hexdigest()
        manifest["sha256"] = sha
        res.bytes = good.stat().st_size
        if old.get("sha256") == sha and self.lake.exists(dest):
            return  # byte-identical to what is landed: a replay rewrites nothing
        res.changed = True
        # Keep the version the gate last passed before replacing it: while the new version is
        # blocked, the curated layer reads that one instead (transform.Runner).
        passed_sha = self.ctx.verdicts.get((res.date, res.client))
        if passed_sha is not None and passed_sha == old.get("sha256") and self.lake.exists(dest):
            self.lake.copy(dest, self.lake.data_file("lastgood", self.table.name, res.date, res.client))
        self.lake.publish_file(good, dest, move=good.name == DATA_FILE)


def _single_file(folder: Path) -> Path | None:
    """The one Parquet file DuckDB wrote for a partition (None when it had no rows)."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if len(files) > 1:
        raise LandingError(f"expected one staged file in {folder}, found {len(files)}")
    return files[0] if files else None


def _batches(entries: list[FileEntry]) -> list[list[FileEntry]]:
    """Group files that share a date (connected components), keeping the input order inside each."""
    groups: list[tuple[set[str], list[FileEntry]]] = []
    for e in entries:
        touching = [g for g in groups if g[0] & e.dates]
        merged_dates, merged = set(e.dates), [e]
        for g in touching:
            merged_dates |= g[0]
            merged = g[1] + merged
            groups.remove(g)
        groups.append((merged_dates, sorted(merged, key=entries.index)))
    return [g[1] for g in sorted(groups, key=lambda g: min(g[0]) if g[0] else "")]


def manifest_path(lake: Lake, table: str, date: str | None, client: str | None) -> str:
    if date is None:
        return lake.meta_path("landing", table, "manifest.json")
    return lake.meta_path("landing", table, f"date={date}", f"client={client}.json")


def reconcile(lake: Lake, inbox: Path, table: Table) -> dict[str, dict[str, Any]]:
    """Per source file: rows read (a fresh scan, not the cached index, which a landing may have
    filled from its own read) vs what the manifests say became of them.

    A file of the feed folder that cannot be read (not a CSV it lands, a bad header, not
    UTF-8...) maps to `{"error": why}`: the audit goes on with the other files, and a file
    never read is never mistaken for one that reconciles.
    """
    from delivery_lake.inbox import refused_files

    unread: dict[str, str] = {str(p): why for p, why in refused_files(inbox, table.name)}
    entries = InboxIndex(lake, inbox, table).entries(rescan=True, errors=unread)
    accounted: dict[str, dict[str, int]] = defaultdict(_zero)
    manifests = lake.glob(lake.meta_path("landing", table.name) + ("/**/*.json" if table.is_fact else "/manifest.json"))
    for m in manifests:
        doc = lake.read_json(m)
        for f, v in doc["by_file"].items():
            for state in STATES:
                accounted[f][state] += int(v.get(state, 0))
    out: dict[str, dict[str, Any]] = {e.path: {"read": e.rows, **accounted[e.path]} for e in entries}
    out.update({path: {"error": why} for path, why in unread.items()})
    return dict(sorted(out.items()))


def unreconciled(lake: Lake, inbox: Path, table: Table, paths: list[str]) -> list[str]:
    """The files among `paths` whose rows, as the inbox index counted them, are not all accounted
    for by the manifests of the dates they touch: one line each, naming the file."""
    entries = {e.path: e for e in InboxIndex(lake, inbox, table).entries(paths=[Path(p) for p in paths])}
    docs: dict[str, dict[str, Any]] = {}
    out = []
    for path in paths:
        e = entries.get(path)
        if e is None:
            continue
        if table.is_fact:
            patterns = [lake.meta_path("landing", table.name, f"date={d}") + "/*.json" for d in sorted(e.dates)]
        else:
            patterns = [manifest_path(lake, table.name, None, None)]
        for pattern in patterns:
            for m in lake.glob(pattern):
                if m not in docs:
                    docs[m] = lake.read_json(m) or {}
        counts = _zero()
        for m in (m for pattern in patterns for m in lake.glob(pattern)):
            for state in STATES:
                counts[state] += int((docs[m].get("by_file") or {}).get(path, {}).get(state, 0))
        accounted = sum(counts.values())
        if accounted != e.rows:
            detail = ", ".join(f"{s} {n}" for s, n in counts.items())
            out.append(f"{path}: rows do not reconcile: read {e.rows}, accounted for {accounted} ({detail})")
    return out


def releasable(lake: Lake, settings: Settings) -> dict[str, dict[str, set[str]]]:
    """Child partitions holding pending rows that a landing would now decide differently:
    a parent arrived, or the grace period ran out. `table -> date -> clients`.

    Every path that lands (the CLI's run, the inbox sensor, a backfill) asks this after its
    landings and re-lands what it returns; re-landing reads the inbox again, so the decision
    is the landing's own, never a second implementation of it.
    """
    out: dict[str, dict[str, set[str]]] = {}
    con = lake.duckdb()
    try:
        for table in TABLES.values():
            parents = _fact_parents(table)
            if not table.is_fact or not parents:
                continue
            pending = lake.list_partitions("pending", table.name)
            if not pending:
                continue
            files = ", ".join(literal(lake.uri(lake.data_file("pending", table.name, d, c))) for d, c in pending)
            clock = parent_clock(lake, table)
            grace = int(settings.orphan_grace_days)
            for column, parent in parents:
                parent_files = lake.list_partitions("raw", parent)
                known = (
                    f"SELECT {ident(TABLES[parent].key)} AS k FROM read_parquet(["
                    f"{', '.join(literal(lake.uri(lake.data_file('raw', parent, d, c))) for d, c in parent_files)}])"
                    if parent_files
                    else "SELECT NULL::VARCHAR AS k WHERE false"
                )
                expired = "false" if clock is None else f"date_diff('day', date, DATE {literal(clock)}) > {grace}"
                rows = con.execute(
                    f"""SELECT DISTINCT CAST(date AS VARCHAR), client
                        FROM read_parquet([{files}], hive_partitioning = true, """
                    f"""hive_types = {{'date': DATE, 'client': VARCHAR}})
                        WHERE _pending_on = {literal(column)} AND ({expired} OR {ident(column)} IN ({known}))"""
                ).fetchall()
                for d, c in rows:
                    out.setdefault(table.name, {}).setdefault(d, set()).add(c)
    finally:
        con.close()
    return out
