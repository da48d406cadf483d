"""The refresh sensor: what ended landing runs changed becomes the runs of everything downstream.

Why a sensor over the event log rather than automation conditions for the raw -> curated step:
the raw facts are partitioned by date x client and the marts by date, so Dagster's automation
builds a drop's marts, features, scores and warehouse in separate runs, one evaluation tick
apart (each tick evaluates the whole graph: ~15 s here, every 30 s). A drop then took 138-186 s
to reach the warehouse (docs/performance.md). This sensor reads the raw materializations
recorded since its cursor, once their runs have ended, and requests one run per block of dates
of the marts, the delivery features and the warehouse, then one of the delay model (which
retrains only on new validated data) and one of the risk scores and the warehouse, queued
behind them: the run list shows a landing's refresh as those runs, tagged with the landing
runs they follow. A date of a curated model materialized by hand (a run with no trigger tag) is
followed the same way, from that date. The curated models and the features have no automation
condition, so nothing is built twice.

A drop (new files in the inbox) does not wait for this sensor: the inbox sensor requests the
same runs with the drop's landing (`assets/sensors.py` with_drop_refresh), and the run queue starts
them when the landing has ended (one run of a drop at a time, `run_tags.DROP_TAG`); this sensor
waits while a drop's refresh is queued or running, passes over its landing once that refresh
(started after the landing ended) has succeeded, and refreshes any other.

The first tick reads the event log from its start: on an instance with history, that is one
refresh of every landed date (models whose inputs did not change are not rebuilt; the runner
says "up to date").

Gating is unchanged: the marts read only partitions that passed their gate (data-level), so a
blocked partition in a refreshed block holds back only itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from assets.curated import CURATED_PARTITIONED_KEYS, CURATED_UNPARTITIONED_KEYS, PROJECT, WAREHOUSE_KEY
from assets.ml import FEATURES_KEY, MODEL_KEY, RISK_KEY
from assets.partitions import FACT_PARTITIONS
from assets.raw import RAW_DIMENSION_KEYS, RAW_FACT_KEYS
from assets.resources import LakehouseResource
from assets.run_tags import (
    DROP_TAG,
    RANGE_END,
    RANGE_START,
    REFRESH_TRIGGER,
    TRIGGER_TAG,
    in_flight,
    new_data_priority,
)
from delivery_lake.contract import FACTS
from delivery_lake.ml.features import TABLE as FEATURES_TABLE
from delivery_lake.ml.features import ZONE as FEATURES_ZONE
from delivery_lake.ml.features import dates_reading
from delivery_lake.planning import date_blocks
from delivery_lake.storage import Lake
from delivery_lake.transform import affected_dates, held_dates

AFTER_RUNS_TAG = "delivery_lake/after_runs"
PART_TAG = "delivery_lake/refresh"  # "marts" (a block of dates), "model" or "scores"
# `delivery-lake run` builds what its own landing feeds, in the same process.
SELF_REFRESHING_TRIGGERS = {"cli"}
# Landing runs whose dates a refresh waits for while they are queued or running, at most this long
# after the oldest record it holds (assets/sensors.py requests them).
LANDING_TRIGGERS = ("inbox", "release")
HOLD_FOR_LANDINGS_S = 60.0
ENDED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
PAGE = 1000

REFRESH_KEYS = [
    *CURATED_PARTITIONED_KEYS,
    *CURATED_UNPARTITIONED_KEYS,
    FEATURES_KEY,
    MODEL_KEY,
    RISK_KEY,
    WAREHOUSE_KEY,
]
REFRESH_JOB = dg.define_asset_job(
    "refresh_after_landing",
    selection=dg.AssetSelection.assets(*REFRESH_KEYS),
    # Steps in the run's own process, which has imported the project already: a refresh is a
    # dozen steps of a few seconds whose work shares the lake's listings, the DuckDB and GX set-up.
    # Forked step processes each started cold, and the fork server's own start (importing the
    # project and GX again) took 5-19 s of a 49 s refresh on this 2-core machine (measured).
    executor_def=dg.in_process_executor,
    description=(
        "What landed runs feed, in one run per block of dates: marts and their checks, delivery features, the "
        "delay model (retrained only on new validated data), risk scores, warehouse. Requested by `refresh_sensor`."
    ),
)


@dataclass
class Landed:
    """What ended runs materialized: raw fact table -> date -> clients, raw dimensions, and dates
    of curated models materialized by hand."""

    facts: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    dimensions: set[str] = field(default_factory=set)
    curated_dates: set[str] = field(default_factory=set)  # of curated models materialized by hand
    runs: list[str] = field(default_factory=list)
    triggers: set[str] = field(default_factory=set)  # of those runs
    first_at: float | None = None  # when the oldest of these records was written (epoch seconds)

    @property
    def empty(self) -> bool:
        return not self.facts and not self.dimensions and not self.curated_dates


@dataclass(frozen=True)
class Refresh:
    """One run to request: the partitioned assets over first..last (None: no partitioned asset)."""

    keys: list[dg.AssetKey]
    first: str | None = None
    last: str | None = None


def mart_dates(
    lake: Lake, changed: dict[str, Iterable[str]], arriving: set[str] | None = None
) -> tuple[set[str], set[str]]:
    """(the dates of the partitioned models to rebuild when raw fact `table -> dates` changed,
    the dates that hold raw facts, or will once `arriving` has landed): what those dates feed
    (`affected_dates`) and, when any fact changed, the dates whose last build held cells back
    for a missing parent."""
    existing = {d for t in FACTS for d in lake.list_dates("raw", t.name)} | (arriving or set())
    dates = set(affected_dates(PROJECT, changed, existing)) if changed else set()
    if changed:
        dates |= set(held_dates(lake, PROJECT)) & existing
    return dates, existing


def dimension_marts(lake: Lake, dimensions: Iterable[str]) -> list[dg.AssetKey]:
    """The unpartitioned models to rebuild: those reading a raw dimension that changed, and
    those never built."""
    changed = set(dimensions)
    return [
        k
        for k in CURATED_UNPARTITIONED_KEYS
        if any(t in changed for _, t in PROJECT.inputs(k.path[-1])[1])
        or not lake.exists(lake.data_file("curated", k.path[-1]))
    ]


def plan_refresh(lake: Lake, landed: Landed, arriving: Iterable[str] = ()) -> list[Refresh]:
    """The runs that bring everything downstream of `landed` up to date, in the order they must
    run: one per block of dates (`planning.date_blocks`: empty dates between blocks are bridged),
    the marts and the features over the block, the dimension marts whose raw tables changed and
    the warehouse riding in the last; then, when facts changed, the model, the scores and the
    warehouse again (its scores table). `arriving`: dates a landing not yet run will hold (a
    drop's refresh is planned when its files are seen)."""
    changed: dict[str, Iterable[str]] = {t: list(by_date) for t, by_date in landed.facts.items()}
    if landed.curated_dates:
        # a model date rebuilt by hand: its readers from that date on, as if its inputs had landed
        changed = {t.name: {*changed.get(t.name, ()), *landed.curated_dates} for t in FACTS}
    marts, existing = mart_dates(lake, changed, set(arriving))
    features = dates_reading(lake, marts, to_be_built=marts) if marts else set()
    tail = [*dimension_marts(lake, landed.dimensions), WAREHOUSE_KEY]
    occupied = (
        existing
        | {d for k in CURATED_PARTITIONED_KEYS for d in lake.list_dates("curated", k.path[-1])}
        | set(lake.list_dates(FEATURES_ZONE, FEATURES_TABLE))
    )
    blocks = date_blocks(marts | features, occupied)
    if not blocks:
        return [Refresh(tail)] if landed.dimensions else []
    out = [Refresh([*CURATED_PARTITIONED_KEYS, FEATURES_KEY], first, last) for first, last in blocks]
    out[-1] = Refresh([*out[-1].keys, *tail], out[-1].first, out[-1].last)
    # Runs of their own, queued behind the others (one refresh run at a time, infra/dagster.yaml):
    # a model that does not retrain yields nothing, and Dagster skips every step after it in its
    # run, which must hold back neither the marts' warehouse refresh nor the scores of the new
    # features (scored by the champion, new or not).
    return [*out, Refresh([MODEL_KEY]), Refresh([RISK_KEY, WAREHOUSE_KEY])]


def landed_since(instance: dg.DagsterInstance, after: int) -> tuple[Landed, int]:
    """Raw materializations, and dates of curated models materialized by hand (a run with no
    trigger tag: the sensors', automation's and `delivery-lake run`'s runs carry one), recorded
    after storage id `after` whose runs have ended; and the storage id up to which every record
    is accounted for. A run still in progress holds the cursor before its first such record, so
    its partitions are planned once, when it has ended (also when it failed half-way)."""
    fetched: list[tuple[dg.AssetKey, dg.EventLogRecord]] = []
    for key in [*RAW_DIMENSION_KEYS, *RAW_FACT_KEYS, *CURATED_PARTITIONED_KEYS]:
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=PAGE, cursor=cursor, ascending=True
            )
            fetched += [(key, r) for r in page.records]
            if not page.has_more:
                break
            cursor = page.cursor
    if not fetched:
        return Landed(), after
    run_ids = sorted({r.run_id for _, r in fetched})
    run_records = {r.dagster_run.run_id: r for r in instance.get_run_records(filters=dg.RunsFilter(run_ids=run_ids))}
    runs = {run_id: r.dagster_run for run_id, r in run_records.items()}
    # A drop's landing whose refresh was requested with it is not refreshed again once that
    # refresh has succeeded; while it is queued or running, the landing counts as still open.
    drops = {run_id: drop_refresh_state(instance, r) for run_id, r in run_records.items()}
    covered = {run_id for run_id, state in drops.items() if state == "done"}

    def counts(key: dg.AssetKey, r: dg.EventLogRecord) -> bool:
        run = runs.get(r.run_id)
        if key.path[0] == "raw":
            return run is None or (
                run.tags.get(TRIGGER_TAG) not in SELF_REFRESHING_TRIGGERS and r.run_id not in covered
            )
        return run is not None and TRIGGER_TAG not in run.tags

    records = [(k, r) for k, r in fetched if counts(k, r)]
    # Runless events (reported from outside any run) and runs no longer stored count as ended.
    open_from = min(
        (
            r.storage_id
            for _, r in records
            if r.run_id in runs and (runs[r.run_id].status not in ENDED or drops[r.run_id] == "pending")
        ),
        default=None,
    )
    landed = Landed()
    for key, r in sorted(records, key=lambda kr: kr[1].storage_id):
        if open_from is not None and r.storage_id >= open_from:
            break
        if key.path[0] == "curated":
            landed.curated_dates.add(str(r.partition_key))
        elif r.partition_key is None:
            landed.dimensions.add(key.path[-1])
        else:
            dims = FACT_PARTITIONS.get_partition_key_from_str(r.partition_key).keys_by_dimension
            landed.facts.setdefault(key.path[-1], {}).setdefault(dims["date"], set()).add(dims["client"])
        if r.run_id in runs and r.run_id not in landed.runs:
            landed.runs.append(r.run_id)
            landed.triggers.add(runs[r.run_id].tags.get(TRIGGER_TAG) or "")
        landed.first_at = r.timestamp if landed.first_at is None else min(landed.first_at, r.timestamp)
    seen = [r.storage_id for _, r in fetched if open_from is None or r.storage_id < open_from]
    return landed, max(seen, default=after)


def run_requests(
    refreshes: list[Refresh], landed: Landed, cursor_from: int, cursor_to: int, drop: str | None = None
) -> list[dg.RunRequest]:
    """The refresh runs, tagged with what they follow: the landing runs, or (`drop`) the drop whose
    landing runs are requested with them and queued ahead of them."""
    after_runs = ",".join(r[:8] for r in landed.runs[:20]) + (",..." if len(landed.runs) > 20 else "")
    requests = []
    for i, refresh in enumerate(refreshes):
        tags = {
            TRIGGER_TAG: REFRESH_TRIGGER,
            PART_TAG: "model" if MODEL_KEY in refresh.keys else "scores" if RISK_KEY in refresh.keys else "marts",
            **new_data_priority(landed.triggers),
            **({DROP_TAG: drop} if drop else {AFTER_RUNS_TAG: after_runs}),
        }
        if refresh.first and refresh.last:
            tags |= {RANGE_START: refresh.first, RANGE_END: refresh.last}
        requests.append(
            dg.RunRequest(
                run_key=f"refresh:drop:{drop}:{i}" if drop else f"refresh:{cursor_from}:{cursor_to}:{i}",
                job_name=REFRESH_JOB.name if drop else None,
                asset_selection=refresh.keys,
                tags=tags,
            )
        )
    return requests


def drop_refresh_state(instance: dg.DagsterInstance, landing: dg.RunRecord) -> str | None:
    """Whether an ended landing run's refresh was requested with it (its drop's runs,
    assets/sensors.py) and read what it wrote: "done" when the drop's marts run, started after the
    landing ended, succeeded; "pending" while such a run is queued or running; None otherwise (no
    drop, or its refresh failed, was canceled or started before the landing ended, as for a
    retried landing): this sensor then refreshes the landing's dates itself."""
    drop = landing.dagster_run.tags.get(DROP_TAG)
    if not drop or landing.end_time is None:
        return None
    state = None
    for r in instance.get_run_records(filters=dg.RunsFilter(tags={DROP_TAG: drop, TRIGGER_TAG: REFRESH_TRIGGER})):
        if r.dagster_run.tags.get(PART_TAG) != "marts" or (
            r.start_time is not None and r.start_time < landing.end_time
        ):
            continue
        if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS:
            return "done"
        if r.dagster_run.status not in ENDED:
            state = "pending"
    return state


@dg.sensor(
    name="refresh_sensor",
    description=(
        "When landing runs have ended (inbox, release, nightly, by hand): one run per block of the dates they "
        "changed, of the marts, features, delay model, risk scores and warehouse (job refresh_after_landing)."
    ),
    job=REFRESH_JOB,
    # every round of the daemon's sensor loop (~5 s): a tick reads seven assets' new events
    minimum_interval_seconds=3,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def refresh_sensor(context: dg.SensorEvaluationContext, lakehouse: LakehouseResource) -> dg.SensorResult:
    after = int(context.cursor or 0)
    landed, upto = landed_since(context.instance, after)
    if landed.empty:
        return dg.SensorResult(skip_reason="no landing run has ended since the last refresh", cursor=str(upto))
    landing = in_flight(context.instance, LANDING_TRIGGERS)
    if landing is not None and time.time() - (landed.first_at or time.time()) < HOLD_FOR_LANDINGS_S:
        # Its dates join this refresh: releases come several at a time (one run per rectangle of
        # partitions), and a drop may wait in the queue behind them; one refresh after each
        # rebuilt the same date three times in a row (measured). Bounded, so a steady stream of
        # landings still gets its refreshes.
        return dg.SensorResult(
            skip_reason=f"landing run {landing.run_id[:8]} is queued or running: its dates join this refresh",
            cursor=str(after),
        )
    # Every refresh asks for its model run, and runs start in the order they were requested: a
    # model run already waiting starts before these marts and trains without their dates (a
    # drop's new day then waited for the retrain sensor: 261 s to a new model, measured). A
    # model run with nothing new to train on ends in ~1 s.
    refreshes = plan_refresh(lakehouse.lake(), landed)
    blocks = ", ".join(f"{r.first}..{r.last}" for r in refreshes if r.first)
    context.log.info(
        f"{len(refreshes)} refresh run(s) after {len(landed.runs)} landing run(s)" + (f": {blocks}" if blocks else "")
    )
    return dg.SensorResult(run_requests=run_requests(refreshes, landed, after, upto), cursor=str(upto))
