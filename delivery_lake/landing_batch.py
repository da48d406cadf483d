"""One batch of files typed, validated and classified in DuckDB, on the batch's own cursor.

`BatchTables` bundles the cursor with the table and files it reads; each step builds or
updates the batch's temp tables with the statements of landing_sql.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delivery_lake import landing_sql as sql
from delivery_lake.contract import CARRIER_OPTIONAL, TABLES, Table, optional_for_carrier
from delivery_lake.inbox import FileEntry, ensure_rejects_table, is_rendered
from delivery_lake.landing_plan import fact_parents, parent_files_near
from delivery_lake.landing_records import (
    BatchCounts,
    CountRow,
    LandingContext,
    LandingError,
    RejectedCount,
)
from delivery_lake.storage import Lake


def load_parent_keys(lake: Lake, con: Any, table: Table) -> dict[str, str]:
    """Tables of the keys of the landed parent dimensions of `table` (parent -> table name)."""
    out: dict[str, str] = {}
    for parent in table.parents:
        if TABLES[parent].is_fact:
            continue  # fact parents are looked up per batch (BatchTables.hold_for_parents)
        name = f"keys_{parent}"
        # the key column through `read_columns`: on S3 pyarrow's client and the lake's column
        # cache (one HEAD when unchanged), where DuckDB through fsspec made 6-8 requests a parent
        keys = lake.read_columns("raw", parent, [TABLES[parent].key], partitioned=False)
        if keys is None:
            referencing = [c.name for c in table.columns if c.references and c.references[0] == parent]
            if not all(optional_for_carrier(table.name, c) for c in referencing):
                raise LandingError(f"{table.name} references {parent}, which has not been landed yet")
            # a lake of carrier clients only may have no couriers at all: their rows leave the
            # column empty, and any value given is an orphan (there is no parent to find it in)
            con.execute(f"CREATE TABLE {name} (k VARCHAR)")
        else:
            con.register(f"{name}_landed", keys)
            con.execute(sql.parent_keys_table(name, TABLES[parent], f"{name}_landed"))
            con.unregister(f"{name}_landed")
        out[parent] = name
    if CARRIER_OPTIONAL.get(table.name) and "clients" in out:
        uri = lake.uri(lake.data_file("raw", "clients"))
        names = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{uri}')").fetchall()}
        con.execute(sql.carrier_keys_table("keys_carrier_clients", uri, "operations" in names))
        out[sql.CARRIER_KEYS] = "keys_carrier_clients"
    return out


@dataclass
class BatchTables:
    """A batch's cursor, with the table and the files (in arrival order: their rank) it reads."""

    con: Any
    table: Table
    entries: list[FileEntry]

    def type_rows(self, parent_keys: dict[str, str]) -> None:
        """`typed`: every file's rows typed, with the rules each breaks (see landing_sql)."""
        self.con.execute("SET preserve_insertion_order = true")
        # each header was read and checked against the contract when the file was indexed
        for rank, e in enumerate(self.entries):
            if is_rendered(e.path):
                self.con.execute(sql.rendered_rejects(rank, e.path))
        self.con.execute(sql.source_view(self.table, [(e.path, e.header) for e in self.entries]))
        self.con.execute(sql.typed_table(self.table, parent_keys, [e.nominal_date for e in self.entries]))

    def collect_rejects(self) -> None:
        """`rejected`: one row per line the reader set aside, with every reason (call after reading)."""
        for rank in range(len(self.entries)):
            ensure_rejects_table(self.con, f"rej{rank}")
        self.con.execute(sql.rejected_table(self.table, [(e.path, e.nominal_date) for e in self.entries]))
        self._split_rejected()

    def _split_rejected(self) -> None:
        """Best-effort column values of rejected lines, so their ids stay findable in quarantine.

        The raw line is kept whole in `_raw_line`; here Python's csv module (rejected lines
        are few) splits it by the file's header. A ragged line still yields its leading
        fields, which is where keys sit.
        """
        headers = {rank: e.header for rank, e in enumerate(self.entries)}
        rows = []
        for rank, line, text in self.con.execute(sql.REJECTED_LINES).fetchall():
            fields = next(csv.reader([text or ""]), [])
            by_name = dict(zip(headers[rank], (f.strip() or None for f in fields), strict=False))
            foreign_line = by_name.get(sql.FOREIGN_LINE)
            rows.append(
                (
                    rank,
                    line,
                    *(by_name.get(c.name) for c in self.table.columns),
                    by_name.get(sql.FOREIGN_FILE),
                    int(foreign_line) if foreign_line and foreign_line.isdigit() else None,
                )
            )
        self.con.execute(sql.rejected_fields_table(self.table))
        if rows:
            self.con.executemany(sql.rejected_fields_insert(self.table), rows)

    def collect_foreign_records(self, inbox: Path) -> None:
        """`foreign_records`: the original foreign record (JSON) of each row that does not land and
        came from a source mapping's rendered file: read from the foreign file, lines few."""
        from delivery_lake.sources.render import foreign_records

        self.con.execute(sql.FOREIGN_RECORDS_TABLE)
        wanted: dict[str, set[int]] = {}
        for file, line in self.con.execute(sql.FOREIGN_BAD_LINES).fetchall():
            wanted.setdefault(file, set()).add(int(line))
        rows = []
        for file, lines in wanted.items():
            rows += [(file, line, record) for line, record in foreign_records(Path(inbox), file, lines).items()]
        if rows:
            self.con.executemany(sql.FOREIGN_RECORDS_INSERT, rows)

    def classify_versions(self) -> None:
        """Decide, for each key seen more than once among valid rows, which copy lands.

        - Within one file, the last line is that file's version; its other lines of the key are
          a conflict, quarantined as `duplicate`.
        - Across files, the latest file's version is the key's content. Earlier versions with
          the same content are `replayed` (counted, not rewritten), different ones `superseded`
          (kept in history/ with the file that replaced them).
        - Of the copies carrying the winning content the earliest one lands, so a re-sent file
          leaves the partition byte-identical.
        """
        self.con.execute(sql.versions_table(self.table))
        self.con.execute(sql.MARK_VERSIONS)
        # Who replaced a superseded version, and when that file arrived (its modification time,
        # so a replay of the same files writes the same history).
        self.con.execute(sql.FILES_TABLE)
        self.con.executemany(
            sql.FILES_INSERT,
            [
                (rank, e.path, datetime.fromtimestamp(Path(e.path).stat().st_mtime, UTC).isoformat(timespec="seconds"))
                for rank, e in enumerate(self.entries)
            ],
        )

    def mark_replayed_bad_rows(self) -> None:
        """A bad row (or unparseable line) that an earlier file already brought, word for word,
        is a replay too: re-sending a file must not quarantine its bad lines twice, or a re-sent
        day would double its quarantine ratio and block."""
        self.con.execute(sql.replayed_bad_rows(self.table))
        self.con.execute(sql.REPLAYED_REJECTED_LINES)

    def hold_for_parents(self, lake: Lake, shared: LandingContext, grace_days: int) -> None:
        """Hold back rows whose parent fact has not landed: `pending` within the grace period,
        quarantined as `orphan:<column>` after it (`grace_days` partition dates).

        A child never lands without its parent, so the marts never compute a delivery from an
        order that is not there and no check blocks a partition for a parent that is merely late.
        The lookup reads the parent's key column near the batch's dates first; only keys not
        found there are looked up in the whole parent table.
        """
        batch_dates = sorted(d for e in self.entries for d in e.dates if d != "unknown")
        for column, parent in fact_parents(self.table):
            self.con.execute(sql.wanted_parent_keys(column))
            if not self._wanted():
                continue
            near = parent_files_near(lake, parent, batch_dates)
            if near and lake.is_s3:
                # pyarrow's S3 client reads the key column of these files concurrently; DuckDB
                # through fsspec reads them one at a time, a size request and reads each
                relation = f"near_{self.table.name}_{parent}"
                self.con.register(relation, lake.read_files_columns(near, [TABLES[parent].key]))
                try:
                    self.con.execute(sql.forget_keys_in_relation(relation, TABLES[parent]))
                finally:
                    self.con.unregister(relation)
            elif near:
                self.con.execute(sql.forget_keys_in_files(TABLES[parent], [lake.uri(p) for p in near]))
            if self._wanted():
                self.con.execute(sql.forget_keys_in_table(_all_parent_keys(lake, shared, parent)))
            if not self._wanted():
                continue
            expired = sql.grace_expired("TRY_CAST(_date AS DATE)", shared.clock, grace_days)
            for statement in sql.hold_for_parent(column, expired):
                self.con.execute(statement)

    def _wanted(self) -> int:
        # fetchall: the result is finished, so the connection takes other work (a registration)
        return self.con.execute(sql.WANTED_COUNT).fetchall()[0][0]

    def number_bad_lines(self) -> None:
        """`bad_lines`: record-based line numbers (header = line 1) of the rows that do not land."""
        for statement in sql.BAD_LINES:
            self.con.execute(statement)

    def counts(self) -> BatchCounts:
        typed = self.con.execute(sql.typed_counts(self.table)).fetchall()
        rejected = self.con.execute(sql.REJECTED_COUNTS).fetchall()
        return BatchCounts([CountRow(*r) for r in typed], [RejectedCount(*r) for r in rejected])

    def keys_in(self, keys_table: str) -> set[str]:
        return {r[0] for r in self.con.execute(f"SELECT k FROM {keys_table}").fetchall()}

    def valid_keys(self) -> list[str]:
        return [r[0] for r in self.con.execute(sql.valid_keys(self.table)).fetchall()]

    def preview(self, rows: int = 5) -> list[dict[str, Any]]:
        cols = [c.name for c in self.table.columns]
        found = self.con.execute(sql.preview(self.table, rows)).fetchall()
        return [
            {c: (v.isoformat() if hasattr(v, "isoformat") else v) for c, v in zip(cols, r, strict=True)} for r in found
        ]


def _all_parent_keys(lake: Lake, shared: LandingContext, parent: str) -> str:
    """A table of every landed key of `parent`, built once per landing on the shared connection.

    Loaded only when a child's parent was not found near its own date.
    """
    name = f"all_keys_{parent}"
    with shared.loaded_lock:
        if name not in shared.loaded:
            # Through Lake.read_columns: on S3 each file's keys come from the document cache by
            # ETag or pyarrow's concurrent reads; DuckDB through fsspec read them one file and one
            # round trip at a time (a drop's deliveries step waited 4-5 s on 150 order files).
            keys = lake.read_columns("raw", parent, [TABLES[parent].key], partitioned=True)
            cursor = shared.base.cursor()
            try:
                relation = None if keys is None else f"{name}_read"
                if relation is not None:
                    cursor.register(relation, keys)
                cursor.execute(sql.all_parent_keys_table(name, TABLES[parent], relation))
            finally:
                cursor.close()
            shared.loaded.add(name)
    return name
