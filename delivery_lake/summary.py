"""What is in the lake, from the landing manifests (cheap: no data file is read)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from delivery_lake.config import Settings
from delivery_lake.contract import TABLES
from delivery_lake.storage import UNASSIGNED_CLIENT, Lake


def table_totals(lake: Lake, table: str) -> dict[str, Any]:
    pattern = "/**/*.json" if TABLES[table].is_fact else "/manifest.json"
    landed = quarantined = partitions = 0
    reasons: dict[str, int] = defaultdict(int)
    for path in lake.fs.glob(lake.meta_path("landing", table) + pattern):
        doc = lake.read_json(path)
        landed += doc["landed"]
        quarantined += doc["quarantined"]
        partitions += doc.get("client") != UNASSIGNED_CLIENT
        for r, n in doc["by_reason"].items():
            reasons[r] += n
    return {
        "landed": landed,
        "quarantined": quarantined,
        "partitions": partitions,
        "by_reason": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
    }


def lake_summary(settings: Settings) -> dict[str, Any]:
    lake = Lake.from_settings(settings)
    return {"lake": lake.url, "tables": {t: table_totals(lake, t) for t in TABLES}, "sections": []}
