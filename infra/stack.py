"""Start and stop the production stack on loopback: `make up` / `make down` / `make status`.

    python -m infra.stack up        # databases, SeaweedFS, MLflow server, Dagster webserver + daemon
    python -m infra.stack down      # stop exactly the processes `up` recorded in DATA_DIR/run/*.pid
    python -m infra.stack status
    python -m infra.stack init-env  # write .env with fresh random S3 keys (never committed)

What runs (every listener bound to 127.0.0.1):

    SeaweedFS  `weed mini`, S3 on LAKE_PORT; identities rendered from
               infra/seaweed/identities.template.json (pipeline: read-write on the lake
               bucket, analyst: read-only) into a 0600 file in its data dir
    MLflow     `mlflow server`, backend store PostgreSQL (MLFLOW_PG_DB), artifacts proxied
               to MLFLOW_ARTIFACTS_DESTINATION in SeaweedFS with the pipeline keys
    Dagster    `dagster-webserver` and `dagster-daemon run` on the workspace.yaml, with
               DAGSTER_HOME = DATA_DIR/stack/dagster_home holding a copy of infra/dagster.yaml
               (PostgreSQL storage, queued run coordinator)

Secrets come from the environment, or from `.env` for variables the environment leaves
unset. They reach the services through their environment (never a command line, which
`ps` shows to every user) and are never printed; `up` refuses to start while one is
missing. Each service runs in its own process group; `down` signals those groups only,
after checking that each recorded pid still runs the command it recorded. Starting,
waiting and stopping are infra.processes (shared with the SeaweedFS manager, infra.seaweed).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import string
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.processes import (
    HOST,
    ProcessError,
    Service,
    cmdline,
    find_executable,
    pid_alive,
    port_is_free,
    read_pidfile,
    spawn,
    stop_group,
    wait_http,
    write_pidfile,
)
from infra.seaweed import SeaweedError, SeaweedServer

ROOT = Path(__file__).resolve().parent.parent
INFRA = Path(__file__).resolve().parent
DAGSTER_YAML = INFRA / "dagster.yaml"
IDENTITIES_TEMPLATE = INFRA / "seaweed" / "identities.template.json"

# Secrets `up` needs; `init-env` generates them.
SECRET_VARS = (
    "SEAWEED_ADMIN_ACCESS_KEY",
    "SEAWEED_ADMIN_SECRET_KEY",
    "LAKE_PIPELINE_ACCESS_KEY",
    "LAKE_PIPELINE_SECRET_KEY",
    "LAKE_ANALYST_ACCESS_KEY",
    "LAKE_ANALYST_SECRET_KEY",
)
# Start order; `down` stops in reverse.
SERVICES = ("seaweed", "mlflow", "dagster-webserver", "dagster-daemon", "ask-service")
# What /proc/<pid>/cmdline must contain for `down` to signal a recorded pid.
CMD_MARKERS = {
    "seaweed": "weed",
    "mlflow": "mlflow",
    "dagster-webserver": "dagster-webserver",
    "dagster-daemon": "dagster-daemon",
    "ask-service": "delivery-lake serve",
}


class StackError(RuntimeError):
    pass


# ---- configuration ----------------------------------------------------------------------------
def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments, blank lines and `export ` prefixes allowed)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def merged_env(env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> dict[str, str]:
    """The environment, completed by `.env` for variables it leaves unset or empty."""
    base = dict(os.environ if env is None else env)
    for key, value in read_dotenv(dotenv or ROOT / ".env").items():
        if not base.get(key):
            base[key] = value
    return base


@dataclass(frozen=True)
class StackConfig:
    """Everything `up` needs, from one environment mapping. Secrets are kept out of repr."""

    data_dir: Path
    inbox_dir: Path
    pg_host: str = HOST
    pg_port: int = 5432
    pg_user: str = "postgres"
    pg_password: str = field(default="", repr=False)
    dagster_db: str = "dagster"
    mlflow_db: str = "mlflow"
    lake_url: str = "s3://lake/delivery"
    lake_port: int = 8333
    mlflow_port: int = 5000
    dagster_port: int = 3000
    ask_port: int = 8765
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    max_concurrent_runs: int = 2
    mlflow_artifacts_destination: str = ""
    warehouse_path: str | None = None
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackConfig:
        def get(name: str, default: str) -> str:
            return env.get(name) or default

        data_dir = Path(get("DATA_DIR", str(ROOT / "data"))).resolve()
        lake_url = env.get("LAKE_URL") or ""
        if not lake_url.startswith("s3://"):
            lake_url = "s3://lake/delivery"  # a folder LAKE_URL is the demo's; the stack's lake is S3
        bucket = lake_url.removeprefix("s3://").split("/", 1)[0]
        return cls(
            data_dir=data_dir,
            inbox_dir=Path(get("INBOX_DIR", str(data_dir / "inbox"))).resolve(),
            pg_host=get("DAGSTER_PG_HOST", HOST),
            pg_port=int(get("DAGSTER_PG_PORT", "5432")),
            pg_user=get("DAGSTER_PG_USER", "postgres"),
            pg_password=env.get("DAGSTER_PG_PASSWORD", ""),
            dagster_db=get("DAGSTER_PG_DB", "dagster"),
            mlflow_db=get("MLFLOW_PG_DB", "mlflow"),
            lake_url=lake_url.rstrip("/"),
            lake_port=int(get("LAKE_PORT", "8333")),
            mlflow_port=int(get("MLFLOW_PORT", "5000")),
            dagster_port=int(get("DAGSTER_PORT", "3000")),
            ask_port=int(get("ASK_PORT", "8765")),
            redis_url=get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            max_concurrent_runs=int(get("DAGSTER_MAX_CONCURRENT_RUNS", "2")),
            mlflow_artifacts_destination=get("MLFLOW_ARTIFACTS_DESTINATION", f"s3://{bucket}/mlflow-artifacts"),
            warehouse_path=env.get("WAREHOUSE_PATH") or None,
            secrets={k: env.get(k, "") for k in SECRET_VARS},
        )

    # -- derived
    @property
    def bucket(self) -> str:
        return self.lake_url.removeprefix("s3://").split("/", 1)[0]

    @property
    def artifacts_bucket(self) -> str:
        return self.mlflow_artifacts_destination.removeprefix("s3://").split("/", 1)[0]

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def stack_dir(self) -> Path:
        """Service state of the stack, apart from the demo's (which uses DATA_DIR directly)."""
        return self.data_dir / "stack"

    @property
    def dagster_home(self) -> Path:
        return self.stack_dir / "dagster_home"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.lake_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def dagster_url(self) -> str:
        return f"http://{HOST}:{self.dagster_port}"

    @property
    def ask_url(self) -> str:
        return f"http://{HOST}:{self.ask_port}"

    def missing_secrets(self) -> list[str]:
        return [k for k in SECRET_VARS if not self.secrets.get(k)]


def render_identities(template: Path, env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The identities template with ${VAR} filled from `env`, in the shape SeaweedServer takes.

    A variable missing from `env` is an error (naming the variable, never a value).
    """
    try:
        text = string.Template(template.read_text()).substitute(env)
    except KeyError as exc:
        raise StackError(f"{template.name} needs the environment variable {exc.args[0]}") from exc
    spec = json.loads(text)
    return {name: value for name, value in spec.items() if not name.startswith("_")}


def pg_connect_kwargs(cfg: StackConfig, dbname: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"host": cfg.pg_host, "port": cfg.pg_port, "user": cfg.pg_user, "dbname": dbname}
    if cfg.pg_password:
        kwargs["password"] = cfg.pg_password
    return kwargs


def ensure_databases(cfg: StackConfig, names: Sequence[str]) -> list[str]:
    """CREATE DATABASE for each name that does not exist yet; returns the ones created."""
    import psycopg2
    from psycopg2 import sql

    created = []
    try:
        conn = psycopg2.connect(connect_timeout=5, **pg_connect_kwargs(cfg, "postgres"))
    except psycopg2.OperationalError as exc:
        raise StackError(
            f"cannot reach PostgreSQL at {cfg.pg_host}:{cfg.pg_port} as {cfg.pg_user}: {str(exc).strip()}"
        ) from exc
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    created.append(name)
    finally:
        conn.close()
    return created


def drop_database(cfg: StackConfig, name: str) -> None:
    """DROP DATABASE name (closing other sessions first); used by the tests' throwaway databases."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(connect_timeout=5, **pg_connect_kwargs(cfg, "postgres"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def install_dagster_home(home: Path) -> Path:
    """DAGSTER_HOME with the infra dagster.yaml (copied at every start so edits take effect)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    return home


# ---- service commands and environments -------------------------------------------------------
def _bin(name: str) -> str:
    """A console script of the running interpreter's environment (the venv), else PATH."""
    found = find_executable(name)
    if not found:
        raise StackError(f"`{name}` not found next to {sys.executable} or on PATH; run `make install`")
    return found


def _clean_env(env: Mapping[str, str]) -> dict[str, str]:
    out = dict(env)
    for k in SECRET_VARS:  # each service gets only the keys it needs, under the names it reads
        out.pop(k, None)
    return out


def mlflow_backend_uri(cfg: StackConfig, db: str | None = None) -> str:
    """No password in the URI: the server gets it as PGPASSWORD, which libpq reads."""
    return f"postgresql+psycopg2://{cfg.pg_user}@{cfg.pg_host}:{cfg.pg_port}/{db or cfg.mlflow_db}"


def mlflow_command(port: int, workers: int = 1) -> list[str]:
    return [
        _bin("mlflow"),
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--serve-artifacts",
    ]


def mlflow_env(
    cfg: StackConfig, base: Mapping[str, str], backend_uri: str, artifacts: str, s3_endpoint: str
) -> dict[str, str]:
    """The MLflow server reads its stores from the environment (click envvars) and writes
    artifacts to SeaweedFS with the pipeline identity (boto3 reads AWS_*)."""
    env = _clean_env(base)
    env.update(
        MLFLOW_BACKEND_STORE_URI=backend_uri,
        MLFLOW_ARTIFACTS_DESTINATION=artifacts,
        MLFLOW_S3_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID=cfg.secrets["LAKE_PIPELINE_ACCESS_KEY"],
        AWS_SECRET_ACCESS_KEY=cfg.secrets["LAKE_PIPELINE_SECRET_KEY"],
        AWS_DEFAULT_REGION=base.get("AWS_REGION") or "us-east-1",
        PGPASSWORD=cfg.pg_password,
    )
    # MLflow 3's job runner (GenAI evaluation jobs: a supervisor and six huey consumers) is
    # not used here; off unless asked for, it saves ~1 GB and a slow start.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def dagster_env(cfg: StackConfig, base: Mapping[str, str]) -> dict[str, str]:
    """What the webserver, the daemon and every run they launch see."""
    env = _clean_env(base)
    env.update(
        DAGSTER_HOME=str(cfg.dagster_home),
        DAGSTER_PG_HOST=cfg.pg_host,
        DAGSTER_PG_PORT=str(cfg.pg_port),
        DAGSTER_PG_USER=cfg.pg_user,
        DAGSTER_PG_PASSWORD=cfg.pg_password,
        DAGSTER_PG_DB=cfg.dagster_db,
        DAGSTER_MAX_CONCURRENT_RUNS=str(cfg.max_concurrent_runs),
        # The pipeline's own state (GX results, Data Docs, warehouse) apart from the demo's.
        DATA_DIR=str(cfg.stack_dir),
        INBOX_DIR=str(cfg.inbox_dir),
        LAKE_URL=cfg.lake_url,
        AWS_ENDPOINT_URL=cfg.s3_endpoint,
        AWS_ACCESS_KEY_ID=cfg.secrets["LAKE_PIPELINE_ACCESS_KEY"],
        AWS_SECRET_ACCESS_KEY=cfg.secrets["LAKE_PIPELINE_SECRET_KEY"],
        AWS_REGION=base.get("AWS_REGION") or "us-east-1",
        MLFLOW_TRACKING_URI=cfg.mlflow_url,
        MLFLOW_UI_URL=cfg.mlflow_url,
        MLFLOW_S3_ENDPOINT_URL=cfg.s3_endpoint,
    )
    if cfg.warehouse_path:
        env["WAREHOUSE_PATH"] = cfg.warehouse_path
    else:
        env.pop("WAREHOUSE_PATH", None)
    return env


def webserver_command(port: int) -> list[str]:
    return [_bin("dagster-webserver"), "-w", str(ROOT / "workspace.yaml"), "-h", HOST, "-p", str(port)]


def ask_command(port: int) -> list[str]:
    return [_bin("delivery-lake"), "serve", "--host", HOST, "--port", str(port)]


def daemon_command() -> list[str]:
    return [_bin("dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")]


def start_mlflow(
    cfg: StackConfig,
    base: Mapping[str, str],
    port: int,
    backend_uri: str,
    artifacts: str,
    s3_endpoint: str,
    log_dir: Path,
    timeout: float = 240,
) -> Service:
    env = mlflow_env(cfg, base, backend_uri, artifacts, s3_endpoint)
    svc = spawn("mlflow", mlflow_command(port), env, log_dir, cwd=ROOT)
    try:
        wait_http(f"http://{HOST}:{port}/health", svc, timeout=timeout, ok=lambda s: s == 200)
    except BaseException:
        svc.stop()
        raise
    return svc


def start_seaweed(
    cfg: StackConfig, env: Mapping[str, str], data_dir: Path, port: int | None, detach: bool
) -> SeaweedServer:
    identities = render_identities(IDENTITIES_TEMPLATE, {**env, **cfg.secrets, "LAKE_BUCKET": cfg.bucket})
    buckets = list(dict.fromkeys([cfg.bucket, cfg.artifacts_bucket]))
    server = SeaweedServer()
    server.start(
        data_dir,
        s3_port=port,
        identities=identities,
        access_key=cfg.secrets["SEAWEED_ADMIN_ACCESS_KEY"],
        secret_key=cfg.secrets["SEAWEED_ADMIN_SECRET_KEY"],
        buckets=buckets,
        timeout=90,
        detach=detach,
    )
    return server


# ---- pid files -----------------------------------------------------------------------------------
def _pidfile(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / f"{name}.pid"


def recorded(cfg: StackConfig, name: str) -> int | None:
    """The pid `up` recorded for `name` if that process still runs the expected command."""
    pid = read_pidfile(_pidfile(cfg, name))
    if pid is not None and pid_alive(pid) and CMD_MARKERS[name] in " ".join(cmdline(pid) or ()):
        return pid
    return None


def _record(cfg: StackConfig, name: str, pid: int) -> None:
    write_pidfile(_pidfile(cfg, name), pid)


# ---- commands -------------------------------------------------------------------------------------
def up(env: Mapping[str, str]) -> int:
    cfg = StackConfig.from_env(env)
    missing = cfg.missing_secrets()
    if missing:
        print(
            "refusing to start: set " + ", ".join(missing) + " in the environment or in .env "
            "(`make env` writes a .env with fresh random keys)",
            file=sys.stderr,
        )
        return 2
    running = [n for n in SERVICES if recorded(cfg, n)]
    if running:
        print(f"already running: {', '.join(running)} (pid files in {cfg.run_dir}); `make down` first", file=sys.stderr)
        return 1
    busy = [
        f"{n} port {p}"
        for n, p in (
            ("S3", cfg.lake_port),
            ("MLflow", cfg.mlflow_port),
            ("Dagster", cfg.dagster_port),
            ("question service", cfg.ask_port),
        )
        if not port_is_free(p)
    ]
    if busy:
        print(
            "ports in use on 127.0.0.1: "
            + ", ".join(busy)
            + " (set LAKE_PORT / MLFLOW_PORT / DAGSTER_PORT / ASK_PORT)",
            file=sys.stderr,
        )
        return 1
    t0 = time.monotonic()
    started: list[int] = []
    try:
        created = ensure_databases(cfg, [cfg.dagster_db, cfg.mlflow_db])
        print(
            f"postgres {cfg.pg_host}:{cfg.pg_port}: databases {cfg.dagster_db}, {cfg.mlflow_db}"
            + (f" (created {', '.join(created)})" if created else " (exist)")
        )
        install_dagster_home(cfg.dagster_home)
        cfg.inbox_dir.mkdir(parents=True, exist_ok=True)

        server = start_seaweed(cfg, env, cfg.stack_dir / "seaweed", cfg.lake_port, detach=True)
        assert server.pid is not None
        started.append(server.pid)
        _record(cfg, "seaweed", server.pid)
        print(f"seaweedfs   {cfg.s3_endpoint}  buckets {cfg.bucket}  (pid {server.pid}, log {server.log_path})")

        # MLflow (database migrations on a first start) and Dagster (definitions loading) take
        # a while each: start all three, then wait for them together.
        mlflow = spawn(
            "mlflow",
            mlflow_command(cfg.mlflow_port),
            mlflow_env(cfg, env, mlflow_backend_uri(cfg), cfg.mlflow_artifacts_destination, cfg.s3_endpoint),
            cfg.run_dir,
            cwd=ROOT,
        )
        started.append(mlflow.pid)
        _record(cfg, "mlflow", mlflow.pid)
        denv = dagster_env(cfg, env)
        web = spawn("dagster-webserver", webserver_command(cfg.dagster_port), denv, cfg.run_dir, cwd=ROOT)
        started.append(web.pid)
        _record(cfg, "dagster-webserver", web.pid)
        daemon = spawn("dagster-daemon", daemon_command(), denv, cfg.run_dir, cwd=ROOT)
        started.append(daemon.pid)
        _record(cfg, "dagster-daemon", daemon.pid)
        # The question service reads the warehouse the pipeline publishes (answers cached in Redis).
        ask = spawn(
            "ask-service", ask_command(cfg.ask_port), {**denv, "REDIS_URL": cfg.redis_url}, cfg.run_dir, cwd=ROOT
        )
        started.append(ask.pid)
        _record(cfg, "ask-service", ask.pid)
        wait_http(f"{cfg.mlflow_url}/health", mlflow, timeout=240, ok=lambda s: s == 200)
        print(f"mlflow      {cfg.mlflow_url}  (pid {mlflow.pid}, log {mlflow.log_path})")
        wait_http(f"{cfg.dagster_url}/server_info", web, timeout=240, ok=lambda s: s == 200)
        print(
            f"dagster     {cfg.dagster_url}  (webserver pid {web.pid}, daemon pid {daemon.pid}, logs in {cfg.run_dir})"
        )
        wait_http(f"{cfg.ask_url}/health", ask, timeout=120, ok=lambda s: s == 200)
        print(f"questions   {cfg.ask_url}  (pid {ask.pid}, answers cached in Redis, log {ask.log_path})")
        time.sleep(2)
        if not daemon.alive():
            raise StackError(f"dagster-daemon exited; log {daemon.log_path}:\n{daemon.log_tail()}")
    except (StackError, ProcessError, SeaweedError, OSError, KeyboardInterrupt) as exc:
        print(f"make up failed: {exc or 'interrupted'}; stopping what it started", file=sys.stderr)
        for pid in reversed(started):
            stop_group(pid)
        for name in SERVICES:
            _pidfile(cfg, name).unlink(missing_ok=True)
        return 1
    print(
        f"\nup in {time.monotonic() - t0:.0f}s. Drop exports into {cfg.inbox_dir}/<table>/*.csv; "
        f"the daemon lands, refreshes, validates and retrains.\n"
        f"  Dagster UI  {cfg.dagster_url}\n"
        f"  MLflow UI   {cfg.mlflow_url}\n"
        f"  Questions   {cfg.ask_url}  (page; API docs at {cfg.ask_url}/docs)\n"
        f"  S3 (lake)   {cfg.s3_endpoint}  {cfg.lake_url}\n"
        f"  Data Docs   {cfg.stack_dir / 'data_docs' / 'index.html'}\n"
        f"`make down` stops it."
    )
    return 0


def down(env: Mapping[str, str]) -> int:
    cfg = StackConfig.from_env(env)
    rc = 0
    for name in reversed(SERVICES):
        path = _pidfile(cfg, name)
        if not path.exists():
            continue
        pid = recorded(cfg, name)
        if pid is None:
            print(f"{name}: not running (stale {path.name} removed)")
        else:
            stop_group(pid)
            if pid_alive(pid):
                print(f"{name}: pid {pid} did not stop", file=sys.stderr)
                rc = 1
                continue
            print(f"{name}: stopped pid {pid}")
        path.unlink(missing_ok=True)
    return rc


def status(env: Mapping[str, str]) -> int:
    cfg = StackConfig.from_env(env)
    urls = {
        "seaweed": cfg.s3_endpoint,
        "mlflow": cfg.mlflow_url,
        "dagster-webserver": cfg.dagster_url,
        "dagster-daemon": "",
        "ask-service": cfg.ask_url,
    }
    up_count = 0
    for name in SERVICES:
        pid = recorded(cfg, name)
        up_count += pid is not None
        print(f"{name:18} {'pid ' + str(pid) if pid else 'stopped':12} {urls[name]}")
    return 0 if up_count == len(SERVICES) else 3


def init_env(path: Path) -> int:
    """Create or complete `path` (.env) from .env.example with fresh random keys for the stack."""
    existing = read_dotenv(path)
    lines = path.read_text().splitlines() if path.exists() else (ROOT / ".env.example").read_text().splitlines()
    out, filled = [], []
    for line in lines:
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        if key in SECRET_VARS and not existing.get(key):
            line = f"{key}={_new_secret(key)}"
            filled.append(key)
        out.append(line)
    for key in SECRET_VARS:
        if key not in filled and not existing.get(key) and not any(x.startswith(f"{key}=") for x in out):
            out.append(f"{key}={_new_secret(key)}")
            filled.append(key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(out) + "\n")
    os.chmod(path, 0o600)
    print(f"{path}: " + (f"generated {', '.join(filled)}" if filled else "every stack secret already set"))
    return 0


def _new_secret(key: str) -> str:
    if key.endswith("ACCESS_KEY"):
        return key.split("_")[1].lower() + "-" + secrets.token_hex(8)
    return secrets.token_urlsafe(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.stack", description=__doc__.split("\n")[0])
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env", help="default: .env at the repo root")
    parser.add_argument("cmd", choices=["up", "down", "status", "init-env"])
    args = parser.parse_args(argv)
    if args.cmd == "init-env":
        return init_env(args.env_file)
    env = merged_env(dotenv=args.env_file)
    return {"up": up, "down": down, "status": status}[args.cmd](env)


if __name__ == "__main__":
    raise SystemExit(main())
