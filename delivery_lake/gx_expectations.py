"""Custom Great Expectations 1.x expectations for facts only the landing knows.

GX sees one partition's rows; how many rows were read from the inbox and how many were
quarantined live in the landing manifests and the inbox index. Both expectations below
measure the partition's row count with GX's own `table.row_count` metric and compare it
with those numbers, passed in as suite parameters (`{"$PARAMETER": ...}`), so they sit
in the suite files, in the validation results and in Data Docs like any built-in one.

Importing this module registers them with GX (subclassing registers by snake-case name).
"""

from __future__ import annotations

from typing import Any, ClassVar

from great_expectations.core.suite_parameters import SuiteParameterDict
from great_expectations.expectations.expectation import BatchExpectation


class ExpectQuarantineRatioToBeAtMost(BatchExpectation):
    """Rows quarantined at landing / (rows landed + rows quarantined) stays at or below `max_ratio`.

    A few bad rows are set aside row by row; many mean the feed itself is broken, and the
    good-looking rest of the partition is not to be trusted either. Fewer than
    `min_quarantined` rows never block: in a small client's partition one bad row is
    already several percent, which says nothing about the feed.
    """

    quarantined: int | SuiteParameterDict
    max_ratio: float | SuiteParameterDict
    min_quarantined: int | SuiteParameterDict = 1

    metric_dependencies = ("table.row_count",)
    success_keys = ("quarantined", "max_ratio", "min_quarantined")
    domain_keys: ClassVar[tuple[str, ...]] = ("batch_id", "row_condition", "condition_parser")
    library_metadata: ClassVar[dict[str, Any]] = {"maturity": "production", "tags": ["delivery_lake"], "contributors": []}

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine: Any = None) -> dict:
        kw = self._get_success_kwargs()
        landed = int(metrics["table.row_count"])
        quarantined = int(kw["quarantined"])
        total = landed + quarantined
        ratio = quarantined / total if total else 0.0
        return {
            "success": ratio <= float(kw["max_ratio"]) or quarantined < int(kw.get("min_quarantined") or 1),
            "result": {"observed_value": round(ratio, 4), "details": {"landed": landed, "quarantined": quarantined}},
        }


class ExpectPartitionRowsToReconcile(BatchExpectation):
    """Rows read from the source files of this partition = rows landed + rows quarantined.

    A source file may feed several partitions, so the reconciliation is per file, as the
    landing does it: `read` is what the inbox index counted in the files that fed this
    partition (the sensor's scan, or the counts a first backfill took while reading), `quarantined` is this partition's quarantine
    count and `other_partitions` what the other partitions' manifests say they took from
    the same files. The landed side of this partition is measured here, from its data file.
    """

    read: int | SuiteParameterDict
    quarantined: int | SuiteParameterDict
    other_partitions: int | SuiteParameterDict = 0

    metric_dependencies = ("table.row_count",)
    success_keys = ("read", "quarantined", "other_partitions")
    domain_keys: ClassVar[tuple[str, ...]] = ("batch_id", "row_condition", "condition_parser")
    library_metadata: ClassVar[dict[str, Any]] = {"maturity": "production", "tags": ["delivery_lake"], "contributors": []}

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine: Any = None) -> dict:
        kw = self._get_success_kwargs()
        landed = int(metrics["table.row_count"])
        read, quarantined, others = int(kw["read"]), int(kw["quarantined"]), int(kw["other_partitions"])
        return {
            "success": landed + quarantined + others == read,
            "result": {
                "observed_value": landed + quarantined + others,
                "details": {"landed": landed, "quarantined": quarantined, "other_partitions": others, "read": read},
            },
        }
