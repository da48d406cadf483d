"""Run one command and report its own peak RSS and wall time (stdlib only; run with `python -S`).

Why a launcher: on Linux a forked child starts with its parent's memory high-water mark,
and `exec` folds that mark into the rusage the parent later reads (`ru_maxrss`). Forking
contestants straight from the harness (which holds DuckDB, pandas and pyarrow) would
report at least the harness's RSS. This launcher is a bare interpreter (~10 MB), so the
figure it reads with `wait4` is the contestant's own peak (or ~10 MB for a trivial one).

    python -S bench/launch.py OUT.json -- cmd args...
"""

import json
import os
import sys
import time


def main() -> None:
    out, sep, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
    assert sep == "--" and cmd, __doc__
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    with open(out, "w") as fh:
        cpu = usage.ru_utime + usage.ru_stime  # less sensitive than wall time to other load on a shared machine
        json.dump(
            {"wall_s": wall, "cpu_s": cpu, "maxrss_kb": usage.ru_maxrss, "exit": os.waitstatus_to_exitcode(status)}, fh
        )


if __name__ == "__main__":
    main()
