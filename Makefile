# The same targets run locally and in CI (.ci/run calls `make test`).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
comma  := ,

.DEFAULT_GOAL := help
.PHONY: help bootstrap run test unit lint typecheck bench browser clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t14

# A setup step prints one line; its own output goes to $(SETUP_LOG) and is shown only when the
# step fails. On success pip's output is noise: setuptools' notices about the editable install,
# and on some machines a warning per package about an index location in the pip config.
SETUP_LOG := $(VENV)/setup.log
quietly = echo "$(1)"; $(2) >$(SETUP_LOG) 2>&1 || { grep -v "^WARNING: Location '.*' is ignored" $(SETUP_LOG); exit 1; }

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@$(call quietly,upgrading pip,$(BIN)/python -m pip install --upgrade pip)
	@# torch first: the CPU wheel on disk; never a CUDA build
	@$(call quietly,installing torch 2.13.0 (CPU),$(BIN)/python -m pip install torch==2.13.0)
	@$(call quietly,installing stocktake and its dependencies (first run: a few minutes)…,\
	    $(BIN)/python -m pip install -e '.[dev$(comma)grafana$(comma)ml]')
	@touch $(STAMP)
	@echo "ready: $(VENV) (make help lists the targets)"

bootstrap: $(STAMP)  ## create .venv and install the project with dev tools

run: $(STAMP)  ## start the embedded demo (Tansu + worker + chDB, replays rees46)
	$(BIN)/stocktake up $(ARGS)

test: $(STAMP) browser lint typecheck  ## lint, type-check and run the whole test suite
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

unit: $(STAMP)  ## fast tests only (no broker)
	$(BIN)/pytest -q -m "not integration" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff and the layer contracts (import-linter)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo

typecheck: $(STAMP)  ## mypy
	$(BIN)/mypy

browser:  ## install Chromium if missing (the report test takes a screenshot)
	@command -v chromium >/dev/null || { mkdir -p $(VENV); \
	    $(call quietly,installing Chromium with apt-get,sh -c 'apt-get update -q && apt-get install -y -q chromium'); }

bench: $(STAMP)  ## end-to-end throughput benchmark (stocktake bench)
	$(BIN)/stocktake bench $(ARGS)

clean:  ## remove the venv and local state
	rm -rf $(VENV) .stocktake .pytest_cache .mypy_cache .ruff_cache
