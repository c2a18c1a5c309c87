# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit quality bench clean typecheck-links

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

## Run the whole loop locally: Kafka, embedded Postgres, worker, simulation, summary.
demo: $(STAMP)
	$(BIN)/driftline demo

## Lint, type-check and run every test (starts its own Kafka, Postgres and Prometheus).
test: $(STAMP) typecheck-links
	bash scripts/system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP) typecheck-links
	$(BIN)/ruff check .
	$(BIN)/mypy

# mypy reads the driftline namespace through links to the source folders (pyproject.toml).
typecheck-links:
	@mkdir -p build/typecheck/driftline
	@ln -sfn ../../../streams build/typecheck/driftline/streams
	@ln -sfn ../../../detectors build/typecheck/driftline/detectors

## Detection-quality gates: seeded, deterministic suites that exit non-zero on a missed
## delay, miss or false-alarm bound (CI runs this after `make test`). One command per suite.
quality: $(STAMP)
	$(BIN)/python bench/quality.py --ci
	$(BIN)/python bench/real_traffic.py --ci

## Only the tests that need no broker, database or Prometheus.
unit: $(STAMP)
	$(BIN)/pytest -m "not kafka and not postgres and not prometheus"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
