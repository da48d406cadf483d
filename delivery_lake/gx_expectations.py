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
    library_metadata: ClassVar[dict[str, Any]] = {
        "maturity": "production",
        "tags": ["delivery_lake"],
        "contributors": [],
    }

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
    """Rows the source files hold for this partition = rows landed + quarantined + held.

    Per partition, so a verdict never depends on which other partitions of the same files have
    landed yet (a file spanning many dates lands over several runs): `read` is what the inbox
    index counted in this partition's (date, client) of each source file, `quarantined` its
    quarantine count and `held` the rows accounted for without landing (replayed: identical to
    what an earlier file landed; superseded: corrected by a later file, kept in history; pending:
    waiting for their parent). The landed side is measured here, from the partition's data file.
    """

    read: int | SuiteParameterDict
    quarantined: int | SuiteParameterDict
    held: int | SuiteParameterDict = 0

    metric_dependencies = ("table.row_count",)
    success_keys = ("read", "quarantined", "held")
    domain_keys: ClassVar[tuple[str, ...]] = ("batch_id", "row_condition", "condition_parser")
    library_metadata: ClassVar[dict[str, Any]] = {
        "maturity": "production",
        "tags": ["delivery_lake"],
        "contributors": [],
    }

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine: Any = None) -> dict:
        kw = self._get_success_kwargs()
        landed = int(metrics["table.row_count"])
        read, quarantined, held = int(kw["read"]), int(kw["quarantined"]), int(kw["held"])
        return {
            "success": landed + quarantined + held == read,
            "result": {
                "observed_value": landed + quarantined + held,
                "details": {"landed": landed, "quarantined": quarantined, "held": held, "read": read},
            },
        }
