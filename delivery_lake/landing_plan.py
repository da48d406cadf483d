"""What a landing reads and writes: files, batches, target partitions, and when to plan again.

A fact landing is asked for `date -> clients`. It reads the files touching those dates, closed
over the other dates those files touch, in batches of files sharing dates; each batch writes
the requested partitions it holds. Files not indexed yet are planned by the date in their
name and counted while they are read; a batch that finds one touching a date outside its plan
publishes nothing, and the landing is planned again with what was learned (Landing.land_fact).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import NamedTuple

from delivery_lake.contract import TABLES, Table
from delivery_lake.inbox import FileEntry, InboxIndex
from delivery_lake.landing_records import BatchCounts, PartitionKey, Requested, manifest_path
from delivery_lake.storage import UNASSIGNED_CLIENT, Lake

# A child's parent is looked up first among the parent partitions of these days around the
# child's date (orders are created before their deliveries); keys not found there are looked up
# in the whole parent table, so this only decides what is read first, never what is found.
PARENT_WINDOW_DAYS = 3


class BatchJob(NamedTuple):
    """One batch of files and its share of the requested partitions (None: a dimension, all of it)."""

    entries: list[FileEntry]
    requested: Requested | None


def files_to_read(index: InboxIndex, dates: set[str]) -> list[FileEntry]:
    """The files a fact landing of `dates` reads (empty when none touches them).

    The files touching the requested dates, closed over the other dates those files touch, so
    duplicate resolution always sees the same set of files for a date. Files not indexed yet
    are planned by the date in their name (one pass over the CSV, not two); one that this
    landing would not read could still touch a requested date, and only a scan can tell, so
    those are scanned here.
    """
    all_entries = index.entries(dates=dates, defer_scan=True)
    while True:
        closure = set(dates)
        while True:
            grow = {d for e in all_entries if e.dates & closure for d in e.dates} - closure
            if not grow:
                break
            closure |= grow
        unread = [Path(e.path) for e in all_entries if e.provisional and not e.dates & closure]
        if not unread:
            break
        scanned = {e.path: e for e in index.entries(paths=unread)}
        all_entries = [scanned.get(e.path, e) for e in all_entries]
    return [e for e in all_entries if e.dates & closure]


def group_by_shared_dates(entries: list[FileEntry]) -> list[list[FileEntry]]:
    """Group files that share a date (connected components), keeping the input order inside each."""
    groups: list[tuple[set[str], list[FileEntry]]] = []
    for entry in entries:
        touching = [g for g in groups if g[0] & entry.dates]
        merged_dates, merged = set(entry.dates), [entry]
        for g in touching:
            merged_dates |= g[0]
            merged = g[1] + merged
            groups.remove(g)
        groups.append((merged_dates, sorted(merged, key=entries.index)))
    return [g[1] for g in sorted(groups, key=lambda g: min(g[0]) if g[0] else "")]


def batch_jobs(table: Table, entries: list[FileEntry], requested: Requested | None) -> list[BatchJob]:
    """One batch per group of files sharing dates (a daily export: one file per batch), so memory
    is bounded by a day's data, never by the size of the backfill; a dimension is one batch.
    Batches holding no requested date are left out."""
    jobs = []
    for batch in group_by_shared_dates(entries) if table.is_fact else [entries]:
        batch_dates = set().union(*(e.dates for e in batch))
        wanted = None if requested is None else {d: c for d, c in requested.items() if d in batch_dates}
        if wanted is None or wanted:
            jobs.append(BatchJob(batch, wanted))
    return jobs


def entries_as_read(entries: list[FileEntry], counts: BatchCounts) -> list[FileEntry]:
    """Index entries of the batch's provisional files, from what was just read.

    The same partition rule as the index scan (a row's date, else the name's date; the trimmed
    raw client).
    """
    provisional = {rank: e for rank, e in enumerate(entries) if e.provisional}
    if not provisional:
        return []
    partitions: dict[int, dict[str, dict[str, int]]] = {rank: {} for rank in provisional}
    malformed: dict[int, int] = dict.fromkeys(provisional, 0)
    for row in counts.typed:
        if row.rank in partitions:
            by_client = partitions[row.rank].setdefault(row.date or "unknown", {})
            by_client[row.raw_client] = by_client.get(row.raw_client, 0) + row.total
    for rejected in counts.rejected:
        if rejected.rank in malformed:
            malformed[rejected.rank] += rejected.lines
    return [
        FileEntry(e.path, e.fingerprint, e.nominal_date, partitions[rank], malformed[rank], e.header)
        for rank, e in provisional.items()
    ]


def plan_holds(entries: list[FileEntry], learned: list[FileEntry]) -> bool:
    """False when a file of the batch, now read, touches a date the batch was not planned for."""
    planned = set().union(*(e.dates for e in entries))
    return all(e.dates <= planned for e in learned)


def target_partitions(lake: Lake, table: Table, requested: Requested | None, counts: BatchCounts) -> list[PartitionKey]:
    """The partitions a batch writes: of a dimension, its one; of a fact, the requested ones."""
    if not table.is_fact:
        return [(None, None)]
    assert requested is not None
    present: dict[str | None, set[str | None]] = defaultdict(set)
    for row in counts.typed:
        present[row.date].add(row.client)
    for rejected in counts.rejected:
        present[rejected.date].add(UNASSIGNED_CLIENT)
    out: list[PartitionKey] = []
    for d in sorted(requested):
        clients = requested[d]
        found = {c for c in present.get(d, set()) if c is not None}
        wanted = found - {UNASSIGNED_CLIENT} if clients is None else set(clients)
        for c in sorted(wanted):
            # A client asked for with no row that day and nothing landed before gets no empty
            # partition (a run may name it only to land the date's rows of no client); one
            # landed before is emptied, so a corrected export can take rows away.
            if c in found or lake.exists(manifest_path(lake, table.name, d, c)):
                out.append((d, c))
        # Rows that belong to no client are quarantined with every landing of their date.
        if UNASSIGNED_CLIENT in found:
            out.append((d, UNASSIGNED_CLIENT))
    return out


# ---- fact parents ------------------------------------------------------------------------------


def fact_parents(table: Table) -> list[tuple[str, str]]:
    """(column, parent table) of the references from this table to other fact tables."""
    return [
        (c.name, c.references[0])
        for c in table.columns
        if c.references and c.references[0] != table.name and TABLES[c.references[0]].is_fact
    ]


def parent_clock(lake: Lake, table: Table) -> str | None:
    """How far the parent feeds have got: the newest landed partition date among the fact parents
    of `table` (None without any).

    The grace period of pending rows is counted in those dates, so a child only becomes an
    orphan once its parent's feed has moved on without it (a parent feed that is merely late
    holds its children as pending), and a replay of the same files decides the same way.
    """
    if not table.is_fact:
        return None
    dates = [d for _, parent in fact_parents(table) for d in lake.list_dates("raw", parent)[-1:]]
    return max(dates) if dates else None


def parent_files_near(lake: Lake, parent: str, dates: list[str]) -> list[str]:
    """The landed partitions (lake paths) of `parent` a child of `dates` looks in first
    (PARENT_WINDOW_DAYS)."""
    if not dates:
        return []
    first = date.fromisoformat(min(dates)) - timedelta(days=PARENT_WINDOW_DAYS)
    last = date.fromisoformat(max(dates)) + timedelta(days=1)
    days = [(first + timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]
    return [lake.data_file("raw", parent, d, c) for d, c in lake.list_partitions("raw", parent, dates=days)]
