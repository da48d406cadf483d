"""A small dbt-like runner: SQL (and Polars) model files over the lake, built by DuckDB.

Project layout (`dbt_like_sql/`, see its README):

    staging/stg_<table>.sql        one view per raw table: rename, clean, nothing else
    intermediate/int_<...>.sql     views shared by several marts
    marts/{dim,fct,agg}_<...>.sql  tables, published to the curated zone of the lake
    marts/<name>.py                the same, as a Polars model (REFS/SOURCES/COLUMNS + model())

A model's dependencies are its `{{ ref('model') }}` and `{{ source('raw', 'table') }}` calls;
either takes `lookback_days=N` for that input alone (`{{ ref('stg_orders', lookback_days=3) }}`).
Only those `{{ ... }}` calls are templated (each parsed as a Python call expression); the SQL
around them is parsed by sqlglot to check it is one query and to read the column comments.
The header (leading `--` lines, or a Python model's docstring) holds the description and
`key: value` config: `grain`, `partition_by`, `lookback_days`, `materialized`.

How a build reads its inputs:
- `source('raw', t)` is a view over an explicit list of raw Parquet files, listed once per
  runner: partitions the quality gate blocked are not in the list, so no model can read
  them, whatever its SQL (their last version that passed the gate, kept in `lastgood/`, is
  read in their place when there is one). A blocked dimension snapshot fails the models that
  read it.
- A child fact's parent (contract `references` between two facts a model reads) is looked up
  outside the parent's lookback when the lookback misses it; the cells whose input is still held
  back (blocked, or parent unreadable) are given to the model as the `held_cells` view and
  recorded in its manifests, so that no mart computes them from partial input.
- Views (staging, intermediate) are not materialized: they are created inside the DuckDB
  connection of each table model that needs them.
- A partitioned model built for dates S reads each partitioned input only for dates
  [min(S) - lookback, max(S)], then keeps the rows whose partition column is in S. An input's
  lookback is the largest `lookback_days` on its way in: the headers of the model and of the
  views it goes through, and the calls that name it.
  Each date is published as one object (`curated/{model}/date=D/data.parquet`) by the same
  atomic replacement as raw, followed by its manifest (`_meta/curated/...`) whose build id
  lets the warehouse reload only what changed.

The package, one job per module (each imports only those above it):

    base.py           the Model record, ModelError/GateBlocked, relation names, SQL quoting
    parse.py          one model file: templating, header, column comments (sqlglot)
    held.py           held cells and the parent links between raw facts
    python_models.py  the Polars bridge: running a Python model over DuckDB relations
    lineage.py        column lineage of the table models, through views to the nearest assets (sqlglot)
    project.py        Project: every model parsed, described and ordered; its digest and cache
    incremental.py    date windows, affected_dates, held_dates
    runner.py         Runner: reading inputs, building and publishing models, the build schedule
"""

from delivery_lake.transform.base import (
    HELD_CELLS,
    MODELS_DIR,
    RESERVED_NAMES,
    RUNNER_RELATIONS,
    ZONE,
    ColumnInfo,
    GateBlocked,
    Model,
    ModelError,
    source_key,
    source_view,
)
from delivery_lake.transform.held import HeldCell, ParentLink, held_cells_sql, parent_links
from delivery_lake.transform.incremental import affected_dates, held_dates
from delivery_lake.transform.parse import parse_model
from delivery_lake.transform.project import Project
from delivery_lake.transform.python_models import ArrowStream, run_python_model
from delivery_lake.transform.runner import ModelResult, Runner

__all__ = [
    "HELD_CELLS",
    "MODELS_DIR",
    "RESERVED_NAMES",
    "RUNNER_RELATIONS",
    "ZONE",
    "ArrowStream",
    "ColumnInfo",
    "GateBlocked",
    "HeldCell",
    "Model",
    "ModelError",
    "ModelResult",
    "ParentLink",
    "Project",
    "Runner",
    "affected_dates",
    "held_cells_sql",
    "held_dates",
    "parent_links",
    "parse_model",
    "run_python_model",
    "source_key",
    "source_view",
]
