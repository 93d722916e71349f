#!/usr/bin/env bash
# Record real `squeue --Format` output (the CLI backend's filtered text query, see
# daemon/vizdesk/slurm/squeue_text.py) into tests/fixtures/slurm/, for its parser tests.
#
#   testbed/capture-text-fixtures.sh 22.05        # the Debian 12 test bed (testbed.sh up)
#   testbed/capture-text-fixtures.sh 26.05        # the sid root (testbed/sid/sidroot.sh up)
#
# Run it inside the bed lock (flock -o /tmp/vizdesk-bed.lock ...). Submits as alice one job
# of each kind, waits until each reached its state, then saves
#   squeue-<v>-text-states.txt   the query with --jobs=<every kind>,<an id never submitted>
#   squeue-<v>-text-unknown.txt  the query with --jobs=<an id never submitted> (stdout,
#                                then a line "--- stderr (exit N)" and its stderr)
#   squeue-<v>-text-ids.txt      which job id is which kind, and the Slurm version
# and cancels what is still queued.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
VER=${1:?usage: $0 22.05|26.05 [OUTDIR]}
OUT=${2:-$REPO/tests/fixtures/slurm}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "$OUT"
PY=${PYTHON:-$REPO/.venv/bin/python}
FMT=$("$PY" -c 'from vizdesk.slurm.squeue_text import format_option; print(format_option())')

case $VER in
22.05)
    # shellcheck disable=SC1091
    SLURM_CONF=$(sed -n "s/^SLURM_CONF=//p" /var/lib/vizdesk-testbed/env)
    export SLURM_CONF
    WORK=$(mktemp -d /tmp/vizdesk-fixtures.XXXXXX)
    chmod 1777 "$WORK"
    as_alice() { runuser -u alice -- "$@"; }
    ;;
26.05)
    WORK=/tmp
    as_alice() { "$HERE/sid/sidroot.sh" run -u alice -- "$@"; }
    ;;
*) echo "unknown version $VER" >&2; exit 2 ;;
esac

submit() { as_alice sbatch --parsable --chdir="$WORK" --output="$WORK/fx-%j.out" "$@"; }
state() { as_alice squeue -h -t all -j "$1" -o '%T' 2>/dev/null || true; }
wait_state() { # ID STATE TIMEOUT
    local i
    for ((i = 0; i < $3 * 5; i++)); do
        [[ $(state "$1") == "$2" ]] && return 0
        sleep 0.2
    done
    echo "job $1 is $(state "$1"), not $2 after $3 s" >&2
    return 1
}

running=$(submit -J vizdesk-fx-running --time=30 --wrap 'sleep 600')
pending_begin=$(submit -J vizdesk-fx-pending-begin --begin=now+1hour --wrap 'true')
pending_held=$(submit -J vizdesk-fx-pending-held --hold --wrap 'true')
completed=$(submit -J vizdesk-fx-completed --wrap 'echo done')
failed=$(submit -J vizdesk-fx-failed-exit3 --wrap 'echo failing; exit 3')
signaled=$(submit -J vizdesk-fx-failed-signal --wrap 'kill -KILL $$')
cancelled_running=$(submit -J vizdesk-fx-cancelled-running --wrap 'sleep 600')
cancelled_pending=$(submit -J vizdesk-fx-cancelled-pending --hold --wrap 'true')
odd_name=$(submit -J $'vizdesk fx, odd|name\x1fwith separator' --hold --wrap 'true')

wait_state "$running" RUNNING 30
wait_state "$completed" COMPLETED 30
wait_state "$failed" FAILED 30
wait_state "$signaled" FAILED 30
wait_state "$cancelled_running" RUNNING 30
as_alice scancel "$cancelled_running" "$cancelled_pending"
wait_state "$cancelled_running" CANCELLED 30
wait_state "$cancelled_pending" CANCELLED 30

unknown=999999
ids="$running,$pending_begin,$pending_held,$completed,$failed,$signaled,$cancelled_running,$cancelled_pending,$odd_name,$unknown"
as_alice env SLURM_TIME_FORMAT=%s squeue --noheader --all --states=all --jobs="$ids" "$FMT" \
    >"$OUT/squeue-$VER-text-states.txt"
rc=0
as_alice env SLURM_TIME_FORMAT=%s squeue --noheader --all --states=all --jobs="$unknown" "$FMT" \
    >"$OUT/squeue-$VER-text-unknown.txt" 2>"$WORK/unknown.err" || rc=$?
{ echo "--- stderr (exit $rc)"; cat "$WORK/unknown.err"; } >>"$OUT/squeue-$VER-text-unknown.txt"
cat >"$OUT/squeue-$VER-text-ids.txt" <<EOF
running=$running
pending_begintime=$pending_begin
pending_held=$pending_held
completed=$completed
failed_exit3=$failed
failed_signal9=$signaled
cancelled_running=$cancelled_running
cancelled_pending=$cancelled_pending
odd_name=$odd_name
unknown=$unknown
slurm=$(as_alice squeue --version)
captured_with=SLURM_TIME_FORMAT=%s squeue --noheader --all --states=all --jobs=<ids> <FMT below> (as alice)
format=$FMT
EOF
as_alice scancel "$running" "$pending_begin" "$pending_held" "$odd_name" 2>/dev/null || true
[[ $VER == 22.05 ]] && rm -rf "$WORK"
echo "captured into $OUT:"
cat "$OUT/squeue-$VER-text-ids.txt"
