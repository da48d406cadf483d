"""Resources: the only place Dagster meets configuration, read from the environment when built."""

import contextlib
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from delivery_lake.config import Settings
from delivery_lake.landing import Landing
from delivery_lake.quality import docs_deferred, preload_gx_in_background
from delivery_lake.storage import Lake


class LakehouseResource(dg.ConfigurableResource):
    """Lake, inbox and warehouse locations.

    Every field is optional: unset fields come from the environment (LAKE_URL, INBOX_DIR,
    AWS_* ...) at the moment the resource is built for a run, never at import time, and
    secrets never appear in the resource config the UI shows.
    """

    data_dir: str | None = None
    lake_url: str | None = None
    inbox_dir: str | None = None
    warehouse_path: str | None = None
    # What builds the curated models: "duckdb" or "spark" (unset: TRANSFORM_ENGINE, default duckdb).
    transform_engine: str | None = None

    _settings: Settings | None = PrivateAttr(default=None)
    _run_scope: contextlib.ExitStack | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        if self._settings is None:
            overrides: dict[str, object] = {}
            if self.data_dir:
                overrides["data_dir"] = Path(self.data_dir).resolve()
            if self.lake_url:
                overrides["lake_url"] = self.lake_url
            if self.inbox_dir:
                overrides["inbox_dir"] = Path(self.inbox_dir).resolve()
            if self.warehouse_path:
                overrides["warehouse_path"] = Path(self.warehouse_path).resolve()
            if self.transform_engine:
                overrides["transform_engine"] = self.transform_engine
            self._settings = Settings.from_env(**overrides)
        return self._settings

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # In a run (a sensor's tick has no run id): GX starts importing now, on a thread, so the
        # import overlaps the landing or the marts before the first check instead of delaying it
        # (4-5 s of an 18 s in-process run, measured under `make up`). Not beside Spark (see
        # preload_gx_in_background).
        if context.run is not None and self.settings().transform_engine != "spark":
            preload_gx_in_background()
        if context.run is not None:
            # The checks of a run (its process: every step under the in-process executor) build
            # their Data Docs pages once, when the run ends: a build costs 2.0 s whatever it
            # renders on a 15-day lake (GX compiles its templates and indexes every validation),
            # five a drop (measured under `make up`). Their metadata links the pages already.
            scope = contextlib.ExitStack()
            scope.enter_context(docs_deferred(self.lake(), self.settings()))
            self._run_scope = scope

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        scope, self._run_scope = self._run_scope, None
        if scope is not None:
            scope.close()

    def lake(self) -> Lake:
        return Lake.from_settings(self.settings())

    def landing(self) -> Landing:
        s = self.settings()
        return Landing(self.lake(), s.inbox_dir, s)
