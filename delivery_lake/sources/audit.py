"""Reconciling a source's foreign files: every foreign record is accounted for.

Per foreign file and feed it feeds: records in the foreign file (counted afresh, as the renderer
reads them) = filtered out by the mapping's `filter` + collapsed by `distinct_on` + what the
landing made of the rendered file's rows (landed, quarantined, replayed, superseded, pending, from
the landing manifests). The rendering's own account (its sidecar) says how many were filtered and
collapsed; the landing's manifests say the rest, so a record lost between the two shows here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from delivery_lake.contract import TABLES
from delivery_lake.sources.mapping import MappingError, foreign_header, load
from delivery_lake.sources.render import arrived_folders, read_sidecars, reader_sql


@dataclass
class ForeignAccount:
    source: str
    foreign_file: str  # relative to INBOX_DIR
    feed: str
    output: str  # the rendered feed file, relative to INBOX_DIR
    records: int  # in the foreign file, counted afresh
    filtered_out: int
    collapsed: int
    landing: dict[str, int] = field(default_factory=dict)  # state -> rows of the rendered file
    error: str | None = None

    @property
    def accounted(self) -> int:
        return self.filtered_out + self.collapsed + sum(self.landing.values())

    @property
    def ok(self) -> bool:
        return self.error is None and self.records == self.accounted

    def describe(self) -> str:
        if self.error:
            return f"UNREAD   {self.foreign_file} -> {self.feed}: {self.error}"
        parts = [f"filtered out {self.filtered_out}"] if self.filtered_out else []
        parts += [f"collapsed {self.collapsed}"] if self.collapsed else []
        parts += [f"{s} {n}" for s, n in self.landing.items() if n or s in ("landed", "quarantined")]
        head = "ok " if self.ok else "MISMATCH"
        return f"{head} {self.foreign_file} -> {self.feed}: records {self.records} = {' + '.join(parts)}"


def count_records(path: Path, delimiter: str) -> int:
    con = duckdb.connect()
    try:
        row = con.execute(f"SELECT count(*) FROM {reader_sql(path, foreign_header(path, delimiter), delimiter)}")
        return int((row.fetchone() or (0,))[0])
    finally:
        con.close()


def reconcile_foreign(inbox: Path, by_file: dict[str, dict[str, dict[str, Any]]]) -> list[ForeignAccount]:
    """Accounts of every rendered foreign file of the arrived sources. `by_file`: per feed, the
    landing's reconcile (`landing.reconcile`: rendered file path -> state counts)."""
    inbox = Path(inbox)
    resolved = {f: {str(Path(k).resolve()): v for k, v in files.items()} for f, files in by_file.items()}
    out: list[ForeignAccount] = []
    for folder in arrived_folders(inbox):
        try:
            mapping = load(folder.name)
        except MappingError:
            continue  # `run` refuses such a folder loudly; the feed files' reconcile covers the rest
        for output, doc in read_sidecars(mapping, inbox).items():
            if not doc.get("foreign_file"):
                continue  # constant rows declared in the mapping
            acc = ForeignAccount(
                source=mapping.source,
                foreign_file=doc["foreign_file"],
                feed=doc["feed"],
                output=output,
                records=0,
                filtered_out=int(doc.get("rows_filtered_out") or 0),
                collapsed=int(doc.get("rows_collapsed") or 0),
            )
            path = inbox / doc["foreign_file"]
            if not path.is_file():
                acc.error = "the foreign file is gone"
                out.append(acc)
                continue
            acc.records = count_records(path, mapping.delimiter)
            counts = resolved.get(doc["feed"], {}).get(str((inbox / output).resolve()))
            if counts is None or "error" in counts:
                acc.error = str((counts or {}).get("error") or f"{output} was not read by the landing")
            else:
                acc.landing = {k: int(v) for k, v in counts.items() if k != "read"}
            out.append(acc)
    return sorted(out, key=lambda a: (a.source, a.foreign_file, list(TABLES).index(a.feed)))
