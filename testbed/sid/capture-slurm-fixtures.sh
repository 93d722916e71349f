#!/usr/bin/env bash
# capture-slurm-fixtures.sh — record real Slurm 26.05 `squeue --json` output from the sid root
# into tests/fixtures/slurm/ (parser tests of the Slurm CLI backend read them).
#
# Needs `sidroot.sh up`. Submits, as alice, one job of each interesting kind: running,
# pending (BeginTime), completed (exit 0), failed (exit 3), cancelled; then saves
#   squeue-26.05-all.json       `squeue --json --states=all` (every job slurmctld still knows)
#   squeue-26.05-default.json   `squeue --json` (26.05 lists only pending/running by default!)
#   squeue-26.05-jobs.json      `squeue --json --states=all --jobs=<running>,<failed>` (filter works)
#   squeue-26.05-unknown.json   `squeue --json --states=all --jobs=<id never submitted>`: exit 1,
#                               empty stdout, "Invalid job id specified" on stderr (.stderr)
#   squeue-26.05-jobs-with-unknown.json  `... --jobs=<running>,<never submitted>`: exit 0, the
#                               known job only
#   squeue-26.05-ids.txt        which job id is which kind (read by the tests)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-$REPO/tests/fixtures/slurm}
S=$HERE/sidroot.sh
mkdir -p "$OUT"
as_alice() { "$S" run -u alice -- "$@"; }

submit() { as_alice sbatch --parsable --chdir=/tmp --output=/tmp/fixture-%j.out "$@"; }
running=$(submit -J vizdesk-fx-running --time=10 --wrap 'sleep 300')
pending=$(submit -J vizdesk-fx-pending --begin=now+1hour --wrap 'true')
completed=$(submit -J vizdesk-fx-completed --wrap 'echo done')
failed=$(submit -J vizdesk-fx-failed --wrap 'echo failing; exit 3')
cancelled=$(submit -J vizdesk-fx-cancelled --wrap 'sleep 300')
# wait until the short jobs ended and the others run
for _ in $(seq 100); do
    st=$(as_alice squeue -h -t all -j "$running,$completed,$failed,$cancelled" -o '%i %T' | sort)
    grep -q "^$running RUNNING" <<<"$st" && grep -q "^$completed COMPLETED" <<<"$st" &&
        grep -q "^$failed FAILED" <<<"$st" && grep -q "^$cancelled RUNNING" <<<"$st" && break
    sleep 0.2
done
as_alice scancel "$cancelled"
for _ in $(seq 100); do
    as_alice squeue -h -t all -j "$cancelled" -o '%T' | grep -q CANCELLED && break
    sleep 0.2
done
as_alice squeue --json --states=all >"$OUT/squeue-26.05-all.json"
as_alice squeue --json >"$OUT/squeue-26.05-default.json"
as_alice squeue --json --states=all --jobs="$running,$failed" >"$OUT/squeue-26.05-jobs.json"
rc=0
as_alice squeue --json --states=all --jobs=999999 >"$OUT/squeue-26.05-unknown.json" 2>"$OUT/squeue-26.05-unknown.stderr" || rc=$?
as_alice squeue --json --states=all --jobs="$running,999999" >"$OUT/squeue-26.05-jobs-with-unknown.json"
cat >"$OUT/squeue-26.05-ids.txt" <<EOF
running=$running
pending=$pending
completed=$completed
failed=$failed
cancelled=$cancelled
unknown_exit_code=$rc
slurm=$(as_alice sinfo --version)
EOF
as_alice scancel "$running" "$pending" || true
echo "captured into $OUT:"
cat "$OUT/squeue-26.05-ids.txt"
