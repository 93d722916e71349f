#!/usr/bin/env bash
# The cluster tier of the suite: the e2e flows on a head node and 3 compute nodes.
#
#   testbed/cluster-tier.sh [pytest args]
#
# Needs what testbed.sh installs (packages, users alice/bob; `testbed/testbed.sh up` or
# install) and, for the node firewall, the ops tools venv that tests/ops builds. Brings
# the cluster up (testbed/cluster.sh up: idempotent, seconds when warm), then runs
# tests/cluster in its own pytest process INSIDE the head host's namespaces (the daemon
# it starts is on the head; its proxy reaches the nodes over the cluster's bridge).
# The cluster stays up afterwards (like the single-node bed); `cluster.sh down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${VIZDESK_CLUSTER_DIR:-/var/lib/vizdesk-cluster}
VENV=$(cd "${VENV:-.venv}" && pwd)
testbed/cluster.sh up
mkdir -p test-output
exec nsenter -t "$(cat "$DIR/run/hold-head.pid")" -n -m -u --wd="$PWD" -- \
    env VIZDESK_CLUSTER_TIER=1 VIZDESK_CLUSTER_DIR="$DIR" "$VENV/bin/pytest" -p no:cacheprovider \
    -ra --durations=10 --junitxml=test-output/junit-cluster.xml tests/cluster "$@"
