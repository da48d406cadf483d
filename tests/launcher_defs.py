"""Two small jobs for tests/test_run_launcher.py: what a run's process sees, and a run that waits."""

import json
import os
import sys
import time

import dagster as dg


class ReportConfig(dg.Config):
    out: str


@dg.op
def report(context: dg.OpExecutionContext, config: ReportConfig) -> None:
    # what the fork server imported for this run, before this run imports anything more
    seen = {"pid": os.getpid(), "sqlglot_preloaded": "sqlglot" in sys.modules, "run_id": context.run_id}
    with open(config.out, "w") as fh:
        json.dump(seen, fh)


class WaitConfig(dg.Config):
    started: str
    seconds: float = 120.0


@dg.op
def wait(config: WaitConfig) -> None:
    with open(config.started, "w") as fh:
        fh.write(str(os.getpid()))
    deadline = time.monotonic() + config.seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)


@dg.job(executor_def=dg.in_process_executor)  # the op runs in the run's own process
def report_job() -> None:
    report()


@dg.job(executor_def=dg.in_process_executor)  # the op runs in the run's own process
def wait_job() -> None:
    wait()


defs = dg.Definitions(jobs=[report_job, wait_job])
