"""Celery workers for DAGSTER_EXECUTOR=celery (assets/workers.py): start N here, stop them, list them.

    python -m infra.workers start --count 2    # `make workers WORKERS=2`
    python -m infra.workers status
    python -m infra.workers stop               # `make workers-down`

Each worker is `celery -A assets.celery_worker worker -Q dagster -c 1`: one step at a time (a
step already uses DUCKDB_THREADS cores), its own session and log (DATA_DIR/run/
celery-worker-N.log), its pid in DATA_DIR/run/celery-worker-N.pid. `stop` signals only the
recorded groups whose command is still a worker's. The broker comes from CELERY_BROKER_URL in
the environment (never a command line, which `ps` shows, and never printed: Celery masks the
password in its own log). Workers on other machines run the same command with the same
environment (infra/README.md, "Landing on several workers").
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from infra.processes import (
    ProcessError,
    Service,
    cmdline,
    find_executable,
    pid_alive,
    read_pidfile,
    spawn,
    stop_group,
    write_pidfile,
)

WORKER_APP = "assets.celery_worker"
# dagster-celery sends every step to this queue (assets.workers.QUEUE; its app declares no other).
QUEUE = "dagster"
PREFIX = "celery-worker"
ROOT = Path(__file__).resolve().parent.parent


def worker_command(name: str, concurrency: int = 1, loglevel: str = "INFO") -> list[str]:
    """The command of one worker named `name@<host>`."""
    return [
        find_executable("celery") or "celery",
        "-A",
        WORKER_APP,
        "worker",
        "-Q",
        QUEUE,
        "-c",
        str(concurrency),
        # One task reserved per pool process: queued steps stay in the broker for idle workers.
        "--prefetch-multiplier=1",
        "-n",
        f"{name}@%h",
        # No worker-to-worker chatter at start-up: steps need none, and it costs a second.
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        loglevel,
    ]


def worker_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker: the caller's, with the Celery executor chosen."""
    if not env.get("CELERY_BROKER_URL"):
        raise ProcessError("CELERY_BROKER_URL is not set (e.g. redis://127.0.0.1:6379/0): the workers need a broker")
    return {**env, "DAGSTER_EXECUTOR": "celery"}


def start_worker(
    name: str, env: Mapping[str, str], log_dir: Path, concurrency: int = 1, loglevel: str = "INFO"
) -> Service:
    """Start one worker in its own session (its process group is exactly the worker and its pool)."""
    return spawn(name, worker_command(name, concurrency, loglevel), worker_env(env), log_dir, cwd=ROOT)


def wait_ready(workers: list[Service], timeout: float = 180) -> None:
    """Until every worker has logged `<name>@<host> ready.`; ProcessError if one exits first or
    `timeout` seconds pass."""
    host = socket.gethostname()
    deadline = time.monotonic() + timeout
    waiting = list(workers)
    while waiting:
        for w in list(waiting):
            if not w.alive():
                raise ProcessError(
                    f"worker {w.name} exited (code {w.proc.returncode}); log {w.log_path}:\n{w.log_tail()}"
                )
            try:
                text = w.log_path.read_text(errors="replace")
            except OSError:
                text = ""
            if f"{w.name}@{host} ready." in text:
                waiting.remove(w)
        if waiting and time.monotonic() > deadline:
            raise ProcessError(
                f"worker(s) {', '.join(w.name for w in waiting)} not ready after {timeout:.0f}s; "
                f"log {waiting[0].log_path}:\n{waiting[0].log_tail()}"
            )
        time.sleep(0.2)


def _run_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("DATA_DIR") or ROOT / "data").resolve() / "run"


def _is_worker(pid: int) -> bool:
    args = cmdline(pid) or []
    return pid_alive(pid) and WORKER_APP in args and "worker" in args


def recorded(run_dir: Path) -> dict[str, int]:
    """Worker name -> pid of the workers whose pid file names a running worker."""
    out = {}
    for pidfile in sorted(run_dir.glob(f"{PREFIX}-*.pid")):
        pid = read_pidfile(pidfile)
        if pid and _is_worker(pid):
            out[pidfile.stem] = pid
    return out


def start(env: Mapping[str, str], count: int, concurrency: int = 1) -> int:
    run_dir = _run_dir(env)
    running = recorded(run_dir)
    started = []
    for i in range(1, count + 1):
        name = f"{PREFIX}-{i}"
        if name in running:
            print(f"{name} already running (pid {running[name]})")
            continue
        w = start_worker(name, env, run_dir, concurrency)
        write_pidfile(run_dir / f"{name}.pid", w.pid)
        started.append(w)
    try:
        wait_ready(started)
    except ProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for w in started:
            w.stop()
        return 1
    for w in started:
        print(f"{w.name} ready (pid {w.pid}, log {w.log_path})")
    return 0


def stop(env: Mapping[str, str]) -> int:
    run_dir = _run_dir(env)
    for name, pid in recorded(run_dir).items():
        stop_group(pid)
        print(f"stopped {name} (pid {pid})")
    for pidfile in run_dir.glob(f"{PREFIX}-*.pid"):
        pidfile.unlink(missing_ok=True)
    return 0


def status(env: Mapping[str, str]) -> int:
    running = recorded(_run_dir(env))
    for name, pid in running.items():
        print(f"{name}: running (pid {pid})")
    if not running:
        print("no worker running")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.workers", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="start N workers on this machine")
    s.add_argument("--count", type=int, default=2)
    s.add_argument("--concurrency", type=int, default=1, help="steps at a time per worker")
    sub.add_parser("stop", help="stop the workers `start` recorded")
    sub.add_parser("status", help="which recorded workers run")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        if args.command == "start":
            return start(env, args.count, args.concurrency)
        if args.command == "stop":
            return stop(env)
        return status(env)
    except ProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
