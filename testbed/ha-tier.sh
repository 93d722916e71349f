#!/usr/bin/env bash
# The HA tier of the suite: more than one head node (testbed/ha.sh: HAProxy, Redis +
# Sentinel x3, three daemon replicas) on the single-node bed's real Slurm and Xvnc.
#
#   testbed/ha-tier.sh [pytest args]
#
# Needs the single-node bed up (`testbed/testbed.sh up`; its venv is the replicas'). Brings
# the HA bed up (idempotent), runs tests/ha with VIZDESK_HA_TIER=1, then takes the HA bed
# down again (its replicas hold the tracker of their own key prefix only; nothing of the
# single-node bed is touched).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${VENV:-.venv}" && pwd)
testbed/ha.sh up
mkdir -p test-output
set +e
VIZDESK_HA_TIER=1 "$VENV/bin/pytest" -p no:cacheprovider -ra -s --durations=10 \
    --junitxml=test-output/junit-ha.xml tests/ha "$@" 2>&1 | tee test-output/ha-tier.log
rc=${PIPESTATUS[0]}
set -e
testbed/ha.sh down || true
exit "$rc"
