"""The nightly full refresh: every file in the inbox re-landed (landing is idempotent)."""

import dagster as dg

from assets.partitions import CLIENT_PARTITIONS
from assets.raw import RAW_DIMENSION_KEYS, RAW_FACT_KEYS
from assets.resources import LakehouseResource
from assets.sensors import run_requests_for
from delivery_lake.inbox import scan_changes


@dg.schedule(
    name="nightly_full_refresh",
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    target=RAW_DIMENSION_KEYS + RAW_FACT_KEYS,
    description="02:00 UTC: re-land every dimension and every fact partition found in the inbox.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def nightly_full_refresh(context: dg.ScheduleEvaluationContext, lakehouse: LakehouseResource):
    changes = scan_changes(lakehouse.lake(), lakehouse.settings().inbox_dir, None)
    if changes.empty:
        return dg.SkipReason("the inbox is empty")
    clients = list(context.instance.get_dynamic_partitions(CLIENT_PARTITIONS.name or "client"))
    return run_requests_for(changes, clients, f"nightly-{context.scheduled_execution_time:%Y%m%d}")
