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

.PHONY: help install demo test test-fast ui lake-up lake-down lint fmt contract lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 16

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$$(grep '^uv==' constraints.txt | cut -d= -f3)"
	$(BIN)/uv pip install -q --python $(BIN)/python -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed  ## create .venv and install the pinned dependencies

demo: install  ## generate two weeks x 8 clients, run every asset in-process, print the summary
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/delivery-lake generate --out $(INBOX_DIR) --start $(DEMO_START) --days $(DEMO_DAYS) --clients $(DEMO_CLIENTS) --quiet
	$(BIN)/delivery-lake run --summary

test: install  ## run the whole test suite (starts its own SeaweedFS)
	$(BIN)/pytest -q

ui: install  ## Dagster UI on http://127.0.0.1:3000 (history of `make demo` included)
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lake-up: install  ## start SeaweedFS S3 on 127.0.0.1:$(LAKE_PORT) (keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
	$(BIN)/python -m delivery_lake.seaweed up --dir $(DATA_DIR)/seaweed --port $(LAKE_PORT) --pidfile $(DATA_DIR)/seaweed.pid

lake-down:  ## stop the SeaweedFS started by lake-up
	$(BIN)/python -m delivery_lake.seaweed down --pidfile $(DATA_DIR)/seaweed.pid

contract: install  ## regenerate docs/contract.md from the contract
	$(BIN)/delivery-lake contract

lint: install  ## ruff
	$(BIN)/ruff check delivery_lake assets tests

fmt: install
	$(BIN)/ruff format delivery_lake assets tests

lock: install  ## re-pin constraints.txt from the current virtualenv
	{ echo '# Exact versions CI and the Makefile install (regenerate with `make lock`).'; \
	  $(BIN)/uv pip freeze --python $(BIN)/python --exclude-editable | grep -v '^delivery-lake'; } > constraints.txt

clean:  ## remove generated data (keeps .venv)
	rm -rf $(DATA_DIR) test-output
