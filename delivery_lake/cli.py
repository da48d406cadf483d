"""`delivery-lake` command line: generate, run, build, query, summary, history, reconcile, contract;
metrics, metric, ask, ask-eval and serve (the semantic layer, delivery_lake/semantic/)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table as RichTable

from delivery_lake.config import Settings
from delivery_lake.contract import TABLES, render_markdown
from delivery_lake.semantic.parsers import add_commands
from delivery_lake.sources.parsers import add_commands as add_source_commands

if TYPE_CHECKING:  # the runner pulls in sqlglot and Polars; commands that do not build skip them
    from delivery_lake.transform import ModelResult

# Piped output (make, CI logs) gets a width that fits the summary tables.
console = Console() if sys.stdout.isatty() else Console(width=150)
CONTRACT_DOC = Path(__file__).resolve().parent.parent / "docs" / "contract.md"


def _cmd_generate(args: argparse.Namespace) -> int:
    from delivery_lake.generator import generate

    summary = generate(
        args.out,
        start=date.fromisoformat(args.start),
        days=args.days,
        clients=args.clients,
        orders_per_day=args.orders_per_day,
        seed=args.seed,
        dirty_rate=args.dirty_rate,
        progress=not args.quiet,
    )
    total = sum(summary.rows.values())
    console.print(
        f"wrote {len(summary.files)} files, {total:,} rows, {summary.bytes_written / 1e6:.1f} MB to {args.out}"
    )
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from delivery_lake.quality import Quality
    from delivery_lake.storage import Lake

    settings = Settings.from_env()
    index = Quality(Lake.from_settings(settings), settings).build_docs()
    console.print(f"Data Docs: {index}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from assets.run import run_inbox

    overrides = {"inbox_dir": Path(args.inbox).resolve()} if args.inbox else {}
    settings = Settings.from_env(**overrides)
    result = run_inbox(settings, full=not args.new_only, land_only=args.land_only)
    for line in result.lines:
        console.print(line)
    if not result.success:
        console.print(f"[red]FAILED[/red]: {result.failure}")
        return 1
    if args.summary:
        print_summary(settings)
    return 0


def print_summary(settings: Settings) -> None:
    from delivery_lake.summary import lake_summary

    summary = lake_summary(settings)
    t = RichTable(title=f"Lake {summary['lake']}")
    cols = (
        "table",
        "partitions",
        "rows landed",
        "rows quarantined",
        "replayed",
        "superseded",
        "pending",
        "blocked",
        "top quarantine reasons",
    )
    for col in cols:
        t.add_column(col, justify="left" if col in ("table", "top quarantine reasons") else "right")
    for name, s in summary["tables"].items():
        reasons = ", ".join(f"{r} {n}" for r, n in list(s["by_reason"].items())[:3])
        p = summary["partitions"].get(name)
        # Blocked rows are landed but kept from the marts: say so rather than leave them out.
        blocked = f"{p['blocked']} ({p['blocked_rows']:,} rows)" if p and p["blocked"] else "-" if p is None else "0"
        t.add_row(
            name,
            str(s["partitions"]),
            f"{s['landed']:,}",
            f"{s['quarantined']:,}",
            f"{s['replayed']:,}",
            f"{s['superseded']:,}",
            f"{s['pending']:,}",
            blocked,
            reasons,
        )
    console.print(t)
    if summary["incomplete"]:
        console.print(f"{len(summary['incomplete'])} partition(s) blocked or pending:", markup=False)
        for line in summary["incomplete"]:
            console.print(f"  {line}", markup=False, soft_wrap=True)
    else:
        console.print("no partition blocked or pending", markup=False)
    for extra in summary.get("sections", []):
        console.print(extra)


def _cmd_summary(args: argparse.Namespace) -> int:
    print_summary(Settings.from_env())
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    import json

    from delivery_lake.history import key_history
    from delivery_lake.storage import Lake

    settings = Settings.from_env()
    versions = key_history(Lake.from_settings(settings), TABLES[args.table], args.key)
    if not versions:
        print(
            f"error: no {args.table} row with {TABLES[args.table].key} = {args.key!r} "
            "(not landed, pending nor superseded)",
            file=sys.stderr,
        )
        return 1
    if args.format == "json":
        print(json.dumps(versions, default=str, indent=1))
        return 0
    console.print(
        f"{args.table} {TABLES[args.table].key}={args.key}: {len(versions)} version(s), newest first", markup=False
    )
    for i, v in enumerate(versions):
        where = "/".join(str(v[k]) for k in ("date", "client") if v.get(k) is not None) or args.table
        if v["version"] == "superseded":
            head = (
                f"superseded  {where} from {v['source_file']} line {v['source_line']}, "
                f"replaced by {v['superseded_by']} at {v['superseded_at']}"
            )
        else:
            head = f"{v['version']:<11} {where}" + (
                f" from {v['source_file']} line {v['source_line']}" if v.get("source_file") else ""
            )
        console.print(head, markup=False, soft_wrap=True)
        newer = versions[i - 1]["values"] if i else None
        if newer is None:
            body = "  ".join(f"{k}={val}" for k, val in v["values"].items())
        else:
            changed = [f"{k}: {val} -> {newer.get(k)}" for k, val in v["values"].items() if newer.get(k) != val]
            body = "changed since: " + ("; ".join(changed) if changed else "nothing (same values)")
        console.print(f"    {body}", markup=False, soft_wrap=True)
    return 0


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from delivery_lake.landing import STATES, reconcile
    from delivery_lake.sources.audit import reconcile_foreign
    from delivery_lake.storage import Lake

    settings = Settings.from_env()
    lake = Lake.from_settings(settings)
    bad = 0
    by_feed = {}
    for table in TABLES.values():
        by_feed[table.name] = found = reconcile(lake, settings.inbox_dir, table)
        for path, c in found.items():
            if "error" in c:  # not read: every file still gets its line, and the audit goes on
                bad += 1
                console.print(f"UNREAD   {c['error']}", markup=False, soft_wrap=True)
                continue
            # replayed, superseded and pending rows are accounted for too, not lost
            ok = c["read"] == sum(c[s] for s in STATES)
            bad += not ok
            if not ok or args.verbose:
                states = " ".join(f"{s} {c[s]}" for s in STATES if c[s] or s in ("landed", "quarantined"))
                console.print(
                    f"{'ok ' if ok else 'MISMATCH'} {path}: read {c['read']} {states}", markup=False, soft_wrap=True
                )
    # a client's foreign export: records = filtered out + collapsed + what became of the rendered rows
    for acc in reconcile_foreign(settings.inbox_dir, by_feed):
        bad += not acc.ok
        if not acc.ok or args.verbose:
            console.print(acc.describe(), markup=False, soft_wrap=True)
    console.print("all files reconcile" if not bad else f"[red]{bad} file(s) do not reconcile[/red]")
    return 1 if bad else 0


def _print_builds(results: list[ModelResult]) -> None:
    for r in results:
        if r.skipped:
            state = f"skipped ({r.skipped})"
        else:
            state = f"{r.rows:,} rows, {len(r.dates)} partition(s)" + (", up to date" if r.up_to_date else "")
        console.print(f"{r.model:<32} {state} {r.seconds:.2f}s", markup=False)


def _cmd_build(args: argparse.Namespace) -> int:
    from delivery_lake.storage import Lake
    from delivery_lake.transform import Project, Runner
    from delivery_lake.warehouse import Warehouse, build_curated

    if not args.full_refresh and not args.date:
        console.print("pass --date YYYY-MM-DD (repeatable) or --full-refresh")
        return 2
    settings = Settings.from_env()
    if not args.model:
        results, wh = build_curated(settings, dates=args.date or None, full=args.full_refresh)
    else:
        lake = Lake.from_settings(settings)
        project = Project.load()
        results = Runner(lake, project, settings).build(
            args.model, dates=args.date or None, full_refresh=args.full_refresh
        )
        wh = Warehouse(lake, project, settings.warehouse_path).refresh(full=args.full_refresh)
    _print_builds(results)
    console.print(f"warehouse {wh.path}: {len(wh.changed)} table(s) refreshed in {wh.seconds:.2f}s", markup=False)
    return 1 if any(r.skipped and r.skipped != "no dates to build" for r in results) else 0


def _cmd_query(args: argparse.Namespace) -> int:
    import csv
    import json

    import duckdb

    from delivery_lake.warehouse import QueryRefused, WarehouseError, query

    try:
        columns, rows = query(Settings.from_env().warehouse_path, args.sql)
    except QueryRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except (duckdb.Error, WarehouseError) as exc:
        # DuckDB's own message is what an analyst needs; a traceback is noise.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    elif args.format == "json":
        print(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str, indent=1))
    else:
        t = RichTable(show_lines=False)
        for c in columns:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*("" if v is None else str(v) for v in r))
        console.print(t)
        console.print(f"{len(rows):,} row(s)", markup=False)
    return 0


def _cmd_contract(args: argparse.Namespace) -> int:
    text = render_markdown()
    if args.check:
        if not CONTRACT_DOC.exists() or CONTRACT_DOC.read_text() != text:
            console.print(f"{CONTRACT_DOC} is out of date: run `delivery-lake contract`")
            return 1
        return 0
    CONTRACT_DOC.parent.mkdir(parents=True, exist_ok=True)
    CONTRACT_DOC.write_text(text)
    console.print(f"wrote {CONTRACT_DOC}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="delivery-lake", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a synthetic export of the seven feeds")
    g.add_argument("--out", required=True)
    g.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    g.add_argument("--days", type=int, required=True)
    g.add_argument("--clients", type=int, required=True)
    g.add_argument("--orders-per-day", type=int, default=1500, help="orders per day across all clients")
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--dirty-rate", type=float, default=0.002)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_cmd_generate)

    r = sub.add_parser("run", help="materialize every partition found in the inbox, and everything downstream")
    r.add_argument("--inbox", help="inbox folder (default INBOX_DIR)")
    r.add_argument("--new-only", action="store_true", help="only files not landed before")
    r.add_argument("--summary", action="store_true", help="print the lake summary afterwards")
    r.add_argument(
        "--land-only",
        action="store_true",
        help="stop after landing and its checks (no curated, ML or warehouse runs; the next run still builds them)",
    )
    r.set_defaults(func=_cmd_run)

    b = sub.add_parser("build", help="build the curated models for some dates (or all) and refresh the warehouse")
    b.add_argument("--date", action="append", help="dispatch/submission date to rebuild, YYYY-MM-DD (repeatable)")
    b.add_argument(
        "--full-refresh", action="store_true", help="rebuild every date found in raw and the whole warehouse"
    )
    b.add_argument("--model", action="append", help="only this table model (repeatable; default all)")
    b.set_defaults(func=_cmd_build)

    q = sub.add_parser("query", help="run one SQL query, read-only, against the warehouse (WAREHOUSE_PATH)")
    q.add_argument("sql")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q.set_defaults(func=_cmd_query)

    s = sub.add_parser(
        "summary",
        help="rows landed, quarantined, replayed, superseded and pending per table; blocked and pending partitions",
    )
    s.set_defaults(func=_cmd_summary)

    h = sub.add_parser(
        "history", help="every version of one row: the landed one, pending ones, those later files corrected"
    )
    h.add_argument("table", choices=[t.name for t in TABLES.values() if t.is_fact])
    h.add_argument("key", help="the row's key, e.g. an order_id")
    h.add_argument("--format", choices=("text", "json"), default="text")
    h.set_defaults(func=_cmd_history)

    rc = sub.add_parser("reconcile", help="check read = landed + quarantined for every source file")
    rc.add_argument("-v", "--verbose", action="store_true")
    rc.set_defaults(func=_cmd_reconcile)

    d = sub.add_parser("docs", help="rebuild the GX Data Docs site from the stored validation results (offline-safe)")
    d.set_defaults(func=_cmd_docs)

    c = sub.add_parser("contract", help="write docs/contract.md from the contract (or --check it)")
    c.add_argument("--check", action="store_true")
    c.set_defaults(func=_cmd_contract)

    add_commands(sub)  # metrics, metric, ask, ask-eval, serve
    add_source_commands(sub)  # source check, source init, source render
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # MLflow logs at INFO by itself ("Creating initial MLflow database tables..."): no news for
    # someone running a command; its warnings and errors still show. MLflow sets its logger's
    # level from this variable when it is imported (after this point), so both are needed.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from delivery_lake.inbox import InputError
    from delivery_lake.landing import LandingError

    # The model runner is only imported by the commands that build (it pulls in sqlglot and
    # Polars), so `query` stays quick; its errors are recognised once it is loaded.
    try:
        return int(args.func(args) or 0)
    except (InputError, LandingError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    except Exception as exc:
        models = sys.modules.get("delivery_lake.transform")
        if models is not None and isinstance(exc, models.ModelError | models.GateBlocked):
            console.print(f"error: {exc}", markup=False)
            return 2
        from delivery_lake.config import Settings
        from delivery_lake.storage import exception_chain, explain_storage_failure

        explained = explain_storage_failure(exception_chain(exc), Settings.from_env())
        if explained is None:
            raise
        print(f"error: {explained}", file=sys.stderr)  # one line, never wrapped
        return 2


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
