"""Land inbox CSV files as typed, date x client partitioned Parquet, quarantining bad rows.

How one landing works (for a fact table and a set of (date, client) partitions):

1. Every source file involved is checked first (exists, not empty, has data rows, header
   has every contract column). A bad file stops the landing before anything is written.
2. Files touching the requested dates are read by DuckDB as text, streaming, one file at a
   time; lines that are not valid CSV (ragged, invalid UTF-8) are set aside by DuckDB's
   rejects table with their line number.
3. One SQL statement generated from the contract types every column with TRY_CAST and
   collects every broken rule of a row in `_broken_rules` (quarantined as `_reasons`):
   missing, unparseable, range, not_allowed, orphan (dimension keys known at landing),
   rule:<name>.
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

This module is the entry point (`Landing`) and the audits of what landed (`reconcile`,
`unreconciled`, `releasable`). The parts of a landing live beside it:

- landing_records: row states, counts, reports, the context the batches share;
- landing_sql: the SQL generated from the contract (typing, validation, versions, side tables);
- landing_plan: which files, batches and partitions a landing reads and writes;
- landing_batch: one batch typed, validated and classified on its own DuckDB cursor;
- landing_publish: the partition writer (staged files, publishing, manifests).
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delivery_lake.config import Settings
from delivery_lake.contract import TABLES, Table
from delivery_lake.inbox import FileEntry, InboxIndex, InputError, read_header, refused_files
from delivery_lake.landing_batch import BatchTables, load_parent_keys
from delivery_lake.landing_plan import (
    PARENT_WINDOW_DAYS,
    BatchJob,
    batch_jobs,
    entries_as_read,
    fact_parents,
    files_to_read,
    parent_clock,
    plan_holds,
    target_partitions,
)
from delivery_lake.landing_publish import PartitionWriter, passed_versions
from delivery_lake.landing_records import (
    PENDING,
    REPLAYED,
    STATES,
    SUPERSEDED,
    BatchCounts,
    CountRow,
    LandingContext,
    LandingError,
    LandingReport,
    PartitionResult,
    RejectedCount,
    Requested,
    manifest_path,
    zero_counts,
)
from delivery_lake.landing_sql import grace_expired, reason_exprs, typed_select
from delivery_lake.sql import ident, literal
from delivery_lake.storage import Lake, staging_dir

__all__ = [
    "PARENT_WINDOW_DAYS",
    "PENDING",
    "REPLAYED",
    "STATES",
    "SUPERSEDED",
    "BatchCounts",
    "CountRow",
    "Landing",
    "LandingError",
    "LandingReport",
    "PartitionResult",
    "PartitionWriter",
    "RejectedCount",
    "manifest_path",
    "parent_clock",
    "reason_exprs",
    "reconcile",
    "releasable",
    "typed_select",
    "unreconciled",
]

# The partition writer under its former name (tests patch its methods through this module).
_PartitionWriter = PartitionWriter


@dataclass
class _BatchResult:
    partitions: list[PartitionResult] = field(default_factory=list)
    read: int = 0
    preview: list[dict[str, Any]] = field(default_factory=list)
    registered: set[str] = field(default_factory=set)
    # index entries of the batch's provisional files, as counted while reading them
    learned: list[FileEntry] = field(default_factory=list)
    # True when a provisional file touched a date outside the batch: nothing was published
    plan_changed: bool = False


@dataclass
class _Replan:
    """A landing to plan again: files touched dates their names did not announce (`learned`: what
    they hold, as read; the batches of the other files were published)."""

    learned: list[FileEntry]


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
            batch = BatchTables(con, table, entries)
            batch.type_rows(load_parent_keys(self.lake, con, table))
            return batch.valid_keys()
        finally:
            con.close()

    def land_dimension(self, table: Table) -> LandingReport:
        entries = self.index(table).entries()
        if not entries:
            raise InputError(f"{self.inbox / table.name}: no CSV files for dimension {table.name}")
        outcome = self._land(table, entries, requested=None)
        assert isinstance(outcome, LandingReport)  # only fact files are planned by the date in their name
        return outcome

    def land_fact(self, table: Table, partitions: Requested) -> LandingReport:
        """Land `date -> clients` (None = every client found) for a fact table.

        Files not indexed yet are planned by the date in their name and counted while they are
        read (one pass over the CSV, not two). When one turns out to touch dates its name did not
        announce, its batch publishes nothing; the file's real partitions are indexed and the
        landing is planned and run again (batches already published are landed again: publishing
        is idempotent). Each pass indexes at least one more file, so the loop ends.
        """
        dates = set(partitions)
        index = self.index(table)
        while True:
            entries = files_to_read(index, dates)
            if not entries:
                raise InputError(f"{self.inbox / table.name}: no CSV files touch dates {', '.join(sorted(dates))}")
            outcome = self._land(table, entries, requested=partitions)
            if isinstance(outcome, LandingReport):
                report = outcome
                break
            index.remember(outcome.learned)
        deferred = {e.path for e in entries if e.provisional}
        if deferred:
            index.remember([e for e in report.entries if e.path in deferred])
        return report

    # -----------------------------------------------------------------------------------------
    def _land(self, table: Table, entries: list[FileEntry], requested: Requested | None) -> LandingReport | _Replan:
        started = time.monotonic()
        # File rank decides versions: later arrivals (modification time, then name) win.
        entries = sorted(entries, key=lambda e: (Path(e.path).stat().st_mtime_ns, e.path))
        report = LandingReport(table=table.name, files=[e.path for e in entries])
        report.schema = {c.name: c.duckdb_type for c in table.columns}
        # 1. Validate every file before touching anything.
        for entry in entries:
            header = read_header(Path(entry.path), table)
            extra = [h for h in header if h not in table.column_names]
            if extra:
                report.extra_columns[entry.path] = extra

        landed_at = datetime.now(UTC).isoformat(timespec="seconds")
        # 2. Batches are independent: up to DUCKDB_THREADS of them run at once, each on its own
        # connection (a cursor: temp tables are private) to one DuckDB instance, which shares
        # its thread pool and warm buffers. The per-file ordinal that gives line numbers keeps a
        # file's reader on one thread, so parallelism across days is what uses the machine.
        jobs = batch_jobs(table, entries, requested)
        workers = max(1, min(self.settings.duckdb_threads, len(jobs)))
        registered: set[str] = set()
        learned: dict[str, FileEntry] = {}
        learned_by_stopped: list[FileEntry] = []  # of the batches that found their plan wrong
        plan_changed = False
        base = self.lake.duckdb()
        # Each batch's query runs on its calling thread: more DuckDB threads would only
        # contend with the other batches for the same cores.
        base.execute(f"SET threads = {max(1, self.settings.duckdb_threads // workers)}")
        shared = LandingContext(base=base, table=table, landed_at=landed_at)
        try:
            shared.parent_keys = load_parent_keys(self.lake, base, table)  # shared by the batches' cursors
            shared.clock = parent_clock(self.lake, table)
            shared.verdicts = passed_versions(self.lake, table.name) if table.is_fact else {}
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(self._land_batch, shared, job) for job in jobs]
                for fut in futures:  # in batch order, so the report is deterministic
                    result = fut.result()
                    if result.plan_changed:
                        plan_changed = True
                        learned_by_stopped.extend(result.learned)
                        continue
                    report.partitions.extend(result.partitions)
                    report.read += result.read
                    report.preview = report.preview or result.preview
                    registered |= result.registered
                    learned.update({e.path: e for e in result.learned})
        finally:
            base.close()
        if plan_changed:
            return _Replan(learned_by_stopped + list(learned.values()))
        report.entries = [learned.get(e.path, e) for e in entries]
        report.seconds = round(time.monotonic() - started, 3)
        if requested is None:
            report.check_reconciled()
        else:
            self._check_partition_reconciliation(report, report.entries, requested, registered)
        return report

    def _land_batch(self, shared: LandingContext, job: BatchJob) -> _BatchResult:
        table = shared.table
        out = _BatchResult()
        batch = BatchTables(shared.base.cursor(), table, job.entries)
        try:
            batch.type_rows(shared.parent_keys)
            batch.collect_rejects()
            batch.classify_versions()
            if table.is_fact:
                batch.hold_for_parents(self.lake, shared, int(self.settings.orphan_grace_days))
            batch.mark_replayed_bad_rows()
            batch.number_bad_lines()
            batch.collect_foreign_records(self.inbox)
            if "clients" in shared.parent_keys:
                out.registered = batch.keys_in(shared.parent_keys["clients"])
            counts = batch.counts()
            if job.requested is None:
                out.read = counts.read
            if table.is_fact:
                out.learned = entries_as_read(job.entries, counts)
                if not plan_holds(job.entries, out.learned):
                    out.plan_changed = True  # before anything is published
                    return out
            targets = target_partitions(self.lake, table, job.requested, counts)
            with staging_dir(self.settings) as stage:
                out.partitions = PartitionWriter(self.lake, batch.con, shared, stage).write(targets, counts)
            out.preview = batch.preview()
            return out
        finally:
            batch.con.close()

    def _check_partition_reconciliation(
        self,
        report: LandingReport,
        entries: list[FileEntry],
        requested: Requested,
        registered: set[str],
    ) -> None:
        """Per date: rows the inbox index counted for the landed partitions == every row accounted for."""
        for d, clients in requested.items():
            got = sum(p.accounted for p in report.partitions if p.date == d)
            expected = 0
            for entry in entries:
                for client, rows in entry.partitions.get(d, {}).items():
                    if clients is None or client in clients or client not in registered:
                        expected += rows
                if entry.nominal_date == d:
                    expected += entry.malformed
            report.read += expected
            if got != expected:
                raise LandingError(
                    f"{report.table} {d}: read {expected} rows but accounted for {got} "
                    "(landed + quarantined + replayed + superseded + pending)"
                )


def reconcile(lake: Lake, inbox: Path, table: Table) -> dict[str, dict[str, Any]]:
    """Per source file: rows read (a fresh scan, not the cached index, which a landing may have
    filled from its own read) vs what the manifests say became of them.

    A file of the feed folder that cannot be read (not a CSV it lands, a bad header, not
    UTF-8...) maps to `{"error": why}`: the audit goes on with the other files, and a file
    never read is never mistaken for one that reconciles.
    """
    unread: dict[str, str] = {str(p): why for p, why in refused_files(inbox, table.name)}
    entries = InboxIndex(lake, inbox, table).entries(rescan=True, errors=unread)
    accounted: dict[str, dict[str, int]] = defaultdict(zero_counts)
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
        counts = zero_counts()
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
            parents = fact_parents(table)
            if not table.is_fact or not parents:
                continue
            pending = lake.list_partitions("pending", table.name)
            if not pending:
                continue
            files = ", ".join(literal(lake.uri(lake.data_file("pending", table.name, d, c))) for d, c in pending)
            clock = parent_clock(lake, table)
            grace = int(settings.orphan_grace_days)
            for column, parent in parents:
                key = TABLES[parent].key
                # the parent's key column through `read_columns`: on S3 pyarrow's client and the
                # files' columns kept on disk by ETag (DuckDB read the parent's files through
                # fsspec one at a time, 12-15 s for 184 files on every inbox tick without new files)
                keys = lake.read_columns("raw", parent, [key], True)
                if keys is not None:
                    con.register(f"known_{parent}", keys.select([key]))
                known = (
                    f"SELECT {ident(key)} AS k FROM known_{parent}"
                    if keys is not None
                    else "SELECT NULL::VARCHAR AS k WHERE false"
                )
                expired = grace_expired("date", clock, grace)
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
