"""How complete each raw fact partition is, as one row per (table, date, client).

One function computes it from the manifests alone (landing, quality gate, curated builds), so
the warehouse's `partition_status` table and `delivery-lake summary` say the same thing:

- `blocked`: the gate's verdict on the partition (or on its whole date) failed;
- `pending`: some of its rows wait for their parent (a delivery for its order);
- `passed`: a passing verdict exists; `unchecked`: the gate never saw it.

Only the pending files of pending partitions are opened (for the column the rows wait on).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from delivery_lake import gate
from delivery_lake.contract import FACTS, TABLES
from delivery_lake.storage import UNASSIGNED_CLIENT, Lake

BLOCKED, PENDING, PASSED, UNCHECKED = "blocked", "pending", "passed", "unchecked"
CURRENT, LAST_GOOD, NONE = "current", "last_good", "none"

# (name, DuckDB type, comment): the warehouse table's columns, in order.
COLUMNS: list[tuple[str, str, str]] = [
    ("table_name", "VARCHAR", "Raw fact table (orders, deliveries, customer_feedback)."),
    ("date", "DATE", "Partition date (UTC)."),
    ("client_id", "VARCHAR", "Partition client."),
    (
        "status",
        "VARCHAR",
        "blocked (the quality gate failed it), pending (rows wait for their parent), passed, or unchecked.",
    ),
    (
        "reasons",
        "VARCHAR",
        "Why, in one line: the failed expectations, the rows waiting, the marts that left this cell out.",
    ),
    ("rows", "BIGINT", "Rows landed in raw."),
    ("pending_rows", "BIGINT", "Rows waiting for their parent row (e.g. a delivery for its order)."),
    ("quarantined_rows", "BIGINT", "Rows rejected into quarantine."),
    ("replayed_rows", "BIGINT", "Rows landed again from a later file with the same content."),
    ("superseded_rows", "BIGINT", "Versions a later file corrected (kept in the history zone)."),
    (
        "served",
        "VARCHAR",
        "What the marts read: current (this landing), last_good (an earlier copy that passed) or none.",
    ),
    ("held_in", "VARCHAR", "Comma-separated marts that left this (date, client) cell out, or NULL."),
    ("checked_at", "TIMESTAMP WITH TIME ZONE", "When the quality gate last checked the partition (NULL if never)."),
]
TABLE_COMMENT = (
    "Completeness of every raw fact partition: gate status, pending and quarantined rows, what the marts serve. "
    "Grain: one row per (table_name, date, client_id)."
)


@dataclass
class PartitionStatus:
    table: str
    date: str
    client: str
    status: str = UNCHECKED
    reasons: str = ""
    rows: int = 0
    pending_rows: int = 0
    quarantined_rows: int = 0
    replayed_rows: int = 0
    superseded_rows: int = 0
    served: str = CURRENT
    held_in: list[str] = field(default_factory=list)
    checked_at: str | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)
    pending_on: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.date}/{self.client}"

    def line(self) -> str:
        """The one-line explanation `delivery-lake summary` prints for a blocked or pending partition."""
        text = f"{self.table} {self.key} {self.status.upper()}: {self.reasons or '-'}"
        return text + (f" (serving: {self.served})" if self.status == BLOCKED else "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(doc: Mapping[str, Any], name: str) -> int:
    # Manifests written before a count existed lack it: nothing of that kind happened then.
    return int(doc.get(name) or 0)


def _failure_text(doc: Mapping[str, Any]) -> list[str]:
    out = []
    for f in doc.get("failed") or []:
        if not isinstance(f, Mapping):  # a verdict recorded by hand names its failures only
            out.append(str(f))
            continue
        label = f.get("label") or f.get("expectation") or "expectation"
        if f.get("observed") is not None:
            out.append(f"{label}: observed {f['observed']}")
        elif f.get("unexpected_count") is not None:
            pct = f.get("unexpected_percent")
            out.append(f"{label}: {f['unexpected_count']} unexpected" + (f" ({pct:.1f}%)" if pct is not None else ""))
        else:
            out.append(label)
    if doc.get("error"):
        out.append(f"validation error: {doc['error']}")
    return out


def _pending_text(p: PartitionStatus) -> str:
    n = p.pending_rows
    rows = "1 row waits" if n == 1 else f"{n} rows wait"
    their = "its" if n == 1 else "their"
    if len(p.pending_on) <= 1:
        column = next(iter(p.pending_on), None) or "parent"
        return f"{rows} for {their} {column}"
    parts = ", ".join(f"{c} {k}" for c, k in sorted(p.pending_on.items(), key=lambda kv: -kv[1]))
    return f"{rows} for {their} parent ({parts})"


def _fact_parent_column(table: str) -> str | None:
    """The column a table's rows wait on when the pending file cannot say (its fact parent's key)."""
    for c in TABLES[table].columns:
        if c.references and c.references[0] in TABLES and TABLES[c.references[0]].is_fact and c.references[0] != table:
            return c.name
    return None


def _pending_on(lake: Lake, table: str, parts: list[PartitionStatus]) -> None:
    """Fill `pending_on` from the pending files of these partitions, in one query."""
    files = {lake.data_file("pending", table, p.date, p.client): p for p in parts}
    present = [f for f in files if lake.exists(f)]
    if present:
        listing = ", ".join("'" + lake.uri(f).replace("'", "''") + "'" for f in present)
        con = lake.duckdb()
        try:
            rows = con.execute(
                "SELECT filename, _pending_on, count(*) "
                f"FROM read_parquet([{listing}], filename = true, hive_partitioning = false) GROUP BY ALL"
            ).fetchall()
        finally:
            con.close()
        by_uri = {lake.uri(f): p for f, p in files.items()}
        for filename, column, n in rows:
            p = by_uri.get(filename)
            if p is not None and column:
                p.pending_on[str(column)] = p.pending_on.get(str(column), 0) + int(n)
    fallback = _fact_parent_column(table)
    for p in parts:
        if not p.pending_on and fallback:
            p.pending_on[fallback] = p.pending_rows


def curated_cells(lake: Lake) -> tuple[dict[tuple[str, str], list[tuple[str, str]]], set[tuple[str, str, str]]]:
    """From every curated build manifest: (date, client) -> [(model, reason)] for the mart cells
    left out, and the (table, date, client) partitions served from their last good copy."""
    held: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    last_good: set[tuple[str, str, str]] = set()
    for path, doc in lake.read_jsons_matching([lake.meta_path("curated") + "/*/*.json"]).items():
        model = doc.get("model") or path.rsplit("/", 2)[-2]
        for cell in doc.get("held_cells") or []:
            d, c, reason = [*cell, None, None, None][:3]
            if d is not None and c is not None and (model, reason or "") not in held[(str(d), str(c))]:
                held[(str(d), str(c))].append((model, str(reason or "")))
        for source, parts in (doc.get("served_last_good") or {}).items():
            table = source.removeprefix("raw.")
            for d, c in parts:
                last_good.add((table, str(d), str(c)))
    return held, last_good


def partition_statuses(lake: Lake, sources: Mapping[str, Iterable[str]] | None = None) -> list[PartitionStatus]:
    """One status per landed raw fact partition (the `_unassigned` client aside), sorted by
    table, date, client. `sources` (model -> raw fact tables it reads) keeps a mart's held cells
    off the partitions of tables it does not read; without it a held cell marks every table."""
    read_by = {m: set(ts) for m, ts in sources.items()} if sources is not None else None
    held, last_good = curated_cells(lake)
    out: list[PartitionStatus] = []
    for t in FACTS:
        verdicts: dict[tuple[str | None, str | None], dict[str, Any]] = {}
        for doc in gate.statuses(lake, t.name):
            if doc:
                verdicts[(doc.get("date"), doc.get("client"))] = doc
        parts: list[tuple[PartitionStatus, list[dict[str, Any]]]] = []
        for doc in lake.read_jsons_matching([lake.meta_path("landing", t.name) + "/date=*/client=*.json"]).values():
            if doc.get("client") == UNASSIGNED_CLIENT:
                continue
            d, c = str(doc["date"]), str(doc["client"])
            p = PartitionStatus(
                t.name,
                d,
                c,
                rows=_count(doc, "landed"),
                pending_rows=_count(doc, "pending"),
                quarantined_rows=_count(doc, "quarantined"),
                replayed_rows=_count(doc, "replayed"),
                superseded_rows=_count(doc, "superseded"),
            )
            # A verdict on the whole date blocks every client of it, as the model runner reads it.
            applicable = [v for v in (verdicts.get((d, c)), verdicts.get((d, None))) if v is not None]
            failing = [v for v in applicable if not v.get("passed", True)]
            p.checked_at = max((str(v["checked_at"]) for v in applicable if v.get("checked_at")), default=None)
            p.failed = [f for v in failing for f in v.get("failed") or []]
            if failing:
                p.status = BLOCKED
                p.served = LAST_GOOD if (t.name, d, c) in last_good else NONE
            elif p.pending_rows > 0:
                p.status = PENDING
            elif applicable:
                p.status = PASSED
            p.held_in = sorted(
                {
                    model
                    for model, _ in held.get((d, c), [])
                    if read_by is None or model not in read_by or t.name in read_by[model]
                }
            )
            parts.append((p, failing))
        pending = [p for p, _ in parts if p.pending_rows > 0]
        if pending:
            _pending_on(lake, t.name, pending)
        for p, failing in parts:
            lines = [x for v in failing for x in _failure_text(v)]
            if failing and not lines:
                lines.append("blocked by the quality gate")
            if p.pending_rows > 0:
                lines.append(_pending_text(p))
            by_reason: dict[str, list[str]] = defaultdict(list)
            for model, reason in held.get((p.date, p.client), []):
                if model in p.held_in:
                    by_reason[reason].append(model)
            for reason, models in by_reason.items():
                lines.append(f"left out of {', '.join(sorted(models))}" + (f": {reason}" if reason else ""))
            p.reasons = "; ".join(lines)
            out.append(p)
    return sorted(out, key=lambda p: (p.table, p.date, p.client))


def mostly_blocked(
    statuses: Iterable[PartitionStatus], clients: Iterable[str], share: float = 0.5
) -> list[tuple[str, str]]:
    """(client, why) for each client whose fact partitions are more than `share` blocked: a source
    whose data mostly fails the gate has not been onboarded, whatever the exit status of each step."""
    lines = []
    wanted = set(clients)
    by_client: dict[str, list[PartitionStatus]] = {}
    for p in statuses:
        if p.client in wanted:
            by_client.setdefault(p.client, []).append(p)
    for client, parts in sorted(by_client.items()):
        blocked = [p for p in parts if p.status == BLOCKED]
        if parts and len(blocked) / len(parts) > share:
            reasons: dict[str, int] = {}
            for p in blocked:
                reasons[p.reasons or "-"] = reasons.get(p.reasons or "-", 0) + 1
            top = max(reasons, key=lambda r: reasons[r])
            lines.append((client, f"{len(blocked)} of {len(parts)} fact partitions blocked (most often: {top})"))
    return lines


def table_counts(statuses: Iterable[PartitionStatus]) -> dict[str, dict[str, int]]:
    """Per fact table: partitions and rows landed / quarantined / replayed / superseded / pending,
    and the partitions (and their landed rows) blocked or pending."""
    out: dict[str, dict[str, int]] = {
        t.name: dict.fromkeys(
            (
                "partitions",
                "landed",
                "quarantined",
                "replayed",
                "superseded",
                "pending",
                "blocked",
                "blocked_rows",
                "pending_partitions",
            ),
            0,
        )
        for t in FACTS
    }
    for p in statuses:
        c = out[p.table]
        c["partitions"] += 1
        c["landed"] += p.rows
        c["quarantined"] += p.quarantined_rows
        c["replayed"] += p.replayed_rows
        c["superseded"] += p.superseded_rows
        c["pending"] += p.pending_rows
        c["blocked"] += p.status == BLOCKED
        c["blocked_rows"] += p.rows if p.status == BLOCKED else 0
        c["pending_partitions"] += p.status == PENDING
    return out


def fact_sources(project: Any) -> dict[str, list[str]]:
    """model -> raw fact tables it reads, for every model of a `transform.Project`."""
    return {name: project.fact_sources(name) for name in project.models}


def warehouse_rows(statuses: Iterable[PartitionStatus]) -> list[tuple[Any, ...]]:
    """The rows of the warehouse table, in COLUMNS order (dates and timestamps as ISO text)."""
    return [
        (
            p.table,
            p.date,
            p.client,
            p.status,
            p.reasons or None,
            p.rows,
            p.pending_rows,
            p.quarantined_rows,
            p.replayed_rows,
            p.superseded_rows,
            p.served,
            ",".join(p.held_in) or None,
            p.checked_at,
        )
        for p in statuses
    ]
