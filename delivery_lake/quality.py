"""Great Expectations 1.x suites over the partitions a run wrote, verdicts recorded per partition.

Each table or mart has two GX suites, reviewable JSON in GX's own suite format:

- `expectations/<name>.json`, the row rules (keys present and unique, values in range or in
  a set, foreign keys, column pairs). Every row of every partition being validated is checked
  in one GX validation; the rows carry their partition in a `_partition` column, which GX
  returns for each unexpected row (`unexpected_index_column_names`), so each partition gets its
  own count and sample. Only row-by-row (map) expectations without `mostly` belong here: for
  them a partition passes exactly when none of its rows is unexpected, whatever else is
  validated beside it. Loading a suite that breaks this fails, naming the file.
- `expectations/partitions/<name>.json`, the partition rules, over a profile with one row per
  partition: its row count, the landing's counts (`manifest_landed`, `read`, `quarantined`,
  `held`, `accounted` = rows + quarantined + held, `quarantine_ratio`), the volume band
  (`volume_min`, `volume_max`) and the column statistics the suite names (`mean_<column>`,
  `unique_proportion_<column>`), computed here with DuckDB.

Why two suites rather than one validation per partition: GX spends most of a validation
building its metric graph (about 10 ms per expectation, whatever the row count), so a run of
75 partitions paid 75 times for the same graph. Two validations per table per run cost the
same for one partition or a thousand. Batches are capped at `MAX_BATCH_ROWS` rows, so memory
does not grow with the run.

Row columns computed from the lake with DuckDB joins: `_orphan_<column>` (a foreign key no
parent row holds) and `_elsewhere_<key>` (a key another partition also holds), NULL when fine,
for `expect_column_values_to_be_null`. Parameters (`{"$PARAMETER": name}` in the suites):

- `quarantine_threshold`: `Settings.quarantine_threshold` (the profile carries
  `quarantine_min_rows`, `Settings.quarantine_min_rows`);
- the profile's volume band: around the median row count of the same client's previous
  days (suite `meta.volume` of the partition rules).

Severity is GX 1.x's own per-expectation `severity` field:
- `critical` (GX's default): ERROR. A failure blocks the partition in the gate.
- `warning` or `info`: WARN. Reported (check metadata, Data Docs, summary), never blocks.

Every validated partition is written to the gate (`gate.record`), passed or not; a
validation that crashes records its partitions as blocked (fail closed).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import statistics
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delivery_lake import data_docs, gate
from delivery_lake.config import Settings
from delivery_lake.contract import CARRIER_OPTIONAL, TABLES, Table
from delivery_lake.inbox import InboxIndex
from delivery_lake.landing import manifest_path
from delivery_lake.sql import ident, literal
from delivery_lake.storage import Lake, Mirror, sha256_file, staging_dir

SUITES_DIR = Path(__file__).resolve().parent.parent / "expectations"
PARTITION_SUITES_DIR = SUITES_DIR / "partitions"
PARTITION_SUFFIX = ".partitions"
ERROR, WARN = "ERROR", "WARN"
DOCS_SITE = "lake"
SAMPLE_SIZE = 5
# Row columns added for the row rules: the partition each row belongs to, and its client.
ROW_PARTITION, ROW_DATE, ROW_CLIENT = "_partition", "_partition_date", "_partition_client"
# The row's client's operations (clients.operations; own_fleet when empty): the row_condition of the
# rules a carrier client is exempt from (contract.CARRIER_OPTIONAL) reads it.
OPERATIONS_COLUMN = "_operations"
PROFILE_KEY = "partition"
# Rows validated in one GX call (a pandas frame): beyond it the partitions are split in batches.
MAX_BATCH_ROWS = 500_000
STATISTICS = {
    "mean_": "AVG(CAST({c} AS DOUBLE))",
    "unique_proportion_": "COUNT(DISTINCT {c}) / NULLIF(COUNT({c}), 0)",
}
# Used when a suite has no meta.volume section.
DEFAULT_VOLUME = {"window_days": 7, "min_history": 3, "low": 0.5, "high": 2.0}
UNBOUNDED = 10**12
# Row rules must decide row by row: see the module docstring.
ROW_RULE_BASES = ("ColumnMapExpectation", "ColumnPairMapExpectation", "MulticolumnMapExpectation")


# The GX context built in this process, by suites and output folders: a run's checks (one Quality
# each) share it, with its suites and checkpoints, instead of building them per check. Suites
# are read once per process; a long-lived process sees suite edits after a restart.
_CONTEXTS: dict[tuple[str, ...], tuple[Any, dict[str, Any]]] = {}


def _great_expectations() -> Any:
    """The GX module, imported the way delivery_lake.gx_import does it. A call, not an import
    statement, so that no import sorter can move a `great_expectations` import above it."""
    from delivery_lake.gx_import import gx

    return gx


def preload_gx_in_background() -> threading.Thread:
    """Start importing GX on a thread, so that the import overlaps the work that comes before the
    first check (`delivery-lake run` lands first; importing GX is ~3 s of a new day's ~10 s). Not
    for a process about to import pyspark or Google's clients meanwhile: while GX imports, those
    are made unimportable (delivery_lake.gx_import)."""

    def load() -> None:
        # a failure here is not reported: the check that needs GX imports it again, and says why
        with contextlib.suppress(Exception):
            _great_expectations()

    thread = threading.Thread(target=load, name="gx-preload", daemon=True)
    thread.start()
    return thread


class SuiteError(ValueError):
    pass


# ---- suites ---------------------------------------------------------------------------------


def suite_path(name: str) -> Path:
    return SUITES_DIR / f"{name}.json"


def partition_suite_path(name: str) -> Path:
    return PARTITION_SUITES_DIR / f"{name}.json"


def load_suite_doc(name: str) -> dict[str, Any]:
    return json.loads(suite_path(name).read_text())


def load_partition_suite_doc(name: str) -> dict[str, Any]:
    path = partition_suite_path(name)
    return json.loads(path.read_text()) if path.exists() else {"name": name + PARTITION_SUFFIX, "expectations": []}


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.json"))


def severity_of(gx_severity: Any) -> str:
    value = getattr(gx_severity, "value", gx_severity) or "critical"
    return ERROR if str(value).lower() == "critical" else WARN


def profile_statistics(doc: dict[str, Any]) -> dict[str, str]:
    """Profile column -> SQL over the partition's rows, for the statistics the partition rules
    (`doc`, a partition suite) name."""
    out = {}
    for e in doc["expectations"]:
        kw = e.get("kwargs", {})
        for col in (kw.get("column"), kw.get("column_A"), kw.get("column_B")):
            for prefix, sql in STATISTICS.items():
                if isinstance(col, str) and col.startswith(prefix):
                    out[col] = sql.format(c=ident(col.removeprefix(prefix)))
    return out


# ---- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One expectation's result on one partition, in the shape the check metadata shows (frozen:
    the partitions a rule passed share one instance)."""

    expectation: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list[str] = field(default_factory=list)
    observed: str | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.expectation}({self.column})" if self.column else self.expectation


@dataclass
class PartitionValidation:
    table: str
    date: str | None
    client: str | None
    rows: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    docs_url: str | None = None
    seconds: float = 0.0
    error: str | None = None
    # sha256 of the data file validated: the landing keeps this version as the partition's last
    # good one when a later version replaces it (see landing._PartitionWriter._publish_data).
    data_sha256: str | None = None
    # "table/date/client" -> sha256 of each parent partition the foreign-key checks read
    parents: dict[str, str | None] = field(default_factory=dict)

    @property
    def failed_errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == ERROR]

    @property
    def warnings(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == WARN]

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failed_errors

    @functools.cached_property
    def key(self) -> str:  # read per partition and rule while a batch is judged
        return "/".join(p for p in (self.date, self.client) if p) or self.table

    def details(self) -> dict[str, Any]:
        """What the gate and the check metadata keep for this partition."""
        return {
            "rows": self.rows,
            "failed": [asdict(o) | {"label": o.label} for o in self.failed_errors],
            "warnings": [asdict(o) | {"label": o.label} for o in self.warnings],
            "expectations": len(self.outcomes),
            "docs_url": self.docs_url,
            "seconds": self.seconds,
            "error": self.error,
            "data_sha256": self.data_sha256,
            "parents": self.parents,
        }


def _columns_of(kw: dict[str, Any]) -> list[str]:
    if kw.get("column"):
        return [kw["column"]]
    if "column_A" in kw:
        return [kw["column_A"], kw["column_B"]]
    return list(kw.get("column_list") or [])


def _error_of(res: Any) -> str | None:
    info = res.exception_info or {}
    infos = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for i in infos:
        if i.get("raised_exception"):
            return str(i.get("exception_message") or "raised an exception").strip().splitlines()[0][:300]
    return None


def _split_by_partition(res: Any, index: str) -> dict[str, list[dict[str, Any]]]:
    """The unexpected rows of one expectation result, grouped by the partition GX reported."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in (res.result or {}).get("unexpected_index_list") or []:
        if isinstance(entry, dict) and index in entry:
            out[str(entry[index])].append(entry)
    return out


@dataclass
class _Judged:
    """One expectation's result over a batch: its rule, and its unexpected rows per partition."""

    expectation: str
    columns: list[str]
    severity: str
    error: str | None
    unexpected: dict[str, list[dict[str, Any]]]

    @classmethod
    def of(cls, res: Any, index: str) -> _Judged:
        cfg = res.expectation_config
        return cls(
            expectation=cfg.type,
            columns=_columns_of(dict(cfg.kwargs)),
            severity=severity_of(getattr(cfg, "severity", None)),
            error=_error_of(res),
            unexpected=_split_by_partition(res, index),
        )

    def row_outcome(self, pv: PartitionValidation) -> Outcome:
        """A row rule's outcome for one partition: its own unexpected rows, a sample of their values."""
        columns, unexpected = self.columns, self.unexpected.get(pv.key, [])
        if not unexpected and self.error is None:
            return self._passed_with_rows if pv.rows else self._passed_empty
        values = [e[columns[0]] if len(columns) == 1 else tuple(e.get(c) for c in columns) for e in unexpected]
        return Outcome(
            expectation=self.expectation,
            column=", ".join(columns) or None,
            severity=self.severity,
            success=self.error is None and not unexpected,
            unexpected_count=len(unexpected),
            unexpected_percent=round(100 * len(unexpected) / pv.rows, 3) if pv.rows else None,
            sample=[_value(v) for v in values[:SAMPLE_SIZE]],
            error=self.error,
        )

    @functools.cached_property
    def _passed_with_rows(self) -> Outcome:
        return self._passed(0.0)

    @functools.cached_property
    def _passed_empty(self) -> Outcome:
        return self._passed(None)

    def _passed(self, percent: float | None) -> Outcome:
        column = ", ".join(self.columns) or None
        return Outcome(self.expectation, column, self.severity, True, 0, percent)

    def partition_outcome(self, profile: dict[str, Any], pv: PartitionValidation) -> Outcome:
        """A partition rule's outcome: failed when GX listed the partition's profile row."""
        columns = self.columns
        observed = (
            _value(profile.get(columns[0]))
            if len(columns) == 1
            else ", ".join(f"{c}={_value(profile.get(c))}" for c in columns)
        )
        return Outcome(
            expectation=self.expectation,
            column=", ".join(columns) or None,
            severity=self.severity,
            success=self.error is None and pv.key not in self.unexpected,
            observed=observed,
            error=self.error,
        )


def _exists(store: Any, name: str) -> bool:
    return name in {item.name for item in store.all()}


def _value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# ---- the runner ------------------------------------------------------------------------------


@dataclass
class _Batch:
    """Partitions validated together: their keys, data files and the rows each holds."""

    name: str
    partitions: list[PartitionValidation]
    uris: dict[str, str]  # partition key -> data file


class _KeptSnapshots:
    """Key snapshots of raw tables kept across checks in one process, while the table's files stay
    the same.

    A fact's checks read every landed file of its parents and of itself for the keys the foreign-key
    and elsewhere-landed rules join on. In one run, the orders' keys were read by the orders check,
    again by the deliveries' and the feedback's, again when their stale verdicts were revalidated:
    for a sparse history, 2,324 small files each time (0.2 ms a file). Kept here, keyed by the query
    and stamped with every data file's (path, size, mtime, inode): a file landed, replaced (a new
    inode: publishes rename) or removed since changes the stamp and the snapshot is read again.
    Local lakes only (an S3 listing per check would cost what it saves). At most MAX_BYTES of
    them are kept, the least recently used going first, so a long-lived process (a code server,
    a worker) holds little: the benchmark's sparse history's orders keys are 9,000 rows."""

    MAX_BYTES = 64 * 2**20

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[str, Any]] = OrderedDict()

    def get(self, lake: Lake, table: Table, query: str, make: Callable[[], Any]) -> Any:
        if lake.is_s3:
            return make()
        # stamped before reading: files changed during the read leave a stamp that no longer matches
        stamp = lake.stamp(lake.glob_uri("raw", table.name, table.is_fact))
        with self._lock:
            hit = self._kept.get(query)
            if hit is not None and hit[0] == stamp:
                self._kept.move_to_end(query)
                return hit[1]
        snapshot = make()
        with self._lock:
            self._kept.pop(query, None)
            if snapshot.nbytes <= self.MAX_BYTES:
                self._kept[query] = (stamp, snapshot)
                while sum(kept.nbytes for _stamp, kept in self._kept.values()) > self.MAX_BYTES:
                    self._kept.popitem(last=False)
        return snapshot


_KEPT = _KeptSnapshots()


class Quality:
    """Validates partitions of one lake and writes the gate; one GX context per instance."""

    def __init__(self, lake: Lake, settings: Settings):
        self.lake, self.settings = lake, settings
        self._ctx: Any = None
        self._checkpoints: dict[str, Any] = {}
        # Key snapshots shared by the batches of one `validate_and_record` call.
        self._snapshots: dict[tuple[str, ...], Any] | None = None
        # Landing manifests listed and read during the same call (every partition's volume
        # bounds read its history's).
        self._manifests: dict[str, dict[str, dict[str, Any]]] | None = None
        # Inbox index entries read during the same call, by table and set of files.
        self._entries: dict[tuple[str, tuple[str, ...]], dict[str, Any]] | None = None
        # Each table's volume history by client, built from those manifests.
        self._histories: dict[str, dict[str, tuple[list[str], list[int]]]] | None = None
        # Local copies of the data files validated during the same call (an S3 lake).
        self._mirror: Mirror | None = None

    def _snapshot(self, con: Any, key: tuple[str, ...], sql: Callable[[], str], source: Table) -> str:
        """A relation name for the query `sql()` over raw `source` makes (asked only when needed): a
        view on this connection, or a cached Arrow copy during a call (kept for later calls while
        `source`'s files stay the same, see `_KeptSnapshots`)."""
        name = "snap_" + "_".join(key).replace("-", "_")
        if self._snapshots is None:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql()}")
            return name
        if key not in self._snapshots:
            query = sql()
            self._snapshots[key] = _KEPT.get(self.lake, source, query, lambda: con.sql(query).to_arrow_table())
        con.register(name, self._snapshots[key])
        return name

    def _distinct_keys_sql(self, con: Any, table: Table, column: str) -> str:
        return f"SELECT DISTINCT k, d, c FROM ({self._keys_sql(con, table, column)})"

    def _keys_sql(self, con: Any, table: Table, column: str) -> str:
        """(k, d, c): `column` of every landed row of raw `table`, with its partition's date and
        client (NULL for a dimension). On S3 the column is read by pyarrow's own S3 client, all
        files at once (Lake.read_columns): DuckDB's fsspec reads went one file at a time and made
        a check step on SeaweedFS seconds slower than on a local lake."""
        partition = (
            "CAST(date AS VARCHAR) AS d, client AS c" if table.is_fact else "NULL::VARCHAR AS d, NULL::VARCHAR AS c"
        )
        if not self.lake.is_s3:
            src = literal(self.lake.glob_uri("raw", table.name, table.is_fact))
            relation = f"read_parquet({src}{', hive_partitioning = true' if table.is_fact else ''})"
        else:
            arrow = self.lake.read_columns("raw", table.name, [column], table.is_fact)
            if arrow is None:
                return "SELECT NULL::VARCHAR AS k, NULL::VARCHAR AS d, NULL::VARCHAR AS c WHERE false"
            relation = f"cols_{table.name}_{column}"
            con.register(relation, arrow)
        return f"SELECT {ident(column)} AS k, {partition} FROM {relation}"

    def _landing_manifests(self, pattern: str) -> dict[str, dict[str, Any]]:
        """Path -> document of the landing manifests matching `pattern` (cached during a call)."""
        if self._manifests is not None and pattern in self._manifests:
            return self._manifests[pattern]
        found = self.lake.read_jsons_matching([pattern])
        if self._manifests is not None:
            self._manifests[pattern] = found
        return found

    def _table_manifests(self, table: str) -> dict[str, dict[str, Any]]:
        """Path -> landing manifest of every (date, client) partition of `table`: one listing for
        the volume history of all a check's clients and their own manifests (on S3 a LIST and
        the documents not read before, where a pattern per client cost a round of each)."""
        return self._landing_manifests(self.lake.meta_path("landing", table) + "/date=*/client=*.json")

    # -- GX context ---------------------------------------------------------------------------
    @property
    def results_dir(self) -> Path:
        return self.settings.data_dir / "gx" / "validations"

    @property
    def docs_dir(self) -> Path:
        return self.settings.data_dir / "data_docs"

    def context(self) -> Any:
        """An ephemeral GX context: suites in memory from `expectations/`, results and docs on disk.

        Nothing GX keeps in YAML is shared between processes, so parallel check steps
        cannot trample each other's config; each result is its own file.
        """
        if self._ctx is not None:
            return self._ctx
        key = (str(SUITES_DIR), str(PARTITION_SUITES_DIR), str(self.results_dir), str(self.docs_dir))
        if key in _CONTEXTS:
            self._ctx, self._checkpoints = _CONTEXTS[key]
            return self._ctx
        # GX keeps the newest context as the process's current project, and a checkpoint of an
        # older one then reads the newer one's stores: keep only the newest.
        _CONTEXTS.clear()
        gx = _great_expectations()  # before any `great_expectations` import (delivery_lake.gx_import)
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        cfg = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        cfg.stores["validation_results_store"] = {
            "class_name": "ValidationResultsStore",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(self.results_dir)},
        }
        cfg.data_docs_sites = {
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(self.docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        }
        self._ctx = gx.get_context(mode="ephemeral", project_config=cfg)
        self._ctx.data_sources.add_pandas("lake")
        for name in suite_names():
            self._add_suite(load_suite_doc(name), suite_path(name), row_rules=True)
            self._add_suite(load_partition_suite_doc(name), partition_suite_path(name), row_rules=False)
        _CONTEXTS[key] = (self._ctx, self._checkpoints)
        return self._ctx

    def _add_suite(self, doc: dict[str, Any], path: Path, row_rules: bool) -> Any:
        _great_expectations()  # first, as in context()
        from great_expectations.core.expectation_suite import ExpectationSuite
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        expectations = []
        for e in doc["expectations"]:
            exp = ExpectationConfiguration(
                type=e["type"],
                kwargs=e.get("kwargs", {}),
                meta=e.get("meta"),
                notes=e.get("notes"),
                severity=e.get("severity", "critical"),
            ).to_domain_obj()
            bases = {b.__name__ for b in type(exp).__mro__}
            if not bases & set(ROW_RULE_BASES) or e.get("kwargs", {}).get("mostly") not in (None, 1, 1.0):
                raise SuiteError(
                    f"{path}: {e['type']} is not a row-by-row rule without `mostly`"
                    + (
                        "; row rules are validated over many partitions at once, so a rule about a whole "
                        "partition (row counts, means) belongs in the partition rules, "
                        f"{PARTITION_SUITES_DIR.name}/{path.name}, over the profile's columns"
                        if row_rules
                        else "; partition rules judge each profile row (one per partition) on its own"
                    )
                )
            expectations.append(exp)
        return self._ctx.suites.add(
            ExpectationSuite(
                name=doc["name"], expectations=expectations, meta=doc.get("meta") or {}, notes=doc.get("notes")
            )
        )

    def checkpoint(self, suite: str, index_column: str) -> Any:
        if suite not in self._checkpoints:
            gx = _great_expectations()
            ctx = self.context()
            # Found again rather than added when this process's context already holds them (a check
            # that failed half-way through creating them, a Quality built while another ran).
            ds = ctx.data_sources.get("lake")
            if suite in {a.name for a in ds.assets}:
                ctx.checkpoints.delete(suite) if _exists(ctx.checkpoints, suite) else None
                ctx.validation_definitions.delete(suite) if _exists(ctx.validation_definitions, suite) else None
                ds.delete_asset(suite)
            batch = ds.add_dataframe_asset(suite).add_batch_definition_whole_dataframe("rows")
            vd = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=suite, data=batch, suite=ctx.suites.get(suite))
            )
            self._checkpoints[suite] = ctx.checkpoints.add(
                gx.Checkpoint(
                    name=suite,
                    validation_definitions=[vd],
                    actions=[],
                    # COMPLETE: every unexpected row with its partition, so each partition is judged
                    # on its own rows (a few per failure: the landing quarantined the rest).
                    result_format={
                        "result_format": "COMPLETE",
                        "unexpected_index_column_names": [index_column],
                        "partial_unexpected_count": SAMPLE_SIZE,
                        "return_unexpected_index_query": False,
                    },
                )
            )
        return self._checkpoints[suite]

    def _run(self, suite: str, index_column: str, df: Any, params: dict[str, Any], run_name: str) -> tuple[Any, Any]:
        gx = _great_expectations()
        result = self.checkpoint(suite, index_column).run(
            batch_parameters={"dataframe": df},
            expectation_parameters=params,
            run_id=gx.RunIdentifier(run_name=run_name, run_time=datetime.now(UTC)),
        )
        identifier, vr = next(iter(result.run_results.items()))
        return vr, identifier

    # -- the rows of a batch ---------------------------------------------------------------------
    def _load_rows(self, con: Any, name: str, batch: _Batch, mart: bool) -> dict[str, int]:
        """Temp table `part`: the batch's rows with their partition columns; returns rows per partition."""
        import pyarrow as pa

        # An Arrow table, not a VALUES list: DuckDB took 1 s to parse the SQL of 3,450 partitions.
        listed = [(uri, pv) for pv in batch.partitions if (uri := batch.uris.get(pv.key))]
        files = pa.table(
            {
                "uri": pa.array([u for u, _ in listed], pa.string()),
                ROW_PARTITION: pa.array([pv.key for _, pv in listed], pa.string()),
                ROW_DATE: pa.array([pv.date for _, pv in listed], pa.string()),
                ROW_CLIENT: pa.array([pv.client for _, pv in listed], pa.string()),
            }
        )
        con.register("batch_files", files)
        uris = ", ".join(literal(u) for u in batch.uris.values())
        if mart:
            described = con.execute(f"DESCRIBE SELECT * FROM read_parquet([{uris}])").fetchall()
            typed = [(n, str(t)) for n, t, *_ in described]
        else:
            typed = [(c.name, c.duckdb_type) for c in TABLES[name].columns]
        # DECIMAL -> DOUBLE: GX's pandas range metrics want numbers, not Decimal objects.
        cols = ", ".join(
            f"CAST(r.{ident(n)} AS DOUBLE) AS {ident(n)}" if t.upper().startswith("DECIMAL") else f"r.{ident(n)}"
            for n, t in typed
        )
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE part AS
                SELECT {cols}, f.{ROW_PARTITION}, f.{ROW_DATE}, f.{ROW_CLIENT}
                FROM read_parquet([{uris}], filename = true, hive_partitioning = false) r
                JOIN batch_files f ON r.filename = f.uri"""
        )
        return dict(con.execute(f"SELECT {ROW_PARTITION}, count(*) FROM part GROUP BY ALL").fetchall())

    def _add_lookups(self, con: Any, table: Table) -> dict[str, set[tuple[str, str, str]]]:
        """Columns the row rules read from other tables, added to `part` by DuckDB joins:

        - `_orphan_<column>`: the foreign key's value when no parent row holds it, else NULL;
        - `_elsewhere_<key>`: the key when another partition of the table holds it too, else NULL.

        Joined here rather than passed to GX as value sets: GX copies an expectation's parameters
        many times while it plans a validation, so a set of every parent key cost seconds.
        Returns, per partition, the parent fact partitions its keys were found in (the verdict
        records their versions, so a change there makes it stale; see `stale`).
        """
        read: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
        for c in table.columns:
            if not c.references or c.references[0] == table.name:
                continue
            parent = TABLES[c.references[0]]
            col, out = ident(c.name), ident(f"_orphan_{c.name}")
            exists = (
                self.lake.exists(self.lake.data_file("raw", parent.name))
                if not parent.is_fact
                else bool(self.lake.list_dates("raw", parent.name))
            )
            if not exists:
                con.execute(f"ALTER TABLE part ADD COLUMN {out} VARCHAR")
                con.execute(f"UPDATE part SET {out} = CAST({col} AS VARCHAR)")
                continue
            ref = c.references[1]
            snap = self._snapshot(
                con,
                ("fk", parent.name, ref),
                functools.partial(self._distinct_keys_sql, con, parent, ref),
                parent,
            )
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE part AS
                    SELECT p.*, CASE WHEN p.{col} IS NOT NULL AND NOT EXISTS
                        (SELECT 1 FROM {snap} s WHERE s.k = p.{col}) THEN CAST(p.{col} AS VARCHAR) END AS {out}
                    FROM part p"""
            )
            if parent.is_fact:
                rows = con.execute(
                    f"""SELECT DISTINCT p.{ROW_PARTITION}, s.d, s.c FROM {snap} s
                        JOIN (SELECT DISTINCT {ROW_PARTITION}, {col} AS v FROM part) p ON s.k = p.v"""
                ).fetchall()
                for p, d, cl in rows:
                    read[p].add((parent.name, d, cl))
        if CARRIER_OPTIONAL.get(table.name):
            # `_operations`: the client's (clients.operations, own_fleet when empty), for the rules
            # a carrier client is exempt from (their row_condition reads it)
            clients = self.lake.data_file("raw", "clients")
            names: set[str] = set()
            if self.lake.exists(clients):
                uri = self.lake.uri(clients)
                names = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{uri}')").fetchall()}
            client = ident(table.client_column or "")
            ops = (
                f"(SELECT operations FROM read_parquet('{uri}') c WHERE c.client_id = p.{client})"
                if "operations" in names
                else "NULL"
            )
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE part AS
                    SELECT p.*, coalesce({ops}, 'own_fleet') AS {OPERATIONS_COLUMN} FROM part p"""
            )
        if table.is_fact:
            key, out = ident(table.key), ident(f"_elsewhere_{table.key}")
            snap = self._snapshot(
                con,
                ("keys", table.name),
                functools.partial(self._distinct_keys_sql, con, table, table.key),
                table,
            )
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE part AS
                    SELECT p.*, CASE WHEN EXISTS (SELECT 1 FROM {snap} s WHERE s.k = p.{key}
                        AND NOT (s.d = p.{ROW_DATE} AND s.c = p.{ROW_CLIENT})) THEN p.{key} END AS {out}
                    FROM part p"""
            )
        return read

    # -- the profile of a batch ------------------------------------------------------------------
    def _reconciliation(self, table: Table, manifest: dict[str, Any], date: str | None, client: str | None) -> int:
        """Rows this partition's source files hold for it, as the inbox index counted them.

        Per partition, not per file: other partitions of the same files may land in later runs,
        and this verdict must not depend on them.
        """
        by_file = manifest.get("by_file", {})
        paths = [Path(f) for f in by_file if Path(f).exists()]
        entries = self._inbox_entries(table, paths) if paths else {}
        read = 0
        for f, counts in by_file.items():
            e = entries.get(f)
            if e is None:  # file archived since: only the manifests know
                read += sum(int(v) for v in counts.values())
            elif not table.is_fact:
                read += e.rows
            else:
                read += e.partitions.get(date or "", {}).get(client or "", 0)
        return read

    def _inbox_entries(self, table: Table, paths: list[Path]) -> dict[str, Any]:
        """The inbox index's entries of `paths`, once per set of files in a validation: a day's
        file feeds every client's partition of that date (one read of the index each, 15 GETs
        of one document in a day's checks on S3)."""
        key = (table.name, tuple(sorted(map(str, paths))))
        memo = self._entries if self._entries is not None else {}
        if key not in memo:
            index = InboxIndex(self.lake, self.settings.inbox_dir, table)
            memo[key] = {e.path: e for e in index.entries(paths=paths)}
        return memo[key]

    def _volume_history(self, table: str) -> dict[str, tuple[list[str], list[int]]]:
        """Client -> (dates, rows landed) of every landed partition of `table`, by date. Built once
        per listing: reading the whole listing for each partition's bounds made a check over
        2,700 partitions of a sparse history quadratic (7 million path splits, 15 s)."""
        # kept as long as the listing is (both are reset by `validate_and_record`)
        memo = self._histories if self._histories is not None else {}
        if table in memo:
            return memo[table]
        rows: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for path, doc in self._table_manifests(table).items():
            d, c = path.split("/")[-2].removeprefix("date="), path.split("/")[-1].removeprefix("client=")
            rows[c.removesuffix(".json")].append((d, int(doc.get("landed", 0))))
        history = {c: ([d for d, _ in v], [n for _, n in v]) for c, v in ((c, sorted(v)) for c, v in rows.items())}
        memo[table] = history
        return history

    def _volume_bounds(self, table: Table, date: str, client: str, suite_meta: dict[str, Any]) -> tuple[int, int]:
        vol = DEFAULT_VOLUME | (suite_meta.get("volume") or {})
        dates, landed = self._volume_history(table.name).get(client, ([], []))
        before = bisect.bisect_left(dates, date)  # the partitions landed for dates before `date`
        recent = landed[max(0, before - int(vol["window_days"])) : before]
        if len(recent) < int(vol["min_history"]):
            return 0, UNBOUNDED
        median = statistics.median(recent)
        return int(median * float(vol["low"])), int(median * float(vol["high"])) + 1

    def _landing_profile(self, table: Table, pv: PartitionValidation, suite_meta: dict[str, Any]) -> dict[str, Any]:
        """The landing's side of a raw partition: what its manifest and the inbox say."""
        path = manifest_path(self.lake, table.name, pv.date, pv.client)
        if pv.date is not None and pv.client is not None:
            # from the table's listing, read once per check (it holds every client's history)
            manifest = self._table_manifests(table.name).get(path) or {}
        else:
            manifest = self.lake.read_json(path) or {}
        quarantined = int(manifest.get("quarantined", 0))
        held = sum(int(manifest.get(k, 0)) for k in ("replayed", "superseded", "pending"))
        lo, hi = (
            (0, UNBOUNDED)
            if pv.date is None or pv.client is None
            else self._volume_bounds(table, pv.date, pv.client, suite_meta)
        )
        if int(manifest.get("pending", 0)):
            # Rows waiting for their parents are part of the day: a partition missing them is
            # incomplete (and reported pending), not abnormally small.
            lo = 0
        total = pv.rows + quarantined
        return {
            "manifest_landed": int(manifest.get("landed", -1)),
            # No manifest: the data did not come through the landing; make reconciliation fail.
            "read": self._reconciliation(table, manifest, pv.date, pv.client) if manifest else -1,
            "quarantined": quarantined,
            "held": held,
            "accounted": pv.rows + quarantined + held,
            "quarantine_ratio": round(quarantined / total, 4) if total else 0.0,
            "quarantine_min_rows": self.settings.quarantine_min_rows,
            "volume_min": lo,
            "volume_max": hi,
        }

    def _profile(self, con: Any, name: str, batch: _Batch, mart: bool) -> Any:
        import pandas as pd

        doc = load_partition_suite_doc(name)  # once per batch, not per partition
        stats = profile_statistics(doc)
        values: dict[str, dict[str, Any]] = {}
        if stats:
            select = ", ".join(f"{sql} AS {ident(col)}" for col, sql in stats.items())
            cur = con.execute(f"SELECT {ROW_PARTITION}, {select} FROM part GROUP BY ALL")
            names = [d[0] for d in cur.description]
            values = {r[0]: dict(zip(names[1:], r[1:], strict=True)) for r in cur.fetchall()}
        rows = []
        for pv in batch.partitions:
            if pv.error:
                continue
            row: dict[str, Any] = {PROFILE_KEY: pv.key, "rows": pv.rows}
            if not mart:
                row |= self._landing_profile(TABLES[name], pv, doc.get("meta") or {})
            row |= values.get(pv.key, dict.fromkeys(stats))
            rows.append(row)
        return pd.DataFrame(rows)

    # -- validation ------------------------------------------------------------------------------
    def _validate_batch(self, name: str, batch: _Batch, mart: bool) -> list[Any]:
        """Validate one batch: row rules over its rows, partition rules over its profile."""
        con = self.lake.duckdb()
        try:
            counts = self._load_rows(con, name, batch, mart)
            for pv in batch.partitions:
                pv.rows = counts.get(pv.key, 0)
            params: dict[str, Any] = {"quarantine_threshold": self.settings.quarantine_threshold}
            if not mart:
                table = TABLES[name]
                parents_read = self._add_lookups(con, table)
                versions = self._data_versions({p for read in parents_read.values() for p in read})
                for pv in batch.partitions:
                    pv.parents = {
                        f"{t}/{d}/{c}": versions[(t, d, c)] for t, d, c in sorted(parents_read.get(pv.key, ()))
                    }
            rows = con.execute(f"SELECT * FROM part ORDER BY {ROW_PARTITION}").df()
            profile = self._profile(con, name, batch, mart)
        finally:
            con.close()
        row_result, row_id = self._run(name, ROW_PARTITION, rows, params, batch.name)
        part_result, part_id = self._run(name + PARTITION_SUFFIX, PROFILE_KEY, profile, params, batch.name)
        by_key = {p[PROFILE_KEY]: p for p in profile.to_dict("records")}
        # Each result read once, not once per partition: a 2,324-partition batch spent 3 s
        # re-reading every result's config and re-grouping its unexpected rows per partition.
        row_rules = [_Judged.of(r, ROW_PARTITION) for r in row_result.results]
        partition_rules = [_Judged.of(r, PROFILE_KEY) for r in part_result.results]
        for pv in batch.partitions:
            if pv.error:
                continue
            pv.outcomes = [j.row_outcome(pv) for j in row_rules]
            pv.outcomes += [j.partition_outcome(by_key.get(pv.key, {}), pv) for j in partition_rules]
        return [row_id, part_id]

    def _batches(self, name: str, partitions: list[tuple[str | None, str | None]], mart: bool) -> list[_Batch]:
        """Partitions in batches of at most MAX_BATCH_ROWS rows (read from the Parquet footers)."""
        zone = "curated" if mart else "raw"
        pvs = [PartitionValidation(name, d, c) for d, c in partitions]
        uris: dict[str, str] = {}
        paths = {pv.key: self.lake.data_file(zone, name, pv.date, None if mart else pv.client) for pv in pvs}
        present = self.lake.existing(list(paths.values()))
        # On S3 the batch's files are fetched together and read (hashed, counted, validated) from
        # the copies: one partition at a time, each was several round trips per read
        ordered = sorted(present)
        local = dict(zip(ordered, self._mirror.uris(ordered), strict=True)) if self._mirror else {}
        for pv in pvs:
            path = paths[pv.key]
            if path not in present:
                pv.error = f"no data file at {self.lake.uri(path)}"
                continue
            if not mart:
                pv.data_sha256 = sha256_file(local[path]) if path in local else self.lake.sha256(path)
            uris[pv.key] = local.get(path) or self.lake.uri(path)
        sizes: dict[str, int] = {}
        if uris:
            con = self.lake.duckdb()
            try:
                files = ", ".join(map(literal, uris.values()))
                by_uri = dict(
                    con.execute(f"SELECT file_name, num_rows FROM parquet_file_metadata([{files}])").fetchall()
                )
            finally:
                con.close()
            sizes = {k: int(by_uri.get(u, 0)) for k, u in uris.items()}
        out: list[_Batch] = []
        current: list[PartitionValidation] = []
        rows = 0
        for pv in pvs:
            if current and rows + sizes.get(pv.key, 0) > MAX_BATCH_ROWS:
                out.append(self._batch(name, current, uris))
                current, rows = [], 0
            current.append(pv)
            rows += sizes.get(pv.key, 0)
        if current:
            out.append(self._batch(name, current, uris))
        return out

    @staticmethod
    def _batch(name: str, pvs: list[PartitionValidation], uris: dict[str, str]) -> _Batch:
        keys = [pv.key for pv in pvs]
        label = "-".join([name, keys[0].replace("/", "-")]) if keys[0] != name else name
        if len(keys) > 1:
            label += f"-and-{len(keys) - 1}-more"
        return _Batch(label, pvs, {k: uris[k] for k in keys if k in uris})

    def validate_and_record(
        self, table: str, partitions: list[tuple[str | None, str | None]], mart: bool = False
    ) -> list[PartitionValidation]:
        """Validate the partitions in batches, write each one's gate status, then build the Data Docs once."""
        out: list[PartitionValidation] = []
        identifiers: list[Any] = []
        self._snapshots, self._manifests, self._entries, self._histories = {}, {}, {}, {}
        copies = contextlib.ExitStack()
        if self.lake.is_s3:
            self._mirror = Mirror(self.lake, copies.enter_context(staging_dir(self.settings)))
        try:
            for batch in self._batches(table, partitions, mart):
                started = time.monotonic()
                ids: list[Any] = []
                if any(pv.error is None for pv in batch.partitions):
                    try:
                        ids = self._validate_batch(table, batch, mart)
                    except SuiteError:
                        raise
                    except Exception as exc:  # fail closed: an unvalidated partition must not look valid
                        for pv in batch.partitions:
                            pv.error = pv.error or f"validation crashed: {exc!r}"[:500]
                identifiers += ids
                url = self.docs_url(ids[0]) if ids else None
                seconds = round((time.monotonic() - started) / max(1, len(batch.partitions)), 3)
                for pv in batch.partitions:
                    pv.docs_url, pv.seconds = (url if pv.error is None else None), seconds
                    gate.record(self.lake, table, pv.passed, pv.details(), pv.date, pv.client)
                    out.append(pv)
        finally:
            self._snapshots, self._manifests, self._entries, self._histories = None, None, None, None
            self._mirror = None
            copies.close()
        if identifiers:
            with _DEFER_LOCK:
                block = _DEFERRED if _DEFERRED is not None and _DEFERRED[0] == str(self.docs_dir) else None
                if block is not None:
                    block[1].extend(identifiers)
            if block is None:
                self.build_docs(identifiers)
        return out

    def landed_partitions(
        self, table: str, partitions: list[tuple[str | None, str | None]]
    ) -> set[tuple[str | None, str | None]]:
        """Those of `partitions` the landing wrote (asked together: a check names a run's whole
        rectangle of dates and clients)."""
        paths = {manifest_path(self.lake, table, d, c): (d, c) for d, c in partitions}
        return {paths[p] for p in self.lake.existing(list(paths))}

    # -- stale verdicts ---------------------------------------------------------------------------
    def _data_versions(
        self, partitions: set[tuple[str, str | None, str | None]]
    ) -> dict[tuple[str, str | None, str | None], str | None]:
        """The sha256 the landing recorded for each partition's data file (None if never
        landed), the manifests read in one batch (on S3 concurrent GETs: one at a time, a
        check's parents were 24 requests in turn)."""
        keys = sorted(partitions, key=str)
        docs = self.lake.read_jsons([manifest_path(self.lake, t, d, c) for t, d, c in keys])
        return {k: (doc or {}).get("sha256") for k, doc in zip(keys, docs, strict=True)}

    def stale(self, table: str) -> list[tuple[str | None, str | None]]:
        """Partitions whose verdict was computed from something that has changed since: their own
        data file, or a parent partition their foreign-key checks read. Verdicts from before
        versions were recorded are taken as they are."""
        statuses = gate.statuses(self.lake, table)
        # every data version the verdicts name, read together (one manifest each)
        wanted: set[tuple[str, str | None, str | None]] = set()
        for s in statuses:
            if s.get("data_sha256"):
                wanted.add((table, s.get("date"), s.get("client")))
                wanted |= {tuple(ref.split("/", 2)) for ref in (s.get("parents") or {})}
        # read by listing each table's manifests: on S3 those this process read before under the
        # same ETag are not fetched again (every check of a run asks)
        listed = self.lake.read_jsons_matching(
            [manifest_path(self.lake, t, "*", "*") for t in sorted({k[0] for k in wanted})]
            + [manifest_path(self.lake, t, None, None) for t in sorted({k[0] for k in wanted if k[1] is None})]
        )
        # every (table, date, client) asked below is in `wanted`
        versions = {k: (listed.get(manifest_path(self.lake, *k)) or {}).get("sha256") for k in wanted}

        out = []
        for s in statuses:
            d, c = s.get("date"), s.get("client")
            if not s.get("data_sha256"):  # a mart's verdict, or one recorded before versions were
                continue
            changed = versions[(table, d, c)] not in (None, s["data_sha256"])
            for ref, sha in (s.get("parents") or {}).items():
                changed = changed or versions[tuple(ref.split("/", 2))] != sha
            if changed:
                out.append((d, c))
        return sorted(out, key=lambda k: (k[0] or "", k[1] or ""))

    def revalidate_stale(self, tables: list[str]) -> dict[str, list[PartitionValidation]]:
        """Recompute every stale verdict of `tables`; returns what was revalidated, per table."""
        out: dict[str, list[PartitionValidation]] = {}
        for t in tables:
            stale = self.stale(t)
            if stale:
                out[t] = self.validate_and_record(t, stale)
        return out

    # -- Data Docs -------------------------------------------------------------------------------
    def docs_url(self, identifier: Any) -> str | None:
        urls = self.context().get_docs_sites_urls(
            resource_identifier=identifier, site_name=DOCS_SITE, only_if_exists=False
        )
        return urls[0]["site_url"] if urls else None

    def build_docs(self, identifiers: list[Any] | None = None) -> Path:
        ctx = self.context()
        ctx.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=identifiers)
        index = self.docs_dir / "index.html"
        built = None
        if identifiers is not None:
            built = [index] + [Path(u.removeprefix("file://")) for i in identifiers if (u := self.docs_url(i))]
        data_docs.make_offline(self.docs_dir, built)
        return index


# ---- Data Docs of many checks, built once -------------------------------------------------------------

# Building Data Docs costs 0.4-2 s a call whatever it renders (GX compiles its page templates
# afresh each time and indexes every validation); a `run` that validates five assets pays it
# once, at its end, inside `docs_deferred`, and so does each Dagster run's process (the
# LakehouseResource opens a block for the run). Outside a block every check builds its own pages.
_DEFER_LOCK = threading.Lock()
# The open block's Data Docs folder and the validations it collected; None outside a block. A
# check of another lake inside the block (another folder) builds its own pages.
_DEFERRED: tuple[str, list[Any]] | None = None


@contextmanager
def docs_deferred(lake: Lake, settings: Settings) -> Iterator[None]:
    """Validations inside the block record their Data Docs pages' addresses (check metadata links
    them) and the pages are built once when it ends, however it ends."""
    global _DEFERRED
    quality = Quality(lake, settings)
    with _DEFER_LOCK:
        nested = _DEFERRED is not None  # the outer block builds
        if not nested:
            _DEFERRED = (str(quality.docs_dir), [])
    if nested:
        yield
        return
    try:
        yield
    finally:
        with _DEFER_LOCK:
            identifiers = _DEFERRED[1] if _DEFERRED is not None else []
            _DEFERRED = None
        if identifiers:
            quality.build_docs(identifiers)


# ---- summaries ------------------------------------------------------------------------------------


def gate_counts(lake: Lake, tables: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """table -> passed / blocked partition counts and the blocked keys, from the gate."""
    out: dict[str, dict[str, Any]] = {}
    for name in tables or [*TABLES, *(n for n in suite_names() if n not in TABLES)]:
        docs = gate.statuses(lake, name)
        if not docs:
            continue
        blocked = sorted(
            "/".join(p for p in (d.get("date"), d.get("client")) if p) or name
            for d in docs
            if not d.get("passed", True)
        )
        warned = sum(1 for d in docs if d.get("passed", True) and d.get("warnings"))
        reasons: dict[str, int] = {}
        for d in docs:
            for f in d.get("failed") or []:
                reasons[f["label"]] = reasons.get(f["label"], 0) + 1
            if d.get("error"):
                reasons["error"] = reasons.get("error", 0) + 1
        out[name] = {
            "passed": len(docs) - len(blocked),
            "blocked": len(blocked),
            "warned": warned,
            "blocked_keys": blocked,
            "reasons": reasons,
        }
    return out


def summary_section(settings: Settings) -> Any:
    """A rich table for `delivery-lake run --summary`: validation results per table."""
    from rich.table import Table as RichTable

    counts = gate_counts(Lake.from_settings(settings))
    if not counts:
        return "quality gate: no validation results yet"
    t = RichTable(title=f"Quality gate (GX suites; Data Docs: {settings.data_dir / 'data_docs' / 'index.html'})")
    for col in ("table", "partitions passed", "blocked", "with warnings", "top blocking expectations"):
        t.add_column(col, justify="left" if col in ("table", "top blocking expectations") else "right")
    for name, c in counts.items():
        top = ", ".join(f"{r} {n}" for r, n in sorted(c["reasons"].items(), key=lambda kv: -kv[1])[:3])
        t.add_row(name, str(c["passed"]), str(c["blocked"]), str(c["warned"]), top)
    return t
