"""The curated models on Apache Spark (TRANSFORM_ENGINE=spark).

The runner prepares a build the same way whichever engine runs it: which raw partitions are
read or served from lastgood/, which cells are held, which parents are looked up outside a
lookback. That is bookkeeping over file lists and key columns, and it stays on DuckDB. What
Spark runs is the model: each input view the runner defined is mirrored in a Spark session
(its `read_parquet(...)` calls become Parquet scans of the same files), the model's SQL and
the views it reads are transpiled from DuckDB's dialect with sqlglot, and Python models run
on Arrow batches. The rows Spark returns are published by the project's one publisher, so the
manifests, the atomic replace of a date and the deterministic file are the DuckDB engine's.

There is one copy of every model: where the dialects differ, `to_spark_sql` rewrites the
DuckDB form it knows (listed there) or the model is written in a form both engines agree on.
pyspark is imported only here, and only when the engine is asked for.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from delivery_lake.config import Settings
from delivery_lake.transform.base import Model, ModelError, quote, source_view
from delivery_lake.transform.python_models import call_python_model, load_python_model

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

_SESSIONS: dict[str, SparkSession] = {}
_LOCK = threading.Lock()

# DuckDB column types of the models (Project.columns) and the Spark type each one is built as.
_SPARK_TYPES = {
    "VARCHAR": "string",
    "BIGINT": "bigint",
    "INTEGER": "int",
    "SMALLINT": "smallint",
    "DOUBLE": "double",
    "FLOAT": "float",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP WITH TIME ZONE": "timestamp",
    "TIMESTAMPTZ": "timestamp",
    "TIMESTAMP": "timestamp_ntz",
}


# Set on every session a build uses (a Spark Connect session starts from the server's defaults).
SESSION_CONF = {
    # Timestamps are UTC in the lake; a session in the machine's zone would shift dates.
    "spark.sql.session.timeZone": "UTC",
    # client ids must stay strings, whatever they look like; `date` is cast as declared.
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    # ANSI mode (Spark 4's default), kept on purpose: where the dialects' edge cases differ (a
    # failed cast raises in DuckDB and is null in Spark without ANSI; a division by zero is inf
    # in DuckDB 2), Spark raises instead of writing a quiet null into a mart. The models never
    # reach those cases on lake data.
    "spark.sql.ansi.enabled": "true",
    # the rows a build stages for the publisher: timestamps as Parquet's UTC microseconds, which
    # DuckDB reads as TIMESTAMP WITH TIME ZONE (Spark's default INT96 reads as a naive TIMESTAMP)
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}


def spark_type(duckdb_type: str) -> str:
    t = duckdb_type.upper()
    if t.startswith("DECIMAL"):
        return t.lower()
    if t.endswith("[]"):
        return f"array<{spark_type(t[:-2])}>"
    try:
        return _SPARK_TYPES[t]
    except KeyError:
        raise ModelError(f"no Spark type for the DuckDB type {duckdb_type}") from None


def spark_session(settings: Settings) -> SparkSession:
    """The process's Spark session for `settings`: local mode on SPARK_MASTER, or a cluster
    through Spark Connect when SPARK_REMOTE is set. Started on first use (a JVM start costs
    seconds) and kept for the process."""
    where = settings.spark_remote or settings.spark_master
    with _LOCK:
        if where not in _SESSIONS:
            from pyspark.errors import PySparkRuntimeError
            from pyspark.sql import SparkSession

            builder: Any = SparkSession.builder.appName("delivery_lake")
            if settings.spark_remote:
                builder = builder.remote(settings.spark_remote)
            else:
                # Python models run in Spark's Python workers: this interpreter, with the project
                # and Polars installed, not whichever python3 is first on PATH (PySpark reads the
                # variable, not its conf, when the context starts).
                os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
                builder = (
                    builder.master(settings.spark_master)
                    .config("spark.ui.enabled", "false")
                    .config("spark.ui.showConsoleProgress", "false")
                    # A day's build is a few thousand rows: 200 shuffle tasks cost more than the work.
                    .config("spark.sql.shuffle.partitions", str(max(2, 2 * settings.duckdb_threads)))
                    .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                )
            for key, value in SESSION_CONF.items():
                builder = builder.config(key, value)
            try:
                session = _SESSIONS[where] = builder.getOrCreate()
            except PySparkRuntimeError as exc:
                if "SESSION_ALREADY_EXIST" not in str(exc):
                    raise
                # PySpark holds one kind of session per process
                raise ModelError(
                    "a process that has run models on local Spark cannot switch to SPARK_REMOTE "
                    "(or back): start a new process"
                ) from None
            if settings.spark_remote:
                # A Spark Connect client left open hangs the interpreter's exit (grpc's channel
                # close, from the session's __del__): closed explicitly instead.
                atexit.register(stop_spark)
            else:
                session.sparkContext.setLogLevel("ERROR")
        return _SESSIONS[where]


def stop_spark() -> None:
    """Stop every session this process started."""
    with _LOCK:
        while _SESSIONS:
            _SESSIONS.popitem()[1].stop()


def spark_error(exc: BaseException) -> str:
    """Spark's message in one line: its first line, and for a Python worker's failure the
    exception the worker raised (the rest is the query plan or the JVM's stack)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b", line)]
    first = lines[0] if lines else type(exc).__name__
    return f"{first} {raised[-1]}" if raised and "Python worker" in first else first


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def spark_uri(uri: str) -> str:
    """Hadoop's S3 connector is s3a://; local paths are read as they are."""
    return "s3a://" + uri[len("s3://") :] if uri.startswith("s3://") else uri


def _rewrite(tree: exp.Expr) -> exp.Expr:
    """DuckDB forms the models use that sqlglot's Spark output does not cover, as Spark forms
    with the same result. Each rule is a DuckDB construct, not a model."""

    # `SELECT k, unnest(arg_max(struct_pack(a, b), t))`: DuckDB spreads a struct's fields into
    # columns, where sqlglot writes Spark's explode(), which takes arrays only. One field access
    # per field instead; Spark computes the repeated aggregate once.
    for select in list(tree.find_all(exp.Select)):
        spread: list[exp.Expr] = []
        for projection in select.expressions:
            struct = _struct_in(projection.this) if isinstance(projection, exp.Explode) else None
            if struct is None:
                spread.append(projection)
                continue
            for field in struct.expressions:
                name = field.this.name if isinstance(field, exp.PropertyEQ) else field.alias_or_name
                access = exp.Dot(this=projection.this.copy(), expression=exp.to_identifier(name))
                spread.append(exp.alias_(access, name, quoted=True))
        select.set("expressions", spread)
    # date_diff('second', a, b): DuckDB counts the boundaries crossed (10.9 s to 11.1 s is 1),
    # Spark's timestampdiff the whole units elapsed (0). Truncating both ends to the unit first
    # makes Spark count boundaries too.
    for diff in list(tree.find_all(exp.DateDiff)):
        unit = diff.args.get("unit")
        if diff.args.get("date_part_boundary") and unit is not None:
            for arg in ("this", "expression"):
                diff.set(arg, exp.TimestampTrunc(this=diff.args[arg].copy(), unit=unit.copy()))
            diff.set("date_part_boundary", None)
    # `/` is a DOUBLE division in DuckDB whatever its operands; Spark divides DECIMALs (`60.0`
    # is one) as DECIMAL, rounded to six places: 73.316667 where DuckDB has 73.3166666...
    for div in list(tree.find_all(exp.Div)):
        for arg in ("this", "expression"):
            div.set(arg, exp.cast(div.args[arg].copy(), exp.DataType.Type.DOUBLE))
    return tree


def _struct_in(node: exp.Expr) -> exp.Struct | None:
    """A struct whose fields are known here: a struct literal, or an aggregate of one."""
    if isinstance(node, exp.Struct):
        return node
    if isinstance(node, exp.AggFunc) and isinstance(node.this, exp.Struct):
        return node.this
    return None


def to_spark_sql(sql: str, table: Callable[[exp.Table], str | None] | None = None) -> str:
    """DuckDB SQL as Spark SQL. `table(node)` may name a Spark view to read in place of a
    table reference (a `read_parquet(...)` call, a DuckDB temp table)."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    if table is not None:
        for node in list(tree.find_all(exp.Table)):
            name = table(node)
            if name is not None:
                replacement = exp.Table(this=exp.to_identifier(name, quoted=True), alias=node.args.get("alias"))
                node.replace(replacement)
    try:
        return _rewrite(tree).sql(dialect="spark", unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.UnsupportedError as exc:
        raise ModelError(f"sqlglot cannot write it for Spark: {exc}") from None


def _parquet_options(node: exp.ReadParquet) -> tuple[list[str], dict[str, Any]]:
    first, *rest = node.expressions
    items = first.expressions if isinstance(first, exp.Array) else [first]
    files = [str(i.this) for i in items]
    options: dict[str, Any] = {}
    for opt in rest:
        if not isinstance(opt, exp.EQ):
            raise ModelError(f"read_parquet option not understood on Spark: {opt.sql('duckdb')}")
        name, value = opt.this.name, opt.expression
        if isinstance(value, exp.Struct):
            options[name] = {p.this.name: p.expression.sql("duckdb") for p in value.expressions}
        elif isinstance(value, exp.Boolean):
            options[name] = bool(value.this)
        else:
            options[name] = value.sql("duckdb")
    return files, options


def _layouts(files: list[str]) -> tuple[dict[tuple[str, tuple[str, ...], str], list[tuple[str, ...]]], list[str]]:
    """The files grouped by layout: {(base, keys, name): key values} for each file that is
    base/k1=v1/.../kn=vn/NAME (the lake's partition files; raw/ and lastgood/ are two bases),
    and the files outside any such layout (a whole-table file)."""
    groups: dict[tuple[str, tuple[str, ...], str], list[tuple[str, ...]]] = {}
    loose: list[str] = []
    for f in files:
        parts = f.split("/")
        first = next((i for i, p in enumerate(parts) if "=" in p), None)
        if first is None or any("=" not in p for p in parts[first:-1]):
            loose.append(f)
            continue
        pairs = [p.split("=", 1) for p in parts[first:-1]]
        key = ("/".join(parts[:first]), tuple(k for k, _ in pairs), parts[-1])
        groups.setdefault(key, []).append(tuple(v for _, v in pairs))
    return groups, loose


class SparkBuild:
    """One model build: a Spark session of its own (its temp views are private, as a DuckDB
    cursor's are), mirroring the views the runner defined on `con`."""

    _ids = count()

    def __init__(self, spark: SparkSession, con: duckdb.DuckDBPyConnection):
        self.con = con
        # A session of its own: temp views are per session, and models build side by side.
        self.spark = spark.newSession()
        self.remote = type(spark).__module__.startswith("pyspark.sql.connect")
        for key, value in SESSION_CONF.items():
            self.spark.conf.set(key, value)
        self.views: set[str] = set()

    def close(self) -> None:
        """End the build's session on a Spark Connect server (its views and cached plans). A
        local session shares the process's context, which must stay up: nothing to do."""
        if self.remote:
            self.spark.stop()

    def _name(self, kind: str) -> str:
        return f"__{kind}_{next(self._ids)}"

    def _parquet(self, node: exp.ReadParquet) -> str:
        """A `read_parquet(...)` of the runner as a Spark frame over the same files.

        The schema is the one DuckDB reads for the call (union by name included), given to Spark
        so it opens no footer to infer one. Partition files are read as their table's folder
        with a filter on the partition keys, which Spark prunes to those folders: naming the
        files one by one costs Spark a file-system call each (570 files: 2.6-3.4 s, where the
        folder and the filter take 0.2 s).
        """
        files, options = _parquet_options(node)
        hive = bool(options.get("hive_partitioning"))
        described = self.con.execute(f"DESCRIBE SELECT * FROM {node.sql('duckdb')}").fetchall()
        columns = [str(r[0]) for r in described]
        reader = self.spark.read.schema(", ".join(f"`{n}` {spark_type(str(t))}" for n, t, *_ in described))
        groups, loose = _layouts(files)
        if hive and loose:
            raise ModelError(f"hive_partitioning over files outside key=value folders: {loose[:3]}")
        frames = []
        for (base, keys, name), values in groups.items():
            frame = reader.option("basePath", spark_uri(base)).option("pathGlobFilter", name).parquet(spark_uri(base))
            wanted = ", ".join(sorted({_sql_string("/".join(v)) for v in values}))
            path = ", '/', ".join(f"CAST(`{k}` AS STRING)" for k in keys)
            frames.append(frame.where(f"concat({path}) IN ({wanted})").select(*[f"`{c}`" for c in columns]))
        if loose:
            # a whole-table file: its folders are not columns
            frames.append(reader.option("recursiveFileLookup", "true").parquet(*[spark_uri(f) for f in loose]))
        frame = frames[0]
        for more in frames[1:]:
            frame = frame.unionByName(more)
        name = self._name("parquet")
        frame.createOrReplaceTempView(name)
        return name

    def _table(self, node: exp.Table, ctes: set[str]) -> str | None:
        if isinstance(node.this, exp.ReadParquet):
            return self._parquet(node.this)
        name = node.name
        if not name or name in ctes or name in self.views or node.db:
            return None
        # a DuckDB temp table the runner filled (parent keys found outside a lookback): small
        arrow = self.con.sql(f"SELECT * FROM {quote(name)}").to_arrow_table()
        self.spark.createDataFrame(arrow).createOrReplaceTempView(name)
        self.views.add(name)
        return name

    def to_spark(self, sql: str) -> str:
        ctes = {c.alias_or_name for c in sqlglot.parse_one(sql, read="duckdb").find_all(exp.CTE)}
        return to_spark_sql(sql, lambda node: self._table(node, ctes))

    def view(self, name: str, sql: str) -> None:
        """Mirror a DuckDB view definition (its SQL in DuckDB's dialect) as a Spark temp view."""
        self.spark.sql(self.to_spark(sql)).createOrReplaceTempView(name)
        self.views.add(name)

    def python_view(self, name: str, m: Model) -> None:
        self.python_frame(m).createOrReplaceTempView(name)
        self.views.add(name)

    def python_frame(self, m: Model) -> DataFrame:
        """A Python model on Spark. A model that declares ROW_WISE (each output row comes from one
        input row of its single input) runs per Spark partition on Arrow batches; any other runs
        once on the driver over its inputs as Arrow tables: right, but not spread out."""
        module = load_python_model(m)
        schema = ", ".join(f"`{c.name}` {spark_type(c.type)}" for c in m.columns)
        inputs = [r for r in m.refs] + [source_view(s, t) for s, t in m.sources]
        if getattr(module, "ROW_WISE", False) and len(inputs) == 1:
            return self.spark.table(inputs[0]).mapInArrow(_row_wise(m), schema)
        import polars as pl

        frames = {n: pl.DataFrame(self.spark.table(n).toArrow()) for n in inputs}
        out = call_python_model(module, m, lambda n: frames[n].lazy(), lambda s, t: frames[source_view(s, t)].lazy())
        return self.spark.createDataFrame(out.to_arrow().cast(_arrow_schema(schema)), schema)

    def query(self, sql: str) -> DataFrame:
        return self.spark.sql(self.to_spark(sql))


def _arrow_schema(ddl: str) -> pa.Schema:
    """The Arrow schema Spark expects for `ddl` (built on the driver: parsing DDL needs the JVM)."""
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType

    schema = StructType.fromDDL(ddl)
    assert isinstance(schema, StructType)
    return to_arrow_schema(schema, timezone="UTC")


def _row_wise(m: Model) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    # Spark pickles the closure to its Python workers. The model's source travels with it, so a
    # cluster's workers need the project's library installed, not this checkout at the same path.
    code = Path(m.path).read_text()
    target = _arrow_schema(", ".join(f"`{c.name}` {spark_type(c.type)}" for c in m.columns))

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # In a Spark Python worker: the model is called on each batch as if the batch were its
        # whole input. Polars' Arrow (large strings, string views) is cast to what Spark declared.
        import polars as pl

        module = load_python_model(m, code)
        for batch in batches:
            frame = pl.DataFrame(batch).lazy()

            def ref(_name: str, f: pl.LazyFrame = frame) -> pl.LazyFrame:
                return f

            def src(_schema: str, _table: str, f: pl.LazyFrame = frame) -> pl.LazyFrame:
                return f

            out = call_python_model(module, m, ref, src)
            yield from out.to_arrow().cast(target).to_batches()

    return run
