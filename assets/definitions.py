"""Wiring only: every asset, check, sensor, schedule and resource of the project."""

import os

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
FORKSERVER_EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["assets.definitions", "delivery_lake.gx_import"]}}},
    name="forkserver_executor",
)
EXECUTORS = ("multiprocess", "celery")


def executor_from_env() -> dg.ExecutorDefinition:
    """DAGSTER_EXECUTOR: `multiprocess` (default, the executor above) or `celery` (each step a task
    on the Celery workers of CELERY_BROKER_URL: assets/workers.py, infra/README.md).

    Read when the definitions load, like PARTITION_START: the daemon, the webserver, every run
    and every worker of a deployment are started with the same value. The choice is not a
    secret; the broker URL is read only when a run starts (assets.workers.CeleryConfig)."""
    name = os.environ.get("DAGSTER_EXECUTOR", "").strip() or "multiprocess"
    if name == "celery":
        from assets.workers import celery_executor

        return celery_executor
    if name == "multiprocess":
        return FORKSERVER_EXECUTOR
    raise ValueError(f"DAGSTER_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")


EXECUTOR = executor_from_env()

defs = dg.Definitions(
    assets=[*RAW_ASSETS, *CURATED_ASSETS, *ML_ASSETS],
    asset_checks=[*raw_checks(), *mart_checks(CURATED_ASSETS)],
    sensors=[inbox_sensor, retrain_sensor, AUTOMATION_SENSOR],
    schedules=[nightly_full_refresh],
    resources={"lakehouse": LakehouseResource()},
    executor=EXECUTOR,
)
