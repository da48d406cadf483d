"""The model section of the demo summary: serving version, its metrics against the baselines,
today's risk scores, and how to open the MLflow UI."""

from __future__ import annotations

from typing import Any

from delivery_lake.config import Settings
from delivery_lake.ml import registry, scoring


def summary_section(settings: Settings) -> Any:
    from rich.table import Table as RichTable

    t = RichTable(title="Delivery-delay model (MLflow)", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    if not registry.store_exists(settings):
        t.add_row("model", "not trained yet (needs 6 validated days of features)")
        return t
    champ = registry.champion_summary(settings)
    if champ is None:
        t.add_row("model", "no champion registered yet")
        return t
    m = champ["metrics"]
    t.add_row("champion", f"{registry.MODEL_NAME} v{champ['version']} (challenger: v{champ['challenger_version']})")
    t.add_row(
        "trained on",
        champ["partitions"] + (f"; excluded: {', '.join(sorted(champ['excluded']))}" if champ["excluded"] else ""),
    )
    t.add_row(
        "ROC AUC (eval window)",
        f"{m.get('roc_auc', float('nan')):.3f} vs baseline "
        f"{m.get('baseline_rate_roc_auc', float('nan')):.3f} (constant) / "
        f"{m.get('baseline_priority_roc_auc', float('nan')):.3f} (per priority)",
    )
    t.add_row(
        "log loss",
        f"{m.get('log_loss', float('nan')):.4f} vs baseline {m.get('baseline_rate_log_loss', float('nan')):.4f}",
    )
    t.add_row(
        "Brier", f"{m.get('brier', float('nan')):.4f} vs baseline {m.get('baseline_rate_brier', float('nan')):.4f}"
    )
    t.add_row("last decision", champ["last_decision"])
    scores = scoring.read_scores(settings)
    if scores:
        t.add_row(
            "risk scores",
            f"{scores['rows']:,} deliveries of {scores['date']} scored by v{scores['model_version']}: "
            f"mean P(late) {scores['mean_probability']:.1%}, {scores['high_risk']} high risk "
            "(warehouse table fct_delivery_risk)",
        )
    t.add_row("MLflow run", champ["run_url"])
    t.add_row("open the UI", f"make mlflow-ui  ->  {settings.mlflow_ui_url}")
    return t
