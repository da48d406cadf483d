"""Sparse history from a dense inbox: the same rows spread over hundreds of dates with gaps.

Real exports cover years with quiet days (the Olist sample: 588 order dates over two years),
while the generator writes consecutive days. `spread` keeps every row and moves each order,
with its delivery and its feedback, by whole days: day i of the dense inbox becomes a window of
`WINDOW` days starting at `i * (WINDOW - 1)`, of which the `len(OFFSETS)` days in `OFFSETS` receive
rows (the order's id picks one) and the others stay empty. Ids, values and the time of day do
not change, and a delivery moves with its order, so the two inboxes hold the same rows and
answer the same questions with the dates renamed.

    python -m bench.sparse DENSE_INBOX SPARSE_INBOX
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import duckdb

from delivery_lake.contract import FACTS, TABLES
from delivery_lake.sql import ident, literal

WINDOW = 23  # days each dense day is spread over
OFFSETS = (0, 1, 2, 4, 5, 6, 8, 9, 11, 12, 13, 15, 16, 18, 19, 20, 21, 22)  # 18 of 23 days hold rows


def _shift_sql(day_index: str) -> str:
    """Days to add to a row of dense day `day_index`: its window's start plus its order's offset."""
    offsets = "[" + ", ".join(map(str, OFFSETS)) + "]"
    pick = f"CAST(hash(order_id) % {len(OFFSETS)} AS INTEGER) + 1"
    return f"({day_index} * {WINDOW - 1} + list_extract({offsets}, {pick}))"


def spread(dense: Path, out: Path) -> dict[str, int]:
    """Write the sparse copy of `dense` into `out`; returns rows written per fact table."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for table in TABLES.values():
        if not table.is_fact:
            shutil.copytree(dense / table.name, out / table.name)
    first = min(p.stem for p in (dense / "orders").glob("*.csv"))
    counts: dict[str, int] = {}
    con = duckdb.connect()
    for table in FACTS:
        (out / table.name).mkdir()
        stamps = [c.name for c in table.columns if c.dtype == "timestamp"]
        for f in sorted((dense / table.name).glob("*.csv")):
            # The order's own day (generator ids carry it: O20250101-...), so a delivery dispatched
            # the day after its order moves with the order, not with its file's day.
            index = f"(CAST(strptime(order_id[2:9], '%Y%m%d') AS DATE) - DATE {literal(first)})"
            moved = ", ".join(
                f"strftime(CAST({ident(c)} AS TIMESTAMPTZ) AT TIME ZONE 'UTC' + to_days({_shift_sql(index)}), "
                f"'%Y-%m-%dT%H:%M:%SZ') AS {ident(c)}"
                for c in stamps
            )
            target = out / table.name / f.name
            con.execute(
                f"COPY (SELECT * REPLACE ({moved}) FROM read_csv({literal(str(f))}, all_varchar = true, header = true))"
                f" TO {literal(str(target))} (HEADER, DELIMITER ',')"
            )
            counts[table.name] = (
                counts.get(table.name, 0)
                + con.execute(f"SELECT count(*) FROM read_csv({literal(str(target))}, all_varchar = true)").fetchone()[
                    0
                ]
            )  # type: ignore[index]
    return counts


if __name__ == "__main__":
    print(spread(Path(sys.argv[1]), Path(sys.argv[2])))
