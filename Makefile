# The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
# The test broker has its own port and data so it never disturbs a running demo.
TEST_KAFKA_PORT ?= 19092
TEST_KAFKA_CONTROLLER_PORT ?= 19093
PYTEST_ARGS ?=

.PHONY: help install browser lint format test unit reliability run bench kafka-up kafka-down schemas clean

help:
	@echo "make run    - start local Kafka, sandbox, webhook and worker; run the demo journeys"
	@echo "make test   - install, lint, type-check, start a test broker, run the whole suite"
	@echo "make lint   - ruff check, ruff format --check, mypy"
	@echo "make format - ruff format and ruff check --fix"
	@echo "make unit   - the tests that need no broker"
	@echo "make reliability - only the crash, restart, fault, load, bad-input and security tests"
	@echo "make bench  - benchmarks on the real local broker; writes docs/BENCHMARKS.md"
	@echo "make schemas - regenerate the JSON Schemas in schemas/json/"
	@echo "make kafka-up / kafka-down - the local single-node Kafka on 127.0.0.1:9092"
	@echo "make browser - Debian's chromium for the console's browser tests"
	@echo "make clean  - stop local brokers, remove the venv and local data"

$(STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

install: $(STAMP)

# Debian's chromium for the browser tests (Playwright drives it; no browser download).
browser:
	@deploy/browser/install

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy engine activities connectors schemas tests

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schemas: install
	$(BIN)/python -m schemas.export

unit: install
	$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

# Starts its own broker unless KAFKA_BOOTSTRAP_SERVERS names one; stops only what it started.
test: lint browser
	@status=0; \
	if [ -z "$${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then \
	  export KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_CONTROLLER_PORT=$(TEST_KAFKA_CONTROLLER_PORT); \
	  export KAFKA_BOOTSTRAP_SERVERS=$$(deploy/kafka/start | tail -n 1); \
	  started=1; \
	else started=0; fi; \
	echo "tests use Kafka at $$KAFKA_BOOTSTRAP_SERVERS"; \
	$(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$started = 1 ]; then KAFKA_PORT=$(TEST_KAFKA_PORT) KAFKA_WIPE=1 deploy/kafka/stop; fi; \
	exit $$status

# Only tests/reliability (make test runs it too): kills, broker restart, API faults,
# rebalances, a burst, bad input and security (docs/RELIABILITY.md).
reliability:
	@$(MAKE) --no-print-directory test PYTEST_ARGS="tests/reliability $(PYTEST_ARGS)"

kafka-up:
	@deploy/kafka/start

kafka-down:
	@deploy/kafka/stop

run: install
	@$(BIN)/python -m engine.cli.demo

bench: install
	@$(BIN)/python -m bench.run

clean:
	deploy/kafka/stop --all || true
	rm -rf $(VENV) .kafka .demo build dist *.egg-info
