"""Parsing one model file: the `{{ ref() }}` / `{{ source() }}` templating, the header
(description and config), and the column comments of the final select (read by sqlglot)."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from delivery_lake.contract import TABLES
from delivery_lake.transform.base import RESERVED_NAMES, Model, ModelError, quote, source_key, source_view

if TYPE_CHECKING:
    pass

# sqlglot is imported where it is used: a process that loads a cached project never imports it.

HEADER_KEYS = ("grain", "partition_by", "lookback_days", "materialized")


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
        raise ModelError(
            f"{path}: only {{{{ ref('model') }}}} and {{{{ source('raw', 'table') }}}} are supported, "
            f"got {{{{ {expr} }}}}"
        )
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    lookback: int | None = None
    for kw in node.keywords:
        value = kw.value.value if isinstance(kw.value, ast.Constant) else None
        if kw.arg != "lookback_days" or type(value) is not int or value < 0:
            raise ModelError(
                f"{path}: the only option of ref() and source() is lookback_days=<days, 0 or more>, "
                f"got {{{{ {expr} }}}}"
            )
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
            out.append(quote(args[0]))
        else:
            sources.append((args[0], args[1]))
            out.append(quote(source_view(args[0], args[1])))
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


def _final_projections(tree: Any) -> list[Any]:
    """The projections of the query's result, following `select * from <cte>` chains."""
    from sqlglot import exp

    ctes = {c.alias: c.this for c in tree.find_all(exp.CTE)}
    q: Any = tree
    for _ in range(len(ctes) + 1):
        while isinstance(q, exp.SetOperation):
            q = q.this
        if not isinstance(q, exp.Select):
            return []
        sel = q.selects
        src = q.args.get("from") or q.args.get("from_")
        if (
            len(sel) == 1
            and isinstance(sel[0], exp.Star)
            and src is not None
            and isinstance(src.this, exp.Table)
            and src.this.name in ctes
        ):
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
        return Model(
            name,
            path,
            "sql",
            layer,
            description,
            **_config(path, layer, config),
            refs=tuple(refs),
            sources=tuple(sources),
            compiled_sql=compiled,
            column_docs=docs,
            call_lookbacks=lookbacks,
        )
    try:
        module = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise ModelError(f"{path}: {exc}") from None
    description, config = parse_header((ast.get_docstring(module) or "").splitlines())
    py_refs: tuple[str, ...] = tuple(_literal(module, "REFS", path, []))
    py_sources: tuple[tuple[str, str], ...] = tuple(tuple(s) for s in _literal(module, "SOURCES", path, []))
    for s in py_sources:
        if len(s) != 2 or s[0] != "raw" or s[1] not in TABLES:
            raise ModelError(f"{path}: SOURCES entries are ('raw', table) of the contract, got {s!r}")
    if not any(isinstance(n, ast.FunctionDef) and n.name == "model" for n in module.body):
        raise ModelError(f"{path}: a Python model defines model(ref, source) -> polars.LazyFrame")
    docs = dict(_literal(module, "COLUMNS", path, {}))
    return Model(
        name,
        path,
        "python",
        layer,
        description,
        **_config(path, layer, config),
        refs=py_refs,
        sources=py_sources,
        column_docs=docs,
    )
