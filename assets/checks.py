"""Quality checks: one GX suite check per raw table and per mart, plus the freshness policy.

Gating design (why the suite checks are `blocking=False`):

An `AssetCheckResult` has no partition, so a blocking check that fails in a run covering
many partitions fails the step and skips everything downstream for every partition of
that run, and `AutomationCondition.all_deps_blocking_checks_passed()` then holds the
downstream assets back for all partitions until a later check passes. One bad partition
would hold back the good ones. So the block is data, at partition grain: each check
validates every partition the run materialized and writes its verdict to the gate
(`delivery_lake.gate`); the curated layer and the training set read raw and mart
partitions only when the gate has not blocked them, whichever path runs them (CLI, sensor,
schedule, automation, backfill). The Dagster check is the report: it fails with severity
ERROR when any partition of the run was blocked, WARN when only warnings fired, and its
metadata lists each partition's failed expectations, unexpected counts and percentages,
sample values and the Data Docs page.

Each check runs in the same run as its asset (selecting an asset selects its checks) and
declares the parents its suite reads (deliveries' foreign keys need orders), so in a run
that lands both, orders land first.
"""

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from assets import check_inputs
from assets.partitions import FACT_PARTITIONS
from assets.resources import LakehouseResource
from delivery_lake.contract import TABLES
from delivery_lake.quality import Quality, suite_names

# Before any check runs in this process (the CLI, the daemon's steps, the UI's code server).
check_inputs.install()

SUITE_CHECK = "gx_suite"
# Raw facts land nightly (02:00 UTC); older than 26 h means a night was missed.
FRESHNESS_LOWER_BOUND = timedelta(hours=26)
# Attached (`freshness_policy=`) to the raw facts (assets/raw.py) and the partitioned marts
# (assets/curated.py). No check or sensor: the daemon's freshness evaluation (FreshnessDaemon,
# run by `dagster-daemon` under `make up` and by `dagster dev`) records PASS/FAIL per asset and
# the UI shows it; an asset is FAIL once its last materialization is older than 26 h.
FRESHNESS_POLICY = dg.FreshnessPolicy.time_window(fail_window=FRESHNESS_LOWER_BOUND)
MAX_PARTITIONS_IN_METADATA = 50


def _partitions_of_run(
    context: dg.AssetCheckExecutionContext, partitions_def: dg.PartitionsDefinition | None
) -> list[str | None]:
    """Partition keys of the checked asset that this run materialized (None for unpartitioned).

    They are the run's partitions as its tags name them (a key, or a range of keys), resolved the
    way Dagster resolves them when it records the run's planned and done materializations, so
    they are exactly the keys the asset materialized. Reading them back from the run's event log
    instead deserialized every materialization of the run: 54 of 398 profiled seconds of a
    backfill over 540 dates (docs/performance.md)."""
    if partitions_def is None:
        return [None]
    from dagster._core.definitions.partitions.context import partition_loading_context

    # the client dimension is dynamic: its keys come from the instance
    with partition_loading_context(dynamic_partitions_store=context.instance):
        subset = context.run.get_resolved_partitions_subset_for_events(partitions_def)
        keys: list[str | None] = list(subset.get_partition_keys()) if subset is not None else []
    return sorted(keys, key=lambda k: k or "")


def _split(key: str | None, partitioned_by_client: bool) -> tuple[str | None, str | None]:
    if key is None:
        return None, None
    if partitioned_by_client:
        dims = FACT_PARTITIONS.get_partition_key_from_str(key).keys_by_dimension
        return dims["date"], dims["client"]
    return key, None


def check_result(
    results: Sequence[Any], docs_index: str | None, extra: dict[str, Any] | None = None
) -> dg.AssetCheckResult:
    """Summarise per-partition validations into one check result (run grain, see module doc)."""
    blocked = [r for r in results if not r.passed]
    warned = [r for r in results if r.passed and r.warnings]
    per_partition: dict[str, Any] = {}
    for r in sorted(results, key=lambda r: (r.passed, r.key))[:MAX_PARTITIONS_IN_METADATA]:
        per_partition[r.key] = {
            "passed": r.passed,
            "rows": r.rows,
            "failed": [
                {
                    "expectation": o.label,
                    "unexpected_count": o.unexpected_count,
                    "unexpected_percent": o.unexpected_percent,
                    "sample": o.sample,
                    "observed": o.observed,
                    "error": o.error,
                }
                for o in r.failed_errors
            ],
            "warnings": [
                {"expectation": o.label, "observed": o.observed, "unexpected_count": o.unexpected_count}
                for o in r.warnings
            ],
            "error": r.error,
            "data_docs": r.docs_url,
        }
    lines = ["| partition | verdict | failed expectations (unexpected, sample) | Data Docs |", "|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r.passed, r.key))[:MAX_PARTITIONS_IN_METADATA]:
        verdict = "BLOCKED" if not r.passed else ("warn" if r.warnings else "ok")
        failed = "; ".join(
            f"{o.label}: {o.unexpected_count if o.unexpected_count is not None else o.observed}"
            + (f" ({o.unexpected_percent}%)" if o.unexpected_percent is not None else "")
            + (f" e.g. {', '.join(o.sample[:3])}" if o.sample else "")
            for o in (r.failed_errors or r.warnings)
        ) or (r.error or "")
        link = f"[page]({r.docs_url})" if r.docs_url else ""
        lines.append(f"| {r.key} | {verdict} | {failed} | {link} |")
    metadata: dict[str, Any] = {
        "partitions_validated": len(results),
        "partitions_passed": len(results) - len(blocked),
        "partitions_blocked": len(blocked),
        "partitions_with_warnings": len(warned),
        "blocked_partitions": dg.MetadataValue.json(sorted(r.key for r in blocked)),
        "results": dg.MetadataValue.md("\n".join(lines)),
        "per_partition": dg.MetadataValue.json(per_partition),
        "seconds_per_partition": round(sum(r.seconds for r in results) / len(results), 3) if results else 0.0,
    }
    metadata |= extra or {}
    if docs_index:
        metadata["data_docs"] = dg.MetadataValue.url(f"file://{docs_index}")
    first = next((r for r in blocked if r.docs_url), None)
    if first:
        metadata["data_docs_first_blocked"] = dg.MetadataValue.url(first.docs_url)
    severity = dg.AssetCheckSeverity.ERROR if blocked else dg.AssetCheckSeverity.WARN
    description = (
        f"{len(blocked)} of {len(results)} partition(s) blocked by ERROR expectations: "
        f"{', '.join(sorted(r.key for r in blocked)[:10])}"
        if blocked
        else f"{len(results)} partition(s) passed" + (f"; {len(warned)} with warnings" if warned else "")
    )
    return dg.AssetCheckResult(
        passed=not blocked and not warned, severity=severity, metadata=metadata, description=description
    )


def build_suite_check(
    asset_key: dg.AssetKey,
    suite: str,
    mart: bool,
    partitions_def: dg.PartitionsDefinition | None,
    deps: Iterable[dg.AssetKey] = (),
) -> dg.AssetChecksDefinition:
    partitioned_by_client = partitions_def is FACT_PARTITIONS
    zone = "curated" if mart else "raw"

    @dg.asset_check(
        asset=asset_key,
        name=SUITE_CHECK,
        blocking=False,  # the gate blocks per partition; see the module docstring
        additional_deps=list(deps),
        description=(
            f"Great Expectations suite `expectations/{suite}.json` on every {zone} partition this run wrote. "
            "A partition failing a critical (ERROR) expectation is recorded as blocked in the quality gate, "
            "so downstream readers skip it; warnings are reported only. Open the Data Docs link for details."
        ),
    )
    def _check(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource) -> dg.AssetCheckResult:
        settings = lakehouse.settings()
        quality = Quality(lakehouse.lake(), settings)
        partitions = [_split(k, partitioned_by_client) for k in _partitions_of_run(context, partitions_def)]
        if not mart:
            # A run names whole rectangles of partitions; a client without a row that day has
            # nothing landed and nothing to validate (it is not an empty, failing partition).
            landed = quality.landed_partitions(suite, partitions)
            partitions = [p for p in partitions if p in landed]
        else:
            # Likewise a date of a range with no data: the mart built nothing there.
            lake = quality.lake
            files = {lake.data_file("curated", suite, d): d for d, _c in partitions if d is not None}
            built = {files[f] for f in lake.existing(list(files))}
            partitions = [(d, c) for d, c in partitions if d is None or d in built]
        if not partitions:
            return dg.AssetCheckResult(
                passed=True, severity=dg.AssetCheckSeverity.WARN, description="nothing materialized in this run"
            )
        results = quality.validate_and_record(suite, partitions, mart=mart)
        blocked = [r for r in results if not r.passed]
        if blocked:
            # One line per check, not one per partition: a real export's backfill can block
            # hundreds (the metadata and the gate hold every one).
            shown = "; ".join(
                f"{r.key}: " + (", ".join(o.label for o in r.failed_errors) or r.error or "") for r in blocked[:5]
            )
            more = f" (and {len(blocked) - 5} more; see the check's metadata)" if len(blocked) > 5 else ""
            context.log.warning(f"{suite}: {len(blocked)} of {len(results)} partition(s) BLOCKED: {shown}{more}")
        # Children whose foreign-key checks read the partitions just landed have stale verdicts now.
        children = [t.name for t in TABLES.values() if not mart and suite in t.parents and t.name != suite]
        revalidated = quality.revalidate_stale(children) if children else {}
        extra: dict[str, Any] = {}
        if revalidated:
            stale = {t: sorted(r.key for r in rs) for t, rs in revalidated.items()}
            context.log.info(f"revalidated stale verdicts of {stale}")
            extra["revalidated_children"] = dg.MetadataValue.json(stale)
        return check_result(results, str(quality.docs_dir / "index.html"), extra)

    return _check


def raw_checks() -> list[dg.AssetChecksDefinition]:
    out = []
    for t in TABLES.values():
        deps = [dg.AssetKey(["raw", p]) for p in t.parents if TABLES[p].is_fact]
        out.append(
            build_suite_check(
                dg.AssetKey(["raw", t.name]),
                t.name,
                mart=False,
                partitions_def=FACT_PARTITIONS if t.is_fact else None,
                deps=deps,
            )
        )
    return out


def mart_checks(assets: Iterable[dg.AssetsDefinition | dg.AssetSpec]) -> list[dg.AssetChecksDefinition]:
    """A suite check for every curated asset that has `expectations/<model>.json`."""
    suites = set(suite_names())
    out = []
    for a in assets:
        for key in getattr(a, "keys", None) or [a.key]:
            if key.path[0] == "curated" and key.path[-1] in suites:
                out.append(build_suite_check(key, key.path[-1], mart=True, partitions_def=a.partitions_def))
    return out
