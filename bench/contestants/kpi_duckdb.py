"""Contestant `kpi_duckdb`: the analyst KPI queries (bench/queries/q*.sql) with DuckDB.

On the analysts' warehouse (`--warehouse`), opened read-only as an analyst opens it.

    python bench/contestants/kpi_duckdb.py --warehouse FILE --result FILE
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
    a = p.parse_args()
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(a.warehouse, read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    answers = {}
    for q in sorted(QUERIES.glob("q*.sql")):
        cur = con.execute(q.read_text())
        cols = [d[0] for d in cur.description]
        answers[q.stem] = {"columns": cols, "rows": [[plain(v) for v in r] for r in cur.fetchall()]}
    seconds = time.perf_counter() - started
    Path(a.result).write_text(json.dumps({"seconds": seconds, "answers": answers}))


if __name__ == "__main__":
    main()
