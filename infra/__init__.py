"""The production profile: PostgreSQL-backed Dagster, SeaweedFS identities, MLflow server (`make up`)."""
