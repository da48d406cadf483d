"""`delivery-lake source ...`: the commands behind sources/parsers.py. Exit codes: 0 done, 1 the
mapping cannot be used (every problem printed, naming file, feed and column)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from delivery_lake.config import Settings
from delivery_lake.sources.mapping import SOURCES_DIR, MappingError, load
from delivery_lake.sources.profile import checklist, draft
from delivery_lake.sources.render import render


def cmd_check(args: argparse.Namespace) -> int:
    sample = Path(args.sample)
    if not sample.is_dir():
        print(f"{sample}: not a folder of foreign files", file=sys.stderr)
        return 1
    result = checklist(args.mapping, sample)
    print(result.render())
    return 0 if result.usable else 1


def cmd_init(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else SOURCES_DIR / f"{args.name}.yaml"
    if out.exists() and not args.force:
        print(f"{out} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    try:
        text = draft(args.name, Path(args.dir))
    except MappingError as exc:
        print(exc, file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}: finish its TODOs, then run `delivery-lake source check {out} --sample {args.dir}`")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        mapping = load(args.name)
        results = render(mapping, settings.inbox_dir, settings.duckdb_memory_limit)
    except MappingError as exc:
        print(exc, file=sys.stderr)
        return 1
    for r in results:
        state = "written" if r.changed else "unchanged"
        src = r.foreign_file or mapping.label
        detail = f"{r.rows_rendered:,} of {r.rows_read:,} rows"
        if r.rows_filtered_out:
            detail += f", {r.rows_filtered_out:,} filtered out"
        if r.rows_collapsed:
            detail += f", {r.rows_collapsed:,} repeated keys collapsed"
        placeholders = f"; placeholders: {', '.join(sorted(r.placeholders))}" if r.placeholders else ""
        print(f"{r.feed}: {src} -> {r.output} ({detail}; {state}){placeholders}")
    return 0
