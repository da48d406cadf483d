"""The pipeline end to end on the production profile (infra/): PostgreSQL-backed Dagster,
SeaweedFS with the `pipeline` / `analyst` identities, an MLflow server with a PostgreSQL
backend and its artifacts in SeaweedFS. Everything is started here, on free loopback ports,
with the same code `make up` runs (infra/stack.py), and stopped even when a step fails.

PostgreSQL is the machine's (127.0.0.1:5432, DAGSTER_PG_* to override); the databases are
fresh per run (`dl_test_<random>`) and dropped afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from delivery_lake.config import Settings
from delivery_lake.generator import generate
from delivery_lake.storage import Lake
from infra import processes, stack
from infra.seaweed import SeaweedServer, s3_filesystem

pytestmark = [pytest.mark.production, pytest.mark.s3]

START = date(2026, 2, 2)
# The delay model needs 6 validated days (3 to train, 3 to evaluate).
DAYS, CLIENTS = 6, 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Prod:
    cfg: stack.StackConfig
    settings: Settings
    seaweed: SeaweedServer
    mlflow: processes.Service
    outcome: object
    seconds: float
    instance: object

    def fs(self, identity: str, secret: str | None = None):
        key = self.cfg.secrets[f"LAKE_{identity.upper()}_ACCESS_KEY"]
        return s3_filesystem(
            self.seaweed.endpoint_url,
            key,
            secret or self.cfg.secrets[f"LAKE_{identity.upper()}_SECRET_KEY"],
            config_kwargs={"retries": {"max_attempts": 1}},
        )

    def secret_values(self) -> list[str]:
        return [v for k, v in self.cfg.secrets.items() if k.endswith("SECRET_KEY")]


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prod]:
    tmp = tmp_path_factory.mktemp("prod")
    tag = secrets.token_hex(4)
    env = {
        **os.environ,
        "DATA_DIR": str(tmp / "data"),
        "INBOX_DIR": str(tmp / "inbox"),
        "DAGSTER_PG_DB": f"dl_test_{tag}",
        "MLFLOW_PG_DB": f"dl_test_{tag}_mlflow",
        "LAKE_URL": "s3://lake/prod",
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://lake/mlflow-artifacts",
        "WAREHOUSE_PATH": "",
    }
    for name in stack.SECRET_VARS:  # fresh keys: nothing from a developer's .env
        env[name] = stack._new_secret(name)
    cfg = stack.StackConfig.from_env(env)
    if cfg.pg_host != "127.0.0.1" or not cfg.dagster_db.startswith("dl_test_"):
        pytest.fail(f"refusing to run against {cfg.pg_host}/{cfg.dagster_db}", pytrace=False)

    cleanups: list = []
    mp = pytest.MonkeyPatch()
    try:
        try:
            stack.ensure_databases(cfg, [cfg.dagster_db, cfg.mlflow_db])
        except stack.StackError as exc:
            pytest.fail(f"the production profile needs PostgreSQL on 127.0.0.1:5432: {exc}", pytrace=False)
        cleanups.append(lambda: stack.drop_database(cfg, cfg.mlflow_db))
        cleanups.append(lambda: stack.drop_database(cfg, cfg.dagster_db))

        server = stack.start_seaweed(cfg, env, tmp / "seaweed", port=None, detach=False)
        cleanups.append(server.stop)
        mlflow_port = _free_port()
        cfg = dataclasses.replace(cfg, lake_port=server.s3_port, mlflow_port=mlflow_port)
        mlflow = stack.start_mlflow(
            cfg,
            env,
            mlflow_port,
            stack.mlflow_backend_uri(cfg),
            cfg.mlflow_artifacts_destination,
            server.endpoint_url,
            tmp / "logs",
        )
        cleanups.append(mlflow.stop)

        # The environment the daemon's runs get under `make up`, applied to this process:
        # run_inbox builds its instance with DagsterInstance.get() from DAGSTER_HOME.
        stack.install_dagster_home(cfg.dagster_home)
        dagster_env = stack.dagster_env(cfg, env)
        for name in set(os.environ) - set(dagster_env):
            mp.delenv(name)
        for name, value in dagster_env.items():
            mp.setenv(name, value)
        generate(
            cfg.inbox_dir,
            start=START,
            days=DAYS,
            clients=CLIENTS,
            orders_per_day=120,
            seed=21,
            dirty_rate=0.0,
            progress=False,
        )

        import dagster as dg

        from assets.run import run_inbox

        settings = Settings.from_env()
        assert (
            settings.lake_url == "s3://lake/prod"
            and settings.aws_access_key_id == cfg.secrets["LAKE_PIPELINE_ACCESS_KEY"]
        )
        t0 = time.monotonic()
        outcome = run_inbox(settings)
        seconds = time.monotonic() - t0
        instance = dg.DagsterInstance.get()
        cleanups.append(instance.dispose)
        yield Prod(cfg, settings, server, mlflow, outcome, seconds, instance)
    finally:
        mp.undo()
        errors = []
        for fn in reversed(cleanups):
            try:
                fn()
            except Exception as exc:  # keep cleaning up; report after
                errors.append(exc)
        if errors:
            raise errors[0]


def test_pipeline_runs_on_postgres_seaweedfs_and_mlflow_server(prod: Prod) -> None:
    import psycopg2

    out = prod.outcome
    assert out.success, out.failure + "\n" + "\n".join(out.lines)
    print(f"run_inbox on the production profile: {prod.seconds:.0f}s\n" + "\n".join(out.lines))

    # Dagster's instance is the PostgreSQL one from infra/dagster.yaml
    inst = prod.instance
    assert type(inst.run_storage).__name__ == "PostgresRunStorage"
    assert type(inst.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(inst.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert type(inst.run_launcher).__name__ == "WarmRunLauncher"
    with psycopg2.connect(**stack.pg_connect_kwargs(prod.cfg, prod.cfg.dagster_db)) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM runs GROUP BY status")
        by_status = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        materializations = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_CHECK_EVALUATION'")
        check_evaluations = cur.fetchone()[0]
        # no secret anywhere in the event log (metadata, run config, step logs)
        for secret in prod.secret_values():
            cur.execute("SELECT count(*) FROM event_logs WHERE event LIKE %s", (f"%{secret}%",))
            assert cur.fetchone()[0] == 0, "a secret key reached the Dagster event log"
            cur.execute("SELECT count(*) FROM runs WHERE run_body LIKE %s", (f"%{secret}%",))
            assert cur.fetchone()[0] == 0, "a secret key reached a Dagster run record"
    assert by_status == {"SUCCESS": len(out.run_ids)}, by_status
    assert materializations >= DAYS * CLIENTS * 3 and check_evaluations > 0

    # every zone is in SeaweedFS under s3://lake/prod, written with the pipeline identity
    fs = prod.fs("pipeline")
    for zone in ("raw/orders", "curated/fct_deliveries", "_meta"):
        assert fs.find(f"lake/prod/{zone}"), zone
    assert not Path(prod.settings.data_dir, "lake").exists()


def test_mlflow_server_tracks_the_model_with_artifacts_in_seaweedfs(prod: Prod) -> None:
    from mlflow import MlflowClient

    from delivery_lake.ml import registry

    client = MlflowClient(tracking_uri=prod.cfg.mlflow_url)
    # every training registers a version as `challenger` (champion only if it beats the
    # baselines, which a few days of one client need not do)
    latest = client.get_model_version_by_alias(registry.MODEL_NAME, registry.CHALLENGER)
    run = client.get_run(latest.run_id)
    assert run.info.status == "FINISHED" and "roc_auc" in run.data.metrics
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # proxied by the server
    # the server wrote the model to the bucket (read here with the analyst's read-only keys)
    stored = prod.fs("analyst").find("lake/mlflow-artifacts")
    assert any(run.info.run_id in p for p in stored), stored[:5]
    assert any(p.endswith("MLmodel") for p in stored)
    # and clients fetch it back through the server, with no S3 keys of their own
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert files, "no artifacts listed for the champion's run"
    for secret in prod.secret_values():
        assert secret not in str(run.data.params) + str(run.data.tags)
    log = prod.mlflow.log_path.read_text(errors="replace")
    assert not any(s in log for s in prod.secret_values())


def test_analyst_reads_curated_data_and_cannot_write(prod: Prod) -> None:
    analyst = prod.fs("analyst")
    parts = analyst.glob("lake/prod/curated/fct_deliveries/date=*/data.parquet")
    assert len(parts) == DAYS
    with analyst.open(parts[0], "rb") as fh:
        assert pq.read_table(fh).num_rows > 0
    # the library's DuckDB over the lake, with the analyst's keys, as an analyst's notebook would
    lake = Lake.from_settings(
        dataclasses.replace(
            prod.settings,
            aws_access_key_id=prod.cfg.secrets["LAKE_ANALYST_ACCESS_KEY"],
            aws_secret_access_key=prod.cfg.secrets["LAKE_ANALYST_SECRET_KEY"],
        )
    )
    n = (
        lake.duckdb()
        .execute(f"SELECT count(*) FROM read_parquet('{lake.glob_uri('curated', 'fct_deliveries', True)}')")
        .fetchone()[0]
    )
    assert n > 0
    with pytest.raises(PermissionError):
        lake.write_json(lake.meta_path("analyst_was_here.json"), {"x": 1})

    with pytest.raises(PermissionError):
        analyst.pipe_file("lake/prod/curated/fct_deliveries/evil.parquet", b"x")
    with pytest.raises(PermissionError):
        analyst.rm_file(parts[0])
    assert prod.fs("pipeline").exists(parts[0])
    with pytest.raises(PermissionError):
        analyst.mkdir("analyst-bucket")


def test_question_service_answers_from_the_published_warehouse_with_redis(prod: Prod, tmp_path) -> None:
    """The service `make up` starts (same command, same environment as the daemon's runs),
    answering from the warehouse the pipeline published, with its answers cached in Redis."""
    import json
    import urllib.request

    import duckdb

    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(prod.cfg.redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {prod.cfg.redis_url} is not reachable: {exc}")
    port = _free_port()
    env = {**stack.dagster_env(prod.cfg, os.environ), "REDIS_URL": prod.cfg.redis_url}
    service = processes.spawn("ask-service", stack.ask_command(port), env, tmp_path, cwd=stack.ROOT)
    try:
        processes.wait_http(f"http://127.0.0.1:{port}/health", service, timeout=120, ok=lambda s: s == 200)

        def ask(question: str) -> dict:
            body = json.dumps({"question": question, "as_of": str(START + timedelta(days=DAYS - 1))}).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/ask", body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())

        question = f"deliveries per day in the last {DAYS} days"
        first, second = ask(question), ask(question)
        con = duckdb.connect(str(prod.settings.warehouse_path), read_only=True)
        want = con.execute("SELECT date::VARCHAR, count(*) FROM fct_deliveries GROUP BY 1 ORDER BY 1").fetchall()
        con.close()
        assert [tuple(r) for r in first["rows"]] == want and len(want) == DAYS
        assert first["cached"] is False and second["cached"] is True and second["rows"] == first["rows"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
            assert json.loads(resp.read())["cache"] == "redis"
    finally:
        processes.stop_group(service.proc.pid, reap=service.proc.poll)


def test_wrong_secret_is_denied(prod: Prod) -> None:
    for identity in ("pipeline", "analyst"):
        with pytest.raises(PermissionError):
            prod.fs(identity, secret="not-the-secret-" + secrets.token_hex(4)).cat_file(
                "lake/prod/_meta/cli_cursor.json"
            )
    with pytest.raises(PermissionError):
        prod.fs("pipeline", secret="wrong").pipe_file("lake/prod/x.txt", b"x")
    # the right secret works for the same object
    assert prod.fs("analyst").cat_file("lake/prod/_meta/cli_cursor.json")


# ---- the stack's own pieces (no services needed) ------------------------------------------------
def test_identities_template_renders_from_the_environment() -> None:
    env = {k: f"value-of-{k}" for k in stack.SECRET_VARS} | {"LAKE_BUCKET": "lake"}
    ids = stack.render_identities(stack.IDENTITIES_TEMPLATE, env)
    assert set(ids) == {"pipeline", "analyst"}
    assert ids["pipeline"]["secret_key"] == "value-of-LAKE_PIPELINE_SECRET_KEY"
    assert "Write" in ids["pipeline"]["actions"] and "Write" not in ids["analyst"]["actions"]
    assert ids["analyst"]["buckets"] == ["lake"]
    env.pop("LAKE_ANALYST_SECRET_KEY")
    with pytest.raises(stack.StackError, match="LAKE_ANALYST_SECRET_KEY"):
        stack.render_identities(stack.IDENTITIES_TEMPLATE, env)


def test_init_env_writes_private_secrets_and_keeps_existing(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("LAKE_PIPELINE_SECRET_KEY=mine\nDATA_DIR=/x\n")
    assert stack.init_env(path) == 0
    values = stack.read_dotenv(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert values["LAKE_PIPELINE_SECRET_KEY"] == "mine" and values["DATA_DIR"] == "/x"
    assert all(values[k] for k in stack.SECRET_VARS)
    cfg = stack.StackConfig.from_env(stack.merged_env({}, path))
    assert cfg.missing_secrets() == []
    assert "mine" not in repr(cfg)
    assert not cfg.dagster_home.is_relative_to(stack.INFRA)


def test_up_refuses_without_secrets_and_down_never_touches_foreign_pids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"DATA_DIR": str(tmp_path)}
    assert stack.up(env) == 2
    assert "SEAWEED_ADMIN_ACCESS_KEY" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "mlflow.pid").write_text(f"{os.getpid()}\n")  # a live pid that is not an mlflow server
    assert stack.down(env) == 0
    assert not (run / "mlflow.pid").exists()  # stale record removed, this process untouched


def test_down_and_status_recognise_every_service_they_start(tmp_path: Path) -> None:
    """Each service `up` records has the command-line marker `down`/`status` check a pid against
    (a missing one made `down` fail before it stopped the question service)."""
    assert set(stack.CMD_MARKERS) == set(stack.SERVICES)
    # a recorded pid whose command line is the service's own is recognised; any other is not
    run = tmp_path / "run"
    run.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "delivery-lake serve"], start_new_session=True
    )
    try:
        (run / "ask-service.pid").write_text(f"{server.pid}\n")
        (run / "mlflow.pid").write_text(f"{server.pid}\n")
        cfg = stack.StackConfig.from_env({"DATA_DIR": str(tmp_path)})
        assert stack.recorded(cfg, "ask-service") == server.pid
        assert stack.recorded(cfg, "mlflow") is None
    finally:
        server.kill()
        server.wait()
