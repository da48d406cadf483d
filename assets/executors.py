"""The executors of the runs the daemon and the UI launch, chosen by DAGSTER_EXECUTOR."""

import os

import dagster as dg

# Runs the daemon and the UI launch (`delivery-lake run` materializes in process instead):
# steps fork from one server per run that has imported the project and GX once, rather than
# each step paying a fresh interpreter and the import tree (measured: 5-10 s a step, 14 steps
# in a landing run). Still a process per step, so a step that dies takes only itself down.
FORKSERVER_EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["assets.definitions", "delivery_lake.gx_import"]}}},
    name="forkserver_executor",
)
EXECUTORS = ("multiprocess", "celery")


def executor_from_env() -> dg.ExecutorDefinition:
    """DAGSTER_EXECUTOR: `multiprocess` (default, the executor above) or `celery` (each step a task
    on the Celery workers of CELERY_BROKER_URL: assets/workers.py, infra/README.md).

    Read when the definitions load, like PARTITION_START: the daemon, the webserver, every run
    and every worker of a deployment are started with the same value. The choice is not a
    secret; the broker URL is read only when a run starts (assets.workers.CeleryConfig)."""
    name = os.environ.get("DAGSTER_EXECUTOR", "").strip() or "multiprocess"
    if name == "celery":
        from assets.workers import celery_executor

        return celery_executor
    if name == "multiprocess":
        return FORKSERVER_EXECUTOR
    raise ValueError(f"DAGSTER_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")


EXECUTOR = executor_from_env()
