"""The semantic layer: models, dimensions and metrics read from `semantic/*.yaml`.

The YAML files are the single definition of every governed metric; this module loads them and
refuses, naming the file and the entry, anything the compiler could not turn into safe SQL: an
expression that is not an aggregate over the model's own columns, a dimension a model cannot
reach, a join to an unknown table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import sqlglot
import yaml
from sqlglot import exp

SEMANTIC_DIR = Path(__file__).resolve().parent.parent.parent / "semantic"
GRAINS = ("day", "week", "month")
FORMATS = ("count", "number", "percent", "money", "minutes", "km", "stars", "probability")


class SemanticError(ValueError):
    """A semantic-layer file that cannot be used, or a query it cannot answer."""


@dataclass(frozen=True)
class Join:
    name: str
    table: str
    on: tuple[tuple[str, str], ...]  # (model column, joined table column)


@dataclass(frozen=True)
class Model:
    name: str
    table: str
    description: str
    time: str
    joins: dict[str, Join]


@dataclass(frozen=True)
class Entity:
    table: str
    key: str
    name: str


@dataclass(frozen=True)
class Dimension:
    name: str
    description: str
    synonyms: tuple[str, ...]
    columns: dict[str, str] = field(default_factory=dict)  # model -> column or join.column
    time: bool = False
    grains: tuple[str, ...] = ()
    entity: Entity | None = None
    values_from: tuple[str, str] | None = None  # (table, column) of the known values
    value_synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def label_column(self) -> str | None:
        return self.entity.name if self.entity else None


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    description: str
    model: str
    format: str
    synonyms: tuple[str, ...]
    better: str = "higher"
    rate: str | None = None  # the ratio metric meaning "the share of" this count
    expr: str | None = None
    numerator: str | None = None
    denominator: str | None = None

    @property
    def is_ratio(self) -> bool:
        return self.numerator is not None

    def definition(self) -> str:
        if self.is_ratio:
            return f"{self.numerator} / {self.denominator}"
        return str(self.expr)


@dataclass(frozen=True)
class SemanticLayer:
    models: dict[str, Model]
    dimensions: dict[str, Dimension]
    metrics: dict[str, Metric]

    def metric(self, name: str) -> Metric:
        try:
            return self.metrics[name]
        except KeyError:
            raise SemanticError(f"unknown metric {name!r}; known: {', '.join(sorted(self.metrics))}") from None

    def dimension(self, name: str) -> Dimension:
        try:
            return self.dimensions[name]
        except KeyError:
            known = ", ".join(sorted(self.dimensions))
            raise SemanticError(f"unknown dimension {name!r}; known: {known}") from None

    def dimensions_of(self, model: str) -> list[str]:
        """The dimensions a model can be broken down by (date always)."""
        return [d.name for d in self.dimensions.values() if d.time or model in d.columns]

    def tables(self) -> set[str]:
        """Every warehouse table the layer reads."""
        out = {m.table for m in self.models.values()} | {
            j.table for m in self.models.values() for j in m.joins.values()
        }
        for d in self.dimensions.values():
            if d.entity:
                out.add(d.entity.table)
            if d.values_from:
                out.add(d.values_from[0])
        return out


def _words(raw: object, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(w, str) for w in raw):
        raise SemanticError(f"{where}: synonyms must be a list of strings")
    return tuple(w.strip().lower() for w in raw)


def _columns_of(expression: exp.Expr) -> set[str]:
    return {c.name for c in expression.find_all(exp.Column)}


def _aggregate(sql: str, where: str) -> str:
    """Check that `sql` parses as one aggregate expression over plain columns (no subquery, no
    table reference, nothing but an expression); returns it normalised to DuckDB SQL."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as e:
        raise SemanticError(f"{where}: {sql!r} is not an expression: {e}") from None
    if isinstance(tree, exp.Query) or tree.find(exp.Select, exp.Subquery, exp.Table):
        raise SemanticError(f"{where}: {sql!r} must be an aggregate expression, not a query")
    if not tree.find(exp.AggFunc):
        raise SemanticError(f"{where}: {sql!r} must aggregate (count, sum, count_if, ...)")
    if any(c.table for c in tree.find_all(exp.Column)):
        raise SemanticError(f"{where}: {sql!r} must use the model's own columns, unqualified")
    return tree.sql(dialect="duckdb")


def _read(path: Path, key: str) -> dict[str, dict[str, object]]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SemanticError(f"{path}: {e}") from None
    section = (doc or {}).get(key)
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise SemanticError(f"{path}: expected a mapping `{key}:` of named entries")
    return section


def load(directory: Path = SEMANTIC_DIR) -> SemanticLayer:
    """Read and check the three files of `directory`."""
    models: dict[str, Model] = {}
    path = directory / "models.yaml"
    for name, raw in _read(path, "models").items():
        where = f"{path.name}: model {name}"
        joins = {}
        for jname, j in (raw.get("joins") or {}).items():  # type: ignore[attr-defined]
            on = j.get("keys") if isinstance(j, dict) else None
            if not isinstance(on, dict) or not on or not isinstance(j.get("table"), str):
                raise SemanticError(f"{where}: join {jname} needs `table` and `keys: {{column: column}}`")
            joins[jname] = Join(jname, j["table"], tuple((str(a), str(b)) for a, b in on.items()))
        if not isinstance(raw.get("table"), str) or not isinstance(raw.get("time"), str):
            raise SemanticError(f"{where}: needs `table` and `time`")
        models[name] = Model(name, str(raw["table"]), str(raw.get("description", "")), str(raw["time"]), joins)

    dimensions: dict[str, Dimension] = {}
    path = directory / "dimensions.yaml"
    for name, raw in _read(path, "dimensions").items():
        where = f"{path.name}: dimension {name}"
        columns = {str(k): str(v) for k, v in (raw.get("columns") or {}).items()}  # type: ignore[attr-defined]
        for model, column in columns.items():
            if model not in models:
                raise SemanticError(f"{where}: unknown model {model!r}")
            if "." in column and column.split(".", 1)[0] not in models[model].joins:
                raise SemanticError(f"{where}: model {model} has no join {column.split('.', 1)[0]!r}")
        entity = raw.get("entity")
        values_from = raw.get("values_from")
        grains: tuple[str, ...] = tuple(str(g) for g in (raw.get("grains") or ()))  # type: ignore[attr-defined]
        if any(g not in GRAINS for g in grains):
            raise SemanticError(f"{where}: grains must be among {GRAINS}")
        dimensions[name] = Dimension(
            name=name,
            description=str(raw.get("description", "")),
            synonyms=_words(raw.get("synonyms"), where),
            columns=columns,
            time=bool(raw.get("time", False)),
            grains=grains,
            entity=Entity(**entity) if isinstance(entity, dict) else None,
            values_from=(str(values_from["table"]), str(values_from["column"]))
            if isinstance(values_from, dict)
            else None,
            value_synonyms={
                str(k): _words(v, where)
                for k, v in (raw.get("value_synonyms") or {}).items()  # type: ignore[attr-defined]
            },
        )
    if [d.name for d in dimensions.values() if d.time] != ["date"]:
        raise SemanticError(f"{path.name}: exactly one time dimension, named `date`, is expected")

    metrics: dict[str, Metric] = {}
    path = directory / "metrics.yaml"
    for name, raw in _read(path, "metrics").items():
        where = f"{path.name}: metric {name}"
        model = str(raw.get("model"))
        if model not in models:
            raise SemanticError(f"{where}: unknown model {model!r}")
        fmt = str(raw.get("format", "number"))
        if fmt not in FORMATS:
            raise SemanticError(f"{where}: format must be one of {FORMATS}")
        better = str(raw.get("better", "higher"))
        if better not in ("higher", "lower"):
            raise SemanticError(f"{where}: better must be higher or lower")
        has_expr, has_ratio = "expr" in raw, "numerator" in raw or "denominator" in raw
        if has_expr == has_ratio or (has_ratio and not ("numerator" in raw and "denominator" in raw)):
            raise SemanticError(f"{where}: give either `expr`, or both `numerator` and `denominator`")
        metrics[name] = Metric(
            name=name,
            label=str(raw.get("label", name)),
            description=str(raw.get("description", "")),
            model=model,
            format=fmt,
            synonyms=_words(raw.get("synonyms"), where),
            better=better,
            rate=str(raw["rate"]) if raw.get("rate") else None,
            expr=_aggregate(str(raw["expr"]), where) if has_expr else None,
            numerator=_aggregate(str(raw["numerator"]), where) if has_ratio else None,
            denominator=_aggregate(str(raw["denominator"]), where) if has_ratio else None,
        )
    for m in metrics.values():
        if m.rate and (m.rate not in metrics or not metrics[m.rate].is_ratio):
            raise SemanticError(f"{path.name}: metric {m.name}: rate {m.rate!r} is not a ratio metric of this file")
    return SemanticLayer(models, dimensions, metrics)


@cache
def default() -> SemanticLayer:
    """The repository's semantic layer, read once per process."""
    return load()


def check_columns(layer: SemanticLayer, columns_of: dict[str, set[str]]) -> list[str]:
    """Problems between the layer and the warehouse's tables (`columns_of`: table -> columns):
    a metric over a column its model's table lacks, a dimension column or a join key that is
    not there. Empty when everything resolves."""
    problems = []
    for m in layer.metrics.values():
        table = layer.models[m.model].table
        if table not in columns_of:
            continue  # a table not built yet (e.g. risk scores before the first model) is not an error
        used = set().union(
            *(_columns_of(sqlglot.parse_one(p, read="duckdb")) for p in (m.expr, m.numerator, m.denominator) if p)
        )
        missing = used - columns_of[table]
        if missing:
            problems.append(f"metric {m.name}: {table} has no column {', '.join(sorted(missing))}")
    for d in layer.dimensions.values():
        for model, column in d.columns.items():
            mdl = layer.models[model]
            if "." in column:
                join, col = column.split(".", 1)
                table = mdl.joins[join].table
            else:
                table, col = mdl.table, column
            if table in columns_of and col not in columns_of[table]:
                problems.append(f"dimension {d.name}: {table} has no column {col}")
    return problems


def metrics_on(layer: SemanticLayer, table: str) -> list[Metric]:
    """The governed metrics computed on a warehouse table (for that mart's docs)."""
    return [m for m in layer.metrics.values() if layer.models[m.model].table == table]


def render_markdown(layer: SemanticLayer) -> str:
    """docs/metrics.md: the metrics and dimensions as the YAML defines them."""
    lines = [
        "# Governed metrics",
        "",
        "Generated from `semantic/*.yaml` by `delivery-lake metrics --write-docs`; do not edit by hand.",
        "A ratio is `sum(numerator) / sum(denominator)` over the rows of each group asked for.",
        "",
        "| metric | on | definition | format | better | also called | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in layer.metrics.values():
        words = ", ".join(w for w in m.synonyms if w != m.name.replace("_", " "))
        table = layer.models[m.model].table
        definition = m.definition().replace("|", "\\|")
        lines.append(
            f"| `{m.name}` | `{table}` | `{definition}` | {m.format} | {m.better} | {words} | {m.description} |"
        )
    lines += ["", "| dimension | reached from | also called | description |", "|---|---|---|---|"]
    for d in layer.dimensions.values():
        reach = "every model (its time column)" if d.time else ", ".join(f"{k}: `{v}`" for k, v in d.columns.items())
        grains = f" Grains: {', '.join(d.grains)}." if d.time else ""
        lines.append(f"| `{d.name}` | {reach} | {', '.join(d.synonyms)} | {d.description}{grains} |")
    lines += ["", "| model | table | time column | joins |", "|---|---|---|---|"]
    for model in layer.models.values():
        joins = ", ".join(f"{j.name} (`{j.table}`)" for j in model.joins.values())
        lines.append(f"| `{model.name}` | `{model.table}` | `{model.time}` | {joins} |")
    return "\n".join(lines) + "\n"
