"""Where our landing spends its time and memory: every DuckDB statement timed, RSS sampled.

Runs the `ours` contestant's work (all dimensions, then every fact table for all dates)
with the library unchanged: the lake's DuckDB connections are wrapped so each
`execute` is timed and grouped by the kind of statement, and a thread samples the
process RSS every 50 ms so each phase's peak is known.

    python -m bench.profile_landing --inbox DIR [--work DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

console = Console(width=160)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def kind(sql: str) -> str:
    """A stable label for a statement of the landing (landing.py builds them from templates)."""
    s = " ".join(sql.split())
    rules = [
        (r"^SET ", "SET"),
        (r"^CREATE TEMP TABLE keys_", "load parent keys"),
        (r"^CREATE TEMP TABLE src AS", "read CSV -> src"),
        (r"^INSERT INTO src", "read CSV -> src"),
        (r"^CREATE TABLE IF NOT EXISTS rej", "rejects table"),
        (r"^CREATE TEMP TABLE rejected", "collect rejects"),
        (r"^CREATE TEMP TABLE typed", "type + rules -> typed"),
        (r"^UPDATE typed SET _date", "UPDATE nominal date per file"),
        (r"^UPDATE typed SET _rs = list_append", "mark duplicates"),
        (r"rej_gaps|bad_lines|^ALTER TABLE typed|^UPDATE typed SET _line", "line numbers"),
        (r"^SELECT \(SELECT count", "count read"),
        (r"^SELECT k FROM", "registered clients"),
        (r"^SELECT DISTINCT _date, _client", "targets"),
        (r"TEMP TABLE targets|^INSERT INTO targets", "targets"),
        (r"^CREATE OR REPLACE TEMP TABLE picked", "picked = typed SEMI JOIN targets (materialised)"),
        (r"^CREATE OR REPLACE TEMP VIEW bad", "bad view"),
        (r"LIMIT 0\) TO", "COPY empty schema files"),
        (r"^COPY \( ?SELECT d, c, .* FROM picked", "COPY good, PARTITION_BY (d, c)"),
        (r"^COPY \( ?SELECT \* FROM bad", "COPY quarantine, PARTITION_BY (d, c)"),
        (r"^COPY \( ?SELECT .* FROM typed WHERE .*len\(_rs\) = 0", "COPY good, one partition"),
        (r"^COPY \(", "COPY quarantine, one partition"),
        (r"FROM picked GROUP BY ALL", "counts per partition x file"),
        (r"FROM bad GROUP BY ALL", "reasons per partition (re-evaluates the bad view)"),
        (r"^SELECT _file, sum\(CASE", "per partition: counts by file"),
        (r"^SELECT _file, count\(\*\) FROM rejected", "per partition: rejected by file"),
        (r"^SELECT _reason, count", "per partition: reasons (re-read parquet)"),
        (r"^SELECT .* FROM typed WHERE len\(_rs\) = 0 LIMIT", "preview"),
        (
            r"^SELECT CAST\(|^SELECT count\(DISTINCT line\)|^SELECT count\(\*\) FROM read_csv",
            "inbox index scan (2nd pass over each CSV)",
        ),
        (r"^SELECT client_id FROM read_parquet", "registered clients"),
    ]
    for pattern, label in rules:
        if re.search(pattern, s):
            return label
    return "other: " + s[:50]


class Profile:
    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self.peak: dict[tuple[str, str], float] = defaultdict(float)
        self.table = "-"
        self.current: tuple[str, str] | None = None
        self.stop = False
        self.timeline: list[tuple[float, float, str]] = []

    def sampler(self) -> None:
        t0 = time.perf_counter()
        while not self.stop:
            r = rss_mb()
            key = self.current or (self.table, "python (outside DuckDB)")
            self.peak[key] = max(self.peak[key], r)
            self.timeline.append((round(time.perf_counter() - t0, 2), round(r), f"{key[0]}: {key[1]}"))
            time.sleep(0.05)


class TimedConnection:
    def __init__(self, con: Any, prof: Profile):
        self._con, self._prof = con, prof

    def execute(self, sql: str, *args: Any) -> Any:
        key = (self._prof.table, kind(sql))
        self._prof.current = key
        started = time.perf_counter()
        try:
            return self._con.execute(sql, *args)
        finally:
            self._prof.seconds[key] += time.perf_counter() - started
            self._prof.calls[key] += 1
            self._prof.current = None

    def cursor(self) -> TimedConnection:
        # the landing runs each batch on a cursor of one DuckDB instance
        return TimedConnection(self._con.cursor(), self._prof)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _wrap_storage(cls: Any, method: str, prof: Profile) -> None:
    """Time a Lake method (publish with fsync, manifest writes) the way SQL statements are timed."""
    original = getattr(cls, method)

    def timed(self: Any, *args: Any, **kw: Any) -> Any:
        key = (prof.table, f"python: Lake.{method}")
        started = time.perf_counter()
        try:
            return original(self, *args, **kw)
        finally:
            prof.seconds[key] += time.perf_counter() - started
            prof.calls[key] += 1

    setattr(cls, method, timed)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--inbox", required=True)
    p.add_argument("--work")
    p.add_argument("--json")
    a = p.parse_args()

    from delivery_lake import storage
    from delivery_lake.config import Settings
    from delivery_lake.contract import DIMENSIONS, FACTS
    from delivery_lake.inbox import list_files
    from delivery_lake.landing import Landing

    prof = Profile()
    for method in ("publish_file", "write_json", "exists"):
        _wrap_storage(storage.Lake, method, prof)
    original = storage.Lake.duckdb
    storage.Lake.duckdb = lambda self, *args, **kw: TimedConnection(original(self, *args, **kw), prof)  # type: ignore[method-assign]
    work = Path(a.work or tempfile.mkdtemp(prefix="profile-landing-"))
    if (work / "lake").exists():
        # Deleting it here would slow the run being profiled (see "No timed run follows a
        # delete" in bench/README.md).
        raise SystemExit(f"{work / 'lake'} exists: pass a fresh --work folder")
    settings = Settings.from_env(data_dir=work / "data", lake_url=str(work / "lake"), inbox_dir=Path(a.inbox))
    landing = Landing(storage.Lake.from_settings(settings), settings.inbox_dir, settings)
    threading.Thread(target=prof.sampler, daemon=True).start()
    totals: dict[str, float] = {}
    started = time.perf_counter()
    for t in DIMENSIONS:
        prof.table = t.name
        t0 = time.perf_counter()
        landing.land_dimension(t)
        totals[t.name] = time.perf_counter() - t0
    dates = sorted({f.stem for f in list_files(settings.inbox_dir, "orders")})
    for t in FACTS:
        prof.table = t.name
        t0 = time.perf_counter()
        r = landing.land_fact(t, {d: None for d in dates})
        totals[t.name] = time.perf_counter() - t0
        console.print(f"{t.name}: {time.perf_counter() - t0:.1f} s, {len(r.partitions)} partitions, {r.landed:,} rows")
    total = time.perf_counter() - started
    prof.stop = True

    out = RichTable(title=f"landing profile: {total:.1f} s total, peak RSS {max(prof.peak.values()):.0f} MB")
    for col in ("table", "phase", "calls", "seconds", "% of total", "peak RSS MB"):
        out.add_column(col, justify="left" if col in ("table", "phase") else "right")
    in_sql = defaultdict(float)
    for (table, phase), sec in sorted(prof.seconds.items(), key=lambda kv: -kv[1]):
        if not phase.startswith("python:"):
            in_sql[table] += sec
        if sec / total < 0.003:
            continue
        out.add_row(
            table,
            phase,
            str(prof.calls[(table, phase)]),
            f"{sec:.2f}",
            f"{100 * sec / total:.1f}",
            f"{prof.peak.get((table, phase), 0):.0f}",
        )
    for table, sec in totals.items():
        rest = sec - in_sql[table]
        if rest / total >= 0.003:
            out.add_row(
                table,
                "python, rest (outside DuckDB)",
                "",
                f"{rest:.2f}",
                f"{100 * rest / total:.1f}",
                f"{prof.peak.get((table, 'python (outside DuckDB)'), 0):.0f}",
            )
    console.print(out)
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "total_s": total,
                    "per_table_s": totals,
                    "phases": [
                        {
                            "table": t,
                            "phase": ph,
                            "calls": prof.calls[(t, ph)],
                            "seconds": round(s, 3),
                            "peak_rss_mb": round(prof.peak.get((t, ph), 0)),
                        }
                        for (t, ph), s in sorted(prof.seconds.items(), key=lambda kv: -kv[1])
                    ],
                    "rss_timeline": prof.timeline[::4],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
