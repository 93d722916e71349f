# vizdesk: the two commands a fresh Debian 12 machine needs (as root):
#   make demo   set up the test bed (Slurm, Redis, TigerVNC, users alice/bob), start the daemon
#   make test   the whole suite (lint, types, unit, integration, e2e on the real test bed, ...)
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
TESTBED := testbed/testbed.sh
DEMO_PORT ?= 8080
export VIZDESK_TESTBED_DIR ?= /var/lib/vizdesk-testbed

.PHONY: demo demo-stop test test-fast lint dev testbed-up testbed-down testbed-status clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

dev: $(VENV)/.installed

testbed-up:
	$(TESTBED) up

testbed-down:
	$(TESTBED) down

testbed-status:
	$(TESTBED) status

demo: testbed-up dev
	@scripts/demo.sh

demo-stop:
	@scripts/demo.sh stop

lint: dev
	$(VENV)/bin/ruff check daemon tests bench
	$(VENV)/bin/ruff format --check daemon
	$(VENV)/bin/mypy

test: testbed-up dev
	scripts/run-tests.sh

test-fast: dev
	$(VENV)/bin/pytest -q tests/unit

clean:
	rm -rf $(VENV) test-output .pytest_cache .mypy_cache .ruff_cache
