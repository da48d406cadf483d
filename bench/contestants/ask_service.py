"""Contestant `ask_service`: latency of `ask` on the benchmark's warehouse, and its cache.

A question log is replayed through the question service (`QuestionService`, what
`delivery-lake serve` runs): distinct questions built from the warehouse's own names (clients,
depot cities, drivers) and relative dates anchored on its last day, asked with a skew (a few hot
questions asked often, as dashboards and people repeat them). The first ask of a question is
uncached (parse, compile, query); a repeat is answered from the cache, Redis when REDIS_URL is
set, in process otherwise. Reports p50/p95 of each in milliseconds and the hit ratio.

    python bench/contestants/ask_service.py --warehouse FILE --result FILE
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

TEMPLATES = [
    "deliveries yesterday",
    "on-time rate by client last week",
    "revenue by client this week",
    "which depot had the most deliveries yesterday",
    "top 5 drivers by deliveries last week",
    "daily on-time rate over the last 14 days",
    "weekly revenue",
    "average rating by sentiment",
    "failed deliveries by city last week",
    "capacity utilisation per depot yesterday",
    "average delivery time by priority",
    "on-time rate for {client} last week",
    "revenue for {client} in the last 7 days",
    "deliveries per day for {client} this week",
    "complaints for {client}",
    "deliveries in {city} yesterday",
    "on-time rate in {city} by week",
    "deliveries by {driver} last week",
    "{client} vs {client2} on-time rate",
    "worst client by on-time rate yesterday",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--warehouse", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--asks", type=int, default=400)
    a = p.parse_args()

    from delivery_lake.semantic.service import QuestionService, make_cache
    from delivery_lake.warehouse import open_reader

    con = open_reader(a.warehouse)
    try:
        clients = [r[0] for r in con.execute("SELECT client_name FROM dim_clients ORDER BY client_id").fetchall()]
        cities = [r[0] for r in con.execute("SELECT DISTINCT depot_city FROM dim_depots ORDER BY 1").fetchall()]
        drivers = [r[0] for r in con.execute("SELECT driver_id FROM dim_drivers ORDER BY 1 LIMIT 20").fetchall()]
        last = con.execute("SELECT max(date) FROM fct_deliveries").fetchone()[0]  # type: ignore[index]
    finally:
        con.close()
    rng = random.Random(7)
    questions = []
    for i, t in enumerate(TEMPLATES * 3):
        q = t.format(
            client=clients[i % len(clients)],
            client2=clients[(i + 1) % len(clients)],
            city=cities[i % len(cities)],
            driver=drivers[i % len(drivers)],
        )
        if q not in questions:
            questions.append(q)
    # Zipf-like skew: question k is asked with weight 1 / (k + 1).
    weights = [1 / (k + 1) for k in range(len(questions))]
    log = rng.choices(questions, weights=weights, k=a.asks)

    redis_url = os.environ.get("REDIS_URL")
    cache = make_cache(redis_url)
    if redis_url:
        # A run of its own: forget what an earlier bench run cached for this warehouse.
        cache.client.delete(*cache.client.keys("delivery_lake:answer:*") or ["-"])  # type: ignore[attr-defined]
    service = QuestionService(a.warehouse, cache)
    service.vocabulary(service.build())  # loaded once when the service starts, not per question
    uncached, cached, refused = [], [], 0
    started = time.perf_counter()
    for q in log:
        t0 = time.perf_counter()
        answer, hit = service.ask(q, last)
        ms = (time.perf_counter() - t0) * 1000
        (cached if hit else uncached).append(ms)
        refused += bool(answer.get("refused"))
    seconds = time.perf_counter() - started
    Path(a.result).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "cache": cache.kind,
                "asks": len(log),
                "distinct_questions": len(set(log)),
                "refused": refused,
                "uncached_p50_ms": round(statistics.median(uncached), 2),
                "uncached_p95_ms": round(percentile(uncached, 0.95), 2),
                "cached_p50_ms": round(statistics.median(cached), 3) if cached else None,
                "cached_p95_ms": round(percentile(cached, 0.95), 3) if cached else None,
                "hit_ratio": round(service.stats.hit_ratio, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
