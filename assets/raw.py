"""Landing assets (group `raw`): one per feed, generated from the data contract."""

from typing import Any

import dagster as dg

from assets.checks import FRESHNESS_POLICY
from assets.partitions import CLIENT_PARTITIONS, FACT_PARTITIONS, add_partition_metadata, requested_partitions
from assets.resources import LakehouseResource
from delivery_lake.contract import TABLES, Table, landing_order
from delivery_lake.landing import LandingReport


def _schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.duckdb_type,
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=c.nullable, unique=c.name == table.key),
            )
            for c in table.columns
        ]
    )


def report_metadata(report: LandingReport, uri: str) -> dict[str, dg.MetadataValue | int | float | str]:
    preview = report.preview
    md_preview = ""
    if preview:
        cols = list(preview[0])
        md_preview = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
        md_preview += "\n".join("| " + " | ".join(str(r[c]) for c in cols) + " |" for r in preview)
    return {
        "rows_read": report.read,
        "rows_landed": report.landed,
        "rows_quarantined": report.quarantined,
        "rows_replayed": report.replayed,
        "rows_superseded": report.superseded,
        "rows_pending": report.pending,
        "partitions_changed": len([p for p in report.changed_partitions if p[1] != "_unassigned"]),
        "pending_by_partition": dg.MetadataValue.json(
            {f"{p.date}/{p.client}": p.pending for p in report.partitions if p.pending}
        ),
        "quarantined_by_reason": dg.MetadataValue.json(report.by_reason),
        # landed rows per column holding a source mapping's stand-in value (contract.PLACEHOLDERS)
        "placeholder_rows_by_column": dg.MetadataValue.json(report.placeholders),
        "bytes_written": report.bytes,
        "source_files": len(report.files),
        "partitions_written": len([p for p in report.partitions if p.client != "_unassigned"]),
        "duration_s": report.seconds,
        "extra_columns": dg.MetadataValue.json(report.extra_columns),
        "preview": dg.MetadataValue.md(md_preview or "_no rows landed_"),
        "dagster/row_count": report.landed,
        "location": dg.MetadataValue.path(uri),
    }


def build_landing_asset(table: Table) -> dg.AssetsDefinition:
    """The landing asset for one feed; facts are date x client partitioned, dimensions are not."""
    dim_parents = [dg.AssetKey(["raw", p]) for p in table.parents if not TABLES[p].is_fact]
    # A child fact lands after its parent fact in a run that has both (its rows wait for their
    # parents otherwise); same partitions, so the mapping is the identity.
    fact_parents = [dg.AssetKey(["raw", p]) for p in table.parents if TABLES[p].is_fact]
    common: dict[str, Any] = dict(
        key=dg.AssetKey(["raw", table.name]),
        group_name="raw",
        description=f"{table.description}\n\nLanded from `INBOX_DIR/{table.name}/*.csv`; "
        "bad rows go to quarantine with a reason, "
        "rows identical to what an earlier file landed count as replayed, corrected versions move to history/, "
        "and rows whose parent fact has not landed wait in pending/.",
        deps=dim_parents + fact_parents,
        kinds={"parquet", "duckdb"},
        metadata={"dagster/column_schema": _schema(table), "contract_key": table.key},
    )

    if table.is_fact:

        @dg.asset(
            **common,
            partitions_def=FACT_PARTITIONS,
            backfill_policy=dg.BackfillPolicy.single_run(),
            freshness_policy=FRESHNESS_POLICY,  # facts only: dimensions change when they change
        )
        def _fact(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
            wanted = requested_partitions(context)
            context.log.info(
                f"landing {table.name}: {sum(map(len, wanted.values()))} partitions over {len(wanted)} dates"
            )
            landing = lakehouse.landing()
            report = landing.land_fact(table, {d: c for d, c in wanted.items()})
            metadata = report_metadata(report, landing.lake.uri(landing.lake.table_dir("raw", table.name)))
            keys = context.partition_keys
            if len(keys) > 1:
                # Dagster copies a run's metadata onto every partition's materialization: the run's
                # summary (6 KB with its preview) went 3,450 times into the event log for a sparse
                # history, and its total read as each partition's row count. So the summary rides
                # on the run's last partition (the asset's latest materialization) and the others
                # name it; each partition's own counts are in its landing manifest. (One
                # `add_asset_metadata` per partition re-lists the run's date x client keys each
                # call: 3 minutes for 3,450 partitions; `add_partition_metadata` does not.)
                del metadata["dagster/row_count"]
                add_partition_metadata(context, {keys[-1]: metadata})
                metadata = {
                    "run_summary_on": str(keys[-1]),
                    "location": metadata["location"],
                }
            return dg.MaterializeResult(metadata=metadata)

        return _fact

    @dg.asset(**common)
    def _dim(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
        landing = lakehouse.landing()
        report = landing.land_dimension(table)
        if table.name == "clients":
            # New clients become partitions of every fact table.
            known = set(context.instance.get_dynamic_partitions(CLIENT_PARTITIONS.name or "client"))
            new = [c for c in landing.registered_clients() if c not in known]
            if new:
                context.instance.add_dynamic_partitions(CLIENT_PARTITIONS.name or "client", new)
                context.log.info(f"registered client partitions: {', '.join(new)}")
        return dg.MaterializeResult(
            metadata=report_metadata(report, landing.lake.uri(landing.lake.data_file("raw", table.name)))
        )

    return _dim


RAW_ASSETS = [build_landing_asset(t) for t in landing_order()]
RAW_FACT_KEYS = [dg.AssetKey(["raw", t.name]) for t in landing_order() if t.is_fact]
RAW_DIMENSION_KEYS = [dg.AssetKey(["raw", t.name]) for t in landing_order() if not t.is_fact]
