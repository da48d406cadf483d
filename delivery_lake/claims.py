"""Claims: one writer at a time per partition, across processes and workers.

Landing publishes a partition as several objects (quarantine, pending, history, data, then the
manifest that vouches for them), read against the manifest it replaces. Two workers landing
the same partition at once (two runs over overlapping partitions, or a step the broker
delivered twice) could otherwise interleave those writes and leave a manifest that vouches for
the other writer's data. So a writer claims the partition first and publishes it whole.

A claim is an exclusive `flock` on a file per partition under the claims folder (the lake's
`_meta/claims/` for a local lake; CLAIMS_DIR or DATA_DIR/claims otherwise):

- taken with O_CREAT + LOCK_EX, so whoever gets the lock holds the partition, whatever the
  file's history; the holder records its host, pid and start time on it for anyone waiting, as
  an extended attribute (`user.dl`, a few dozen bytes: kept in the inode, so the file never gets
  a data block; writing the record into the file made a claim 6x dearer here, most of it freeing
  that block on delete: 2 s of a 6,500-partition backfill), or in the file where the file system
  has no user attributes;
- released by deleting the file and then unlocking: a waiter that locked a file since deleted
  (the inode at the path is not the one it holds) lets go and tries again, so the folder
  keeps no file per partition ever landed;
- stale claims cannot outlive their holder: the kernel drops the lock of a process that dies,
  SIGKILL included, so the next claimant gets it at once and the dead holder's file is reused.
  No pid or age rule to get wrong (pids are reused; clocks differ between machines). Workers on
  several machines need a claims folder on a shared filesystem with working locks (NFSv4
  drops a dead client's locks when its lease expires).

A waiter polls, and gives up after `wait_seconds` with ClaimTimeout naming the holder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# A partition is published in well under a second; a claim held for minutes is a stuck writer.
DEFAULT_WAIT_SECONDS = 600.0
POLL_SECONDS = 0.05


# The holder's record as an extended attribute: "HOST PID SINCE". Short name and value, so that
# ext4 keeps it in the inode's spare bytes (a long one takes an attribute block, which is what
# the attribute is there to avoid).
HOLDER_ATTRIBUTE = "user.dl"


def _record(fd: int) -> None:
    """Record this process as the holder of the claim file open on `fd`."""
    host, pid = socket.gethostname().replace(" ", "_"), os.getpid()
    since = datetime.now(UTC).isoformat(timespec="milliseconds")
    try:
        os.setxattr(fd, HOLDER_ATTRIBUTE, f"{host} {pid} {since}".encode())
        return
    except (OSError, AttributeError):  # no user attributes here (some NFS, older tmpfs; not Linux)
        pass
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"host": host, "pid": pid, "since": since}).encode(), 0)


class ClaimTimeout(TimeoutError):
    """Another process held the claim for longer than the wait allowed."""


def _safe(part: str) -> str:
    return part.replace("/", "_").replace("\0", "_") or "_"


class Claims:
    def __init__(self, root: str | Path, wait_seconds: float = DEFAULT_WAIT_SECONDS):
        self.root = Path(root)
        self.wait_seconds = wait_seconds

    def path(self, *key: str | None) -> Path:
        """The claim file of a key, e.g. ("landing", "orders", "2026-01-05", "C001")."""
        parts = [_safe(k if k is not None else "_") for k in key]
        return self.root.joinpath(*parts[:-1], parts[-1] + ".claim")

    def holder(self, *key: str | None) -> dict[str, Any] | None:
        """Who holds (or last held) the claim, as it recorded itself on the file; None when free."""
        path = self.path(*key)
        try:
            host, pid, since = os.getxattr(path, HOLDER_ATTRIBUTE).decode().split(" ")
            return {"host": host, "pid": int(pid), "since": since}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError):  # no attribute (in the file, by an older version, not Linux)
            pass
        try:
            return json.loads(path.read_text() or "null")
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @contextmanager
    def hold(self, *key: str | None) -> Iterator[None]:
        """Hold the claim on `key` for the `with` block (waiting for another holder first)."""
        path = self.path(*key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._acquire(path, key)
        try:
            _record(fd)
            yield
        finally:
            # Delete while still holding the lock: a waiter that then gets the lock on the
            # deleted inode sees it is gone and starts over on a fresh file.
            with suppress(FileNotFoundError):
                os.unlink(path)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _acquire(self, path: Path, key: tuple[str | None, ...]) -> int:
        deadline = time.monotonic() + self.wait_seconds
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    raise ClaimTimeout(
                        f"claim {'/'.join(str(k) for k in key)} still held after {self.wait_seconds:.0f} s "
                        f"by {self.holder(*key) or 'an unknown holder'} ({path})"
                    ) from None
                time.sleep(POLL_SECONDS)
                continue
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino == os.fstat(fd).st_ino:
                return fd
            # The holder we waited for deleted this file as it let go: take the new one.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
