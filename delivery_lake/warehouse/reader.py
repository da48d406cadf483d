"""Reading the warehouse: `open_reader` is the one way to open the file for reading (read-only,
and without access to any other file); `query` and `describe` go through it."""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from delivery_lake.warehouse.errors import WarehouseError


class QueryRefused(WarehouseError):
    """A reader's statement tried to write, or to reach a file other than the warehouse."""


REFUSED = "this connection is read-only and cannot read or write files outside the warehouse"
# How DuckDB words what `open_reader` forbids (besides its PermissionException): writes to the
# read-only file, settings after the lock, undoing the external-access switch.
_REFUSAL_MARKS = (
    "read-only mode",
    "configuration has been locked",
    "external access",
    "disabled by configuration",
    "disabled through configuration",
)
_scratch_root: Path | None = None


def _reader_scratch() -> Path:
    """Where reader connections may spill (a private folder per process, removed at exit).

    Without it DuckDB spills to `<warehouse>.tmp/` and allows queries to write files there,
    beside the warehouse, in a folder analysts cannot create anyway."""
    global _scratch_root
    if _scratch_root is None:
        _scratch_root = Path(tempfile.mkdtemp(prefix="delivery-lake-reader-"))
        atexit.register(shutil.rmtree, _scratch_root, True)
    return _scratch_root


def open_reader(path: Path | str) -> duckdb.DuckDBPyConnection:
    """The one way to open the warehouse for reading (`delivery-lake query`, summaries, a
    question service): read-only, with no access to any other file.

    `read_only` alone is a file mode, not a sandbox: such a connection still runs `COPY ... TO`
    any path, `ATTACH` any DuckDB file read-write, `read_csv('/etc/passwd')`, `INSTALL`. With
    `enable_external_access` off (in the connect config: in force before any statement, for
    the whole instance) DuckDB refuses every path but the warehouse file (and its WAL names)
    and the spill folder, which is this process's own (see `_reader_scratch`);
    `lock_configuration` then refuses any `SET`, so a query cannot turn it back on, point the
    spill folder or a profiling/log output elsewhere, or load an extension that is not already
    built in. The lake is out of reach too: the marts are in the file, and analysts need no
    lake credentials.
    """
    path = Path(path)
    if not path.exists():
        raise WarehouseError(f"no warehouse at {path}: run `delivery-lake run` (or `delivery-lake build`) first")
    # One spill folder per file: DuckDB refuses a second connection to a file in the same
    # process with another configuration (readers in threads share one database instance).
    spill = _reader_scratch() / hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    config: dict[str, str | bool | int | float | list[str]] = {
        "enable_external_access": False,
        "temp_directory": str(spill),
    }
    con = duckdb.connect(str(path), read_only=True, config=config)
    try:
        # Set before the lock, not in `config` (TimeZone needs ICU, not loaded yet at connect),
        # and globally: a reader opened while another one holds the instance finds it locked.
        try:
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            con.execute("SET lock_configuration = true")
        except duckdb.InvalidInputException:
            pass  # already locked by a reader in another thread; checked below
        settings = (
            "current_setting('lock_configuration'), current_setting('enable_external_access'), "
            "current_setting('TimeZone')"
        )
        if con.execute(f"SELECT {settings}").fetchone() != (True, False, "UTC"):
            raise WarehouseError(f"could not open {path} read-only without external access")
    except BaseException:
        con.close()
        raise
    return con


connect_read_only = open_reader  # the name summary.py and the scorer import


def _refused(exc: duckdb.Error) -> bool:
    return isinstance(exc, duckdb.PermissionException) or any(mark in str(exc) for mark in _REFUSAL_MARKS)


def query(path: Path | str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one query through `open_reader`. A statement that tries to write or to reach another
    file raises QueryRefused (DuckDB's message in it); other DuckDB errors propagate as
    duckdb.Error."""
    con = open_reader(path)
    try:
        cur = con.execute(sql)
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()
    except duckdb.Error as exc:
        if _refused(exc):
            # One line: DuckDB's first, without the statement it quotes after it.
            raise QueryRefused(f"{REFUSED} ({str(exc).splitlines()[0]})") from exc
        raise
    finally:
        con.close()


def describe(path: Path | str) -> dict[str, Any]:
    """Tables with their comment and row count (what `delivery-lake query` users look up first)."""
    con = open_reader(path)
    try:
        rows = con.execute(
            "SELECT table_name, comment, estimated_size FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
        ).fetchall()
        return {
            "path": str(path),
            "refreshed_at": datetime.fromtimestamp(Path(path).stat().st_mtime, UTC).isoformat(timespec="seconds"),
            "tables": {r[0]: {"comment": r[1], "rows": r[2]} for r in rows},
        }
    finally:
        con.close()
