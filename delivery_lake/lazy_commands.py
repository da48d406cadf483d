"""Commands whose module is imported only when they run.

The CLI builds every subparser on each invocation; a command's dependencies (DuckDB, sqlglot,
dateparser, the profiler) would cost every other command ~0.2 s of imports if loaded then.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable


def later(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command function that imports `module` and calls its `name` when the command runs."""

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), name)(args))

    return run
