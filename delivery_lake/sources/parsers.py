"""The CLI's view of source onboarding: `source check`, `source init`, `source render`.

Only the argument parsers live here; the commands (`commands.py`) and what they use (DuckDB,
sqlglot, the profiler) are imported when a command runs, so building the CLI's parser stays cheap.
"""

from __future__ import annotations

from typing import Any

from delivery_lake.lazy_commands import later


def add_commands(sub: Any) -> None:
    """Register `source` and its subcommands on the CLI's subparsers."""
    src = sub.add_parser("source", help="onboard a foreign export by a mapping file (sources/<name>.yaml)")
    cmds = src.add_subparsers(dest="source_command", required=True)

    c = cmds.add_parser("check", help="profile a sample of the foreign files and list what the mapping still lacks")
    c.add_argument("mapping", help="mapping file (sources/<name>.yaml) or source name")
    c.add_argument("--sample", required=True, help="folder holding a sample of the foreign files")
    c.set_defaults(func=later("delivery_lake.sources.commands", "cmd_check"))

    i = cmds.add_parser("init", help="write a first draft mapping from the foreign files in DIR")
    i.add_argument("name", help="source name (letters, digits, '_' or '-')")
    i.add_argument("dir", help="folder holding the foreign files")
    i.add_argument("--out", help="where to write (default: sources/<name>.yaml)")
    i.add_argument("--force", action="store_true", help="overwrite an existing mapping")
    i.set_defaults(func=later("delivery_lake.sources.commands", "cmd_init"))

    r = cmds.add_parser("render", help="render INBOX_DIR/sources/<name>/ into contract-shaped inbox files")
    r.add_argument("name", help="source name or mapping file")
    r.set_defaults(func=later("delivery_lake.sources.commands", "cmd_render"))
