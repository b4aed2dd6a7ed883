# One command surface for people and CI. `make up` and `make test` are the two
# set-up commands in README.md: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint typecheck pytest fmt bench schema clean deps-system

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/relaygate up $(if $(CONFIG),--config $(CONFIG))

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) deps-system
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# System packages the tests start as real processes: etcd (service discovery tests) and
# chromium (the dashboard's browser test, driven by Playwright: no browser download).
# Idempotent and quiet: installs only what is missing (Debian/Ubuntu, run as root).
SYSTEM_PACKAGES := etcd:etcd-server chromium:chromium

deps-system:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null && apt-get install -y -qq $$missing >/dev/null; }; \
	fi

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schema: $(STAMP)
	$(BIN)/relaygate schema > docs/config.schema.json

bench: $(STAMP)
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
