"""A run launcher whose runs start from a process that has imported the heavy libraries once.

Dagster's default launcher asks the code server to start each run in a fresh interpreter
(multiprocessing "spawn"), which imports Dagster, DuckDB, Polars, Great Expectations and, for the
model, MLflow and scikit-learn again every time: 2.5-4 s before a run's first step and 3-9 s more
inside its steps (measured under `make up`: GX 3.3 s, MLflow 4.6 s, skops 4.0 s), paid by each of
the two to three runs a drop sets off (issue 24, docs/performance.md).

`WarmRunLauncher` keeps one fork server (Python's multiprocessing "forkserver") per launching
process, which imports `preload_modules` when it starts; a run is a child forked from it that does
what `dagster api execute_run` does (the command Dagster's other launchers run). Only third-party
libraries are preloaded: the project's own code is imported by each run, so an edited definition
is what the next run executes (reload the code location, as always), while a changed *library*
needs the daemon restarted (`make down && make up`), which an upgrade needs anyway.

The fork server starts with the daemon's first launch, which waits for its imports once (15-30 s
on two cores); later launches fork in milliseconds. Each run is still its own process (a run that
dies takes only itself down), started in the daemon's working directory and environment, as the
code server's runs are. Its pid is recorded as a run tag: `terminate` interrupts it (the UI's
"Terminate" works from the webserver too) and run monitoring asks whether it is still alive.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import _check as check
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import serialize_value
from dagster._serdes.config_class import ConfigurableClass, ConfigurableClassData

PID_TAG, HOST_TAG = "delivery_lake/run_worker_pid", "delivery_lake/run_worker_host"

# What a run of this project imports that costs seconds and never changes while the daemon runs.
DEFAULT_PRELOAD = (
    "dagster",
    "duckdb",
    "polars",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "s3fs",
    "sqlglot",
    "great_expectations",
    "mlflow",
    "mlflow.sklearn",
    "sklearn.ensemble",
    "sklearn.pipeline",
    "sklearn.compose",
    "sklearn.inspection",
    "sklearn.metrics",
    "sklearn.calibration",
    "skops.io",
    "matplotlib",
)


def execute_run(serialized_args: str) -> None:
    """The body of a forked run: what `dagster api execute_run <args>` does in a new process."""
    from dagster._cli.api import execute_run_command

    # the command's own function: interrupts captured, the instance built from its reference,
    # the run executed and its failures recorded, exactly as the spawned command does
    execute_run_command.callback(input_json=serialized_args, compressed_input_json=None)  # type: ignore[misc]


class WarmRunLauncher(DefaultRunLauncher, ConfigurableClass):
    """Runs forked from a preloaded fork server (see the module docstring)."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, preload_modules: Sequence[str] | None = None):
        super().__init__(inst_data=inst_data)
        self._preload = list(DEFAULT_PRELOAD if preload_modules is None else preload_modules)
        self._context: Any = None
        self._lock = threading.Lock()
        self._children: dict[str, Any] = {}  # run id -> multiprocessing Process, until reaped

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        from dagster import Array, Field, Noneable

        return {
            "preload_modules": Field(
                Noneable(Array(str)),
                is_required=False,
                default_value=None,
                description="Modules the fork server imports once (default: the heavy libraries of a run).",
            )
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> WarmRunLauncher:
        return cls(inst_data=inst_data, preload_modules=config_value.get("preload_modules"))

    def _forkserver(self) -> Any:
        with self._lock:
            if self._context is None:
                ctx = multiprocessing.get_context("forkserver")
                # The fork server is started (and imports these) on the first launch; the setting
                # is per process, and nothing else in the daemon or webserver forks from one.
                ctx.set_forkserver_preload(self._preload)
                self._context = ctx
            return self._context

    def _reap(self) -> None:
        """Close the handles of children that have exited (their exit is in the run's events)."""
        with self._lock:
            for run_id, proc in list(self._children.items()):
                if not proc.is_alive():
                    proc.join(0)
                    proc.close()
                    del self._children[run_id]

    def launch_run(self, context: LaunchRunContext) -> None:
        from dagster._grpc.types import ExecuteRunArgs

        run = context.dagster_run
        check.inst_param(run, "run", DagsterRun)
        origin = check.not_none(run.job_code_origin, f"run {run.run_id} has no code origin")
        self._reap()
        args = serialize_value(
            ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        )
        proc = self._forkserver().Process(target=execute_run, args=(args,), name=f"dagster-run-{run.run_id[:8]}")
        proc.start()
        with self._lock:
            self._children[run.run_id] = proc
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(proc.pid), HOST_TAG: socket.gethostname()})

    def _worker(self, run_id: str) -> tuple[DagsterRun | None, int | None]:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.tags.get(HOST_TAG) != socket.gethostname():
            return run, None
        pid = int(run.tags.get(PID_TAG) or 0)
        return run, (pid or None)

    def terminate(self, run_id: str) -> bool:
        run, pid = self._worker(run_id)
        if run is None or run.is_finished:
            return False
        if pid is None:  # launched by Dagster's own launcher (before this one was configured)
            return super().terminate(run_id)
        self._instance.report_run_canceling(run)
        try:
            # what Ctrl-C does to `dagster api execute_run`: the run stops and records itself canceled
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        _run, pid = self._worker(run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run worker pid on this host")
        with self._lock:
            proc = self._children.get(run.run_id)
        if proc is not None:
            if proc.is_alive():
                return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
            failed = proc.exitcode not in (0, None)
            status = WorkerStatus.FAILED if failed else WorkerStatus.SUCCESS
            return CheckRunHealthResult(status, f"run worker {pid} exited with {proc.exitcode}", run_worker_id=str(pid))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            # not this process's child (the daemon restarted): gone, and the run never finished
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker {pid} is gone", run_worker_id=str(pid))
        except PermissionError:
            pass
        return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))

    def dispose(self) -> None:
        self._reap()
