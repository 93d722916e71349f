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
REDIS_PORT=6379
REDIS_URL="redis://${REDIS_HOST}:${REDIS_PORT}/0"
PYTHON=/usr/bin/python3

PACKAGES=(
    slurmctld slurmd slurm-client munge redis-server
    tigervnc-standalone-server tigervnc-tools xauth xfonts-base
    xfce4-session xfwm4 xfce4-panel xfdesktop4 xfce4-terminal xterm
    dbus-x11 x11-xserver-utils librsvg2-common
    sudo procps psmisc python3-venv
)

ETC=$DIR/etc
RUN=$DIR/run
LOG=$DIR/log
SECRETS=$DIR/secrets
VENV=$DIR/venv
export SLURM_CONF=$ETC/slurm.conf # also linked from /etc/slurm/slurm.conf for everyone else
MUNGE_RUN=/run/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
REDIS_DIR=$DIR/redis
REDIS_CONF=$REDIS_DIR/redis.conf
REDIS_PID=$REDIS_DIR/redis.pid
CTLD_PID=$RUN/slurmctld.pid
SLURMD_PID=$RUN/slurmd.pid

T0=$(date +%s.%N)

say() { printf 'testbed: %s\n' "$*"; }
die() {
    printf 'testbed: ERROR: %s\n' "$*" >&2
    exit 1
}
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

require_root_debian() {
    if [[ ! -f /etc/debian_version ]]; then
        printf 'testbed: ERROR: not a Debian-like system (no /etc/debian_version); the test bed needs Debian 12\n' >&2
        exit 2
    fi
    if [[ $(id -u) -ne 0 ]]; then
        printf 'testbed: ERROR: must run as root (try: sudo %s %s)\n' "$0" "${CMD:-}" >&2
        exit 2
    fi
}

# Serialise install/up/down between concurrent callers (several engineers share a machine).
take_lock() {
    mkdir -p "$DIR"
    chmod 0755 "$DIR"
    exec 9>"$DIR/.lock"
    if ! flock -w 900 9; then
        die "another testbed.sh holds $DIR/.lock for more than 15 min"
    fi
}

# --- process helpers ----------------------------------------------------------------------

# pid_of PIDFILE COMM: print the pid when the pid file names a live process called COMM.
pid_of() {
    local file=$1 comm=$2 pid
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file" 2>/dev/null || true)
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm"* ]] || return 1
    echo "$pid"
}

# stop_pid PID NAME [TIMEOUT]: SIGTERM, wait, then SIGKILL.
stop_pid() {
    local pid=$1 name=$2 timeout=${3:-10} i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "$name (pid $pid) did not stop in ${timeout}s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
}

# same_pidns PID: the process lives in our pid namespace (not in a nested container/chroot).
same_pidns() {
    local mine theirs
    mine=$(readlink /proc/self/ns/pid 2>/dev/null || true)
    theirs=$(readlink "/proc/$1/ns/pid" 2>/dev/null || true)
    [[ -z $mine || -z $theirs || $mine == "$theirs" ]]
}

# pids_named COMM [USER]: pids of processes called COMM in our pid namespace.
pids_named() {
    local pid
    for pid in $(pgrep ${2:+-u "$2"} -x "$1" || true); do
        same_pidns "$pid" && echo "$pid"
    done
    return 0
}

# pids_of_user USER: all processes of USER in our pid namespace.
pids_of_user() {
    local pid
    for pid in $(pgrep -u "$1" || true); do
        same_pidns "$pid" && echo "$pid"
    done
    return 0
}

# nolock COMMAND...: run a daemon without inheriting the lock file descriptor (fd 9),
# which would otherwise keep $DIR/.lock locked for as long as the daemon lives.
nolock() { "$@" 9>&-; }

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND every 0.2 s until it succeeds.
wait_for() {
    local timeout=$1 deadline
    shift 2 # $2 only documents the call
    deadline=$(($(date +%s) + timeout))
    until "$@" >/dev/null 2>&1; do
        if (($(date +%s) >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
}

# --- install ------------------------------------------------------------------------------

missing_packages() {
    local status
    status=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
    local p
    for p in "${PACKAGES[@]}"; do
        grep -qx "$p installed" <<<"$status" || echo "$p"
    done
}

apt_lists_fresh() {
    # Fresh = some Packages list was fetched less than an hour ago.
    [[ -n $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 -print -quit 2>/dev/null) ]]
}

apt_update() {
    local i
    for i in 1 2 3; do
        if apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3 update -q >"$LOG/apt-update.log" 2>&1; then
            return 0
        fi
        say "apt-get update failed (try $i), see $LOG/apt-update.log"
        sleep 5
    done
    die "apt-get update failed: $(tail -n 3 "$LOG/apt-update.log")"
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        say "packages: all ${#PACKAGES[@]} installed"
        return 0
    fi
    say "packages: installing ${missing[*]}"
    apt_lists_fresh || apt_update
    local apt=(apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef
        -o Dpkg::Options::=--force-confold install -y -q --no-install-recommends)
    if ! "${apt[@]}" "${missing[@]}" >"$LOG/apt-install.log" 2>&1; then
        say "apt-get install failed; refreshing package lists and retrying"
        apt_update
        "${apt[@]}" "${missing[@]}" >"$LOG/apt-install.log" 2>&1 ||
            die "apt-get install failed: $(tail -n 5 "$LOG/apt-install.log")"
    fi
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || die "still missing after apt-get install: ${missing[*]}"
    say "packages: installed"
}

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
        "$VENV/bin/pip" install -q --disable-pip-version-check "setuptools>=64" wheel \
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
    install_packages
    create_users
    install_venv
}

# --- configuration files ------------------------------------------------------------------

# write_if_changed FILE MODE OWNER: stdin → FILE; returns 0 when the content changed.
write_if_changed() {
    local file=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        chmod "$mode" "$file"
        chown "$owner" "$file"
        return 1
    fi
    mv -f "$tmp" "$file"
    return 0
}

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
    install -d -m 0700 -o munge -g munge "$LOG/munge"
    # Job output of desktop sessions (sbatch --output), writable by every test user.
    install -d -m 1777 -o root -g root "$DIR/jobs"
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
AuthType=auth/munge
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

# Client commands (sbatch/squeue/scancel, as any user) read /etc/slurm/slurm.conf.
link_etc_slurm() {
    install -d -m 0755 /etc/slurm
    local target=/etc/slurm/slurm.conf
    if [[ -L $target && $(readlink "$target") == "$SLURM_CONF" ]]; then
        return 0
    fi
    if [[ -e $target && ! -L $target ]]; then
        mv -f "$target" "$target.before-vizdesk-testbed"
        say "moved the existing $target to $target.before-vizdesk-testbed"
    fi
    ln -sfn "$SLURM_CONF" "$target"
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
user default on >$(cat "$SECRETS/redis_password") ~* &* +@all
EOF
}

# --- munge --------------------------------------------------------------------------------

munge_ok() { munge -n -t 10 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "munge: creating /etc/munge/munge.key"
        install -d -m 0700 -o munge -g munge /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    local pid
    if pid=$(pid_of "$MUNGE_PID" munged) && munge_ok; then
        say "munged: running (pid $pid)"
        return 0
    fi
    if [[ -n ${pid:-} ]]; then
        stop_pid "$pid" munged 5
    fi
    nolock runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID" --log-file="$LOG/munge/munged.log" ||
        die "munged failed to start: $(tail -n 3 "$LOG/munge/munged.log" 2>/dev/null)"
    wait_for 10 munge munge_ok || die "munged does not answer, see $LOG/munge/munged.log"
    say "munged: started (pid $(cat "$MUNGE_PID"))"
    RESTARTED=1
}

# --- Redis --------------------------------------------------------------------------------

redis_cli() { REDISCLI_AUTH=$(cat "$SECRETS/redis_password") redis-cli --no-auth-warning -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }
redis_ok() { [[ $(redis_cli ping 2>/dev/null) == PONG ]]; }

start_redis() {
    local changed=0 pid
    if redis_conf_text | write_if_changed "$REDIS_CONF" 0600 redis:redis; then changed=1; fi
    if pid=$(pid_of "$REDIS_PID" redis-server) && redis_ok; then
        if ((changed)); then
            say "redis: configuration changed, restarting"
            stop_pid "$pid" redis-server 10
        else
            say "redis: running (pid $pid, $REDIS_HOST:$REDIS_PORT)"
            return 0
        fi
    elif redis_ok; then
        # Ours (the password matches) but the pid file is gone: adopt it.
        pid=$(redis_cli info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p')
        if ((changed)) && [[ -n $pid ]]; then
            stop_pid "$pid" redis-server 10
        else
            [[ -n $pid ]] && echo "$pid" >"$REDIS_PID"
            say "redis: running (pid ${pid:-?}, $REDIS_HOST:$REDIS_PORT)"
            return 0
        fi
    elif [[ $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; then
        # A Redis without a password (e.g. Debian's own, started by the package): replace it.
        say "redis: stopping a password-less Redis already on port $REDIS_PORT (the package's default)"
        redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        wait_for 10 "redis shutdown" bash -c "! redis-cli -h $REDIS_HOST -p $REDIS_PORT ping" || true
    elif redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>&1 | grep -qE 'NOAUTH|WRONGPASS'; then
        die "port $REDIS_PORT is used by another Redis with a password we do not know; stop it first"
    fi
    nolock runuser -u redis -- redis-server "$REDIS_CONF" >/dev/null ||
        die "redis-server failed to start: $(tail -n 3 "$LOG/redis.log")"
    wait_for 10 redis redis_ok || die "redis does not answer, see $LOG/redis.log"
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
    link_etc_slurm
    if ((changed)); then
        for pair in "$SLURMD_PID:slurmd" "$CTLD_PID:slurmctld"; do
            if pid=$(pid_of "${pair%%:*}" "${pair##*:}"); then
                say "slurm.conf changed: stopping ${pair##*:} (pid $pid)"
                stop_pid "$pid" "${pair##*:}" 15
            fi
        done
    fi

    if pid=$(pid_of "$CTLD_PID" slurmctld) && ctld_ok; then
        say "slurmctld: running (pid $pid)"
    else
        [[ -n ${pid:-} ]] && stop_pid "$pid" slurmctld 15
        local stray
        stray=$(pids_named slurmctld | tr '\n' ' ')
        [[ -z ${stray// /} ]] || die "a slurmctld not started by the test bed is running (pid $stray); stop it first"
        nolock slurmctld -f "$SLURM_CONF" ||
            die "slurmctld failed to start: $(tail -n 5 "$LOG/slurmctld.log")"
        wait_for 30 slurmctld ctld_ok || die "slurmctld does not answer, see $LOG/slurmctld.log"
        say "slurmctld: started (pid $(cat "$CTLD_PID"))"
        RESTARTED=1
    fi

    pid=
    ensure_cgroupfs
    if pid=$(pid_of "$SLURMD_PID" slurmd); then
        say "slurmd: running (pid $pid)"
    else
        local stray
        stray=$(pids_named slurmd | tr '\n' ' ')
        [[ -z ${stray// /} ]] || die "a slurmd not started by the test bed is running (pid $stray); stop it first"
        nolock slurmd -f "$SLURM_CONF" -N "$NODE" ||
            die "slurmd failed to start: $(tail -n 5 "$LOG/slurmd.log")"
        wait_for 10 slurmd pid_of "$SLURMD_PID" slurmd || die "slurmd did not start, see $LOG/slurmd.log"
        say "slurmd: started (pid $(cat "$SLURMD_PID"), node $NODE)"
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
  output_dir: $DIR/jobs
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
        pids=$(pids_of_user "$u")
        [[ -n $pids ]] || continue
        say "stopping $(wc -w <<<"$pids") leftover process(es) of $u"
        for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
        sleep 1
        pids=$(pids_of_user "$u")
        for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    done
}

cmd_down() {
    take_lock
    # No env file = "not up" for the tests (they skip with a clear message).
    rm -f "$RUN/probe-ok" "$DIR/env"
    local pid ids
    if [[ -f $SLURM_CONF ]] && pid_of "$CTLD_PID" slurmctld >/dev/null && ctld_ok; then
        ids=$(squeue -h -t PD,R,CG,S,CF -o %A 2>/dev/null | tr '\n' ' ' || true)
        if [[ -n ${ids// /} ]]; then
            say "cancelling jobs: $ids"
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null || true
            # shellcheck disable=SC2016 # expanded by the inner bash
            wait_for 15 "jobs to end" bash -c '[[ -z $(squeue -h -t R,CG,CF -o %A) ]]' || true
        fi
    fi
    if pid=$(pid_of "$SLURMD_PID" slurmd); then
        stop_pid "$pid" slurmd 15
        say "slurmd: stopped"
    fi
    if pid=$(pid_of "$CTLD_PID" slurmctld); then
        stop_pid "$pid" slurmctld 15
        say "slurmctld: stopped"
    fi
    for pid in $(pids_named slurmstepd); do
        say "stopping leftover slurmstepd (pid $pid)"
        stop_pid "$pid" slurmstepd 5
    done
    kill_user_processes
    if pid=$(pid_of "$REDIS_PID" redis-server); then
        stop_pid "$pid" redis-server 10
        say "redis: stopped"
    fi
    if pid=$(pid_of "$MUNGE_PID" munged); then
        stop_pid "$pid" munged 10
        say "munged: stopped"
    fi
    say "down in $(elapsed)s"
}

# --- status -------------------------------------------------------------------------------

cmd_status() {
    local rc=0 pid st
    line() { printf '%-10s %-5s %s\n' "$1" "$2" "$3"; }
    if pid=$(pid_of "$MUNGE_PID" munged) && munge_ok; then line munged up "pid $pid"
    else line munged down ""; rc=1; fi
    if pid=$(pid_of "$CTLD_PID" slurmctld) && ctld_ok; then line slurmctld up "pid $pid"
    else line slurmctld down ""; rc=1; fi
    if pid=$(pid_of "$SLURMD_PID" slurmd) && node_usable; then line slurmd up "pid $pid, node $NODE $(node_state)"
    else line slurmd down "node $NODE ${pid:+pid $pid }$(node_state 2>/dev/null || true)"; rc=1; fi
    if [[ -r $SECRETS/redis_password ]] && pid=$(pid_of "$REDIS_PID" redis-server) && redis_ok; then
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
