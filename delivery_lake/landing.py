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
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delivery_lake.config import Settings
from delivery_lake.contract import TABLES, Table
from delivery_lake.inbox import FileEntry, InboxIndex, InputError, csv_source_sql, ensure_rejects_table, read_header
from delivery_lake.storage import UNASSIGNED_CLIENT, Lake, staging_dir


class LandingError(RuntimeError):
    pass


@dataclass
class PartitionResult:
    table: str
    date: str | None
    client: str | None
    landed: int = 0
    quarantined: int = 0
    bytes: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    by_file: dict[str, dict[str, int]] = field(default_factory=dict)


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
    def bytes(self) -> int:
        return sum(p.bytes for p in self.partitions)

    @property
    def by_reason(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for p in self.partitions:
            for r, n in p.by_reason.items():
                out[r] += n
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def check_reconciled(self) -> None:
        if self.read != self.landed + self.quarantined:
            raise LandingError(
                f"{self.table}: rows do not reconcile: read {self.read} != landed {self.landed} "
                f"+ quarantined {self.quarantined}"
            )


# ---- SQL generated from the contract -------------------------------------------------------


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def reason_exprs(table: Table, parent_keys: dict[str, str]) -> list[str]:
    """CASE expressions over typed columns naming each broken rule (casts were checked by the reader)."""
    out: list[str] = []
    for c in table.columns:
        col = _q(c.name)
        if not c.nullable:
            out.append(f"CASE WHEN {col} IS NULL THEN 'missing:{c.name}' END")
        if c.min is not None:
            out.append(f"CASE WHEN {col} < {c.min} THEN 'range:{c.name}' END")
        if c.max is not None:
            out.append(f"CASE WHEN {col} > {c.max} THEN 'range:{c.name}' END")
        if c.allowed:
            values = ", ".join(_lit(v) for v in c.allowed)
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
        pcol, ccol = _q(table.partition_column or ""), _q(table.client_column or "")
        # A missing partition timestamp files the row under its file's nominal date.
        nominal = (
            "CASE _file_rank "
            + " ".join(f"WHEN {i} THEN {_lit(d or 'unknown')}" for i, d in enumerate(nominal_dates))
            + " END"
        )
        date_expr = f"coalesce(CAST({pcol} AS DATE)::VARCHAR, {nominal})"
        client_ok = f"{ccol} IN (SELECT k FROM {parent_keys['clients']})" if "clients" in parent_keys else "true"
        client_expr = f"CASE WHEN {client_ok} THEN {ccol} ELSE {_lit(UNASSIGNED_CLIENT)} END"
    else:
        date_expr, client_expr = "NULL::VARCHAR", "NULL::VARCHAR"
    conditions = [e.removeprefix("CASE WHEN ").rsplit(" THEN ", 1)[0] for e in reason_exprs(table, parent_keys)]
    # A rule that evaluates to NULL is not broken: NULL OR false is NULL, coalesced to false.
    ok = "NOT coalesce(" + " OR ".join(f"({c})" for c in conditions) + ", false)" if conditions else "true"
    # The reasons list is only built for failing rows (CASE evaluates branches selectively).
    return f"""
        SELECT *, CASE WHEN {ok} THEN []::VARCHAR[] ELSE {reasons} END AS _rs,
               {date_expr} AS _date, {client_expr} AS _client
        FROM src
    """


@dataclass
class _BatchResult:
    partitions: list[PartitionResult] = field(default_factory=list)
    read: int = 0
    preview: list[dict[str, Any]] = field(default_factory=list)
    registered: set[str] = field(default_factory=set)
    learned: list[FileEntry] = field(default_factory=list)


@dataclass
class _Counts:
    """One aggregate over `typed` (and `rejected`) that planning, manifests and the index share."""

    # (_file_rank, _file, _date, _client, raw client, valid rows, quarantined rows)
    typed: list[tuple[int, str, str | None, str | None, str, int, int]]
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
                    f"SELECT DISTINCT {_q(table.key)} FROM typed WHERE len(_rs) = 0 ORDER BY 1"
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
        # File rank decides duplicates: later arrivals (modification time, then name) win.
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
        try:
            parent_keys = self._load_parent_keys(base, table)  # shared by the batches' cursors
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(self._land_batch, base, parent_keys, table, b, w, landed_at) for b, w in jobs]
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

    def _land_batch(
        self,
        base: Any,
        parent_keys: dict[str, str],
        table: Table,
        entries: list[FileEntry],
        requested: dict[str, list[str] | None] | None,
        landed_at: str,
    ) -> _BatchResult:
        out = _BatchResult()
        con = base.cursor()
        try:
            self._load_sources(con, table, entries)
            con.execute(
                f"CREATE TEMP TABLE typed AS {_typed_select(table, parent_keys, [e.nominal_date for e in entries])}"
            )
            self._load_rejects(con, table, entries)
            self._mark_duplicates(con, table)
            self._lines(con)
            if "clients" in parent_keys:
                out.registered = {r[0] for r in con.execute(f"SELECT k FROM {parent_keys['clients']}").fetchall()}
            counts = self._counts(con, table)
            if requested is None:
                out.read = sum(ok + bad for *_, ok, bad in counts.typed) + sum(n for *_, n in counts.rejected)
            if table.is_fact:
                out.learned = self._learn(entries, counts)
            targets = self._targets(table, requested, counts)
            with staging_dir(self.settings) as stage:
                out.partitions = self._write_partitions(con, table, targets, counts, stage, landed_at)
            out.preview = self._preview(con, table)
            return out
        finally:
            con.close()

    def _load_parent_keys(self, con: Any, table: Table) -> dict[str, str]:
        out: dict[str, str] = {}
        for parent in table.parents:
            if TABLES[parent].is_fact:
                continue  # fact-to-fact references are checked across tables by the suites
            path = self.lake.data_file("raw", parent)
            if not self.lake.exists(path):
                raise LandingError(f"{table.name} references {parent}, which has not been landed yet")
            name = f"keys_{parent}"
            con.execute(
                f"CREATE TABLE {name} AS SELECT DISTINCT {_q(TABLES[parent].key)} AS k "
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
            f"NULLIF(trim({_q(c.name)}), '') AS {_q(c.name)}" if c.dtype == "string" else _q(c.name)
            for c in table.columns
        )
        parts = []
        for i, e in enumerate(entries):
            header = e.header  # read and checked against the contract when the file was indexed
            parts.append(
                f"SELECT {cols}, {_lit(e.path)} AS _file, {i} AS _file_rank, row_number() OVER () AS _ord "
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
            f"""SELECT {i} AS _file_rank, {_lit(e.path)} AS _file,
                       {_lit(e.nominal_date or "unknown") if table.is_fact else "NULL::VARCHAR"} AS _date, line,
                       string_agg(DISTINCT {reason}, ';' ORDER BY {reason}) AS reasons, first(csv_line) AS csv_line
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
        cols = ", ".join(f"{_q(c.name)} VARCHAR" for c in table.columns)
        con.execute(f"CREATE TEMP TABLE rejected_fields (_file_rank BIGINT, line BIGINT, {cols})")
        if rows:
            marks = ", ".join("?" for _ in range(len(table.columns) + 2))
            con.executemany(f"INSERT INTO rejected_fields VALUES ({marks})", rows)

    def _mark_duplicates(self, con: Any, table: Table) -> None:
        """Among valid rows of a key, the last file then the last line wins; the others are quarantined.

        Found with a grouped aggregate (keys seen twice are rare) and fixed with a small
        UPDATE, so `typed` keeps its file order and needs no sort.
        """
        key = _q(table.key)
        con.execute(
            f"""UPDATE typed SET _rs = ['duplicate']
                FROM (SELECT {key} AS k, max({{'f': _file_rank, 'o': _ord}}) AS winner
                      FROM typed WHERE len(_rs) = 0 GROUP BY {key} HAVING count(*) > 1) d
                WHERE typed.{key} = d.k AND len(typed._rs) = 0
                  AND {{'f': typed._file_rank, 'o': typed._ord}} <> d.winner"""
        )

    def _lines(self, con: Any) -> None:
        """Record-based line numbers (header = line 1) of quarantined rows, accounting for rejected lines.

        A parsed row with ordinal k sits on line k + 1 + (rejected lines before it); the j-th
        rejected line r_j has r_j - j - 1 parsed rows before it.
        """
        con.execute(
            """CREATE TEMP TABLE rej_gaps AS
               SELECT _file_rank, line - row_number() OVER (PARTITION BY _file_rank ORDER BY line) - 1 AS good_before
               FROM rejected"""
        )
        con.execute(
            """CREATE TEMP TABLE bad_lines AS
               SELECT t._file_rank, t._ord, t._ord + 1 + count(g.good_before) AS _line
               FROM (SELECT _file_rank, _ord FROM typed WHERE len(_rs) > 0) t
               LEFT JOIN rej_gaps g ON g._file_rank = t._file_rank AND g.good_before < t._ord
               GROUP BY t._file_rank, t._ord"""
        )

    def _counts(self, con: Any, table: Table) -> _Counts:
        raw_client = f"coalesce({_q(table.client_column)}, '')" if table.client_column else "''"
        typed = con.execute(
            f"""SELECT _file_rank, _file, _date, _client, {raw_client}, count(*) FILTER (len(_rs) = 0), count(*) FILTER (len(_rs) > 0)
                FROM typed GROUP BY ALL"""
        ).fetchall()
        rejected = con.execute("SELECT _file_rank, _date, count(*) FROM rejected GROUP BY ALL").fetchall()
        return _Counts(typed, rejected)

    def _learn(self, entries: list[FileEntry], counts: _Counts) -> list[FileEntry]:
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
        for rank, _f, d, _c, raw, ok, bad in counts.typed:
            if rank in parts:
                by_client = parts[rank].setdefault(d, {})
                by_client[raw] = by_client.get(raw, 0) + ok + bad
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
        present: dict[str, set[str]] = defaultdict(set)
        for _r, _f, d, c, _raw, _ok, _bad in counts.typed:
            present[d].add(c)
        for _r, d, _n in counts.rejected:
            present[d].add(UNASSIGNED_CLIENT)
        out: list[tuple[str | None, str | None]] = []
        for d in sorted(requested):
            clients = requested[d]
            wanted = set(present.get(d, set()) - {UNASSIGNED_CLIENT}) if clients is None else set(clients)
            for c in sorted(wanted):
                out.append((d, c))
            # Rows that belong to no client are quarantined with every landing of their date.
            if UNASSIGNED_CLIENT in present.get(d, set()):
                out.append((d, UNASSIGNED_CLIENT))
        return out

    def _write_partitions(
        self,
        con: Any,
        table: Table,
        targets: list[tuple[str | None, str | None]],
        counts: _Counts,
        stage: Path,
        landed_at: str,
    ) -> list[PartitionResult]:
        """Write every target partition with two COPY statements, then publish them one object each."""
        cols = ", ".join(_q(c.name) for c in table.columns)
        text_cols = ", ".join(f"{_q(c.name)}::VARCHAR AS {_q(c.name)}" for c in table.columns)
        field_cols = ", ".join(f"f.{_q(c.name)}" for c in table.columns)
        con.execute("CREATE OR REPLACE TEMP TABLE targets (d VARCHAR, c VARCHAR)")
        keys = [(d or "_", c or "_") for d, c in targets]
        # One statement for all targets (executemany runs one INSERT per row: 24 ms for a day's 76).
        if keys:
            con.execute("INSERT INTO targets VALUES " + ", ".join(["(?, ?)"] * len(keys)), [v for k in keys for v in k])
        key = "coalesce(_date, '_') AS d, coalesce(_client, '_') AS c"
        wanted = set(keys)
        everything = all((d or "_", c or "_") in wanted for _r, _f, d, c, _raw, _ok, _bad in counts.typed)
        # A backfill wants every partition of the batch: no need to filter (or copy) `typed`.
        picked_from = (
            "typed"
            if everything
            else "typed SEMI JOIN targets ON coalesce(_date, '_') = d AND coalesce(_client, '_') = c"
        )
        con.execute(f"CREATE OR REPLACE TEMP VIEW picked AS SELECT {key}, * FROM {picked_from}")
        good_dir, bad_dir = stage / "good", stage / "bad"
        # No ORDER BY: `typed` is in file order and DuckDB keeps insertion order in the write.
        con.execute(
            f"""COPY (SELECT d, c, {cols} FROM picked WHERE len(_rs) = 0)
                TO '{good_dir}' (FORMAT parquet, PARTITION_BY (d, c), FILENAME_PATTERN 'data')"""
        )
        unassigned = _lit(UNASSIGNED_CLIENT) if table.is_fact else "'_'"
        con.execute(
            f"""CREATE OR REPLACE TEMP VIEW bad AS
                SELECT d, c, {text_cols}, _rs[1] AS _reason, array_to_string(_rs, ';') AS _reasons,
                       _file AS _source_file, b._line::BIGINT AS _source_line, NULL::VARCHAR AS _raw_line,
                       {_lit(landed_at)} AS _landed_at
                FROM picked p JOIN bad_lines b USING (_file_rank, _ord) WHERE len(_rs) > 0
                UNION ALL
                SELECT coalesce(r._date, '_'), {unassigned}, {field_cols},
                       split_part(r.reasons, ';', 1), r.reasons, r._file, r.line::BIGINT, r.csv_line, {_lit(landed_at)}
                FROM rejected r JOIN rejected_fields f USING (_file_rank, line)
                SEMI JOIN targets ON coalesce(r._date, '_') = d AND {unassigned} = c"""
        )
        con.execute("CREATE OR REPLACE TEMP TABLE bad_rows AS SELECT * FROM bad")  # usually a handful of rows
        if con.execute("SELECT count(*) FROM bad_rows").fetchone()[0]:
            con.execute(
                f"""COPY (SELECT * FROM bad_rows ORDER BY d, c, _source_file, _source_line)
                    TO '{bad_dir}' (FORMAT parquet, PARTITION_BY (d, c), FILENAME_PATTERN 'data')"""
            )
        empty_good, empty_bad = stage / "empty_good.parquet", stage / "empty_bad.parquet"

        def empty(path: Path, select: str) -> Path:
            if not path.exists():
                con.execute(f"COPY ({select} LIMIT 0) TO '{path}' (FORMAT parquet)")
            return path

        results: dict[tuple[str, str], PartitionResult] = {
            (d or "_", c or "_"): PartitionResult(table.name, d, c) for d, c in targets
        }
        for _r, f, d, c, _raw, ok, q in counts.typed:
            res = results.get((d or "_", c or "_"))
            if res is not None:
                slot = res.by_file.setdefault(f, {"landed": 0, "quarantined": 0})
                slot["landed"] += int(ok)
                slot["quarantined"] += int(q)
        for d, c, reason, f, unparsed, n in con.execute(
            "SELECT d, c, _reason, _source_file, _raw_line IS NOT NULL, count(*) FROM bad_rows GROUP BY ALL ORDER BY 1, 2, 6 DESC"
        ).fetchall():
            res = results[(d, c)]
            res.by_reason[reason] = res.by_reason.get(reason, 0) + int(n)
            if unparsed:  # lines the reader rejected are not in `picked`
                slot = res.by_file.setdefault(f, {"landed": 0, "quarantined": 0})
                slot["quarantined"] += int(n)

        # Publish, per partition: quarantine, then data, then the manifest that vouches for both.
        # Quarantine objects that may need emptying: only this batch's dates are listed.
        existing_bad: set[str] = set()
        for d in sorted({res.date for res in results.values()}, key=str):
            folder = self.lake.partition_dir("quarantine", table.name, d)
            existing_bad.update(self.lake.glob(folder + ("/*/" if d else "/") + "data.parquet"))
        out: list[PartitionResult] = []
        for (d, c), res in results.items():
            date, client = res.date, res.client
            res.landed = sum(v["landed"] for v in res.by_file.values())
            res.quarantined = sum(v["quarantined"] for v in res.by_file.values())
            sub = Path(f"d={d}") / f"c={c}"
            good, bad = _single_file(good_dir / sub), _single_file(bad_dir / sub)
            if good is None and res.landed and client != UNASSIGNED_CLIENT:
                # The writer named the folder differently (an escaped value): never publish an
                # empty file for rows the manifest would count as landed.
                raise LandingError(f"{table.name} {date}/{client}: {res.landed} rows counted, no file written")
            bad_dest = self.lake.data_file("quarantine", table.name, date, client)
            if bad is not None:
                self.lake.publish_file(bad, bad_dest, move=True)
            elif bad_dest in existing_bad:
                self.lake.publish_file(empty(empty_bad, "SELECT * EXCLUDE (d, c) FROM bad_rows"), bad_dest)
            if client != UNASSIGNED_CLIENT:
                dest = self.lake.data_file("raw", table.name, date, client)
                res.bytes = (
                    self.lake.publish_file(good, dest, move=True)
                    if good
                    else self.lake.publish_file(empty(empty_good, f"SELECT {cols} FROM typed"), dest)
                )
            self.lake.write_json(
                manifest_path(self.lake, table.name, date, client),
                {
                    "table": table.name,
                    "date": date,
                    "client": client,
                    "landed": res.landed,
                    "quarantined": res.quarantined,
                    "by_reason": res.by_reason,
                    "by_file": res.by_file,
                    "bytes": res.bytes,
                    "landed_at": landed_at,
                },
            )
            out.append(res)
        return out

    def _preview(self, con: Any, table: Table, n: int = 5) -> list[dict[str, Any]]:
        cols = [c.name for c in table.columns]
        rows = con.execute(
            f"SELECT {', '.join(_q(c) for c in cols)} FROM typed WHERE len(_rs) = 0 LIMIT {n}"
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
        """Per date: rows the inbox index counted for the landed partitions == landed + quarantined."""
        for d, clients in requested.items():
            got = sum(p.landed + p.quarantined for p in report.partitions if p.date == d)
            expected = 0
            for e in entries:
                for c, n in e.partitions.get(d, {}).items():
                    if clients is None or c in clients or c not in registered:
                        expected += n
                if e.nominal_date == d:
                    expected += e.malformed
            report.read += expected
            if got != expected:
                raise LandingError(f"{report.table} {d}: read {expected} rows but landed + quarantined {got}")


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


def reconcile(lake: Lake, inbox: Path, table: Table) -> dict[str, dict[str, int]]:
    """Per source file: rows read (a fresh scan, not the cached index, which a landing may have
    filled from its own read) vs landed + quarantined (manifests)."""
    entries = InboxIndex(lake, inbox, table).entries(rescan=True)
    landed: dict[str, int] = defaultdict(int)
    quarantined: dict[str, int] = defaultdict(int)
    manifests = lake.glob(
        lake.meta_path("landing", table.name) + ("/**/*.json" if table.is_fact else "/manifest.json")
    )
    for m in manifests:
        doc = lake.read_json(m)
        for f, v in doc["by_file"].items():
            landed[f] += v["landed"]
            quarantined[f] += v["quarantined"]
    return {e.path: {"read": e.rows, "landed": landed[e.path], "quarantined": quarantined[e.path]} for e in entries}
