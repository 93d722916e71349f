#!/usr/bin/env bash
# Record real Slurm 22.05 `squeue --json` output from the running test bed into
# tests/fixtures/slurm/ (parser tests of the Slurm CLI backend read it).
#
# Needs `testbed.sh up` (as root). Submits as alice one job of each kind below, waits until
# each has reached its state, then saves
#   squeue-22.05-states.json      `squeue --json` (22.05 ignores filters: every job it knows)
#   squeue-22.05-states-ids.txt   which job id is which kind, and the Slurm version
# and cancels what is still queued. TIMEOUT needs ~60-95 s (time limit 1 min, checked every
# 30 s); set SKIP_TIMEOUT=1 to leave it out.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
OUT=${1:-$REPO/tests/fixtures/slurm}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/vizdesk-fixtures.XXXXXX)
chmod 1777 "$WORK"

submit() { runuser -u alice -- sbatch --parsable --chdir="$WORK" --output="$WORK/%x-%j.out" "$@"; }
state() { scontrol show job -o "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
wait_state() { # ID STATE TIMEOUT
    local i
    for ((i = 0; i < $3 * 5; i++)); do
        [[ $(state "$1") == "$2" ]] && return 0
        sleep 0.2
    done
    echo "job $1 is $(state "$1"), not $2 after $3 s" >&2
    return 1
}

timeout_job=
if [[ -z ${SKIP_TIMEOUT:-} ]]; then
    timeout_job=$(submit -J vizdesk-fx-timeout --time=1 --wrap 'sleep 600')
    t_timeout=$(date +%s)
fi
running=$(submit -J vizdesk-fx-running --time=30 --cpus-per-task=2 --mem=512M --wrap 'sleep 600')
batch=$(submit -J vizdesk-fx-batch-partition -p batch --time=30 --wrap 'sleep 600')
pending_begin=$(submit -J vizdesk-fx-pending-begin --begin=now+1hour --wrap 'true')
pending_held=$(submit -J vizdesk-fx-pending-held --hold --wrap 'true')
pending_dep=$(submit -J vizdesk-fx-pending-dependency --dependency=afterok:"$running" --wrap 'true')
completed=$(submit -J vizdesk-fx-completed --wrap 'echo done')
failed=$(submit -J vizdesk-fx-failed-exit3 --wrap 'echo failing; exit 3')
signaled=$(submit -J vizdesk-fx-failed-signal --wrap 'kill -KILL $$')
cancelled_running=$(submit -J vizdesk-fx-cancelled-running --wrap 'sleep 600')
cancelled_pending=$(submit -J vizdesk-fx-cancelled-pending --hold --wrap 'true')

wait_state "$running" RUNNING 30
wait_state "$batch" RUNNING 30
wait_state "$completed" COMPLETED 30
wait_state "$failed" FAILED 30
wait_state "$signaled" FAILED 30
wait_state "$cancelled_running" RUNNING 30
runuser -u alice -- scancel "$cancelled_running" "$cancelled_pending"
wait_state "$cancelled_running" CANCELLED 30
wait_state "$cancelled_pending" CANCELLED 30
if [[ -n $timeout_job ]]; then
    wait_state "$timeout_job" TIMEOUT 120
    echo "TIMEOUT reached $(($(date +%s) - t_timeout)) s after sbatch"
fi
wait_state "$running" RUNNING 5

squeue --json >"$OUT/squeue-22.05-states.json"
cat >"$OUT/squeue-22.05-states-ids.txt" <<EOF
running=$running
batch_partition_running=$batch
pending_begintime=$pending_begin
pending_held=$pending_held
pending_dependency=$pending_dep
completed=$completed
failed_exit3=$failed
failed_signal9=$signaled
cancelled_running=$cancelled_running
cancelled_pending=$cancelled_pending
timeout=${timeout_job:-skipped}
slurm=$(squeue --version)
captured_with=squeue --json (as root, Debian 12 test bed; 22.05 ignores filters and lists every job it knows)
EOF

runuser -u alice -- scancel "$running" "$batch" "$pending_begin" "$pending_held" "$pending_dep" 2>/dev/null || true
rm -rf "$WORK"
echo "captured into $OUT:"
cat "$OUT/squeue-22.05-states-ids.txt"
