"""The project: every model of a models folder parsed and described, in dependency order, with
its digest and the on-disk cache of a parsed project."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import duckdb

from delivery_lake import contract
from delivery_lake.config import cache_dir
from delivery_lake.contract import TABLES
from delivery_lake.storage import write_file_atomic
from delivery_lake.transform.base import (
    HELD_CELLS,
    MODELS_DIR,
    ColumnInfo,
    Model,
    ModelError,
    empty_source_sql,
    quote,
    source_key,
    source_view,
)
from delivery_lake.transform.held import held_cells_sql
from delivery_lake.transform.lineage import ColumnDep, trace_column_lineage
from delivery_lake.transform.parse import parse_model
from delivery_lake.transform.python_models import ArrowStream, run_python_model


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
        from the cache instead (no sqlglot import, parsing or describing)."""
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
                    "column_lineage": {c: [tuple(x) for x in deps] for c, deps in d["column_lineage"].items()},
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

    def column_lineage(self, name: str) -> dict[str, list[ColumnDep]]:
        """Output column of a table model -> the (layer, table, column) it is computed from: the
        nearest assets, `("curated", model, column)` or `("raw", table, column)`, through views."""
        return self.models[name].column_lineage

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
                con.execute(f"CREATE VIEW {quote(source_view('raw', t))} AS {empty_source_sql(t)}")
            con.execute(f"CREATE VIEW {HELD_CELLS} AS {held_cells_sql([])}")
            for m in self.models.values():
                try:
                    if m.language == "sql":
                        con.execute(f"CREATE VIEW {quote(m.name)} AS {m.compiled_sql}")
                    else:
                        frame = run_python_model(m, con)
                        con.register(f"__{m.name}_arrow", ArrowStream(frame))
                        con.execute(f"CREATE TABLE {quote(m.name)} AS SELECT * FROM {quote('__' + m.name + '_arrow')}")
                    described = con.execute(f"DESCRIBE SELECT * FROM {quote(m.name)}").fetchall()
                except (duckdb.Error, pl.exceptions.PolarsError) as exc:
                    raise ModelError(f"{m.path}: {exc}") from None
                m.columns = [ColumnInfo(str(r[0]), str(r[1]), self._doc(m, str(r[0]))) for r in described]
                if m.is_partitioned and m.materialized == "table":
                    col = next((c for c in m.columns if c.name == m.partition_by), None)
                    if col is None or col.type != "DATE":
                        raise ModelError(
                            f"{m.path}: partition_by {m.partition_by!r} must be an output column of type DATE"
                        )
        finally:
            con.close()
        # Column lineage needs every table model's columns: traced once all are described, and
        # cached with them (the SQL's lineage is read by sqlglot, see transform/lineage.py). SQL
        # sqlglot cannot trace gets no lineage: it runs all the same.
        from sqlglot.errors import SqlglotError

        for m in self.materialized():
            with contextlib.suppress(SqlglotError):
                m.column_lineage = trace_column_lineage(self.models, m.name)

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
    return cache_dir() / f"project-{digest[:24]}.json"


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
