#!/usr/bin/env bash
# vizdesk test bed: a real single-node Slurm cluster (munged, slurmctld, slurmd), Redis 7,
# TigerVNC and a light XFCE desktop, built from Debian 12 packages, plus two ordinary
# test users (alice, bob) and a Python venv with vizdesk installed from this repository.
#
#   testbed.sh install   packages, users, venv (idempotent; fast when nothing changed)
#   testbed.sh up        install, then start everything and wait until it answers
#   testbed.sh down      stop everything the test bed started (packages stay)
#   testbed.sh status    one line per component; exit 0 when all are up
#   testbed.sh restart   down, then up
#
# Run as root on Debian 12 (no systemd needed: daemons are started directly).
# All state lives under $VIZDESK_TESTBED_DIR (default /var/lib/vizdesk-testbed); after
# `up` it holds env (KEY=VALUE lines for tests) and vizdesk.yaml (config, no secrets).
set -euo pipefail
umask 022

DIR=${VIZDESK_TESTBED_DIR:-/var/lib/vizdesk-testbed}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

NODE=$(hostname -s)
TEST_USERS=(alice bob)
REDIS_HOST=127.0.0.1
# Ports: the defaults when free, else the next free ones; kept in $PORTS once chosen, so
# the test bed comes up beside an unrelated Slurm or Redis on the same host.
DEFAULT_REDIS_PORT=6379
DEFAULT_SLURMCTLD_PORT=6817
DEFAULT_SLURMD_PORT=6818
PYTHON=/usr/bin/python3

PACKAGES=(
    slurmctld slurmd slurm-client munge redis-server
    tigervnc-standalone-server tigervnc-tools xauth xfonts-base
    xfce4-session xfwm4 xfce4-panel xfdesktop4 xfce4-terminal xterm
    dbus-x11 x11-xserver-utils librsvg2-common libnotify-bin xfce4-notifyd
    sudo procps psmisc python3-venv
)

ETC=$DIR/etc
RUN=$DIR/run
LOG=$DIR/log
SECRETS=$DIR/secrets
VENV=$DIR/venv
# Every Slurm command of ours reads this (never /etc/slurm, which may be another Slurm's).
export SLURM_CONF=$ETC/slurm.conf
PORTS=$DIR/ports
# Our own munged: own key, socket, pid and seed files (a host's munged keeps /run/munge).
MUNGE_RUN=$RUN/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
MUNGE_SOCKET=$MUNGE_RUN/munge.socket.2
MUNGE_KEY=$ETC/munge/munge.key
MUNGE_LIB=$DIR/munge
LEGACY_MUNGE_PID=/run/munge/munged.pid # where test beds before the own-socket change ran it
REDIS_DIR=$DIR/redis
REDIS_CONF=$REDIS_DIR/redis.conf
REDIS_PID=$REDIS_DIR/redis.pid
CTLD_PID=$RUN/slurmctld.pid
SLURMD_PID=$RUN/slurmd.pid

BED=testbed
# shellcheck source=common.sh
source "$HERE/common.sh" # say die take_lock nolock wait_for install_packages port_free ...

# --- process helpers ----------------------------------------------------------------------

# Redis rewrites its command line: ours is the one that answers with our password and
# reports our config file and the pid in our pid file.
redis_pid() {
    local pid info
    pid=$(pid_of "$REDIS_PID" redis-server) || return 1
    info=$(redis_cli info server 2>/dev/null | tr -d '\r') || return 1
    grep -qx "process_id:$pid" <<<"$info" || return 1
    grep -qx "config_file:$REDIS_CONF" <<<"$info" || return 1
    echo "$pid"
}

# our_stepds: slurmstepd processes of our slurmd (they log to our slurmd log file).
our_stepds() {
    local d pid
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $(cat "$d/comm" 2>/dev/null) == slurmstepd ]] || continue
        same_pidns "$pid" || continue
        if find "$d/fd" -maxdepth 1 -lname "$LOG/slurmd.log" -print -quit 2>/dev/null | grep -q .; then
            echo "$pid"
        fi
    done
    return 0
}

# our_user_processes USER: processes of USER that belong to our cluster's jobs (their
# environment names our slurm.conf), never another Slurm's or a login session's.
our_user_processes() {
    local uid pid d
    uid=$(id -u "$1") || return 0
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $(stat -c %u "$d" 2>/dev/null) == "$uid" ]] || continue
        same_pidns "$pid" || continue
        if tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF"; then
            echo "$pid"
        fi
    done
    return 0
}

# --- install ------------------------------------------------------------------------------

create_users() {
    local u
    for u in "${TEST_USERS[@]}"; do
        if ! id -u "$u" >/dev/null 2>&1; then
            useradd --create-home --shell /bin/bash --comment "vizdesk test user" "$u"
            say "user $u created (uid $(id -u "$u"))"
        fi
        (($(id -u "$u") >= 1000)) || die "user $u exists with uid $(id -u "$u") < 1000"
        local home
        home=$(getent passwd "$u" | cut -d: -f6)
        if [[ ! -d $home ]]; then
            mkdir -p "$home"
            cp -rT /etc/skel "$home" 2>/dev/null || true
            chown -R "$u:" "$home"
            chmod 0750 "$home"
        fi
    done
}

# The files that make up the installed package (hashed to detect changes, copied to build).
package_files() {
    (
        cd "$REPO"
        local f
        for f in pyproject.toml setup.cfg setup.py MANIFEST.in README* LICENSE*; do
            [[ -f $f ]] && echo "$f"
        done
        find daemon -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' \
            ! -path '*/.mypy_cache/*' ! -path '*/build/*'
    ) | LC_ALL=C sort
}

package_hash() {
    (cd "$REPO" && package_files | tr '\n' '\0' | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

install_venv() {
    [[ -f $REPO/pyproject.toml ]] || die "no pyproject.toml in $REPO"
    local stamp=$VENV/.vizdesk-testbed-hash pystamp=$VENV/.vizdesk-testbed-pyproject
    if [[ ! -x $VENV/bin/python ]]; then
        say "venv: creating $VENV"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    # The build backend pyproject.toml asks for (Debian 12's venv brings setuptools 66).
    if ! "$VENV/bin/python" -c 'import sys, setuptools; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null; then
        "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade "setuptools>=77" wheel \
            >"$LOG/pip.log" 2>&1 || die "pip install setuptools failed, see $LOG/pip.log"
    fi
    local want pywant
    want=$(package_hash)
    pywant=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
        say "venv: vizdesk up to date"
        return 0
    fi
    # Build from a clean copy: pip would otherwise write build/ and *.egg-info into the repo.
    local src
    src=$(mktemp -d /tmp/vizdesk-testbed-src.XXXXXX)
    (cd "$REPO" && package_files | tar -cf - -T -) | tar -xf - -C "$src"
    local pip=("$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation)
    if [[ ! -f $pystamp || $(cat "$pystamp") != "$pywant" ]]; then
        say "venv: installing vizdesk and its dependencies"
        "${pip[@]}" "$src" >"$LOG/pip.log" 2>&1 || {
            rm -rf "$src"
            die "pip install failed, see $LOG/pip.log: $(tail -n 3 "$LOG/pip.log")"
        }
    fi
    say "venv: (re)installing vizdesk from $REPO"
    "${pip[@]}" --no-deps --force-reinstall "$src" >>"$LOG/pip.log" 2>&1 || {
        rm -rf "$src"
        die "pip install failed, see $LOG/pip.log: $(tail -n 3 "$LOG/pip.log")"
    }
    rm -rf "$src"
    chmod -R a+rX "$VENV"
    echo "$want" >"$stamp"
    echo "$pywant" >"$pystamp"
}

cmd_install() {
    mkdir -p "$LOG"
    chmod 0755 "$DIR" "$LOG"
    install_packages "${PACKAGES[@]}"
    create_users
    install_venv
}

# --- configuration files ------------------------------------------------------------------

make_secret() {
    local file=$1
    if [[ ! -s $file ]]; then
        "$PYTHON" -c 'import secrets; print(secrets.token_hex(24))' >"$file.tmp"
        chmod 0600 "$file.tmp"
        mv -f "$file.tmp" "$file"
        say "secret $(basename "$file") generated"
    fi
    chmod 0600 "$file"
    chown root:root "$file"
}

make_dirs() {
    install -d -m 0755 -o root -g root "$DIR" "$ETC" "$RUN" "$LOG" "$DIR/slurm" "$DIR/slurm/spool"
    install -d -m 0700 -o root -g root "$SECRETS"
    install -d -m 0700 -o slurm -g slurm "$DIR/slurm/state"
    install -d -m 0750 -o redis -g redis "$REDIS_DIR" "$REDIS_DIR/data"
    install -d -m 0755 -o munge -g munge "$MUNGE_RUN"
    install -d -m 0700 -o munge -g munge "$LOG/munge" "$MUNGE_LIB"
    install -d -m 0755 -o root -g root "$ETC/munge"
    # Job output of desktop sessions (sessions.output_dir: $DIR/jobs/{user}): the daemon
    # makes one 0700 directory per user in it; nobody but root writes here itself.
    install -d -m 0755 -o root -g root "$DIR/jobs"
    [[ -e $LOG/slurmctld.log ]] || install -m 0640 -o slurm -g slurm /dev/null "$LOG/slurmctld.log"
    [[ -e $LOG/redis.log ]] || install -m 0640 -o redis -g redis /dev/null "$LOG/redis.log"
    [[ -e $LOG/munge/munged.log ]] || install -m 0640 -o munge -g munge /dev/null "$LOG/munge/munged.log"
}

slurm_conf_text() {
    cat <<EOF
# Generated by testbed/testbed.sh: a single-node vizdesk test cluster. Do not edit.
ClusterName=vizdesk
SlurmctldHost=$NODE
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/slurm/state
SlurmdSpoolDir=$DIR/slurm/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
PropagateResourceLimits=NONE
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=5
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
Waittime=0
NodeName=$NODE CPUs=64 Boards=1 SocketsPerBoard=1 CoresPerSocket=64 ThreadsPerCore=1 RealMemory=131072 State=UNKNOWN
PartitionName=viz Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=batch Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF
}

# Test beds before SLURM_CONF-everywhere linked /etc/slurm/slurm.conf to ours (moving a
# file found there aside): undo that, so the host's own Slurm, if any, keeps its config.
unlink_legacy_etc_slurm() {
    local target=/etc/slurm/slurm.conf
    if [[ -L $target && $(readlink "$target") == "$SLURM_CONF" ]]; then
        rm -f "$target"
        if [[ -e $target.before-vizdesk-testbed ]]; then
            mv -f "$target.before-vizdesk-testbed" "$target"
            say "restored $target (moved aside by an older test bed)"
        fi
    fi
}

redis_conf_text() {
    cat <<EOF
# Generated by testbed/testbed.sh. Contains the Redis password: root/redis only.
bind $REDIS_HOST
port $REDIS_PORT
protected-mode yes
daemonize yes
supervised no
pidfile $REDIS_PID
logfile $LOG/redis.log
loglevel notice
dir $REDIS_DIR/data
save ""
appendonly no
databases 16
# jobs write their registration with their own ACL user: bound what one SET may carry
proto-max-bulk-len 1mb
user default on >$(cat "$SECRETS/redis_password") ~* &* +@all
EOF
}

# --- munge --------------------------------------------------------------------------------


# An older test bed ran its munged with the default socket and /run/munge/munged.pid; it is
# ours only when its command line names our log file.
stop_legacy_munged() {
    local pid
    if pid=$(pid_of "$LEGACY_MUNGE_PID" munged "--log-file=$LOG/munge/munged.log"); then
        say "munged: stopping the one an older test bed started on the default socket (pid $pid)"
        stop_pid "$pid" munged 5
        rm -f "$LEGACY_MUNGE_PID"
    fi
}

start_munge() {
    stop_legacy_munged
    if [[ ! -s $MUNGE_KEY ]]; then
        say "munge: creating $MUNGE_KEY"
        dd if=/dev/urandom of="$MUNGE_KEY.tmp" bs=1024 count=1 status=none
        mv -f "$MUNGE_KEY.tmp" "$MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    local pid
    if pid=$(munged_pid) && munge_ok; then
        say "munged: running (pid $pid, $MUNGE_SOCKET)"
        return 0
    fi
    if [[ -n ${pid:-} ]]; then
        stop_pid "$pid" munged 5
    fi
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    nolock runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
        --pid-file="$MUNGE_PID" --seed-file="$MUNGE_LIB/munged.seed" --log-file="$LOG/munge/munged.log" ||
        die "munged failed to start: $(tail -n 3 "$LOG/munge/munged.log" 2>/dev/null)"
    wait_for 10 munge munge_ok || die "munged does not answer, see $LOG/munge/munged.log"
    say "munged: started (pid $(cat "$MUNGE_PID"), $MUNGE_SOCKET)"
    RESTARTED=1
}

# --- ports --------------------------------------------------------------------------------

choose_ports() {
    local saved_redis="" saved_ctld="" saved_slurmd="" ours
    if [[ -f $PORTS ]]; then
        saved_redis=$(sed -n 's/^REDIS_PORT=\([0-9]*\)$/\1/p' "$PORTS")
        saved_ctld=$(sed -n 's/^SLURMCTLD_PORT=\([0-9]*\)$/\1/p' "$PORTS")
        saved_slurmd=$(sed -n 's/^SLURMD_PORT=\([0-9]*\)$/\1/p' "$PORTS")
    fi
    # No ports file yet (a fresh machine, or a test bed from before it): start from the
    # defaults, which are kept when free or held by our own daemon.
    saved_redis=${saved_redis:-$DEFAULT_REDIS_PORT}
    saved_ctld=${saved_ctld:-$DEFAULT_SLURMCTLD_PORT}
    saved_slurmd=${saved_slurmd:-$DEFAULT_SLURMD_PORT}
    REDIS_PORT=$saved_redis # redis_pid asks the Redis on the saved port
    ours=0; [[ -r $SECRETS/redis_password ]] && redis_pid >/dev/null 2>&1 && ours=1
    REDIS_PORT=$(choose_port "$saved_redis" "$DEFAULT_REDIS_PORT" "$ours")
    ours=0; ctld_pid >/dev/null && ours=1
    SLURMCTLD_PORT=$(choose_port "$saved_ctld" "$DEFAULT_SLURMCTLD_PORT" "$ours" "$REDIS_PORT")
    ours=0; slurmd_pid >/dev/null && ours=1
    SLURMD_PORT=$(choose_port "$saved_slurmd" "$DEFAULT_SLURMD_PORT" "$ours" "$REDIS_PORT" "$SLURMCTLD_PORT")
    for pair in "redis:$saved_redis:$REDIS_PORT" "slurmctld:$saved_ctld:$SLURMCTLD_PORT" "slurmd:$saved_slurmd:$SLURMD_PORT"; do
        IFS=: read -r name was now <<<"$pair"
        if [[ -n $was && $was != "$now" ]]; then
            say "ports: $name port $was is taken by another program, using $now"
        fi
    done
    printf 'REDIS_PORT=%s\nSLURMCTLD_PORT=%s\nSLURMD_PORT=%s\n' "$REDIS_PORT" "$SLURMCTLD_PORT" "$SLURMD_PORT" |
        write_if_changed "$PORTS" 0644 root:root || true
    REDIS_URL="redis://${REDIS_HOST}:${REDIS_PORT}/0"
}

# Ports as last chosen (for down/status, which never choose).
load_ports() {
    REDIS_PORT=$DEFAULT_REDIS_PORT SLURMCTLD_PORT=$DEFAULT_SLURMCTLD_PORT SLURMD_PORT=$DEFAULT_SLURMD_PORT
    if [[ -f $PORTS ]]; then
        REDIS_PORT=$(sed -n 's/^REDIS_PORT=\([0-9]*\)$/\1/p' "$PORTS")
        SLURMCTLD_PORT=$(sed -n 's/^SLURMCTLD_PORT=\([0-9]*\)$/\1/p' "$PORTS")
        SLURMD_PORT=$(sed -n 's/^SLURMD_PORT=\([0-9]*\)$/\1/p' "$PORTS")
    fi
    REDIS_URL="redis://${REDIS_HOST}:${REDIS_PORT}/0"
}

# --- Redis --------------------------------------------------------------------------------

redis_cli() { REDISCLI_AUTH=$(cat "$SECRETS/redis_password") redis-cli --no-auth-warning -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }
redis_ok() { [[ $(redis_cli ping 2>/dev/null) == PONG ]]; }

start_redis() {
    local changed=0 pid
    if redis_conf_text | write_if_changed "$REDIS_CONF" 0600 redis:redis; then changed=1; fi
    if pid=$(redis_pid); then
        if ((changed)); then
            say "redis: configuration changed, restarting"
            stop_pid "$pid" redis-server 10
        else
            say "redis: running (pid $pid, $REDIS_HOST:$REDIS_PORT)"
            return 0
        fi
    fi
    # choose_ports picked a port nobody listens on; anything there now is not ours.
    port_free "$REDIS_PORT" || die "port $REDIS_PORT was taken meanwhile by another program; run up again"
    nolock runuser -u redis -- redis-server "$REDIS_CONF" >/dev/null ||
        die "redis-server failed to start: $(tail -n 3 "$LOG/redis.log")"
    wait_for 10 redis redis_pid || die "redis does not answer, see $LOG/redis.log"
    say "redis: started (pid $(cat "$REDIS_PID"), $REDIS_HOST:$REDIS_PORT)"
    RESTARTED=1
}

# --- Slurm --------------------------------------------------------------------------------

# slurmd 22.05 always initialises its cgroup plugin (even with proctrack/linuxproc and
# task/none) and refuses to start without a cgroup filesystem under /sys/fs/cgroup.
ensure_cgroupfs() {
    if [[ -n $(ls -A /sys/fs/cgroup 2>/dev/null) ]]; then
        return 0
    fi
    say "no cgroup filesystem at /sys/fs/cgroup; trying to mount cgroup2 there"
    mkdir -p /sys/fs/cgroup 2>/dev/null || true
    if ! mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null; then
        die "slurmd 22.05 needs a cgroup filesystem mounted at /sys/fs/cgroup (and /sys mounted)"
    fi
}

ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1; }
node_usable() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

start_slurm() {
    local changed=0 pid
    if slurm_conf_text | write_if_changed "$SLURM_CONF" 0644 root:root; then changed=1; fi
    unlink_legacy_etc_slurm
    if ((changed)); then
        if pid=$(slurmd_pid); then
            say "slurm.conf changed: stopping slurmd (pid $pid)"
            stop_pid "$pid" slurmd 15
        fi
        if pid=$(ctld_pid); then
            say "slurm.conf changed: stopping slurmctld (pid $pid)"
            stop_pid "$pid" slurmctld 15
        fi
    fi

    if pid=$(ctld_pid) && ctld_ok; then
        say "slurmctld: running (pid $pid, port $SLURMCTLD_PORT)"
    else
        [[ -n ${pid:-} ]] && stop_pid "$pid" slurmctld 15
        nolock slurmctld -f "$SLURM_CONF" ||
            die "slurmctld failed to start: $(tail -n 5 "$LOG/slurmctld.log")"
        wait_for 30 slurmctld ctld_ok || die "slurmctld does not answer, see $LOG/slurmctld.log"
        say "slurmctld: started (pid $(cat "$CTLD_PID"), port $SLURMCTLD_PORT)"
        RESTARTED=1
    fi

    pid=
    ensure_cgroupfs
    if pid=$(slurmd_pid); then
        say "slurmd: running (pid $pid, port $SLURMD_PORT)"
    else
        nolock slurmd -f "$SLURM_CONF" -N "$NODE" ||
            die "slurmd failed to start: $(tail -n 5 "$LOG/slurmd.log")"
        wait_for 10 slurmd slurmd_pid || die "slurmd did not start, see $LOG/slurmd.log"
        say "slurmd: started (pid $(cat "$SLURMD_PID"), node $NODE, port $SLURMD_PORT)"
        RESTARTED=1
    fi

    # The node registers within a second or two; bring it back if it is DOWN or DRAINED.
    local deadline=$(($(date +%s) + 40)) st resumed=0
    while ! node_usable; do
        st=$(node_state)
        if ((!resumed)) && [[ $st =~ ^(down|drained|draining|drain|fail|failing)$ ]]; then
            say "node $NODE is $st, resuming it"
            scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
            resumed=1
        fi
        if (($(date +%s) >= deadline)); then
            die "node $NODE is '${st:-unknown}', not idle; see $LOG/slurmd.log and $LOG/slurmctld.log"
        fi
        sleep 0.3
    done
    say "node $NODE: $(node_state)"
}

# Submit a trivial job as alice and wait until it has completed (proves munge, slurmd, users).
probe_job() {
    local id out st deadline
    out=/tmp/vizdesk-testbed-probe.$$.out
    rm -f "$out"
    id=$(runuser -u alice -- sbatch --parsable --job-name=testbed-probe --chdir=/tmp --output="$out" \
        --time=1 --wrap 'id -un') || die "sbatch as alice failed"
    id=${id%%;*}
    deadline=$(($(date +%s) + 60))
    while :; do
        st=$(scontrol show job -o "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
        case $st in
            COMPLETED) break ;;
            FAILED | CANCELLED | TIMEOUT | NODE_FAIL | BOOT_FAIL | OUT_OF_MEMORY | PREEMPTED | DEADLINE)
                die "probe job $id ended $st: $(cat "$out" 2>/dev/null)" ;;
        esac
        if (($(date +%s) >= deadline)); then
            scancel "$id" 2>/dev/null || true
            die "probe job $id still '$st' after 60 s; see $LOG/slurmctld.log"
        fi
        sleep 0.2
    done
    local who
    who=$(cat "$out" 2>/dev/null || true)
    rm -f "$out"
    [[ $who == alice ]] || die "probe job $id ran as '$who', expected alice"
    say "probe job $id ran as alice"
    date +%s >"$RUN/probe-ok"
}

# --- outputs ------------------------------------------------------------------------------

slurm_version() { sinfo --version | awk '{print $2}'; }

write_outputs() {
    local yaml=$DIR/vizdesk.yaml
    write_if_changed "$yaml" 0644 root:root <<EOF || true
# Generated by testbed/testbed.sh for the local test bed. No secrets here (only *_file paths).
server:
  host: 127.0.0.1
  port: 8080
redis:
  url: $REDIS_URL
  password_file: $SECRETS/redis_password
auth:
  hs256_secret_file: $SECRETS/jwt_secret
slurm:
  submit_prefix: [runuser, -u, "{user}", --]
  partitions: [viz, batch]
  default_partition: viz
sessions:
  jobscript: $REPO/jobscripts/vnc.sbatch
  output_dir: $DIR/jobs/{user}
  registration_ttl_seconds: 15
node:
  vizdesk_command: $VENV/bin/vizdesk
  desktop_command: [startxfce4]
  port_min: 5901
  port_max: 5999
EOF
    "$VENV/bin/python" -c 'import sys; from vizdesk.config import load_config; load_config(sys.argv[1])' \
        "$yaml" || die "$yaml does not validate with vizdesk.config.load_config"
    write_if_changed "$DIR/env" 0644 root:root <<EOF || true
VIZDESK_TESTBED_DIR=$DIR
VIZDESK_CONFIG=$yaml
VIZDESK_VENV=$VENV
VIZDESK_REPO=$REPO
VIZDESK_TEST_USERS=${TEST_USERS[*]}
REDIS_URL=$REDIS_URL
REDIS_PASSWORD_FILE=$SECRETS/redis_password
JWT_SECRET_FILE=$SECRETS/jwt_secret
SLURM_NODE=$NODE
SLURM_VERSION=$(slurm_version)
SLURM_CONF=$SLURM_CONF
SLURMCTLD_PIDFILE=$CTLD_PID
SLURMD_PIDFILE=$SLURMD_PID
SLURMCTLD_PORT=$SLURMCTLD_PORT
SLURMD_PORT=$SLURMD_PORT
REDIS_PORT=$REDIS_PORT
REDIS_PIDFILE=$REDIS_PID
MUNGE_SOCKET=$MUNGE_SOCKET
MUNGED_PIDFILE=$MUNGE_PID
EOF
    if ! runuser -u alice -- test -r "$REPO/jobscripts/vnc.sbatch" 2>/dev/null; then
        if [[ -e $REPO/jobscripts/vnc.sbatch ]]; then
            say "WARNING: alice cannot read $REPO/jobscripts/vnc.sbatch (sbatch runs as the user)"
        fi
    fi
}

xfce_defaults() {
    # Without a panel config, xfce4-panel's first start shows a blocking "default or empty
    # panel?" dialog. A system-wide xfconf channel with Debian's default layout avoids it.
    local src=/etc/xdg/xfce4/panel/default.xml
    local dst=/etc/xdg/xfce4/xfconf/xfce-perchannel-xml/xfce4-panel.xml
    if [[ -f $src && ! -f $dst ]]; then
        install -D -m 0644 "$src" "$dst"
    fi
    # No per-desktop ssh-agent: it daemonizes out of the job's process tree and hides its
    # environment, so with proctrack/linuxproc (this test bed) nothing can tell it belongs
    # to the session. (proctrack/cgroup on a real cluster reaps it with the job.)
    # Debian ships this channel file; add the two switches to it once.
    local sess=/etc/xdg/xfce4/xfconf/xfce-perchannel-xml/xfce4-session.xml
    if [[ -f $sess ]] && ! grep -q 'name="ssh-agent"' "$sess"; then
        sed -i 's|^<channel name="xfce4-session" version="1.0">$|&\n  <property name="startup" type="empty">\n    <property name="ssh-agent" type="empty"><property name="enabled" type="bool" value="false"/></property>\n    <property name="gpg-agent" type="empty"><property name="enabled" type="bool" value="false"/></property>\n  </property>|' "$sess"
    fi
}

cmd_up() {
    take_lock
    cmd_install
    RESTARTED=0
    make_dirs
    make_secret "$SECRETS/redis_password"
    make_secret "$SECRETS/jwt_secret"
    xfce_defaults
    choose_ports
    start_munge
    start_redis
    start_slurm
    if ((RESTARTED)) || [[ ! -f $RUN/probe-ok ]]; then
        probe_job
    fi
    write_outputs
    say "up in $(elapsed)s: env $DIR/env, config $DIR/vizdesk.yaml, Slurm $(slurm_version), node $NODE"
}

# --- down ---------------------------------------------------------------------------------

kill_user_processes() {
    local u pids pid
    for u in "${TEST_USERS[@]}"; do
        id -u "$u" >/dev/null 2>&1 || continue
        pids=$(our_user_processes "$u")
        [[ -n $pids ]] || continue
        say "stopping $(wc -w <<<"$pids") leftover job process(es) of $u"
        for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
        sleep 1
        pids=$(our_user_processes "$u")
        for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    done
}

cmd_down() {
    take_lock
    load_ports
    # No env file = "not up" for the tests (they skip with a clear message).
    rm -f "$RUN/probe-ok" "$DIR/env"
    local pid ids
    if [[ -f $SLURM_CONF ]] && ctld_pid >/dev/null && ctld_ok; then
        ids=$(squeue -h -t PD,R,CG,S,CF -o %A 2>/dev/null | tr '\n' ' ' || true)
        if [[ -n ${ids// /} ]]; then
            say "cancelling jobs: $ids"
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null || true
            # shellcheck disable=SC2016 # expanded by the inner bash
            wait_for 15 "jobs to end" bash -c '[[ -z $(squeue -h -t R,CG,CF -o %A) ]]' || true
        fi
    fi
    if pid=$(slurmd_pid); then
        stop_pid "$pid" slurmd 15
        say "slurmd: stopped"
    fi
    if pid=$(ctld_pid); then
        stop_pid "$pid" slurmctld 15
        say "slurmctld: stopped"
    fi
    for pid in $(our_stepds); do
        say "stopping leftover slurmstepd (pid $pid)"
        stop_pid "$pid" slurmstepd 5
    done
    kill_user_processes
    if [[ -r $SECRETS/redis_password ]] && pid=$(redis_pid); then
        stop_pid "$pid" redis-server 10
        say "redis: stopped"
    fi
    if pid=$(munged_pid); then
        stop_pid "$pid" munged 10
        say "munged: stopped"
    fi
    stop_legacy_munged
    say "down in $(elapsed)s"
}

# --- status -------------------------------------------------------------------------------

cmd_status() {
    local rc=0 pid st
    load_ports
    line() { printf '%-10s %-5s %s\n' "$1" "$2" "$3"; }
    if pid=$(munged_pid) && munge_ok; then line munged up "pid $pid, $MUNGE_SOCKET"
    else line munged down ""; rc=1; fi
    if pid=$(ctld_pid) && ctld_ok; then line slurmctld up "pid $pid, port $SLURMCTLD_PORT"
    else line slurmctld down ""; rc=1; fi
    if pid=$(slurmd_pid) && node_usable; then line slurmd up "pid $pid, port $SLURMD_PORT, node $NODE $(node_state)"
    else line slurmd down "node $NODE ${pid:+pid $pid }$(node_state 2>/dev/null || true)"; rc=1; fi
    if [[ -r $SECRETS/redis_password ]] && pid=$(redis_pid); then
        line redis up "pid $pid, $REDIS_HOST:$REDIS_PORT"
    else line redis down ""; rc=1; fi
    if [[ -x $VENV/bin/vizdesk ]]; then line venv ok "$VENV"
    else line venv missing "$VENV"; rc=1; fi
    if [[ -f $DIR/env && -f $DIR/vizdesk.yaml ]]; then line config ok "$DIR/env, $DIR/vizdesk.yaml"
    else line config missing "$DIR/env"; rc=1; fi
    return $rc
}

usage() {
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Sourced (testbed/cluster.sh reuses the functions above): define them, dispatch nothing.
if [[ ${BASH_SOURCE[0]} != "$0" ]]; then return 0; fi

CMD=${1:-}
case $CMD in
    install)
        require_root_debian
        take_lock
        cmd_install
        say "install done in $(elapsed)s"
        ;;
    up) require_root_debian; cmd_up ;;
    down) require_root_debian; cmd_down ;;
    restart) require_root_debian; cmd_down; exec 9>&-; T0=$(date +%s.%N); cmd_up ;;
    status) require_root_debian; cmd_status ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 64
        ;;
esac
