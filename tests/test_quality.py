"""Quality gate: GX suites per partition, the gate, Data Docs, the Dagster checks, freshness."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import statistics
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from delivery_lake import gate
from delivery_lake.config import Settings
from delivery_lake.contract import DIMENSIONS, FACTS, TABLES
from delivery_lake.generator import generate
from delivery_lake.landing import Landing
from delivery_lake.quality import (
    _KEPT,
    ERROR,
    UNBOUNDED,
    WARN,
    Quality,
    SuiteError,
    _KeptSnapshots,
    docs_deferred,
    load_partition_suite_doc,
    load_suite_doc,
    suite_names,
)
from delivery_lake.storage import Lake
from tests.helpers import START
from tests.s3_server import on_s3

DATES = ["2026-01-05", "2026-01-06", "2026-01-07"]
DAY = "2026-01-06"


@pytest.fixture(scope="module")
def clean_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three clean days x 3 clients: every quarantined row in these tests is one we put there."""
    out = tmp_path_factory.mktemp("clean") / "inbox"
    generate(out, start=START, days=3, clients=3, orders_per_day=300, seed=5, dirty_rate=0.0, progress=False)
    return out


@pytest.fixture()
def qs(tmp_path: Path, clean_export: Path) -> Settings:
    inbox = tmp_path / "inbox"
    shutil.copytree(clean_export, inbox)
    return Settings.from_env(data_dir=tmp_path / "data", lake_url=str(tmp_path / "lake"), inbox_dir=inbox)


def land(settings: Settings, dates: list[str] = DATES) -> tuple[Lake, Landing]:
    lake = Lake.from_settings(settings)
    landing = Landing(lake, settings.inbox_dir, settings)
    for t in DIMENSIONS:
        landing.land_dimension(t)
    for t in FACTS:
        landing.land_fact(t, {d: None for d in dates})
    return lake, landing


def edit_rows(path: Path, client: str, n: int, column: str, value: str) -> list[str]:
    """Set `column` to `value` on the first n rows of `client` in a CSV; returns their keys."""
    rows = list(csv.reader(io.StringIO(path.read_text())))
    header = rows[0]
    ci, vi = header.index("client_id"), header.index(column)
    keys = []
    for r in rows[1:]:
        if len(keys) < n and r[ci] == client:
            r[vi] = value
            keys.append(r[0])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.write_text(buf.getvalue())
    return keys


def labels(outcomes: list) -> set[str]:
    return {o.label for o in outcomes}


def test_suites_are_files_that_cover_the_contract() -> None:
    names = set(suite_names())
    assert set(TABLES) | {"fct_deliveries", "agg_client_daily_kpis"} <= names
    for t in TABLES.values():
        doc = load_suite_doc(t.name)
        assert doc["name"] == t.name
        kinds = {(e["type"], e["kwargs"].get("column")) for e in doc["expectations"]}
        assert ("expect_column_values_to_be_unique", t.key) in kinds
        for c in t.columns:
            if c.min is not None or c.max is not None:
                assert ("expect_column_values_to_be_between", c.name) in kinds, (t.name, c.name)
            if c.allowed:
                assert ("expect_column_values_to_be_in_set", c.name) in kinds, (t.name, c.name)
            if c.references and c.references[0] != t.name:  # foreign key: no orphan
                assert ("expect_column_values_to_be_null", f"_orphan_{c.name}") in kinds, (t.name, c.name)
        assert ("expect_column_pair_values_to_be_equal", None) in kinds or not t.is_fact  # row in its partition
        rules = load_partition_suite_doc(t.name)["expectations"]
        pairs = {(e["kwargs"].get("column_A"), e["kwargs"].get("column_B")) for e in rules}
        assert {("read", "accounted"), ("rows", "manifest_landed")} <= pairs  # reconciliation, per partition
        assert all(e["severity"] in ("critical", "warning") for e in doc["expectations"] + rules)
    kpis = load_suite_doc("agg_client_daily_kpis")["expectations"]
    assert {"column": "on_time_rate", "min_value": 0, "max_value": 1} in [e["kwargs"] for e in kpis]


def test_a_rule_about_a_whole_partition_is_refused_among_the_row_rules(qs: Settings, monkeypatch) -> None:
    """Row rules are validated over many partitions at once: a mean or a row count there would
    judge the batch, not the partition. Loading such a suite fails, naming the file."""
    import delivery_lake.quality as quality

    suites = qs.data_dir / "suites"
    (suites / "partitions").mkdir(parents=True)
    doc = load_suite_doc("orders")
    doc["expectations"].append({"type": "expect_column_mean_to_be_between", "kwargs": {"column": "weight_kg"}})
    (suites / "orders.json").write_text(json.dumps(doc))
    monkeypatch.setattr(quality, "SUITES_DIR", suites)
    monkeypatch.setattr(quality, "PARTITION_SUITES_DIR", suites / "partitions")
    with pytest.raises(SuiteError, match=r"orders\.json: expect_column_mean_to_be_between .*partitions/orders\.json"):
        Quality(Lake.from_settings(qs), qs).context()


def test_quarantine_ratio_blocks_few_bad_rows_pass_and_a_fix_unblocks(qs: Settings) -> None:
    src = qs.inbox_dir / "orders" / f"{DAY}.csv"
    original = src.read_text()
    edit_rows(src, "C001", 1, "weight_kg", "-3")  # one bad row: under 2 %
    edit_rows(src, "C002", 8, "weight_kg", "-3")  # eight bad rows: over 2 %
    lake, landing = land(qs)
    q = Quality(lake, qs)
    res = {r.client: r for r in q.validate_and_record("orders", [(DAY, "C001"), (DAY, "C002")])}

    ok, bad = res["C001"], res["C002"]
    assert ok.passed and not ok.failed_errors
    manifest = lake.read_json(lake.meta_path("landing", "orders", f"date={DAY}", "client=C002.json"))
    assert manifest["quarantined"] == 8
    assert labels(bad.failed_errors) == {"expect_column_values_to_be_between(quarantine_ratio)"}
    ratio = float(bad.failed_errors[0].observed)
    assert ratio == pytest.approx(8 / (manifest["landed"] + 8), abs=1e-4) and ratio > qs.quarantine_threshold
    assert gate.blocked_partitions(lake, "orders") == {(DAY, "C002")}
    status = lake.read_json(gate.status_path(lake, "orders", DAY, "C002"))
    assert status["passed"] is False and status["failed"][0]["severity"] == ERROR

    # Fixed at the source and re-landed: passes, and the gate lets it through again.
    src.write_text(original)
    landing.land_fact(TABLES["orders"], {DAY: ["C002"]})
    [again] = q.validate_and_record("orders", [(DAY, "C002")])
    assert again.passed and again.rows == manifest["landed"] + 8
    assert gate.blocked_partitions(lake, "orders") == set()


def _rewrite(lake: Lake, table: str, date: str, client: str, fn) -> None:
    path = lake.data_file("raw", table, date, client)
    t = pq.read_table(path, filesystem=lake.fs)
    rows = t.to_pylist()
    fn(rows)
    pq.write_table(t.from_pylist(rows, schema=t.schema), path, filesystem=lake.fs)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def qs_each_backend(request: pytest.FixtureRequest, qs: Settings) -> Settings:
    """`qs` on the local folder and on SeaweedFS (where the key snapshots are read by pyarrow)."""
    if request.param == "local":
        return qs
    return on_s3(request.getfixturevalue("s3_settings"), qs.data_dir, qs.inbox_dir)


def test_orphans_and_duplicates_written_past_landing_block(qs_each_backend: Settings) -> None:
    qs = qs_each_backend
    lake, _ = land(qs)
    other = (
        pq.read_table(lake.data_file("raw", "orders", "2026-01-05", "C001"), filesystem=lake.fs)
        .column("order_id")
        .to_pylist()
    )

    def orphan(rows: list[dict]) -> None:
        rows[0]["order_id"] = "O-NOWHERE-1"
        rows[1]["order_id"] = "O-NOWHERE-2"

    def duplicate(rows: list[dict]) -> None:
        rows[0]["order_id"], rows[1]["order_id"] = other[0], other[1]

    _rewrite(lake, "deliveries", DAY, "C003", orphan)
    _rewrite(lake, "orders", DAY, "C001", duplicate)
    q = Quality(lake, qs)
    [d] = q.validate_and_record("deliveries", [(DAY, "C003")])
    [o] = q.validate_and_record("orders", [(DAY, "C001")])
    [fk] = [x for x in d.failed_errors if x.label == "expect_column_values_to_be_null(_orphan_order_id)"]
    assert fk.unexpected_count == 2 and set(fk.sample) == {"O-NOWHERE-1", "O-NOWHERE-2"}
    [dup] = o.failed_errors
    assert dup.label == "expect_column_values_to_be_null(_elsewhere_order_id)" and set(dup.sample) == {
        other[0],
        other[1],
    }
    assert {("2026-01-06", "C003")} == gate.blocked_partitions(lake, "deliveries")
    assert {("2026-01-06", "C001")} == gate.blocked_partitions(lake, "orders")
    # each verdict names the version of the file it judged (hashed from the copy on S3)
    assert o.data_sha256 == lake.sha256(lake.data_file("raw", "orders", DAY, "C001"))
    assert d.data_sha256 == lake.sha256(lake.data_file("raw", "deliveries", DAY, "C003"))
    assert o.data_sha256 != d.data_sha256


def test_warn_does_not_block_and_data_docs_name_the_failure(qs: Settings) -> None:
    lake, _ = land(qs)

    def far(rows: list[dict]) -> None:
        for r in rows:
            r["distance_km"] = 900.0  # within the contract, but the mean drifts far from normal

    _rewrite(lake, "deliveries", DAY, "C001", far)
    _rewrite(lake, "deliveries", DAY, "C002", lambda rows: rows.__setitem__(0, rows[0] | {"attempts": 0}))
    q = Quality(lake, qs)
    res = {r.client: r for r in q.validate_and_record("deliveries", [(DAY, "C001"), (DAY, "C002")])}
    warn = res["C001"]
    assert warn.passed and [(o.label, o.severity) for o in warn.warnings] == [
        ("expect_column_values_to_be_between(mean_distance_km)", WARN)
    ]
    assert float(warn.warnings[0].observed) == pytest.approx(900.0)
    assert gate.blocked_partitions(lake, "deliveries") == {(DAY, "C002")}
    [bad] = res["C002"].failed_errors
    assert (bad.label, bad.unexpected_count, bad.sample) == ("expect_column_values_to_be_between(attempts)", 1, ["0"])

    # Data Docs: the page of that validation exists, names the failed expectation, and is offline-safe.
    page = Path(res["C002"].docs_url.removeprefix("file://"))
    html = page.read_text()
    # One page per batch of partitions validated together, named after the first and the count.
    assert page.is_relative_to(qs.data_dir / "data_docs") and "deliveries-2026-01-06-C001-and-1-more" in str(page)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "Status: Failed" in text and "Unsuccessful Expectations 1 " in text
    # GX renders each expectation as prose under its column: the failed range rule on attempts.
    section = text[text.index(" attempts Status Expectation") :]
    assert re.search(
        r"values must be greater than or equal to 1(\.0)? and less than or equal to 10(\.0)?", section[:400]
    )
    assert not re.search(r"""<(link|script)[^>]+(href|src)=["']https?://""", html)
    assert (qs.data_dir / "data_docs" / "static" / "styles" / "offline.css").exists()
    assert "deliveries-2026-01-06-C001-and-1-more" in (qs.data_dir / "data_docs" / "index.html").read_text()


def test_data_docs_of_many_checks_are_built_once_when_the_block_ends(qs: Settings, monkeypatch) -> None:
    """Inside docs_deferred (a `run`) each check's pages are addressed but not built; all of them
    are built by one call when the block ends, and none is lost."""
    lake, _ = land(qs)
    q = Quality(lake, qs)
    builds: list[int] = []
    real = Quality.build_docs

    def counted(self: Quality, identifiers: list | None = None) -> Path:
        builds.append(len(identifiers or []))
        return real(self, identifiers)

    monkeypatch.setattr(Quality, "build_docs", counted)
    with docs_deferred(lake, qs):
        orders = q.validate_and_record("orders", [(DAY, "C001")])
        deliveries = q.validate_and_record("deliveries", [(DAY, "C001"), (DAY, "C002")])
        pages = [Path(r.docs_url.removeprefix("file://")) for r in orders + deliveries]
        assert builds == [] and not any(p.exists() for p in pages)
    assert builds == [4]  # two tables x (row rules, partition rules), in one build
    assert all(p.exists() for p in pages)
    index = (qs.data_dir / "data_docs" / "index.html").read_text()
    assert "orders-2026-01-06-C001" in index and "deliveries-2026-01-06-C001-and-1-more" in index
    q.validate_and_record("customer_feedback", [(DAY, "C001")])  # outside the block: built at once
    assert builds == [4, 2]


# ---- Dagster: checks in the same run, one bad partition does not hold back the good ones ---------


def _check_eval(instance: dg.DagsterInstance, table: str, zone: str = "raw"):
    key = dg.AssetCheckKey(dg.AssetKey([zone, table]), "gx_suite")
    return instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[
        0
    ].event.dagster_event.event_specific_data


def _mart_rows(lake: Lake, model: str, date: str) -> list[dict]:
    return pq.read_table(lake.data_file("curated", model, date)).to_pylist()


@pytest.mark.slow  # a whole Dagster run (about 16 s): the full suite only
def test_dagster_run_blocks_bad_partition_lets_good_ones_flow_then_fix(qs: Settings, run_cli) -> None:
    src = qs.inbox_dir / "deliveries" / f"{DAY}.csv"
    original = src.read_text()
    # C002: 12 rows out of range, quarantined at landing: a feed that broken blocks its partition.
    many_bad = edit_rows(src, "C002", 12, "distance_km", "-1")
    few_bad = edit_rows(src, "C001", 1, "distance_km", "-1")  # quarantined at landing, under 2 %
    instance = run_cli.instance
    outcome = run_cli(qs)
    assert outcome.success, outcome.failure  # the run is not failed by a blocked partition
    lake = Lake.from_settings(qs)

    # The check ran in the raw run, failed with ERROR, and names the partition and the rule.
    ev = _check_eval(instance, "deliveries")
    assert ev.passed is False and ev.severity == dg.AssetCheckSeverity.ERROR
    md = ev.metadata
    assert md["blocked_partitions"].value == [f"{DAY}/C002"]
    assert md["partitions_validated"].value == 9 and md["partitions_passed"].value == 8
    failed = md["per_partition"].value[f"{DAY}/C002"]["failed"]
    assert [f["expectation"] for f in failed] == ["expect_column_values_to_be_between(quarantine_ratio)"]
    landed_c002 = lake.read_json(lake.meta_path("landing", "deliveries", f"date={DAY}", "client=C002.json"))
    assert landed_c002["quarantined"] == len(many_bad) == 12
    assert float(failed[0]["observed"]) == pytest.approx(12 / (landed_c002["landed"] + 12), abs=1e-4)
    assert md["per_partition"].value[f"{DAY}/C002"]["data_docs"].endswith(".html")
    assert gate.blocked_partitions(lake, "deliveries") == {(DAY, "C002")}

    # Downstream: the mart date holds no row of the blocked partition; the good partitions flowed,
    # including C001 with its good rows (its one bad row was quarantined).
    fct = _mart_rows(lake, "fct_deliveries", DAY)
    by_client = {c: [r for r in fct if r["client_id"] == c] for c in ("C001", "C002", "C003")}
    assert by_client["C002"] == []
    landed_c001 = lake.read_json(lake.meta_path("landing", "deliveries", f"date={DAY}", "client=C001.json"))["landed"]
    assert len(by_client["C001"]) == landed_c001 and few_bad[0] not in {r["delivery_id"] for r in by_client["C001"]}
    assert by_client["C003"]
    assert {r["client_id"] for r in _mart_rows(lake, "fct_deliveries", "2026-01-07")} == {"C001", "C002", "C003"}
    kpi = _check_eval(instance, "agg_client_daily_kpis", "curated")
    assert kpi.passed, kpi.metadata["results"].value

    # Fixed at the source and re-run (only what changed): the partition passes and reaches the mart.
    src.write_text(original)
    assert run_cli(qs, full=False).success
    assert gate.blocked_partitions(lake, "deliveries") == set()
    assert _check_eval(instance, "deliveries").passed
    assert len([r for r in _mart_rows(lake, "fct_deliveries", DAY) if r["client_id"] == "C002"]) > 0


def test_stale_asset_fails_its_freshness_check() -> None:
    """Freshness as the daemon evaluates it: one FreshnessDaemon iteration over a workspace of
    the project's definitions records a FreshnessStateChange per asset whose state changed."""
    from dagster._core.definitions.freshness import FreshnessState
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.freshness import FreshnessDaemon

    import assets.definitions  # noqa: F401  (loaded here so import errors point at the project)

    fact, dim = dg.AssetKey(["raw", "orders"]), dg.AssetKey(["raw", "clients"])
    root = str(Path(__file__).resolve().parents[1])
    target = InProcessWorkspaceLoadTarget(
        InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name="assets.definitions", attribute="defs", working_directory=root),
            location_name="delivery_lake",
        )
    )
    landed_at = datetime(2026, 1, 6, 2, 0, tzinfo=UTC)  # the nightly landing
    with dg.instance_for_test() as instance, create_test_daemon_workspace_context(target, instance) as workspace:
        instance.add_dynamic_partitions("client", ["C001"])
        with freeze_time(landed_at):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=fact, partition="C001|2026-01-05"))
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=dim))

        def evaluate(at: datetime) -> dict[dg.AssetKey, FreshnessState]:
            with freeze_time(at):
                list(FreshnessDaemon().run_iteration(workspace))
            records = instance.get_freshness_state_records([fact, dim])
            return {k: r.freshness_state for k, r in records.items()}

        na = FreshnessState.NOT_APPLICABLE  # a dimension has no policy and never goes stale
        assert evaluate(landed_at + timedelta(hours=1)) == {fact: FreshnessState.PASS, dim: na}
        # last update 27 h ago, fail window 26 h
        assert evaluate(landed_at + timedelta(hours=27)) == {fact: FreshnessState.FAIL, dim: na}
        # the next night's landing makes it fresh again
        with freeze_time(landed_at + timedelta(hours=27, minutes=5)):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=fact, partition="C001|2026-01-06"))
        assert evaluate(landed_at + timedelta(hours=28))[fact] == FreshnessState.PASS


def test_freshness_policy_on_raw_facts_and_partitioned_marts_only() -> None:
    from dagster._core.definitions.freshness import TimeWindowFreshnessPolicy

    from assets.checks import FRESHNESS_LOWER_BOUND
    from assets.curated import CURATED_PARTITIONED_KEYS, CURATED_UNPARTITIONED_KEYS, WAREHOUSE_KEY
    from assets.definitions import defs
    from assets.raw import RAW_DIMENSION_KEYS, RAW_FACT_KEYS

    assert timedelta(hours=26) == FRESHNESS_LOWER_BOUND
    policies = {spec.key: spec.freshness_policy for spec in defs.resolve_all_asset_specs()}
    fresh = {*RAW_FACT_KEYS, *CURATED_PARTITIONED_KEYS}
    assert RAW_FACT_KEYS and CURATED_PARTITIONED_KEYS and RAW_DIMENSION_KEYS and CURATED_UNPARTITIONED_KEYS
    for key in fresh:
        policy = policies[key]
        assert isinstance(policy, TimeWindowFreshnessPolicy), key
        assert policy.fail_window.to_timedelta() == timedelta(hours=26) and policy.warn_window is None, key
    for key in {*RAW_DIMENSION_KEYS, *CURATED_UNPARTITIONED_KEYS, WAREHOUSE_KEY}:
        assert policies[key] is None, key
    assert {k for k, p in policies.items() if p is not None} == fresh  # nothing else (ml assets) has one
    # the superseded last-update checks and their sensor are gone
    assert not [c for c in defs.resolve_asset_graph().asset_check_keys if c.name == "freshness_check"]
    assert "freshness_checks_sensor" not in {s.name for s in defs.sensors or []}


def _fresh_python(code: str, cwd: Path) -> tuple[list[str], str]:
    """Run `code` in a new interpreter (the test process may have imported GX already): its
    output lines and its stderr; it must exit 0."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines(), out.stderr


def test_gx_imports_without_the_engines_it_is_not_asked_for(tmp_path: Path) -> None:
    """A check's GX context is built without importing pyspark or Google Cloud (in a fresh
    interpreter: the test process may have imported GX already), and both stay importable."""
    code = (
        "import sys\n"
        "from delivery_lake.config import Settings\n"
        "from delivery_lake.quality import Quality\n"
        "from delivery_lake.storage import Lake\n"
        f"settings = Settings.from_env(data_dir={str(tmp_path)!r}, lake_url={str(tmp_path / 'lake')!r})\n"
        "ctx = Quality(Lake.from_settings(settings), settings).context()\n"
        "print(sorted(n for n in ('pyspark', 'google.oauth2', 'google.auth') if n in sys.modules))\n"
        "print(sorted(s.name for s in ctx.suites.all())[:1])\n"
        "import pyspark, google.auth\n"
        "print(pyspark.__name__, google.auth.__name__)\n"
    )
    lines, stderr = _fresh_python(code, tmp_path)
    assert lines == ["[]", f"[{sorted(suite_names())[0]!r}]", "pyspark google.auth"]
    assert "FutureWarning" not in stderr  # pyspark's pandas-version warning, printed into `run`'s output


def test_blocked_partitions_of_some_dates_are_those_of_the_whole_table_on_them(tmp_path: Path) -> None:
    """A build of a few days reads the verdicts of its dates only: the same answer as the whole
    table's verdicts restricted to those dates, whole-date verdicts included."""
    lake = Lake(str(tmp_path / "lake"))
    verdicts = [
        ("2026-01-05", "C001", False),
        ("2026-01-05", "C002", True),
        ("2026-01-06", None, False),  # the whole date
        ("2026-01-07", "C001", False),
        ("2026-01-09", "C003", False),
    ]
    for d, c, passed in verdicts:
        gate.record(lake, "orders", passed, {}, d, c)
    everything = gate.blocked_partitions(lake, "orders")
    assert everything == {("2026-01-05", "C001"), ("2026-01-06", None), ("2026-01-07", "C001"), ("2026-01-09", "C003")}
    for dates in (["2026-01-05", "2026-01-06"], ["2026-01-07", "2026-01-08"], ["2026-01-10"], []):
        assert gate.blocked_partitions(lake, "orders", dates) == {p for p in everything if p[0] in dates}
    assert len(gate.statuses(lake, "orders", ["2026-01-05"])) == 2


def test_gx_preloads_on_a_thread_without_the_engines(tmp_path: Path) -> None:
    """`run` starts importing GX on a thread while it lands: the import completes there, the same
    way (no pyspark), and the checks then find it imported."""
    code = (
        "import sys\n"
        "from delivery_lake.quality import preload_gx_in_background\n"
        "assert 'great_expectations' not in sys.modules\n"
        "t = preload_gx_in_background()\n"
        "print(t.name, t.daemon)\n"
        "t.join(120)\n"
        "print('great_expectations' in sys.modules, 'pyspark' in sys.modules)\n"
    )
    assert _fresh_python(code, tmp_path)[0] == ["gx-preload True", "True False"]


def test_volume_band_is_the_median_of_the_clients_recent_landed_dates(tmp_path: Path) -> None:
    """Each partition's volume band comes from the same client's last `window_days` landed dates
    before it (gaps skipped, later dates ignored); a day far under it warns without blocking."""
    inbox = tmp_path / "inbox"
    generate(inbox, start=START, days=12, clients=2, orders_per_day=60, seed=11, dirty_rate=0.0, progress=False)
    days = [(START + timedelta(days=k)).isoformat() for k in range(12)]
    landed = [d for k, d in enumerate(days) if k not in (3, 6, 7)]  # a history with gaps
    last = landed[-1]
    # the last day of C001 shrinks to 2 orders: far under its band
    rows = list(csv.reader(io.StringIO((inbox / "orders" / f"{last}.csv").read_text())))
    ci = rows[0].index("client_id")
    kept = [rows[0]] + [r for r in rows[1:] if r[ci] != "C001"] + [r for r in rows[1:] if r[ci] == "C001"][:2]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(kept)
    (inbox / "orders" / f"{last}.csv").write_text(buf.getvalue())
    qs = Settings.from_env(data_dir=tmp_path / "data", lake_url=str(tmp_path / "lake"), inbox_dir=inbox)
    lake, _ = land(qs, landed)

    volume = load_partition_suite_doc("orders")["meta"]["volume"]
    q = Quality(lake, qs)
    for d in (landed[2], landed[5], last):
        for c in ("C001", "C002"):
            history = [
                int(lake.read_json(lake.meta_path("landing", "orders") + f"/date={x}/client={c}.json")["landed"])
                for x in landed
                if x < d
            ][-int(volume["window_days"]) :]
            if len(history) < int(volume["min_history"]):
                want = (0, UNBOUNDED)
            else:
                median = statistics.median(history)
                want = (int(median * volume["low"]), int(median * volume["high"]) + 1)
            assert q._volume_bounds(TABLES["orders"], d, c, {"volume": volume}) == want, (d, c)
    assert q._volume_bounds(TABLES["orders"], landed[5], "C001", {"volume": volume})[0] > 0

    res = {r.client: r for r in q.validate_and_record("orders", [(last, "C001"), (last, "C002")])}
    assert res["C001"].passed and res["C002"].passed
    assert [o.label for o in res["C001"].warnings if "volume_min" in o.label]
    assert not [o.label for o in res["C002"].warnings if "volume" in o.label]


def test_key_snapshots_are_kept_across_checks_until_a_file_of_their_table_changes(qs: Settings, monkeypatch) -> None:
    """The orders' keys are read once for the orders, deliveries and feedback checks of a run, and
    read again once an orders file is landed, replaced or removed (quality._KeptSnapshots)."""
    lake, _ = land(qs)
    reads: list[str] = []
    make = _KEPT.get

    def counted(lake_, table, query, read):  # the real cache, its reads counted
        return make(lake_, table, query, lambda: (reads.append(table.name), read())[1])

    monkeypatch.setattr(_KEPT, "get", counted)
    monkeypatch.setattr(_KEPT, "_kept", type(_KEPT._kept)())
    q = Quality(lake, qs)
    q.validate_and_record("orders", [(d, c) for d in DATES for c in ("C001", "C002")])
    q.validate_and_record("deliveries", [(DAY, "C001")])
    q.validate_and_record("customer_feedback", [(DAY, "C001")])
    assert reads.count("orders") == 1 and reads.count("deliveries") == 1

    # an orders file replaced: an order of C002 now also lands under C001 (a duplicate elsewhere)
    moved = pq.read_table(lake.data_file("raw", "orders", DAY, "C002")).column("order_id")[0].as_py()
    _rewrite(lake, "orders", DAY, "C001", lambda rows: rows[0].update(order_id=moved))
    [o] = q.validate_and_record("orders", [(DAY, "C001")])
    assert reads.count("orders") == 2 and moved in {v for x in o.failed_errors for v in x.sample}
    # a day removed: its orders are gone from the keys the deliveries' foreign key reads
    gone = pq.read_table(lake.data_file("raw", "orders", "2026-01-07", "C003")).column("order_id").to_pylist()
    lake.delete(lake.data_file("raw", "orders", "2026-01-07", "C003"))
    [d] = q.validate_and_record("deliveries", [("2026-01-07", "C003")])
    orphans = [x for x in d.failed_errors if x.label == "expect_column_values_to_be_null(_orphan_order_id)"]
    assert reads.count("orders") == 3 and orphans and set(orphans[0].sample) <= set(gone)
    # nothing changed since: kept
    q.validate_and_record("customer_feedback", [(DAY, "C002")])
    assert reads.count("orders") == 3


def test_key_snapshots_kept_stay_within_their_memory_budget(qs: Settings, monkeypatch) -> None:
    """Past `MAX_BYTES` the least recently used snapshot goes; one larger than it is not kept."""
    lake, _ = land(qs)
    kept = _KeptSnapshots()
    orders, deliveries = TABLES["orders"], TABLES["deliveries"]
    con = lake.duckdb()
    read = lambda t: con.sql(f"SELECT * FROM read_parquet('{lake.glob_uri('raw', t, True)}')").to_arrow_table()  # noqa: E731
    small, large = read("orders"), read("deliveries")
    monkeypatch.setattr(_KeptSnapshots, "MAX_BYTES", small.nbytes + large.nbytes - 1)
    kept.get(lake, orders, "q1", lambda: small)
    kept.get(lake, deliveries, "q2", lambda: large)
    assert list(kept._kept) == ["q2"]  # both would not fit: the older went
    fresh = _KeptSnapshots()
    monkeypatch.setattr(_KeptSnapshots, "MAX_BYTES", small.nbytes - 1)
    assert fresh.get(lake, orders, "q1", lambda: small) is small  # handed out, not kept
    assert list(fresh._kept) == []
    con.close()
