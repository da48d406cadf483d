"""Every version of one fact row the lake holds: the landed one (raw), one waiting for its
parent (pending) and those a later file corrected (history), for `delivery-lake history`."""

from __future__ import annotations

from typing import Any

from delivery_lake.contract import Table
from delivery_lake.sql import ident, literal
from delivery_lake.storage import Lake

# Newest first: a pending row landed after whatever raw holds; history is ordered by when
# each version was replaced.
ZONES = ("pending", "raw", "history")
VERSION = {"pending": "pending", "raw": "current", "history": "superseded"}
EXTRA = {
    "pending": ("_source_file", "_source_line", "_pending_on"),
    "raw": (),
    "history": ("_source_file", "_source_line", "_superseded_by", "_superseded_at"),
}


def key_history(lake: Lake, table: Table, key: str) -> list[dict[str, Any]]:
    """Versions of the row whose key is `key`, newest first (empty when the key is unknown)."""
    out: list[dict[str, Any]] = []
    con = lake.duckdb()
    try:
        for zone in ZONES:
            if not lake.glob(lake.table_dir(zone, table.name) + "/date=*/client=*/data.parquet"):
                continue
            extra = EXTRA[zone]
            # Files written before a column existed lack it: read by name and fill with NULL.
            cols = ", ".join([*map(ident, table.column_names), *map(ident, extra)])
            order = (
                "_superseded_at DESC NULLS LAST, _source_file DESC, _source_line DESC"
                if zone == "history"
                else "date DESC, client"
            )
            rows = con.execute(
                f"""SELECT {cols}, date::VARCHAR AS date, client::VARCHAR AS client
                    FROM read_parquet({literal(lake.glob_uri(zone, table.name, True))}, hive_partitioning = true,
                                      hive_types = {{'date': VARCHAR, 'client': VARCHAR}}, union_by_name = true)
                    WHERE {ident(table.key)} = ? ORDER BY {order}""",
                [key],
            ).fetchall()
            n = len(table.column_names)
            for r in rows:
                meta = dict(zip(extra, r[n : n + len(extra)], strict=True))
                out.append(
                    {
                        "version": VERSION[zone],
                        "date": r[-2],
                        "client": r[-1],
                        "source_file": meta.get("_source_file"),
                        "source_line": meta.get("_source_line"),
                        "pending_on": meta.get("_pending_on"),
                        "superseded_by": meta.get("_superseded_by"),
                        "superseded_at": None if meta.get("_superseded_at") is None else str(meta["_superseded_at"]),
                        "values": dict(zip(table.column_names, r[:n], strict=True)),
                    }
                )
    finally:
        con.close()
    return out
