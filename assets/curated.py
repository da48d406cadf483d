"""Curated assets (group `curated`): one per table model of `dbt_like_sql/`, plus the warehouse.

Generated from the model files, so adding a model file adds an asset with no Python change.
Views (staging, intermediate) are compiled into the table models that ref them rather than
being assets of their own (they hold no data); each asset's deps are therefore the raw
tables and table models its SQL reaches through those views, and its metadata lists the
views it compiles in. Raw facts map onto daily curated partitions by their `date`
dimension: a landed (date, client) partition makes that date of its marts stale.
"""

from typing import Any

import dagster as dg

from assets.checks import FRESHNESS_POLICY
from assets.partitions import DAILY_PARTITIONS, add_partition_metadata
from assets.resources import LakehouseResource
from delivery_lake.contract import TABLES
from delivery_lake.semantic.layer import default as semantic_layer
from delivery_lake.semantic.layer import metrics_on
from delivery_lake.transform import MODELS_DIR, Model, Project, Runner
from delivery_lake.warehouse import Warehouse

GROUP = "curated"
WAREHOUSE_KEY = dg.AssetKey([GROUP, "warehouse"])


def model_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


def after_inputs(label: str, ignore: dg.AssetSelection | None = None) -> dg.AutomationCondition:
    """Requested when any input (but `ignore`) was updated since this asset was last requested or
    built, once no input and no run of its own is in progress (the warehouse after its tables,
    the scores after the model, when those change outside a refresh run)."""
    updated = dg.AutomationCondition.any_deps_updated()
    if ignore is not None:
        updated = updated.ignore(ignore)
    return (
        updated.since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(label)


def _deps(project: Project, m: Model) -> list[dg.AssetDep]:
    refs, sources = project.inputs(m.name)
    deps: list[dg.AssetDep] = []
    for _, table in sources:
        key = dg.AssetKey(["raw", table])
        if TABLES[table].is_fact and m.is_partitioned:
            deps.append(
                dg.AssetDep(
                    key, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="date")
                )
            )
        else:
            deps.append(dg.AssetDep(key))
    lookbacks = project.input_lookbacks(m.name)
    for r in refs:
        upstream = project[r]
        if upstream.is_partitioned and m.is_partitioned and (lookback := lookbacks.get(r, 0)):
            deps.append(
                dg.AssetDep(model_key(r), partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-lookback))
            )
        else:
            deps.append(dg.AssetDep(model_key(r)))
    return deps


def _column_schema(m: Model) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, c.type, description=c.description or None) for c in m.columns]
    )


def column_lineage(project: Project, m: Model) -> dg.TableColumnLineage:
    """Each output column's inputs among the asset's deps (`Project.column_lineage`: through the
    views it compiles in, to the nearest table model or raw table); columns with none are left out."""
    return dg.TableColumnLineage(
        {
            column: [
                dg.TableColumnDep(asset_key=dg.AssetKey([layer, table]), column_name=c) for layer, table, c in deps
            ]
            for column, deps in project.column_lineage(m.name).items()
            if deps
        }
    )


def _description(project: Project, m: Model) -> str:
    views = [v.name for v in project.view_closure(m.name)]
    parts = [m.description]
    if m.grain:
        parts.append(f"Grain: {m.grain}.")
    parts.append(
        f"Model file: `{m.path.relative_to(project.root.parent)}`"
        + (f", compiles in {', '.join(views)}." if views else ".")
    )
    if m.is_partitioned:
        parts.append("Each date is rebuilt on its own; raw partitions blocked by the quality gate are left out.")
    governed = metrics_on(semantic_layer(), m.name)
    if governed:
        # The metric definitions live in semantic/*.yaml; the mart's docs show them, never restate them.
        parts.append(
            "Governed metrics on this table (semantic/metrics.yaml): "
            + "; ".join(f"`{g.name}` = {g.definition()}" for g in governed)
            + "."
        )
    return "\n\n".join(parts)


def build_model_asset(project: Project, m: Model) -> dg.AssetsDefinition:
    deps = _deps(project, m)

    @dg.asset(
        key=model_key(m.name),
        group_name=GROUP,
        description=_description(project, m),
        deps=deps,
        partitions_def=DAILY_PARTITIONS if m.is_partitioned else None,
        backfill_policy=dg.BackfillPolicy.single_run() if m.is_partitioned else None,
        freshness_policy=FRESHNESS_POLICY if m.is_partitioned else None,
        # No automation condition: `refresh_sensor` (assets/refresh.py) builds the models after a
        # landing or after a date materialized by hand, all of them in one run. Automation
        # evaluated mid-run saw a model's input updated and the model not yet, did not count the
        # range run as in progress, and asked for the same dates again (measured under `make up`).
        kinds={"polars" if m.language == "python" else "duckdb", "parquet"},
        metadata={
            "dagster/column_schema": _column_schema(m),
            "dagster/column_lineage": column_lineage(project, m),
            "model_file": dg.MetadataValue.path(str(m.path)),
            "grain": m.grain or "",
            "compiles_in": [v.name for v in project.view_closure(m.name)],
        },
    )
    def _model(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
        lake = lakehouse.lake()
        runner = Runner(lake, project, lakehouse.settings())
        dates = None
        if m.is_partitioned:
            # A run over a range may span dates with no data (sparse history, see
            # planning.date_blocks): nothing is built there, rather than an empty partition.
            keys = context.partition_keys
            have = set(runner.available_dates(m.name, keys)) | set(runner.built_dates(m.name, keys))
            dates = [d for d in keys if d in have]
        result = runner.build_model(m.name, dates)
        if result.up_to_date:
            context.log.info(
                f"{m.name}: up to date, its inputs have not changed since its last build ({result.rows} rows)"
            )
        else:
            context.log.info(f"{m.name}: {result.rows} rows over {len(result.dates)} partition(s) in {result.seconds}s")
        metadata: dict[str, Any] = {
            "up_to_date": result.up_to_date,
            "excluded_partitions": dg.MetadataValue.json(result.excluded),
            "served_last_good": dg.MetadataValue.json(result.served_last_good),
            "duration_s": result.seconds,
            "location": dg.MetadataValue.path(lake.uri(lake.table_dir("curated", m.name))),
        }
        if not m.is_partitioned:
            return dg.MaterializeResult(
                metadata=metadata
                | {
                    "dagster/row_count": result.rows,
                    "held_cells": dg.MetadataValue.json(result.held_cells),
                    # Also on the materialization, where Dagster's docs attach it (its UI reads both).
                    "dagster/column_lineage": column_lineage(project, m),
                }
            )
        # Each date's own numbers on its own materialization: what the run's metadata would
        # repeat on every partition of a range (a 541-date backfill wrote its rows_by_date
        # and lineage 541 times, 17 KB per event), and a partition's row count is its own.
        held: dict[str, list[list[str]]] = {}
        for cell in result.held_cells:
            held.setdefault(cell[0], []).append(cell)
        keys = context.partition_keys
        add_partition_metadata(
            context,
            {
                key: {
                    "dagster/row_count": result.rows_by_date.get(key, 0),
                    # a date of the range without input data is not built: no partition, no rows
                    "built": key in result.rows_by_date,
                    # cells left out (or flagged incomplete) because their input is blocked or
                    # their parent unavailable: what a reader must not mistake for zeros
                    "held_cells": dg.MetadataValue.json(held.get(key, [])),
                }
                # The lineage on the run's newest materialization (the UI reads the latest).
                | ({"dagster/column_lineage": column_lineage(project, m)} if key == keys[-1] else {})
                for key in keys
            },
        )
        return dg.MaterializeResult(
            metadata=metadata | {"rows_in_run": result.rows, "dates_built": len(result.rows_by_date)}
        )

    return _model


def build_warehouse_asset(project: Project) -> dg.AssetsDefinition:
    @dg.asset(
        key=WAREHOUSE_KEY,
        group_name=GROUP,
        description=(
            "The analysts' DuckDB file (WAREHOUSE_PATH): every table model as a table with comments. "
            "Built beside the live file and swapped in atomically, so open sessions are never disturbed; "
            "only the partitions whose curated build changed are reloaded. Query it with `delivery-lake query`."
        ),
        # The marts, and the delay-model scores (`assets/ml.py` RISK_KEY), which scoring publishes
        # as a curated partition + external table spec: the refresh loads both the same way.
        deps=[*(model_key(m.name) for m in project.published()), dg.AssetKey(["ml", "fct_delivery_risk"])],
        automation_condition=after_inputs("refresh_after_marts"),
        kinds={"duckdb"},
    )
    def _warehouse(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
        settings = lakehouse.settings()
        report = Warehouse(lakehouse.lake(), project, settings.warehouse_path).refresh()
        for warning in report.warnings:
            context.log.warning(warning)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(report.path),
                "tables_refreshed": dg.MetadataValue.json({t.table: t.mode for t in report.tables}),
                "partitions_loaded": sum(t.partitions_loaded for t in report.tables),
                "rows": dg.MetadataValue.json({t.table: t.rows for t in report.tables}),
                "bytes": report.bytes,
                "vacuumed": report.vacuumed,
                "started_from": report.base,
                "warnings": dg.MetadataValue.json(list(report.warnings)),
                "duration_s": report.seconds,
            }
        )

    return _warehouse


def build_curated_assets(project: Project) -> list[dg.AssetsDefinition]:
    return [*(build_model_asset(project, m) for m in project.materialized()), build_warehouse_asset(project)]


PROJECT = Project.load(MODELS_DIR)
CURATED_ASSETS = build_curated_assets(PROJECT)
CURATED_PARTITIONED_KEYS = [model_key(m.name) for m in PROJECT.materialized() if m.is_partitioned]
CURATED_UNPARTITIONED_KEYS = [model_key(m.name) for m in PROJECT.materialized() if not m.is_partitioned]
