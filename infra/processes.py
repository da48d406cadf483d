"""Process control for the services started from here: the SeaweedFS manager (`infra.seaweed`)
and the production stack (`infra.stack`) share it.

Every process is started in a new session (`spawn`), so its process group is exactly its tree
and stopping it (`stop_group`) signals nothing else. Every listener binds to loopback (HOST).
A pid read back from a pid file is only signalled after its command line (`cmdline`) has been
checked by the caller.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


class ProcessError(RuntimeError):
    """A process did not start or did not answer in time."""


# ---- executables and ports -------------------------------------------------------------------
def find_executable(name: str) -> str | None:
    """`name` next to the running interpreter first (the venv's scripts), then on PATH."""
    candidate = Path(sys.executable).parent / (f"{name}.exe" if os.name == "nt" else name)
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if a listener could be opened on host:port (and on 0.0.0.0:port, to be safe).

    SO_REUSEADDR like Go's listeners, so connections in TIME_WAIT left by a server that
    just stopped do not count as "in use"; a live listener still does.
    """
    for addr in dict.fromkeys((host, "0.0.0.0")):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port))
                s.listen(1)
            except OSError:
                return False
    return True


def listening(port: int, host: str = HOST) -> bool:
    """True if something accepts TCP connections on host:port (a server that is up)."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(taken: set[int] | frozenset[int] = frozenset(), host: str = HOST) -> int:
    """A port the system hands out as free on `host`, not one of `taken`."""
    for _ in range(2000):
        with socket.socket() as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if port not in taken:
            return port
    raise ProcessError("could not find a free port")


# ---- pids ---------------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def cmdline(pid: int) -> list[str] | None:
    """The arguments `pid` runs with (None if it is gone): /proc, else `ps` (macOS)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        out = subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.split() or None


def read_pidfile(path: Path) -> int | None:
    """The pid recorded in `path`; None if the file is missing or holds no pid."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_pidfile(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n")


# ---- starting -------------------------------------------------------------------------------------
@dataclass
class Service:
    """One background process in its own session (so its group is exactly its tree)."""

    name: str
    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        """Stop the process and its group; the process is reaped here (its returncode kept)."""
        stop_group(self.pid, timeout, reap=self.proc.poll)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(1)


def spawn(name: str, cmd: Sequence[str], env: Mapping[str, str], log_dir: Path, cwd: Path | None = None) -> Service:
    """Start `cmd` in a new session with stdout and stderr appended to LOG_DIR/NAME.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Service(name, proc, log_path)


def http_status(url: str, timeout: float = 3) -> int | None:
    """The status `url` answers a GET with (plain HTTP, no proxy, redirects not followed);
    None if nothing answers."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or HOST, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_http(
    url: str,
    service: Service | None = None,
    timeout: float = 90,
    ok: Callable[[int], bool] = lambda status: status < 500,
    *,
    check: Callable[[], None] | None = None,
    interval: float = 0.3,
) -> None:
    """Until `url` answers with a status `ok` accepts (asked at least once).

    Fails early if `service` exits, or when `check` (called before each try) raises.
    ProcessError when it does not answer in `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        if check is not None:
            check()
        if service is not None and not service.alive():
            raise ProcessError(
                f"{service.name} exited (code {service.proc.returncode}); log {service.log_path}:\n{service.log_tail()}"
            )
        status = http_status(url)
        if status is not None and ok(status):
            return
        last = status if status is not None else "no answer"
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    tail = f"; log {service.log_path}:\n{service.log_tail()}" if service else ""
    raise ProcessError(f"{url} did not answer in {timeout:.0f}s (last: {last}){tail}")


# ---- stopping -------------------------------------------------------------------------------------
def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_group(pid: int, timeout: float = 20, reap: Callable[[], object] | None = None) -> bool:
    """SIGTERM the process group led by `pid`, wait for the whole group, SIGKILL what is left.

    Only a group that `pid` leads is signalled (every process here is started in a new
    session); otherwise only `pid` itself. `reap` collects `pid` if it is our child (default
    os.waitpid; a Popen's `poll` keeps its returncode). True if something was running.
    """
    collect = reap or (lambda: _reap(pid))
    try:
        leads_group = os.getpgid(pid) == pid
    except ProcessLookupError:
        leads_group = _group_alive(pid)  # leader gone, children may remain in its group
        if not leads_group:
            return False
    send = (lambda s: os.killpg(pid, s)) if leads_group else (lambda s: os.kill(pid, s))
    alive = (lambda: _group_alive(pid)) if leads_group else (lambda: pid_alive(pid))
    with contextlib.suppress(ProcessLookupError):
        send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        collect()
        time.sleep(0.1)
    if alive():
        with contextlib.suppress(ProcessLookupError):
            send(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive() and time.monotonic() < deadline:
            collect()
            time.sleep(0.05)
    collect()
    return True
