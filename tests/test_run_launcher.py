"""assets/run_launcher.py: runs forked from a preloaded fork server, as `make up`'s daemon launches them."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.launcher.base import WorkerStatus
from dagster._core.test_utils import in_process_test_workspace, poll_for_finished_run
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from assets.run_launcher import HOST_TAG, PID_TAG, WarmRunLauncher

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = {
    "module": "assets.run_launcher",
    "class": "WarmRunLauncher",
    # one light module the test jobs never import: seen in a run only if the fork server loaded it
    "config": {"preload_modules": ["dagster", "sqlglot"]},
}


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[dg.DagsterInstance, object]]:
    with dg.instance_for_test(overrides={"run_launcher": LAUNCHER}) as instance:
        origin = LoadableTargetOrigin(module_name="tests.launcher_defs", attribute="defs", working_directory=str(ROOT))
        with in_process_test_workspace(instance, origin) as workspace:
            yield instance, workspace


def _launch(instance: dg.DagsterInstance, workspace, job: str, config: dict) -> str:
    location = workspace.code_locations[0]
    remote_job = location.get_repository("__repository__").get_full_job(job)
    from tests import launcher_defs

    run = instance.create_run_for_job(
        job_def=getattr(launcher_defs, job),
        run_config={"ops": config},
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace)
    return run.run_id


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_a_run_forks_from_the_preloaded_server_and_succeeds(env, tmp_path: Path) -> None:
    instance, workspace = env
    assert isinstance(instance.run_launcher, WarmRunLauncher)
    out = tmp_path / "seen.json"
    run_id = _launch(instance, workspace, "report_job", {"report": {"config": {"out": str(out)}}})
    run = poll_for_finished_run(instance, run_id, timeout=60)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    seen = json.loads(out.read_text())
    # its own process, recorded on the run, which had the fork server's modules before its code ran
    assert seen["run_id"] == run_id and seen["pid"] != os.getpid()
    assert run.tags[PID_TAG] == str(seen["pid"]) and run.tags[HOST_TAG]
    assert seen["sqlglot_preloaded"] is True
    # a second run is another process from the same server
    again = tmp_path / "again.json"
    second = _launch(instance, workspace, "report_job", {"report": {"config": {"out": str(again)}}})
    assert poll_for_finished_run(instance, second, timeout=60).status == dg.DagsterRunStatus.SUCCESS
    assert json.loads(again.read_text())["pid"] not in (seen["pid"], os.getpid())


def test_terminate_interrupts_the_run_which_ends_canceled(env, tmp_path: Path) -> None:
    instance, workspace = env
    started = tmp_path / "started"
    run_id = _launch(instance, workspace, "wait_job", {"wait": {"config": {"started": str(started)}}})
    _wait_for(started)
    assert instance.run_launcher.check_run_worker_health(instance.get_run_by_id(run_id)).status == WorkerStatus.RUNNING
    # as the webserver's Terminate button does: a launcher of another process, found by the pid tag
    other = WarmRunLauncher()
    other.register_instance(instance)
    assert other.terminate(run_id) is True
    run = poll_for_finished_run(instance, run_id, timeout=60)
    assert run.status == dg.DagsterRunStatus.CANCELED


def test_a_killed_run_worker_is_reported_failed(env, tmp_path: Path) -> None:
    instance, workspace = env
    started = tmp_path / "started"
    run_id = _launch(instance, workspace, "wait_job", {"wait": {"config": {"started": str(started)}}})
    _wait_for(started)
    pid = int(started.read_text())
    os.kill(pid, signal.SIGKILL)
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.STARTED  # nobody recorded its end
    other = WarmRunLauncher()  # a restarted daemon: the worker is not its child
    other.register_instance(instance)
    deadline = time.monotonic() + 30
    while True:
        launcher_view = instance.run_launcher.check_run_worker_health(run)
        other_view = other.check_run_worker_health(run)
        if launcher_view.status == other_view.status == WorkerStatus.FAILED or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert launcher_view.status == WorkerStatus.FAILED and "-9" in (launcher_view.msg or "")
    assert other_view.status == WorkerStatus.FAILED and str(pid) in (other_view.msg or "")
