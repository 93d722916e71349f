#!/usr/bin/env bash
# Start (or stop) the vizdesk daemon on the running test bed and show how to use it.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${VIZDESK_TESTBED_DIR:-/var/lib/vizdesk-testbed}
VENV=${VENV:-.venv}
CONFIG="$DIR/vizdesk.yaml"
PIDFILE="$DIR/run/daemon.pid"
LOG="$DIR/log/daemon.log"
# The test bed's Slurm (never /etc/slurm/slurm.conf, which may be another cluster's).
SLURM_CONF=$(sed -n 's/^SLURM_CONF=//p' "$DIR/env" 2>/dev/null || true)
[ -n "$SLURM_CONF" ] && export SLURM_CONF
PORT=$("$VENV/bin/python" -c "from vizdesk.config import load_config; print(load_config('$CONFIG').server.port)")
URL="http://127.0.0.1:$PORT"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if [ "${1:-}" = stop ]; then
  if running; then kill "$(cat "$PIDFILE")"; echo "daemon stopped"; else echo "daemon not running"; fi
  rm -f "$PIDFILE"
  exit 0
fi

if ! running; then
  mkdir -p "$DIR/run" "$DIR/log"
  nohup "$VENV/bin/vizdesk" --config "$CONFIG" serve >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
    running || { echo "daemon failed to start; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
    sleep 0.1
  done
fi
TOKEN=$("$VENV/bin/vizdesk" --config "$CONFIG" token --user alice --groups demo --ttl 28800)
cat <<TXT

vizdesk is running: $URL   (log: $LOG, stop: make demo-stop)
readiness: $(curl -sS "$URL/readyz")

Open the portal (token handed over in the URL fragment, never sent to the server in a URL):
  $URL/#token=$TOKEN

Demo token for alice (8 h):
  $TOKEN

Launch a desktop with curl:
  curl -sS -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{"geometry": "1280x800"}' $URL/api/v1/sessions

Follow it:
  curl -sS -H "Authorization: Bearer $TOKEN" $URL/api/v1/sessions
TXT
