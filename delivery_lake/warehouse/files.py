"""The warehouse file's lifecycle: the live file, its spare, the building file, the atomic swap
and the refresh lock. Nothing here opens DuckDB; what the files hold is `tables.py`'s business.

A refresh never writes the live file. It prepares `.<name>.<uuid>.building` beside it and,
once that file is checkpointed and closed, `os.replace`s it over the live path (`publish`).
So a reader that has the old file open keeps reading the old inode, a reader that opens the
path gets the old file or the new one, and the pipeline never needs DuckDB's write lock on
the live file. Refreshes among themselves are serialised by a lock file (`locked`).

The building file starts from the spare (`take_spare`: the file the previous refresh
replaced, one refresh behind), else from a copy of the live file (`copy_live`), else empty.
Nothing is started from (or kept as the spare) unless it is still the file a refresh
published: each publish records both files' fingerprints (`file_fingerprint`,
`published_path`); a spare changed since then is deleted, with a warning.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delivery_lake.warehouse.errors import WarehouseError

# The live file is read by the analysts' group (infra/README.md); the spare and the building
# files are the pipeline's alone: nobody else writes the file the next refresh trusts, and no
# analyst session holds the spare open (which would make every refresh copy the live file).
LIVE_MODE = 0o640
PRIVATE_MODE = 0o600
# DuckDB writes its file headers here on every checkpoint (a new iteration number each time).
HEADER_BYTES = 12288

log = logging.getLogger(__name__)


def file_fingerprint(path: Path) -> dict[str, Any]:
    """What a published file looked like when published: inode, size, modification and change
    times, and a digest of DuckDB's headers.

    Any write to the file after that moves its mtime and ctime (ctime cannot be set back
    without root), and a DuckDB checkpoint rewrites a header; a file put in its place has
    another inode. A digest of the whole file would also catch a writer able to forge times
    (root), but reading the whole file twice per refresh (at publish, and before starting from
    the spare) costs more than the copy of the live file that the spare saves.
    """
    st = path.stat()
    with open(path, "rb") as fh:
        head = hashlib.sha256(fh.read(HEADER_BYTES)).hexdigest()
    return {
        "inode": st.st_ino,
        "bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "header_sha256": head,
    }


@dataclass(frozen=True)
class BuildingFile:
    """The file one refresh prepares beside the live one (`path`), and `keep`: the name under
    which the next spare waits until the swap."""

    path: Path
    keep: Path

    @property
    def wal(self) -> Path:
        return self.path.with_name(self.path.name + ".wal")

    def make_private(self) -> None:
        os.chmod(self.path, PRIVATE_MODE)

    def discard(self) -> None:
        """Remove the building file and its leftovers (nothing of it is published)."""
        for leftover in (self.path, self.wal, self.keep):
            leftover.unlink(missing_ok=True)


class WarehouseFiles:
    """The live file at `path`, its spare, the record of what was published, and the lock."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def spare_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.spare")

    @property
    def published_path(self) -> Path:
        """The fingerprints (`file_fingerprint`) of the live file and the spare as the last
        refresh left them: what the next refreshes may start from."""
        return self.path.with_name(f".{self.path.name}.published.json")

    def published(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.published_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the refresh lock. Under it no other refresh runs: building files found here were
        left by a refresh that died (killed process, power loss) and are never published, so
        they are removed first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                for pattern in (
                    f".{self.path.name}.*.building",
                    f".{self.path.name}.*.building.wal",
                    f".{self.path.name}.*.keep",
                ):
                    for leftover in self.path.parent.glob(pattern):
                        leftover.unlink(missing_ok=True)
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def new_building(self) -> BuildingFile:
        token = uuid.uuid4().hex[:12]
        return BuildingFile(
            self.path.with_name(f".{self.path.name}.{token}.building"),
            self.path.with_name(f".{self.path.name}.{token}.keep"),
        )

    def take_spare(self, building: BuildingFile, warnings: list[str]) -> bool | None:
        """Move the spare to `building` unless this process still has it open; None when it is
        not what the last refresh published (it is deleted: nothing may start from it, and a
        warning is appended to `warnings`).

        Another process's session holds DuckDB's lock on it, which makes the write fail
        (and the refresh fall back to a copy). Within one process those locks do not
        conflict, so open files are looked up by inode: a connection made here before the
        previous refresh (a test, an in-process Dagster run) may still be reading it.
        """
        try:
            st = self.spare_path.stat()
        except FileNotFoundError:
            return False
        fds = Path("/proc/self/fd")
        if not fds.is_dir():  # cannot tell who has it open: do not write to it
            return False
        for fd in os.listdir(fds):
            try:
                other = os.stat(fds / fd)
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return False
        # The spare is one refresh behind: it must still be the file the previous-but-one
        # refresh published (the previous one checked it was then, before making it the spare).
        # A refresh would otherwise trust every partition it holds without reading them.
        why = self._unchanged("spare", self.spare_path)
        if why is not None:
            self._reject(warnings, "spare", self.spare_path, why)
            return None
        os.replace(self.spare_path, building.path)
        return True

    def copy_live(self, building: BuildingFile, warnings: list[str]) -> bool:
        """Copy the live file to `building`, unless it is not what the last refresh published
        (then a warning is appended to `warnings`)."""
        why = self._unchanged("live", self.path)
        if why is not None:
            self._reject(warnings, "live file", self.path, why)
            return False
        # The live file is only ever replaced whole and never opened for writing by the
        # pipeline, so this copy is a consistent snapshot.
        shutil.copyfile(self.path, building.path)
        return True

    def publish(self, building: BuildingFile, keep_live: bool, warnings: list[str]) -> None:
        """Swap `building` (checkpointed and closed) in as the live file and record both files'
        fingerprints. The live file it replaces becomes the spare when `keep_live` and it is still
        what was published (else a warning); otherwise a copy of the new file does."""
        if building.wal.exists():
            raise WarehouseError(f"{building.wal} left behind after checkpoint; not publishing")
        with open(building.path, "rb+") as fh:
            os.fsync(fh.fileno())
        # A live file changed since it was published is not kept (see `take_spare`).
        if keep_live and (why := self._unchanged("live", self.path)) is not None:
            keep_live = False
            warnings.append(f"live file {self.path} does not match what was published ({why}): not kept as the spare")
            log.warning("%s", warnings[-1])
        if keep_live:
            os.link(self.path, building.keep)
        else:
            shutil.copyfile(building.path, building.keep)
            with open(building.keep, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(building.path, LIVE_MODE)
        os.replace(building.path, self.path)
        # Only now: until the replace above, a linked keep was the live file.
        os.chmod(building.keep, PRIVATE_MODE)
        os.replace(building.keep, self.spare_path)
        # Taken after the renames and mode changes, which move a file's ctime. Written last: a
        # crash before it leaves fingerprints that no longer match, i.e. a rebuild, never trust.
        record = {"live": file_fingerprint(self.path), "spare": file_fingerprint(self.spare_path)}
        tmp = self.published_path.with_name(self.published_path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(tmp, self.published_path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _unchanged(self, role: str, path: Path) -> str | None:
        """None if `path` (the "live" file or the "spare") is as the last refresh published it,
        else why not."""
        want = self.published().get(role)
        if not want:
            return f"no fingerprint recorded in {self.published_path.name}"
        if path.with_name(path.name + ".wal").exists():
            return "a write-ahead log beside it holds uncheckpointed changes"
        have = file_fingerprint(path)
        differ = [k for k in sorted(want) if have.get(k) != want[k]]
        return f"{', '.join(differ)} differ" if differ else None

    def _reject(self, warnings: list[str], role: str, path: Path, why: str) -> None:
        if role == "spare":
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".wal").unlink(missing_ok=True)
        message = f"{role} {path} does not match what was published ({why}): rebuilding from scratch"
        warnings.append(message)
        log.warning("%s", message)
