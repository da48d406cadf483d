"""The CLI's view of the question layer: `metrics`, `metric`, `ask`, `ask-eval`, `serve`.

Only the argument parsers live here; each command's module (`commands.py`) is imported when the
command runs. Importing the question layer costs ~190 ms (dateparser, sqlglot, DuckDB), which
`delivery-lake query` or `summary` should not pay just to build the parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from delivery_lake.lazy_commands import later

DEFAULT_QUESTIONS = Path(__file__).resolve().parent.parent.parent / "tests" / "questions" / "labelled.yaml"


def add_commands(sub: Any) -> None:
    """Register the commands on the CLI's subparsers."""
    m = sub.add_parser("metrics", help="list the governed metrics and dimensions (semantic/*.yaml)")
    m.add_argument("--format", choices=("table", "json"), default="table")
    m.add_argument("--write-docs", action="store_true", help="write docs/metrics.md from semantic/*.yaml")
    m.add_argument("--check-docs", action="store_true", help="fail if docs/metrics.md is out of date")
    m.set_defaults(func=later("delivery_lake.semantic.commands", "cmd_metrics"))

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
    q.set_defaults(func=later("delivery_lake.semantic.commands", "cmd_metric"))

    a = sub.add_parser("ask", help="ask the warehouse a question in plain English (refusals exit 3)")
    a.add_argument("question")
    a.add_argument("--as-of", help="the date 'today' means, YYYY-MM-DD (default: today, UTC)")
    a.add_argument("--format", choices=("table", "json"), default="table")
    a.set_defaults(func=later("delivery_lake.semantic.commands", "cmd_ask"))

    e = sub.add_parser("ask-eval", help="score `ask` on the labelled question set (accuracy, refusals)")
    e.add_argument("--questions", default=str(DEFAULT_QUESTIONS))
    e.add_argument("-v", "--verbose", action="store_true")
    e.set_defaults(func=later("delivery_lake.semantic.commands", "cmd_ask_eval"))

    s = sub.add_parser("serve", help="HTTP question service and page (POST /ask, GET /metrics, POST /metric)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.set_defaults(func=later("delivery_lake.semantic.commands", "cmd_serve"))
