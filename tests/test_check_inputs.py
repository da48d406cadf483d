"""assets/check_inputs.py: an unpartitioned check on a multi-partitioned asset must not list every
partition of the asset, and must record the same target materialization Dagster records."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.execution.context.system import StepExecutionContext

from assets import check_inputs

CLIENTS = dg.DynamicPartitionsDefinition(name="client")
DATES = dg.DailyPartitionsDefinition(start_date="2015-01-01", end_offset=1)
KEYS = dg.MultiPartitionsDefinition({"date": DATES, "client": CLIENTS})
DAY = "2026-01-19"


@dg.asset(partitions_def=KEYS)
def facts(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partitions": len(context.partition_keys)})


@dg.asset_check(asset=facts)
def facts_suite() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset(partitions_def=KEYS)
def parent_rows() -> dg.MaterializeResult:
    return dg.MaterializeResult()


@dg.asset(partitions_def=KEYS, deps=[parent_rows])
def child_rows(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    # an asset step reading a partitioned parent: Dagster's own behaviour must stay
    return dg.MaterializeResult(metadata={"parents": len(context.partition_keys)})


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        inst.add_dynamic_partitions("client", [f"C{i:03d}" for i in range(1, 21)])
        yield inst


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many keys the multi-partitions definition enumerated, per call."""
    calls: list[int] = []
    original = dg.MultiPartitionsDefinition.get_partition_keys

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        keys = original(self, *args, **kwargs)
        calls.append(len(keys))
        return keys

    monkeypatch.setattr(dg.MultiPartitionsDefinition, "get_partition_keys", counting)
    return calls


def _range_run(instance: dg.DagsterInstance, assets: list[Any]) -> dg.ExecuteInProcessResult:
    tags = {
        "dagster/asset_partition_range_start": f"C001|{DAY}",
        "dagster/asset_partition_range_end": f"C020|{DAY}",
    }
    result = dg.materialize(assets, instance=instance, tags=tags)
    assert result.success
    return result


def _evaluation(result: dg.ExecuteInProcessResult) -> Any:
    (event,) = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return event.event_specific_data


def _latest_materialization_storage_id(instance: dg.DagsterInstance) -> int:
    record = instance.get_asset_records([facts.key])[0]
    assert record.asset_entry.last_materialization_record is not None
    return record.asset_entry.last_materialization_record.storage_id


def test_installed_where_checks_are_defined() -> None:
    import assets.checks  # noqa: F401  (installs on import)

    method = StepExecutionContext.has_asset_partitions_for_input
    assert getattr(method, "_delivery_lake_check_inputs", False)
    check_inputs.install()  # a second install keeps one wrapper
    assert StepExecutionContext.has_asset_partitions_for_input is method


def test_check_step_lists_no_partitions_and_records_its_target(instance: dg.DagsterInstance, listed: list[int]) -> None:
    check_inputs.install()
    result = _range_run(instance, [facts, facts_suite])
    days = len(DATES.get_partition_keys())
    # the whole definition (4,000+ days x 20 clients) is never listed; the run's 20 keys may be
    assert days > 4000 and all(n < days for n in listed), listed
    evaluation = _evaluation(result)
    assert evaluation.passed
    target = evaluation.target_materialization_data
    assert target is not None and target.run_id == result.run_id
    assert target.storage_id == _latest_materialization_storage_id(instance)


def test_without_it_dagster_lists_every_partition(
    instance: dg.DagsterInstance, listed: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost this module removes is real in the pinned Dagster: when this fails after an
    upgrade, Dagster fixed it and check_inputs.py can go."""
    check_inputs.install()
    monkeypatch.setattr(
        StepExecutionContext,
        "has_asset_partitions_for_input",
        StepExecutionContext.has_asset_partitions_for_input.__wrapped__,  # type: ignore[attr-defined]
    )
    result = _range_run(instance, [facts, facts_suite])
    assert max(listed) >= 20 * 4000
    # and what it recorded is what the wrapped version records
    assert _evaluation(result).target_materialization_data.storage_id == _latest_materialization_storage_id(instance)


def test_asset_steps_keep_dagsters_partitioned_inputs(instance: dg.DagsterInstance) -> None:
    check_inputs.install()
    _range_run(instance, [parent_rows])
    result = _range_run(instance, [parent_rows, child_rows])
    # a partitioned asset reading a partitioned parent still gets a data version per partition
    # set (Dagster's path, < 100 partitions): the input's subset is the run's 20 keys
    mat = [e for e in result.all_events if e.is_step_materialization and e.step_key == "child_rows"]
    assert len(mat) == 20
    provenance = mat[0].event_specific_data.materialization.tags
    assert any(k.startswith("dagster/input_data_version") for k in provenance), provenance
