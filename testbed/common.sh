# Shell functions the test-bed scripts share (sourced, not run): messages, locks, packages,
# ports, files and daemons without our descriptors. The sourcing script sets, first:
#   BED     its name in messages ("testbed", "slurm2511", "vgl"; cluster.sh changes it)
#   DIR     its state directory (locks live there), LOG its log directory
#   PYTHON  the interpreter port_free runs
# and may override any function after sourcing.

T0=$(date +%s.%N)

say() { printf '%s: %s\n' "$BED" "$*"; }
die() {
    printf '%s: ERROR: %s\n' "$BED" "$*" >&2
    exit 1
}
# Exit code 3: a source cannot be obtained here (a tier skips, it does not fail).
die_unbuildable() {
    printf '%s: ERROR: %s\n' "$BED" "$*" >&2
    exit 3
}
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

require_root_debian() {
    if [[ ! -f /etc/debian_version ]]; then
        printf '%s: ERROR: not a Debian-like system (no /etc/debian_version); the test bed needs Debian 12\n' "$BED" >&2
        exit 2
    fi
    if [[ $(id -u) -ne 0 ]]; then
        printf '%s: ERROR: must run as root (try: sudo %s %s)\n' "$BED" "$0" "${CMD:-}" >&2
        exit 2
    fi
}

# Two locks per bed: fd 8 serialises builds (long), fd 9 serialises up/down (short). A
# caller that only wants to know whether a build is under way tries fd 8 without waiting.
# take_lock [SECONDS]: wait at most SECONDS (900) for fd 9.
take_lock() {
    local wait=${1:-900}
    mkdir -p "$DIR"
    chmod 0755 "$DIR"
    exec 9>"$DIR/.lock"
    flock -w "$wait" 9 || die "another $BED holds $DIR/.lock for more than $((wait / 60)) min"
}
take_build_lock() {
    mkdir -p "$DIR" "$LOG"
    exec 8>"$DIR/.build.lock"
    if ! flock -n 8; then
        say "another build holds $DIR/.build.lock; waiting for it (see $LOG/)"
        flock -w 3600 8 || die "the build lock was held for more than an hour"
    fi
}

# close_fds: close every descriptor of this (sub)shell above 2. A caller may hold a lock
# (`flock FILE make test` hands its fd down; so do our own fds 8 and 9, and the copies of
# 1 and 2 that bash keeps while a redirection applies): a daemon or a background build that
# kept one would hold that lock, or a reader's pipe, for as long as it runs.
close_fds() {
    local fd
    for fd in /proc/$BASHPID/fd/*; do
        fd=${fd##*/}
        if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
}
# nolock COMMAND...: run COMMAND (a program, or a shell function such as cluster.sh's `on`)
# in the foreground with no descriptor of ours but 0-2.
nolock() {
    (
        close_fds
        if declare -F "$1" >/dev/null; then
            "$@"
            exit
        fi
        exec "$@"
    )
}
# detach PROGRAM...: start PROGRAM in the background in a session of its own, with no
# descriptor of ours but 0-2, and no shell of ours left between: $! is PROGRAM itself
# (setsid execs it, a background subshell being no process-group leader).
detach() {
    (
        close_fds
        exec setsid "$@"
    ) &
}

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds (1 when SECONDS pass first).
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

# --- packages -----------------------------------------------------------------------------

# missing_packages PKG...: the ones dpkg does not have installed, one per line.
missing_packages() {
    local status p
    status=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null || true)
    for p in "$@"; do
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
# install_packages PKG...: apt-get install the missing ones; die when any is still missing.
install_packages() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
    if ((${#missing[@]} == 0)); then
        say "packages: all $# installed"
        return 0
    fi
    mkdir -p "$LOG"
    say "packages: installing ${missing[*]}"
    apt_lists_fresh || apt_update
    # Package scripts must not start daemons (Debian's munge and redis-server would take the
    # default socket and port): a policy-rc.d for the duration of the install.
    local policy=/usr/sbin/policy-rc.d ours=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# vizdesk %s: no daemon starts during its apt-get install\nexit 101\n' "$BED" >"$policy"
        chmod 0755 "$policy"
        ours=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT # also when die exits
    fi
    local apt=(apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef
        -o Dpkg::Options::=--force-confold install -y -q --no-install-recommends)
    if ! "${apt[@]}" "${missing[@]}" >"$LOG/apt-install.log" 2>&1; then
        say "apt-get install failed; refreshing package lists and retrying"
        apt_update
        "${apt[@]}" "${missing[@]}" >"$LOG/apt-install.log" 2>&1 ||
            die "apt-get install failed: $(tail -n 5 "$LOG/apt-install.log")"
    fi
    if ((ours)); then
        rm -f "$policy"
        trap - EXIT
    fi
    mapfile -t missing < <(missing_packages "$@")
    ((${#missing[@]} == 0)) || die "still missing after apt-get install: ${missing[*]}"
    say "packages: installed"
}

# --- ports and files ----------------------------------------------------------------------

# port_free PORT: 0 when nothing listens on PORT (any address or loopback).
port_free() {
    "$PYTHON" - "$1" <<'PY'
import socket, sys
port = int(sys.argv[1])
for addr in ("0.0.0.0", "127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((addr, port))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
}

# choose_port SAVED DEFAULT OURS TAKEN...: SAVED when ours or free, else the first free one
# from DEFAULT on that is not among TAKEN.
choose_port() {
    local current=$1 default=$2 ours=$3 p t
    shift 3
    if [[ -n $current ]] && { ((ours)) || port_free "$current"; }; then
        echo "$current"
        return 0
    fi
    for ((p = default; p < default + 400; p++)); do
        for t in "$@"; do [[ $p == "$t" ]] && continue 2; done
        if port_free "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "no free port in $default-$((default + 399))"
}

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

# --- processes ----------------------------------------------------------------------------

# pid_of PIDFILE COMM [MARK]: print the pid when the pid file names a live process called
# COMM in our pid namespace whose command line contains MARK (a path only the test bed's
# own instance is started with: its config file or socket). Nothing else is ever ours.
pid_of() {
    local file=$1 comm=$2 mark=${3:-} pid
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file" 2>/dev/null || true)
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm"* ]] || return 1
    same_pidns "$pid" || return 1
    if [[ -n $mark ]]; then
        tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$mark" || return 1
    fi
    echo "$pid"
}

# The test bed's daemons, each identified by its pid file and the path it was started with.
munged_pid() { pid_of "$MUNGE_PID" munged "$MUNGE_SOCKET"; }
ctld_pid() { pid_of "$CTLD_PID" slurmctld "$SLURM_CONF"; }
slurmd_pid() { pid_of "$SLURMD_PID" slurmd "$SLURM_CONF"; }
munge_ok() { munge --socket="$MUNGE_SOCKET" -n -t 10 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; }

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
