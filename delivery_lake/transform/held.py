"""Held cells and parent links: the cells of a build whose input is held back, and the
fact-to-fact references whose parent a build must find before it computes a child."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from delivery_lake.contract import TABLES
from delivery_lake.transform.base import lit

HeldCell = tuple[str, str, str]  # (date, client_id, reason)


def held_cells_sql(cells: Iterable[HeldCell]) -> str:
    """The `held_cells` relation: (date DATE, client_id VARCHAR, reason VARCHAR), empty when nothing is held."""
    rows = sorted(set(cells))
    if not rows:
        return 'SELECT NULL::DATE AS "date", NULL::VARCHAR AS client_id, NULL::VARCHAR AS reason WHERE false'
    values = ", ".join(f"(DATE {lit(d)}, {lit(c)}, {lit(r)})" for d, c, r in rows)
    return f'SELECT * FROM (VALUES {values}) AS t("date", client_id, reason)'


@dataclass(frozen=True)
class ParentLink:
    """A raw fact column that references another raw fact's key (deliveries.order_id -> orders.order_id)."""

    child: str
    column: str
    parent: str
    key: str


def parent_links(tables: Iterable[str]) -> list[ParentLink]:
    """The fact-to-fact references whose both ends are among `tables` (the raw facts one model reads)."""
    names = set(tables)
    return [
        ParentLink(t, c.name, c.references[0], c.references[1])
        for t in sorted(names)
        if TABLES[t].is_fact
        for c in TABLES[t].columns
        if c.references and c.references[0] != t and c.references[0] in names and TABLES[c.references[0]].is_fact
    ]
