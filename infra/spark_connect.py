"""A Spark Connect server from the pyspark wheel, for SPARK_REMOTE on one machine.

pyspark ships Spark's jars, the Connect server among them, and its `spark-submit`: nothing to
download. The server runs Spark in local mode on `--master` and listens on loopback; clients
reach it with SPARK_REMOTE=sc://127.0.0.1:PORT. It is what a cluster's Connect endpoint is to
the project, on this machine: the tests start one on a free port to prove the remote path
(tests/test_spark.py), and a developer can start one by hand:

    python -m infra.spark_connect up --port 15002 --pidfile data/spark-connect.pid
    SPARK_REMOTE=sc://127.0.0.1:15002 TRANSFORM_ENGINE=spark delivery-lake build --full-refresh
    python -m infra.spark_connect down --pidfile data/spark-connect.pid

Python models run in the server's Python workers: PYSPARK_PYTHON is this interpreter, which has
the project and Polars installed (a cluster's workers need the same, see infra/README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from infra.processes import HOST, Service, listening, read_pidfile, spawn, stop_group, write_pidfile

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def start(port: int, log_dir: Path, master: str = "local[2]", timeout: float = 90) -> Service:
    """Start the server on 127.0.0.1:`port`; returns once it accepts connections."""
    home = spark_home()
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": sys.executable}
    cmd = [
        str(home / "bin" / "spark-submit"),
        "--class",
        SERVER_CLASS,
        "--master",
        master,
        "--conf",
        f"spark.connect.grpc.binding.address={HOST}",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.ui.enabled=false",
    ]
    service = spawn("spark-connect", cmd, env, log_dir)
    deadline = time.monotonic() + timeout
    while not listening(port):
        if not service.alive():
            raise RuntimeError(f"the Spark Connect server exited at start:\n{service.log_tail()}")
        if time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(f"the Spark Connect server did not listen on {port} in {timeout:.0f} s")
        time.sleep(0.5)
    return service


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.spark_connect")
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--port", type=int, default=15002)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--pidfile", type=Path, required=True)
    a = p.parse_args(argv)
    if a.action == "up":
        service = start(a.port, a.pidfile.parent, a.master)
        write_pidfile(a.pidfile, service.pid)
        print(f"Spark Connect on sc://{HOST}:{a.port} (pid {service.pid}, log {service.log_path})")
        return 0
    pid = read_pidfile(a.pidfile)
    if pid is None or not stop_group(pid):
        print("no Spark Connect server from that pidfile is running")
    a.pidfile.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
