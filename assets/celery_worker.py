"""The app a Celery worker runs: `celery -A assets.celery_worker worker -Q dagster` (infra/workers.py).

Importing this module is the worker's start-up: it reads the broker settings from the
environment (assets.workers.CeleryConfig) and imports the project and Great Expectations once,
so every pool process forks with them loaded instead of paying the import tree per step.
"""

import assets.definitions  # noqa: F401  (the code every step is loaded from)
import delivery_lake.gx_import  # noqa: F401  (GX, preloaded for the check steps, see above)
from assets.workers import worker_app

app = worker_app()
