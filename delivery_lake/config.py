"""Settings, read from the environment when asked for (never at import time)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

# Early enough that a history export lands without configuration; a daily partition with no
# data costs Dagster a little (the UI lists it) and the lake nothing.
DEFAULT_PARTITION_START = "2015-01-01"


TRANSFORM_ENGINES = ("duckdb", "spark")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    """Every knob of the project. `Settings.from_env()` is the only reader of the environment.

    Secrets (the AWS keys) are kept out of `repr` so they never reach a log line.
    """

    data_dir: Path
    lake_url: str
    inbox_dir: Path
    warehouse_path: Path
    aws_endpoint_url: str | None = None
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_region: str = "us-east-1"
    # Fraction of a partition's rows that may be quarantined before the quality gate blocks it.
    quarantine_threshold: float = 0.02
    # ...but only once at least this many rows are quarantined (small partitions are noisy).
    quarantine_min_rows: int = 5
    # A child row whose parent fact (a delivery's order) has not landed is held as pending;
    # once the lake holds data this many partition dates past the row's date, it is
    # quarantined as `orphan:<column>` instead.
    orphan_grace_days: int = 3
    duckdb_memory_limit: str = "1GB"
    duckdb_threads: int = 2
    # First date partition of the fact tables (YYYY-MM-DD): rows dated before it cannot land.
    partition_start: str = DEFAULT_PARTITION_START
    # MLflow: tracking store (any MLflow URI; default an embedded SQLite file under data_dir),
    # where new experiments put their artifacts, and the UI base used to link runs.
    mlflow_tracking_uri: str = ""
    mlflow_artifacts_dir: Path | None = None
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    # Question service: Redis for the answer cache (in-process cache when unset), and the bearer
    # token it requires when bound to anything but the loopback interface.
    redis_url: str | None = field(default=None, repr=False)
    service_token: str | None = field(default=None, repr=False)
    # What runs the curated models: DuckDB in process (the default), or Apache Spark, in local
    # mode on `spark_master` or on a cluster through Spark Connect (`spark_remote`, sc://host:port;
    # it may carry a token, so it stays out of repr).
    transform_engine: str = "duckdb"
    spark_master: str = "local[2]"
    spark_remote: str | None = field(default=None, repr=False)
    # Where writers claim a partition before publishing it (delivery_lake.claims). Unset: the
    # lake's _meta/claims/ for a local lake, DATA_DIR/claims for an S3 lake (which then guards
    # the workers of one machine only: several machines need a shared folder with working locks).
    claims_dir: Path | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        # Derived defaults (lake, inbox, warehouse) follow an overridden data_dir.
        data_dir = Path(overrides.pop("data_dir", None) or _env("DATA_DIR", "./data")).resolve()  # type: ignore[arg-type]
        values: dict[str, object] = dict(
            data_dir=data_dir,
            lake_url=_env("LAKE_URL", str(data_dir / "lake")),
            inbox_dir=_env("INBOX_DIR", str(data_dir / "inbox")),
            warehouse_path=_env("WAREHOUSE_PATH", str(data_dir / "warehouse" / "delivery.duckdb")),
            aws_endpoint_url=_env("AWS_ENDPOINT_URL"),
            aws_access_key_id=_env("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_env("AWS_SECRET_ACCESS_KEY"),
            aws_region=_env("AWS_REGION", "us-east-1"),
            quarantine_threshold=float(_env("QUARANTINE_THRESHOLD", "0.02")),  # type: ignore[arg-type]
            quarantine_min_rows=int(_env("QUARANTINE_MIN_ROWS", "5")),  # type: ignore[arg-type]
            orphan_grace_days=int(_env("ORPHAN_GRACE_DAYS", "3")),  # type: ignore[arg-type]
            duckdb_memory_limit=_env("DUCKDB_MEMORY_LIMIT", "1GB"),
            duckdb_threads=int(_env("DUCKDB_THREADS", "2")),  # type: ignore[arg-type]
            partition_start=_env("PARTITION_START", DEFAULT_PARTITION_START),
            mlflow_tracking_uri=_env("MLFLOW_TRACKING_URI", f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"),
            mlflow_artifacts_dir=_env("MLFLOW_ARTIFACTS_DIR", str(data_dir / "mlflow" / "artifacts")),
            mlflow_ui_url=_env("MLFLOW_UI_URL", "http://127.0.0.1:5000"),
            redis_url=_env("REDIS_URL"),
            service_token=_env("DELIVERY_LAKE_SERVICE_TOKEN"),
            transform_engine=_env("TRANSFORM_ENGINE", "duckdb"),
            spark_master=_env("SPARK_MASTER", "local[2]"),
            spark_remote=_env("SPARK_REMOTE"),
            claims_dir=_env("CLAIMS_DIR"),
        )
        values.update(overrides)
        # Every path absolute, read or passed in: the inbox index and the manifests key files by
        # path, so `inbox` and `/abs/inbox` must be one and the same.
        for name in ("inbox_dir", "warehouse_path", "mlflow_artifacts_dir", "claims_dir"):
            if values[name] is not None:
                values[name] = Path(values[name]).resolve()  # type: ignore[arg-type]
        values["transform_engine"] = str(values["transform_engine"]).lower()
        if values["transform_engine"] not in TRANSFORM_ENGINES:
            raise ValueError(
                f"TRANSFORM_ENGINE={values['transform_engine']!r}: expected one of {', '.join(TRANSFORM_ENGINES)}"
            )
        try:
            values["partition_start"] = date.fromisoformat(str(values["partition_start"])).isoformat()
        except ValueError:
            raise ValueError(f"PARTITION_START={values['partition_start']!r} is not a date (YYYY-MM-DD)") from None
        return cls(**values)  # type: ignore[arg-type]


def partition_start() -> str:
    """PARTITION_START as the partition definitions need it when they load (see assets/partitions.py)."""
    return Settings.from_env().partition_start


def cache_dir() -> Path:
    """Where parsed model projects are cached (DELIVERY_LAKE_CACHE_DIR, default ~/.cache/delivery_lake):
    read where the cache is used, which is before any Settings exist (a project loads on import of
    the Dagster definitions)."""
    return Path(_env("DELIVERY_LAKE_CACHE_DIR") or Path.home() / ".cache" / "delivery_lake")
