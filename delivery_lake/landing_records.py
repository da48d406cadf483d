"""What the steps of a landing hand each other: row states, counts, reports and the shared context.

The SQL builders (landing_sql), the planner (landing_plan), the batch pipeline (landing_batch)
and the partition writer (landing_publish) all speak in these records; `delivery_lake.landing`
re-exports the public ones.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from delivery_lake.contract import Table
from delivery_lake.inbox import FileEntry
from delivery_lake.storage import Lake


class LandingError(RuntimeError):
    pass


# What became of a row that parsed and passed every rule, besides landing:
REPLAYED = "replayed"  # same key and content as the version landed from an earlier file
SUPERSEDED = "superseded"  # an earlier file's version that a later file corrected (kept in history/)
PENDING = "pending"  # waits for its parent fact (a delivery's order) to land (kept in pending/)
STATES = ("landed", "quarantined", REPLAYED, SUPERSEDED, PENDING)

# A partition of a landed table: (date, client) of a fact, (None, None) for a dimension.
PartitionKey = tuple[str | None, str | None]
# The requested partitions of a fact landing: date -> clients (None: every client found).
Requested = dict[str, list[str] | None]


def zero_counts() -> dict[str, int]:
    """A count per row state, all zero."""
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
    # landed rows per column holding a stand-in value (contract.PLACEHOLDERS), from source mappings
    placeholders: dict[str, int] = field(default_factory=dict)

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
            for reason, n in p.by_reason.items():
                out[reason] += n
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    @property
    def placeholders(self) -> dict[str, int]:
        """Landed rows per column holding a stand-in value (a source mapping's placeholders)."""
        out: dict[str, int] = defaultdict(int)
        for p in self.partitions:
            for column, n in p.placeholders.items():
                out[column] += n
        return dict(sorted(out.items()))

    def check_reconciled(self) -> None:
        accounted = sum(p.accounted for p in self.partitions)
        if self.read != accounted:
            raise LandingError(
                f"{self.table}: rows do not reconcile: read {self.read} != landed {self.landed} "
                f"+ quarantined {self.quarantined} + replayed {self.replayed} + superseded {self.superseded} "
                f"+ pending {self.pending}"
            )


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


class RejectedCount(NamedTuple):
    """Lines of one file the CSV reader set aside, filed under one date."""

    rank: int
    date: str | None
    lines: int


@dataclass
class BatchCounts:
    """One aggregate over `typed` (and `rejected`) that planning, manifests and the index share."""

    typed: list[CountRow]
    rejected: list[RejectedCount]

    @property
    def read(self) -> int:
        """Every line of the batch's files: parsed rows and rejected lines."""
        return sum(row.total for row in self.typed) + sum(row.lines for row in self.rejected)


@dataclass
class LandingContext:
    """What the batches of one landing share."""

    base: Any  # the landing's DuckDB connection; each batch works on a cursor of it
    table: Table
    landed_at: str
    # parent dimension -> name of the table of its keys on `base`
    parent_keys: dict[str, str] = field(default_factory=dict)
    # the newest partition date of the fact parents (see landing_plan.parent_clock)
    clock: str | None = None
    # (date, client) -> sha256 of the data file a passing verdict was computed on
    verdicts: dict[PartitionKey, str] = field(default_factory=dict)
    # whole-table key sets of fact parents created on `base` so far (see landing_batch)
    loaded: set[str] = field(default_factory=set)
    loaded_lock: threading.Lock = field(default_factory=threading.Lock)


def manifest_path(lake: Lake, table: str, date: str | None, client: str | None) -> str:
    if date is None:
        return lake.meta_path("landing", table, "manifest.json")
    return lake.meta_path("landing", table, f"date={date}", f"client={client}.json")
