"""The runner: builds table models into the curated zone, one build per model and date set,
scheduled so that a model starts as soon as the refs it reads are built."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, timedelta
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import duckdb

from delivery_lake import gate
from delivery_lake.config import Settings
from delivery_lake.contract import TABLES, carrier_only_parent
from delivery_lake.publish import publish_dates, publish_partition
from delivery_lake.storage import Lake, Mirror, staging_dir
from delivery_lake.transform.base import (
    HELD_CELLS,
    ZONE,
    GateBlocked,
    Model,
    ModelError,
    empty_source_sql,
    empty_sql,
    lit,
    quote,
    source_key,
    source_view,
)
from delivery_lake.transform.held import HeldCell, ParentLink, held_cells_sql, parent_links
from delivery_lake.transform.incremental import date_window
from delivery_lake.transform.project import Project
from delivery_lake.transform.python_models import ArrowStream, run_python_model

# Up to this many dates a build is small: models run side by side, an S3 build reads local copies,
# and each date is published by its own COPY; beyond it, dates are published together.
FEW_DATES = 7
# A raw fact input of at least MANY_FILES files holding at most HELD_ROWS rows in all (as
# estimated from SAMPLED_FILES of their footers) is read once into the build's memory instead
# of being read where it lies: a model's build scans its inputs several times (the view's bind,
# the parent check's anti join, the model's query), and what each scan costs is per file (a
# sparse history's 2,324 order partitions of 4 rows each took 0.3-0.5 s a scan), while what
# holding them costs is per row. Not for a full refresh of the benchmark lake (2,400 files of
# 1,500 orders each), which reads in place as before.
MANY_FILES = 64
HELD_ROWS = 500_000
SAMPLED_FILES = 16


def _short_window_days(window: tuple[str, str] | None) -> list[str] | None:
    """The dates of `window` when it spans a month or less (listed date by date), else None (a
    longer range, or none: one listing of the whole table is cheaper)."""
    if window is None:
        return None
    first, last = (date.fromisoformat(w) for w in window)
    if (last - first).days > 31:
        return None
    return [(first + timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]


@dataclass
class ModelResult:
    model: str
    dates: list[str | None] = field(default_factory=list)
    rows: int = 0
    rows_by_date: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, list[list[str | None]]] = field(default_factory=dict)
    # Blocked raw partitions read from their last version that passed the gate instead.
    served_last_good: dict[str, list[list[str | None]]] = field(default_factory=dict)
    # [date, client_id, reason] of the built dates whose input was held back (Runner._prepare).
    held_cells: list[list[str]] = field(default_factory=list)
    # Parent partitions read outside the lookback because a child of the built dates needed them.
    parents_found: dict[str, list[list[str]]] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: str | None = None
    removed: list[str] = field(default_factory=list)
    # A whole-table model whose inputs (and the project digest) are what its last build read
    # is not rebuilt: `up_to_date` is then set and rows come from that build's manifest.
    inputs: str | None = None
    up_to_date: bool = False


@dataclass
class _Reads:
    """What one build read besides its SQL, for its manifests: raw partitions left out or served
    from lastgood/, parent partitions found outside a lookback, and the held cells."""

    excluded: dict[str, list[list[str | None]]] = field(default_factory=dict)
    served_last_good: dict[str, list[list[str | None]]] = field(default_factory=dict)
    parents_found: dict[str, list[list[str]]] = field(default_factory=dict)
    held: set[HeldCell] = field(default_factory=set)
    # Raw fact -> the (date, client, file) it reads.
    files: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    # Every temp view the build defined, in order: its DuckDB SQL (a raw fact's is widened by a
    # parent lookup), or the Python model behind it. Another engine mirrors these (spark.py).
    defs: dict[str, str | Model] = field(default_factory=dict)
    # Local copies of what the build reads (an S3 lake, a build of a few dates); None: read in place.
    mirror: Mirror | None = None

    def define(self, con: duckdb.DuckDBPyConnection, name: str, sql: str) -> None:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(name)} AS {sql}")
        self.defs[name] = sql

    @staticmethod
    def note(record: dict[str, list[list[Any]]], source: str, parts: Iterable[list[Any]]) -> None:
        new = [list(p) for p in parts]
        if new:
            known = record.setdefault(source, [])
            known += [p for p in new if p not in known]

    def held_at(self, d: str | None) -> list[list[str]]:
        """The held cells of date `d` (all of them for a whole-table build), sorted."""
        return [list(c) for c in sorted(self.held) if d is None or c[0] == d]


class Runner:
    """Builds table models into the curated zone; views are compiled into the models that ref them.

    One runner is one snapshot: raw partitions and gate statuses are listed once, so every
    model of a run sees the same inputs even while new partitions land.
    """

    def __init__(self, lake: Lake, project: Project, settings: Settings | None = None):
        self.lake, self.project, self.settings = lake, project, settings or lake.settings
        self._partitions: dict[str, list[tuple[str, str]]] = {}
        self._blocked: dict[str, set[tuple[str | None, str | None]]] = {}
        # (table, first, last) -> the blocked partitions of a short window (read date by date)
        self._blocked_in: dict[tuple[str, str, str], set[tuple[str | None, str | None]]] = {}
        self._last_good: dict[tuple[str, str, str], bool] = {}
        # While build() runs, models get cursors of one in-memory DuckDB instance (temp tables
        # and views stay private to each): one thread pool and no new instance per model.
        self._shared: duckdb.DuckDBPyConnection | None = None

    @property
    def _on_spark_engine(self) -> bool:
        return self.settings is not None and self.settings.transform_engine == "spark"

    # -- inputs
    def raw_partitions(self, table: str, window: tuple[str, str] | None = None) -> list[tuple[str, str]]:
        """Landed (date, client) partitions of a raw fact, only those inside `window` when given."""
        if table in self._partitions:  # the whole table was listed already
            parts = self._partitions[table]
            return parts if window is None else [(d, c) for d, c in parts if window[0] <= d <= window[1]]
        days = _short_window_days(window)
        if days is None:  # long ranges: one listing of the table
            self._partitions[table] = self.lake.list_partitions("raw", table)
            return self.raw_partitions(table, window)
        return self.lake.list_partitions("raw", table, dates=days)

    def blocked(self, table: str, window: tuple[str, str] | None = None) -> set[tuple[str | None, str | None]]:
        """Partitions of `table` the gate blocks: all of them, or (once the whole table has not
        been read) those within `window` when it spans a month or less, read date by date."""
        if table in self._blocked:
            return self._blocked[table]
        days = _short_window_days(window)
        if days is not None and window is not None:
            if (table, *window) not in self._blocked_in:
                self._blocked_in[(table, *window)] = gate.blocked_partitions(self.lake, table, days)
            return self._blocked_in[(table, *window)]
        self._blocked[table] = gate.blocked_partitions(self.lake, table)
        return self._blocked[table]

    def available_dates(self, model: str, within: Iterable[str] | None = None) -> list[str]:
        """Dates any raw fact the model depends on has data for (what a full refresh builds);
        only those of `within` when given, which lists just their dates where they span a month
        or less (a day's run on S3 listed every table whole, in every model's step)."""
        wanted = None if within is None else sorted(set(within))
        if wanted is not None and not wanted:
            return []
        window = (wanted[0], wanted[-1]) if wanted else None
        found = {d for t in self.project.fact_sources(model) for d, _ in self.raw_partitions(t, window)}
        return sorted(found if wanted is None else found & set(wanted))

    def built_dates(self, model: str, within: Iterable[str]) -> list[str]:
        """The dates of `within` the partitioned model has a built file for (listed date by date
        for a month or less, else the model's whole listing)."""
        wanted = sorted(set(within))
        if len(wanted) > 31:
            return sorted(set(self.lake.list_dates(ZONE, model)) & set(wanted))
        files = self.lake.glob_many([self.lake.data_file(ZONE, model, d) for d in wanted])
        return sorted(f.rsplit("/date=", 1)[1].split("/", 1)[0] for f in files)

    def _last_rows(self, m: Model) -> int:
        """Rows of the model's latest built partition (0 if never built): its expected cost."""
        manifests = self.lake.list_build_manifests(ZONE, m.name)
        latest = max(manifests, key=lambda d: d or "", default=None)
        doc = self.lake.read_json(manifests[latest]) if manifests else None
        return int(doc.get("rows", 0)) if doc else 0

    def inputs_digest(self, m: Model) -> str | None:
        """What a whole-table model reads, as a digest: the project digest, the version of each
        raw dimension file (size and mtime, or ETag on S3) and the build id of each whole-table
        ref. None for models that read date partitions (they rebuild the dates they are given)
        and when an input is missing or gate-blocked (the build then says why)."""
        if m.is_partitioned:
            return None
        refs, sources = self.project.inputs(m.name)
        parts = [self.project.digest]
        for _, table in sorted(sources):
            if TABLES[table].is_fact or self.blocked(table):
                return None
            try:
                parts.append(f"raw.{table} {self.lake.version(self.lake.data_file('raw', table))}")
            except FileNotFoundError:
                return None
        for r in sorted(refs):
            if self.project[r].is_partitioned:
                return None
            doc = self.lake.read_json(self.lake.build_manifest(ZONE, r))
            if not doc:
                return None
            parts.append(f"{r} {doc['build_id']}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _uris(self, paths: list[str], reads: _Reads | None) -> list[str]:
        return (
            reads.mirror.uris(paths)
            if reads is not None and reads.mirror is not None
            else [self.lake.uri(p) for p in paths]
        )

    def _dimension_sql(self, table: str, con: duckdb.DuckDBPyConnection, reads: _Reads | None = None) -> str:
        if (None, None) in self.blocked(table):
            raise GateBlocked(f"raw.{table} is blocked by the quality gate; fix and re-land it first")
        path = self.lake.data_file("raw", table)
        if not self.lake.exists(path):
            if carrier_only_parent(table):
                # no courier or vehicle in a lake of carrier clients only: nothing to describe
                return empty_source_sql(table)
            raise GateBlocked(f"raw.{table} has not been landed")
        uri = lit(self._uris([path], reads)[0])
        found = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({uri})").fetchall()}
        # a file landed before a header-optional column existed reads it as empty
        cols = [
            quote(c.name) if c.name in found else f"NULL::{c.duckdb_type} AS {quote(c.name)}"
            for c in TABLES[table].columns
        ]
        return f"SELECT {', '.join(cols)} FROM read_parquet({uri})"

    def _has_last_good(self, table: str, d: str, c: str) -> bool:
        if (table, d, c) not in self._last_good:
            self._last_good[(table, d, c)] = self.lake.exists(self.lake.data_file("lastgood", table, d, c))
        return self._last_good[(table, d, c)]

    def _fact_files(
        self, table: str, window: tuple[str, str] | None
    ) -> tuple[list[tuple[str, str, str]], list[list[str]], list[list[str]]]:
        """What a build may read of a raw fact: (date, client, file) of each landed partition, a
        blocked one read from its last version that passed the gate when there is one (listed
        second), left out otherwise (listed third)."""
        blocked = self.blocked(table, window)
        files: list[tuple[str, str, str]] = []
        excluded: list[list[str]] = []
        served: list[list[str]] = []
        for d, c in self.raw_partitions(table, window):
            if (d, c) not in blocked and (d, None) not in blocked:
                files.append((d, c, self.lake.data_file("raw", table, d, c)))
            elif self._has_last_good(table, d, c):
                files.append((d, c, self.lake.data_file("lastgood", table, d, c)))
                served.append([d, c])
            else:
                excluded.append([d, c])
        return files, served, excluded

    def _files_sql(
        self, table: str, paths: list[str], where: str = "", reads: _Reads | None = None, ordered: bool = False
    ) -> str:
        """The rows of a raw fact's `paths`; `ordered`: in the order a scan of them yields (their
        (date, client) order, as listed, then each file's own) spelled out, for a temp table."""
        if not paths:
            return empty_source_sql(table)
        cols = ", ".join(quote(c) for c in TABLES[table].column_names)
        return (
            f'SELECT {cols}, "date" FROM read_parquet([{", ".join(lit(u) for u in self._uris(paths, reads))}], '
            # by name: partitions landed before a header-optional column existed read it as empty
            f"hive_partitioning = true, hive_types = {{'date': DATE, 'client': VARCHAR}}, union_by_name = true"
            + (", file_row_number = true)" if ordered else ")")
            + where
            + (' ORDER BY "date", client, file_row_number' if ordered else "")
        )

    def _curated_sql(self, m: Model, window: tuple[str, str] | None, reads: _Reads) -> str:
        if not m.is_partitioned:
            path = self.lake.data_file(ZONE, m.name)
            if not self.lake.exists(path):
                raise ModelError(f"{m.name} has not been built yet (needed downstream); build it first")
            doc = self.lake.read_json(self.lake.build_manifest(ZONE, m.name)) or {}
            reads.held |= {(str(d), str(c), str(r)) for d, c, r in doc.get("held_cells") or []}
            return f"SELECT * FROM read_parquet({lit(self._uris([path], reads)[0])})"
        dates = [d for d in self.lake.list_dates(ZONE, m.name) if not window or window[0] <= d <= window[1]]
        # What the gate kept out of (or served from lastgood/ to) this model's input stays on its
        # record too, and so do the cells the input held back: a reader of a held cell holds it.
        for d in dates:
            doc = self.lake.read_json(self.lake.build_manifest(ZONE, m.name, d)) or {}
            for source, parts in (doc.get("excluded_partitions") or {}).items():
                reads.note(reads.excluded, source, parts)
            for source, parts in (doc.get("served_last_good") or {}).items():
                reads.note(reads.served_last_good, source, parts)
            reads.held |= {(str(d), str(c), str(r)) for d, c, r in doc.get("held_cells") or []}
        if not dates:
            return empty_sql(m.columns)
        files = ", ".join(lit(u) for u in self._uris([self.lake.data_file(ZONE, m.name, d) for d in dates], reads))
        cols = ", ".join(quote(c.name) for c in m.columns)
        # The date column is inside each file; hive parsing is off so it is not read twice.
        return f"SELECT {cols} FROM read_parquet([{files}], hive_partitioning = false)"

    def _fact_sql(self, con: duckdb.DuckDBPyConnection, table: str, paths: list[str], reads: _Reads) -> str:
        """What a build reads of raw fact `table` at `paths`: the files where they lie, or, when
        they are many small files (MANY_FILES, HELD_ROWS), a temp table of the build's
        connection they were read into once. Not for Spark, which reads the lake itself."""
        if self._on_spark_engine or len(paths) < MANY_FILES:
            return self._files_sql(table, paths, reads=reads)
        # Rows estimated from SAMPLED_FILES footers spread over the list: every footer would be one
        # more pass over the files (a GET each on S3) for a full refresh then read in place anyway.
        uris = self._uris(paths, reads)
        sample = uris[:: max(1, len(uris) // SAMPLED_FILES)][:SAMPLED_FILES]
        rows = con.execute("SELECT sum(num_rows) FROM parquet_file_metadata(?)", [sample]).fetchone()[0]  # type: ignore[index]
        if (rows or 0) * len(uris) / len(sample) > HELD_ROWS:
            return self._files_sql(table, paths, reads=reads)
        held = quote(f"__held_{table}")
        # In the scan's order, spelled out: a parallel insert that keeps it by itself held every
        # file's batch in memory (+280 MB for 2,655 delivery files of 3 rows each).
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {held} AS {self._files_sql(table, paths, reads=reads, ordered=True)}"
        )
        return f"SELECT * FROM {held}"

    def _resolve_parents(
        self, con: duckdb.DuckDBPyConnection, link: ParentLink, dates: list[str], windowed: bool, reads: _Reads
    ) -> None:
        """Hold the cells of child rows (of the built dates) whose parent is not readable.

        The landing lets a child into raw only once its parent is in raw, so a parent key the
        model's view of the parent lacks either landed outside the parent's lookback, or sits in a
        partition the gate keeps out (or that was removed). The lookback is only an optimisation:
        keys it misses are looked up across every readable parent partition, reading the key
        column alone, and the rows that hold them are added to the parent's view. A child whose
        parent is still not found is never computed with null parent attributes: its cell is held.
        """
        child, parent = quote(source_view("raw", link.child)), quote(source_view("raw", link.parent))
        col, key = quote(link.column), quote(link.key)
        client = quote(TABLES[link.child].client_column or "client_id")
        built = f' AND c."date" IN ({", ".join(f"DATE {lit(d)}" for d in dates)})' if dates else ""
        missing, found = f"__missing_{link.child}_{link.column}", f"__found_{link.child}_{link.column}"
        # An anti join on the key columns: the scans of both views read nothing else.
        con.execute(
            f'CREATE TEMP TABLE {missing} AS SELECT c."date" AS d, c.{client} AS client_id, c.{col} AS k '
            f"FROM {child} AS c ANTI JOIN {parent} AS p ON p.{key} = c.{col} WHERE c.{col} IS NOT NULL{built}"
        )
        if not con.execute(f"SELECT count(*) FROM {missing}").fetchone()[0]:  # type: ignore[index]
            return
        con.execute(f"CREATE TEMP TABLE {found} AS SELECT d, client_id AS client, k FROM {missing} WHERE false")
        if windowed:
            readable, served, _ = self._fact_files(link.parent, None)
            read = {(d, c) for d, c, _ in reads.files[link.parent]}
            others = {(d, c): f for d, c, f in readable if (d, c) not in read}
            if others:
                con.execute(
                    f'INSERT INTO {found} SELECT DISTINCT "date", client, {key} FROM read_parquet('
                    f"[{', '.join(lit(self.lake.uri(f)) for f in others.values())}], hive_partitioning = true, "
                    f"hive_types = {{'date': DATE, 'client': VARCHAR}}) WHERE {key} IN (SELECT k FROM {missing})"
                )
            parts = [
                (str(d), str(c))
                for d, c in con.execute(f"SELECT DISTINCT d, client FROM {found} ORDER BY ALL").fetchall()
            ]
            if parts:
                source = source_key("raw", link.parent)
                reads.note(reads.parents_found, source, [[d, c] for d, c in parts])
                reads.note(reads.served_last_good, source, [p for p in served if tuple(p) in parts])
                # Only the rows of the keys looked for: the rest of those partitions lies outside
                # the lookback, and a model counting parents over its window must not see it.
                extra = self._files_sql(
                    link.parent, [others[p] for p in parts], f" WHERE {key} IN (SELECT k FROM {found})", reads
                )
                view = source_view("raw", link.parent)
                reads.define(con, view, f"{reads.defs[view]} UNION ALL {extra}")
        reason = f"parent unavailable: {source_key('raw', link.parent)}"
        for d, c, n in con.execute(
            f"SELECT d, client_id, count(*) FROM {missing} ANTI JOIN {found} USING (k) GROUP BY ALL"
        ).fetchall():
            reads.held.add((str(d), str(c), f"{reason} ({n} row{'s' if n != 1 else ''})"))

    def _prepare(
        self, con: duckdb.DuckDBPyConnection, m: Model, dates: list[str], mirror: Mirror | None = None
    ) -> _Reads:
        """The model's inputs as temp views; with `dates`, each partitioned input covers only
        those dates and its own lookback before them. Also `held_cells`: the cells of the built
        dates whose input is held back (a blocked raw partition of the date itself, a child whose
        parent is not readable, and the cells the model's refs held for the dates it reads)."""
        reads = _Reads(mirror=mirror)
        refs, sources = self.project.inputs(m.name)
        lookbacks = self.project.input_lookbacks(m.name)

        def window(key: str) -> tuple[str, str] | None:
            return date_window(dates, lookbacks.get(key, 0)) if dates else None

        facts: list[str] = []
        for schema, table in sources:
            key = source_key(schema, table)
            if not TABLES[table].is_fact:
                sql = self._dimension_sql(table, con, reads)
            else:
                facts.append(table)
                files, served, excluded = self._fact_files(table, window(key))
                reads.files[table] = files
                reads.note(reads.served_last_good, key, served)
                reads.note(reads.excluded, key, excluded)
                if (
                    lookbacks.get(key, 0) == 0
                ):  # a blocked partition read at an earlier date is the child check's business
                    reads.held |= {(d, c, f"blocked: {key}") for d, c in excluded if not dates or d in dates}
                sql = self._fact_sql(con, table, [f for *_, f in files], reads)
            reads.define(con, source_view(schema, table), sql)
        for r in refs:
            reads.define(con, r, self._curated_sql(self.project[r], window(r), reads))
        for link in parent_links(facts):
            self._resolve_parents(con, link, dates, window(source_key("raw", link.parent)) is not None, reads)
        reads.define(con, HELD_CELLS, held_cells_sql(reads.held))
        for v in self.project.view_closure(m.name):
            if v.language == "python":
                if self._on_spark_engine:
                    reads.defs[v.name] = v  # run where the model runs, not here as well
                    continue
                con.register(f"__{v.name}_arrow", ArrowStream(run_python_model(v, con)))
                con.execute(f"CREATE TEMP VIEW {quote(v.name)} AS SELECT * FROM {quote('__' + v.name + '_arrow')}")
            else:
                reads.define(con, v.name, v.compiled_sql or "")
        return reads

    def _on_spark(self, con: duckdb.DuckDBPyConnection, m: Model, reads: _Reads, dates: list[str], stage: str) -> str:
        """Run the model on Spark over the views `_prepare` defined, writing its rows as Parquet
        under `stage` (a folder of the lake, which a cluster reaches too): the rows never pass
        through one process's memory, as collecting them would make them (a 30-day refresh of
        891,379 deliveries lost its result in a 1 GB driver). Returns the DuckDB query the
        publisher reads them with, cast to the model's column types (Spark's sums and counts
        are BIGINT where DuckDB's may be HUGEINT, and so on)."""
        from pyspark.errors import PySparkException

        from delivery_lake.transform.spark import SparkBuild, spark_error, spark_session, spark_uri

        assert self.settings is not None
        build = SparkBuild(spark_session(self.settings), con)
        try:
            for name, definition in reads.defs.items():
                if isinstance(definition, Model):
                    build.python_view(name, definition)
                else:
                    build.view(name, definition)
            frame = build.python_frame(m) if m.language == "python" else build.query(m.compiled_sql or "")
            if m.is_partitioned:
                frame = frame.where(frame[m.partition_by or ""].isin([date.fromisoformat(d) for d in dates]))
            frame.write.parquet(spark_uri(self.lake.uri(stage)))
        except ModelError as exc:  # a DuckDB form the transpile step does not know
            raise ModelError(f"{m.path}: on Spark: {exc}") from None
        except PySparkException as exc:
            # Spark's message carries the whole plan after its first line
            raise ModelError(f"{m.path}: on Spark: {spark_error(exc)}") from None
        finally:
            build.close()
        if not self.lake.glob(f"{stage}/*.parquet"):
            return empty_sql(m.columns)
        cols = ", ".join(f"CAST({quote(c.name)} AS {c.type}) AS {quote(c.name)}" for c in m.columns)
        return f"SELECT {cols} FROM read_parquet({lit(self.lake.uri(stage) + '/*.parquet')})"

    # -- builds
    def build_model(self, name: str, dates: Iterable[str] | None = None, full_refresh: bool = False) -> ModelResult:
        """Build one table model: the given dates of a partitioned model (or all, on a full refresh)."""
        m = self.project[name]
        if m.is_view:
            raise ModelError(f"{m.path}: {name} is a view; it is built inside the models that ref it")
        started = time.monotonic()
        result = ModelResult(name)
        wanted: list[str] = []
        if m.is_partitioned:
            if full_refresh:
                wanted = self.available_dates(name)
                result.removed = [d for d in self.lake.list_dates(ZONE, name) if d not in wanted]
            elif dates is None:
                raise ModelError(
                    f"{name} is partitioned by {m.partition_by}: pass the dates to build, or full_refresh=True"
                )
            else:
                wanted = sorted({date.fromisoformat(d).isoformat() for d in dates})
            if not wanted and not result.removed:
                result.skipped = "no dates to build"
                return result
        else:
            result.inputs = self.inputs_digest(m)
            last = (
                self.lake.read_json(self.lake.build_manifest(ZONE, name))
                if result.inputs and not full_refresh
                else None
            )
            if last and last.get("inputs") == result.inputs and self.lake.exists(self.lake.data_file(ZONE, name)):
                result.up_to_date, result.rows, result.dates = True, int(last["rows"]), [None]
                result.excluded = last.get("excluded_partitions") or {}
                result.served_last_good = last.get("served_last_good") or {}
                result.held_cells = last.get("held_cells") or []
                result.seconds = round(time.monotonic() - started, 3)
                return result
        con = self._shared.cursor() if self._shared is not None else self.lake.duckdb()
        # where Spark writes the rows before they are published (removed once they are)
        spark_stage = self.lake.meta_path("staging", "spark", f"{name}-{uuid.uuid4().hex}")
        copies = ExitStack()
        try:
            # A build of a few dates on S3 reads local copies of its input (storage.Mirror); a full
            # refresh reads in place (its files are many and large: throughput, not round trips),
            # and so does Spark, which reads the lake itself.
            mirror = None
            if self.lake.is_s3 and not self._on_spark_engine and (not m.is_partitioned or len(wanted) <= FEW_DATES):
                mirror = Mirror(self.lake, copies.enter_context(staging_dir(self.settings)))
            reads = self._prepare(con, m, wanted, mirror)
            result.excluded, result.served_last_good, result.parents_found = (
                reads.excluded,
                reads.served_last_good,
                reads.parents_found,
            )
            result.held_cells = [c for d in (wanted if m.is_partitioned else [None]) for c in reads.held_at(d)]
            if self._on_spark_engine:
                query = self._on_spark(con, m, reads, wanted, spark_stage)
            elif m.language == "python":
                con.register("__model_arrow", ArrowStream(run_python_model(m, con)))
                query = "SELECT * FROM __model_arrow"
            else:
                query = m.compiled_sql or ""
            # Several dates: the query runs once into a temp table that each date's file is cut
            # from. One file (a day's refresh, a whole table): the query streams straight into
            # it, without materialising its output first.
            kind = "TABLE" if m.is_partitioned and len(wanted) > 1 else "VIEW"
            if m.is_partitioned:
                in_list = ", ".join(f"DATE {lit(d)}" for d in wanted) or "NULL"
                con.execute(
                    f"CREATE TEMP {kind} __out AS SELECT * FROM ({query}) "
                    f"WHERE {quote(m.partition_by or '')} IN ({in_list})"
                )
            else:
                con.execute(f"CREATE TEMP {kind} __out AS {query}")
            got = [(str(r[0]), str(r[1])) for r in con.execute("DESCRIBE __out").fetchall()]
            if got != [(c.name, c.type) for c in m.columns]:
                raise ModelError(f"{m.path}: output columns changed while loading: {got}")
            with staging_dir(self.settings) as stage:
                if m.is_partitioned and len(wanted) > FEW_DATES:
                    # Only past FEW_DATES, where build() runs one model at a time: publish_dates
                    # sets the threads of the DuckDB instance the models share for its COPY.
                    docs = publish_dates(
                        self.lake,
                        con,
                        ZONE,
                        m.name,
                        m.partition_by or "",
                        wanted,
                        [(c.name, c.type) for c in m.columns],
                        m.grain_columns,
                        stage,
                        lambda d: self._manifest_fields(result, d),
                    )
                    result.rows_by_date = {d: int(doc["rows"]) for d, doc in docs.items()}
                elif m.is_partitioned:
                    for d in wanted:
                        n = self._publish(
                            con, m, d, f"WHERE {quote(m.partition_by or '')} = DATE {lit(d)}", stage, result
                        )
                        result.rows_by_date[d] = n
                else:
                    result.rows = self._publish(con, m, None, "", stage, result)
            for d in result.removed:
                self.lake.delete(self.lake.data_file(ZONE, name, d))
                self.lake.delete(self.lake.build_manifest(ZONE, name, d))
        except duckdb.Error as exc:
            raise ModelError(f"{m.path}: {exc}") from None
        finally:
            con.close()
            copies.close()
            if self._on_spark_engine:
                self.lake.delete(spark_stage, recursive=True)
        result.dates = list(wanted) if m.is_partitioned else [None]
        result.rows = result.rows or sum(result.rows_by_date.values())
        result.seconds = round(time.monotonic() - started, 3)
        return result

    def _publish(
        self, con: duckdb.DuckDBPyConnection, m: Model, d: str | None, where: str, stage: Path, result: ModelResult
    ) -> int:
        """One date (or the whole table) of `__out`, through the project's one publisher."""
        doc = publish_partition(
            self.lake,
            con,
            ZONE,
            m.name,
            d,
            [(c.name, c.type) for c in m.columns],
            m.grain_columns,
            self.settings,
            where=where,
            stage=stage,
            manifest=self._manifest_fields(result, d),
        )
        return int(doc["rows"])

    def _manifest_fields(self, result: ModelResult, d: str | None) -> dict[str, Any]:
        """What the build manifest of date `d` (None: the whole table) records of the build's reads."""
        return {
            "excluded_partitions": result.excluded,
            "served_last_good": result.served_last_good,
            "parents_found": result.parents_found,
            "held_cells": [c for c in result.held_cells if d is None or c[0] == d],
            "inputs": result.inputs,
            # which engine computed the rows (TRANSFORM_ENGINE): the same rows either way, floats to
            # the rounding the model declares (tests/test_spark.py)
            "engine": "spark" if self._on_spark_engine else "duckdb",
        }

    def build(
        self,
        select: Iterable[str] | None = None,
        dates: Iterable[str] | None = None,
        full_refresh: bool = False,
        on_built: Callable[[str], None] | None = None,
    ) -> list[ModelResult]:
        """Build table models in dependency order; a model whose input is gate-blocked is skipped
        together with everything downstream of it, the others still build. `on_built(name)` is
        called as each model's build finishes (the warehouse loads it while others build)."""
        names = [m.name for m in self.project.materialized()] if select is None else list(select)
        unknown = [n for n in names if n not in self.project.models]
        if unknown:
            raise ModelError(f"unknown model(s): {', '.join(unknown)}")
        wanted_dates = None if dates is None else list(dates)
        if (
            wanted_dates is None
            and not full_refresh
            and any(m.is_partitioned for m in self.project.materialized() if m.name in names)
        ):
            raise ModelError("pass dates to build, or full_refresh=True")
        results: dict[str, ModelResult] = {}
        failed: set[str] = set()
        selected = [m for m in self.project.materialized() if m.name in names]
        position = {m.name: i for i, m in enumerate(selected)}
        refs = {m.name: self.project.inputs(m.name)[0] for m in selected}
        # A model starts as soon as the refs it waits on are built, not when a whole round
        # is: for a new day int_deliveries_enriched's four marts need not wait for fct_feedback.
        # Refs outside the selection are read as they are: only the selected ones are waited on.
        graph = TopologicalSorter({n: [r for r in rs if r in position] for n, rs in refs.items()})
        try:
            graph.prepare()
        except CycleError as exc:
            raise ModelError(f"models wait on each other: {', '.join(exc.args[1])}") from None
        waited_on = {r.name: sum(r.name in refs[m.name] for m in selected) for r in selected}
        last_rows = {m.name: self._last_rows(m) for m in selected}

        def start_order(ready: list[Model]) -> list[Model]:
            # Models others wait on first, then date-partitioned ones (a day's fact) before whole
            # small tables (dimensions), then the biggest output last time: the longest build
            # must not be left for last. Ties keep the project's order.
            return sorted(
                ready, key=lambda m: (-waited_on[m.name], not m.is_partitioned, -last_rows[m.name], position[m.name])
            )

        # For a few dates, models run side by side: each is a small query that keeps one core
        # busy. A full refresh runs them one at a time: each query then uses every core already,
        # and two at once only add memory and time.
        few_dates = not full_refresh and wanted_dates is not None and len(wanted_dates) <= FEW_DATES
        workers = max(1, self.settings.duckdb_threads) if self.settings and few_dates else 1
        ready: list[Model] = []  # every ref built, waiting for a free worker
        running: dict[Future[ModelResult], str] = {}
        self._shared = self.lake.duckdb()
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                while graph.is_active():
                    # Models downstream of a failed one are skipped (and so theirs, in turn)
                    # before anything starts.
                    while newly_ready := graph.get_ready():
                        for name in newly_ready:
                            upstream_failed = [r for r in refs[name] if r in failed]
                            if upstream_failed:
                                failed.add(name)
                                results[name] = ModelResult(
                                    name, skipped=f"upstream {', '.join(upstream_failed)} not built"
                                )
                                graph.done(name)
                            else:
                                ready.append(self.project[name])
                    # Only as many as there are free workers, so a model that becomes ready later
                    # is not queued behind ones nothing waits on.
                    for m in start_order(ready)[: workers - len(running)]:
                        ready.remove(m)
                        run_dates, refresh = (wanted_dates, full_refresh) if m.is_partitioned else (None, False)
                        running[pool.submit(self.build_model, m.name, run_dates, full_refresh=refresh)] = m.name
                    if not running:
                        break  # what was left has been skipped
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        name = running.pop(fut)
                        graph.done(name)
                        try:
                            results[name] = fut.result()
                        except GateBlocked as exc:
                            failed.add(name)
                            results[name] = ModelResult(name, skipped=str(exc))
                            continue
                        if on_built is not None:
                            on_built(name)
        finally:
            self._shared.close()
            self._shared = None
        return [results[m.name] for m in self.project.materialized() if m.name in results]
