"""MLflow wiring and the champion/challenger bookkeeping, plus the training plan.

Store: `Settings.mlflow_tracking_uri` (MLFLOW_TRACKING_URI; default an embedded SQLite
file in the data dir). The experiment is created with its artifact location in
`Settings.mlflow_artifacts_dir`, so runs never scatter `./mlruns` folders in the CWD.

Registry: model `delivery_delay`. Every training registers a version and moves the alias
`challenger` to it; `champion` moves only when the challenger beats it (see
`training.PROMOTION_MARGIN`). Each run records the feature partitions it used in the tag
`delivery_lake.partitions_used` (compact date ranges), which is what "new data since the
champion" is measured against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from delivery_lake.config import Settings
from delivery_lake.ml import features
from delivery_lake.storage import Lake

EXPERIMENT = "delivery-delay"
MODEL_NAME = "delivery_delay"
CHAMPION = "champion"
CHALLENGER = "challenger"
# Below this many validated days there is no honest time split (train days + evaluation window).
MIN_TRAIN_DAYS = 3
EVAL_DAYS = 3

TAG_PARTITIONS = "delivery_lake.partitions_used"
TAG_EXCLUDED = "delivery_lake.partitions_excluded"
TAG_EXCLUDED_CLIENTS = "delivery_lake.client_partitions_excluded"
TAG_DECISION = "delivery_lake.promotion"


def client(settings: Settings) -> Any:
    """An MlflowClient on the configured store; also points the fluent API (start_run) at it."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    # The registry too: MLflow resolves it from a process-wide setting before the tracking URI, so a
    # registry set once in a process (another store, another test) would answer for this one.
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        from pathlib import Path

        Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def store_exists(settings: Settings) -> bool:
    """False when the embedded SQLite store was never created (nothing trained yet); a
    remote store is assumed to exist."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        from pathlib import Path

        return Path(uri.removeprefix("sqlite:///")).exists()
    return True


def experiment_id(settings: Settings, mlflow_client: Any) -> str:
    exp = mlflow_client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    # A tracking server owns its artifact store (`mlflow server --artifacts-destination`,
    # S3 in the production profile); a local folder is only for the embedded store.
    if settings.mlflow_artifacts_dir is not None and not settings.mlflow_tracking_uri.startswith(
        ("http://", "https://")
    ):
        settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
        location = settings.mlflow_artifacts_dir.as_uri()
    return str(mlflow_client.create_experiment(EXPERIMENT, artifact_location=location))


def run_url(settings: Settings, exp_id: str, run_id: str) -> str:
    return f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}"


def model_url(settings: Settings, version: str | int) -> str:
    return f"{settings.mlflow_ui_url.rstrip('/')}/#/models/{MODEL_NAME}/versions/{version}"


def load_model(uri: str) -> Any:
    """Load a registered scikit-learn pipeline from our own registry.

    MLflow refuses to deserialize any model unless MLFLOW_ALLOW_PICKLE_DESERIALIZATION is
    true, because a model file can run code. The models loaded here were written by this
    pipeline's training into the store it is configured with, so the flag is raised for the
    duration of this one load only (and an explicit "false" from the operator is respected).
    """
    import os

    import mlflow.sklearn

    name = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    before = os.environ.get(name)
    if before is not None and before.lower() == "false":
        return mlflow.sklearn.load_model(uri)
    os.environ[name] = "true"
    try:
        return mlflow.sklearn.load_model(uri)
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def version_by_alias(mlflow_client: Any, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(MODEL_NAME, alias)
    except MlflowException:  # no such model or alias yet
        return None


# ---- date sets <-> compact tags ------------------------------------------------------------


def encode_dates(dates: list[str]) -> str:
    """'2026-01-05..2026-01-09,2026-01-12': consecutive runs collapse, so a year fits a tag."""
    out: list[list[str]] = []
    for d in sorted(set(dates)):
        if out and date.fromisoformat(d) - date.fromisoformat(out[-1][1]) == timedelta(days=1):
            out[-1][1] = d
        else:
            out.append([d, d])
    return ",".join(a if a == b else f"{a}..{b}" for a, b in out)


def decode_dates(text: str | None) -> set[str]:
    out: set[str] = set()
    for part in filter(None, (text or "").split(",")):
        a, _, b = part.partition("..")
        d0, d1 = date.fromisoformat(a), date.fromisoformat(b or a)
        out.update((d0 + timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1))
    return out


# ---- what should be trained on, and whether to train at all ------------------------------------


@dataclass
class TrainingPlan:
    available: list[str]  # feature partitions in the lake
    excluded: dict[str, list[str]]  # blocked date -> reasons
    usable: list[str]  # available and not blocked
    excluded_clients: dict[str, list[str]] = field(
        default_factory=dict
    )  # usable date -> clients whose rows are dropped
    champion_version: str | None = None
    champion_run_id: str | None = None
    champion_dates: set[str] = field(default_factory=set)
    champion_excluded: set[str] = field(default_factory=set)
    new_usable: list[str] = field(default_factory=list)
    new_blocked: list[str] = field(default_factory=list)
    should_train: bool = False
    reason: str = ""

    @property
    def train_dates(self) -> list[str]:
        return self.usable[:-EVAL_DAYS]

    @property
    def eval_dates(self) -> list[str]:
        return self.usable[-EVAL_DAYS:]

    def as_metadata(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "usable": encode_dates(self.usable),
            "excluded": self.excluded,
            "excluded_client_partitions": self.excluded_clients,
            "new_usable": self.new_usable,
            "new_blocked": self.new_blocked,
            "champion_version": self.champion_version,
        }


def _describe_excluded(excluded: dict[str, list[str]], dates: list[str]) -> str:
    return "; ".join(f"{d}: {', '.join(excluded[d])}" for d in dates)


def plan_training(lake: Lake, settings: Settings, force: bool = False) -> TrainingPlan:
    """Compare the validated feature partitions with the champion's data (and the last attempt).

    Train when validated partitions exist that the champion did not use. Do not when there
    are none ("no new validated data"), when every new partition failed its checks, or when
    the latest training run already used exactly this data (its challenger lost; retrying
    the same data cannot change the verdict)."""
    available = features.feature_dates(lake)
    excluded, partial = features.gate_exclusions(lake, available)
    usable = [d for d in available if d not in excluded]
    plan = TrainingPlan(available, excluded, usable, partial)
    enough = len(usable) >= MIN_TRAIN_DAYS + EVAL_DAYS
    if not enough:
        plan.reason = (
            f"not enough validated data: {len(usable)} usable feature partition(s), "
            f"need {MIN_TRAIN_DAYS + EVAL_DAYS} ({MIN_TRAIN_DAYS} to train + {EVAL_DAYS} to evaluate)"
        )
        if excluded:
            plan.reason += f"; excluded: {_describe_excluded(excluded, sorted(excluded))}"
        return plan  # before touching MLflow: nothing to compare yet
    c = client(settings)
    champ = version_by_alias(c, CHAMPION)
    if champ is not None:
        plan.champion_version, plan.champion_run_id = str(champ.version), champ.run_id
        champ_tags = c.get_run(champ.run_id).data.tags
        plan.champion_dates = decode_dates(champ_tags.get(TAG_PARTITIONS))
        plan.champion_excluded = set(json.loads(champ_tags.get(TAG_EXCLUDED) or "{}"))
    # A date the champion already left out and that is still blocked is old news; fixed since,
    # it is new validated data.
    new = [d for d in available if d not in plan.champion_dates and not (d in plan.champion_excluded and d in excluded)]
    plan.new_usable = [d for d in new if d not in excluded]
    plan.new_blocked = [d for d in new if d in excluded]
    if force:
        plan.should_train, plan.reason = True, "forced retrain"
        return plan
    if champ is None:
        plan.should_train = True
        plan.reason = f"no champion yet: training on {len(usable)} validated partition(s) {encode_dates(usable)}"
    elif not new:
        plan.reason = (
            f"no new validated data since champion v{champ.version} "
            f"(trained on {encode_dates(sorted(plan.champion_dates))})"
        )
    elif not plan.new_usable:
        plan.reason = (
            f"all {len(new)} new partition(s) since champion v{champ.version} failed their checks: "
            + _describe_excluded(excluded, plan.new_blocked)
        )
    else:
        plan.should_train = True
        plan.reason = (
            f"{len(plan.new_usable)} new validated partition(s) since champion v{champ.version}: "
            f"{encode_dates(plan.new_usable)}"
        )
        if plan.new_blocked:
            plan.reason += f" ({len(plan.new_blocked)} excluded: {_describe_excluded(excluded, plan.new_blocked)})"
    if plan.should_train:
        last = _last_training_run(c, settings)
        if last is not None and decode_dates(last.data.tags.get(TAG_PARTITIONS)) == set(usable):
            plan.should_train = False
            plan.reason = (
                f"already trained on exactly these {len(usable)} partition(s) in run {last.info.run_id} "
                f"(decision: {last.data.tags.get(TAG_DECISION, 'unknown')}); waiting for new validated data"
            )
    return plan


def _last_training_run(c: Any, settings: Settings) -> Any | None:
    exp = c.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return None
    runs = c.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TAG_DECISION}` != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def champion_summary(settings: Settings) -> dict[str, Any] | None:
    """The serving model in a few numbers (for the demo summary); None without a champion."""
    c = client(settings)
    champ = version_by_alias(c, CHAMPION)
    if champ is None:
        return None
    run = c.get_run(champ.run_id)
    challenger = version_by_alias(c, CHALLENGER)
    return {
        "version": str(champ.version),
        "run_id": champ.run_id,
        "metrics": dict(run.data.metrics),
        "partitions": run.data.tags.get(TAG_PARTITIONS, ""),
        "excluded": json.loads(run.data.tags.get(TAG_EXCLUDED, "{}") or "{}"),
        "challenger_version": str(challenger.version) if challenger is not None else None,
        "last_decision": run.data.tags.get(TAG_DECISION, ""),
        "run_url": run_url(settings, run.info.experiment_id, champ.run_id),
        "tracking_uri": settings.mlflow_tracking_uri,
    }
