"""Contestant `duckdb_partition_by`: a bare DuckDB partitioned COPY of the same fact files.

No typing rules, no quarantine, no atomic publish: the floor our landing is compared to.
Columns are typed as the contract says (so the output is comparable), the partition
date is the UTC date of the table's partition column. DuckDB runs with its defaults
(all cores, 80% of RAM), as a user would run it.

    python bench/contestants/duckdb_partition_by.py --spec JSON --inbox DIR --out DIR --result FILE [--parse-only]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def source(inbox: str, table: str, columns: dict[str, str]) -> str:
    cols = ", ".join(f"'{c}': '{t}'" for c, t in columns.items())
    return (
        f"read_csv('{inbox}/{table}/*.csv', header=true, auto_detect=false, columns={{{cols}}}, "
        "timestampformat='%Y-%m-%dT%H:%M:%SZ')"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--spec", required=True, help="JSON: table -> {columns: {name: type}, date: col, client: col}")
    p.add_argument("--inbox", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--parse-only", action="store_true", help="parse every column of every file, write nothing")
    a = p.parse_args()
    import duckdb

    spec = json.loads(Path(a.spec).read_text())
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows: dict[str, int] = {}
    for table, t in spec.items():
        src = source(a.inbox, table, t["columns"])
        if a.parse_only:
            # An aggregate over every column, so no column is projected away unparsed.
            aggs = ", ".join(f'count("{c}")' for c in t["columns"])
            rows[table] = con.execute(f"SELECT count(*), {aggs} FROM {src}").fetchone()[0]
            continue
        dest = Path(a.out) / table
        dest.parent.mkdir(parents=True, exist_ok=True)
        con.execute(
            f"""COPY (SELECT *, CAST("{t["date"]}" AS DATE) AS date, "{t["client"]}" AS client FROM {src})
                TO '{dest}' (FORMAT parquet, PARTITION_BY (date, client))"""
        )
    Path(a.result).write_text(json.dumps({"seconds": time.perf_counter() - started, "rows": rows}))


if __name__ == "__main__":
    main()
