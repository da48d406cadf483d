"""The app a Celery worker runs: `celery -A assets.celery_worker worker -Q dagster` (infra/workers.py).

Importing this module is the worker's start-up: it reads the broker settings from the
environment (assets.workers.CeleryConfig) and imports the project and Great Expectations once,
so every pool process forks with them loaded instead of paying the import tree per step.
"""

import great_expectations  # noqa: F401  (preloaded for the check steps, see above)

import assets.definitions  # noqa: F401  (the code every step is loaded from)
from assets.workers import worker_app

app = worker_app()
