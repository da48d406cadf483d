"""Scaled datasets from the project's own generator, cached by parameters under bench/.data/.

How `--scale` (GB of fact CSV) maps to generator parameters, and why:
- A delivery business grows mostly by accumulating history, and each new day is landed on
  its own; so from 1 GB up, scale adds *days* at a fixed daily volume (30 days at 1 GB,
  120 days at 4 GB). The 4x run therefore tests what matters operationally: does landing
  memory stay flat when the history it lands grows?
- Below 1 GB (smoke runs) both days and daily volume shrink, so a tiny run still spans
  several dates and every client.
- The generator makes every day from its own RNG stream and its output for day D does
  not depend on later days, so one cached series of N days serves every scale that needs
  <= N days: an inbox is a folder of hard links to the first k days (plus the dimension
  snapshots). One extra day is always generated: the incremental contestant lands it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

from bench.settings import BenchSettings

BYTES_PER_ORDER = 275  # fact CSV bytes per order across orders + deliveries + feedback (measured)
GB = 1e9
FACTS = ("orders", "deliveries", "customer_feedback")
DIMENSIONS = ("clients", "depots", "drivers", "vehicles")


@dataclass(frozen=True)
class Shape:
    days: int
    orders_per_day: int


def shape_for(scale: float, s: BenchSettings) -> Shape:
    """Days and daily volume for `scale` GB (see the module doc)."""
    full_day = GB / s.base_days / BYTES_PER_ORDER
    if scale >= 1:
        return Shape(days=round(s.base_days * scale), orders_per_day=round(full_day))
    days = max(3, round(s.base_days * math.sqrt(scale)))
    return Shape(days=days, orders_per_day=max(50, round(scale * GB / days / BYTES_PER_ORDER)))


@dataclass(frozen=True)
class Series:
    """One generated run of days; `days` includes the held-out incremental day."""

    root: Path
    start: str
    days: int
    clients: int
    orders_per_day: int
    seed: int
    dirty_rate: float

    @property
    def export(self) -> Path:
        return self.root / "export"

    def day(self, i: int) -> str:
        return (date.fromisoformat(self.start) + timedelta(days=i)).isoformat()


def _key(params: dict) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def ensure_series(s: BenchSettings, shape: Shape, log=print) -> Series:
    """A cached series with at least shape.days + 1 days for these parameters (generated if missing)."""
    params = {
        "start": s.start,
        "clients": s.clients,
        "orders_per_day": shape.orders_per_day,
        "seed": s.seed,
        "dirty_rate": s.dirty_rate,
    }
    need = shape.days + 1
    base = s.data_dir / f"gen-{_key(params)}"
    for done in sorted(base.glob("days-*/export/_generator.json")):
        days = json.loads(done.read_text())["parameters"]["days"]
        if days >= need:
            return Series(done.parent.parent, days=days, **params)
    from delivery_lake.generator import generate

    root = base / f"days-{need}"
    shutil.rmtree(root, ignore_errors=True)
    log(f"generating {need} days x {shape.orders_per_day:,} orders/day x {s.clients} clients into {root}")
    generate(
        root / "export",
        start=date.fromisoformat(s.start),
        days=need,
        clients=s.clients,
        orders_per_day=shape.orders_per_day,
        seed=s.seed,
        dirty_rate=s.dirty_rate,
        progress=not s.smoke,
    )
    (root / "params.json").write_text(json.dumps({**params, "days": need}, indent=1))
    return Series(root, days=need, **params)


def inbox_view(series: Series, days: int, dest: Path) -> Path:
    """`dest` holds hard links to the dimensions and the first `days` days of every fact."""
    shutil.rmtree(dest, ignore_errors=True)
    for t in DIMENSIONS:
        (dest / t).mkdir(parents=True)
        os.link(series.export / t / f"{t}.csv", dest / t / f"{t}.csv")
    for t in FACTS:
        (dest / t).mkdir(parents=True)
        for i in range(days):
            name = f"{series.day(i)}.csv"
            os.link(series.export / t / name, dest / t / name)
    return dest


def fact_files(inbox: Path) -> dict[str, list[Path]]:
    return {t: sorted((inbox / t).glob("*.csv")) for t in FACTS}


def fact_bytes(inbox: Path) -> int:
    return sum(p.stat().st_size for files in fact_files(inbox).values() for p in files)


def describe(series: Series, days: int) -> dict:
    d = asdict(series)
    d["root"] = str(series.root)
    d["days_used"] = days
    return d
