# The same targets run locally and in CI (.ci/run calls `make test`).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help bootstrap run test unit lint typecheck bench browser clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t14

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0  # first: the CPU wheel on disk; never a CUDA build
	$(BIN)/python -m pip install -q -e '.[dev,grafana,ml]'
	@touch $(STAMP)

bootstrap: $(STAMP)  ## create .venv and install the project with dev tools

run: $(STAMP)  ## start the embedded demo (Tansu + worker + chDB, replays rees46)
	$(BIN)/stocktake up $(ARGS)

test: $(STAMP) browser lint typecheck  ## lint, type-check and run the whole test suite
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

unit: $(STAMP)  ## fast tests only (no broker)
	$(BIN)/pytest -q -m "not integration" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff and the layer contracts (import-linter)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)  ## mypy
	$(BIN)/mypy

browser:  ## install Chromium if missing (the report test takes a screenshot)
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

bench: $(STAMP)  ## end-to-end throughput benchmark (stocktake bench)
	$(BIN)/stocktake bench $(ARGS)

clean:  ## remove the venv and local state
	rm -rf $(VENV) .stocktake .pytest_cache .mypy_cache .ruff_cache
