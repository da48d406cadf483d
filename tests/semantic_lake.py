"""The warehouse the semantic-layer tests ask questions of: the labelled question set's dataset
(tests/questions/labelled.yaml `dataset:`), run once per session through `delivery-lake run`
(landing, gate, curated models, warehouse, delay model and risk scores)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from delivery_lake.config import Settings
from delivery_lake.generator import generate

LABELLED = Path(__file__).resolve().parent / "questions" / "labelled.yaml"


def labelled_dataset() -> dict:
    return yaml.safe_load(LABELLED.read_text())["dataset"]


@pytest.fixture(scope="session")
def semantic_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    import dagster as dg

    import assets.run as orch

    root = tmp_path_factory.mktemp("semantic")
    ds = labelled_dataset()
    generate(
        root / "inbox",
        start=dt.date.fromisoformat(str(ds["start"])),
        days=int(ds["days"]),
        clients=int(ds["clients"]),
        orders_per_day=int(ds["orders_per_day"]),
        seed=int(ds["seed"]),
        dirty_rate=float(ds["dirty_rate"]),
        progress=False,
    )
    settings = Settings.from_env(
        data_dir=root / "data",
        lake_url=str(root / "data" / "lake"),
        inbox_dir=root / "inbox",
        warehouse_path=root / "data" / "warehouse" / "delivery.duckdb",
        mlflow_tracking_uri=f"sqlite:///{root / 'data' / 'mlflow.db'}",
        mlflow_artifacts_dir=root / "data" / "mlflow",
    )
    instance = dg.DagsterInstance.ephemeral()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(orch, "dagster_instance", lambda _settings: instance)
        outcome = orch.run_inbox(settings)
    assert outcome.success, (outcome.failure, outcome.lines)
    return settings
