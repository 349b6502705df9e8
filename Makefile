# routedesk: `make run` runs the service on embedded defaults, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup engine lint typecheck check bench bench-backlog clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

setup: $(STAMP) engine

engine:
	@scripts/temporal-cli.sh >/dev/null

run: setup
	$(BIN)/python -m starter.run --config $${ROUTEDESK_CONFIG:-examples/routing.yaml}

test: setup
	TEMPORAL_CLI=$$(scripts/temporal-cli.sh) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy routedesk workflows activities starter worker.py

check: lint typecheck test

clean:
	rm -rf $(VENV) .routedesk
