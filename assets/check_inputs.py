"""One Dagster 1.13 cost, removed: an unpartitioned check listing every partition of its asset.

When a check step reports its result, Dagster records which materialization of the checked
asset it saw (`AssetCheckResult.to_asset_check_evaluation`). For an unpartitioned check on a
partitioned asset it maps the check to *all* of the asset's partitions and lists them
(`DataVersionCache._fetch_input_asset_version_info`) before deciding that more than 100 is too
many to use and falling back to the asset's latest materialization. A raw fact table has
`days since PARTITION_START x clients` partitions: 4,350 x 80 = 348,000 keys built and thrown
away, about 3.3 s per check step on this machine, three check steps per landing run.

`install()` makes the checks' asset inputs count as unpartitioned, which is what Dagster falls
back to anyway past 100 partitions, so the recorded target materialization (run, storage id,
time) is the same. Only inputs that carry no value (`Nothing`: our checks read the lake, not
an IO manager) of steps that execute checks and no asset are affected, and only when the
check has no partitions of its own.

Guarded by `tests/test_check_inputs.py`, which fails when a Dagster upgrade changes the method
this wraps or stops needing it.
"""

from __future__ import annotations

import functools
from typing import Any

from dagster._core.execution.context.system import StepExecutionContext

_MARK = "_delivery_lake_check_inputs"


def _is_check_target_input(context: Any, input_name: str) -> bool:
    assets_def = context.assets_def
    if assets_def is None or assets_def.keys or not assets_def.check_keys:
        return False  # an asset step, or an op: Dagster's behaviour, untouched
    if context.entity_partitions_def is not None:
        return False  # a partitioned check maps to its own partitions
    return context.step.step_input_named(input_name).dagster_type_key == "Nothing"


def install() -> None:
    """Idempotent; called when the checks are defined (every process that runs them)."""
    original = StepExecutionContext.has_asset_partitions_for_input
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def has_asset_partitions_for_input(self: Any, input_name: str) -> bool:
        if _is_check_target_input(self, input_name):
            return False
        return original(self, input_name)

    setattr(has_asset_partitions_for_input, _MARK, True)
    StepExecutionContext.has_asset_partitions_for_input = has_asset_partitions_for_input  # type: ignore[method-assign]
