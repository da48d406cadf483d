"""`delivery-lake metrics | metric | ask | ask-eval | serve`: the semantic layer from the shell."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from delivery_lake.config import Settings
from delivery_lake.semantic import evaluation
from delivery_lake.semantic.compiler import MetricQuery
from delivery_lake.semantic.layer import SemanticError, render_markdown
from delivery_lake.semantic.layer import default as default_layer
from delivery_lake.semantic.service import MemoryCache, QuestionService, make_cache
from delivery_lake.warehouse import WarehouseError

REFUSED_EXIT = 3
console = Console() if sys.stdout.isatty() else Console(width=150)


def format_value(value: Any, fmt: str) -> str:
    if value is None:
        return "—"
    if not isinstance(value, int | float):
        return str(value)
    if fmt == "percent":
        return f"{value * 100:.1f}%"
    if fmt == "money":
        return f"{value:,.2f}"
    if fmt == "count":
        return f"{int(value):,}"
    if fmt == "probability":
        return f"{value:.3f}"
    return f"{value:,.2f}"


def print_answer(result: dict[str, Any]) -> None:
    if result.get("refused"):
        console.print(f"[yellow]refused:[/yellow] {result['reason']}")
        for s in result.get("suggestions", []):
            console.print(f"  did you mean {s}", markup=False)
        return
    if "interpretation" in result:
        console.print(f"[bold]{result['interpretation']['text']}[/bold]")
    formats = result.get("formats", {})
    table = RichTable(show_lines=False)
    for c in result["columns"]:
        table.add_column(c, justify="right" if c in formats else "left")
    for row in result["rows"]:
        table.add_row(*(format_value(v, formats.get(c, "")) for c, v in zip(result["columns"], row, strict=True)))
    console.print(table)
    for note in result.get("caveats", []):
        console.print(f"[yellow]caveat:[/yellow] {note}")


def _service(settings: Settings) -> QuestionService:
    try:
        cache = make_cache(settings.redis_url)
    except Exception as exc:  # the Redis client's errors; the URL is not repeated (it may hold a password)
        # One question from the shell does not need the shared cache: answer it uncached, and say so.
        print(f"note: Redis cache (REDIS_URL) unavailable, answering without it: {type(exc).__name__}", file=sys.stderr)
        cache = MemoryCache()
    return QuestionService(settings.warehouse_path, cache)


METRICS_DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "metrics.md"


def cmd_metrics(args: argparse.Namespace) -> int:
    layer = default_layer()
    if args.write_docs or args.check_docs:
        text = render_markdown(layer)
        if args.check_docs:
            if not METRICS_DOC.exists() or METRICS_DOC.read_text() != text:
                print(f"{METRICS_DOC} is out of date: run `delivery-lake metrics --write-docs`", file=sys.stderr)
                return 1
            return 0
        METRICS_DOC.write_text(text)
        console.print(f"wrote {METRICS_DOC}")
        return 0
    if args.format == "json":
        print(json.dumps(QuestionService(Settings.from_env().warehouse_path, layer=layer).catalogue(), indent=1))
        return 0
    t = RichTable(title="metrics")
    for c in ("metric", "description", "definition", "by"):
        t.add_column(c, overflow="fold")
    for m in layer.metrics.values():
        t.add_row(m.name, m.description, m.definition(), ", ".join(layer.dimensions_of(m.model)))
    console.print(t)
    d = RichTable(title="dimensions")
    d.add_column("dimension")
    d.add_column("description", overflow="fold")
    d.add_column("also called", overflow="fold")
    for dim in layer.dimensions.values():
        grains = f" (grains: {', '.join(dim.grains)})" if dim.time else ""
        d.add_row(dim.name, dim.description + grains, ", ".join(dim.synonyms[:6]))
    console.print(d)
    return 0


def _date(text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise SemanticError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def cmd_metric(args: argparse.Namespace) -> int:
    filters: dict[str, list[str]] = {}
    for item in args.where or []:
        dim, sep, value = item.partition("=")
        if not sep or not value:
            print(f"error: --where {item!r}: expected DIMENSION=VALUE", file=sys.stderr)
            return 2
        filters.setdefault(dim.strip(), []).append(value.strip())
    by = [b for item in args.by or [] for b in item.split(",") if b]
    try:
        query = MetricQuery(
            metrics=tuple(args.metric.split(",")),
            group_by=tuple(by),
            grain=args.grain,
            filters=tuple((k, tuple(v)) for k, v in filters.items()),
            start=_date(args.from_),
            end=_date(args.to),
            order_by=args.order_by,
            descending=not args.ascending,
            limit=args.limit,
        )
    except SemanticError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _respond(lambda: _service(Settings.from_env()).metric(query)[0], args.format)


def _respond(answer: Callable[[], dict[str, Any]], fmt: str) -> int:
    """Print an answer (or why there is none) for `metric` and `ask`: 0 answered, 3 refused,
    2 a query the semantic layer cannot compile, 1 no warehouse to answer from."""
    try:
        result = answer()
    except SemanticError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WarehouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if fmt == "json":
        print(json.dumps(result, indent=1))
    else:
        print_answer(result)
    return REFUSED_EXIT if result.get("refused") else 0


def cmd_ask(args: argparse.Namespace) -> int:
    try:
        as_of = _date(args.as_of)
    except SemanticError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _respond(lambda: _service(Settings.from_env()).ask(args.question, as_of)[0], args.format)


def cmd_ask_eval(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    report = evaluation.evaluate(evaluation.load_questions(args.questions), QuestionService(settings.warehouse_path))
    for r in report.results:
        if not r.ok or args.verbose:
            mark = "ok  " if r.ok else "FAIL"
            console.print(f"{mark} {r.question}: {r.why}", markup=False)
    console.print(report.summary(), markup=False)
    return 0 if report.meets_target() else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from delivery_lake.semantic.api import serve  # FastAPI and uvicorn: only for this command

    return serve(Settings.from_env(), host=args.host, port=args.port)
