"""The tags the project's runs carry, and which runs are in flight: one place for the sensors
that wait for one another's runs."""

import dagster as dg

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
# What requested a run: inbox, release, nightly-<date>, cli, refresh, automation, retrain_sensor.
TRIGGER_TAG = "delivery_lake/trigger"
# `refresh_sensor`'s runs (assets/refresh.py), which include the delay model.
REFRESH_TRIGGER = "refresh"

# Dagster's run queue starts higher priorities first (then in the order runs were requested): a
# drop's landing and the refresh runs that follow it go ahead of releases and their refreshes
# queued before it (older dates; measured: a drop behind them took 44-50 s to the warehouse,
# 33 s alone).
PRIORITY_TAG = "dagster/priority"
NEW_DATA_PRIORITY = "1"


# A drop's runs: its landing runs and the refresh runs requested with them (assets/sensors.py).
# One run of a drop at a time (infra/dagster.yaml), so its refresh starts from the run queue
# (dequeued every second) once the landing has ended, not from a sensor tick that sees it ended
# (the daemon's sensor loop is 5 s, then the tick and the queue: 3-7 s of a drop's 33 s).
# Its landing goes first in the queue: the refresh is requested with it and must not start first.
DROP_TAG = "delivery_lake/drop"
DROP_LANDING_PRIORITY = "2"


def new_data_priority(triggers: set[str]) -> dict[str, str]:
    """The priority tag for runs that land new files or refresh after such a landing."""
    return {PRIORITY_TAG: NEW_DATA_PRIORITY} if "inbox" in triggers else {}


WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]
IN_FLIGHT = [*WAITING, dg.DagsterRunStatus.STARTED]


def in_flight(instance: dg.DagsterInstance, triggers: tuple[str, ...]) -> dg.DagsterRun | None:
    """A run of one of these triggers that is queued or running, if any."""
    for trigger in triggers:
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT, tags={TRIGGER_TAG: trigger}), limit=1)
        if runs:
            return runs[0]
    return None
