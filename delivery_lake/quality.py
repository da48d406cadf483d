"""Great Expectations 1.x suites run per partition, recorded in the partition gate.

Suites live as reviewable JSON files in `expectations/<table or mart>.json` (GX's own
suite format) and are loaded into an ephemeral GX context at run time; only validation
results (JSON) and Data Docs (HTML) are written to disk, under `DATA_DIR/gx/validations`
and `DATA_DIR/data_docs`.

Severity is GX 1.x's own per-expectation `severity` field:
- `critical` (GX's default): ERROR. A failure blocks the partition in the gate.
- `warning` or `info`: WARN. Reported (check metadata, Data Docs, summary), never blocks.

Per partition: its Parquet file is read with DuckDB into a small pandas frame (one
partition, never the whole table). What GX cannot see from one partition is computed in
DuckDB/Python and passed in as suite parameters (`{"$PARAMETER": name}` in the suite):

- `<column>_parents`: parent keys that exist among this partition's values (a DuckDB
  semi-join against the parent table), for `expect_column_values_to_be_in_set` foreign keys;
- `keys_elsewhere`: keys of this partition also present in another partition of the table;
- `read`, `quarantined`, `manifest_landed`: from the inbox index and landing manifest
  (row-count reconciliation and the quarantine ratio, see `gx_expectations.py`);
- `quarantine_threshold`: `Settings.quarantine_threshold`;
- `volume_min`, `volume_max`: a band around the median row count of the same client's
  previous days (suite `meta.volume`).

Every validated partition is written to the gate (`gate.record`), passed or not; a
validation that crashes records the partition as blocked (fail closed).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delivery_lake import data_docs, gate
from delivery_lake.config import Settings
from delivery_lake.contract import TABLES, Table
from delivery_lake.inbox import InboxIndex
from delivery_lake.landing import manifest_path
from delivery_lake.sql import ident
from delivery_lake.storage import Lake

SUITES_DIR = Path(__file__).resolve().parent.parent / "expectations"
ERROR, WARN = "ERROR", "WARN"
DOCS_SITE = "lake"
SAMPLE_SIZE = 5
# Used when a suite has no meta.volume section.
DEFAULT_VOLUME = {"window_days": 7, "min_history": 3, "low": 0.5, "high": 2.0}
UNBOUNDED = 10**12


# ---- suites ---------------------------------------------------------------------------------


def suite_path(name: str) -> Path:
    return SUITES_DIR / f"{name}.json"


def load_suite_doc(name: str) -> dict[str, Any]:
    return json.loads(suite_path(name).read_text())


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.json"))


def severity_of(gx_severity: Any) -> str:
    value = getattr(gx_severity, "value", gx_severity) or "critical"
    return ERROR if str(value).lower() == "critical" else WARN


# ---- results --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One expectation's result on one partition, in the shape the check metadata shows."""

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

    @property
    def key(self) -> str:
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


def _outcome(res: Any) -> Outcome:
    cfg = res.expectation_config
    kw = dict(cfg.kwargs)
    column = kw.get("column") or (
        f"{kw['column_A']}, {kw['column_B']}" if "column_A" in kw else ", ".join(kw.get("column_list") or []) or None
    )
    result = res.result or {}
    error = None
    info = res.exception_info or {}
    infos = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for i in infos:
        if i.get("raised_exception"):
            error = str(i.get("exception_message") or "raised an exception").strip().splitlines()[0][:300]
    observed = result.get("observed_value")
    sample = result.get("partial_unexpected_list") or []
    return Outcome(
        expectation=cfg.type,
        column=column,
        severity=severity_of(getattr(cfg, "severity", None)),
        success=bool(res.success),
        unexpected_count=result.get("unexpected_count"),
        unexpected_percent=round(result["unexpected_percent"], 3)
        if result.get("unexpected_percent") is not None
        else None,
        sample=[str(v) for v in sample[:SAMPLE_SIZE]],
        observed=None if observed is None else str(observed),
        error=error,
    )


# ---- the runner ------------------------------------------------------------------------------


class Quality:
    """Validates partitions of one lake and writes the gate; one GX context per instance."""

    def __init__(self, lake: Lake, settings: Settings):
        self.lake, self.settings = lake, settings
        self._ctx: Any = None
        self._checkpoints: dict[str, Any] = {}
        # Key snapshots shared by the partitions of one `validate_and_record` call: every
        # partition needs the other partitions' keys and the parent keys, and re-reading them
        # per partition is quadratic in object-store reads.
        self._snapshots: dict[tuple[str, ...], Any] | None = None
        # Landing manifests listed and read during the same batch (every partition's
        # reconciliation and volume bounds read its neighbours' and its history's).
        self._manifests: dict[str, dict[str, dict[str, Any]]] | None = None
        # Parent fact partitions the current validation's foreign-key check read.
        self._read_parents: set[tuple[str, str, str]] = set()

    def _snapshot(self, con: Any, key: tuple[str, ...], sql: str) -> str:
        """A relation name for `sql`: a view on this connection, or a cached Arrow copy during a batch."""
        name = "snap_" + "_".join(key).replace("-", "_")
        if self._snapshots is None:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")
            return name
        if key not in self._snapshots:
            self._snapshots[key] = con.sql(sql).to_arrow_table()
        con.register(name, self._snapshots[key])
        return name

    def _landing_manifests(self, pattern: str) -> dict[str, dict[str, Any]]:
        """Path -> document of the landing manifests matching `pattern` (cached during a batch)."""
        if self._manifests is not None and pattern in self._manifests:
            return self._manifests[pattern]
        found = {p: self.lake.read_json(p) or {} for p in self.lake.glob(pattern)}
        if self._manifests is not None:
            self._manifests[pattern] = found
        return found

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
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        import delivery_lake.gx_expectations  # noqa: F401  (registers the custom expectations)

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
            self._suite(name)
        return self._ctx

    def _suite(self, name: str) -> Any:
        from great_expectations.core.expectation_suite import ExpectationSuite
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        ctx = self._ctx
        doc = load_suite_doc(name)
        expectations = [
            ExpectationConfiguration(
                type=e["type"],
                kwargs=e.get("kwargs", {}),
                meta=e.get("meta"),
                notes=e.get("notes"),
                severity=e.get("severity", "critical"),
            ).to_domain_obj()
            for e in doc["expectations"]
        ]
        suite = ctx.suites.add(
            ExpectationSuite(name=name, expectations=expectations, meta=doc.get("meta") or {}, notes=doc.get("notes"))
        )
        return suite

    def checkpoint(self, name: str) -> Any:
        if name not in self._checkpoints:
            import great_expectations as gx

            ctx = self.context()
            batch = (
                ctx.data_sources.get("lake").add_dataframe_asset(name).add_batch_definition_whole_dataframe("partition")
            )
            vd = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=batch, suite=ctx.suites.get(name))
            )
            self._checkpoints[name] = ctx.checkpoints.add(
                gx.Checkpoint(
                    name=name,
                    validation_definitions=[vd],
                    actions=[],
                    result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE},
                )
            )
        return self._checkpoints[name]

    # -- parameters ------------------------------------------------------------------------------
    def _read_partition(self, con: Any, table: Table, uri: str) -> Any:
        cols = ", ".join(
            f"CAST({ident(c.name)} AS DOUBLE) AS {ident(c.name)}" if c.dtype == "decimal" else ident(c.name)
            for c in table.columns
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE part AS SELECT {cols} FROM read_parquet('{uri}')")
        return con.execute("SELECT * FROM part").df()

    def _fk_parameters(self, con: Any, table: Table) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for c in table.columns:
            if not c.references or c.references[0] == table.name:
                continue
            parent = TABLES[c.references[0]]
            src = self.lake.glob_uri("raw", parent.name, parent.is_fact)
            exists = (
                self.lake.exists(self.lake.data_file("raw", parent.name))
                if not parent.is_fact
                else bool(self.lake.list_dates("raw", parent.name))
            )
            if not exists:
                out[f"{c.name}_parents"] = []
                continue
            pk = ident(c.references[1])
            if parent.is_fact:
                # Where each parent key lives: the verdict records the versions of the parent
                # partitions it read, so a change there makes it stale (see `stale`).
                sources = [
                    f"SELECT {pk} AS k, CAST(date AS VARCHAR) AS d, client AS c "
                    f"FROM read_parquet('{src}', hive_partitioning = true)"
                ]
            else:
                sources = [f"SELECT {pk} AS k, NULL::VARCHAR AS d, NULL::VARCHAR AS c FROM read_parquet('{src}')"]
            snap = self._snapshot(
                con,
                ("fk", parent.name, c.references[1]),
                f"SELECT DISTINCT k, d, c FROM ({' UNION ALL '.join(sources)})",
            )
            rows = con.execute(
                f"SELECT DISTINCT k, d, c FROM {snap} WHERE k IN (SELECT {ident(c.name)} FROM part)"
            ).fetchall()
            out[f"{c.name}_parents"] = sorted({r[0] for r in rows})
            if parent.is_fact:
                self._read_parents.update((parent.name, d, cl) for _k, d, cl in rows if d is not None)
        return out

    def _keys_elsewhere(self, con: Any, table: Table, date: str | None, client: str | None) -> list[str]:
        if not table.is_fact:
            return []
        key = ident(table.key)
        snap = self._snapshot(
            con,
            ("keys", table.name),
            f"""SELECT DISTINCT {key} AS k, CAST(date AS VARCHAR) AS d, client AS c
                FROM read_parquet('{self.lake.glob_uri("raw", table.name, True)}', hive_partitioning = true)""",
        )
        rows = con.execute(
            f"SELECT DISTINCT k FROM {snap} WHERE k IN (SELECT {key} FROM part) AND NOT (d = ? AND c = ?)",
            [date, client],
        ).fetchall()
        return sorted(r[0] for r in rows)

    def _reconciliation(self, table: Table, manifest: dict[str, Any], date: str | None, client: str | None) -> int:
        """Rows this partition's source files hold for it, as the inbox index counted them.

        Per partition, not per file: other partitions of the same files may land in later runs,
        and this verdict must not depend on them.
        """
        by_file = manifest.get("by_file", {})
        paths = [Path(f) for f in by_file if Path(f).exists()]
        entries = (
            {e.path: e for e in InboxIndex(self.lake, self.settings.inbox_dir, table).entries(paths=paths)}
            if paths
            else {}
        )
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

    def _volume_bounds(self, table: Table, date: str, client: str, suite_meta: dict[str, Any]) -> tuple[int, int]:
        vol = DEFAULT_VOLUME | (suite_meta.get("volume") or {})
        history = []
        pattern = self.lake.meta_path("landing", table.name) + f"/date=*/client={client}.json"
        for path, doc in self._landing_manifests(pattern).items():
            d = path.split("/")[-2].removeprefix("date=")
            if d < date:
                history.append((d, int(doc.get("landed", 0))))
        recent = [n for _, n in sorted(history)[-int(vol["window_days"]) :]]
        if len(recent) < int(vol["min_history"]):
            return 0, UNBOUNDED
        median = statistics.median(recent)
        return int(median * float(vol["low"])), int(median * float(vol["high"])) + 1

    def raw_parameters(self, con: Any, table: Table, date: str | None, client: str | None) -> dict[str, Any]:
        manifest = self.lake.read_json(manifest_path(self.lake, table.name, date, client)) or {}
        quarantined = int(manifest.get("quarantined", 0))
        held = sum(int(manifest.get(k, 0)) for k in ("replayed", "superseded", "pending"))
        read = self._reconciliation(table, manifest, date, client)
        params: dict[str, Any] = {
            "quarantined": quarantined,
            "manifest_landed": int(manifest.get("landed", -1)),
            # No manifest: the data did not come through the landing; make reconciliation fail.
            "read": read if manifest else -1,
            "held": held,
            "quarantine_threshold": self.settings.quarantine_threshold,
            "quarantine_min_rows": self.settings.quarantine_min_rows,
            "keys_elsewhere": self._keys_elsewhere(con, table, date, client),
            "partition_client": [client],
            **self._fk_parameters(con, table),
        }
        lo, hi = (
            (0, UNBOUNDED)
            if date is None or client is None
            else self._volume_bounds(table, date, client, load_suite_doc(table.name).get("meta", {}))
        )
        if int(manifest.get("pending", 0)):
            # Rows waiting for their parents are part of the day: a partition missing them is
            # incomplete (and reported pending), not abnormally small.
            lo = 0
        params |= {"volume_min": lo, "volume_max": hi}
        return params

    # -- validation ------------------------------------------------------------------------------
    def _run(self, suite: str, df: Any, params: dict[str, Any], run_name: str) -> tuple[list[Outcome], Any]:
        import great_expectations as gx

        result = self.checkpoint(suite).run(
            batch_parameters={"dataframe": df},
            expectation_parameters=params,
            run_id=gx.RunIdentifier(run_name=run_name, run_time=datetime.now(UTC)),
        )
        identifier, vr = next(iter(result.run_results.items()))
        return [_outcome(r) for r in vr.results], identifier

    def validate_raw(
        self, table_name: str, date: str | None = None, client: str | None = None
    ) -> tuple[PartitionValidation, Any]:
        table = TABLES[table_name]
        started = time.monotonic()
        pv = PartitionValidation(table_name, date, client)
        identifier = None
        path = self.lake.data_file("raw", table_name, date, client)
        if not self.lake.exists(path):
            pv.error = f"no data file at {self.lake.uri(path)}"
            return pv, None
        pv.data_sha256 = self.lake.sha256(path)
        self._read_parents = set()
        con = self.lake.duckdb()
        try:
            df = self._read_partition(con, table, self.lake.uri(path))
            pv.rows = len(df)
            params = self.raw_parameters(con, table, date, client)
            pv.parents = {f"{t}/{d}/{c}": self._data_version(t, d, c) for t, d, c in sorted(self._read_parents)}
            pv.outcomes, identifier = self._run(
                table_name, df, params, "-".join(p for p in (table_name, date, client) if p)
            )
        finally:
            con.close()
        pv.seconds = round(time.monotonic() - started, 3)
        return pv, identifier

    def validate_mart(self, model: str, date: str | None = None) -> tuple[PartitionValidation, Any]:
        started = time.monotonic()
        pv = PartitionValidation(model, date, None)
        path = self.lake.data_file("curated", model, date)
        if not self.lake.exists(path):
            pv.error = f"no data file at {self.lake.uri(path)}"
            return pv, None
        con = self.lake.duckdb()
        try:
            # DECIMAL -> DOUBLE: GX's pandas range metrics want numbers, not Decimal objects.
            rel = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{self.lake.uri(path)}')").fetchall()
            cols = ", ".join(
                f"CAST({ident(n)} AS DOUBLE) AS {ident(n)}" if str(t).startswith("DECIMAL") else ident(n)
                for n, t, *_ in rel
            )
            df = con.execute(f"SELECT {cols} FROM read_parquet('{self.lake.uri(path)}')").df()
        finally:
            con.close()
        pv.rows = len(df)
        pv.outcomes, identifier = self._run(model, df, {}, "-".join(p for p in (model, date) if p))
        pv.seconds = round(time.monotonic() - started, 3)
        return pv, identifier

    def validate_and_record(
        self, table: str, partitions: list[tuple[str | None, str | None]], mart: bool = False
    ) -> list[PartitionValidation]:
        """Validate each partition, write its gate status, then build the Data Docs pages once."""
        out: list[PartitionValidation] = []
        identifiers: list[Any] = []
        self._snapshots, self._manifests = {}, {}
        try:
            self._validate_each(table, partitions, mart, out, identifiers)
        finally:
            self._snapshots, self._manifests = None, None
        if identifiers:
            self.build_docs(identifiers)
        return out

    def _validate_each(
        self,
        table: str,
        partitions: list[tuple[str | None, str | None]],
        mart: bool,
        out: list[PartitionValidation],
        identifiers: list[Any],
    ) -> None:
        for date, client in partitions:
            try:
                pv, ident = self.validate_mart(table, date) if mart else self.validate_raw(table, date, client)
            except Exception as exc:  # fail closed: an unvalidated partition must not look valid
                pv, ident = PartitionValidation(table, date, client, error=f"validation crashed: {exc!r}"[:500]), None
            if ident is not None:
                identifiers.append(ident)
                pv.docs_url = self.docs_url(ident)
            gate.record(self.lake, table, pv.passed, pv.details(), date, client)
            out.append(pv)

    def landed(self, table: str, date: str | None, client: str | None) -> bool:
        """Whether the landing wrote this partition (its manifest exists)."""
        return self.lake.exists(manifest_path(self.lake, table, date, client))

    # -- stale verdicts ---------------------------------------------------------------------------
    def _data_version(self, table: str, date: str | None, client: str | None) -> str | None:
        """The sha256 the landing recorded for a partition's data file (None if never landed)."""
        doc = self.lake.read_json(manifest_path(self.lake, table, date, client)) or {}
        return doc.get("sha256")

    def stale(self, table: str) -> list[tuple[str | None, str | None]]:
        """Partitions whose verdict was computed from something that has changed since: their own
        data file, or a parent partition their foreign-key checks read. Verdicts from before
        versions were recorded are taken as they are."""
        versions: dict[tuple[str, str | None, str | None], str | None] = {}

        def version(t: str, d: str | None, c: str | None) -> str | None:
            if (t, d, c) not in versions:
                versions[(t, d, c)] = self._data_version(t, d, c)
            return versions[(t, d, c)]

        out = []
        for s in gate.statuses(self.lake, table):
            d, c = s.get("date"), s.get("client")
            if not s.get("data_sha256"):  # a mart's verdict, or one recorded before versions were
                continue
            changed = version(table, d, c) not in (None, s["data_sha256"])
            for ref, sha in (s.get("parents") or {}).items():
                t, pd, pc = ref.split("/", 2)
                changed = changed or version(t, pd, pc) != sha
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
        data_docs.make_offline(self.docs_dir)
        return self.docs_dir / "index.html"


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
