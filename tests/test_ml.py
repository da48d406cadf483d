"""The delay model end to end on generated data, with a real MLflow (SQLite store in tmp_path):
features without leakage, a logged run with metrics/signature/plots, the champion beating the
naive baselines, promotion only when better, gate exclusion, the retrain sensor, scoring."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import polars as pl
import pyarrow.parquet as pq
import pytest

from delivery_lake import gate
from delivery_lake.config import Settings
from delivery_lake.generator import generate
from delivery_lake.ml import features, registry, scoring, training
from delivery_lake.publish import PublishError, publish_partition
from delivery_lake.storage import Lake, Mirror
from delivery_lake.transform import Project, Runner
from delivery_lake.warehouse import Warehouse, external_models
from tests.helpers import land_all

# End-to-end: real landings, Dagster runs and MLflow; not in the fast tier (`make test-fast`).
pytestmark = pytest.mark.slow

START = date(2026, 1, 5)
DAYS = [(START + timedelta(days=i)).isoformat() for i in range(10)]


@dataclass
class Env:
    settings: Settings
    lake: Lake


def _env(root: Path, lake_dir: Path, inbox: Path) -> Env:
    settings = Settings.from_env(
        data_dir=root / "data",
        lake_url=str(lake_dir),
        inbox_dir=inbox,
        warehouse_path=root / "data" / "warehouse.duckdb",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "mlartifacts",
    )
    return Env(settings, Lake.from_settings(settings))


@pytest.fixture(scope="module")
def curated_lake(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """10 days x 4 clients x 400 orders/day, landed and curated (read-only: tests copy it)."""
    root = tmp_path_factory.mktemp("ml_base")
    generate(
        root / "inbox", start=START, days=10, clients=4, orders_per_day=400, seed=11, dirty_rate=0.001, progress=False
    )
    env = _env(root, root / "lake", root / "inbox")
    land_all(env.settings)
    results = Runner(env.lake, Project.load(), env.settings).build(full_refresh=True)
    assert not [r for r in results if r.skipped]
    features.build_features(env.lake, env.settings, DAYS)
    return env


def copy_env(base: Env, root: Path) -> Env:
    shutil.copytree(base.settings.lake_url, root / "lake")
    return _env(root, root / "lake", base.settings.inbox_dir)


@pytest.fixture(scope="module")
def trained(curated_lake: Env, tmp_path_factory: pytest.TempPathFactory) -> tuple[Env, training.TrainingResult]:
    env = copy_env(curated_lake, tmp_path_factory.mktemp("ml_trained"))
    plan = registry.plan_training(env.lake, env.settings)
    assert plan.should_train and "no champion yet" in plan.reason
    result = training.train(
        env.lake, env.settings, plan, tags={"dagster.run_id": "test-run", "dagster.asset_key": "ml/delay_model"}
    )
    return env, result


# ---- features --------------------------------------------------------------------------------------


def test_features_are_known_at_dispatch(curated_lake: Env) -> None:
    lake = curated_lake.lake
    assert features.feature_dates(lake) == DAYS
    f = features.read_features(lake, DAYS)
    assert set(features.FEATURES) | {features.LABEL} <= set(f.columns)
    fct = pl.read_parquet(f"{lake.root}/curated/fct_deliveries/**/*.parquet", hive_partitioning=False)
    assert f.height == fct.height and f["delivery_id"].n_unique() == f.height
    assert f[features.LABEL].null_count() == fct["is_on_time"].null_count()
    # The first day has no previous days: no driver history, whatever happened that day.
    first = f.filter(pl.col("date") == START)
    assert (
        first["driver_recent_deliveries"].max() == 0
        and first["driver_recent_on_time_rate"].null_count() == first.height
    )
    # History only counts verdicts known before the day starts: never more than the previous days hold.
    day5 = f.filter(pl.col("date") == START + timedelta(days=4))
    prior = (
        fct.filter((pl.col("date") < START + timedelta(days=4)) & (pl.col("date") >= START)).group_by("driver_id").len()
    )
    joined = day5.join(prior, on="driver_id", how="left").with_columns(pl.col("len").fill_null(0))
    assert (joined["driver_recent_deliveries"] <= joined["len"]).all()
    assert f.select(pl.col("hours_to_promise").min()).item() > 0  # promise after dispatch
    assert 0.3 < f["depot_load"].mean() < 2.0  # type: ignore[operator]


def _feature_files(lake: Lake) -> dict[str, bytes]:
    return {
        d: Path(lake.data_file(features.ZONE, features.TABLE, d)).read_bytes() for d in features.feature_dates(lake)
    }


def test_features_read_only_the_curated_layer(curated_lake: Env, tmp_path: Path) -> None:
    """With the raw zone (and the gate's verdicts) gone after the curated build, the features
    come out byte for byte the same: nothing of raw is read, no gate filter is repeated."""
    env = copy_env(curated_lake, tmp_path)
    lake = env.lake
    before = _feature_files(lake)
    assert sorted(before) == DAYS
    lake.delete(lake.table_dir(features.ZONE, features.TABLE), recursive=True)
    lake.delete(lake.path("raw"), recursive=True)
    lake.delete(lake.meta_path("quality"), recursive=True)
    assert not lake.list_partitions("raw", "deliveries") and not lake.list_partitions("raw", "orders")
    rows = features.build_features(lake, env.settings, DAYS)
    assert sum(rows.values()) == sum(
        pl.read_parquet(f).height for f in map(Path, (lake.data_file("curated", features.SOURCE, d) for d in DAYS))
    )
    assert _feature_files(lake) == before
    # And what the query names is exactly the declared inputs (assets/ml.py builds its deps from them).
    # (a local lake: the mirror reads the files in place)
    sql = features.features_sql(lake, [DAYS[-1]], Mirror(lake, tmp_path)) or ""
    read = {lake.uri(lake.data_file("curated", features.SOURCE, d)) for d in DAYS[-1 - features.HISTORY_DAYS :]}
    read |= {
        lake.uri(lake.data_file("curated", n)) for n, lookback in features.CURATED_INPUTS.items() if lookback is None
    }
    assert all(f"'{f}'" in sql for f in read) and sql.count("read_parquet(") == 1 + len(features.DIMENSIONS)
    assert "/raw/" not in sql and features.source_dates(lake, [DAYS[-1]]) == DAYS[-1 - features.HISTORY_DAYS :]


def test_features_of_many_dates_are_the_files_each_date_gets_alone(
    curated_lake: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dates built together are staged by one COPY partitioned by date (`publish.stage_dates`):
    each date's file holds what its own build writes, row for row in the same order, one row
    group; a date over the one-row-group limit gets its own COPY. (Not byte for byte: DuckDB
    marks a column REQUIRED when its plan rules NULL out, and a one-date build plans differently.)"""
    env = copy_env(curated_lake, tmp_path)
    lake = env.lake
    counts = {d: pq.read_metadata(lake.data_file(features.ZONE, features.TABLE, d)).num_rows for d in DAYS}
    limit = max(counts.values()) - 1  # the biggest date is over it
    monkeypatch.setattr(features, "ONE_ROW_GROUP", limit)
    staged: list[set[str]] = []
    stage = features.stage_dates

    def spied(*args):  # the real staging, its dates recorded
        out = stage(*args)
        staged.append(set(out))
        return out

    monkeypatch.setattr(features, "stage_dates", spied)
    lake.delete(lake.table_dir(features.ZONE, features.TABLE), recursive=True)
    rows = features.build_features(lake, env.settings, DAYS)
    together = {d: pl.read_parquet(lake.data_file(features.ZONE, features.TABLE, d)) for d in DAYS}
    assert {pq.read_metadata(lake.data_file(features.ZONE, features.TABLE, d)).num_row_groups for d in DAYS} == {1}
    assert rows == counts and sorted(together) == DAYS
    assert staged[0] == {d for d in DAYS if counts[d] <= limit} and 2 <= len(staged[0]) < len(DAYS)
    for d in DAYS:
        lake.delete(lake.data_file(features.ZONE, features.TABLE, d))
        assert features.build_features(lake, env.settings, [d]) == {d: counts[d]}
        alone = pl.read_parquet(lake.data_file(features.ZONE, features.TABLE, d))
        assert alone.height == counts[d] and alone.equals(together[d]), d
    assert staged[1:] == [set()] * len(DAYS)  # a date alone is never staged together


def test_features_match_an_independent_computation(curated_lake: Env) -> None:
    """A few rows recomputed in Polars from the curated tables, one feature at a time."""
    lake = curated_lake.lake
    day = DAYS[8]
    enriched = pl.read_parquet(f"{lake.root}/curated/{features.SOURCE}/**/*.parquet", hive_partitioning=False)
    dims = {n: pl.read_parquet(lake.data_file("curated", n)) for n in features.DIMENSIONS}
    got = features.read_features(lake, [day])
    today = enriched.filter(pl.col("date") == date.fromisoformat(day))
    assert got.height == today.height and set(got["delivery_id"]) == set(today["delivery_id"])
    # Drivers with history and at least one late verdict, and a delivery without a depot if any.
    sample = got.filter(pl.col("driver_recent_deliveries") > 0).sort("delivery_id").head(5)["delivery_id"].to_list()
    sample += got.filter(pl.col("depot_load").is_null()).head(1)["delivery_id"].to_list()
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)  # the lake's sessions run in UTC
    for delivery_id in sample:
        t = today.row(by_predicate=pl.col("delivery_id") == delivery_id, named=True)
        f = got.row(by_predicate=pl.col("delivery_id") == delivery_id, named=True)
        client = dims["dim_clients"].row(by_predicate=pl.col("client_id") == t["client_id"], named=True)
        driver = dims["dim_drivers"].row(by_predicate=pl.col("driver_id") == t["driver_id"], named=True)
        vehicle = dims["dim_vehicles"].row(by_predicate=pl.col("vehicle_id") == t["vehicle_id"], named=True)
        history = enriched.filter(
            (pl.col("driver_id") == t["driver_id"])
            & pl.col("date").is_between(
                t["date"] - timedelta(days=features.HISTORY_DAYS), t["date"] - timedelta(days=1)
            )
            & pl.col("is_on_time").is_not_null()
            # the verdict is known: delivered on time before the day, or the promise passed before it
            & (
                pl.min_horizontal(pl.col("delivered_at").fill_null(pl.col("promised_by")), pl.col("promised_by"))
                < start
            )
        )
        if t["depot_id"] is None:
            load = None
        else:
            depot = dims["dim_depots"].row(by_predicate=pl.col("depot_id") == t["depot_id"], named=True)
            load = today.filter(pl.col("depot_id") == t["depot_id"])["parcels"].sum() / depot["daily_capacity_parcels"]
        expected = {
            "priority": t["priority"] or "unknown",
            "client_tier": client["tier"],
            "vehicle_type": vehicle["vehicle_type"],
            "distance_km": t["distance_km"],
            "weight_kg": t["weight_kg"],
            "parcels": float(t["parcels"]),
            "sla_hours": float(client["sla_hours"]),
            "hours_to_promise": (t["promised_by"] - t["dispatched_at"]).total_seconds() / 3600,
            "dispatch_hour": float(t["dispatched_at"].hour),
            "dispatch_weekday": float(t["dispatched_at"].weekday()),
            "depot_load": load,
            "driver_tenure_days": float((t["date"] - driver["hired_on"]).days),
            "driver_recent_deliveries": float(history.height),
            "driver_recent_on_time_rate": history["is_on_time"].cast(pl.Float64).mean() if history.height else None,
            features.LABEL: not t["is_on_time"],
        }
        for k, v in expected.items():
            assert f[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v), (delivery_id, k, f[k], v)
    assert len(sample) >= 5


# ---- training, MLflow logging, baseline ----------------------------------------------------------


def test_run_is_logged_with_metrics_signature_and_plots(trained: tuple[Env, training.TrainingResult]) -> None:
    env, result = trained
    client = registry.client(env.settings)
    run = client.get_run(result.run_id)
    for k in (
        "roc_auc",
        "log_loss",
        "brier",
        "baseline_rate_roc_auc",
        "baseline_rate_log_loss",
        "baseline_rate_brier",
        "baseline_priority_roc_auc",
        "baseline_priority_log_loss",
        "baseline_priority_brier",
    ):
        assert k in run.data.metrics, k
    tags = run.data.tags
    assert tags["dagster.run_id"] == "test-run" and tags["dagster.asset_key"] == "ml/delay_model"
    assert tags["delivery_lake.train_range"] == f"{DAYS[0]}..{DAYS[6]}"
    assert tags["delivery_lake.eval_range"] == f"{DAYS[7]}..{DAYS[9]}"
    assert registry.decode_dates(tags[registry.TAG_PARTITIONS]) == set(DAYS)
    assert tags[registry.TAG_DECISION] == "promoted"
    assert run.data.params["n_train"] and run.data.params["eval_days"] == "3"
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {"plots/roc.png", "plots/calibration.png", "plots/feature_importance.png"}
    info = mlflow.models.get_model_info(f"models:/{registry.MODEL_NAME}/{result.version}")
    assert info.signature is not None and set(info.signature.inputs.input_names()) == set(features.FEATURES)
    assert info.saved_input_example_info is not None
    assert str(client.get_model_version_by_alias(registry.MODEL_NAME, "champion").version) == result.version
    assert str(client.get_model_version_by_alias(registry.MODEL_NAME, "challenger").version) == result.version
    assert result.run_url == f"http://127.0.0.1:5000/#/experiments/{result.experiment_id}/runs/{result.run_id}"


def test_champion_beats_naive_baselines(trained: tuple[Env, training.TrainingResult]) -> None:
    m = trained[1].metrics
    # The generator's lateness is a logistic model of these features: a clear margin is expected.
    assert m["roc_auc"] >= 0.68
    assert m["roc_auc"] >= m["baseline_priority_roc_auc"] + 0.08
    assert m["baseline_rate_roc_auc"] == pytest.approx(0.5)
    assert m["log_loss"] < m["baseline_rate_log_loss"] - 0.02
    assert m["brier"] < m["baseline_rate_brier"]


def test_worse_challenger_is_not_promoted(trained: tuple[Env, training.TrainingResult]) -> None:
    from sklearn.dummy import DummyClassifier

    env, first = trained
    plan = registry.plan_training(env.lake, env.settings)
    assert not plan.should_train and "no new validated data" in plan.reason
    forced = registry.plan_training(env.lake, env.settings, force=True)
    weak = training.train(env.lake, env.settings, forced, estimator=DummyClassifier(strategy="prior"))
    assert not weak.promoted and weak.champion_score == pytest.approx(first.metrics["roc_auc"])
    client = registry.client(env.settings)
    assert str(client.get_model_version_by_alias(registry.MODEL_NAME, "champion").version) == first.version
    assert str(client.get_model_version_by_alias(registry.MODEL_NAME, "challenger").version) == weak.version
    tags = client.get_run(weak.run_id).data.tags
    assert tags[registry.TAG_DECISION] == "kept"
    assert float(tags["delivery_lake.champion_roc_auc_same_window"]) == pytest.approx(
        first.metrics["roc_auc"], abs=1e-5
    )


@pytest.mark.parametrize(
    ("challenger", "champion_version", "champion", "promoted"),
    [
        (0.74, None, None, True),  # first model, beats the baseline
        (0.552, None, None, False),  # first model within the margin of the baseline: nothing serves
        (0.75, "1", 0.74, True),  # better by the margin
        (0.743, "1", 0.74, False),  # better, but within the margin: noise
        (0.70, "1", 0.74, False),  # worse
        (0.74, "1", None, True),  # champion cannot score the current features
    ],
)
def test_promotion_rule(
    challenger: float, champion_version: str | None, champion: float | None, promoted: bool
) -> None:
    assert training.decide(challenger, 0.55, champion_version, champion, "n/a", "w")[0] is promoted


def test_scoring_uses_the_champion(trained: tuple[Env, training.TrainingResult]) -> None:
    env, first = trained
    champion = str(registry.client(env.settings).get_model_version_by_alias(registry.MODEL_NAME, "champion").version)
    result = scoring.score(env.lake, env.settings)
    assert result.skipped is None and result.date == DAYS[-1] and result.model_version == champion == first.version
    out = pl.read_parquet(env.lake.data_file("curated", scoring.TABLE, DAYS[-1]))
    assert out.height == result.rows == features.read_features(env.lake, [DAYS[-1]]).height
    assert out["model_version"].unique().to_list() == [champion]
    assert out["late_probability"].is_between(0, 1).all()
    # Scoring leaves the warehouse alone: its asset (which depends on ml/fct_delivery_risk) loads them.
    assert not env.settings.warehouse_path.exists()
    report = Warehouse(env.lake, Project.load(), env.settings.warehouse_path).refresh()
    assert {t.table: t.rows for t in report.tables}[scoring.TABLE] == result.rows
    con = duckdb.connect(str(env.settings.warehouse_path), read_only=True)
    try:
        n, versions = con.execute(
            f"SELECT count(*), string_agg(DISTINCT model_version, ',') FROM {scoring.TABLE}"
        ).fetchone()  # type: ignore[misc]
        assert n == result.rows and versions == champion
        assert con.execute("SELECT count(*) FROM fct_deliveries").fetchone()[0] > 0  # type: ignore[index]
    finally:
        con.close()


def test_scores_are_published_like_a_curated_partition(trained: tuple[Env, training.TrainingResult]) -> None:
    """Same publisher as the runner: sorted by the grain, every column OPTIONAL, sha256 and a
    manifest with the runner's fields."""
    env, _ = trained
    lake = env.lake
    scoring.score(lake, env.settings, day=DAYS[-2])
    path = lake.data_file("curated", scoring.TABLE, DAYS[-2])
    manifest = lake.read_json(lake.build_manifest("curated", scoring.TABLE, DAYS[-2]))
    runner_manifest = lake.read_json(lake.build_manifest("curated", "fct_deliveries", DAYS[-2]))
    assert set(manifest) == set(runner_manifest)
    assert manifest["sha256"] == lake.sha256(path) and manifest["bytes"] == Path(path).stat().st_size
    assert manifest["columns"] == [[n, t] for n, t, _ in scoring.COLUMNS] and manifest["date"] == DAYS[-2]
    out = pl.read_parquet(path)
    assert manifest["rows"] == out.height and out["delivery_id"].is_sorted()
    schema = pq.read_schema(path)
    assert all(schema.field(i).nullable for i in range(len(schema)))
    assert [c.name for c in external_models(lake)] == [scoring.TABLE]


def test_publisher_reproduces_the_runner(curated_lake: Env, tmp_path: Path) -> None:
    """`publish_partition` keeps the runner's contract: republishing a built partition's rows
    gives the same bytes and a manifest with the same fields."""
    lake = curated_lake.lake
    target = _env(tmp_path, tmp_path / "lake", curated_lake.settings.inbox_dir).lake
    project = Project.load()
    for name, d in (("int_deliveries_enriched", DAYS[3]), ("agg_depot_daily_load", DAYS[4]), ("dim_drivers", None)):
        m = project[name]
        con = lake.duckdb()
        try:
            # shuffled, so the order comes from the publisher
            con.execute(
                f"CREATE TEMP TABLE __out AS SELECT * FROM read_parquet('{lake.data_file('curated', name, d)}') "
                "ORDER BY random()"
            )
            doc = publish_partition(
                target, con, "curated", name, d, [(c.name, c.type) for c in m.columns], m.grain_columns, target.settings
            )
            with pytest.raises(PublishError):
                publish_partition(
                    target, con, "curated", name, d, [(c.name, c.type) for c in m.columns[:-1]], [], target.settings
                )
        finally:
            con.close()
        built = lake.read_json(lake.build_manifest("curated", name, d))
        assert doc == target.read_json(target.build_manifest("curated", name, d))
        assert set(doc) == set(built) and doc["sha256"] == built["sha256"] and doc["rows"] == built["rows"], name


# ---- the gate and the retrain sensor, through Dagster -------------------------------------------------


def _block_client(lake: Lake, d: str, client: str) -> None:
    gate.record(lake, "deliveries", False, {"failed": ["test"]}, d, client)


def _block_mart(lake: Lake, d: str) -> None:
    gate.record(lake, "fct_deliveries", False, {"failed": ["test"]}, d)


def test_gate_exclusions(curated_lake: Env, tmp_path: Path) -> None:
    env = copy_env(curated_lake, tmp_path)
    _block_client(env.lake, DAYS[1], "C001")
    _block_mart(env.lake, DAYS[4])
    for c in ("C001", "C002", "C003", "C004"):
        _block_client(env.lake, DAYS[6], c)
    whole, partial = features.gate_exclusions(env.lake, DAYS)
    assert set(whole) == {DAYS[4], DAYS[6]} and partial == {DAYS[1]: ["C001"]}
    kept = features.drop_blocked_clients(features.read_features(env.lake, [DAYS[1]]), partial)
    assert kept.height > 0 and "C001" not in kept["client_id"].to_list()


def test_gate_exclusion_and_retrain_sensor(curated_lake: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from assets.curated import WAREHOUSE_KEY
    from assets.definitions import defs
    from assets.ml import FEATURES_KEY, MODEL_KEY, RISK_KEY, retrain_sensor
    from assets.resources import LakehouseResource

    env = copy_env(curated_lake, tmp_path)
    lake, s = env.lake, env.settings
    # Only the first 8 days have features so far; one client's deliveries of day 3 and the
    # fct_deliveries mart of day 4 failed a blocking check.
    for d in DAYS[8:]:
        lake.delete(lake.partition_dir(features.ZONE, features.TABLE, d), recursive=True)
    _block_client(lake, DAYS[2], "C001")
    _block_mart(lake, DAYS[3])
    resource = LakehouseResource(
        data_dir=str(s.data_dir), lake_url=s.lake_url, inbox_dir=str(s.inbox_dir), warehouse_path=str(s.warehouse_path)
    )

    instance = dg.DagsterInstance.ephemeral()

    def tick() -> dg.SensorResult:
        with dg.build_sensor_context(instance=instance, resources={"lakehouse": resource}) as ctx:
            return retrain_sensor(ctx)

    def skip_reason() -> str:
        result = tick()
        assert not result.run_requests
        return result.skip_reason.skip_message if result.skip_reason else ""

    # The resource builds its Settings from the environment, as in production.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", s.mlflow_tracking_uri)
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DIR", str(s.mlflow_artifacts_dir))
    # A refresh run created after a landing trains after the features it builds: the sensor waits.
    pending = instance.add_run(
        dg.DagsterRun(
            job_name="refresh_after_landing",
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={"delivery_lake/trigger": "refresh"},
        )
    )
    assert skip_reason() == f"refresh run {pending.run_id[:8]} is queued or running: it retrains"
    instance.report_run_canceled(pending)
    first = tick()
    assert (
        len(first.run_requests or []) == 1
        and "no champion yet" in first.run_requests[0].tags["delivery_lake/retrain_reason"]
    )
    # The scores reach the warehouse through its asset, which runs after them.
    run = dg.materialize(
        [
            a
            for a in defs.assets
            if isinstance(a, dg.AssetsDefinition) and a.key in (MODEL_KEY, RISK_KEY, FEATURES_KEY, WAREHOUSE_KEY)
        ],
        selection=[MODEL_KEY, RISK_KEY, WAREHOUSE_KEY],
        instance=instance,
        resources={"lakehouse": resource},
    )
    assert run.success
    steps = [e.asset_key for e in run.get_asset_materialization_events()]
    assert steps.index(WAREHOUSE_KEY) > steps.index(RISK_KEY)
    loaded = instance.get_latest_materialization_event(WAREHOUSE_KEY).asset_materialization.metadata["rows"].value  # type: ignore[union-attr]
    assert (
        loaded[scoring.TABLE]
        == instance.get_latest_materialization_event(RISK_KEY).asset_materialization.metadata["dagster/row_count"].value
    )  # type: ignore[union-attr]
    meta = instance.get_latest_materialization_event(MODEL_KEY).asset_materialization.metadata  # type: ignore[union-attr]
    assert meta["promoted"].value is True and list(meta["partitions_excluded"].value) == [DAYS[3]]
    assert meta["client_partitions_excluded"].value == {DAYS[2]: ["C001"]}
    assert meta["mlflow_run"].value.endswith(f"/runs/{meta['mlflow_run_id'].value}")
    run_data = registry.client(s).get_run(meta["mlflow_run_id"].value).data
    assert registry.decode_dates(run_data.tags[registry.TAG_PARTITIONS]) == set(DAYS[:8]) - {DAYS[3]}
    assert DAYS[3] in run_data.tags[registry.TAG_EXCLUDED] and "C001" in run_data.tags[registry.TAG_EXCLUDED_CLIENTS]
    # The training rows: the usable train dates, labelled, without the blocked client's day.
    train_dates = [d for d in DAYS[:8] if d != DAYS[3]][:-3]
    rows = training.labelled(features.read_features(lake, train_dates))
    blocked_rows = rows.filter((pl.col("date") == date.fromisoformat(DAYS[2])) & (pl.col("client_id") == "C001")).height
    assert blocked_rows > 0 and int(run_data.params["n_train"]) == rows.height - blocked_rows
    risk = instance.get_latest_materialization_event(RISK_KEY).asset_materialization.metadata  # type: ignore[union-attr]
    assert risk["date"].value == DAYS[7] and risk["model_version"].value == meta["model_version"].value

    # Nothing new: no retrain, and the tick says why.
    assert "no new validated data" in skip_reason()
    # A new day lands and passes its checks: retrain requested.
    features.build_features(lake, s, [DAYS[8]])
    req = tick().run_requests or []
    assert len(req) == 1 and DAYS[8] in req[0].tags["delivery_lake/retrain_reason"]
    # ... but if the new day failed a blocking check: no retrain, and why.
    _block_mart(lake, DAYS[8])
    skip = skip_reason()
    assert "all 1 new partition(s)" in skip and "failed their checks" in skip and DAYS[8] in skip
    # The training asset agrees: it observes the reason instead of training.
    run = dg.materialize(
        [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.key in (MODEL_KEY, FEATURES_KEY)],
        selection=[MODEL_KEY],
        instance=instance,
        resources={"lakehouse": resource},
    )
    assert run.success and not run.get_asset_materialization_events()
    obs = [e for e in run.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert obs and "failed their checks" in obs[0].event_specific_data.asset_observation.metadata["skipped"].value  # type: ignore[union-attr]


def test_ml_definitions() -> None:
    from assets.curated import WAREHOUSE_KEY
    from assets.definitions import defs
    from assets.ml import FEATURES_KEY, MODEL_KEY, RISK_KEY
    from assets.partitions import DAILY_PARTITIONS

    graph = defs.resolve_asset_graph()
    assert {k for k in graph.get_all_asset_keys() if k.path[0] == "ml"} == {FEATURES_KEY, MODEL_KEY, RISK_KEY}
    assert graph.get(FEATURES_KEY).partitions_def == DAILY_PARTITIONS and graph.get(FEATURES_KEY).group_name == "ml"
    # The features' lineage is what they read: curated tables only, with their partition windows.
    parents = graph.get(FEATURES_KEY).parent_keys
    assert parents == {
        dg.AssetKey(["curated", n])
        for n in ("int_deliveries_enriched", "dim_clients", "dim_drivers", "dim_depots", "dim_vehicles")
    }
    enriched = graph.get_partition_mapping(FEATURES_KEY, dg.AssetKey(["curated", "int_deliveries_enriched"]))
    assert isinstance(enriched, dg.TimeWindowPartitionMapping) and (enriched.start_offset, enriched.end_offset) == (
        -features.HISTORY_DAYS,
        0,
    )
    assert graph.get(dg.AssetKey(["curated", "int_deliveries_enriched"])).partitions_def == DAILY_PARTITIONS
    # One loader of the scores: the warehouse asset depends on them.
    assert RISK_KEY in graph.get(WAREHOUSE_KEY).parent_keys and graph.get(RISK_KEY).parent_keys == {
        MODEL_KEY,
        FEATURES_KEY,
    }
    assert graph.get(MODEL_KEY).parent_keys == {FEATURES_KEY}
    # The retrain sensor targets the model and the scores, nothing upstream of them.
    retrain = defs.resolve_sensor_def("retrain_sensor")
    assert set(defs.resolve_job_def(retrain.job_name).asset_layer.selected_asset_keys) == {MODEL_KEY, RISK_KEY}


def test_settings_mlflow_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ARTIFACTS_DIR", raising=False)
    s = Settings.from_env(data_dir=tmp_path)
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert s.mlflow_artifacts_dir == tmp_path.resolve() / "mlflow" / "artifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert Settings.from_env(data_dir=tmp_path).mlflow_tracking_uri == "http://mlflow:5000"


def test_encode_decode_dates() -> None:
    dates = ["2026-01-05", "2026-01-06", "2026-01-07", "2026-01-09", "2026-02-01", "2026-02-02"]
    assert registry.encode_dates(dates) == "2026-01-05..2026-01-07,2026-01-09,2026-02-01..2026-02-02"
    assert registry.decode_dates(registry.encode_dates(dates)) == set(dates)
    assert registry.decode_dates("") == set()
