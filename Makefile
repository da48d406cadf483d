# delivery_lake — every entry point a user or CI needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(CURDIR)/data
export DATA_DIR
export DAGSTER_HOME ?= $(DATA_DIR)/dagster_home
INBOX_DIR ?= $(DATA_DIR)/inbox
export INBOX_DIR
DEMO_DAYS ?= 14
DEMO_CLIENTS ?= 8
DEMO_START ?= $(shell date -u -d '$(DEMO_DAYS) days ago' +%F)
LAKE_PORT ?= 8333

.PHONY: help install demo docs test test-fast ui mlflow-ui lake-up lake-down lint fmt contract lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 16

# Bytecode is compiled here, once: with PYTHONDONTWRITEBYTECODE set (as on our machines)
# Python never caches it, and every process would recompile what it imports.
# -qq: pip's own notices about this machine's package index settings are not news; errors show.
$(BIN)/.installed: pyproject.toml constraints.txt
	@echo "installing the pinned dependencies into $(VENV) (constraints.txt)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -qq "uv==$$(grep '^uv==' constraints.txt | cut -d= -f3)"
	@$(BIN)/uv pip install -q --python $(BIN)/python -c constraints.txt --compile-bytecode -e '.[dev,spark]'
	@$(BIN)/python -m compileall -q delivery_lake assets bench
	@touch $@

install: $(BIN)/.installed  ## create .venv and install the pinned dependencies

demo: install  ## generate two weeks x 8 clients, run every asset in-process, print the summary, ask two questions
	@mkdir -p $(DAGSTER_HOME)
	@$(BIN)/delivery-lake generate --out $(INBOX_DIR) --start $(DEMO_START) --days $(DEMO_DAYS) --clients $(DEMO_CLIENTS) --quiet
	@$(BIN)/delivery-lake run --summary
	@echo; echo 'Two questions in plain English (delivery-lake ask "..."; more in the README):'
	@$(BIN)/delivery-lake ask "on-time rate by client last week"
	@$(BIN)/delivery-lake ask "which depot had the most deliveries yesterday"

docs: install  ## rebuild the GX Data Docs site from stored validation results into DATA_DIR/data_docs (offline-safe)
	$(BIN)/delivery-lake docs

test: install  ## run the whole test suite (installs Chromium / starts PostgreSQL when missing; starts its own SeaweedFS)
	bash infra/test-prereqs.sh
	$(BIN)/pytest -q

test-fast: install  ## the fast tier (no S3 server, browser, production profile or end-to-end runs): under two minutes
	@# two workers (pytest-xdist): these tests share nothing but the machine (tmp_path, ephemeral
	@# instances); serially they took 161 s here, with two workers 117 s
	$(BIN)/pytest -q -n 2 -m "not slow and not s3 and not browser and not production and not spark"

ui: install  ## Dagster UI on http://127.0.0.1:3000 (history of `make demo` included)
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

mlflow-ui: install  ## MLflow UI on http://127.0.0.1:5000 over the embedded store (DATA_DIR/mlflow)
	mkdir -p $(DATA_DIR)/mlflow/artifacts
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(DATA_DIR)/mlflow/mlflow.db}" \
	  --default-artifact-root "$${MLFLOW_ARTIFACTS_DIR:-$(DATA_DIR)/mlflow/artifacts}" --host 127.0.0.1 --port 5000

lake-up: install  ## start SeaweedFS S3 on 127.0.0.1:$(LAKE_PORT) (keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
	$(BIN)/python -m infra.seaweed up --dir $(DATA_DIR)/seaweed --port $(LAKE_PORT) --pidfile $(DATA_DIR)/seaweed.pid

lake-down:  ## stop the SeaweedFS started by lake-up
	$(BIN)/python -m infra.seaweed down --pidfile $(DATA_DIR)/seaweed.pid

contract: install  ## regenerate docs/contract.md from the contract
	$(BIN)/delivery-lake contract

lint: install  ## ruff (rules and formatting), mypy, and the import-layer contract (pyproject.toml)
	$(BIN)/ruff check delivery_lake assets tests bench infra
	$(BIN)/ruff format --check delivery_lake assets tests bench infra
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/delivery-lake metrics --check-docs

fmt: install  ## format the code (ruff)
	$(BIN)/ruff format delivery_lake assets tests bench infra

lock: install  ## re-pin constraints.txt from the current virtualenv
	{ echo '# Exact versions CI and the Makefile install (regenerate with `make lock`).'; \
	  $(BIN)/uv pip freeze --python $(BIN)/python --exclude-editable | grep -v '^delivery-lake'; } > constraints.txt

clean:  ## remove generated data (keeps .venv)
	rm -rf $(DATA_DIR) test-output

# ---- benchmark (issue 7): bench/README.md ----------------------------------------------------
BENCH_SCALE ?= 1.0
.PHONY: bench bench-smoke

# compileall again: code edited since install would otherwise be recompiled by every timed
# process (docs/performance.md has the measurement).
bench: install  ## benchmark at ~$(BENCH_SCALE) GB and 4x: landing vs DuckDB vs pandas -> bench/results/latest.json
	$(BIN)/python -m compileall -q delivery_lake bench
	$(BIN)/python -m bench.run --scale $(BENCH_SCALE)
	$(BIN)/python -m bench.drop --result bench/results/drop.json --into bench/results/latest.json  # times a drop under `make up`; else says skipped
	$(BIN)/python -m bench.workers --result bench/results/workers.json  # two Celery workers over one; needs local Redis

bench-smoke: install  ## seconds: tiny benchmark run; asserts equal answers across contestants (never timings)
	$(BIN)/python -m bench.run --smoke

# ---- landing on Celery workers (issue 25): infra/README.md, "Landing on several workers" ----------
WORKERS ?= 2
.PHONY: workers workers-down workers-status

workers: install  ## start WORKERS (2) Celery workers here for DAGSTER_EXECUTOR=celery (needs CELERY_BROKER_URL)
	$(BIN)/python -m infra.workers start --count $(WORKERS)

workers-down:  ## stop the workers `make workers` started (pid files in $(DATA_DIR)/run)
	$(BIN)/python -m infra.workers stop

workers-status:  ## which of those workers run
	$(BIN)/python -m infra.workers status

# ---- production profile (issue 6): infra/README.md ----------------------------------------------
.PHONY: up down status env

env: install  ## write .env with fresh random S3 keys for the stack (keeps values already set; never committed)
	$(BIN)/python -m infra.stack init-env

up: install  ## start SeaweedFS, MLflow server, Dagster webserver + daemon on 127.0.0.1 (Postgres at 127.0.0.1:5432); prints the URLs
	$(BIN)/python -m infra.stack up

down:  ## stop exactly what `make up` started (pid files in $(DATA_DIR)/run)
	$(BIN)/python -m infra.stack down

status:  ## which stack processes run
	$(BIN)/python -m infra.stack status
