#!/usr/bin/env bash
# sidroot.sh — a Debian sid root with Apptainer 1.4, Slurm 26.05, munge and Redis, for
# vizdesk's container test tier (tests/container/) and for trying Apptainer images by hand.
#
# Apptainer is not packaged for Debian 12, and it refuses to run in a plain chroot, so this
# script debootstraps Debian sid into a directory and enters it with
#     unshare -m -p -f  +  bind-mount DIR onto itself  +  pivot_root  +  a fresh /proc.
# A pid namespace dies with its first process, so `up` starts a small init (pid 1 of the
# namespace, reaps orphans) that holds the namespace; `run`/`enter` join it with nsenter.
# The network namespace is the host's: ports opened inside are reachable from outside
# (and clash with the host's, hence the non-default ports below).
#
#   sidroot.sh build            build (or reuse) the root; cached by a hash of the recipe
#   sidroot.sh up               build, start the namespace + munge, slurmctld, slurmd, redis
#   sidroot.sh run [-u USER] [-e K=V]... [--] CMD...   run CMD inside (as root or USER)
#   sidroot.sh enter [-u USER]  interactive shell inside
#   sidroot.sh images [vnc|compute]  build (or reuse) containers/*.def → .sif (needs `up`)
#   sidroot.sh images vnc-turbovnc   vnc.def with TurboVNC + VirtualGL copied from the trees
#                               of testbed/vgl.sh build (VGL_TREES); own catalog directory
#                               images/build/catalog-turbovnc (not in `all`, not in catalog/)
#   sidroot.sh venv             python venv with vizdesk from this repository (needs `up`)
#   sidroot.sh fuse [MODE]      the root's own /dev/fuse: usable, root-only, missing, host
#   sidroot.sh status | env | down | path | timings
#
# Root required. State lives under $VIZDESK_SID_STATE (default /var/lib/vizdesk-sid):
#   roots/<hash>/   the root file system        cache/       debootstrap + apt packages
#   images/build/   .sif files keyed by the hash of their definition and build args
#   images/catalog/ hard links vnc.sif, compute.sif (what the image catalog scans)
#   run/            holder pid, logs, env       timings.log  how long each step took
# Inside the root: /repo = this repository (read-only), /srv/vizdesk/images = images/catalog,
# /srv/vizdesk/build = images/build, /etc/vizdesk-sid/env = the same KEY=VALUE lines as `env`.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${VIZDESK_REPO:-$(cd "$HERE/../.." && pwd)}
STATE=${VIZDESK_SID_STATE:-/var/lib/vizdesk-sid}
MIRROR=${VIZDESK_SID_MIRROR:-http://deb.debian.org/debian}
SUITE=sid

# Ports inside the root (shared network namespace: must not clash with the Debian 12 test bed).
SID_REDIS_PORT=${VIZDESK_SID_REDIS_PORT:-16479}
SID_SLURMCTLD_PORT=${VIZDESK_SID_SLURMCTLD_PORT:-16817}
SID_SLURMD_PORT=${VIZDESK_SID_SLURMD_PORT:-16818}
SID_DAEMON_PORT=${VIZDESK_SID_DAEMON_PORT:-16480}
SID_VNC_PORT_MIN=${VIZDESK_SID_VNC_PORT_MIN:-6101}
SID_VNC_PORT_MAX=${VIZDESK_SID_VNC_PORT_MAX:-6199}
SID_NODE=vizsid
SID_PARTITION=viz
TEST_USERS=(alice bob)
BUILD_USER=vizbuild # builds the .sif images (apptainer build --fakeroot)
BUILD_UID=1990

# Packages of the root: only what the host side of the tests needs (the desktop itself is
# in the image). debootstrap + uidmap: `apptainer build --fakeroot` of `Bootstrap: debootstrap`.
PACKAGES=(
    apptainer squashfs-tools squashfuse fuse2fs gocryptfs fuse3 uidmap fakeroot debootstrap ca-certificates
    slurmctld slurmd slurm-client munge
    redis-server redis-tools
    python3 python3-venv tigervnc-standalone-server
    procps iproute2 psmisc less
)

RUN_DIR=$STATE/run
HOLDER_PID=$RUN_DIR/holder.pid
TIMINGS=$STATE/timings.log

say() { printf '[sidroot] %s\n' "$*" >&2; }
die() { printf '[sidroot] error: %s\n' "$*" >&2; exit 1; }
need_root() { [[ $(id -u) == 0 ]] || die "run as root"; }
now() { date +%s.%N; }
timing() { # timing STEP START
    local s
    s=$(awk -v a="$2" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}')
    mkdir -p "$STATE"
    printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "$1" "$s" >>"$TIMINGS"
    say "$1: ${s}s"
}

# --------------------------------------------------------------------------- the root

# The hash covers everything that decides the root's content: this recipe's functions,
# the package list, the suite and the mirror. Editing other parts of the script (how
# `up` starts services, ...) does not rebuild the root.
recipe_hash() {
    {
        declare -f provision_root
        printf '%s\n' "${PACKAGES[@]}" "$SUITE" "$MIRROR"
    } | sha256sum | cut -c1-16
}

root_dir() { echo "$STATE/roots/$(recipe_hash)"; }

# Runs inside the freshly debootstrapped root (pid 1 of a new namespace, after pivot_root).
provision_root() {
    set -euo pipefail
    export DEBIAN_FRONTEND=noninteractive
    cat >/etc/apt/apt.conf.d/90vizdesk <<'EOF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
EOF
    # no daemons started by package scripts (there is no init anyway)
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    apt-get update -q
    apt-get install -y -q "$@"
    apt-get clean
    rm -rf /var/lib/apt/lists/*
    # slurm, munge and redis run as their package users; their dirs:
    install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    [[ -s /etc/munge/munge.key ]] || {
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    }
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -m 0755 /srv/vizdesk/images /srv/vizdesk/build /repo /etc/vizdesk-sid
}

# ns_exec ROOT [BIND_SRC:BIND_DST[:ro]]... -- CMD...: run CMD as pid 1 of new mount + pid
# namespaces whose root is ROOT. Binds are made before pivot_root.
ns_exec() {
    local root=$1
    shift
    local binds=()
    while [[ $1 != -- ]]; do
        binds+=("$1")
        shift
    done
    shift
    # shellcheck disable=SC2016
    unshare -m -p -u -f --propagation private -- bash -c '
        set -euo pipefail
        root=$1; nb=$2; shift 2
        hostname vizsid
        mount --bind "$root" "$root"
        for ((i = 0; i < nb; i++)); do
            IFS=: read -r src dst mode <<<"$1"; shift
            mkdir -p "$root$dst"
            mount --bind "$src" "$root$dst"
            [[ $mode == ro ]] && mount -o remount,bind,ro "$root$dst"
        done
        mount -t proc proc "$root/proc"
        # A /dev of its own (not the host'\''s): the FUSE device can then be made usable,
        # root-only or absent for the tests (`sidroot.sh fuse MODE`) without touching the host.
        mount -t tmpfs -o mode=0755,nosuid tmpfs "$root/dev"
        for spec in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
            IFS=: read -r name major minor <<<"$spec"
            mknod -m 0666 "$root/dev/$name" c "$major" "$minor"
        done
        mkdir -p "$root/dev/pts" "$root/dev/shm"
        mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
        ln -s pts/ptmx "$root/dev/ptmx"
        ln -s /proc/self/fd "$root/dev/fd"
        ln -s /proc/self/fd/0 "$root/dev/stdin"
        ln -s /proc/self/fd/1 "$root/dev/stdout"
        ln -s /proc/self/fd/2 "$root/dev/stderr"
        mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
        # FUSE as the host has it (mode kept), unless VIZDESK_SID_FUSE says otherwise.
        case ${VIZDESK_SID_FUSE:-host} in
            usable) mknod -m 0666 "$root/dev/fuse" c 10 229 ;;
            root-only) mknod -m 0600 "$root/dev/fuse" c 10 229 ;;
            missing) ;;
            *) if [[ -c /dev/fuse ]]; then
                   mknod -m "$(stat -c %a /dev/fuse)" "$root/dev/fuse" c 10 229
               fi ;;
        esac
        mount --rbind /sys "$root/sys" # keeps the cgroup mounts that slurmd wants
        mount -t tmpfs -o mode=0755 tmpfs "$root/run"
        mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
        mkdir -m 1777 "$root/tmp/.X11-unix" "$root/tmp/.ICE-unix"
        cp /etc/hosts "$root/etc/hosts"
        grep -q "vizsid" "$root/etc/hosts" || echo "127.0.0.1 vizsid" >>"$root/etc/hosts"
        cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
        cd "$root"
        mkdir -p .oldroot
        pivot_root . .oldroot
        cd /
        umount -l /.oldroot
        exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" "$@"
    ' sidroot-ns "$root" "${#binds[@]}" "${binds[@]}" "$@"
}

cmd_build() {
    need_root
    if ! command -v debootstrap >/dev/null && command -v apt-get >/dev/null; then
        say "installing debootstrap"
        apt-get -o DPkg::Lock::Timeout=900 install -y -q debootstrap >/dev/null ||
            { apt-get update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=900 install -y -q debootstrap >/dev/null; } || true
    fi
    command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
    local root hash t0
    hash=$(recipe_hash)
    root=$STATE/roots/$hash
    mkdir -p "$STATE/roots" "$STATE/cache/debootstrap" "$STATE/cache/apt"
    exec 9>"$STATE/.build.lock"
    flock 9
    if [[ -e $root/.vizdesk-complete ]]; then
        say "root $hash: cached ($root)"
        ln -sfn "roots/$hash" "$STATE/root"
        exec 9>&-
        return 0
    fi
    say "root $hash: building in $root"
    rm -rf "$root" "$root.tmp"
    t0=$(now)
    debootstrap --variant=minbase --cache-dir="$STATE/cache/debootstrap" "$SUITE" "$root.tmp" "$MIRROR" \
        >"$STATE/debootstrap.log" 2>&1 || {
        tail -20 "$STATE/debootstrap.log" >&2
        die "debootstrap of $SUITE failed (log: $STATE/debootstrap.log)"
    }
    timing "debootstrap $SUITE" "$t0"
    t0=$(now)
    ns_exec "$root.tmp" "$STATE/cache/apt:/var/cache/apt/archives" -- \
        bash -c "$(declare -f provision_root); provision_root \"\$@\"" provision "${PACKAGES[@]}" \
        >"$STATE/provision.log" 2>&1 || {
        tail -30 "$STATE/provision.log" >&2
        die "provisioning the root failed (log: $STATE/provision.log)"
    }
    timing "apt-get install in root" "$t0"
    touch "$root.tmp/.vizdesk-complete"
    mv "$root.tmp" "$root"
    ln -sfn "roots/$hash" "$STATE/root"
    # keep only the current root (and the one a running namespace still uses)
    local d keep=""
    holder_pid >/dev/null && keep=$(cat "$RUN_DIR/holder.root" 2>/dev/null || true)
    for d in "$STATE"/roots/*; do
        [[ $d == "$root" || $d == "$keep" ]] || rm -rf "$d"
    done
    exec 9>&-
    say "root $hash: ready"
}

# --------------------------------------------------------------------------- the namespace

holder_pid() {
    local pid
    [[ -s $HOLDER_PID ]] || return 1
    pid=$(cat "$HOLDER_PID")
    [[ -d /proc/$pid ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == sidroot-init ]] || return 1
    echo "$pid"
}

# pid 1 of the namespace: reaps orphans (daemons double-fork), ends everything on SIGTERM.
INIT_PY='
import os, signal, sys, time
try:
    import ctypes
    ctypes.CDLL(None).prctl(15, b"sidroot-init", 0, 0, 0)  # PR_SET_NAME
except Exception:
    pass
stop = False
def term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, term)
signal.signal(signal.SIGINT, term)
open("/run/sidroot-init.ready", "w").close()
while not stop:
    try:
        pid, _ = os.waitpid(-1, 0)
    except ChildProcessError:
        time.sleep(0.5)
    except InterruptedError:
        pass
for sig in (signal.SIGTERM, signal.SIGKILL):
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != 1:
            try:
                os.kill(int(p), sig)
            except OSError:
                pass
    time.sleep(1)
'

sync_users() { # create the test users inside the root, with the host's uids when it has them
    local u uid args
    for u in "${TEST_USERS[@]}"; do
        args=(--create-home --shell /bin/bash --comment "vizdesk test user")
        if uid=$(id -u "$u" 2>/dev/null); then
            args+=(--uid "$uid")
        fi
        # shellcheck disable=SC2016 # expanded by the inner shell
        ns_run root -- bash -c 'id -u "$1" >/dev/null 2>&1 || useradd "${@:2}" "$1"' _ "$u" "${args[@]}"
    done
    # shellcheck disable=SC2016 # expanded by the inner shell
    ns_run root -- bash -c '
        set -e
        build_user=$1 build_uid=$2
        shift 2
        id -u "$build_user" >/dev/null 2>&1 || useradd --create-home --uid "$build_uid" \
            --shell /bin/bash --comment "builds vizdesk images" "$build_user"
        for u in "$@" "$build_user"; do # subordinate ids for `apptainer build --fakeroot`
            first=$((200000 + 65536 * $(id -u "$u") % 1000000000))
            grep -q "^$u:" /etc/subuid || echo "$u:$first:65536" >>/etc/subuid
            grep -q "^$u:" /etc/subgid || echo "$u:$first:65536" >>/etc/subgid
        done
        chown "$build_user": /srv/vizdesk/build
    ' _ "$BUILD_USER" "$BUILD_UID" "${TEST_USERS[@]}"
}

write_env() {
    local f=$RUN_DIR/env
    cat >"$f" <<EOF
SID_STATE=$STATE
SID_ROOT=$(root_dir)
SID_REDIS_URL=redis://127.0.0.1:$SID_REDIS_PORT/0
SID_REDIS_PORT=$SID_REDIS_PORT
SID_REDIS_PASSWORD_FILE=/etc/vizdesk-sid/redis_password
SID_SLURM_NODE=$SID_NODE
SID_SLURM_PARTITION=$SID_PARTITION
SID_SLURMCTLD_PORT=$SID_SLURMCTLD_PORT
SID_DAEMON_PORT=$SID_DAEMON_PORT
SID_VNC_PORT_MIN=$SID_VNC_PORT_MIN
SID_VNC_PORT_MAX=$SID_VNC_PORT_MAX
SID_IMAGES_DIR=/srv/vizdesk/images
SID_VENV=/opt/vizdesk-venv
SID_REPO=/repo
EOF
    cp "$f" "$(root_dir)/etc/vizdesk-sid/env"
}

slurm_conf() {
    local cpus mem
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
    cat <<EOF
# written by testbed/sid/sidroot.sh
ClusterName=vizsid
SlurmctldHost=$SID_NODE(127.0.0.1)
SlurmctldPort=$SID_SLURMCTLD_PORT
SlurmdPort=$SID_SLURMD_PORT
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$SID_NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$SID_PARTITION Nodes=$SID_NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
EOF
}

start_services() {
    local root
    root=$(root_dir)
    slurm_conf >"$root/etc/slurm/slurm.conf"
    [[ -s $root/etc/vizdesk-sid/redis_password ]] ||
        head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$root/etc/vizdesk-sid/redis_password"
    chmod 0600 "$root/etc/vizdesk-sid/redis_password"
    ns_run root -- bash -s "$SID_REDIS_PORT" <<'EOF'
set -euo pipefail
redis_port=$1
# running FILE COMM: the pid file names a live COMM (each daemon is ours by its pid file)
running() {
    local pid
    pid=$(tr -dc '0-9' <"$1" 2>/dev/null) || return 1
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$2"* ]]
}
if ! running /run/munge/munged.pid munged; then
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do [[ -S /run/munge/munge.socket.2 ]] && break; sleep 0.1; done
if ! running /run/redis/redis-sid.pid redis-server; then
    pw=$(cat /etc/vizdesk-sid/redis_password)
    install -d -o redis -g redis /run/redis /var/lib/redis
    cat >/etc/vizdesk-sid/redis.conf <<CONF
bind 127.0.0.1
port $redis_port
daemonize yes
pidfile /run/redis/redis-sid.pid
dir /var/lib/redis
save ""
appendonly no
logfile /var/log/redis/redis-sid.log
user default on >$pw ~* &* +@all
CONF
    chown redis /etc/vizdesk-sid/redis.conf
    chmod 0600 /etc/vizdesk-sid/redis.conf
    install -d -o redis -g redis /var/log/redis
    runuser -u redis -- redis-server /etc/vizdesk-sid/redis.conf
fi
running /run/slurmctld.pid slurmctld || slurmctld
running /run/slurmd.pid slurmd || slurmd
for _ in $(seq 150); do
    state=$(sinfo -h -n vizsid -o %T 2>/dev/null || true)
    [[ $state == idle* || $state == mixed* || $state == allocated* ]] && break
    sleep 0.2
done
[[ ${state:-} == idle* || ${state:-} == mixed* || ${state:-} == allocated* ]] || {
    echo "slurm node state: '${state:-?}'" >&2
    tail -n 5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2
    exit 1
}
REDISCLI_AUTH=$(cat /etc/vizdesk-sid/redis_password) redis-cli --no-auth-warning -p "$redis_port" ping >/dev/null
EOF
}

cmd_up() {
    need_root
    cmd_build
    local root pid t0
    root=$(root_dir)
    mkdir -p "$RUN_DIR" "$STATE/images/build" "$STATE/images/catalog"
    exec 8>"$STATE/.up.lock"
    flock 8
    if pid=$(holder_pid) && [[ $(cat "$RUN_DIR/holder.root" 2>/dev/null) != "$root" ]]; then
        say "namespace: running on an older root: restarting it"
        cmd_down
    fi
    if pid=$(holder_pid) && [[ $(cat "$RUN_DIR/holder.version" 2>/dev/null) != "$(ns_version)" ]]; then
        say "namespace: started by an older sidroot.sh (how it mounts /dev, ...): restarting it"
        cmd_down
    fi
    if pid=$(holder_pid); then
        say "namespace: running (init pid $pid)"
    else
        t0=$(now)
        rm -f "$HOLDER_PID"
        setsid "${BASH_SOURCE[0]}" _holder </dev/null >"$RUN_DIR/holder.log" 2>&1 7>&- 8>&- 9>&- &
        local starter=$! child="" p
        for _ in $(seq 100); do
            # the init is the child of unshare, itself the child of the starter: walk down
            # from the process started here (never a search by name across the machine)
            child=""
            for p in $(children_of "$starter"); do
                for p in "$p" $(children_of "$p"); do
                    [[ $(cat "/proc/$p/comm" 2>/dev/null) == sidroot-init ]] && child=$p
                done
            done
            [[ -n $child && -e /proc/$child/root/run/sidroot-init.ready ]] && break
            sleep 0.1
        done
        [[ -n $child && -e /proc/$child/root/run/sidroot-init.ready ]] || {
            cat "$RUN_DIR/holder.log" >&2
            die "the namespace did not start"
        }
        echo "$child" >"$HOLDER_PID"
        echo "$root" >"$RUN_DIR/holder.root"
        ns_version >"$RUN_DIR/holder.version"
        timing "namespace up" "$t0"
        say "namespace: started (init pid $child)"
    fi
    sync_users
    write_env
    t0=$(now)
    start_services 8>&- || die "services did not start"
    timing "services up (munge, redis, slurmctld, slurmd)" "$t0"
    say "up: munge, redis (127.0.0.1:$SID_REDIS_PORT), slurm 26.05 ($SID_NODE, partition $SID_PARTITION)"
}

children_of() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }

# What decides how a running namespace was set up (restart it when this changes). The
# checkout's device and inode too: a checkout removed and cloned again at the same path
# leaves the running namespace's /repo bound to the deleted directory.
ns_version() { { declare -f ns_exec cmd_holder; echo "$REPO"; stat -c '%d:%i' "$REPO"; } | sha256sum | cut -c1-16; }

# fuse [usable|root-only|missing|host]: set the namespace's /dev/fuse (its own /dev, so the
# host's device is never touched); without an argument, print the current state.
cmd_fuse() {
    need_root
    holder_pid >/dev/null || die "the namespace is not running (sidroot.sh up)"
    local mode=${1:-}
    if [[ -n $mode ]]; then
        local host_mode=""
        [[ -c /dev/fuse ]] && host_mode=$(stat -c %a /dev/fuse)
        # shellcheck disable=SC2016 # expanded by the inner shell
        ns_run root -- bash -c '
            set -e
            rm -f /dev/fuse
            case $1 in
                usable) mknod -m 0666 /dev/fuse c 10 229 ;;
                root-only) mknod -m 0600 /dev/fuse c 10 229 ;;
                missing) ;;
                host) [[ -z $2 ]] || mknod -m "$2" /dev/fuse c 10 229 ;;
                *) echo "fuse: unknown mode $1 (usable, root-only, missing, host)" >&2; exit 2 ;;
            esac' _ "$mode" "$host_mode"
    fi
    # shellcheck disable=SC2016
    ns_run root -- bash -c 'if [[ -c /dev/fuse ]]; then stat -c "%a %U" /dev/fuse; else echo missing; fi'
}

cmd_holder() { # internal: becomes the namespace's holder (started detached by `up`)
    local fd
    for fd in "/proc/$$/fd"/*; do # inherit nothing but stdin/out/err
        fd=${fd##*/}
        if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    ns_exec "$(readlink -f "$STATE/root")" \
        "$REPO:/repo:ro" \
        "$STATE/images/catalog:/srv/vizdesk/images" \
        "$STATE/images/build:/srv/vizdesk/build" \
        -- python3 -c "$INIT_PY"
}

cmd_down() {
    need_root
    local pid
    if pid=$(holder_pid); then
        kill -TERM "$pid"
        for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
        [[ -d /proc/$pid ]] && kill -KILL "$pid"
        say "namespace: stopped"
    else
        say "namespace: not running"
    fi
    rm -f "$HOLDER_PID"
}

# ns_run USER [-e K=V]... -- CMD...: run CMD in the running namespace (root or USER).
ns_run() {
    local user=$1
    shift
    local envs=()
    while [[ $# -gt 0 && $1 != -- ]]; do
        case $1 in
        -e) envs+=("$2"); shift 2 ;;
        *) die "ns_run: bad option $1" ;;
        esac
    done
    shift
    local pid home
    [[ $user =~ ^[a-z_][a-z0-9_-]*$ ]] || die "bad user name '$user'"
    pid=$(holder_pid) || die "the namespace is not running (sidroot.sh up)"
    if [[ $user == root ]]; then
        home=/root
        nsenter -t "$pid" -m -p -u -r -w -- env -i \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=$home \
            USER=root LOGNAME=root LANG=C.UTF-8 TERM="${TERM:-dumb}" "${envs[@]}" "$@" 7>&- 8>&- 9>&-
    else
        home=/home/$user
        nsenter -t "$pid" -m -p -u -r -w -- env -i \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$home" USER="$user" LOGNAME="$user" \
            LANG=C.UTF-8 TERM="${TERM:-dumb}" "${envs[@]}" \
            setpriv --reuid="$user" --regid="$user" --init-groups --reset-env -- \
            env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$home" USER="$user" LOGNAME="$user" \
            LANG=C.UTF-8 TERM="${TERM:-dumb}" "${envs[@]}" bash -c 'cd ~ 2>/dev/null || cd /; exec "$@"' _ "$@" \
            7>&- 8>&- 9>&-
    fi
}

cmd_run() {
    need_root
    local user=root envs=()
    while [[ $# -gt 0 ]]; do
        case $1 in
        -u | --user) user=$2; shift 2 ;;
        -e | --env) envs+=(-e "$2"); shift 2 ;;
        --) shift; break ;;
        *) break ;;
        esac
    done
    [[ $# -gt 0 ]] || die "run: no command"
    ns_run "$user" "${envs[@]}" -- "$@"
}

cmd_enter() {
    local user=root
    [[ ${1:-} == -u || ${1:-} == --user ]] && user=$2
    ns_run "$user" -- bash -l
}

# --------------------------------------------------------------------------- images

# build_image NAME DEF [BUILD-ARG]...: build DEF as the build user unless a .sif with the
# same definition hash exists; link it into the catalog directory as NAME.sif.
build_image() {
    local name=$1 def=$2
    shift 2
    local hash sif t0 args=()
    hash=$({
        cat "$def"
        printf '%s\n' "$@"
        if [[ -n ${HASH_EXTRA:-} ]]; then printf '%s\n' "$HASH_EXTRA"; fi
    } | sha256sum | cut -c1-16)
    sif=$STATE/images/build/$name-$hash.sif
    for a in "$@"; do args+=(--build-arg "$a"); done
    if [[ -s $sif ]]; then
        say "image $name: cached ($sif)"
    else
        say "image $name: building from ${def#"$REPO"/} ${*:-}"
        t0=$(now)
        cp "$def" "$STATE/images/build/$name.def"
        chmod 0644 "$STATE/images/build/$name.def"
        ns_run "$BUILD_USER" -- apptainer build --force --fakeroot "${args[@]}" \
            "/srv/vizdesk/build/$name-$hash.sif.tmp" "/srv/vizdesk/build/$name.def" \
            >"$STATE/images/build/$name.log" 2>&1 || {
            tail -30 "$STATE/images/build/$name.log" >&2
            die "apptainer build of $name failed (log: $STATE/images/build/$name.log)"
        }
        mv "$sif.tmp" "$sif"
        timing "apptainer build $name ${*:-}" "$t0"
        # drop older builds of the same image
        local old
        for old in "$STATE/images/build/$name"-????????????????.sif; do
            [[ $old == "$sif" ]] || rm -f "$old"
        done
    fi
    chmod 0644 "$sif"
    ln -f "$sif" "$STATE/images/catalog/$name.sif"
}

cmd_images() {
    need_root
    holder_pid >/dev/null || die "the namespace is not running (sidroot.sh up)"
    mkdir -p "$STATE/images/build" "$STATE/images/catalog"
    exec 7>"$STATE/.images.lock"
    flock 7
    local which=${1:-all}
    if [[ $which == all || $which == compute ]]; then
        build_image compute "$REPO/containers/compute.def"
    fi
    if [[ $which == all || $which == vnc ]]; then
        build_image vnc "$REPO/containers/vnc.def" VNC=tigervnc
    fi
    if [[ $which == vnc-turbovnc ]]; then
        # The trees testbed/vgl.sh built, staged where the build user sees them.
        local src=${VIZDESK_VGL_DIR:-/var/lib/vizdesk-vgl} dst=$STATE/images/build/vgl-trees p extra=""
        for p in turbovnc virtualgl; do
            [[ -f $src/$p/.vizdesk-build-stamp ]] || die "no $p build in $src (testbed/vgl.sh build)"
            if ! cmp -s "$src/$p/.vizdesk-build-stamp" "$dst/$p/.vizdesk-build-stamp"; then
                rm -rf "${dst:?}/$p"
                mkdir -p "$dst"
                cp -a "$src/$p" "$dst/$p"
            fi
            extra+=$(cat "$src/$p/.vizdesk-build-stamp")
        done
        chmod -R a+rX "$dst"
        HASH_EXTRA=$extra build_image vnc-turbovnc "$REPO/containers/vnc.def" \
            VNC=turbovnc VGL_TREES=/srv/vizdesk/build/vgl-trees
        mkdir -p "$STATE/images/build/catalog-turbovnc"
        ln -f "$STATE/images/catalog/vnc-turbovnc.sif" "$STATE/images/build/catalog-turbovnc/vnc-turbovnc.sif"
        rm -f "$STATE/images/catalog/vnc-turbovnc.sif"
    fi
}

# --------------------------------------------------------------------------- python venv

# /opt/vizdesk-venv inside the root, with sid's Python: dependencies from PyPI (re-made when
# pyproject.toml changes), then vizdesk itself from a copy of /repo (each call: code changes).
cmd_venv() {
    need_root
    holder_pid >/dev/null || die "the namespace is not running (sidroot.sh up)"
    local t0 ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
    t0=$(now)
    # the host's CA bundle: PyPI may be reached through a TLS-inspecting proxy
    [[ -r $ca ]] && cp "$ca" "$(root_dir)/etc/vizdesk-sid/host-ca.crt"
    ns_run root -e PIP_CERT=/etc/vizdesk-sid/host-ca.crt -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
        -e PIP_DEFAULT_TIMEOUT=180 -- bash -s <<'EOF'
set -euo pipefail
[[ -s $PIP_CERT ]] || unset PIP_CERT
venv=/opt/vizdesk-venv
stamp=$(sha256sum /repo/pyproject.toml | cut -c1-16)
if [[ ! -x $venv/bin/python || $(cat $venv/.deps 2>/dev/null) != "$stamp" ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip setuptools wheel
    "$venv/bin/python" - <<'PY' >/tmp/vizdesk-deps.txt
import tomllib
data = tomllib.load(open("/repo/pyproject.toml", "rb"))
print("\n".join(data["project"]["dependencies"]))
print("\n".join(data["project"].get("optional-dependencies", {}).get("test", [])))
PY
    "$venv/bin/pip" install -q -r /tmp/vizdesk-deps.txt
    echo "$stamp" >"$venv/.deps"
fi
rm -rf /tmp/vizdesk-src
mkdir -p /tmp/vizdesk-src
tar -C /repo --exclude=.git --exclude='*.egg-info' --exclude=__pycache__ --exclude=node_modules \
    --exclude=build --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.pytest_cache \
    -cf - pyproject.toml README.md daemon jobscripts $(cd /repo && ls -d containers 2>/dev/null) |
    tar -C /tmp/vizdesk-src -xf -
"$venv/bin/pip" install -q --no-deps --no-build-isolation --force-reinstall /tmp/vizdesk-src
chmod -R a+rX "$venv"
"$venv/bin/python" -c 'import sys, vizdesk; print("vizdesk", vizdesk.__file__, sys.version.split()[0])'
EOF
    timing "venv" "$t0"
}

# --------------------------------------------------------------------------- misc

cmd_status() {
    local pid
    echo "state:  $STATE"
    echo "root:   $(root_dir) $([[ -e $(root_dir)/.vizdesk-complete ]] && echo built || echo 'not built')"
    if pid=$(holder_pid); then
        echo "ns:     running (init pid $pid)"
        # shellcheck disable=SC2016
        ns_run root -- bash -c 'for pair in munged:/run/munge/munged.pid \
            redis-server:/run/redis/redis-sid.pid slurmctld:/run/slurmctld.pid slurmd:/run/slurmd.pid; do
            p=${pair%%:*} f=${pair#*:} pid=$(tr -dc 0-9 <"$f" 2>/dev/null || true)
            if [[ -n $pid && $(cat /proc/$pid/comm 2>/dev/null) == "$p"* ]]; then st=running; else st=stopped; fi
            printf "%-13s %s\n" "$p:" "$st"; done
            sinfo 2>/dev/null | sed "s/^/        /" || true'
    else
        echo "ns:     not running"
    fi
    ls -l "$STATE/images/catalog" 2>/dev/null || true
}

main() {
    local cmd=${1:-help}
    shift || true
    case $cmd in
    build) cmd_build "$@" ;;
    _holder) cmd_holder ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    run | exec) cmd_run "$@" ;;
    enter | shell) cmd_enter "$@" ;;
    images) cmd_images "$@" ;;
    fuse) cmd_fuse "$@" ;;
    venv) cmd_venv "$@" ;;
    status) cmd_status ;;
    env) cat "$RUN_DIR/env" ;;
    path) root_dir ;;
    hash) recipe_hash ;;
    timings) cat "$TIMINGS" 2>/dev/null || true ;;
    help | -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}" ;;
    *) die "unknown command '$cmd' (see: $0 help)" ;;
    esac
}

main "$@"; exit $? # one line: safe against edits of this file while it runs
