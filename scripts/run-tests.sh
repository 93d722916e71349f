#!/usr/bin/env bash
# The whole suite, in order of cost. Called by `make test` after the test bed is up.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
mkdir -p test-output
step() { printf '\n=== %s ===\n' "$*"; }

step "test-only dependencies (Chromium, node packages)"
scripts/test-deps.sh

step "Slurm 25.11 + pyslurm build (background; cached by checksum)"
testbed/slurm2511.sh build-bg

step "TurboVNC 3.3 + VirtualGL 3.1.4 build (background; cached by checksum)"
testbed/vgl.sh build-bg

step "lint (ruff) and types (mypy)"
"$VENV/bin/ruff" check daemon tests bench
"$VENV/bin/mypy"

if command -v node >/dev/null && [ -d tests/js ]; then
  step "page logic (node --test)"
  node --test tests/js/
fi

step "pytest: unit, integration, security, e2e, ops, browser, container"
rc=0
"$VENV/bin/pytest" -ra --durations=15 \
  --cov=vizdesk --cov-report=term:skip-covered --cov-report=xml:test-output/coverage.xml \
  --junitxml=test-output/junit.xml "$@" || rc=$?

step "Slurm 25.11 tier: the pyslurm backend on a real Slurm 25.11"
tier=0
testbed/slurm2511-tier.sh || tier=$?

step "cluster tier: head + 3 compute nodes in namespaces (testbed/cluster.sh)"
cluster=0
VENV="$VENV" testbed/cluster-tier.sh || cluster=$?

step "HA tier: HAProxy, Redis + Sentinel x3, three daemon replicas (testbed/ha.sh)"
ha=0
VENV="$VENV" testbed/ha-tier.sh || ha=$?
if ((rc != 0)); then exit "$rc"; fi
if ((tier != 0)); then exit "$tier"; fi
if ((cluster != 0)); then exit "$cluster"; fi
exit "$ha"
