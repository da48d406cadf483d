"""Turn "these partitions need landing" into as few runs as possible, without over-reaching.

Dagster can run a rectangle of a multi-partitioned asset in one run (a date range x a
client range, in the order the clients were registered). The planner cuts the wanted set
of (date, client) pairs into exact rectangles, so a run never lands a partition nobody
asked for, and tables that need the same rectangle share one run.
"""

from __future__ import annotations

from collections import defaultdict
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


def _runs(sorted_items: list[str], consecutive) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in sorted_items:
        if out and consecutive(out[-1][1], item):
            out[-1] = (out[-1][0], item)
        else:
            out.append((item, item))
    return out


def plan_runs(wanted: dict[str, dict[str, set[str]]], client_order: list[str]) -> list[RunPlan]:
    """`wanted`: table -> date -> clients. Clients not in `client_order` are ignored."""
    pos = {c: i for i, c in enumerate(client_order)}
    blocks: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    for table, by_date in wanted.items():
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
            for d0, d1 in _runs(
                sorted(dates), lambda a, b: date.fromisoformat(b) - date.fromisoformat(a) == timedelta(days=1)
            ):
                for c0, c1 in shape:
                    blocks[(d0, d1, c0, c1)].append(table)
    # Runs holding a parent table go first (the wanted dict lists tables in landing order), so a
    # delivery's order has landed before the delivery's own run and it never waits as pending.
    rank = {t: i for i, t in enumerate(wanted)}
    return [
        RunPlan(tuple(sorted(tables)), d0, d1, c0, c1)
        for (d0, d1, c0, c1), tables in sorted(blocks.items(), key=lambda kv: (min(rank[t] for t in kv[1]), kv[0]))
    ]
