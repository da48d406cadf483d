"""Train, evaluate, log and (maybe) promote the delivery-delay classifier.

Split: by time. The last `EVAL_DAYS` usable dates are the evaluation window; everything
before trains. The registered model is the one fitted on the training dates only (no refit
on the window), so any later, more recent window is out of sample for it too: that is what
makes champion vs challenger on the *same* window a fair comparison.

Baselines on the same window: the training late rate as a constant probability (AUC 0.5 by
construction; the reference for log loss and Brier), and the training late rate per
priority (what a dispatcher knows without a model).

Promotion: the challenger becomes `champion` when its ROC AUC on the window beats the
champion's, re-scored on that same window, by at least `PROMOTION_MARGIN` (0.005), and
beats the best naive baseline by that margin too (so a broken first model never serves).
No champion yet -> promoted if it beats the baselines. The decision, both scores and the
reason are run tags and model-version tags.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from delivery_lake.config import Settings
from delivery_lake.ml import features, registry
from delivery_lake.ml.registry import TrainingPlan, encode_dates
from delivery_lake.storage import Lake

PROMOTION_MARGIN = 0.005  # ROC AUC points on the evaluation window
HGB_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_iter": 300,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "validation_fraction": 0.15,
    "n_iter_no_change": 20,
    "random_state": 0,
}


SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("scikit-learn", "numpy", "pandas", "scipy", "skops")]


class NotEnoughData(RuntimeError):
    pass


@dataclass
class TrainingResult:
    run_id: str
    experiment_id: str
    version: str
    metrics: dict[str, float]
    promoted: bool
    decision: str
    champion_before: str | None
    champion_score: float | None
    champion_after: str
    train_dates: list[str]
    eval_dates: list[str]
    excluded: dict[str, list[str]]
    excluded_clients: dict[str, list[str]]
    run_url: str
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)


# ---- data -----------------------------------------------------------------------------------


def to_model_input(frame: pl.DataFrame) -> Any:
    """Features as the pandas frame scikit-learn and the MLflow signature take (the boundary)."""
    return frame.select(
        *(pl.col(c).cast(pl.Utf8).fill_null("unknown") for c in features.CATEGORICAL),
        *(pl.col(c).cast(pl.Float64) for c in features.NUMERIC),
    ).to_pandas()


def labelled(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows with a known verdict (the promise of a delivery whose order is unknown is unknown)."""
    return frame.filter(pl.col(features.LABEL).is_not_null())


def make_model(kind: str = "hgb", numeric: list[str] | None = None) -> Any:
    """A scikit-learn pipeline mapping the raw feature frame to P(late); `numeric`: the numeric
    features it uses (default every one; the others are dropped by the column transformer)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    cat, num = list(features.CATEGORICAL), list(features.NUMERIC if numeric is None else numeric)
    if kind == "hgb":
        prep = ColumnTransformer(
            [
                ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan), cat),
                ("num", "passthrough", num),
            ],
            verbose_feature_names_out=False,
        )
        clf = HistGradientBoostingClassifier(categorical_features=list(range(len(cat))), **HGB_PARAMS)
        return Pipeline([("prep", prep), ("clf", clf)])
    if kind == "logreg":
        prep = ColumnTransformer(
            [
                ("cat", OneHotEncoder(handle_unknown="ignore"), cat),
                ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), num),
            ]
        )
        return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=2000, C=1.0))])
    raise ValueError(f"unknown model kind {kind!r} (hgb, logreg)")


# ---- metrics --------------------------------------------------------------------------------


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    p = np.clip(p, 1e-6, 1 - 1e-6)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
    }


def baseline_probabilities(train: pl.DataFrame, test: pl.DataFrame) -> dict[str, np.ndarray]:
    rate = float(train[features.LABEL].cast(pl.Float64).mean())  # type: ignore[arg-type]
    by_priority = train.group_by("priority").agg(pl.col(features.LABEL).cast(pl.Float64).mean().alias("p"))
    per_priority = test.join(by_priority, on="priority", how="left").select(pl.col("p").fill_null(rate))["p"].to_numpy()
    return {"baseline_rate": np.full(test.height, rate), "baseline_priority": per_priority}


# ---- plots ----------------------------------------------------------------------------------


def _plots(out: Path, y: np.ndarray, curves: dict[str, np.ndarray], model: Any, x_eval: Any) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display in workers, daemons or CI
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import roc_curve

    paths = []
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {scores(y, p)['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, evaluation window")
    ax.legend(loc="lower right", fontsize=8)
    paths.append(out / "roc.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    frac, mean = calibration_curve(y, curves["model"], n_bins=10, strategy="quantile")
    ax.plot(mean, frac, "o-", label="model")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="perfect")
    ax.set(xlabel="predicted P(late)", ylabel="observed late rate", title="Calibration, evaluation window")
    ax.legend(loc="upper left", fontsize=8)
    paths.append(out / "calibration.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    # Permutation importance on the evaluation window: model-agnostic and measured in the
    # metric we promote on (HistGradientBoosting has no impurity importances).
    imp = permutation_importance(
        model, x_eval, y, scoring="roc_auc", n_repeats=3, max_samples=min(len(y), 2000), random_state=0
    )
    order = np.argsort(imp.importances_mean)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.barh(np.array(x_eval.columns)[order], imp.importances_mean[order], xerr=imp.importances_std[order])
    ax.set(xlabel="drop in ROC AUC when shuffled", title="Permutation feature importance")
    paths.append(out / "feature_importance.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


# ---- the training run -----------------------------------------------------------------------


def _champion_score(settings: Settings, x_eval: Any, y: np.ndarray) -> tuple[float | None, str]:
    """The champion's ROC AUC on this window; None (with why) when it cannot score these features."""
    try:
        model = registry.load_model(f"models:/{registry.MODEL_NAME}@{registry.CHAMPION}")
        return scores(y, model.predict_proba(x_eval)[:, 1])["roc_auc"], ""
    except (KeyError, ValueError) as exc:  # feature set changed since the champion was trained
        return None, f"champion cannot score the current features ({exc})"


def decide(
    challenger: float, baseline: float, champion_version: str | None, champion: float | None, note: str, window: str
) -> tuple[bool, str]:
    """(promote?, why): see the module docstring for the rule."""
    if challenger < baseline + PROMOTION_MARGIN:
        return (
            False,
            f"kept: ROC AUC {challenger:.4f} does not beat the naive baseline {baseline:.4f} by {PROMOTION_MARGIN}",
        )
    if champion_version is None:
        return True, f"promoted: no champion yet (ROC AUC {challenger:.4f}, baseline {baseline:.4f})"
    if champion is None:
        return True, f"promoted: {note}"
    if challenger >= champion + PROMOTION_MARGIN:
        return True, (
            f"promoted: ROC AUC {challenger:.4f} beats champion v{champion_version} {champion:.4f} "
            f"by >= {PROMOTION_MARGIN} on {window}"
        )
    return False, (
        f"kept champion v{champion_version}: challenger ROC AUC {challenger:.4f} vs champion {champion:.4f} "
        f"on {window} (margin {PROMOTION_MARGIN})"
    )


def train(
    lake: Lake,
    settings: Settings,
    plan: TrainingPlan,
    tags: dict[str, str] | None = None,
    kind: str = "hgb",
    estimator: Any | None = None,
) -> TrainingResult:
    """One MLflow run: fit on the plan's train dates, evaluate on its window, register, decide."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    started = time.monotonic()
    train_dates, eval_dates = plan.train_dates, plan.eval_dates
    if len(train_dates) < registry.MIN_TRAIN_DAYS or not eval_dates:
        raise NotEnoughData(plan.reason or "not enough usable partitions")
    frame = labelled(features.drop_blocked_clients(features.read_features(lake, plan.usable), plan.excluded_clients))
    train_df = frame.filter(pl.col("date").cast(pl.Utf8).is_in(train_dates))
    eval_df = frame.filter(pl.col("date").cast(pl.Utf8).is_in(eval_dates))
    y_train = train_df[features.LABEL].cast(pl.Int8).to_numpy()
    y_eval = eval_df[features.LABEL].cast(pl.Int8).to_numpy()
    if len(set(y_train)) < 2 or len(set(y_eval)) < 2:
        raise NotEnoughData("the training or evaluation rows hold a single class")
    x_train, x_eval = to_model_input(train_df), to_model_input(eval_df)
    # A feature no training row has a value for (a carrier client's distance, a source's stand-in
    # weights) says nothing and cannot be binned: left out, and the run says so.
    empty = [c for c in features.NUMERIC if train_df[c].null_count() == train_df.height]
    used = [c for c in features.NUMERIC if c not in empty]

    model = estimator if estimator is not None else make_model(kind, used)
    model.fit(x_train, y_train)
    p_eval = model.predict_proba(x_eval)[:, 1]
    metrics = scores(y_eval, p_eval)
    curves = {"model": p_eval}
    for name, p in baseline_probabilities(train_df, eval_df).items():
        curves[name] = p
        metrics.update({f"{name}_{k}": v for k, v in scores(y_eval, p).items()})
    best_baseline = max(metrics["baseline_rate_roc_auc"], metrics["baseline_priority_roc_auc"])
    metrics["roc_auc_lift_over_baseline"] = metrics["roc_auc"] - best_baseline
    metrics["train_late_rate"] = float(y_train.mean())
    metrics["eval_late_rate"] = float(y_eval.mean())

    c = registry.client(settings)
    exp_id = registry.experiment_id(settings, c)
    champ = registry.version_by_alias(c, registry.CHAMPION)
    champ_score, champ_note = _champion_score(settings, x_eval, y_eval) if champ is not None else (None, "")

    params = {
        "model_kind": kind if estimator is None else type(estimator).__name__,
        "features": ",".join(f for f in features.FEATURES if f not in empty),
        "features_without_values": ",".join(empty) or "none",
        "n_train": len(y_train),
        "n_eval": len(y_eval),
        "eval_days": registry.EVAL_DAYS,
        "history_days": features.HISTORY_DAYS,
        "promotion_margin_roc_auc": PROMOTION_MARGIN,
        **({f"hgb_{k}": v for k, v in HGB_PARAMS.items()} if kind == "hgb" and estimator is None else {}),
    }
    run_tags = {
        **(tags or {}),
        "delivery_lake.train_range": f"{train_dates[0]}..{train_dates[-1]}",
        "delivery_lake.eval_range": f"{eval_dates[0]}..{eval_dates[-1]}",
        registry.TAG_PARTITIONS: encode_dates(plan.usable),
        registry.TAG_EXCLUDED: json.dumps(plan.excluded, sort_keys=True)[:7900],
        registry.TAG_EXCLUDED_CLIENTS: json.dumps(plan.excluded_clients, sort_keys=True)[:7900],
        "delivery_lake.plan_reason": plan.reason[:7900],
    }
    with mlflow.start_run(experiment_id=exp_id, run_name=f"delay-{eval_dates[-1]}", tags=run_tags) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        if champ_score is not None:
            mlflow.log_metric("champion_roc_auc_same_window", champ_score)
        x_example = x_eval.head(5)
        signature = infer_signature(x_example, model.predict_proba(x_example))
        info = mlflow.sklearn.log_model(
            sk_model=model,
            name="model",
            signature=signature,
            input_example=x_example,
            pyfunc_predict_fn="predict_proba",
            # skops (MLflow's safe default format) refuses types it does not know; these are
            # the ones our pipeline holds (HistGradientBoosting trees, sklearn's validators).
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            # Explicit requirements: inferring them loads the model in a subprocess (slow).
            pip_requirements=_requirements(),
        )
        with tempfile.TemporaryDirectory() as tmp:
            for path in _plots(Path(tmp), y_eval, curves, model, x_eval):
                mlflow.log_artifact(str(path), artifact_path="plots")
            partitions = Path(tmp) / "partitions.json"
            partitions.write_text(
                json.dumps(
                    {
                        "train": train_dates,
                        "eval": eval_dates,
                        "excluded": plan.excluded,
                        "excluded_client_partitions": plan.excluded_clients,
                    },
                    indent=1,
                )
            )
            mlflow.log_artifact(str(partitions), artifact_path="data")
        # Registered through the client rather than `registered_model_name=`: the fluent path
        # prints "Successfully registered model ..." to stderr on every retrain, which is not news.
        if not c.search_registered_models(filter_string=f"name = '{registry.MODEL_NAME}'"):
            c.create_registered_model(registry.MODEL_NAME)
        created = c.create_model_version(
            registry.MODEL_NAME, source=info.model_uri, run_id=run.info.run_id, model_id=info.model_id
        )
        version = str(created.version)

        promoted, decision = decide(
            metrics["roc_auc"],
            best_baseline,
            None if champ is None else str(champ.version),
            champ_score,
            champ_note,
            f"{eval_dates[0]}..{eval_dates[-1]}",
        )
        decision_tags = {
            registry.TAG_DECISION: "promoted" if promoted else "kept",
            "delivery_lake.decision_reason": decision,
            "delivery_lake.challenger_roc_auc": f"{metrics['roc_auc']:.6f}",
            "delivery_lake.champion_roc_auc_same_window": "" if champ_score is None else f"{champ_score:.6f}",
            "delivery_lake.champion_version_before": "" if champ is None else str(champ.version),
            "delivery_lake.model_version": version,
        }
        mlflow.set_tags(decision_tags)
    c.set_registered_model_alias(registry.MODEL_NAME, registry.CHALLENGER, version)
    for k, v in decision_tags.items():
        c.set_model_version_tag(registry.MODEL_NAME, version, k, v)
    if promoted:
        c.set_registered_model_alias(registry.MODEL_NAME, registry.CHAMPION, version)
    return TrainingResult(
        run_id=run.info.run_id,
        experiment_id=exp_id,
        version=version,
        metrics=metrics,
        promoted=promoted,
        decision=decision,
        champion_before=None if champ is None else str(champ.version),
        champion_score=champ_score,
        champion_after=version if promoted else str(champ.version) if champ is not None else "",
        train_dates=train_dates,
        eval_dates=eval_dates,
        excluded=plan.excluded,
        excluded_clients=plan.excluded_clients,
        run_url=registry.run_url(settings, exp_id, run.info.run_id),
        seconds=round(time.monotonic() - started, 2),
        params=params,
    )
