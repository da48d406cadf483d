"""Partition definitions shared by every partitioned asset."""

import dagster as dg

from delivery_lake.config import partition_start

# Read from the environment (PARTITION_START) when the definitions load, not per run: Dagster
# fixes a partitions definition when it loads the code location, so a new value needs a
# reload. Not a secret; the inbox scan refuses files dated before it, naming them, rather
# than let Dagster reject the partition mid-run.
PARTITION_START = partition_start()

CLIENT_PARTITIONS = dg.DynamicPartitionsDefinition(name="client")
# end_offset=1: today's partition exists, so files for the running day can land.
DAILY_PARTITIONS = dg.DailyPartitionsDefinition(start_date=PARTITION_START, end_offset=1)
FACT_PARTITIONS = dg.MultiPartitionsDefinition({"date": DAILY_PARTITIONS, "client": CLIENT_PARTITIONS})


def requested_partitions(context: dg.AssetExecutionContext) -> dict[str, list[str]]:
    """date -> clients of the (possibly multi-partition) run."""
    out: dict[str, list[str]] = {}
    for key in context.partition_keys:
        mk = key if isinstance(key, dg.MultiPartitionKey) else FACT_PARTITIONS.get_partition_key_from_str(key)
        dims = mk.keys_by_dimension
        out.setdefault(dims["date"], []).append(dims["client"])
    return out
