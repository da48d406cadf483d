"""The Polars bridge: running a Python model against relations of a DuckDB connection."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
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


def load_python_model(m: Model) -> ModuleType:
    """The model file as a module (loaded by path: dbt_like_sql/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"dbt_like_sql_{m.name}", m.path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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
