"""Wiring only: every asset, check, sensor, schedule and resource of the project."""

import dagster as dg

from assets.checks import mart_checks, raw_checks
from assets.curated import CURATED_ASSETS
from assets.executors import EXECUTOR
from assets.ml import ML_ASSETS, retrain_sensor
from assets.raw import RAW_ASSETS
from assets.refresh import REFRESH_JOB, refresh_sensor
from assets.resources import LakehouseResource
from assets.schedules import nightly_full_refresh
from assets.sensors import LAND_JOB, LAND_SMALL_JOB, inbox_sensor

# Freshness is not wired here: the raw facts and the partitioned marts carry
# `assets.checks.FRESHNESS_POLICY` (fail after 26 h) on their decorators, and the daemon's
# freshness evaluation reports their state; no check or sensor is needed.

# Evaluates the automation conditions left (the scores and the warehouse, when their inputs
# change outside a refresh run; landings and curated dates materialized by hand are
# `refresh_sensor`'s). Declared so it starts RUNNING: the implicit sensor starts STOPPED.
AUTOMATION_SENSOR = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    run_tags={"delivery_lake/trigger": "automation"},
)


defs = dg.Definitions(
    assets=[*RAW_ASSETS, *CURATED_ASSETS, *ML_ASSETS],
    asset_checks=[*raw_checks(), *mart_checks(CURATED_ASSETS)],
    jobs=[LAND_JOB, LAND_SMALL_JOB, REFRESH_JOB],
    sensors=[inbox_sensor, refresh_sensor, retrain_sensor, AUTOMATION_SENSOR],
    schedules=[nightly_full_refresh],
    resources={"lakehouse": LakehouseResource()},
    executor=EXECUTOR,
)
