"""Shared fixtures: settings for a fresh lake on each backend, and generated datasets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from delivery_lake.config import Settings
from delivery_lake.generator import generate
from tests.helpers import START
from tests.s3_server import on_s3, s3_settings, seaweed  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def dirty_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five days x 4 clients with a high dirt rate; read-only for tests (copy before changing)."""
    out = tmp_path_factory.mktemp("export") / "inbox"
    generate(out, start=START, days=5, clients=4, orders_per_day=300, seed=11, dirty_rate=0.03, progress=False)
    return out


@pytest.fixture()
def inbox(tmp_path: Path, dirty_export: Path) -> Path:
    dest = tmp_path / "inbox"
    shutil.copytree(dirty_export, dest)
    return dest


@pytest.fixture()
def local_settings(tmp_path: Path, inbox: Path) -> Settings:
    return Settings.from_env(data_dir=tmp_path / "data", lake_url=str(tmp_path / "lake"), inbox_dir=inbox)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def settings(request: pytest.FixtureRequest, local_settings: Settings, inbox: Path) -> Settings:
    """The same tests on a local folder and on SeaweedFS."""
    if request.param == "local":
        return local_settings
    s3: Settings = request.getfixturevalue("s3_settings")
    return on_s3(s3, s3.data_dir, inbox)


@pytest.fixture()
def run_cli(monkeypatch: pytest.MonkeyPatch):
    """`delivery-lake run` through the Dagster definitions, recorded in an ephemeral instance."""
    import dagster as dg

    import assets.run as orch

    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setattr(orch, "dagster_instance", lambda _settings: instance)

    def run(settings: Settings, full: bool = True) -> orch.RunOutcome:
        return orch.run_inbox(settings, full=full)

    run.instance = instance  # type: ignore[attr-defined]
    return run
