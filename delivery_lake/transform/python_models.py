"""The Polars bridge: running a Python model against relations of a DuckDB connection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import duckdb

from delivery_lake.transform.base import Model, ModelError, quote, source_view

if TYPE_CHECKING:
    import polars as pl

# polars is imported where it is used: a process that runs SQL models only never imports it.


class ArrowStream:
    """A Polars frame as an Arrow C stream, which DuckDB scans as a table.

    Frames cross between DuckDB and Polars through the Arrow PyCapsule interface both ways
    (`pl.DataFrame(relation)`, `register(name, ArrowStream(frame))`) rather than `.pl()` and
    `.to_arrow()`, which go through pyarrow: never import pyarrow for a frame's sake (no change
    in types or values).
    """

    def __init__(self, frame: pl.DataFrame):
        self.frame = frame

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self.frame.__arrow_c_stream__(requested_schema)


def load_python_model(m: Model, source: str | None = None) -> ModuleType:
    """The model file as a module, compiled from its source: read from the file, or given (Spark's
    Python workers get it with the task, not a path into this checkout). dbt_like_sql/ is not a
    package, so nothing is imported by name."""
    module = ModuleType(f"dbt_like_sql_{m.name}")
    module.__file__ = str(m.path)
    code = source if source is not None else Path(m.path).read_text()
    exec(compile(code, str(m.path), "exec"), module.__dict__)
    return module


def call_python_model(
    module: ModuleType, m: Model, ref: Callable[[str], pl.LazyFrame], source: Callable[[str, str], pl.LazyFrame]
) -> pl.DataFrame:
    """`model(ref, source)` of a loaded model file, with its declared inputs only."""
    import polars as pl

    def checked_ref(name: str) -> pl.LazyFrame:
        if name not in m.refs:
            raise ModelError(f"{m.path}: ref({name!r}) is not declared in REFS")
        return ref(name)

    def checked_source(schema: str, table: str) -> pl.LazyFrame:
        if (schema, table) not in m.sources:
            raise ModelError(f"{m.path}: source({schema!r}, {table!r}) is not declared in SOURCES")
        return source(schema, table)

    result = module.model(checked_ref, checked_source)
    return result.collect() if isinstance(result, pl.LazyFrame) else result


def run_python_model(m: Model, con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Import the model file and run `model(ref, source)` against relations of `con`."""
    import polars as pl

    return call_python_model(
        load_python_model(m),
        m,
        lambda name: pl.DataFrame(con.sql(f"SELECT * FROM {quote(name)}")).lazy(),
        lambda schema, table: pl.DataFrame(con.sql(f"SELECT * FROM {quote(source_view(schema, table))}")).lazy(),
    )
