"""The production profile (`make up`: PostgreSQL-backed Dagster, SeaweedFS identities, MLflow
server), the SeaweedFS S3 server manager (`make lake-up`, the tests' S3 fixtures) and the process
control they share."""
