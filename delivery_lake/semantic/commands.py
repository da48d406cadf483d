"""`delivery-lake metrics | metric | ask | ask-eval | serve`: the semantic layer from the shell."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from delivery_lake.config import Settings
from delivery_lake.semantic import evaluation
from delivery_lake.semantic.compiler import MetricQuery
from delivery_lake.semantic.layer import SemanticError
from delivery_lake.semantic.layer import default as default_layer
from delivery_lake.semantic.service import QuestionService, make_cache
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
    return QuestionService(settings.warehouse_path, make_cache(settings.redis_url))


def cmd_metrics(args: argparse.Namespace) -> int:
    layer = default_layer()
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
        result, _ = _service(Settings.from_env()).metric(query)
    except SemanticError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WarehouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(result, indent=1))
    else:
        print_answer(result)
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    try:
        as_of = _date(args.as_of)
        result, _ = _service(Settings.from_env()).ask(args.question, as_of)
    except SemanticError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WarehouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(result, indent=1))
    else:
        print_answer(result)
    return REFUSED_EXIT if result.get("refused") else 0


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


def add_commands(sub: Any) -> None:
    m = sub.add_parser("metrics", help="list the governed metrics and dimensions (semantic/*.yaml)")
    m.add_argument("--format", choices=("table", "json"), default="table")
    m.set_defaults(func=cmd_metrics)

    q = sub.add_parser("metric", help="answer a structured metric query, e.g. metric on_time_rate --by client")
    q.add_argument("metric", help="metric name (comma-separated for several)")
    q.add_argument("--by", action="append", help="dimension(s) to break down by (date, client, depot, ...)")
    q.add_argument("--grain", choices=("day", "week", "month"), default="day", help="grain of the date dimension")
    q.add_argument("--where", action="append", help="DIMENSION=VALUE filter (repeatable; same dimension = any of)")
    q.add_argument("--from", dest="from_", help="first date, YYYY-MM-DD (inclusive)")
    q.add_argument("--to", help="last date, YYYY-MM-DD (inclusive)")
    q.add_argument("--order-by", help="metric to rank by")
    q.add_argument("--ascending", action="store_true", help="rank lowest first")
    q.add_argument("--limit", type=int)
    q.add_argument("--format", choices=("table", "json"), default="table")
    q.set_defaults(func=cmd_metric)

    a = sub.add_parser("ask", help="ask the warehouse a question in plain English (refusals exit 3)")
    a.add_argument("question")
    a.add_argument("--as-of", help="the date 'today' means, YYYY-MM-DD (default: today, UTC)")
    a.add_argument("--format", choices=("table", "json"), default="table")
    a.set_defaults(func=cmd_ask)

    e = sub.add_parser("ask-eval", help="score `ask` on the labelled question set (accuracy, refusals)")
    e.add_argument("--questions", default=str(evaluation.DEFAULT_QUESTIONS))
    e.add_argument("-v", "--verbose", action="store_true")
    e.set_defaults(func=cmd_ask_eval)

    s = sub.add_parser("serve", help="HTTP question service and page (POST /ask, GET /metrics, POST /metric)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.set_defaults(func=cmd_serve)
