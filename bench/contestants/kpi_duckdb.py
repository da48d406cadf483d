"""Contestant `kpi_duckdb`: the analyst KPI queries (bench/queries/q*.sql) with DuckDB.

On the analysts' warehouse (`--warehouse`, opened read-only) when it exists; otherwise on a
stand-in `fct_deliveries` view over the raw landed Parquet (`--lake`), and the harness
marks the figure partial.

    python bench/contestants/kpi_duckdb.py (--warehouse FILE | --lake DIR) --result FILE
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
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--warehouse")
    g.add_argument("--lake")
    p.add_argument("--result", required=True)
    a = p.parse_args()
    import duckdb

    started = time.perf_counter()
    if a.warehouse:
        con = duckdb.connect(a.warehouse, read_only=True)
    else:
        con = duckdb.connect()
        con.execute((QUERIES / "fct_deliveries_from_raw.sql").read_text().replace("{lake}", a.lake))
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
