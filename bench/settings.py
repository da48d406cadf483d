"""Every knob of the benchmark, read from `BENCH_*` environment variables in one place.

(pydantic-settings is not a project dependency, so this is a frozen dataclass with the
same contract: defaults here, overrides from the environment, CLI flags on top.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


@dataclass(frozen=True)
class BenchSettings:
    scale: float = 1.0  # GB of fact CSV for the 1x run
    growth: float = 4.0  # the memory-curve run is `growth` x `scale` (0 = skip it)
    reps: int = 3
    # The growth run is there for the memory curve (peak RSS varies little between reps) and
    # takes 4x as long; 0 = as many as `reps`.
    growth_reps: int = 1
    clients: int = 80  # 30 days x 80 clients = the 2,400 date x client partitions of the issue
    base_days: int = 30  # days at scale >= 1; bigger scales add days (history grows)
    dirty_rate: float = 0.0
    seed: int = 7
    start: str = "2026-01-05"
    data_dir: Path = BENCH_DIR / ".data"
    results_dir: Path = BENCH_DIR / "results"
    timeout_s: int = 3600
    smoke: bool = False  # assert equality, print, but do not overwrite results/latest.json

    @classmethod
    def from_env(cls, **overrides: object) -> BenchSettings:
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f"BENCH_{f.name.upper()}")
            if raw in (None, ""):
                continue
            kind = type(getattr(cls, f.name))
            values[f.name] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
        return replace(cls(**values), **{k: v for k, v in overrides.items() if v is not None})
