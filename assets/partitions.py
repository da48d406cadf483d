"""Partition definitions shared by every partitioned asset."""

from collections.abc import Mapping
from typing import Any

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


def add_partition_metadata(context: dg.AssetExecutionContext, by_partition: Mapping[str, Mapping[str, Any]]) -> None:
    """Metadata for some partitions of the step's materializations: what
    `context.add_asset_metadata(metadata, partition_key=key)` does for each key, in one pass.

    Dagster's call lists the run's whole partition range again to check its one key, then copies
    the step's whole metadata map to add one entry: linear in the range, so once per partition it
    is quadratic (a run of 690 dates spent 0.86 s in it over six marts), and even a single call
    on a landing run of 690 dates x 5 clients builds its 3,450 keys (0.34 s per fact table). Here
    the keys are checked against the step's partition keys once and the entries added together;
    where Dagster's private accumulator is not what this expects, Dagster's own call does it."""
    targeted = {str(k) for k in context.partition_keys}
    unknown = [k for k in by_partition if str(k) not in targeted]
    if unknown:
        raise dg.DagsterInvariantViolationError(
            f"Attempted to add metadata for partition key(s) {unknown[:5]} that this run does not target."
        )
    try:
        _accumulate(context, by_partition)
    except (ImportError, AttributeError, TypeError):
        for partition, metadata in by_partition.items():
            context.add_asset_metadata(dict(metadata), partition_key=partition)


def _accumulate(context: dg.AssetExecutionContext, by_partition: Mapping[str, Mapping[str, Any]]) -> None:
    """Add the entries to the step's metadata accumulator (Dagster 1.13's private structure)."""
    from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator

    step = context._step_execution_context
    entries = dict(step._metadata_accumulator.per_output_metadata)
    for partition, metadata in by_partition.items():
        handle = AssetMetadataHandle(asset_key=context.asset_key, partition_key=partition)
        entries[handle] = {**entries.get(handle, {}), **metadata}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=entries)
