"""Great Expectations, imported without the optional engines this project never asks it for.

GX tries, at import, every integration it has: Spark (pyspark, installed here for the Spark
transform engine) and Google Cloud (google-auth, a dependency of another package). Neither is
used for validation (the checks run GX on pandas frames), yet importing them cost 0.3-0.5 s of
every check step's ~3.3 s GX import and printed pyspark's pandas-version warnings into `run`'s
output. While GX imports they are made unimportable; GX records them as absent, and the names
are released afterwards, so the Spark engine or anything else in the process imports them as usual.

Import `great_expectations` through this module (`from delivery_lake.gx_import import gx`): the
first import in a process is the one that counts; the forkserver and the Celery workers preload it.
"""

from __future__ import annotations

import sys
from types import ModuleType

# GX's optional integrations (great_expectations/compatibility/{pyspark,google}.py), by the top
# package it tries; never google.protobuf, which MLflow, gRPC and Spark Connect use.
_SKIPPED = ("pyspark", "google.cloud", "google.oauth2", "google.auth", "google.api_core")


def _import() -> ModuleType:
    if "great_expectations" in sys.modules:
        return sys.modules["great_expectations"]
    # A name already imported is left alone (GX then finds it, as it would anyway).
    blocked = [name for name in _SKIPPED if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import great_expectations
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return great_expectations


gx = _import()
