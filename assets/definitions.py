"""Wiring only: every asset, check, sensor, schedule and resource of the project."""

import dagster as dg

from assets.raw import RAW_ASSETS
from assets.resources import LakehouseResource
from assets.schedules import nightly_full_refresh
from assets.sensors import inbox_sensor

defs = dg.Definitions(
    assets=[*RAW_ASSETS],
    sensors=[inbox_sensor],
    schedules=[nightly_full_refresh],
    resources={"lakehouse": LakehouseResource()},
)
