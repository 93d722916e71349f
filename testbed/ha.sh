#!/usr/bin/env bash
# vizdesk HA test bed: more than one head node on one machine, beside the single-node bed
# (testbed.sh), whose Slurm, users, secrets and venv it uses.
#
#   ha.sh up                   start what is not running; wait until all answer
#   ha.sh down                 stop everything it started
#   ha.sh status               one line per component; exit 0 when all are up
#   ha.sh restart-replica N    SIGTERM replica N (graceful: 1012 to its websockets), start it
#   ha.sh start-redis N        start Redis N again (after a test killed it)
#
# Components, all on 127.0.0.1 (ports kept in $DIR/ports once chosen; the next free ones
# when a default is taken, so it comes up beside an unrelated Redis or HAProxy):
#   Redis ×3       6480 (first primary), 6481, 6482 (replicas of it), the bed's password
#   Sentinel ×3    26480-26482, master "vizdesk", quorum 2, down after 1 s
#   vizdesk ×3     8481-8483, replica1..3, through the Sentinels, tracker lease 4 s; each
#                  asks Slurm through its own squeue wrapper (bin/squeue-N) that logs every
#                  call to log/squeue.log ("EPOCH replicaN ARGS") and waits while the file
#                  $DIR/slow-squeue-N exists (the tests' "slow Slurm")
#   HAProxy        8480, with the shipped deploy/haproxy/vizdesk.cfg
# Every process is ours only by its pid file under $DIR/run plus its command line (config
# path or listen address): never found by name. State: $VIZDESK_HA_DIR (/var/lib/vizdesk-ha);
# after `up` it holds env (KEY=VALUE lines for tests).
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
BED=ha
DIR=${VIZDESK_HA_DIR:-/var/lib/vizdesk-ha}
BED_DIR=${VIZDESK_TESTBED_DIR:-/var/lib/vizdesk-testbed}
LOG=$DIR/log
RUN=$DIR/run
PORTS=$DIR/ports
PYTHON=/usr/bin/python3
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
# shellcheck source=common.sh
source "$HERE/common.sh"

N=3
MASTER=vizdesk
HOST=127.0.0.1
PREFIX=vzha:

bed_env() { sed -n "s/^$1=//p" "$BED_DIR/env" | head -n 1; }

load_bed() {
    [[ -r $BED_DIR/env ]] || die "the single-node test bed is not up ($BED_DIR/env missing): testbed/testbed.sh up"
    BED_CONFIG=$(bed_env VIZDESK_CONFIG)
    VENV=$(bed_env VIZDESK_VENV)
    PASSWORD_FILE=$(bed_env REDIS_PASSWORD_FILE)
    JWT_SECRET_FILE=$(bed_env JWT_SECRET_FILE)
    export SLURM_CONF
    SLURM_CONF=$(bed_env SLURM_CONF)
    [[ -x $VENV/bin/python && -r $PASSWORD_FILE ]] || die "the test bed's venv or Redis password is missing"
}

# --- ports --------------------------------------------------------------------------------

saved_port() { [[ -r $PORTS ]] && sed -n "s/^$1=\([0-9]*\)$/\1/p" "$PORTS" | head -n 1; }

# port NAME DEFAULT OURS: the saved port (when ours or free) or the next free one.
port() {
    local saved
    saved=$(saved_port "$1" || true)
    choose_port "${saved:-$2}" "$2" "$3" "${TAKEN[@]}"
}

choose_ports() {
    TAKEN=()
    local i ours p
    for ((i = 1; i <= N; i++)); do
        ours=0; redis_pid "$i" >/dev/null 2>&1 && ours=1
        p=$(port "REDIS_$i" $((6479 + i)) "$ours"); TAKEN+=("$p"); printf -v "REDIS_$i" %s "$p"
        ours=0; sentinel_pid "$i" >/dev/null 2>&1 && ours=1
        p=$(port "SENTINEL_$i" $((26479 + i)) "$ours"); TAKEN+=("$p"); printf -v "SENTINEL_$i" %s "$p"
        ours=0; replica_pid "$i" >/dev/null 2>&1 && ours=1
        p=$(port "REPLICA_$i" $((8480 + i)) "$ours"); TAKEN+=("$p"); printf -v "REPLICA_$i" %s "$p"
    done
    ours=0; haproxy_pid >/dev/null 2>&1 && ours=1
    HAPROXY_PORT=$(port HAPROXY 8480 "$ours")
    {
        for ((i = 1; i <= N; i++)); do
            local r=REDIS_$i s=SENTINEL_$i d=REPLICA_$i
            echo "REDIS_$i=${!r}"; echo "SENTINEL_$i=${!s}"; echo "REPLICA_$i=${!d}"
        done
        echo "HAPROXY=$HAPROXY_PORT"
    } | write_if_changed "$PORTS" 0644 root:root || true
}

# Ports as saved (status/down/restart: never chosen anew).
read_ports() {
    [[ -r $PORTS ]] || return 1
    local i
    for ((i = 1; i <= N; i++)); do
        printf -v "REDIS_$i" %s "$(saved_port "REDIS_$i")"
        printf -v "SENTINEL_$i" %s "$(saved_port "SENTINEL_$i")"
        printf -v "REPLICA_$i" %s "$(saved_port "REPLICA_$i")"
    done
    HAPROXY_PORT=$(saved_port HAPROXY)
}

rport() { local v=REDIS_$1; echo "${!v:-0}"; }
sport() { local v=SENTINEL_$1; echo "${!v:-0}"; }
dport() { local v=REPLICA_$1; echo "${!v:-0}"; }

# --- processes ----------------------------------------------------------------------------

redis_pid() { pid_of "$RUN/redis-$1.pid" redis-server "$HOST:$(rport "$1")"; }
sentinel_pid() { pid_of "$RUN/sentinel-$1.pid" redis-server "$HOST:$(sport "$1")"; }
replica_pid() { pid_of "$RUN/replica-$1.pid" python "$DIR/replica-$1.yaml"; }
haproxy_pid() { pid_of "$RUN/haproxy.pid" haproxy "$REPO/deploy/haproxy/vizdesk.cfg"; }

rcli() { REDISCLI_AUTH=$(cat "$PASSWORD_FILE") redis-cli --no-auth-warning -h "$HOST" -p "$1" "${@:2}"; }
scli() { redis-cli -h "$HOST" -p "$(sport "$1")" "${@:2}"; }
redis_ok() { [[ $(rcli "$(rport "$1")" ping 2>/dev/null) == PONG ]]; }
sentinel_ok() { [[ $(scli "$1" ping 2>/dev/null) == PONG ]]; }
replica_ready() { curl -fsS -o /dev/null "http://$HOST:$(dport "$1")/readyz"; }
haproxy_ready() { curl -fsS -o /dev/null "http://$HOST:$HAPROXY_PORT/readyz"; }

# --- Redis and Sentinel -------------------------------------------------------------------

redis_conf() {
    local i=$1 port
    port=$(rport "$i")
    cat <<EOF
# Generated by testbed/ha.sh. Contains the Redis password: root/redis only.
bind $HOST
port $port
protected-mode yes
daemonize yes
pidfile $RUN/redis-$i.pid
logfile $LOG/redis-$i.log
dir $DIR/redis-$i
save ""
appendonly no
proto-max-bulk-len 1mb
# registrations wake the tracker; on every instance, a replica may become the primary
notify-keyspace-events K\$
user default on >$(cat "$PASSWORD_FILE") ~* &* +@all
masterauth $(cat "$PASSWORD_FILE")
EOF
    ((i == 1)) || echo "replicaof $HOST $(rport 1)"
}

# start_instance KIND I: redis-I or sentinel-I (KIND redis|sentinel), as the redis user,
# from its config (written when missing, or anew on a fresh bed: a Redis or Sentinel that
# comes back after a failover keeps what Sentinel rewrote into it, so the Sentinels place
# it as a replica of the new primary; a fresh bed starts with redis-1 as the primary).
start_instance() {
    local kind=$1 i=$2 name=$1-$2 pid port conf extra=()
    port=$([[ $kind == redis ]] && rport "$i" || sport "$i")
    conf=$DIR/$name/$kind.conf
    [[ $kind == sentinel ]] && extra=(--sentinel)
    if pid=$("${kind}_pid" "$i"); then
        say "$name: running (pid $pid, port $port)"
        return 0
    fi
    install -d -m 0750 -o redis -g redis "$DIR/$name"
    if [[ ! -s $conf || ${FRESH:-0} == 1 ]]; then "${kind}_conf" "$i" >"$conf"; fi
    chown redis:redis "$conf"
    chmod 0600 "$conf"
    [[ -e $LOG/$name.log ]] || install -m 0640 -o redis -g redis /dev/null "$LOG/$name.log"
    install -m 0644 -o redis -g redis /dev/null "$RUN/$name.pid"
    nolock runuser -u redis -- redis-server "$conf" "${extra[@]}" >/dev/null ||
        die "$name failed to start: $(tail -n 3 "$LOG/$name.log")"
    wait_for 10 "$kind" "${kind}_ok" "$i" || die "$name does not answer, see $LOG/$name.log"
    say "$name: started (pid $(cat "$RUN/$name.pid"), port $port)"
}

sentinel_conf() {
    local i=$1
    cat <<EOF
# Generated by testbed/ha.sh; Sentinel rewrites it (its view of the primary, the others).
bind $HOST
port $(sport "$i")
daemonize yes
pidfile $RUN/sentinel-$i.pid
logfile $LOG/sentinel-$i.log
dir $DIR/sentinel-$i
sentinel resolve-hostnames no
sentinel monitor $MASTER $HOST $(rport 1) 2
sentinel auth-pass $MASTER $(cat "$PASSWORD_FILE")
sentinel down-after-milliseconds $MASTER 1000
sentinel failover-timeout $MASTER 5000
sentinel parallel-syncs $MASTER 1
EOF
}

# The primary every Sentinel names, and that primary's own word on its role.
primary_agreed() {
    local i want="" got
    for ((i = 1; i <= N; i++)); do
        got=$(scli "$i" sentinel get-master-addr-by-name "$MASTER" 2>/dev/null | tr '\n' ' ') || return 1
        [[ -n ${got// /} ]] || return 1
        [[ -z $want || $want == "$got" ]] || return 1
        want=$got
    done
    [[ $(rcli "$(echo "$want" | awk '{print $2}')" role 2>/dev/null | head -n 1) == master ]]
}

# --- vizdesk replicas ---------------------------------------------------------------------

write_squeue_wrapper() {
    local i=$1 real
    real=$(command -v squeue) || die "squeue not found"
    write_if_changed "$DIR/bin/squeue-$i" 0755 root:root <<EOF || true
#!/bin/sh
# testbed/ha.sh: replica$i's squeue. Logs each call; waits while $DIR/slow-squeue-$i exists.
echo "\$(date +%s.%N) replica$i \$*" >>$LOG/squeue.log
while [ -e $DIR/slow-squeue-$i ]; do sleep 0.1; done
exec $real "\$@"
EOF
}

write_replica_config() {
    local i=$1 sentinels="" j
    for ((j = 1; j <= N; j++)); do sentinels+="$HOST:$(sport "$j"),"; done
    "$VENV/bin/python" - "$BED_CONFIG" "$DIR/replica-$i.yaml" "$i" "$(dport "$i")" "${sentinels%,}" \
        "$DIR/bin/squeue-$i" "$PREFIX" "$HOST:$(rport 1)" <<'PY'
import sys, yaml
from vizdesk.config import load_config
base, out, i, port, sentinels, squeue, prefix, first = sys.argv[1:]
cfg = yaml.safe_load(open(base)) or {}
cfg.setdefault("server", {}).update(host="127.0.0.1", port=int(port), trusted_proxies=["127.0.0.1"])
cfg.setdefault("redis", {}).update(
    url=f"redis://{first}/0", key_prefix=prefix, sentinel_hosts=sentinels.split(","),
    sentinel_master="vizdesk",
)
cfg["tracker"] = {"replica_name": f"replica{i}", "lease_seconds": 4.0}
cfg.setdefault("slurm", {}).update(squeue=squeue, poll_interval_seconds=1.0)
cfg["log"] = {"format": "json", "level": "info"}
cfg["limits"] = {"create_per_window": 1000}
cfg["policy"] = {"groups": {"*": {
    "partitions": ["viz", "batch"], "images": ["*"], "max_gpus": 0, "max_cpus": 4,
    "max_memory_gb": 8, "max_time_limit_minutes": 240, "max_sessions": 8, "max_jobs": 10,
}}}
text = "# Generated by testbed/ha.sh (no secrets: *_file paths only)\n" + yaml.safe_dump(cfg, sort_keys=False)
tmp = out + ".tmp"
open(tmp, "w").write(text)
load_config(tmp)
import os
os.chmod(tmp, 0o644)
os.replace(tmp, out)
PY
}

start_replica() {
    local i=$1 pid
    if pid=$(replica_pid "$i"); then
        say "replica$i: running (pid $pid, port $(dport "$i"))"
        return 0
    fi
    write_squeue_wrapper "$i"
    write_replica_config "$i"
    port_free "$(dport "$i")" || die "replica$i: port $(dport "$i") is taken"
    detach env PYTHONUNBUFFERED=1 SLURM_CONF="$SLURM_CONF" \
        "$VENV/bin/python" -m vizdesk --config "$DIR/replica-$i.yaml" serve \
        >>"$LOG/replica-$i.log" 2>&1 </dev/null
    echo $! >"$RUN/replica-$i.pid"
    wait_for 30 replica replica_ready "$i" ||
        die "replica$i is not ready on port $(dport "$i"): $(tail -n 5 "$LOG/replica-$i.log")"
    say "replica$i: started (pid $(cat "$RUN/replica-$i.pid"), port $(dport "$i"))"
}

stop_replica() {
    local i=$1 pid
    if pid=$(replica_pid "$i"); then
        stop_pid "$pid" "replica$i" 15
        say "replica$i: stopped"
    fi
    rm -f "$RUN/replica-$i.pid"
}

# --- HAProxy ------------------------------------------------------------------------------

haproxy_env() {
    local hard
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && hard=65536
    # HAProxy needs about two descriptors per connection plus its own: a maxconn above
    # what the hard limit allows makes it refuse to start (machines differ).
    HAPROXY_MAXCONN=$(((hard - 200) / 2))
    ((HAPROXY_MAXCONN > 8000)) && HAPROXY_MAXCONN=8000
    ((HAPROXY_MAXCONN >= 100)) || die "the descriptor limit ($hard) is too low for HAProxy"
    export VIZDESK_HAPROXY_BIND="$HOST:$HAPROXY_PORT" \
        VIZDESK_REPLICA_1="$HOST:$(dport 1)" VIZDESK_REPLICA_2="$HOST:$(dport 2)" \
        VIZDESK_REPLICA_3="$HOST:$(dport 3)" VIZDESK_HAPROXY_SOCKET="$RUN/haproxy.sock" \
        VIZDESK_HAPROXY_PIDFILE="$RUN/haproxy.pid" VIZDESK_HAPROXY_MAXCONN="$HAPROXY_MAXCONN"
}

start_haproxy() {
    local pid cfg=$REPO/deploy/haproxy/vizdesk.cfg
    if pid=$(haproxy_pid); then
        say "haproxy: running (pid $pid, port $HAPROXY_PORT)"
        return 0
    fi
    haproxy_env
    haproxy -c -q -f "$cfg" || die "haproxy -c refuses $cfg"
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    nolock haproxy -D -f "$cfg" >>"$LOG/haproxy.log" 2>&1 || die "haproxy failed: $(tail -n 5 "$LOG/haproxy.log")"
    wait_for 15 haproxy haproxy_ready || die "haproxy does not serve /readyz on $HAPROXY_PORT"
    say "haproxy: started (pid $(cat "$RUN/haproxy.pid"), port $HAPROXY_PORT, maxconn $HAPROXY_MAXCONN)"
}

# --- commands -----------------------------------------------------------------------------

write_env() {
    local i sentinels=""
    for ((i = 1; i <= N; i++)); do sentinels+="$HOST:$(sport "$i") "; done
    {
        echo "VIZDESK_HA_DIR=$DIR"
        echo "HA_URL=http://$HOST:$HAPROXY_PORT"
        echo "HA_PREFIX=$PREFIX"
        echo "HA_MASTER=$MASTER"
        echo "HA_SENTINELS=${sentinels% }"
        echo "HA_REDIS_PORTS=$(rport 1) $(rport 2) $(rport 3)"
        echo "HA_REPLICA_PORTS=$(dport 1) $(dport 2) $(dport 3)"
        echo "HA_SQUEUE_LOG=$LOG/squeue.log"
        echo "REDIS_PASSWORD_FILE=$PASSWORD_FILE"
        echo "JWT_SECRET_FILE=$JWT_SECRET_FILE"
        echo "SLURM_CONF=$SLURM_CONF"
        echo "VIZDESK_VENV=$VENV"
    } | write_if_changed "$DIR/env" 0644 root:root || true
}

cmd_up() {
    require_root_debian
    take_lock
    install_packages haproxy redis-server redis-tools curl
    load_bed
    mkdir -p "$LOG" "$RUN" "$DIR/bin"
    chmod 0755 "$DIR" "$RUN" "$LOG"
    choose_ports
    local i any=0
    for ((i = 1; i <= N; i++)); do
        if redis_pid "$i" >/dev/null || sentinel_pid "$i" >/dev/null; then any=1; fi
    done
    FRESH=$((1 - any)) # nothing of Redis running: start over with redis-1 as the primary
    ((FRESH)) && rm -f "$LOG/squeue.log"
    for ((i = 1; i <= N; i++)); do start_instance redis "$i"; done
    for ((i = 1; i <= N; i++)); do start_instance sentinel "$i"; done
    wait_for 30 sentinels primary_agreed || die "the Sentinels do not agree on a primary"
    for ((i = 1; i <= N; i++)); do start_replica "$i"; done
    start_haproxy
    write_env
    say "up in $(elapsed)s: $DIR/env"
}

cmd_down() {
    take_lock
    read_ports || { say "nothing to stop"; return 0; }
    local i pid
    if pid=$(haproxy_pid); then stop_pid "$pid" haproxy 10; say "haproxy: stopped"; fi
    for ((i = 1; i <= N; i++)); do stop_replica "$i"; done
    for ((i = 1; i <= N; i++)); do
        if pid=$(sentinel_pid "$i"); then stop_pid "$pid" "sentinel-$i" 10; say "sentinel-$i: stopped"; fi
        if pid=$(redis_pid "$i"); then stop_pid "$pid" "redis-$i" 10; say "redis-$i: stopped"; fi
    done
    rm -f "$DIR"/slow-squeue-*
}

line() { printf '%-11s %-5s %s\n' "$1" "$2" "$3"; }

cmd_status() {
    read_ports || { echo "ha: not set up"; return 1; }
    load_bed
    local i pid rc=0
    for ((i = 1; i <= N; i++)); do
        if pid=$(redis_pid "$i"); then
            line "redis-$i" up "pid $pid, port $(rport "$i"), $(rcli "$(rport "$i")" role 2>/dev/null | head -n 1)"
        else line "redis-$i" down ""; rc=1; fi
    done
    for ((i = 1; i <= N; i++)); do
        if pid=$(sentinel_pid "$i"); then line "sentinel-$i" up "pid $pid, port $(sport "$i")"
        else line "sentinel-$i" down ""; rc=1; fi
    done
    for ((i = 1; i <= N; i++)); do
        if pid=$(replica_pid "$i"); then line "replica$i" up "pid $pid, port $(dport "$i")"
        else line "replica$i" down ""; rc=1; fi
    done
    if pid=$(haproxy_pid); then line haproxy up "pid $pid, port $HAPROXY_PORT"
    else line haproxy down ""; rc=1; fi
    return "$rc"
}

check_index() { [[ $1 =~ ^[1-3]$ ]] || die "expected a number 1-$N, got '${1:-}'"; }

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    restart-replica)
        check_index "${2:-}"; load_bed; read_ports || die "not set up"
        stop_replica "$2"; start_replica "$2" ;;
    start-replica)
        check_index "${2:-}"; load_bed; read_ports || die "not set up"; start_replica "$2" ;;
    start-redis)
        check_index "${2:-}"; load_bed; read_ports || die "not set up"; start_instance redis "$2" ;;
    *)
        echo "usage: $0 up|down|status|restart-replica N|start-replica N|start-redis N" >&2
        exit 2 ;;
esac
