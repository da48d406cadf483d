"""Equality checks across contestants (answers, never timings) and lake file statistics."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import duckdb


class NotEqual(AssertionError):
    pass


def partition_counts(glob: str) -> dict[tuple[str, str, str], int]:
    """(table, date, client) -> rows, for a hive-partitioned folder of Parquet per table."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"""SELECT split_part(filename, '/', -4) AS t, date::VARCHAR, client::VARCHAR, count(*)
                FROM read_parquet('{glob}', hive_partitioning = true, filename = true, union_by_name = true)
                GROUP BY ALL"""
        ).fetchall()
    finally:
        con.close()
    return {(t, d, c): n for t, d, c, n in rows}


def warehouse_rows(path: Path) -> dict[str, int]:
    """Rows of every table of a warehouse file (opened read-only), by table name."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        listed = con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
        return {
            t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]) for t in sorted(r[0] for r in listed)
        }
    finally:
        con.close()


def assert_same_warehouse(name_a: str, a: dict[str, int], name_b: str, b: dict[str, int]) -> None:
    """Two runs that claim the same work left the same tables with the same row counts."""
    if not a:
        raise NotEqual(f"{name_a} left an empty warehouse; nothing was compared")
    if a != b:
        diff = {t: (a.get(t), b.get(t)) for t in sorted(set(a) | set(b)) if a.get(t) != b.get(t)}
        raise NotEqual(f"warehouse rows differ between {name_a} and {name_b} (table: ({name_a}, {name_b})): {diff}")


def assert_same_partitions(name_a: str, a: dict, name_b: str, b: dict) -> None:
    if a == b:
        return
    only_a = sorted(set(a) - set(b))[:5]
    only_b = sorted(set(b) - set(a))[:5]
    diff = sorted(k for k in set(a) & set(b) if a[k] != b[k])[:5]
    raise NotEqual(
        f"landed rows per partition differ between {name_a} and {name_b}: "
        f"only in {name_a} {only_a}, only in {name_b} {only_b}, counts differ {[(k, a[k], b[k]) for k in diff]}"
    )


def _close(x: object, y: object) -> bool:
    if isinstance(x, bool) or isinstance(y, bool):
        return bool(x) == bool(y)
    if isinstance(x, int | float) and isinstance(y, int | float):
        return math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-9)
    return x == y


def assert_same_answers(name_a: str, a: dict, name_b: str, b: dict) -> dict[str, int]:
    """Query by query, row by row, value by value (floats to 1e-9). Returns rows per query."""
    if sorted(a) != sorted(b):
        raise NotEqual(f"{name_a} answered {sorted(a)}, {name_b} answered {sorted(b)}")
    sizes = {}
    for q in sorted(a):
        ra, rb = a[q]["rows"], b[q]["rows"]
        if a[q]["columns"] != b[q]["columns"]:
            raise NotEqual(f"{q}: columns {a[q]['columns']} ({name_a}) != {b[q]['columns']} ({name_b})")
        if len(ra) != len(rb):
            raise NotEqual(f"{q}: {len(ra)} rows ({name_a}) != {len(rb)} rows ({name_b})")
        if not ra:
            raise NotEqual(f"{q}: no rows at all; nothing was compared")
        for i, (x, y) in enumerate(zip(ra, rb, strict=True)):
            if not all(_close(u, v) for u, v in zip(x, y, strict=True)):
                raise NotEqual(f"{q} row {i}: {x} ({name_a}) != {y} ({name_b})")
        sizes[q] = len(ra)
    return sizes


def lake_file_stats(lake: Path, tables: list[str]) -> dict:
    """Data files of the landed fact tables: per-partition file counts and file sizes."""
    sizes: list[int] = []
    per_partition: list[int] = []
    for t in tables:
        for part in sorted((lake / "raw" / t).glob("date=*/client=*")):
            files = [f for f in part.iterdir() if f.suffix == ".parquet"]
            per_partition.append(len(files))
            sizes += [f.stat().st_size for f in files]
    if not sizes:
        return {"files": 0}
    return {
        "files": len(sizes),
        "partitions": len(per_partition),
        "files_per_partition_max": max(per_partition),
        "files_per_partition_mean": round(statistics.mean(per_partition), 3),
        "median_file_mb": round(statistics.median(sizes) / 1e6, 4),
        "p10_file_mb": round(sorted(sizes)[len(sizes) // 10] / 1e6, 4),
        "max_file_mb": round(max(sizes) / 1e6, 4),
        "total_mb": round(sum(sizes) / 1e6, 1),
    }
