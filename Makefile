# Every target creates .venv by itself when it is missing or older than pyproject.toml.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/.dagster
export SOFIA_DATA_DIR ?= $(CURDIR)/data

.PHONY: demo test ui report bench bench-quick bench-risk clean-data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m sofia_pipelines.defs.dbt.project
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sofia demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=15

ui: $(STAMP)
	$(BIN)/dagster dev -w workspace.yaml -p 3000

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

bench-risk: $(STAMP)
	$(BIN)/python bench/bench_risk.py

report: $(STAMP)
	$(BIN)/python -m sofia_pipelines.report

clean-data:
	rm -rf data/warehouse.duckdb data/serving data/audit data/control data/reports
