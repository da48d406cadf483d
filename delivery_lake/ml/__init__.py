"""The delivery-delay model: features from the curated layer, MLflow-tracked training, registry, scoring.

    features.py   one row per delivery with what is known at dispatch, partitioned by date
    registry.py   MLflow setup, the champion/challenger aliases, the training plan (what is new)
    training.py   time-based split, classifier, metrics vs naive baselines, plots, promotion
    scoring.py    the champion scores the latest validated day -> a curated partition (the
                  warehouse asset loads it)

Runs and is tested without Dagster; `assets/ml.py` turns it into assets and a sensor.
"""
