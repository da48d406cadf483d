"""The inbox sensor: newly arrived files become runs for exactly the partitions they touch."""

import hashlib
import json
import time

import dagster as dg

from assets.executors import EXECUTOR, FORKSERVER_EXECUTOR
from assets.partitions import CLIENT_PARTITIONS
from assets.raw import RAW_DIMENSION_KEYS, RAW_FACT_KEYS
from assets.refresh import REFRESH_JOB, Landed, plan_refresh
from assets.refresh import run_requests as refresh_run_requests
from assets.resources import LakehouseResource
from assets.run_tags import (
    DROP_LANDING_PRIORITY,
    DROP_TAG,
    PRIORITY_TAG,
    RANGE_END,
    RANGE_START,
    REFRESH_TRIGGER,
    TRIGGER_TAG,
    in_flight,
    new_data_priority,
)
from delivery_lake.contract import TABLES
from delivery_lake.inbox import InboxChanges, inbox_partitions, scan_changes
from delivery_lake.landing import releasable
from delivery_lake.planning import Occupied, RunPlan, plan_runs
from delivery_lake.sources.mapping import MappingError
from delivery_lake.sources.render import render_arrived

# The landing runs of the inbox sensor. A drop or a release (a day, a few partitions) lands in
# the run's own process: its steps share the imported project, the GX context and the lake's
# listings, where forked steps each start cold (measured under `make up`, one day x 8 clients:
# 21 s as a multiprocess run). Larger runs (a history, a client's backlog) keep a process per
# step, two at a time. Under DAGSTER_EXECUTOR=celery every landing goes to the workers.
LAND_JOB = dg.define_asset_job(
    "land", selection=dg.AssetSelection.assets(*RAW_DIMENSION_KEYS, *RAW_FACT_KEYS), description="Landing runs."
)
LAND_SMALL_JOB = dg.define_asset_job(
    "land_small",
    selection=dg.AssetSelection.assets(*RAW_DIMENSION_KEYS, *RAW_FACT_KEYS),
    executor_def=dg.in_process_executor,
    description="Landing runs of a few partitions (a drop, a release), their steps in the run's own process.",
)
SMALL_RUN_PARTITIONS = 64


def landing_job(plan: RunPlan | None, client_order: list[str]) -> str:
    """The job of a landing run: `land_small` up to SMALL_RUN_PARTITIONS (table, date, client)
    partitions when steps would otherwise fork on this machine, else `land`."""
    size = 0 if plan is None else len(plan.tables) * len(plan.partition_keys(client_order))
    return LAND_SMALL_JOB.name if EXECUTOR is FORKSERVER_EXECUTOR and size <= SMALL_RUN_PARTITIONS else LAND_JOB.name


def _digest(changes: InboxChanges) -> str:
    """The files' fingerprints, short: what names a drop's runs."""
    return hashlib.sha1(json.dumps(changes.cursor, sort_keys=True).encode()).hexdigest()[:12]


def _key(date: str, client: str) -> str:
    return str(dg.MultiPartitionKey({"date": date, "client": client}))


def run_requests_for(
    changes: InboxChanges,
    client_order: list[str],
    reason: str,
    occupied: Occupied | None = None,
    choose_job: bool = False,
) -> list[dg.RunRequest]:
    """As few runs as cover the new partitions (`plan_runs`: with `occupied`, the inbox's pairs
    with rows, a drop's tables share one run over their bounding rectangle when it reaches no
    partition with data that was not asked for); changed dimensions ride along in each run.
    `choose_job`: name each run's job (`landing_job`); else the caller's target decides."""
    dims = [dg.AssetKey(["raw", d]) for d in changes.dimensions]
    digest = _digest(changes)
    requests: list[dg.RunRequest] = []
    for plan in plan_runs(changes.facts, client_order, occupied):
        requests.append(
            dg.RunRequest(
                run_key=f"{reason}:{digest}:{plan.first_date}:{plan.last_date}:{plan.first_client}:{plan.last_client}:{','.join(plan.tables)}",
                job_name=landing_job(plan, client_order) if choose_job else None,
                asset_selection=dims + [dg.AssetKey(["raw", t]) for t in plan.tables],
                tags={
                    RANGE_START: _key(plan.first_date, plan.first_client),
                    RANGE_END: _key(plan.last_date, plan.last_client),
                    TRIGGER_TAG: reason,
                    **new_data_priority({reason}),
                },
            )
        )
    if dims and not requests:
        requests.append(
            dg.RunRequest(
                run_key=f"{reason}:{digest}:dims",
                job_name=landing_job(None, client_order) if choose_job else None,
                asset_selection=dims,
                tags={TRIGGER_TAG: reason, **new_data_priority({reason})},
            )
        )
    return requests


def with_drop_refresh(
    lakehouse: LakehouseResource, changes: InboxChanges, landings: list[dg.RunRequest]
) -> list[dg.RunRequest]:
    """A drop's landing runs, tagged as the drop's and put first in the queue, then the drop's
    refresh runs: one run of a drop at a time, so the refresh starts when the landing has ended
    (`run_tags.DROP_TAG`). The refresh is planned from the files' dates as if landed; a date the
    landing quarantines whole is skipped by the models (nothing to build), and `refresh_sensor`
    refreshes a drop's landing itself when this refresh did not follow it."""
    if not landings:
        return landings
    drop = _digest(changes)
    facts = {t: {d: set(c) for d, c in by_date.items()} for t, by_date in changes.facts.items()}
    landed = Landed(facts=facts, dimensions=set(changes.dimensions), triggers={"inbox"})
    arriving = {d for by_date in changes.facts.values() for d in by_date}
    refreshes = plan_refresh(lakehouse.lake(), landed, arriving)
    if not refreshes:
        return landings
    tagged = [
        r.with_replaced_attrs(tags={**r.tags, DROP_TAG: drop, PRIORITY_TAG: DROP_LANDING_PRIORITY}) for r in landings
    ]
    return [*tagged, *refresh_run_requests(refreshes, landed, 0, 0, drop=drop)]


def release_requests(lakehouse: LakehouseResource, client_order: list[str]) -> list[dg.RunRequest]:
    """Runs that re-land the child partitions whose pending rows a landing would now decide
    differently. The run key is the set itself: a run that could not release them is not
    requested again and again, and a new arrival changes the set."""
    wanted = releasable(lakehouse.lake(), lakehouse.settings())
    if not wanted:
        return []
    digest = hashlib.sha1(
        json.dumps({t: {d: sorted(c) for d, c in v.items()} for t, v in wanted.items()}, sort_keys=True).encode()
    ).hexdigest()[:12]
    requests = []
    for plan in plan_runs(wanted, client_order, inbox_partitions(lakehouse.lake(), lakehouse.settings().inbox_dir)):
        requests.append(
            dg.RunRequest(
                run_key=f"release:{digest}:{plan.first_date}:{plan.last_date}:{plan.first_client}:{plan.last_client}:{','.join(plan.tables)}",
                job_name=landing_job(plan, client_order),
                asset_selection=[dg.AssetKey(["raw", t]) for t in plan.tables],
                tags={
                    RANGE_START: _key(plan.first_date, plan.first_client),
                    RANGE_END: _key(plan.last_date, plan.last_client),
                    TRIGGER_TAG: "release",
                },
            )
        )
    return requests


# Releases wait while one of these runs is in flight: a landing's partitions are half-published
# (pending rows are decided once it has ended), and a drop's refresh and model runs have the
# machine first (a release beside them slowed both on two cores; the release is about older dates).
RELEASE_WAITS_FOR = ("inbox", "release", REFRESH_TRIGGER)


# How long after a landing run ends its refresh may take to be requested (refresh_sensor runs
# every daemon loop, ~5 s): releases wait for it meanwhile. Bounded, for a landing that changed
# nothing has no refresh to wait for.
REFRESH_GRACE_S = 30.0


def refresh_pending(instance: dg.DagsterInstance, now: float) -> dg.DagsterRun | None:
    """A landing or release run that ended within REFRESH_GRACE_S with no refresh run created
    since: the refresh sensor has yet to request what follows it."""
    ended = [
        record
        for trigger in ("inbox", "release")
        for record in instance.get_run_records(
            filters=dg.RunsFilter(tags={TRIGGER_TAG: trigger}), limit=1, order_by="end_time"
        )
        # a drop's refresh is requested with its landing (with_drop_refresh)
        if record.end_time and now - record.end_time < REFRESH_GRACE_S and DROP_TAG not in record.dagster_run.tags
    ]
    if not ended:
        return None
    last = max(ended, key=lambda r: r.end_time or 0.0)
    refreshes = instance.get_run_records(filters=dg.RunsFilter(tags={TRIGGER_TAG: REFRESH_TRIGGER}), limit=1)
    if refreshes and refreshes[0].create_timestamp.timestamp() >= (last.end_time or 0.0):
        return None
    return last.dagster_run


@dg.sensor(
    name="inbox_sensor",
    description=(
        "Lands files as they arrive in INBOX_DIR: one run per exact rectangle of touched partitions. "
        "When nothing new arrived, re-lands child partitions whose pending rows' parents have landed."
    ),
    jobs=[LAND_JOB, LAND_SMALL_JOB, REFRESH_JOB],
    # Below the daemon's sensor loop (~5 s, measured): evaluated at every round of it, so a drop
    # waits for one round at most (with 5 s, rounds that came 4.99 s after a tick skipped it).
    minimum_interval_seconds=3,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def inbox_sensor(context: dg.SensorEvaluationContext, lakehouse: LakehouseResource) -> dg.SensorResult:
    settings = lakehouse.settings()
    cursor = json.loads(context.cursor) if context.cursor else {}
    try:
        # Foreign exports (INBOX_DIR/sources/<name>/) become feed files this scan then sees.
        render_arrived(settings.inbox_dir, settings.duckdb_memory_limit)
    except MappingError as exc:
        for problem in exc.problems:
            context.log.error(f"not rendered: {problem}")
    changes = scan_changes(lakehouse.lake(), settings.inbox_dir, cursor)
    if changes.empty:
        busy = in_flight(context.instance, RELEASE_WAITS_FOR)
        if busy:
            trigger = busy.tags.get(TRIGGER_TAG)
            return dg.SensorResult(
                skip_reason=f"{trigger} run {busy.run_id[:8]} is queued or running: releases wait for it"
            )
        ended = refresh_pending(context.instance, time.time())
        if ended:
            return dg.SensorResult(
                skip_reason=f"the refresh after run {ended.run_id[:8]} is not requested yet: releases wait for it"
            )
        released = release_requests(
            lakehouse, list(context.instance.get_dynamic_partitions(CLIENT_PARTITIONS.name or "client"))
        )
        if released:
            context.log.info(f"{len(released)} run(s) to land rows whose parents arrived (or whose grace period ended)")
            return dg.SensorResult(run_requests=released)
        reason = f"no new files in {settings.inbox_dir}"
        if changes.errors:
            reason = "files rejected: " + " | ".join(changes.errors)
        return dg.SensorResult(skip_reason=reason)
    known = list(context.instance.get_dynamic_partitions(CLIENT_PARTITIONS.name or "client"))
    for err in changes.errors:
        context.log.error(f"not landed: {err}")
    new_clients: list[str] = []
    if "clients" in changes.dimensions:
        # Register new clients now (same contract checks as the landing) so this tick's
        # fact runs can target their partitions.
        new_clients = [c for c in lakehouse.landing().valid_keys(TABLES["clients"]) if c not in known]
    # one run per drop: landing, its checks and (by automation) what it feeds follow as one unit
    occupied = inbox_partitions(lakehouse.lake(), settings.inbox_dir)
    requests = run_requests_for(changes, known + new_clients, "inbox", occupied, choose_job=True)
    try:
        requests = with_drop_refresh(lakehouse, changes, requests)
    except Exception as exc:  # the landing goes ahead; refresh_sensor refreshes it when it has ended
        context.log.warning(f"the drop's refresh was not planned with its landing: {exc!r}")
    context.log.info(f"{len(requests)} run(s) for {sum(len(v) for v in changes.facts.values())} fact date(s)")
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(changes.cursor, sort_keys=True),
        dynamic_partitions_requests=[CLIENT_PARTITIONS.build_add_request(new_clients)] if new_clients else [],
    )
