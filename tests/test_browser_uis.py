"""The three UIs as a person uses them, in headless Chromium (Debian's) driven by Playwright.

One module fixture builds a small lake in-process (raw, curated, ml; one partition made to
fail its GX suite), then starts the real servers on free loopback ports: dagster-webserver on
that DAGSTER_HOME, `mlflow server` on the SQLite store the training wrote, and the GX Data
Docs folder behind http.server. Screenshots go to test-output/screenshots/.

Chromium cannot be downloaded by Playwright here: install it with
`apt-get update && apt-get install -y chromium` (.ci/run does). Without it these tests FAIL.
"""

from __future__ import annotations

import concurrent.futures
import csv
import functools
import http.server
import io
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from delivery_lake.config import Settings
from delivery_lake.generator import generate
from infra import processes, stack
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, SHOTS, require_chromium

pytestmark = pytest.mark.browser

START = date(2026, 3, 2)
DAYS, CLIENTS = 7, 2
BAD_DATE = START.isoformat()  # orders of C002 on the first day fail the `orders` suite
UI_TIMEOUT_MS = 60_000

DAGSTER_YAML = """\
# Browser tests: runs launched from the UI start at once (no daemon in this test).
run_coordinator:
  module: dagster.core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
# the embedded instance's storage (assets/instance_storage.py): the UI reads what `run` wrote through it
storage:
  custom:
    module: assets.instance_storage
    class: PooledSqliteStorage
    config:
      base_dir: "{home}"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _break_orders(path: Path, client: str, n: int) -> None:
    """Negative weights on n orders of `client`: quarantined, over the 2 % gate threshold."""
    rows = list(csv.reader(io.StringIO(path.read_text())))
    header = rows[0]
    ci, wi = header.index("client_id"), header.index("weight_kg")
    done = 0
    for r in rows[1:]:
        if done < n and r[ci] == client:
            r[wi] = "-3"
            done += 1
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.write_text(buf.getvalue())


@dataclass
class UIs:
    dagster: str
    mlflow: str
    docs: str
    settings: Settings
    browser: object
    lines: list[str]
    build_seconds: float

    def page(self):
        page = self.browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        # What Dagster's "Join the Dagster community" dialog stores once dismissed.
        page.add_init_script("window.localStorage.setItem('communityNux', 'true')")
        return page


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def uis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIs]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("uis")
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML.replace("{home}", str(home)))
    env = {
        "DATA_DIR": str(tmp / "data"),
        "LAKE_URL": str(tmp / "lake"),
        "INBOX_DIR": str(tmp / "inbox"),
        "WAREHOUSE_PATH": str(tmp / "warehouse" / "delivery.duckdb"),
        "DAGSTER_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DIR": str(tmp / "mlflow" / "artifacts"),
    }
    generate(
        tmp / "inbox",
        start=START,
        days=DAYS,
        clients=CLIENTS,
        orders_per_day=90,
        seed=4,
        dirty_rate=0.0,
        progress=False,
    )
    _break_orders(tmp / "inbox" / "orders" / f"{BAD_DATE}.csv", "C002", 10)

    services: list[processes.Service] = []
    saved = dict(os.environ)
    docs_server = None
    try:
        # 1) the pipeline, in-process, recorded in DAGSTER_HOME (SQLite) and MLflow (SQLite)
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            mp.delenv("AWS_ENDPOINT_URL", raising=False)
            from assets.run import run_inbox

            settings = Settings.from_env()
            t0 = time.monotonic()
            outcome = run_inbox(settings)
            build_seconds = time.monotonic() - t0
        assert outcome.success, f"{outcome.failure}\n" + "\n".join(outcome.lines)
        print(f"\npipeline for the UI tests built in-process in {build_seconds:.0f}s", file=sys.stderr)

        # 2) the servers
        dagster_port, mlflow_port = _free_port(), _free_port()
        web_env = {**saved, **env}
        services.append(
            processes.spawn(
                "dagster-webserver", stack.webserver_command(dagster_port), web_env, tmp / "logs", cwd=stack.ROOT
            )
        )
        mlflow_env = {k: v for k, v in saved.items() if not k.startswith("MLFLOW_")}
        mlflow_env.update(
            MLFLOW_BACKEND_STORE_URI=env["MLFLOW_TRACKING_URI"],
            MLFLOW_DEFAULT_ARTIFACT_ROOT=env["MLFLOW_ARTIFACTS_DIR"],
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
        services.append(
            processes.spawn(
                "mlflow",
                [*stack.mlflow_command(mlflow_port), "--no-serve-artifacts"],
                mlflow_env,
                tmp / "logs",
                cwd=stack.ROOT,
            )
        )
        docs_dir = settings.data_dir / "data_docs"
        assert (docs_dir / "index.html").is_file(), f"no Data Docs in {docs_dir}"
        docs_server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(docs_dir))
        )
        threading.Thread(target=docs_server.serve_forever, daemon=True).start()
        dagster_url, mlflow_url = f"http://127.0.0.1:{dagster_port}", f"http://127.0.0.1:{mlflow_port}"
        processes.wait_http(f"{mlflow_url}/health", services[1], timeout=180, ok=lambda s: s == 200)
        processes.wait_http(f"{dagster_url}/server_info", services[0], timeout=180, ok=lambda s: s == 200)

        SHOTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                yield UIs(
                    dagster_url,
                    mlflow_url,
                    f"http://127.0.0.1:{docs_server.server_address[1]}",
                    settings,
                    browser,
                    outcome.lines,
                    build_seconds,
                )
            finally:
                browser.close()
    finally:
        if docs_server is not None:
            docs_server.shutdown()
            docs_server.server_close()
        for svc in reversed(services):
            svc.stop()


# ---- helpers -----------------------------------------------------------------------------------
def _shot(page, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def _body(page) -> str:
    return page.inner_text("body")


# ---- Dagster ------------------------------------------------------------------------------------
def test_dagster_asset_graph_shows_the_three_groups(uis: UIs) -> None:
    page = uis.page()
    page.goto(f"{uis.dagster}/asset-groups")
    for group in ("raw", "curated", "ml"):
        page.get_by_text(group, exact=True).first.wait_for()
    page.get_by_text("fetching statuses").first.wait_for(state="hidden")
    # each group is named in the sidebar tree and on its node in the lineage graph
    text = _body(page)
    for group in ("raw", "curated", "ml"):
        assert len(re.findall(rf"(?m)^{group}$", text)) >= 2, f"group {group} not shown in the lineage view"
    _shot(page, "dagster_asset_groups")
    page.close()


def test_dagster_partitioned_raw_asset_shows_date_by_client(uis: UIs) -> None:
    page = uis.page()
    page.goto(f"{uis.dagster}/assets/raw/orders?view=partitions")
    page.get_by_text(f"Materialized ({DAYS * CLIENTS})").first.wait_for()
    # hide the missing partitions: the date column then lists exactly the landed days
    page.get_by_text(re.compile(r"^Missing \(\d+\)$")).first.click()
    page.get_by_text(f"{DAYS * CLIENTS} Partitions Selected").first.wait_for()
    page.get_by_text("C002", exact=True).first.click()
    days = [(START + timedelta(days=i)).isoformat() for i in range(DAYS)]
    for d in days:
        page.get_by_text(d, exact=True).first.wait_for()
    text = _body(page)
    assert "C001" in text and "C002" in text, "client dimension not shown"
    _shot(page, "dagster_raw_orders_partitions")
    page.close()


def test_dagster_materialization_observed_after_the_runs(uis: UIs) -> None:
    page = uis.page()
    page.goto(f"{uis.dagster}/runs")
    page.get_by_text("Success").first.wait_for()
    runs_text = _body(page)
    assert "Failure" not in runs_text
    runs = [line for line in uis.lines if line.startswith("ok ")]  # one per Dagster run
    assert runs_text.count("Success") >= len(runs), runs_text[:2000]
    _shot(page, "dagster_runs")
    page.goto(f"{uis.dagster}/assets/curated/fct_deliveries")
    page.get_by_text("Latest materialization").first.wait_for()
    page.get_by_text("rows_in_run").first.wait_for()
    # Dagster shows a relative time ("2 minutes ago") or, depending on age and view, a clock time.
    assert re.search(r"\d+ (minute|second|hour)s? ago|just now|\b\d{1,2}:\d{2}\b", _body(page)), (
        "no materialization time shown"
    )
    _shot(page, "dagster_fct_deliveries_overview")
    page.close()


def test_dagster_asset_check_results_are_visible(uis: UIs) -> None:
    page = uis.page()
    page.goto(f"{uis.dagster}/assets/raw/orders?view=checks")
    page.get_by_text("gx_suite", exact=True).first.click()
    page.get_by_text(f"partition(s) blocked by ERROR expectations: {BAD_DATE}/C002").first.wait_for()
    text = _body(page)
    assert "Failed" in text
    # The GX suite is the only check: freshness is a policy on the asset (see the next test).
    assert "Checks (1)" in text and "freshness_check" not in text
    assert f"1 of {DAYS * CLIENTS} partition(s) blocked" in text
    _shot(page, "dagster_raw_orders_checks")
    page.close()


def _evaluate_freshness_as_the_daemon_does(uis: UIs) -> None:
    """One FreshnessDaemon iteration on the test instance: what `dagster-daemon` (make up) and
    `dagster dev` (make ui) do every 30 s. The webserver here runs no daemon."""
    import dagster as dg
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.freshness import FreshnessDaemon

    root = Path(__file__).resolve().parents[1]
    target = InProcessWorkspaceLoadTarget(
        InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name="assets.definitions", attribute="defs", working_directory=str(root)),
            location_name="delivery_lake",
        )
    )
    home = uis.settings.data_dir.parent / "dagster_home"  # DAGSTER_HOME of the fixture

    def iteration() -> None:
        with (
            dg.DagsterInstance.from_config(str(home)) as instance,
            create_test_daemon_workspace_context(target, instance) as workspace,
        ):
            list(FreshnessDaemon().run_iteration(workspace))

    # In a thread of its own: the daemon runs asyncio, and Playwright's loop owns this thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(iteration).result()


def test_dagster_asset_shows_its_freshness_policy_and_state(uis: UIs) -> None:
    _evaluate_freshness_as_the_daemon_does(uis)
    page = uis.page()
    page.goto(f"{uis.dagster}/assets/raw/orders")
    page.get_by_text("Latest materialization").first.wait_for()
    # Status row and the Definition sidebar both show the policy; the state is the daemon's.
    page.get_by_text("Freshness policy", exact=True).first.wait_for()
    page.get_by_text("Passing", exact=True).first.wait_for()
    page.get_by_text("Fails if more than 26 hours since last materialization").first.wait_for()
    _shot(page, "dagster_raw_orders_freshness")
    # A dimension has no freshness policy.
    page.goto(f"{uis.dagster}/assets/raw/clients")
    page.get_by_text("Latest materialization").first.wait_for()
    page.get_by_text("Code location", exact=True).first.wait_for()  # the Definition sidebar has loaded
    assert "Fails if more than" not in _body(page)
    page.close()


# ---- MLflow -------------------------------------------------------------------------------------
def _champion(uis: UIs):
    from mlflow import MlflowClient

    from delivery_lake.ml import registry

    client = MlflowClient(tracking_uri=uis.mlflow)
    exp = client.get_experiment_by_name(registry.EXPERIMENT)
    version = client.get_model_version_by_alias(registry.MODEL_NAME, registry.CHAMPION)
    return exp, version, client.get_run(version.run_id)


def test_mlflow_lists_the_training_run_with_metrics(uis: UIs) -> None:
    exp, _, run = _champion(uis)
    page = uis.page()
    page.goto(f"{uis.mlflow}/#/experiments/{exp.experiment_id}/runs")
    page.get_by_text(run.info.run_name, exact=True).first.wait_for()
    page.get_by_text("1 matching run").first.wait_for()
    _shot(page, "mlflow_experiment_runs")
    page.goto(f"{uis.mlflow}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}")
    page.get_by_text("roc_auc", exact=True).first.wait_for()
    text = _body(page)
    for metric in ("roc_auc", "log_loss", "brier"):
        assert str(run.data.metrics[metric])[:6] in text, f"{metric} not on the run page"
    assert "Finished" in text
    page.get_by_text(re.compile(r"^Metrics \(\d+\)$")).first.scroll_into_view_if_needed()
    _shot(page, "mlflow_run")
    page.close()


def test_mlflow_registered_model_has_a_champion_version(uis: UIs) -> None:
    from delivery_lake.ml import registry

    _, version, _ = _champion(uis)
    page = uis.page()
    page.goto(f"{uis.mlflow}/#/models/{registry.MODEL_NAME}")
    page.get_by_text(f"Version {version.version}", exact=True).first.wait_for()
    page.get_by_text("@ champion").first.wait_for()
    _shot(page, "mlflow_registered_model")
    page.close()


# ---- GX Data Docs -------------------------------------------------------------------------------
def test_data_docs_index_lists_suites_and_a_failing_validation(uis: UIs) -> None:
    page = uis.page()
    page.goto(f"{uis.docs}/index.html")
    page.locator("table tbody tr").first.wait_for()
    suites = set(page.locator("table tbody tr td:last-child").all_inner_texts())
    assert {"orders", "deliveries", "customer_feedback", "clients", "fct_deliveries"} <= {s.strip() for s in suites}, (
        suites
    )
    # Partitions are validated together (a page per batch and suite); the quarantine ratio is a
    # partition rule, so the failing page is the orders partition rules' of the landing run.
    bad = page.locator('tr[data-status="Failed"]').filter(has_text="orders.partitions")
    assert bad.count() == 1, page.locator('tr[data-status="Failed"]').all_inner_texts()
    assert bad.locator(".fa-times").count() == 1, "the failing validation shows no failure mark"
    assert page.locator('tr[data-status="Success"]').count() > 0
    bad.scroll_into_view_if_needed()
    _shot(page, "gx_data_docs_index")
    bad.locator("a").first.click()
    page.wait_for_url(re.compile(r"validations/orders/partitions/orders-"))
    page.locator(".fa-times").first.wait_for()
    # the critical expectation that blocked it: too many quarantined rows (the negative weights)
    assert "quarantine" in _body(page).lower()
    _shot(page, "gx_data_docs_failing_validation")
    page.close()
