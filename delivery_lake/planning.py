"""Turn "these partitions need landing" into as few runs as possible, without over-reaching.

Dagster can run a rectangle of a multi-partitioned asset in one run (a date range x a
client range, in the order the clients were registered). The planner covers the wanted set
of (date, client) pairs with rectangles, and tables that need the same rectangle share one
run. A rectangle never holds a partition that has data and was not asked for; it may hold
partitions with no data at all (the inbox index says which have data), because a run does
nothing there: the landing writes no partition for a (date, client) without rows, and the
checks, marts and features skip what was not written. Real history is sparse (an export over
588 dates with gaps planned 129 landing runs when only consecutive dates could share one); so
is a small client's day. Spanned, each is one run.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class RunPlan:
    tables: tuple[str, ...]
    first_date: str
    last_date: str
    first_client: str
    last_client: str

    def partition_keys(self, client_order: list[str]) -> list[tuple[str, str]]:
        i, j = client_order.index(self.first_client), client_order.index(self.last_client)
        d0, d1 = date.fromisoformat(self.first_date), date.fromisoformat(self.last_date)
        days = [(d0 + timedelta(days=k)).isoformat() for k in range((d1 - d0).days + 1)]
        return [(d, c) for d in days for c in client_order[i : j + 1]]


def bridgeable(occupied: Iterable[str] | None) -> Callable[[str, str], bool]:
    """`(a, b) -> bool`: may one run span from date a to the next wanted date b? Yes when they are
    consecutive, or when no date strictly between them is in `occupied` (None: only consecutive)."""
    ordered = sorted(set(occupied)) if occupied is not None else None

    def follows(a: str, b: str) -> bool:
        if date.fromisoformat(b) - date.fromisoformat(a) == timedelta(days=1):
            return True
        if ordered is None:
            return False
        i = bisect_right(ordered, a)
        return i == len(ordered) or ordered[i] >= b

    return follows


def date_blocks(dates: Iterable[str], occupied: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """Sorted ISO dates as (first, last) blocks, one run each (see `bridgeable`)."""
    return _runs(sorted(set(dates)), bridgeable(occupied))


def _runs(sorted_items: list[str], consecutive: Callable[[str, str], bool]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in sorted_items:
        if out and consecutive(out[-1][1], item):
            out[-1] = (out[-1][0], item)
        else:
            out.append((item, item))
    return out


Occupied = set[tuple[str, str, str]]  # (table, date, client) pairs that hold data; client ANY_CLIENT: any
ANY_CLIENT = "*"


def _within(
    occupied: Occupied, table: str, box: tuple[str, str, int, int], pos: dict[str, int]
) -> set[tuple[str, str]]:
    """The occupied (date, client) pairs of `table` inside the rectangle (unknown clients are outside)."""
    d0, d1, i0, i1 = box
    out = set()
    for t, d, c in occupied:
        if t == table and d0 <= d <= d1 and (c == ANY_CLIENT or i0 <= pos.get(c, -1) <= i1):
            out.add((d, c))
    return out


def _box_holds_only_wanted(
    occupied: Occupied, table: str, box: tuple[str, str, int, int], by_date: dict[str, set[str]], pos: dict[str, int]
) -> bool:
    # rows of no known client (malformed lines) on a date landed anyway are quarantined by that
    # landing whichever clients it covers, so they do not stop a date that is asked for
    return all(
        d in by_date if c == ANY_CLIENT else c in by_date.get(d, set()) for d, c in _within(occupied, table, box, pos)
    )


def plan_runs(
    wanted: dict[str, dict[str, set[str]]], client_order: list[str], occupied: Occupied | None = None
) -> list[RunPlan]:
    """`wanted`: table -> date -> clients. Clients not in `client_order` are ignored.

    `occupied`: the (table, date, client) pairs the inbox holds rows for. With it, a table's
    partitions are landed by one rectangle, their bounding box (shared by every table whose
    box holds no pair it was not asked for), when no unwanted pair with data lies inside;
    without it, or when one does, rectangles are cut exactly (consecutive dates, consecutive
    clients, tables sharing a rectangle share a run)."""
    pos = {c: i for i, c in enumerate(client_order)}
    blocks: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    boxes: dict[str, tuple[str, str, int, int]] = {}
    if occupied is not None and client_order:
        for table, by_date in wanted.items():
            idx = [pos[c] for cs in by_date.values() for c in cs if c in pos] or [0]
            boxes[table] = (min(by_date), max(by_date), min(idx), max(idx))
        union = (
            min(b[0] for b in boxes.values()),
            max(b[1] for b in boxes.values()),
            min(b[2] for b in boxes.values()),
            max(b[3] for b in boxes.values()),
        )
        if all(_box_holds_only_wanted(occupied, t, union, wanted[t], pos) for t in boxes):
            boxes = dict.fromkeys(boxes, union)
    for table, by_date in wanted.items():
        box = boxes.get(table)
        if box is not None and _box_holds_only_wanted(occupied or set(), table, box, by_date, pos):
            blocks[(box[0], box[1], client_order[box[2]], client_order[box[3]])].append(table)
            continue
        # date -> client blocks, then merge consecutive dates with identical blocks
        per_date: dict[str, tuple[tuple[str, str], ...]] = {}
        for d, clients in by_date.items():
            known = sorted((c for c in clients if c in pos), key=pos.__getitem__)
            if not known and client_order:
                # Only rows of no known client (malformed lines, unknown or missing clients):
                # they are quarantined by any landing of their date, so the date still gets a
                # run, named after the first client (which gets no partition unless it has rows).
                known = [client_order[0]]
            if known:
                per_date[d] = tuple(_runs(known, lambda a, b: pos[b] == pos[a] + 1))
        by_shape: dict[tuple[tuple[str, str], ...], list[str]] = defaultdict(list)
        for d, shape in per_date.items():
            by_shape[shape].append(d)
        for shape, dates in by_shape.items():
            for d0, d1 in _runs(sorted(dates), bridgeable(None)):
                for c0, c1 in shape:
                    blocks[(d0, d1, c0, c1)].append(table)
    # Runs holding a parent table go first (the wanted dict lists tables in landing order), so a
    # delivery's order has landed before the delivery's own run and it never waits as pending.
    rank = {t: i for i, t in enumerate(wanted)}
    return [
        RunPlan(tuple(sorted(tables)), d0, d1, c0, c1)
        for (d0, d1, c0, c1), tables in sorted(blocks.items(), key=lambda kv: (min(rank[t] for t in kv[1]), kv[0]))
    ]
