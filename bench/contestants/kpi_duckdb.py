"""Contestants `kpi_duckdb` / `kpi_duckdb_adhoc`: the analyst KPI queries with DuckDB.

On the analysts' warehouse (`--warehouse`), opened read-only as an analyst opens it.
`bench/queries/q*.sql` read the marts the curated layer keeps for these KPIs (what an
analyst queries); `--queries bench/queries/adhoc` computes the same answers from
`fct_deliveries`, as a question no mart anticipated would be.

    python bench/contestants/kpi_duckdb.py --warehouse FILE --result FILE [--queries DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import time
from pathlib import Path

QUERIES = Path(__file__).resolve().parent.parent / "queries"


def plain(v: object) -> object:
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    return v


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--warehouse", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--queries", default=str(QUERIES), help="folder of q*.sql (default: the marts' queries)")
    a = p.parse_args()
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(a.warehouse, read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    answers = {}
    for q in sorted(Path(a.queries).glob("q*.sql")):
        cur = con.execute(q.read_text())
        cols = [d[0] for d in cur.description]
        answers[q.stem] = {"columns": cols, "rows": [[plain(v) for v in r] for r in cur.fetchall()]}
    seconds = time.perf_counter() - started
    Path(a.result).write_text(json.dumps({"seconds": seconds, "answers": answers}))


if __name__ == "__main__":
    main()
