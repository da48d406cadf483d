"""Steps on Celery workers (dagster-celery): the executor a deployment picks with DAGSTER_EXECUTOR=celery.

A run's orchestrator (the daemon's run worker, or `delivery-lake run`) sends each step (one
asset over the run's partitions, or one asset check) as a Celery task through the broker; any
worker started on the same code (`infra/workers.py`, `celery -A assets.celery_worker worker`)
takes it, loads the job from `assets.definitions`, executes the step against the run's Dagster
instance and returns its events. The lake, the inbox and the instance must be reachable from
every worker (one machine: local folders and SQLite; several: S3 and PostgreSQL).

Everything is read from the environment when an executor or a worker app is built, never at
import time, and the broker URL (which may hold a password) is never logged or put into run
config: the executor's config is empty, so the UI shows nothing of it.

Why a worker that dies loses nothing:

- `task_acks_late`: a task is acknowledged when its step has finished, not when a worker takes
  it, so until then the broker still holds it;
- `task_reject_on_worker_lost`: when the pool process running a step dies (SIGKILL, the OOM
  killer), its worker hands the task back to the queue at once and another process takes it;
- when the whole worker dies (its machine, or SIGKILL of its process group) nobody can hand
  it back; Redis then redelivers every task left unacknowledged for `visibility_timeout`
  seconds (CELERY_VISIBILITY_TIMEOUT). Make it longer than the longest step: a step still
  running past it is delivered a second time. That second delivery is safe (landing is
  idempotent and a partition is published under a claim, `delivery_lake.claims`) but wasted.

The step that runs again starts from scratch: landing rewrites only partitions whose bytes
differ, so whatever the dead worker had published is left as it was.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import dagster as dg

# dagster-celery registers its step task again for every step it submits (one app, one task
# name, the same code); Celery 5.7 warns each time, which tells a user nothing.
warnings.filterwarnings("ignore", message=r"Task name 'execute_plan' is already registered to a different callable")

# dagster-celery routes every step to this queue (its app declares no other), so deployments
# that share one Redis keep apart by CELERY_KEY_PREFIX or by the database number in the URL.
QUEUE = "dagster"
DEFAULT_VISIBILITY_TIMEOUT = 7200  # seconds; longer than any landing step measured here


class WorkerConfigError(ValueError):
    """The environment does not configure the Celery executor."""


@dataclass(frozen=True)
class CeleryConfig:
    """The broker side of a deployment, shared by the orchestrators and the workers."""

    broker_url: str = field(repr=False)  # may carry a password: never in repr, logs or run config
    backend_url: str = field(repr=False)
    key_prefix: str = ""
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CeleryConfig:
        env = os.environ if env is None else env
        broker = env.get("CELERY_BROKER_URL", "")
        if not broker:
            raise WorkerConfigError(
                "DAGSTER_EXECUTOR=celery needs CELERY_BROKER_URL (e.g. redis://127.0.0.1:6379/0) "
                "in the environment of the orchestrator and of every worker"
            )
        try:
            timeout = int(env.get("CELERY_VISIBILITY_TIMEOUT") or DEFAULT_VISIBILITY_TIMEOUT)
        except ValueError:
            raise WorkerConfigError("CELERY_VISIBILITY_TIMEOUT must be a whole number of seconds") from None
        return cls(
            broker_url=broker,
            backend_url=env.get("CELERY_RESULT_BACKEND") or broker,
            key_prefix=env.get("CELERY_KEY_PREFIX", ""),
            visibility_timeout=timeout,
        )

    def config_source(self) -> dict[str, Any]:
        """The Celery settings the executor's app and the workers' app must agree on."""
        from dagster_celery.config import DEFAULT_CONFIG

        transport: dict[str, Any] = {
            **cast("dict[str, Any]", DEFAULT_CONFIG["broker_transport_options"]),
            "visibility_timeout": self.visibility_timeout,
            # Look for abandoned tasks every few seconds (kombu's default sweep is ~100 s), so
            # a dead worker's task is redelivered soon after its visibility timeout.
            "unacked_restore_interval": max(1, min(10, self.visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
        }
        if self.key_prefix:
            transport["global_keyprefix"] = self.key_prefix
        return {
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,  # a worker takes one step at a time, the others stay queued
            "broker_connection_retry_on_startup": True,
            "broker_transport_options": transport,
            "result_backend_transport_options": {"global_keyprefix": self.key_prefix} if self.key_prefix else {},
            "result_expires": 24 * 3600,
            # A step's logs go to the Dagster event log; the worker's own log stays Celery's.
            "worker_hijack_root_logger": False,
        }


def celery_executor_from_env(env: Mapping[str, str] | None = None) -> Any:
    """dagster-celery's CeleryExecutor with its settings from the environment (read here, when a
    run starts, in the process that orchestrates it)."""
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CeleryExecutor

    config = CeleryConfig.from_env(env)
    return CeleryExecutor(
        retries=RetryMode.ENABLED,
        broker=config.broker_url,
        backend=config.backend_url,
        config_source=config.config_source(),
    )


@dg.executor(
    name="celery",
    config_schema={},
    requirements=dg.multiple_process_executor_requirements(),
)
def celery_executor(_init_context: dg.InitExecutorContext) -> dg.Executor:
    """Each step a Celery task on the workers of CELERY_BROKER_URL (see this module's doc)."""
    return celery_executor_from_env()


def worker_app(env: Mapping[str, str] | None = None) -> Any:
    """The Celery app a worker runs: dagster-celery's step task on the broker of the environment."""
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    # The executor's own app arguments: the workers then consume exactly what it publishes.
    app = make_app(celery_executor_from_env(env).app_args())
    create_task(app)
    return app
