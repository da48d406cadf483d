"""Landing on Celery workers: two workers over one (issue 25's `landing_two_workers_over_one`).

Times `delivery-lake run --land-only` (dimensions, then one run landing the three fact tables
over the whole inbox, with their checks) with DAGSTER_EXECUTOR=celery against 1 and then 2
workers started here as `make workers` starts them (`infra/workers.py`), on the machine's Redis,
each repetition into a fresh lake, DAGSTER_HOME and Redis key prefix; the sides alternate
repetition by repetition so a drift of this shared host does not land on one side only. The
default executor (steps in process) is timed on the same inbox for context. Every side must
land the same raw partitions (their digests are compared), or the figure is not reported.

What to expect: a run spreads by step (one step per fact table over all its partitions, and one
per check), so two workers overlap deliveries, feedback and the checks after orders; on a
2-core machine they also share the cores a single worker's DuckDB already uses.

    python -m bench.workers [--days 10] [--clients 6] [--orders-per-day 1500] [--reps 2] [--result FILE]

Without Redis on 127.0.0.1:6379 it prints why and writes a skipped result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from bench.settings import BENCH_DIR

BROKER = "redis://127.0.0.1:6379/15"  # a database of the benchmark's own; keys under a per-run prefix


def _skip(result: Path | None, why: str) -> int:
    print(f"landing_two_workers_over_one: skipped: {why}")
    if result:
        result.write_text(json.dumps({"skipped": why}))
    return 0


def raw_digests(lake: Path) -> dict[str, str]:
    return {
        p.relative_to(lake).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((lake / "raw").rglob("*.parquet"))
    }


def land(inbox: Path, work: Path, workers: int) -> tuple[float, dict[str, str]]:
    """Seconds `delivery-lake run --land-only` takes with `workers` Celery workers (0: the default
    executor, in process), and the raw partitions it landed. The workers are started (and seen
    ready) before the clock starts, and stopped after it stops."""
    from infra.processes import find_executable
    from infra.workers import start_worker, wait_ready

    prefix = f"delivery_lake:bench:{uuid.uuid4().hex}:"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(work / "dagster_home"),
        "DATA_DIR": str(work / "data"),
        "LAKE_URL": str(work / "lake"),
        "INBOX_DIR": str(inbox),
    }
    env.pop("DAGSTER_EXECUTOR", None)
    if workers:
        env |= {"DAGSTER_EXECUTOR": "celery", "CELERY_BROKER_URL": BROKER, "CELERY_KEY_PREFIX": prefix}
    started = [start_worker(f"bench{i}", env, work / "logs") for i in range(1, workers + 1)]
    try:
        wait_ready(started)
        t0 = time.monotonic()
        proc = subprocess.run(
            [find_executable("delivery-lake") or "delivery-lake", "run", "--land-only"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - t0
    finally:
        for w in started:
            w.stop()
        if workers:
            import redis

            conn = redis.Redis.from_url(BROKER)
            for key in conn.scan_iter(match=prefix + "*"):
                conn.delete(key)
            conn.close()
    if proc.returncode != 0:
        raise RuntimeError(f"landing with {workers} worker(s) failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return seconds, raw_digests(work / "lake")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, default=10)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--orders-per-day", type=int, default=1500)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--result", type=Path)
    a = p.parse_args(argv)

    import redis

    try:
        redis.Redis.from_url(BROKER, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return _skip(a.result, f"no Redis at 127.0.0.1:6379 ({exc})")

    from delivery_lake.generator import generate

    inbox = BENCH_DIR / ".data" / f"workers-{a.days}d-{a.clients}c-{a.orders_per_day}"
    if not inbox.is_dir():
        tmp = inbox.with_name(inbox.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        generate(tmp, date(2026, 1, 5), a.days, a.clients, orders_per_day=a.orders_per_day, seed=7, progress=False)
        tmp.rename(inbox)
    sides = {"in_process": 0, "one_worker": 1, "two_workers": 2}
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    first: dict[str, str] | None = None
    root = Path(tempfile.mkdtemp(prefix="bench-workers-", dir=BENCH_DIR / ".data"))
    try:
        for rep in range(a.reps):
            order = list(sides) if rep % 2 == 0 else list(reversed(sides))
            for name in order:
                s, d = land(inbox, root / f"{name}-{rep}", sides[name])
                seconds[name].append(round(s, 2))
                first = first if first is not None else d
                if d != first:
                    raise RuntimeError(f"{name} landed other raw partitions than the first side timed")
                print(f"rep {rep + 1}: {name:<12} {s:6.1f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    median = {name: round(statistics.median(v), 2) for name, v in seconds.items()}
    result = {
        "landing_two_workers_over_one": round(median["one_worker"] / median["two_workers"], 2),
        "landing_one_worker_s": median["one_worker"],
        "landing_two_workers_s": median["two_workers"],
        "landing_in_process_s": median["in_process"],
        "seconds": seconds,
        "inbox": {"days": a.days, "clients": a.clients, "orders_per_day": a.orders_per_day},
        "raw_partitions": len(first or {}),
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=1))
    if a.result:
        a.result.parent.mkdir(parents=True, exist_ok=True)
        a.result.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
