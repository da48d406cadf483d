"""ML assets (group `ml`): delivery features, the MLflow-tracked delay model, batch risk scores,
and `retrain_sensor`, which retrains when new validated data lands.

Why a sensor rather than a declarative automation condition for retraining: the decision
needs facts Dagster does not hold, namely which feature partitions the quality gate blocked
(data in the lake) and which partitions the current champion was trained on (a tag of its
MLflow run). A sensor reads both, and its tick shows the reason in the UI either way: a
RunRequest tagged with why, or a SkipReason ("no new validated data since champion v3",
"all 2 new partitions failed their checks: ..."). After a landing, `refresh_sensor`
(assets/refresh.py) builds the features and runs the model asset itself, which makes the same
decision; this sensor covers the rest (a gate verdict that changed, a retrain that failed). The
scores, whose inputs Dagster does track, follow the features by an automation condition.
"""

import hashlib

import dagster as dg

from assets.curated import after_inputs, model_key
from assets.partitions import DAILY_PARTITIONS, add_partition_metadata
from assets.resources import LakehouseResource
from assets.run_tags import REFRESH_TRIGGER, TRIGGER_TAG, in_flight
from delivery_lake.ml import features, registry, scoring, training

GROUP = "ml"
FEATURES_KEY = dg.AssetKey([GROUP, "delivery_features"])
MODEL_KEY = dg.AssetKey([GROUP, "delay_model"])
RISK_KEY = dg.AssetKey([GROUP, "fct_delivery_risk"])
# Exactly what `features.py` reads (`features.CURATED_INPUTS`), so the graph is the truth: the
# same dates of int_deliveries_enriched plus the HISTORY_DAYS before them (driver history), and
# the dimension snapshots.
FEATURE_DEPS = [
    dg.AssetDep(model_key(name), partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-lookback))
    if lookback
    else dg.AssetDep(model_key(name))
    for name, lookback in features.CURATED_INPUTS.items()
]


@dg.asset(
    key=FEATURES_KEY,
    group_name=GROUP,
    partitions_def=DAILY_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=FEATURE_DEPS,
    # No automation condition: `refresh_sensor` builds the features with the marts, over exactly
    # the dates whose driver history changed (`features.dates_reading`). Automation would also
    # request every date up to HISTORY_DAYS after a change, dates without deliveries included.
    kinds={"duckdb", "parquet"},
    description=(
        "One row per delivery with what is known when it leaves the depot (distance, weight, parcels, priority, "
        "client tier and SLA, hours to the promise, dispatch hour and weekday, depot load that day, driver tenure "
        f"and on-time rate over the previous {features.HISTORY_DAYS} days as known at the start of the day, "
        "vehicle type) and the label `is_late`. Read from the curated layer only (`int_deliveries_enriched` of the "
        f"date and the {features.HISTORY_DAYS} days before, the dimension snapshots); see "
        "`delivery_lake/ml/features.py` for the leakage rules. A date is rebuilt when those partitions change."
    ),
    metadata={"features": list(features.FEATURES), "label": features.LABEL},
)
def delivery_features(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    lake = lakehouse.lake()
    rows = features.build_features(lake, lakehouse.settings(), context.partition_keys)
    missing = [d for d in context.partition_keys if d not in rows]
    if missing:
        context.log.warning(f"no {features.SOURCE} partition for {missing}: nothing to build there")
    blocked, partial = features.gate_exclusions(lake, rows)
    # each date's rows on its own materialization
    add_partition_metadata(
        context, {key: {"dagster/row_count": rows.get(key, 0), "built": key in rows} for key in context.partition_keys}
    )
    return dg.MaterializeResult(
        metadata={
            "rows_in_run": sum(rows.values()),
            "dates_without_deliveries": dg.MetadataValue.json(missing),
            # Built anyway (for inspection), but training and scoring leave these dates out.
            "blocked_upstream": dg.MetadataValue.json(blocked),
            "blocked_client_partitions": dg.MetadataValue.json(partial),
            "location": dg.MetadataValue.path(lake.uri(lake.table_dir(features.ZONE, features.TABLE))),
        }
    )


class TrainConfig(dg.Config):
    force: bool = False  # retrain even without new validated data (e.g. after a code change)
    model_kind: str = "hgb"  # hgb (HistGradientBoosting) or logreg


@dg.asset(
    key=MODEL_KEY,
    group_name=GROUP,
    deps=[FEATURES_KEY],
    output_required=False,  # no new validated data -> no new model, and the run log says why
    kinds={"mlflow", "scikitlearn"},
    description=(
        "Delivery-delay classifier (P(late)) trained in MLflow experiment `delivery-delay`: time split, the last "
        f"{registry.EVAL_DAYS} validated days evaluate. Registered as `delivery_delay`; each version becomes "
        f"`challenger` and is promoted to `champion` only if its ROC AUC beats the champion's on the same window by "
        f"{training.PROMOTION_MARGIN}. Feature dates blocked by a quality check are left out and listed. "
        "Requested by `retrain_sensor` when new validated data lands. Metadata links the MLflow run."
    ),
)
def delay_model(context: dg.AssetExecutionContext, config: TrainConfig, lakehouse: LakehouseResource):
    settings = lakehouse.settings()
    lake = lakehouse.lake()
    plan = registry.plan_training(lake, settings, force=config.force)
    if not plan.should_train:
        context.log.warning(f"not retraining: {plan.reason}")
        context.log_event(
            dg.AssetObservation(
                asset_key=MODEL_KEY,
                metadata={"skipped": plan.reason, "plan": dg.MetadataValue.json(plan.as_metadata())},
            )
        )
        return
    context.log.info(f"training: {plan.reason}")
    result = training.train(
        lake,
        settings,
        plan,
        tags={"dagster.run_id": context.run.run_id, "dagster.asset_key": MODEL_KEY.to_user_string()},
        kind=config.model_kind,
    )
    (context.log.info if result.promoted else context.log.warning)(result.decision)
    m = result.metrics
    yield dg.MaterializeResult(
        metadata={
            "mlflow_run_id": result.run_id,
            "mlflow_run": dg.MetadataValue.url(result.run_url),
            "model_version": result.version,
            "model_version_url": dg.MetadataValue.url(registry.model_url(settings, result.version)),
            "decision": result.decision,
            "promoted": result.promoted,
            "champion_version": result.champion_after,
            "champion_roc_auc_same_window": result.champion_score if result.champion_score is not None else "n/a",
            "roc_auc": m["roc_auc"],
            "log_loss": m["log_loss"],
            "brier": m["brier"],
            "baseline_rate_roc_auc": m["baseline_rate_roc_auc"],
            "baseline_rate_log_loss": m["baseline_rate_log_loss"],
            "baseline_rate_brier": m["baseline_rate_brier"],
            "baseline_priority_roc_auc": m["baseline_priority_roc_auc"],
            "roc_auc_lift_over_baseline": m["roc_auc_lift_over_baseline"],
            "train_range": f"{result.train_dates[0]}..{result.train_dates[-1]}",
            "eval_range": f"{result.eval_dates[0]}..{result.eval_dates[-1]}",
            "partitions_used": registry.encode_dates(plan.usable),
            "partitions_excluded": dg.MetadataValue.json(result.excluded),
            "client_partitions_excluded": dg.MetadataValue.json(result.excluded_clients),
            "trigger_reason": plan.reason,
            "duration_s": result.seconds,
        }
    )


@dg.asset(
    key=RISK_KEY,
    group_name=GROUP,
    deps=[MODEL_KEY, FEATURES_KEY],
    output_required=False,  # nothing validated to score, or no champion yet
    # A model trained outside a refresh or a retrain (by hand in the UI): scores follow it. New
    # features are scored by the refresh's own scores run (assets/refresh.py); reacting to them
    # here scored a day twice, once beside the refresh that was still building it (measured).
    automation_condition=after_inputs("score_after_model", ignore=dg.AssetSelection.assets(FEATURES_KEY)),
    kinds={"mlflow", "parquet", "duckdb"},
    description=(
        "Late-delivery risk of every delivery of the latest validated dispatch day, scored by the current `champion` "
        "(models:/delivery_delay@champion); each row records the model version. Published like a curated partition "
        "to `curated/fct_delivery_risk/date=.../data.parquet`; `curated/warehouse` depends on this asset and loads it "
        "as the table `fct_delivery_risk`."
    ),
)
def fct_delivery_risk(context: dg.AssetExecutionContext, lakehouse: LakehouseResource):
    settings = lakehouse.settings()
    lake = lakehouse.lake()
    result = scoring.score(lake, settings)
    if result.skipped:
        context.log.warning(f"not scoring: {result.skipped}")
        context.log_event(dg.AssetObservation(asset_key=RISK_KEY, metadata={"skipped": result.skipped}))
        return
    assert result.model_version is not None
    yield dg.MaterializeResult(
        metadata={
            "date": result.date or "",
            "dagster/row_count": result.rows,
            "model_version": result.model_version,
            "mlflow_model": dg.MetadataValue.url(registry.model_url(settings, result.model_version)),
            "model_run_id": result.model_run_id or "",
            "mean_late_probability": result.mean_probability or 0.0,
            "high_risk_deliveries": result.high_risk,
            "location": dg.MetadataValue.path(lake.uri(lake.table_dir(scoring.ZONE, scoring.TABLE))),
            "duration_s": result.seconds,
        }
    )


@dg.sensor(
    name="retrain_sensor",
    description=(
        "Requests a retrain of ml/delay_model (and fresh scores) when feature partitions that passed their "
        "blocking checks exist that the champion was not trained on. Otherwise the tick says why not: no new "
        "validated data, all new partitions failed their checks, or this exact data was already tried."
    ),
    target=[MODEL_KEY, RISK_KEY],
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def retrain_sensor(context: dg.SensorEvaluationContext, lakehouse: LakehouseResource) -> dg.SensorResult:
    refreshing = in_flight(context.instance, (REFRESH_TRIGGER,))
    if refreshing:
        # that run trains after the features it builds; training beside it would race it
        return dg.SensorResult(skip_reason=f"refresh run {refreshing.run_id[:8]} is queued or running: it retrains")
    plan = registry.plan_training(lakehouse.lake(), lakehouse.settings())
    if not plan.should_train:
        return dg.SensorResult(skip_reason=plan.reason)
    context.log.info(f"retrain: {plan.reason}")
    digest = hashlib.sha1(registry.encode_dates(plan.usable).encode()).hexdigest()[:12]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                # Same validated data -> same key: a retrain is never requested twice for it.
                run_key=f"retrain:{digest}",
                asset_selection=[MODEL_KEY, RISK_KEY],
                tags={TRIGGER_TAG: "retrain_sensor", "delivery_lake/retrain_reason": plan.reason[:1000]},
            )
        ]
    )


ML_ASSETS = [delivery_features, delay_model, fct_delivery_risk]
