"""Run one contestant in its own process and measure that process: wall time and peak RSS.

The contestant is started by bench/launch.py, a bare interpreter that forks it and reads
its rusage with `wait4`: ru_maxrss is the kernel's high-water mark of the contestant's
resident set. Forking from the harness directly would not do: a child inherits its
parent's high-water mark, so every figure would be at least the harness's RSS (see
launch.py). Contestants are single processes (engines use threads); a contestant that
forked would have its reaped children's peak folded in as well.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.settings import REPO

CONTESTANTS = Path(__file__).resolve().parent / "contestants"
LAUNCHER = Path(__file__).resolve().parent / "launch.py"


class ContestantFailed(RuntimeError):
    pass


@dataclass
class Measurement:
    name: str
    wall_s: float  # the process's, less what it reported as `measuring_s` (the harness's reading)
    peak_rss_bytes: int
    inner_s: float  # the contestant's own timing of its work (no interpreter start, no imports)
    cpu_s: float = 0.0  # user + system CPU of the contestant process
    result: dict = field(default_factory=dict)


def run_contestant(name: str, script: str, args: list[str], result: Path, timeout_s: int, log: Path) -> Measurement:
    cmd = [sys.executable, str(CONTESTANTS / script), *args, "--result", str(result)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    result.unlink(missing_ok=True)
    usage_file = result.with_suffix(".usage.json")
    usage_file.unlink(missing_ok=True)
    launcher = [sys.executable, "-S", str(LAUNCHER), str(usage_file), "--", *cmd]
    with open(log, "ab") as err:
        err.write(("\n$ " + " ".join(cmd) + "\n").encode())
        err.flush()
        proc = subprocess.Popen(launcher, cwd=REPO, env=env, stdout=err, stderr=err, start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher's own group: it and the contestant
            proc.wait()
            raise ContestantFailed(f"{name}: timed out after {timeout_s}s (log: {log})") from None
    usage = json.loads(usage_file.read_text()) if usage_file.exists() else {"exit": proc.returncode}
    if usage["exit"] != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise ContestantFailed(f"{name}: exit {usage['exit']}; last output:\n{tail}")
    data = json.loads(result.read_text())
    # What a contestant spends after its work reading figures for the harness (a Dagster run's
    # event log, the warehouse's row count) is the bench's, not the contestant's: a sparse
    # backfill's 30,000 events took 5 s to read back, a dense one's 0.3 s.
    wall = usage["wall_s"] - float(data.get("measuring_s", 0.0))
    return Measurement(
        name, wall, usage["maxrss_kb"] * 1024, float(data.get("seconds", wall)), usage.get("cpu_s", 0.0), data
    )
