# routedesk: `make run` runs the service on embedded defaults, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup engine imap-server browser lint typecheck check bench bench-backlog bench-cli bench-api clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,postgres]'
	@touch $(STAMP)

setup: $(STAMP) engine

engine:
	@scripts/temporal-cli.sh >/dev/null

# Dovecot for the IMAP intake tests (installed with apt-get when missing).
imap-server:
	@scripts/dovecot.sh

# Debian's Chromium for the console's browser tests (installed with apt-get when missing).
browser:
	@scripts/chromium.sh

run: setup
	$(BIN)/python -m starter.run --config $${ROUTEDESK_CONFIG:-examples/routing.yaml}

# Every test that touches the case store runs on SQLite and on PostgreSQL: the suite starts a
# throwaway cluster from Debian's postgresql package (installed here when missing), or uses
# the server a PostgreSQL DATABASE_URL names. The tests wait on servers more than they compute,
# so they run in TEST_JOBS processes (pytest-xdist), each with its own servers; the few that
# assert a latency bound (marked serial) run afterwards, alone. TEST_JOBS=0: all in one process.
TEST_JOBS ?= 2
PYTEST := TEMPORAL_CLI=$$(scripts/temporal-cli.sh) $(BIN)/python -m pytest
test: setup imap-server browser
	@scripts/ensure-postgres.sh
ifeq ($(TEST_JOBS),0)
	$(PYTEST) $(PYTEST_ARGS)
else
	$(PYTEST) -n $(TEST_JOBS) -m "not serial" $(PYTEST_ARGS)
	$(PYTEST) -m serial $(PYTEST_ARGS) || test $$? -eq 5
endif

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy routedesk workflows activities starter worker.py tests bench

check: lint typecheck test

clean:
	rm -rf $(VENV) .routedesk

# Benchmarks (docs/benchmarks.md). Options: N, RATE (0 = as fast as possible), CONC, THINK_MS,
# HOLD_MS, PROFILE=1 (py-spy on the worker), TAG, SRC (another checkout's product code);
# bench-backlog: BACKLOG (default 10000).
bench: setup
	$(if $(filter 1 yes true,$(PROFILE)),@test -x $(BIN)/py-spy || $(BIN)/python -m pip install --quiet py-spy)
	TEMPORAL_CLI=$$(scripts/temporal-cli.sh) $(if $(SRC),BENCH_SRC=$(SRC)) $(BIN)/python -m bench.run \
		$(if $(N),--emails $(N)) $(if $(RATE),--rate $(RATE)) $(if $(CONC),--concurrency $(CONC)) \
		$(if $(THINK_MS),--think-ms $(THINK_MS)) $(if $(HOLD_MS),--hold-ms $(HOLD_MS)) \
		$(if $(filter 1 yes true,$(PROFILE)),--profile) $(if $(TAG),--tag $(TAG)) $(BENCH_ARGS)

bench-backlog: setup
	TEMPORAL_CLI=$$(scripts/temporal-cli.sh) $(if $(SRC),BENCH_SRC=$(SRC)) $(BIN)/python -m bench.backlog \
		$(if $(BACKLOG),--count $(BACKLOG)) $(if $(CONC),--concurrency $(CONC)) $(if $(TAG),--tag $(TAG)) $(BENCH_ARGS)

# Start-up time of the read-only CLI commands (RUNS per command) and the latency of the
# agents' offers endpoint (REQUESTS); docs/benchmarks.md, *CLI start-up* and *API latency*.
bench-cli: setup
	$(BIN)/python -m bench.cli_startup $(if $(RUNS),--runs $(RUNS)) $(if $(SRC),--src $(SRC)) $(BENCH_ARGS)

bench-api: setup
	TEMPORAL_CLI=$$(scripts/temporal-cli.sh) $(BIN)/python -m bench.api_latency $(if $(REQUESTS),--requests $(REQUESTS)) $(BENCH_ARGS)
