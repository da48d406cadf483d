"""Wiring only: every asset, check, sensor, schedule and resource of the project."""

import dagster as dg

from assets.checks import mart_checks, raw_checks
from assets.curated import CURATED_ASSETS
from assets.ml import ML_ASSETS, retrain_sensor
from assets.raw import RAW_ASSETS
from assets.resources import LakehouseResource
from assets.schedules import nightly_full_refresh
from assets.sensors import inbox_sensor

# Freshness is not wired here: the raw facts and the partitioned marts carry
# `assets.checks.FRESHNESS_POLICY` (fail after 26 h) on their decorators, and the daemon's
# freshness evaluation reports their state; no check or sensor is needed.

# Evaluates every asset's automation condition (curated refresh, features, risk scores) in
# the daemon. Declared so it starts RUNNING: the implicit default_automation_condition_sensor
# starts STOPPED, and then nothing past landing ever runs under `make up`.
AUTOMATION_SENSOR = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    run_tags={"delivery_lake/trigger": "automation"},
)

# Runs the daemon and the UI launch (`delivery-lake run` materializes in process instead):
# steps fork from one server per run that has imported the project and GX once, rather than
# each step paying a fresh interpreter and the import tree (measured: 5-10 s a step, 14 steps
# in a landing run). Still a process per step, so a step that dies takes only itself down.
EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["assets.definitions", "great_expectations"]}}},
    name="forkserver_executor",
)

defs = dg.Definitions(
    assets=[*RAW_ASSETS, *CURATED_ASSETS, *ML_ASSETS],
    asset_checks=[*raw_checks(), *mart_checks(CURATED_ASSETS)],
    sensors=[inbox_sensor, retrain_sensor, AUTOMATION_SENSOR],
    schedules=[nightly_full_refresh],
    resources={"lakehouse": LakehouseResource()},
    executor=EXECUTOR,
)
