"""What every unit of the transform package shares: the Model record, the errors, relation
names and SQL quoting."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from delivery_lake.contract import TABLES

MODELS_DIR = Path(__file__).resolve().parent.parent.parent / "dbt_like_sql"
ZONE = "curated"
# The cells of a build whose input is held back (blocked, or a parent not readable), as a temp
# view the runner gives every model: a relation of the build, not a model (see Runner._prepare).
HELD_CELLS = "held_cells"
# Relations a model may read that are neither refs nor sources: the runner provides them.
RUNNER_RELATIONS = (HELD_CELLS,)
RESERVED_NAMES = {"warehouse", *RUNNER_RELATIONS}
GRAIN_KEY = re.compile(r"one row per (?:\((?P<keys>[\w\s,]+)\)|(?P<key>\w+))")


class ModelError(ValueError):
    """A model file that cannot be parsed, resolved or run; the message names the file."""


class GateBlocked(RuntimeError):
    """An input the quality gate blocked as a whole (a dimension snapshot)."""


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    description: str = ""


@dataclass
class Model:
    name: str
    path: Path
    language: Literal["sql", "python"]
    layer: str
    description: str
    grain: str | None
    partition_by: str | None
    lookback_days: int
    materialized: Literal["view", "table"]
    refs: tuple[str, ...]
    sources: tuple[tuple[str, str], ...]
    compiled_sql: str | None = None
    # `lookback_days=N` of a ref or source call, keyed by the model name or "raw.<table>".
    call_lookbacks: dict[str, int] = field(default_factory=dict)
    column_docs: dict[str, str] = field(default_factory=dict)
    columns: list[ColumnInfo] = field(default_factory=list)
    # Output column -> the (layer, table, column) it is computed from (transform/lineage.py).
    column_lineage: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    @property
    def is_view(self) -> bool:
        return self.materialized == "view"

    @property
    def is_partitioned(self) -> bool:
        return self.partition_by is not None

    @property
    def grain_columns(self) -> list[str]:
        """The key columns the grain names ("one row per delivery_id", "one row per (date, depot_id)")."""
        found = GRAIN_KEY.match(self.grain or "")
        if not found:
            return []
        keys = [k.strip() for k in (found["keys"] or found["key"]).split(",")]
        return keys if set(keys) <= {c.name for c in self.columns} else []


def source_view(schema: str, table: str) -> str:
    return f"src_{schema}__{table}"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def source_key(schema: str, table: str) -> str:
    """How a source is named among a model's inputs (`Project.input_lookbacks`): "raw.orders"."""
    return f"{schema}.{table}"


def empty_source_sql(table: str) -> str:
    t = TABLES[table]
    cols = [f"NULL::{c.duckdb_type} AS {quote(c.name)}" for c in t.columns]
    if t.is_fact:
        cols.append('NULL::DATE AS "date"')
    return f"SELECT {', '.join(cols)} WHERE false"


def empty_sql(columns: list[ColumnInfo]) -> str:
    return "SELECT " + ", ".join(f"NULL::{c.type} AS {quote(c.name)}" for c in columns) + " WHERE false"
