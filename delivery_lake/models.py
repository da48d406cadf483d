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
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb

from delivery_lake import contract, gate
from delivery_lake.config import Settings
from delivery_lake.contract import TABLES
from delivery_lake.storage import Lake, staging_dir, write_file_atomic

if TYPE_CHECKING:
    import polars as pl
    from sqlglot import exp

# sqlglot (parsing) and polars (Python models) are imported where they are used: a process
# that loads a cached project and runs SQL models only never pays their 0.3 + 0.4 s import.

MODELS_DIR = Path(__file__).resolve().parent.parent / "dbt_like_sql"
ZONE = "curated"
HEADER_KEYS = ("grain", "partition_by", "lookback_days", "materialized")
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


# ---- parsing -------------------------------------------------------------------------------------


def source_view(schema: str, table: str) -> str:
    return f"src_{schema}__{table}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def source_key(schema: str, table: str) -> str:
    """How a source is named among a model's inputs (`Project.input_lookbacks`): "raw.orders"."""
    return f"{schema}.{table}"


def _parse_call(expr: str, path: Path) -> tuple[str, tuple[str, ...], int | None]:
    """`ref('x')` / `source('raw', 'y')`, each with an optional `lookback_days=N`, parsed as a
    Python call; anything else is an error."""
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError as exc:
        raise ModelError(f"{path}: cannot parse template call {{{{ {expr} }}}}: {exc.msg}") from None
    ok = (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("ref", "source")
        and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)
    )
    if not ok:
        raise ModelError(f"{path}: only {{{{ ref('model') }}}} and {{{{ source('raw', 'table') }}}} are supported, got {{{{ {expr} }}}}")
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    lookback: int | None = None
    for kw in node.keywords:
        value = kw.value.value if isinstance(kw.value, ast.Constant) else None
        if kw.arg != "lookback_days" or type(value) is not int or value < 0:
            raise ModelError(f"{path}: the only option of ref() and source() is lookback_days=<days, 0 or more>, got {{{{ {expr} }}}}")
        lookback = value
    args = tuple(a.value for a in node.args)  # type: ignore[attr-defined]
    if node.func.id == "ref" and len(args) != 1:
        raise ModelError(f"{path}: ref() takes one model name, got {{{{ {expr} }}}}")
    if node.func.id == "source":
        if len(args) != 2 or args[0] != "raw":
            raise ModelError(f"{path}: source() takes ('raw', table), got {{{{ {expr} }}}}")
        if args[1] not in TABLES:
            raise ModelError(f"{path}: source('raw', {args[1]!r}) is not a table of the contract")
    return node.func.id, args, lookback


def render(text: str, path: Path) -> tuple[str, list[str], list[tuple[str, str]], dict[str, int]]:
    """Replace the template calls by relation names; return (sql, refs, sources) in call order
    and the `lookback_days` of the calls that set one (the largest, if an input is named twice)."""
    out: list[str] = []
    refs: list[str] = []
    sources: list[tuple[str, str]] = []
    lookbacks: dict[str, int] = {}
    pos = 0
    while (start := text.find("{{", pos)) >= 0:
        end = text.find("}}", start)
        if end < 0:
            raise ModelError(f"{path}: '{{{{' without a closing '}}}}'")
        kind, args, lookback = _parse_call(text[start + 2 : end].strip(), path)
        out.append(text[pos:start])
        if lookback is not None:
            key = args[0] if kind == "ref" else source_key(args[0], args[1])
            lookbacks[key] = max(lookbacks.get(key, 0), lookback)
        if kind == "ref":
            refs.append(args[0])
            out.append(_quote(args[0]))
        else:
            sources.append((args[0], args[1]))
            out.append(_quote(source_view(args[0], args[1])))
        pos = end + 2
    out.append(text[pos:])
    return "".join(out), list(dict.fromkeys(refs)), list(dict.fromkeys(sources)), lookbacks


def parse_header(lines: Iterable[str]) -> tuple[str, dict[str, str]]:
    """Description lines and `key: value` config lines (only the known keys are config)."""
    desc: list[str] = []
    config: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip() in HEADER_KEYS:
            config[key.strip()] = value.strip()
        elif line.strip():
            desc.append(line.strip())
    return " ".join(desc), config


def _sql_header(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("--"):
            lines.append(line.strip()[2:].strip())
        elif line.strip():
            break
    return lines


def _final_projections(tree: exp.Expression) -> list[exp.Expression]:
    """The projections of the query's result, following `select * from <cte>` chains."""
    from sqlglot import exp

    ctes = {c.alias: c.this for c in tree.find_all(exp.CTE)}
    q: exp.Expression = tree
    for _ in range(len(ctes) + 1):
        while isinstance(q, exp.SetOperation):
            q = q.this
        if not isinstance(q, exp.Select):
            return []
        sel = q.selects
        src = q.args.get("from") or q.args.get("from_")
        if len(sel) == 1 and isinstance(sel[0], exp.Star) and src is not None and isinstance(src.this, exp.Table) and src.this.name in ctes:
            q = ctes[src.this.name]
            continue
        return list(sel)
    return []


def column_comments(sql: str, path: Path) -> dict[str, str]:
    """Column -> its trailing `-- comment` in the final select (`-- [banner]` comments are skipped)."""
    import sqlglot
    from sqlglot import exp

    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise ModelError(f"{path}: SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise ModelError(f"{path}: a model is exactly one query, found {len(statements)} statements")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise ModelError(f"{path}: a model is a query (SELECT/WITH), found {tree.key.upper()}")
    docs: dict[str, str] = {}
    for p in _final_projections(tree):
        notes = [c.strip() for c in (p.comments or []) if not c.strip().startswith("[")]
        if notes and p.alias_or_name:
            docs[p.alias_or_name] = notes[-1]
    return docs


def _literal(module: ast.Module, name: str, path: Path, default: Any) -> Any:
    for node in module.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
                try:
                    return ast.literal_eval(node.value)
                except ValueError:
                    raise ModelError(f"{path}: {name} must be a literal") from None
    return default


def _config(path: Path, layer: str, config: dict[str, str]) -> dict[str, Any]:
    materialized = config.get("materialized") or ("table" if layer == "marts" else "view")
    if materialized not in ("view", "table"):
        raise ModelError(f"{path}: materialized must be view or table, got {materialized!r}")
    try:
        lookback = int(config.get("lookback_days", "0").split()[0])
    except ValueError:
        raise ModelError(f"{path}: lookback_days must be an integer") from None
    return {
        "grain": config.get("grain"),
        "partition_by": config.get("partition_by") or None,
        "lookback_days": lookback,
        "materialized": materialized,
    }


def parse_model(path: Path, root: Path) -> Model:
    layer = path.relative_to(root).parts[0] if len(path.relative_to(root).parts) > 1 else "marts"
    name = path.stem
    if name in RESERVED_NAMES or name.startswith("src_"):
        raise ModelError(f"{path}: {name!r} is a reserved model name")
    text = path.read_text()
    if path.suffix == ".sql":
        description, config = parse_header(_sql_header(text))
        compiled, refs, sources, lookbacks = render(text, path)
        docs = column_comments(compiled, path)
        return Model(name, path, "sql", layer, description, **_config(path, layer, config), refs=tuple(refs),
                     sources=tuple(sources), compiled_sql=compiled, column_docs=docs, call_lookbacks=lookbacks)
    try:
        module = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise ModelError(f"{path}: {exc}") from None
    description, config = parse_header((ast.get_docstring(module) or "").splitlines())
    refs = tuple(_literal(module, "REFS", path, []))
    sources = tuple(tuple(s) for s in _literal(module, "SOURCES", path, []))
    for s in sources:
        if len(s) != 2 or s[0] != "raw" or s[1] not in TABLES:
            raise ModelError(f"{path}: SOURCES entries are ('raw', table) of the contract, got {s!r}")
    if not any(isinstance(n, ast.FunctionDef) and n.name == "model" for n in module.body):
        raise ModelError(f"{path}: a Python model defines model(ref, source) -> polars.LazyFrame")
    docs = dict(_literal(module, "COLUMNS", path, {}))
    return Model(name, path, "python", layer, description, **_config(path, layer, config), refs=refs,
                 sources=sources, column_docs=docs)  # type: ignore[arg-type]


# ---- the project ---------------------------------------------------------------------------------


def _empty_source_sql(table: str) -> str:
    t = TABLES[table]
    cols = [f"NULL::{c.duckdb_type} AS {_quote(c.name)}" for c in t.columns]
    if t.is_fact:
        cols.append('NULL::DATE AS "date"')
    return f"SELECT {', '.join(cols)} WHERE false"


def _empty_sql(columns: list[ColumnInfo]) -> str:
    return "SELECT " + ", ".join(f"NULL::{c.type} AS {_quote(c.name)}" for c in columns) + " WHERE false"


HeldCell = tuple[str, str, str]  # (date, client_id, reason)


def held_cells_sql(cells: Iterable[HeldCell]) -> str:
    """The `held_cells` relation: (date DATE, client_id VARCHAR, reason VARCHAR), empty when nothing is held."""
    rows = sorted(set(cells))
    if not rows:
        return "SELECT NULL::DATE AS \"date\", NULL::VARCHAR AS client_id, NULL::VARCHAR AS reason WHERE false"
    values = ", ".join(f"(DATE {_lit(d)}, {_lit(c)}, {_lit(r)})" for d, c, r in rows)
    return f"SELECT * FROM (VALUES {values}) AS t(\"date\", client_id, reason)"


@dataclass(frozen=True)
class ParentLink:
    """A raw fact column that references another raw fact's key (deliveries.order_id -> orders.order_id)."""

    child: str
    column: str
    parent: str
    key: str


def parent_links(tables: Iterable[str]) -> list[ParentLink]:
    """The fact-to-fact references whose both ends are among `tables` (the raw facts one model reads)."""
    names = set(tables)
    return [
        ParentLink(t, c.name, c.references[0], c.references[1])
        for t in sorted(names)
        if TABLES[t].is_fact
        for c in TABLES[t].columns
        if c.references and c.references[0] != t and c.references[0] in names and TABLES[c.references[0]].is_fact
    ]


class Project:
    """Every model of a models folder, in dependency order, with its output columns."""

    def __init__(self, root: Path, models: dict[str, Model], digest: str = ""):
        self.root = root
        self.models = models
        # What the models' output depends on besides their inputs: the model files, the
        # library, DuckDB and sqlglot (a build whose inputs and digest match is up to date).
        self.digest = digest

    @classmethod
    def load(cls, root: Path | str = MODELS_DIR, cache: bool = True) -> Project:
        """Parse and describe every model; a project parsed before from the same files is read
        from the cache instead (0.7 s of sqlglot import, parsing and describing per process)."""
        root = Path(root)
        if not root.is_dir():
            raise ModelError(f"{root}: models folder not found")
        paths = [
            p
            for p in sorted([*root.rglob("*.sql"), *root.rglob("*.py")])
            if not p.name.startswith("_") and "__pycache__" not in p.parts
        ]
        digest = _project_digest(root, paths)
        cached = _cache_file(digest) if cache else None
        if cached is not None and cached.exists():
            try:
                return cls._from_json(root, json.loads(cached.read_text()), digest)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable or from an older layout: parse again
        found: dict[str, Model] = {}
        for path in paths:
            model = parse_model(path, root)
            if model.name in found:
                raise ModelError(f"{path}: model name {model.name!r} is also defined by {found[model.name].path}")
            found[model.name] = model
        project = cls(root, {n: found[n] for n in _toposort(found)}, digest)
        project._describe()
        if cached is not None:
            project._save(cached)
        return project

    def _save(self, dest: Path) -> None:
        doc = [{**asdict(m), "path": str(m.path)} for m in self.models.values()]
        with contextlib.suppress(OSError):  # a read-only cache only costs the next process the parse
            write_file_atomic(dest, json.dumps(doc).encode())

    @classmethod
    def _from_json(cls, root: Path, doc: list[dict[str, Any]], digest: str) -> Project:
        models: dict[str, Model] = {}
        for d in doc:
            m = Model(
                **{
                    **d,
                    "path": Path(d["path"]),
                    "refs": tuple(d["refs"]),
                    "sources": tuple(tuple(x) for x in d["sources"]),
                    "columns": [ColumnInfo(**c) for c in d["columns"]],
                }
            )
            models[m.name] = m
        return cls(root, models, digest)

    def __getitem__(self, name: str) -> Model:
        return self.models[name]

    def materialized(self) -> list[Model]:
        return [m for m in self.models.values() if not m.is_view]

    def published(self) -> list[Model]:
        """The tables analysts get in the warehouse: the marts. A staging or intermediate model
        materialized for speed stays in the curated zone (dbt keeps such models out of the
        reporting schema for the same reason)."""
        return [m for m in self.materialized() if m.layer == "marts"]

    def view_closure(self, name: str) -> list[Model]:
        """The views `name` compiles in (transitively through views), in dependency order."""
        seen: set[str] = set()

        def walk(n: str) -> None:
            for r in self.models[n].refs:
                if self.models[r].is_view and r not in seen:
                    seen.add(r)
                    walk(r)

        walk(name)
        return [m for m in self.models.values() if m.name in seen]

    def inputs(self, name: str) -> tuple[list[str], list[tuple[str, str]]]:
        """Materialized models and raw sources a table model reads, through its views."""
        closure = [*self.view_closure(name), self.models[name]]
        refs = [r for m in closure for r in m.refs if not self.models[r].is_view]
        sources = [s for m in closure for s in m.sources]
        return list(dict.fromkeys(refs)), list(dict.fromkeys(sources))

    def input_lookbacks(self, name: str) -> dict[str, int]:
        """Each input a table model reads (a table model's name, or "raw.<table>") -> how many
        days before a built date it reads that input: the largest `lookback_days` on its way
        in, from the headers of the model and its views and from the calls that name it."""
        out: dict[str, int] = {}

        def walk(n: str, lookback: int) -> None:
            m = self.models[n]
            lookback = max(lookback, m.lookback_days)
            for schema, t in m.sources:
                key = source_key(schema, t)
                out[key] = max(out.get(key, 0), lookback, m.call_lookbacks.get(key, 0))
            for r in m.refs:
                days = max(lookback, m.call_lookbacks.get(r, 0))
                if self.models[r].is_view:
                    walk(r, days)
                else:
                    out[r] = max(out.get(r, 0), days)

        walk(name, 0)
        return out

    def fact_sources(self, name: str) -> list[str]:
        """Raw fact tables a model depends on, transitively through every ref."""
        out: list[str] = []
        stack = [name]
        seen: set[str] = set()
        while stack:
            m = self.models[stack.pop()]
            if m.name in seen:
                continue
            seen.add(m.name)
            out += [t for _, t in m.sources if TABLES[t].is_fact]
            stack += list(m.refs)
        return sorted(set(out))

    def _describe(self) -> None:
        """Run every model on empty inputs: validates the SQL end to end and yields exact column types."""
        import polars as pl

        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            for t in TABLES:
                con.execute(f"CREATE VIEW {_quote(source_view('raw', t))} AS {_empty_source_sql(t)}")
            con.execute(f"CREATE VIEW {HELD_CELLS} AS {held_cells_sql([])}")
            for m in self.models.values():
                try:
                    if m.language == "sql":
                        con.execute(f"CREATE VIEW {_quote(m.name)} AS {m.compiled_sql}")
                    else:
                        frame = run_python_model(m, con)
                        con.register(f"__{m.name}_arrow", ArrowStream(frame))
                        con.execute(f"CREATE TABLE {_quote(m.name)} AS SELECT * FROM {_quote('__' + m.name + '_arrow')}")
                    described = con.execute(f"DESCRIBE SELECT * FROM {_quote(m.name)}").fetchall()
                except (duckdb.Error, pl.exceptions.PolarsError) as exc:
                    raise ModelError(f"{m.path}: {exc}") from None
                m.columns = [ColumnInfo(str(r[0]), str(r[1]), self._doc(m, str(r[0]))) for r in described]
                if m.is_partitioned and m.materialized == "table":
                    col = next((c for c in m.columns if c.name == m.partition_by), None)
                    if col is None or col.type != "DATE":
                        raise ModelError(f"{m.path}: partition_by {m.partition_by!r} must be an output column of type DATE")
        finally:
            con.close()

    def _doc(self, m: Model, column: str) -> str:
        """The model's own comment, else the same column's description upstream (refs, then the contract)."""
        if m.column_docs.get(column):
            return m.column_docs[column]
        for r in m.refs:
            for c in self.models[r].columns:
                if c.name == column and c.description:
                    return c.description
        for _, t in m.sources:
            if column in TABLES[t].column_names:
                return TABLES[t].column(column).description
            if column == "date" and TABLES[t].is_fact:
                return f"UTC date of {TABLES[t].partition_column} (the raw partition)."
        return ""


def _project_digest(root: Path, paths: list[Path], library: Path = Path(contract.__file__).parent) -> str:
    """Everything parsing and building the models depends on: the model files, the library's
    source (parsing rules, the contract's raw schemas, the runner, and whatever a Python model
    imports, e.g. the sentiment lexicon), DuckDB and sqlglot."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for p in sorted(library.rglob("*.py")):
        h.update(p.read_bytes())
    h.update(f"{duckdb.__version__}|{importlib.metadata.version('sqlglot')}".encode())
    for p in paths:
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _cache_file(digest: str) -> Path:
    """Where a parsed project is cached, named by its digest."""
    base = os.environ.get("DELIVERY_LAKE_CACHE_DIR") or Path.home() / ".cache" / "delivery_lake"
    return Path(base) / f"project-{digest[:24]}.json"


def _toposort(models: dict[str, Model]) -> list[str]:
    for m in models.values():
        for r in m.refs:
            if r not in models:
                raise ModelError(f"{m.path}: ref('{r}') names no model in {m.path.parent.parent}")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(name: str, stack: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*stack[stack.index(name) :], name]
            raise ModelError("ref() cycle: " + " -> ".join(f"{n} ({models[n].path.name})" for n in cycle))
        state[name] = 1
        for r in sorted(models[name].refs):
            visit(r, [*stack, name])
        state[name] = 2
        order.append(name)

    for name in sorted(models):
        visit(name, [])
    return order


class ArrowStream:
    """A Polars frame as an Arrow C stream, which DuckDB scans as a table.

    Frames cross between DuckDB and Polars through the Arrow PyCapsule interface both ways
    (`pl.DataFrame(relation)`, `register(name, ArrowStream(frame))`) rather than `.pl()` and
    `.to_arrow()`, which go through pyarrow: importing it and converting cost 0.12 CPU s
    of a day's refresh, for no change in types or values.
    """

    def __init__(self, frame: pl.DataFrame):
        self.frame = frame

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self.frame.__arrow_c_stream__(requested_schema)


def run_python_model(m: Model, con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Import the model file and run `model(ref, source)` against relations of `con`."""
    import polars as pl

    spec = importlib.util.spec_from_file_location(f"dbt_like_sql_{m.name}", m.path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def ref(name: str) -> pl.LazyFrame:
        if name not in m.refs:
            raise ModelError(f"{m.path}: ref({name!r}) is not declared in REFS")
        return pl.DataFrame(con.sql(f"SELECT * FROM {_quote(name)}")).lazy()

    def source(schema: str, table: str) -> pl.LazyFrame:
        if (schema, table) not in m.sources:
            raise ModelError(f"{m.path}: source({schema!r}, {table!r}) is not declared in SOURCES")
        return pl.DataFrame(con.sql(f"SELECT * FROM {_quote(source_view(schema, table))}")).lazy()

    result = module.model(ref, source)
    return result.collect() if isinstance(result, pl.LazyFrame) else result


# ---- building ------------------------------------------------------------------------------------


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
    # Raw fact -> the (date, client, file) it reads and the SQL of its view, which a parent
    # lookup widens.
    files: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def note(record: dict[str, list[list[Any]]], source: str, parts: Iterable[list[Any]]) -> None:
        new = [list(p) for p in parts]
        if new:
            known = record.setdefault(source, [])
            known += [p for p in new if p not in known]

    def held_at(self, d: str | None) -> list[list[str]]:
        """The held cells of date `d` (all of them for a whole-table build), sorted."""
        return [list(c) for c in sorted(self.held) if d is None or c[0] == d]


def _date_window(dates: list[str], lookback: int) -> tuple[str, str]:
    first = date.fromisoformat(min(dates)) - timedelta(days=lookback)
    return first.isoformat(), max(dates)


class Runner:
    """Builds table models into the curated zone; views are compiled into the models that ref them.

    One runner is one snapshot: raw partitions and gate statuses are listed once, so every
    model of a run sees the same inputs even while new partitions land.
    """

    def __init__(self, lake: Lake, project: Project, settings: Settings | None = None):
        self.lake, self.project, self.settings = lake, project, settings or lake.settings
        self._partitions: dict[str, list[tuple[str, str]]] = {}
        self._blocked: dict[str, set[tuple[str | None, str | None]]] = {}
        self._last_good: dict[tuple[str, str, str], bool] = {}
        # While build() runs, models get cursors of one in-memory DuckDB instance (temp tables
        # and views stay private to each): one thread pool and no new instance per model.
        self._shared: duckdb.DuckDBPyConnection | None = None

    # -- inputs
    def raw_partitions(self, table: str, window: tuple[str, str] | None = None) -> list[tuple[str, str]]:
        """Landed (date, client) partitions of a raw fact, only those inside `window` when given."""
        if table in self._partitions:  # the whole table was listed already
            parts = self._partitions[table]
            return parts if window is None else [(d, c) for d, c in parts if window[0] <= d <= window[1]]
        first, last = (date.fromisoformat(w) for w in window) if window else (None, None)
        if first is None or last is None or (last - first).days > 31:  # long ranges: one listing of the table
            self._partitions[table] = self.lake.list_partitions("raw", table)
            return self.raw_partitions(table, window)
        days = [(first + timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]
        return self.lake.list_partitions("raw", table, dates=days)

    def blocked(self, table: str) -> set[tuple[str | None, str | None]]:
        if table not in self._blocked:
            self._blocked[table] = gate.blocked_partitions(self.lake, table)
        return self._blocked[table]

    def available_dates(self, model: str) -> list[str]:
        """Dates any raw fact the model depends on has data for (what a full refresh builds)."""
        return sorted({d for t in self.project.fact_sources(model) for d, _ in self.raw_partitions(t)})

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

    def _dimension_sql(self, table: str) -> str:
        if (None, None) in self.blocked(table):
            raise GateBlocked(f"raw.{table} is blocked by the quality gate; fix and re-land it first")
        path = self.lake.data_file("raw", table)
        if not self.lake.exists(path):
            raise GateBlocked(f"raw.{table} has not been landed")
        return f"SELECT * FROM read_parquet({_lit(self.lake.uri(path))})"

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
        blocked = self.blocked(table)
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

    def _files_sql(self, table: str, paths: list[str], where: str = "") -> str:
        if not paths:
            return _empty_source_sql(table)
        cols = ", ".join(_quote(c) for c in TABLES[table].column_names)
        return (
            f"SELECT {cols}, \"date\" FROM read_parquet([{', '.join(_lit(self.lake.uri(p)) for p in paths)}], "
            f"hive_partitioning = true, hive_types = {{'date': DATE, 'client': VARCHAR}}){where}"
        )

    def _curated_sql(self, m: Model, window: tuple[str, str] | None, reads: _Reads) -> str:
        if not m.is_partitioned:
            path = self.lake.data_file(ZONE, m.name)
            if not self.lake.exists(path):
                raise ModelError(f"{m.name} has not been built yet (needed downstream); build it first")
            doc = self.lake.read_json(self.lake.build_manifest(ZONE, m.name)) or {}
            reads.held |= {(str(d), str(c), str(r)) for d, c, r in doc.get("held_cells") or []}
            return f"SELECT * FROM read_parquet({_lit(self.lake.uri(path))})"
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
            return _empty_sql(m.columns)
        files = ", ".join(_lit(self.lake.uri(self.lake.data_file(ZONE, m.name, d))) for d in dates)
        cols = ", ".join(_quote(c.name) for c in m.columns)
        # The date column is inside each file; hive parsing is off so it is not read twice.
        return f"SELECT {cols} FROM read_parquet([{files}], hive_partitioning = false)"

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
        child, parent = _quote(source_view("raw", link.child)), _quote(source_view("raw", link.parent))
        col, key = _quote(link.column), _quote(link.key)
        client = _quote(TABLES[link.child].client_column or "client_id")
        built = f' AND c."date" IN ({", ".join(f"DATE {_lit(d)}" for d in dates)})' if dates else ""
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
                    f"[{', '.join(_lit(self.lake.uri(f)) for f in others.values())}], hive_partitioning = true, "
                    f"hive_types = {{'date': DATE, 'client': VARCHAR}}) WHERE {key} IN (SELECT k FROM {missing})"
                )
            parts = [(str(d), str(c)) for d, c in con.execute(f"SELECT DISTINCT d, client FROM {found} ORDER BY ALL").fetchall()]
            if parts:
                source = source_key("raw", link.parent)
                reads.note(reads.parents_found, source, [[d, c] for d, c in parts])
                reads.note(reads.served_last_good, source, [p for p in served if tuple(p) in parts])
                # Only the rows of the keys looked for: the rest of those partitions lies outside
                # the lookback, and a model counting parents over its window must not see it.
                extra = self._files_sql(link.parent, [others[p] for p in parts], f" WHERE {key} IN (SELECT k FROM {found})")
                reads.views[link.parent] = f"{reads.views[link.parent]} UNION ALL {extra}"
                con.execute(f"CREATE OR REPLACE TEMP VIEW {parent} AS {reads.views[link.parent]}")
        reason = f"parent unavailable: {source_key('raw', link.parent)}"
        for d, c, n in con.execute(
            f"SELECT d, client_id, count(*) FROM {missing} ANTI JOIN {found} USING (k) GROUP BY ALL"
        ).fetchall():
            reads.held.add((str(d), str(c), f"{reason} ({n} row{'s' if n != 1 else ''})"))

    def _prepare(self, con: duckdb.DuckDBPyConnection, m: Model, dates: list[str]) -> _Reads:
        """The model's inputs as temp views; with `dates`, each partitioned input covers only
        those dates and its own lookback before them. Also `held_cells`: the cells of the built
        dates whose input is held back (a blocked raw partition of the date itself, a child whose
        parent is not readable, and the cells the model's refs held for the dates it reads)."""
        reads = _Reads()
        refs, sources = self.project.inputs(m.name)
        lookbacks = self.project.input_lookbacks(m.name)

        def window(key: str) -> tuple[str, str] | None:
            return _date_window(dates, lookbacks.get(key, 0)) if dates else None

        facts: list[str] = []
        for schema, table in sources:
            key = source_key(schema, table)
            if not TABLES[table].is_fact:
                sql = self._dimension_sql(table)
            else:
                facts.append(table)
                files, served, excluded = self._fact_files(table, window(key))
                reads.files[table] = files
                reads.note(reads.served_last_good, key, served)
                reads.note(reads.excluded, key, excluded)
                if lookbacks.get(key, 0) == 0:  # a blocked partition read at an earlier date is the child check's business
                    reads.held |= {(d, c, f"blocked: {key}") for d, c in excluded if not dates or d in dates}
                sql = reads.views[table] = self._files_sql(table, [f for *_, f in files])
            con.execute(f"CREATE TEMP VIEW {_quote(source_view(schema, table))} AS {sql}")
        for r in refs:
            con.execute(f"CREATE TEMP VIEW {_quote(r)} AS {self._curated_sql(self.project[r], window(r), reads)}")
        for link in parent_links(facts):
            self._resolve_parents(con, link, dates, window(source_key("raw", link.parent)) is not None, reads)
        con.execute(f"CREATE TEMP VIEW {HELD_CELLS} AS {held_cells_sql(reads.held)}")
        for v in self.project.view_closure(m.name):
            if v.language == "python":
                con.register(f"__{v.name}_arrow", ArrowStream(run_python_model(v, con)))
                con.execute(f"CREATE TEMP VIEW {_quote(v.name)} AS SELECT * FROM {_quote('__' + v.name + '_arrow')}")
            else:
                con.execute(f"CREATE TEMP VIEW {_quote(v.name)} AS {v.compiled_sql}")
        return reads

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
                raise ModelError(f"{name} is partitioned by {m.partition_by}: pass the dates to build, or full_refresh=True")
            else:
                wanted = sorted({date.fromisoformat(d).isoformat() for d in dates})
            if not wanted and not result.removed:
                result.skipped = "no dates to build"
                return result
        else:
            result.inputs = self.inputs_digest(m)
            last = self.lake.read_json(self.lake.build_manifest(ZONE, name)) if result.inputs and not full_refresh else None
            if last and last.get("inputs") == result.inputs and self.lake.exists(self.lake.data_file(ZONE, name)):
                result.up_to_date, result.rows, result.dates = True, int(last["rows"]), [None]
                result.excluded = last.get("excluded_partitions") or {}
                result.served_last_good = last.get("served_last_good") or {}
                result.held_cells = last.get("held_cells") or []
                result.seconds = round(time.monotonic() - started, 3)
                return result
        con = self._shared.cursor() if self._shared is not None else self.lake.duckdb()
        try:
            reads = self._prepare(con, m, wanted)
            result.excluded, result.served_last_good, result.parents_found = reads.excluded, reads.served_last_good, reads.parents_found
            result.held_cells = [c for d in (wanted if m.is_partitioned else [None]) for c in reads.held_at(d)]
            if m.language == "python":
                con.register("__model_arrow", ArrowStream(run_python_model(m, con)))
                query = "SELECT * FROM __model_arrow"
            else:
                query = m.compiled_sql or ""
            # Several dates: the query runs once into a temp table that each date's file is cut
            # from. One file (a day's refresh, a whole table): the query streams straight into
            # it, without materialising its output first.
            kind = "TABLE" if m.is_partitioned and len(wanted) > 1 else "VIEW"
            if m.is_partitioned:
                in_list = ", ".join(f"DATE {_lit(d)}" for d in wanted) or "NULL"
                con.execute(f"CREATE TEMP {kind} __out AS SELECT * FROM ({query}) WHERE {_quote(m.partition_by or '')} IN ({in_list})")
            else:
                con.execute(f"CREATE TEMP {kind} __out AS {query}")
            got = [(str(r[0]), str(r[1])) for r in con.execute("DESCRIBE __out").fetchall()]
            if got != [(c.name, c.type) for c in m.columns]:
                raise ModelError(f"{m.path}: output columns changed while loading: {got}")
            with staging_dir(self.settings) as stage:
                if m.is_partitioned:
                    for d in wanted:
                        n = self._publish(con, m, d, f"WHERE {_quote(m.partition_by or '')} = DATE {_lit(d)}", stage, result)
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
        result.dates = list(wanted) if m.is_partitioned else [None]
        result.rows = result.rows or sum(result.rows_by_date.values())
        result.seconds = round(time.monotonic() - started, 3)
        return result

    def _publish(self, con: duckdb.DuckDBPyConnection, m: Model, d: str | None, where: str, stage: Path, result: ModelResult) -> int:
        local = stage / f"{m.name}_{d or 'all'}.parquet"
        # A total order, so the same inputs give the same file, byte for byte: the grain's key,
        # then a hash of the whole row for rows that share it (the grain is not enforced here).
        # ORDER BY ALL does the same but builds a sort key of every column: 0.44 -> 0.31 s on
        # a day of int_deliveries_enriched (127k rows, 22 columns).
        keys = m.grain_columns
        order = ", ".join([*map(_quote, keys), "hash(__out)"]) if keys else "ALL"
        # Every column is written OPTIONAL. DuckDB writes a column REQUIRED when the statistics
        # of what it copies rule out NULL, and those come from the whole batch in a temp table
        # or from the query plan for one date: the same rows would make different files (and
        # partitions of one model different Parquet schemas) depending on how they were built.
        cols = ", ".join(f"CASE WHEN {q} IS NULL THEN NULL ELSE {q} END AS {q}" for q in map(_quote, (c.name for c in m.columns)))
        # COPY returns the rows it wrote: no second read of the file to count them.
        rows = int(
            con.execute(f"COPY (SELECT {cols} FROM __out {where} ORDER BY {order}) TO {_lit(str(local))} (FORMAT parquet, COMPRESSION zstd)").fetchone()[0]  # type: ignore[index]
        )
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        size = self.lake.publish_file(local, self.lake.data_file(ZONE, m.name, d))
        self.lake.write_json(
            self.lake.build_manifest(ZONE, m.name, d),
            {
                "model": m.name,
                "date": d,
                "rows": rows,
                "bytes": size,
                "sha256": digest,
                "build_id": uuid.uuid4().hex,
                "built_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "excluded_partitions": result.excluded,
                "served_last_good": result.served_last_good,
                "parents_found": result.parents_found,
                "held_cells": [c for c in result.held_cells if d is None or c[0] == d],
                "columns": [[c.name, c.type] for c in m.columns],
                "inputs": result.inputs,
            },
        )
        return rows

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
        if wanted_dates is None and not full_refresh and any(
            m.is_partitioned for m in self.project.materialized() if m.name in names
        ):
            raise ModelError("pass dates to build, or full_refresh=True")
        results: dict[str, ModelResult] = {}
        failed: set[str] = set()
        pending = [m for m in self.project.materialized() if m.name in names]
        # A model starts as soon as the refs it waits on are built, not when a whole round
        # is: for a new day int_deliveries_enriched's four marts need not wait for fct_feedback.
        waited_on = {r.name: sum(r.name in self.project.inputs(m.name)[0] for m in pending) for r in pending}
        last_rows = {m.name: self._last_rows(m) for m in pending}

        def start_order(ready: list[Model]) -> list[Model]:
            # Models others wait on first, then date-partitioned ones (a day's fact) before whole
            # small tables (dimensions), then the biggest output last time: the longest build
            # must not be left for last (fct_deliveries after the three small aggregates cost
            # a day's refresh 0.05-0.08 s).
            return sorted(ready, key=lambda m: (-waited_on[m.name], not m.is_partitioned, -last_rows[m.name]))

        # For a few dates, models run side by side: each is a small query that keeps one core
        # busy. A full refresh runs them one at a time: each query then uses every core already,
        # and two at once only add memory (1.2 -> 1.8 GiB and 28 -> 32 s for the 30-day
        # benchmark lake).
        few_dates = not full_refresh and wanted_dates is not None and len(wanted_dates) <= 7
        workers = max(1, self.settings.duckdb_threads) if self.settings and few_dates else 1
        running: dict[Future[ModelResult], str] = {}
        self._shared = self.lake.duckdb()
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                while pending or running:
                    unfinished = {m.name for m in pending} | set(running.values())
                    ready = [m for m in pending if not any(r in unfinished for r in self.project.inputs(m.name)[0])]
                    skipped = False
                    for m in ready:
                        upstream_failed = [r for r in self.project.inputs(m.name)[0] if r in failed]
                        if upstream_failed:
                            pending.remove(m)
                            failed.add(m.name)
                            results[m.name] = ModelResult(m.name, skipped=f"upstream {', '.join(upstream_failed)} not built")
                            skipped = True
                    if skipped:
                        continue  # models downstream of a skipped one are skipped before anything starts
                    # Only as many as there are free workers, so a model that becomes ready later
                    # is not queued behind ones nothing waits on.
                    for m in start_order(ready)[: workers - len(running)]:
                        pending.remove(m)
                        run_dates, refresh = (wanted_dates, full_refresh) if m.is_partitioned else (None, False)
                        running[pool.submit(self.build_model, m.name, run_dates, full_refresh=refresh)] = m.name
                    if not running:
                        if pending:
                            raise ModelError(f"models wait on each other: {', '.join(m.name for m in pending)}")
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        name = running.pop(fut)
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


def held_dates(lake: Lake, project: Project) -> list[str]:
    """Dates of the models that join a child fact to its parent whose last build held cells back
    for an unavailable parent. A parent that lands or is unblocked may be far from the child's
    date (beyond any lookback), so these dates are rebuilt whenever facts change; they are few."""
    out: set[str] = set()
    for m in project.materialized():
        if not m.is_partitioned or not parent_links(project.fact_sources(m.name)):
            continue
        for d, path in lake.list_build_manifests(ZONE, m.name).items():
            doc = lake.read_json(path) or {}
            if d and any("parent unavailable" in str(cell[-1]) for cell in doc.get("held_cells") or []):
                out.add(d)
    return sorted(out)


def affected_dates(project: Project, changed: dict[str, Iterable[str]], existing: Iterable[str] | None = None) -> list[str]:
    """Curated dates to rebuild when raw fact `table -> dates` changed: each date plus the
    lookback after it with which a model reads that table (a re-landed order changes the
    deliveries dispatched up to that many days later), and so on down partitioned refs (a
    model reading another one N days back sees its rebuilt dates N days later too)."""

    def spread(dates: Iterable[str], lookback: int) -> set[str]:
        return {(date.fromisoformat(d) + timedelta(days=k)).isoformat() for d in dates for k in range(lookback + 1)}

    per_model: dict[str, set[str]] = {}
    for m in project.materialized():  # dependency order: a ref's dates are known before its readers'
        if not m.is_partitioned:
            continue
        refs, sources = project.inputs(m.name)
        lookbacks = project.input_lookbacks(m.name)
        hit: set[str] = set()
        for schema, t in sources:
            hit |= spread(changed.get(t, ()), lookbacks[source_key(schema, t)])
        for r in refs:
            hit |= spread(per_model.get(r, ()), lookbacks[r])
        per_model[m.name] = hit
    out = set().union(*per_model.values())
    if existing is not None:
        out &= set(existing)
    return sorted(out)
