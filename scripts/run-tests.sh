#!/usr/bin/env bash
# The whole suite, in order of cost. Called by `make test` after the test bed is up.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
mkdir -p test-output
step() { printf '\n=== %s ===\n' "$*"; }

step "test-only dependencies (Chromium, node packages)"
scripts/test-deps.sh

step "lint (ruff) and types (mypy)"
"$VENV/bin/ruff" check daemon tests bench
"$VENV/bin/mypy"

if command -v node >/dev/null && [ -d tests/js ]; then
  step "page logic (node --test)"
  node --test tests/js/
fi

step "pytest: unit, integration, security, e2e, ops, browser, container"
"$VENV/bin/pytest" -ra --durations=15 \
  --cov=vizdesk --cov-report=term:skip-covered --cov-report=xml:test-output/coverage.xml \
  --junitxml=test-output/junit.xml "$@"
