"""Landing and its checks on two Celery workers (DAGSTER_EXECUTOR=celery, assets/workers.py) against
the machine's Redis: the lake they land equals the one a single process lands, and a worker
SIGKILLed in the middle of a landing step is replaced without loss or duplicates.

Real everything: Redis on 127.0.0.1:6379 (a database of these tests' own, and a key prefix per
test, deleted afterwards), two `celery worker` processes started as infra/workers.py starts
them, `delivery-lake run --land-only` as the orchestrator, a SQLite Dagster instance in a
temporary DAGSTER_HOME that every process shares.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from delivery_lake.claims import Claims
from delivery_lake.config import Settings
from infra.processes import Service, find_executable
from infra.workers import start_worker, wait_ready

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# Database 14: nothing else of the project uses it; each test's keys carry its own prefix too.
BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/14"
# What legitimately differs between two landings of the same files: when they happened.
VOLATILE = {
    "_meta/landing/": {"landed_at"},
    "_meta/quality/": {"checked_at", "seconds", "docs_url"},  # docs_url names the run's DATA_DIR
}


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_inbox(tmp_path_factory: pytest.TempPathFactory, dirty_export: Path) -> Path:
    """One inbox every landing of this module reads: manifests name source files by path, and
    file ranks come from modification times, so the runs compared must read the same files."""
    dest = tmp_path_factory.mktemp("workers") / "inbox"
    shutil.copytree(dirty_export, dest)
    return dest


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, shared_inbox: Path) -> dict[str, Any]:
    """The state one process lands (`delivery-lake run --land-only`, the default executor)."""
    import dagster as dg

    import assets.run as orch

    root = tmp_path_factory.mktemp("reference")
    settings = Settings.from_env(data_dir=root / "data", lake_url=str(root / "lake"), inbox_dir=shared_inbox)
    instance = dg.DagsterInstance.ephemeral()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(orch, "dagster_instance", lambda _settings: instance)
        outcome = orch.run_inbox(settings, land_only=True)
    assert outcome.success, outcome.failure
    return lake_state(root / "lake")


@pytest.fixture()
def celery_env(tmp_path: Path, shared_inbox: Path) -> Iterator[dict[str, str]]:
    """The environment of the orchestrator and the workers; the test's Redis keys go afterwards."""
    redis = pytest.importorskip("redis")
    conn = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=14, socket_connect_timeout=1, socket_timeout=5)
    try:
        conn.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({exc}): `make test` starts it (infra/test-prereqs.sh)",
            pytrace=False,
        )
    prefix = f"delivery_lake:test:{uuid.uuid4().hex}:"
    env = {
        **os.environ,
        "DAGSTER_EXECUTOR": "celery",
        "CELERY_BROKER_URL": BROKER,
        "CELERY_KEY_PREFIX": prefix,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "DATA_DIR": str(tmp_path / "data"),
        "LAKE_URL": str(tmp_path / "lake"),
        "INBOX_DIR": str(shared_inbox),
    }
    try:
        yield env
    finally:
        for key in conn.scan_iter(match=prefix + "*"):
            conn.delete(key)
        conn.close()


def _start_workers(env: dict[str, str], log_dir: Path, count: int = 2) -> list[Service]:
    workers = [start_worker(f"w{i}", env, log_dir) for i in range(1, count + 1)]
    try:
        wait_ready(workers)
    except BaseException:
        for w in workers:
            w.stop()
        raise
    return workers


def _land(env: dict[str, str]) -> subprocess.Popen:
    cli = find_executable("delivery-lake")
    assert cli, "delivery-lake is not installed next to this interpreter (make install)"
    return subprocess.Popen(
        [cli, "run", "--land-only"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


# ---- what is compared ------------------------------------------------------------------------------
def lake_state(lake: Path) -> dict[str, Any]:
    """Every object of the lake by path: Parquet by digest (quarantine by its rows without their
    arrival stamp), manifests and verdicts by content without their timestamps. Temporary files
    a killed writer left (`*.tmp-*`, never read: storage.py) and free claim folders are skipped."""
    out: dict[str, Any] = {}
    for p in sorted(lake.rglob("*")):
        rel = p.relative_to(lake).as_posix()
        if not p.is_file() or ".tmp-" in p.name:
            continue
        if rel.startswith("quarantine/"):
            table = pq.read_table(p)
            out[rel] = table.drop_columns(["_landed_at"]).to_pylist() if "_landed_at" in table.column_names else []
        elif p.suffix == ".parquet":
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.suffix == ".json":
            doc = json.loads(p.read_text())
            drop = next((keys for prefix, keys in VOLATILE.items() if rel.startswith(prefix)), set())
            out[rel] = {k: v for k, v in doc.items() if k not in drop} if isinstance(doc, dict) else doc
        else:
            out[rel] = p.read_bytes()
    return out


def assert_same_lake(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want), "objects differ: " + str(sorted(set(got) ^ set(want))[:20])
    differing = [k for k in want if got[k] != want[k]]
    assert not differing, f"{len(differing)} object(s) differ, e.g. {differing[:10]}"


def _steps_by_worker(logs: list[Path]) -> dict[str, int]:
    return {p.stem: p.read_text(errors="replace").count("] succeeded in") for p in logs}


# ---- the settings (fast) -----------------------------------------------------------------------------
def test_the_executor_is_chosen_by_DAGSTER_EXECUTOR(monkeypatch: pytest.MonkeyPatch) -> None:
    from assets.executors import EXECUTOR, FORKSERVER_EXECUTOR, executor_from_env

    assert EXECUTOR is FORKSERVER_EXECUTOR  # what the definitions loaded here (no DAGSTER_EXECUTOR)
    for value in ("", "multiprocess"):
        monkeypatch.setenv("DAGSTER_EXECUTOR", value)
        assert executor_from_env() is FORKSERVER_EXECUTOR
    monkeypatch.setenv("DAGSTER_EXECUTOR", "celery")
    assert executor_from_env().name == "celery"
    monkeypatch.setenv("DAGSTER_EXECUTOR", "k8s")
    with pytest.raises(ValueError, match="DAGSTER_EXECUTOR='k8s': expected one of multiprocess, celery"):
        executor_from_env()


def test_celery_settings_come_from_the_environment_and_keep_the_broker_password_out_of_sight() -> None:
    from assets.workers import CeleryConfig, WorkerConfigError, celery_executor

    with pytest.raises(WorkerConfigError, match="CELERY_BROKER_URL"):
        CeleryConfig.from_env({})
    secret = "s3cret-" + uuid.uuid4().hex
    config = CeleryConfig.from_env(
        {
            "CELERY_BROKER_URL": f"redis://:{secret}@127.0.0.1:6379/3",
            "CELERY_KEY_PREFIX": "dl:",
            "CELERY_VISIBILITY_TIMEOUT": "60",
        }
    )
    assert config.backend_url == config.broker_url  # results go to the broker unless told otherwise
    assert secret not in repr(config)
    source = config.config_source()
    assert source["task_acks_late"] and source["task_reject_on_worker_lost"]
    assert source["worker_prefetch_multiplier"] == 1
    transport = source["broker_transport_options"]
    assert transport["visibility_timeout"] == 60 and transport["global_keyprefix"] == "dl:"
    assert transport["unacked_restore_interval"] == 10 and transport["unacked_restore_throttle"] == 1
    assert source["result_backend_transport_options"] == {"global_keyprefix": "dl:"}
    assert secret not in json.dumps(source)
    # The executor takes no config: nothing of the broker reaches run config or the UI.
    assert celery_executor.config_schema.as_field().config_type.fields == {}
    with pytest.raises(WorkerConfigError, match="whole number"):
        CeleryConfig.from_env({"CELERY_BROKER_URL": "redis://x", "CELERY_VISIBILITY_TIMEOUT": "soon"})


# ---- on workers ---------------------------------------------------------------------------------------
@pytest.mark.slow  # starts workers: `make test`, not the fast tier (the settings tests above are in it)
@pytest.mark.workers
def test_two_workers_land_the_same_lake_as_one_process(
    celery_env: dict[str, str], reference: dict[str, Any], tmp_path: Path
) -> None:
    workers = _start_workers(celery_env, tmp_path / "logs")
    try:
        started = time.monotonic()
        proc = _land(celery_env)
        out, _ = proc.communicate(timeout=300)
        seconds = time.monotonic() - started
    finally:
        for w in workers:
            w.stop()
    assert proc.returncode == 0, out[-3000:]
    assert "customer_feedback, deliveries, orders 2026-01-05..2026-01-09" in out, out[-3000:]
    # Both workers took steps (14 of them: 4 dimensions, 3 facts and their 7 checks).
    done = _steps_by_worker([w.log_path for w in workers])
    assert sum(done.values()) == 14 and all(n > 0 for n in done.values()), done
    lake = Path(celery_env["LAKE_URL"])
    assert_same_lake(lake_state(lake), reference)
    # Not vacuous: every date x client of each fact landed rows, checked and vouched for.
    for table in ("orders", "deliveries", "customer_feedback"):
        assert len(list((lake / "raw" / table).glob("date=*/client=C*/data.parquet"))) == 20, table
        assert len(list((lake / "_meta" / "quality" / table).glob("date=*/client=C*.json"))) == 20, table
    assert not [p for p in (lake / "_meta" / "claims").rglob("*") if p.is_file()]  # every claim let go
    print(f"two-worker landing: {seconds:.1f} s, steps per worker {done}")


def _step_workers(home: Path, step_key: str, settings: Settings, underway: bool = False) -> list[str]:
    """Names of the workers that started `step_key`, in order, from the engine events dagster-celery
    records ("Executing steps ... in celery worker"); `underway`: in runs still going only."""
    import dagster as dg

    from assets.run import dagster_instance

    if not (home / "history" / "runs.db").exists():
        return []
    instance = dagster_instance(settings)
    statuses = [dg.DagsterRunStatus.STARTED] if underway else None
    names = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses) if statuses else None):
        for r in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
            event = r.event_log_entry.dagster_event
            if event is not None and event.step_key == step_key:
                worker = event.event_specific_data.metadata.get("Celery worker")
                if worker is not None:
                    names.append(str(worker.value).split("@")[0])
    return names


@pytest.mark.slow  # starts workers: `make test`, not the fast tier (the settings tests above are in it)
@pytest.mark.workers
def test_a_worker_killed_mid_step_is_replaced_without_loss_or_duplicates(
    celery_env: dict[str, str], reference: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    from assets.run import dagster_instance

    # The dead worker's task comes back to the queue this long after it was taken (production:
    # longer than any step, see assets/workers.py); the survivor looks for it every 2 s.
    env = {**celery_env, "CELERY_VISIBILITY_TIMEOUT": "10"}
    home = Path(env["DAGSTER_HOME"])
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    settings = Settings.from_env(
        data_dir=Path(env["DATA_DIR"]), lake_url=env["LAKE_URL"], inbox_dir=Path(env["INBOX_DIR"])
    )
    lake = Path(env["LAKE_URL"])
    manifests = lake / "_meta" / "landing" / "orders"
    workers = _start_workers(env, tmp_path / "logs")
    by_name = {w.name: w for w in workers}
    # The test claims one orders partition first, as another writer would: the worker landing
    # orders publishes the others and then waits for this one, so it is certainly killed in the
    # middle of its step with part of the partitions published.
    held = ("landing", "orders", "2026-01-07", "C002")
    victim, published_at_kill = None, 0
    with Claims(lake / "_meta" / "claims").hold(*held):
        proc = _land(env)
        try:
            deadline = time.monotonic() + 180
            while victim is None:
                assert proc.poll() is None, (
                    "the run ended before a worker was killed:\n" + proc.communicate()[0][-3000:]
                )
                assert time.monotonic() < deadline, "the orders step published nothing within 180 s"
                running = _step_workers(home, "raw__orders", settings, underway=True)
                published_at_kill = len(list(manifests.glob("date=*/client=*.json"))) if manifests.is_dir() else 0
                if running and published_at_kill:
                    victim = by_name[running[0]]
                    os.killpg(victim.pid, signal.SIGKILL)
                    victim.proc.wait(timeout=30)
                time.sleep(0.05)
        except BaseException:
            proc.kill()
            for w in workers:
                w.stop()
            raise
    # The claim is free again; the survivor takes the dead worker's task once it is overdue.
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:
            w.stop()
    assert proc.returncode == 0, out[-3000:]
    survivor = next(w for w in workers if w is not victim)
    # The step ran twice: on the worker killed in it, then again on the other one.
    assert _step_workers(home, "raw__orders", settings) == [victim.name, survivor.name]
    # No duplicates in the run's record either: each partition of each fact materialized once.
    instance = dagster_instance(settings)
    [run] = [r for r in instance.get_runs() if "dagster/asset_partition_range_start" in r.tags]  # the facts' run
    materialized = [
        (r.event_log_entry.dagster_event.asset_key.to_user_string(), r.event_log_entry.dagster_event.partition)
        for r in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    ]
    assert len(materialized) == len(set(materialized)) == 3 * 5 * 4, len(materialized)
    # No loss: the lake is the one a single process lands, byte for byte where it must be.
    assert 0 < published_at_kill < len(list(manifests.glob("date=*/client=*.json")))
    assert_same_lake(lake_state(lake), reference)
    assert not [p for p in (lake / "_meta" / "claims").rglob("*") if p.is_file()]
