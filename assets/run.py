"""Run the Dagster definitions in-process over what the inbox holds (the CLI's `run`).

Runs are recorded in the Dagster instance at DAGSTER_HOME (default `DATA_DIR/dagster_home`),
so `make ui` afterwards shows their history. This driver belongs to the Dagster side: the
library below it never imports Dagster (checked by `make lint`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.storage.defs_state.base import set_defs_state_storage

from assets.curated import CURATED_PARTITIONED_KEYS, PROJECT, WAREHOUSE_KEY
from assets.definitions import defs
from assets.ml import FEATURES_KEY, MODEL_KEY, RISK_KEY
from assets.partitions import CLIENT_PARTITIONS
from assets.refresh import dimension_marts, mart_dates
from assets.resources import LakehouseResource
from assets.run_tags import RANGE_END, RANGE_START
from delivery_lake.completeness import mostly_blocked, partition_statuses
from delivery_lake.config import Settings
from delivery_lake.contract import FACTS, TABLES
from delivery_lake.inbox import inbox_partitions, scan_changes
from delivery_lake.landing import releasable, unreconciled
from delivery_lake.ml.features import FACT, dates_reading
from delivery_lake.ml.features import TABLE as FEATURES_TABLE
from delivery_lake.ml.features import ZONE as FEATURES_ZONE
from delivery_lake.planning import date_blocks, plan_runs
from delivery_lake.quality import Quality, docs_deferred, preload_gx_in_background
from delivery_lake.sources.mapping import MappingError
from delivery_lake.sources.render import arrived_clients, render_arrived
from delivery_lake.storage import Lake, explain_storage_failure, write_file_atomic
from delivery_lake.transform import affected_dates

MAX_RELEASE_ROUNDS = 3


@dataclass
class RunOutcome:
    success: bool = True
    failure: str | None = None
    lines: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)


# What the embedded instance's dagster.yaml says when we create it: no telemetry (the CLI
# must not print a banner, and a lakehouse should not phone home by default), and Dagster's
# SQLite storage in DAGSTER_HOME with event-log connections kept open between events
# (assets/instance_storage.py: a run over many partitions writes thousands of events); and,
# for the runs `make ui`'s daemon launches, one run per trigger at a time, as under `make up`
# (infra/dagster.yaml): a drop's model refresh must start after its marts refresh has ended.
INSTANCE_MARKER = "# Written by delivery-lake for its embedded Dagster instance"


def instance_yaml(home: Path) -> str:
    """The instance file for DAGSTER_HOME `home`. Its storage folder is written out (Dagster's
    default is the folder the instance is loaded from, which a custom storage is not told); a
    file of ours naming another folder (the home moved) is rewritten by `dagster_instance`."""
    return (
        f"{INSTANCE_MARKER} (assets/run.py, dagster_instance).\n"
        "telemetry:\n"
        "  enabled: false\n"
        "storage:\n"
        "  custom:\n"
        "    module: assets.instance_storage\n"
        "    class: PooledSqliteStorage\n"
        "    config:\n"
        f"      base_dir: {json.dumps(str(home))}\n"
        "run_coordinator:\n"
        "  module: dagster.core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
        "  config:\n"
        "    tag_concurrency_limits:\n"
        "      - key: delivery_lake/trigger\n"
        "        value: {applyLimitPerUniqueValue: true}\n"
        "        limit: 1\n"
        "      - key: delivery_lake/drop\n"
        "        value: {applyLimitPerUniqueValue: true}\n"
        "        limit: 1\n"
        "run_launcher:\n"
        "  module: assets.run_launcher\n"
        "  class: WarmRunLauncher\n"
    )


# What earlier versions wrote; such a file is replaced (a file anyone else wrote or edited is
# left as it is).
EARLIER_INSTANCE_YAMLS = ("telemetry:\n  enabled: false\n",)
PID_TAG, HOST_TAG = "delivery_lake/pid", "delivery_lake/host"


@contextmanager
def _instance_lock(home: Path) -> Iterator[None]:
    """One process at a time creates the instance's storage: two first runs started together
    would otherwise both create the SQLite schema, and the second dies half-way through."""
    with open(home / ".instance.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def dagster_instance(settings: Settings) -> Any:
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(settings.data_dir / "dagster_home")
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    with _instance_lock(home):
        config = home / "dagster.yaml"
        wanted = instance_yaml(home.resolve())
        text = config.read_text() if config.exists() else None
        if text is None or text in EARLIER_INSTANCE_YAMLS or (text.startswith(INSTANCE_MARKER) and text != wanted):
            write_file_atomic(config, wanted.encode())
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # creates the storage's schema now, under the lock
    return instance


def fail_dead_runs(instance: Any) -> list[str]:
    """Runs this machine started in process whose process is gone (killed, crashed) stay
    STARTED forever in the instance; mark them failed so the UI tells the truth."""
    host = socket.gethostname()
    dead = []
    active = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=active, tags={HOST_TAG: host})):
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if pid and pid != os.getpid() and not _alive(pid):
            instance.report_run_failed(run, message=f"process {pid} ended before the run finished (killed or crashed)")
            dead.append(run.run_id)
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _execute(
    defs: Any, instance: Any, settings: Settings, keys: list[Any], tags: dict[str, str], outcome: RunOutcome, label: str
) -> bool:
    tags = {**tags, PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    # The CLI prints its own summary; step logs stay in the run history.
    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    lakehouse = {
        "data_dir": str(settings.data_dir),
        "lake_url": settings.lake_url,
        "inbox_dir": str(settings.inbox_dir),
        "warehouse_path": str(settings.warehouse_path),
    }
    # Definitions loading reads the "current" instance's state storage from a context
    # variable that only `with instance:` sets; point it at the instance of this run so a
    # disposed instance left there earlier in the process (tests, notebooks) is never used.
    result: Any
    with set_defs_state_storage(instance.defs_state_storage):
        if defs.executor is not None and defs.executor.name == "celery":
            # Steps run in other processes (the Celery workers), which load the job from its
            # module: a reconstructable job, and the lake's locations as run config (no secret
            # among them) so every worker lands into the lake this run names.
            result = dg.execute_job(
                _reconstructable_job(),
                instance=instance,
                run_config={**run_config, "resources": {"lakehouse": {"config": lakehouse}}},
                tags=tags,
                asset_selection=keys,
                raise_on_error=False,
            )
        else:
            resources = dict(defs.resources or {})
            resources["lakehouse"] = LakehouseResource(**lakehouse)
            result = dg.materialize(
                [*defs.assets, *(defs.asset_checks or [])],
                selection=dg.AssetSelection.assets(*keys),
                instance=instance,
                resources=resources,
                tags=tags,
                raise_on_error=False,
                run_config=run_config,
            )
    outcome.run_ids.append(result.run_id)
    if result.success:
        outcome.lines.append(f"ok   {label} (run {result.run_id[:8]})")
        return True
    failed = [_step_failure(ev, settings) for ev in result.all_events if ev.is_step_failure]
    outcome.success = False
    outcome.failure = f"{label} (run {result.run_id[:8]}): " + ("; ".join(failed) or "see the run in the Dagster UI")
    outcome.lines.append(f"FAIL {outcome.failure}")
    return False


def _reconstructable_job() -> Any:
    """Every asset and check of `assets.definitions.defs`, as a job other processes can load
    (`execute_job` selects the run's assets; their checks come with them)."""
    from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module("assets.definitions", "defs")
    return repo.get_reconstructable_job(IMPLICIT_ASSET_JOB_NAME)


def _step_failure(event: Any, settings: Settings) -> str:
    """One line for a failed step: the storage failure explained when that is what it was (the
    root cause sits at the end of Dagster's error chain, under its own wrapper), else the error's
    last line."""
    error = event.event_specific_data.error
    chain = []
    while error is not None:
        chain.append((error.cls_name or "", error.message or ""))
        error = error.cause or error.context
    explained = explain_storage_failure(reversed(chain), settings)
    last = chain[0][1].strip().splitlines()[-1] if chain and chain[0][1].strip() else ""
    return f"{event.step_key}: {explained or last}"


def _land_facts(
    defs: Any,
    instance: Any,
    settings: Settings,
    lake: Lake,
    facts: dict[str, dict[str, set[str]]],
    clients: list[str],
    outcome: RunOutcome,
    trigger: str,
) -> bool:
    for plan in plan_runs(facts, clients, inbox_partitions(lake, settings.inbox_dir)):
        tags = {
            RANGE_START: str(dg.MultiPartitionKey({"date": plan.first_date, "client": plan.first_client})),
            RANGE_END: str(dg.MultiPartitionKey({"date": plan.last_date, "client": plan.last_client})),
            "delivery_lake/trigger": trigger,
        }
        label = (
            f"{', '.join(plan.tables)} {plan.first_date}..{plan.last_date} x {plan.first_client}..{plan.last_client}"
        )
        if trigger != "cli":
            label = f"{trigger}: {label}"
        keys = [dg.AssetKey(["raw", t]) for t in plan.tables]
        if not _execute(defs, instance, settings, keys, tags, outcome, label):
            return False
    return True


def _run_curated(defs: Any, instance: Any, settings: Settings, lake: Lake, changes: Any, outcome: RunOutcome) -> bool:
    """After the raw runs: the curated dates those partitions feed, then dimensions and the warehouse.

    Gating is data-level (the runner never reads blocked raw partitions), so one run per
    block of consecutive dates is safe whatever the check results of the raw run were.
    """

    changed: dict[str, Iterable[str]] = {t: list(by_date) for t, by_date in changes.facts.items()}
    dates, existing = mart_dates(lake, changed)
    # Dates with no raw data and no mart partition between two blocks are bridged (nothing is
    # built there; see planning.date_blocks).
    occupied = existing | {d for k in CURATED_PARTITIONED_KEYS for d in lake.list_dates("curated", k.path[-1])}
    for first, last in date_blocks(dates, occupied):
        tags = {RANGE_START: first, RANGE_END: last, "delivery_lake/trigger": "cli"}
        if not _execute(defs, instance, settings, CURATED_PARTITIONED_KEYS, tags, outcome, f"curated {first}..{last}"):
            return False
    dims = dimension_marts(lake, changes.dimensions)
    label = "warehouse" + (f" + {', '.join(k.path[-1] for k in dims)}" if dims else "")
    return _execute(defs, instance, settings, [*dims, WAREHOUSE_KEY], {"delivery_lake/trigger": "cli"}, outcome, label)


def _run_ml(defs: Any, instance: Any, settings: Settings, lake: Lake, changes: Any, outcome: RunOutcome) -> bool:
    """After the curated layer: features of the dates it rebuilt (plus the days whose driver
    history reads them), then train + register (the asset skips when no new validated data)
    and score the latest validated day with the champion."""

    changed: dict[str, Iterable[str]] = {t: list(by_date) for t, by_date in changes.facts.items()}
    built = set(lake.list_dates("curated", FACT))
    dates = dates_reading(lake, affected_dates(PROJECT, changed, built))
    occupied = built | set(lake.list_dates(FEATURES_ZONE, FEATURES_TABLE))
    for first, last in date_blocks(dates, occupied):
        tags = {RANGE_START: first, RANGE_END: last, "delivery_lake/trigger": "cli"}
        if not _execute(defs, instance, settings, [FEATURES_KEY], tags, outcome, f"features {first}..{last}"):
            return False
    return _execute(
        defs,
        instance,
        settings,
        [MODEL_KEY, RISK_KEY, WAREHOUSE_KEY],
        {"delivery_lake/trigger": "cli"},
        outcome,
        "delay model + risk scores + warehouse",
    )


def run_inbox(settings: Settings, full: bool = True, land_only: bool = False) -> RunOutcome:
    """Land every partition found in the inbox (or only what changed since the last `run`), then
    rebuild the curated dates those partitions feed and refresh the warehouse, then the ML
    features, the delay model (retrained only on new validated data) and the risk scores.

    `land_only`: stop once every file read is accounted for (landing, its checks, the release
    rounds); the inbox cursor is not moved, so the next `run` still builds what the landing feeds.

    The Data Docs of every check the runs make are built once, when the last run has ended."""
    with docs_deferred(Lake.from_settings(settings), settings):
        return _run_inbox(settings, full, land_only)


def _run_inbox(settings: Settings, full: bool, land_only: bool = False) -> RunOutcome:
    instance = dagster_instance(settings)
    lake = Lake.from_settings(settings)
    outcome = RunOutcome()
    dead = fail_dead_runs(instance)
    if dead:
        outcome.lines.append(
            f"marked {len(dead)} run(s) failed whose process had died: {', '.join(r[:8] for r in dead)}"
        )
    # Foreign exports (INBOX_DIR/sources/<name>/) become contract-shaped feed files first.
    try:
        rendered = render_arrived(settings.inbox_dir, settings.duckdb_memory_limit)
    except MappingError as exc:
        outcome.success = False
        outcome.failure = "source mapping: " + " | ".join(exc.problems)
        return outcome
    for written in rendered:
        if written.changed:
            outcome.lines.append(
                f"rendered {written.feed} from {written.foreign_file or 'the mapping'}: {written.rows_rendered:,} rows"
            )
    cursor_path = lake.meta_path("cli_cursor.json")
    cursor = None if full else lake.read_json(cursor_path, default={})
    changes = scan_changes(lake, settings.inbox_dir, cursor)
    if not changes.empty and settings.transform_engine != "spark":
        # the checks import GX (~3 s): on a thread, while the landing runs (not beside Spark,
        # whose modules are held back while GX imports)
        preload_gx_in_background()
    changed_paths = [p for p, fp in changes.cursor.items() if (cursor or {}).get(p) != fp]
    for err in changes.errors:
        outcome.lines.append(f"SKIP {err}")
    if changes.empty:
        if changes.errors:  # files arrived, and every one of them was refused
            outcome.success = False
            outcome.failure = f"{len(changes.errors)} file(s) could not be landed: " + " | ".join(changes.errors)
            return outcome
        outcome.lines.append(f"nothing to do: no {'new ' if not full else ''}files in {settings.inbox_dir}")
        return outcome

    if changes.dimensions:
        keys = [dg.AssetKey(["raw", d]) for d in changes.dimensions]
        if not _execute(
            defs,
            instance,
            settings,
            keys,
            {"delivery_lake/trigger": "cli"},
            outcome,
            "dimensions: " + ", ".join(changes.dimensions),
        ):
            return outcome
    clients = list(instance.get_dynamic_partitions(CLIENT_PARTITIONS.name or "client"))
    if not _land_facts(defs, instance, settings, lake, changes.facts, clients, outcome, "cli"):
        return outcome
    # Rows that waited for parents which have now landed (or whose grace period ran out) are
    # landed again by their partitions; each round can only shrink what waits, so it stops.
    for _ in range(MAX_RELEASE_ROUNDS):
        released = releasable(lake, settings)
        if not released:
            break
        outcome.lines.append("release: " + ", ".join(f"{t} {len(v)} date(s)" for t, v in released.items()))
        if not _land_facts(defs, instance, settings, lake, released, clients, outcome, "release"):
            return outcome
        for t, by_date in released.items():
            for d, cs in by_date.items():
                changes.facts.setdefault(t, {}).setdefault(d, set()).update(cs)
    # A verdict computed before a partition or a parent it checked against changed is stale:
    # recomputed here, before the curated layer reads the partition.
    for table, results in Quality(lake, settings).revalidate_stale([t.name for t in FACTS]).items():
        outcome.lines.append(
            f"revalidated {table}: {len(results)} partition(s) whose data or parents changed since their check"
        )
        for r in results:
            if r.date and r.client:
                changes.facts.setdefault(table, {}).setdefault(r.date, set()).add(r.client)
    # Every row of every file this run read must be accounted for: a file whose rows went
    # nowhere (a date no run was planned for, a failure that left no manifest) fails the run.
    bad = [
        line
        for table in TABLES.values()
        for line in unreconciled(
            lake, settings.inbox_dir, table, [p for p in changed_paths if Path(p).parent.name == table.name]
        )
    ]
    if bad:
        outcome.success = False
        outcome.failure = f"{len(bad)} file(s) do not reconcile: " + " | ".join(bad)
        outcome.lines += [f"FAIL {line}" for line in bad]
        return outcome
    if land_only:
        return outcome
    if not _run_curated(defs, instance, settings, lake, changes, outcome):
        return outcome
    if not _run_ml(defs, instance, settings, lake, changes, outcome):
        return outcome
    lake.write_json(cursor_path, changes.cursor)
    source_clients = arrived_clients(settings.inbox_dir)
    failing = mostly_blocked(partition_statuses(lake), source_clients) if source_clients else []
    if failing:
        outcome.success = False
        outcome.failure = "a source's data mostly fails the quality gate: " + " | ".join(
            f"source {source_clients[client]} (client {client}): {why}" for client, why in failing
        )
        return outcome
    if changes.errors:
        outcome.success = False
        outcome.failure = f"{len(changes.errors)} file(s) could not be landed: " + " | ".join(changes.errors)
    return outcome
