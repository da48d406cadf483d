"""The tags the project's runs carry, and which runs are in flight: one place for the sensors
that wait for one another's runs."""

import dagster as dg

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
# What requested a run: inbox, release, nightly-<date>, cli, refresh, automation, retrain_sensor.
TRIGGER_TAG = "delivery_lake/trigger"
# `refresh_sensor`'s runs (assets/refresh.py), which include the delay model.
REFRESH_TRIGGER = "refresh"

WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]
IN_FLIGHT = [*WAITING, dg.DagsterRunStatus.STARTED]


def in_flight(instance: dg.DagsterInstance, triggers: tuple[str, ...]) -> dg.DagsterRun | None:
    """A run of one of these triggers that is queued or running, if any."""
    for trigger in triggers:
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT, tags={TRIGGER_TAG: trigger}), limit=1)
        if runs:
            return runs[0]
    return None
