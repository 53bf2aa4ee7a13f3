# The two commands a newcomer needs: `make run` and `make test`. Each builds what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: run test lint check-imports pytest bench lock clean

$(BIN)/python:
	$(PYTHON) scripts/mkvenv.py $(VENV)

$(VENV)/.runtime: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(PIP) -e '.[dev]'
	@touch $@

## Start the control plane on SQLite with a simulated fleet; prints the dashboard URL.
run: $(VENV)/.runtime
	$(BIN)/fleetwarden demo

## Lint, types, import layering, then the whole test suite (SQLite and PostgreSQL).
test: $(VENV)/.dev lint
	$(BIN)/pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## Benchmarks (not part of `make test`); QUICK=1 for the short form.
bench: $(VENV)/.dev
	@for b in bench/*.py; do $(BIN)/python $$b $(if $(QUICK),--quick,) || exit 1; done

## Re-pin every dependency (needs network to PyPI).
lock: $(VENV)/.dev
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -q -o constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
