# smsledger — the commands the README names. Each installs what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed


.PHONY: run demo test test-faults test-browser screenshots check lint format install system-deps clean

## run: the API and pages on the embedded default (SQLite under ./var/, migrations applied on
## start); PORT=8080 make run for another port; logs as text (LOG_FORMAT=json for JSON)
run: install
	LOG_FORMAT=$${LOG_FORMAT:-text} $(BIN)/smsledger serve

## demo: the whole flow end to end (simulator, service, an SMS, a cycle, a charge), then where
## to look; Ctrl-C stops it
demo: install
	bash examples/demo.sh

## test: lint, architecture contracts, types, then the whole suite on a throwaway PostgreSQL
test: install system-deps
	$(MAKE) --no-print-directory check
	$(BIN)/pytest --cov --cov-report=term

## test-faults: only the fault-injection tests (also part of `make test`)
test-faults: install system-deps
	$(BIN)/pytest -m faults

## test-browser: only the pages' browser tests (also part of `make test`)
test-browser: install system-deps
	$(BIN)/pytest -m browser

## screenshots: docs/screenshots/*.png of every page, desktop and a 390 px phone
screenshots: install system-deps
	$(BIN)/python -m tests.web.screenshots docs/screenshots

check:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# From Debian's packages when missing and running as root: PostgreSQL 15 binaries for the
# throwaway test cluster, redis-server for the job tests, chromium for the pages' browser tests
# (Playwright drives it; it never downloads a browser of its own), and promtool (package
# prometheus) for the alert rules' tests, pgbouncer for the API tests through a transaction pooler.
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null; \
		else echo "PostgreSQL 15 binaries missing: install postgresql-15" >&2; exit 1; fi; fi
	@if ! command -v redis-server >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; \
		else echo "redis-server missing: install redis-server" >&2; exit 1; fi; fi
	@if ! command -v chromium >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
		else echo "chromium missing: install chromium" >&2; exit 1; fi; fi
	@if ! command -v promtool >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		else echo "promtool missing: install prometheus (for promtool)" >&2; exit 1; fi; fi
	@if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; \
		else echo "pgbouncer missing: install pgbouncer" >&2; exit 1; fi; fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis .coverage
