#!/usr/bin/env bash
# vizdesk test bed, Slurm 25.11 tier: Slurm 25.11.7 built from source into a prefix of its
# own, a Slurm 25.11 instance from that prefix (own munged, slurmctld, slurmd, ports, node
# and partition) beside the Debian 22.05 one of testbed.sh, and pyslurm 25.11.2 built
# against the prefix into a venv of its own.
#
#   slurm2511.sh build    verify the archive, build Slurm + the pyslurm wheel + the venv
#                         (cached by checksum: a second run costs seconds)
#   slurm2511.sh up       build, then start munged/slurmctld/slurmd and wait until a job runs
#   slurm2511.sh down     stop everything this script started (the build stays)
#   slurm2511.sh status   one line per component; exit 0 when all are up
#   slurm2511.sh build-bg start `build` in the background (log $DIR/log/build-bg.log) and
#                         return at once: `make test` starts it early so that the cold
#                         build overlaps the other tiers; `up` and `wait` wait for it
#   slurm2511.sh wait     wait for a build another process runs (holds the build lock)
#
# Run as root on Debian 12. All state lives under $VIZDESK_SLURM2511_DIR (default
# /var/lib/vizdesk-slurm2511). The prefix is NOT relocatable (library, plugin, slurmstepd
# and default slurm.conf paths are compiled in): it always lives at $DIR/prefix.
# After `up`, $DIR/env holds KEY=VALUE lines for the tests (tests/slurm2511/).
set -euo pipefail
umask 022

DIR=${VIZDESK_SLURM2511_DIR:-/var/lib/vizdesk-slurm2511}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
VENDOR=${VIZDESK_VENDOR_DIR:-$(cd "$REPO/.." && pwd)/shared/vendor}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

SLURM_VERSION=25.11.7
SLURM_ARCHIVE=slurm-$SLURM_VERSION.tar.xz
# Without the vendored archive: SchedMD's release tarball, checked against the SHA1
# SchedMD publishes on its download page (or VIZDESK_SLURM_UPSTREAM_SHA1 when set).
UPSTREAM_TARBALL=slurm-$SLURM_VERSION.tar.bz2
UPSTREAM_URL=https://download.schedmd.com/slurm/$UPSTREAM_TARBALL
UPSTREAM_PAGE=https://www.schedmd.com/download-slurm/
PYSLURM_VERSION=25.11.2
PYTHON=/usr/bin/python3
# libjson-c-dev: serializer/json, without which `squeue --json` (the CLI backend) is fatal;
# libhttp-parser-dev: slurmctld's listener otherwise logs "cannot create url_parser context".
BUILD_DEPS=(build-essential pkg-config libmunge-dev libjson-c-dev libhttp-parser-dev munge python3-venv python3-dev)
CONFIGURE_FLAGS=(--disable-debug --without-hdf5 --without-rrdtool --without-pmix --without-ucx)

PREFIX=$DIR/prefix
STAMP=$PREFIX/.vizdesk-build-stamp
SRC=$DIR/src
LOG=$DIR/log
ETC=$DIR/etc
RUN=$DIR/run
SPOOL=$DIR/spool
STATE=$DIR/state
WHEELS=$DIR/wheels
VENV=$DIR/venv
PORTS=$DIR/ports
NODE=vd2511
PARTITION=p2511
CLUSTER=vd2511
DEFAULT_SLURMCTLD_PORT=6917
DEFAULT_SLURMD_PORT=6918
export SLURM_CONF=$ETC/slurm.conf
MUNGE_RUN=$RUN/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
MUNGE_SOCKET=$MUNGE_RUN/munge.socket.2
MUNGE_KEY=$ETC/munge/munge.key
MUNGE_LIB=$DIR/munge
CTLD_PID=$RUN/slurmctld.pid
SLURMD_PID=$RUN/slurmd.pid

BED=slurm2511
# shellcheck source=common.sh
source "$HERE/common.sh" # say die take_lock take_build_lock nolock install_packages ...


# --- build --------------------------------------------------------------------------------

# fetch_source: print the path of a verified source archive and set SOURCE_SHA256.
fetch_source() {
    local sums=$VENDOR/SHA256SUMS archive=$VENDOR/$SLURM_ARCHIVE want got
    if [[ -f $archive && -f $sums ]]; then
        want=$(awk -v f="$SLURM_ARCHIVE" '$2 == f || $2 == "*" f { print $1 }' "$sums")
        [[ -n $want ]] || die "$sums has no line for $SLURM_ARCHIVE"
        got=$(sha256sum "$archive" | awk '{print $1}')
        [[ $got == "$want" ]] || die "$archive: SHA256 $got, SHA256SUMS says $want"
        SOURCE_SHA256=$got
        SOURCE=$archive
        return 0
    fi
    # UNTESTED here (schedmd.com is not reachable from these machines).
    say "no $archive; downloading $UPSTREAM_URL"
    mkdir -p "$DIR/download"
    local dl=$DIR/download/$UPSTREAM_TARBALL sha1
    sha1=${VIZDESK_SLURM_UPSTREAM_SHA1:-}
    if [[ -z $sha1 ]]; then
        # SchedMD's download page lists each tarball with its SHA1 right after its link.
        sha1=$(curl -fsSL --retry 3 "$UPSTREAM_PAGE" |
            tr '<>' '\n\n' | grep -A12 -F "$UPSTREAM_TARBALL" | grep -oiE '\b[0-9a-f]{40}\b' | head -n 1) ||
            die_unbuildable "could not read the published checksum from $UPSTREAM_PAGE (set VIZDESK_SLURM_UPSTREAM_SHA1)"
        [[ -n $sha1 ]] || die_unbuildable "no SHA1 for $UPSTREAM_TARBALL on $UPSTREAM_PAGE (set VIZDESK_SLURM_UPSTREAM_SHA1)"
    fi
    curl -fsSL --retry 3 -o "$dl.part" "$UPSTREAM_URL" || die_unbuildable "download of $UPSTREAM_URL failed"
    got=$(sha1sum "$dl.part" | awk '{print $1}')
    [[ $got == "$sha1" ]] || die "$UPSTREAM_URL: SHA1 $got, published $sha1"
    mv "$dl.part" "$dl"
    SOURCE_SHA256=$(sha256sum "$dl" | awk '{print $1}')
    SOURCE=$dl
}

# The stamp names what the prefix was built from and how: archive checksum, flags, prefix.
stamp_text() {
    printf 'slurm %s\nsource_sha256 %s\nprefix %s\nsysconfdir %s\nconfigure %s\ndeps %s\n' \
        "$SLURM_VERSION" "$SOURCE_SHA256" "$PREFIX" "$ETC" "${CONFIGURE_FLAGS[*]}" "${BUILD_DEPS[*]}"
}
# The key the pyslurm wheel and the venv are cached by: the Slurm stamp plus pyslurm's version.
prefix_key() { { cat "$STAMP"; echo "pyslurm $PYSLURM_VERSION"; } | sha256sum | cut -c1-16; }

build_slurm() {
    fetch_source
    if [[ -f $STAMP && $(cat "$STAMP") == "$(stamp_text)" && -x $PREFIX/sbin/slurmctld ]]; then
        say "slurm: $PREFIX is built from ${SOURCE_SHA256:0:12}… (cached)"
        return 0
    fi
    install_packages "${BUILD_DEPS[@]}"
    say "slurm: building $SLURM_VERSION into $PREFIX (log $LOG/build.log)"
    rm -rf "$SRC" "$PREFIX"
    mkdir -p "$SRC"
    local t
    t=$(date +%s)
    (
        echo "== $(date -Is) unpack $SOURCE"
        tar -xf "$SOURCE" -C "$SRC" --strip-components=1
        cd "$SRC"
        echo "== $(date -Is) configure ${CONFIGURE_FLAGS[*]}"
        nice -n 10 ./configure --prefix="$PREFIX" --sysconfdir="$ETC" "${CONFIGURE_FLAGS[@]}"
        echo "== $(date -Is) make -j2"
        nice -n 10 make -j2
        echo "== $(date -Is) make install"
        nice -n 10 make install
        # The static archives and libtool files are not needed by anything here.
        find "$PREFIX" \( -name '*.a' -o -name '*.la' \) -delete
        echo "== $(date -Is) done"
    ) >"$LOG/build.log" 2>&1 || die "slurm build failed: $(tail -n 15 "$LOG/build.log")"
    [[ -e $PREFIX/lib/slurm/auth_munge.so ]] || die "the build has no auth_munge plugin (libmunge-dev missing at configure?)"
    [[ -e $PREFIX/lib/slurm/serializer_json.so ]] || die "the build has no serializer/json plugin (libjson-c-dev missing at configure?)"
    stamp_text >"$STAMP"
    say "slurm: built in $(($(date +%s) - t)) s, prefix $(du -sh "$PREFIX" | cut -f1)"
    rm -rf "$SRC"
}

# pyslurm's wheel links libslurmfull.so of one prefix; pip's own wheel cache would reuse a
# wheel built against another, so we build with --no-cache-dir and cache by prefix_key.
build_wheel() {
    local key wheel_dir wheel t
    key=$(prefix_key)
    wheel_dir=$WHEELS/$key
    wheel=$(find "$wheel_dir" -maxdepth 1 -name "pyslurm-$PYSLURM_VERSION-*.whl" -print -quit 2>/dev/null || true)
    if [[ -n $wheel ]]; then
        say "pyslurm: wheel cached ($wheel)"
        WHEEL=$wheel
        return 0
    fi
    say "pyslurm: building $PYSLURM_VERSION against $PREFIX (6.5-8.5 min; log $LOG/pyslurm-build.log)"
    t=$(date +%s)
    rm -rf "$DIR/wheel-venv" "$wheel_dir.part"
    mkdir -p "$wheel_dir.part"
    (
        cd "$DIR"
        "$PYTHON" -m venv "$DIR/wheel-venv"
        "$DIR/wheel-venv/bin/pip" install -q --upgrade pip wheel
        SLURM_INCLUDE_DIR=$PREFIX/include SLURM_LIB_DIR=$PREFIX/lib MAKEFLAGS=-j2 \
            nice -n 10 "$DIR/wheel-venv/bin/pip" wheel --no-cache-dir --no-deps \
            -w "$wheel_dir.part" "pyslurm==$PYSLURM_VERSION"
    ) >"$LOG/pyslurm-build.log" 2>&1 || die "pyslurm build failed: $(tail -n 15 "$LOG/pyslurm-build.log")"
    rm -rf "$DIR/wheel-venv"
    mkdir -p "$WHEELS"
    rm -rf "$wheel_dir"
    mv "$wheel_dir.part" "$wheel_dir"
    WHEEL=$(find "$wheel_dir" -maxdepth 1 -name "pyslurm-$PYSLURM_VERSION-*.whl" -print -quit)
    [[ -n $WHEEL ]] || die "pip wheel produced no pyslurm wheel in $wheel_dir"
    say "pyslurm: wheel built in $(($(date +%s) - t)) s ($(du -h "$WHEEL" | cut -f1))"
}

# The tier's venv: vizdesk from this repository (editable, with test extras) + the wheel.
build_venv() {
    local want have
    want="$(prefix_key) $(sha256sum "$REPO/pyproject.toml" | cut -c1-16) $REPO"
    have=$(cat "$VENV/.vizdesk-stamp" 2>/dev/null || true)
    if [[ $have == "$want" && -x $VENV/bin/vizdesk ]] &&
        PYSLURM_DISABLE_AUTO_INIT=1 "$VENV/bin/python" -c 'import pyslurm' 2>/dev/null; then
        say "venv: $VENV up to date"
        return 0
    fi
    say "venv: (re)creating $VENV"
    rm -rf "$VENV"
    (
        cd "$DIR"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -e "$REPO[test]"
        "$VENV/bin/pip" install -q --no-deps --no-index "$WHEEL"
    ) >"$LOG/venv.log" 2>&1 || die "venv setup failed: $(tail -n 10 "$LOG/venv.log")"
    PYSLURM_DISABLE_AUTO_INIT=1 "$VENV/bin/python" -c 'import pyslurm' ||
        die "pyslurm does not import in $VENV"
    echo "$want" >"$VENV/.vizdesk-stamp"
    chmod -R a+rX "$VENV"
}

cmd_build() {
    take_build_lock
    build_slurm
    build_wheel
    build_venv
    date -Is >"$DIR/.build-ok"
    say "build done in $(elapsed)s"
}

cmd_build_bg() {
    mkdir -p "$DIR" "$LOG"
    # Already built and nothing changed: nothing to start. Otherwise one detached build;
    # a second build-bg while it runs just waits on the lock in the background too.
    detach nohup "${BASH_SOURCE[0]}" build >"$LOG/build-bg.log" 2>&1 </dev/null
    say "build started in the background (pid $!, log $LOG/build-bg.log)"
}

# wait: block until no build runs, then succeed when the last build finished.
cmd_wait() {
    mkdir -p "$DIR"
    exec 8>"$DIR/.build.lock"
    flock -w "${1:-3600}" 8 || die "a build is still running"
    [[ -f $DIR/.build-ok && -f $STAMP ]] || die "no finished build in $DIR"
}

# --- instance -----------------------------------------------------------------------------

HOST=$(hostname -s)
TESTBED_PORTS=${VIZDESK_TESTBED_DIR:-/var/lib/vizdesk-testbed}/ports
BIN=$PREFIX/bin
SBIN=$PREFIX/sbin
TEST_USER=alice

choose_ports() {
    local saved_ctld="" saved_slurmd="" ours taken=()
    if [[ -f $PORTS ]]; then
        saved_ctld=$(sed -n 's/^SLURMCTLD_PORT=\([0-9]*\)$/\1/p' "$PORTS")
        saved_slurmd=$(sed -n 's/^SLURMD_PORT=\([0-9]*\)$/\1/p' "$PORTS")
    fi
    # Never the 22.05 test bed's ports, even while it is down (it keeps them).
    [[ -f $TESTBED_PORTS ]] && mapfile -t taken < <(sed -n 's/^[A-Z_]*PORT=\([0-9]*\)$/\1/p' "$TESTBED_PORTS")
    ours=0; ctld_pid >/dev/null && ours=1
    SLURMCTLD_PORT=$(choose_port "${saved_ctld:-$DEFAULT_SLURMCTLD_PORT}" "$DEFAULT_SLURMCTLD_PORT" "$ours" "${taken[@]}")
    ours=0; slurmd_pid >/dev/null && ours=1
    SLURMD_PORT=$(choose_port "${saved_slurmd:-$DEFAULT_SLURMD_PORT}" "$DEFAULT_SLURMD_PORT" "$ours" "${taken[@]}" "$SLURMCTLD_PORT")
    printf 'SLURMCTLD_PORT=%s\nSLURMD_PORT=%s\n' "$SLURMCTLD_PORT" "$SLURMD_PORT" |
        write_if_changed "$PORTS" 0644 root:root || true
}

load_ports() {
    SLURMCTLD_PORT=$DEFAULT_SLURMCTLD_PORT SLURMD_PORT=$DEFAULT_SLURMD_PORT
    if [[ -f $PORTS ]]; then
        SLURMCTLD_PORT=$(sed -n 's/^SLURMCTLD_PORT=\([0-9]*\)$/\1/p' "$PORTS")
        SLURMD_PORT=$(sed -n 's/^SLURMD_PORT=\([0-9]*\)$/\1/p' "$PORTS")
    fi
}

make_dirs() {
    install -d -m 0755 "$ETC" "$RUN" "$LOG" "$SPOOL" "$DIR/jobs"
    install -d -m 0700 -o munge -g munge "$ETC/munge" "$MUNGE_LIB" "$LOG/munge"
    install -d -m 0755 -o munge -g munge "$MUNGE_RUN"
    install -d -m 0700 -o slurm -g slurm "$STATE"
    touch "$LOG/slurmctld.log" && chown slurm:slurm "$LOG/slurmctld.log"
    # Job output of the tier's tests (sessions.output_dir = $DIR/jobs/{user}).
    local u
    for u in alice bob; do
        id -u "$u" >/dev/null 2>&1 && install -d -m 0700 -o "$u" -g "$(id -gn "$u")" "$DIR/jobs/$u"
    done
    return 0
}

# Our own munged: own key, socket, pid and seed files (beside the host's and the 22.05 one's).
start_munge() {
    if [[ ! -s $MUNGE_KEY ]]; then
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
    [[ -n ${pid:-} ]] && stop_pid "$pid" munged 5
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    nolock runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
        --pid-file="$MUNGE_PID" --seed-file="$MUNGE_LIB/munged.seed" --log-file="$LOG/munge/munged.log" ||
        die "munged failed to start: $(tail -n 3 "$LOG/munge/munged.log" 2>/dev/null)"
    wait_for 10 munge munge_ok || die "munged does not answer, see $LOG/munge/munged.log"
    say "munged: started (pid $(cat "$MUNGE_PID"), $MUNGE_SOCKET)"
}

# The node is called "localhost" (NodeAddr 127.0.0.1): a name of its own that every host
# resolves, so the daemon's proxy reaches the desktop at the node Slurm reports, and
# `slurmd -N localhost` runs beside the 22.05 slurmd (node "$HOST") on the same machine.
slurm_conf_text() {
    cat <<EOF
# Generated by testbed/slurm2511.sh: a single-node Slurm 25.11 cluster beside the 22.05
# test bed. Do not edit.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
PropagateResourceLimits=NONE
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=5
ReturnToService=2
MaxJobCount=30000
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=64 Boards=1 SocketsPerBoard=1 CoresPerSocket=64 ThreadsPerCore=1 RealMemory=131072 State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

cgroup_conf_text() {
    printf '# Generated by testbed/slurm2511.sh\nCgroupPlugin=disabled\n'
}

ctld_ok() { "$BIN/scontrol" ping 2>/dev/null | grep -q 'is UP'; }
node_state() { "$BIN/sinfo" -h -N -n localhost -o %T 2>/dev/null | head -n 1; }
node_usable() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

start_slurm() {
    local changed=0 pid
    if slurm_conf_text | write_if_changed "$SLURM_CONF" 0644 root:root; then changed=1; fi
    if cgroup_conf_text | write_if_changed "$ETC/cgroup.conf" 0644 root:root; then changed=1; fi
    if ((changed)); then
        if pid=$(slurmd_pid); then say "config changed: stopping slurmd"; stop_pid "$pid" slurmd 15; fi
        if pid=$(ctld_pid); then say "config changed: stopping slurmctld"; stop_pid "$pid" slurmctld 15; fi
    fi
    if pid=$(ctld_pid) && ctld_ok; then
        say "slurmctld: running (pid $pid, port $SLURMCTLD_PORT)"
    else
        [[ -n ${pid:-} ]] && stop_pid "$pid" slurmctld 15
        port_free "$SLURMCTLD_PORT" || die "port $SLURMCTLD_PORT was taken meanwhile; run up again"
        nolock "$SBIN/slurmctld" -f "$SLURM_CONF" ||
            die "slurmctld failed to start: $(tail -n 5 "$LOG/slurmctld.log")"
        wait_for 30 slurmctld ctld_ok || die "slurmctld does not answer, see $LOG/slurmctld.log"
        say "slurmctld: started (pid $(cat "$CTLD_PID"), port $SLURMCTLD_PORT)"
        RESTARTED=1
    fi
    pid=
    if pid=$(slurmd_pid); then
        say "slurmd: running (pid $pid, port $SLURMD_PORT)"
    else
        nolock "$SBIN/slurmd" -f "$SLURM_CONF" -N localhost ||
            die "slurmd failed to start: $(tail -n 5 "$LOG/slurmd.log")"
        wait_for 10 slurmd slurmd_pid || die "slurmd did not start, see $LOG/slurmd.log"
        say "slurmd: started (pid $(cat "$SLURMD_PID"), node localhost, port $SLURMD_PORT)"
        RESTARTED=1
    fi
    local deadline=$(($(date +%s) + 40)) st resumed=0
    while ! node_usable; do
        st=$(node_state)
        if ((!resumed)) && [[ $st =~ ^(down|drained|draining|drain|fail|failing)$ ]]; then
            "$BIN/scontrol" update nodename=localhost state=resume >/dev/null 2>&1 || true
            resumed=1
        fi
        (($(date +%s) >= deadline)) && die "node localhost is '${st:-unknown}'; see $LOG/slurmd.log"
        sleep 0.3
    done
    say "node localhost: $(node_state)"
}

probe_job() {
    local id out st deadline
    out=/tmp/vizdesk-slurm2511-probe.$$.out
    rm -f "$out"
    id=$(runuser -u "$TEST_USER" -- env SLURM_CONF="$SLURM_CONF" "$BIN/sbatch" --parsable \
        --job-name=slurm2511-probe --chdir=/tmp --output="$out" --time=1 --wrap 'id -un') ||
        die "sbatch as $TEST_USER failed"
    id=${id%%;*}
    deadline=$(($(date +%s) + 60))
    while :; do
        st=$("$BIN/scontrol" show job -o "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
        case $st in
            COMPLETED) break ;;
            FAILED | CANCELLED | TIMEOUT | NODE_FAIL | BOOT_FAIL | OUT_OF_MEMORY | PREEMPTED | DEADLINE)
                die "probe job $id ended $st: $(cat "$out" 2>/dev/null)" ;;
        esac
        if (($(date +%s) >= deadline)); then
            "$BIN/scancel" "$id" 2>/dev/null || true
            die "probe job $id still '$st' after 60 s; see $LOG/slurmctld.log"
        fi
        sleep 0.2
    done
    [[ $(cat "$out" 2>/dev/null) == "$TEST_USER" ]] || die "probe job $id ran as '$(cat "$out")'"
    rm -f "$out"
    say "probe job $id ran as $TEST_USER"
    date +%s >"$RUN/probe-ok"
}

write_env() {
    write_if_changed "$DIR/env" 0644 root:root <<EOF || true
VIZDESK_SLURM2511_DIR=$DIR
SLURM2511_PREFIX=$PREFIX
SLURM2511_VENV=$VENV
SLURM_CONF=$SLURM_CONF
SLURM_NODE=localhost
SLURM_PARTITION=$PARTITION
SLURM_VERSION=$("$BIN/sinfo" --version | awk '{print $2}')
SLURMCTLD_PIDFILE=$CTLD_PID
SLURMD_PIDFILE=$SLURMD_PID
SLURMCTLD_PORT=$SLURMCTLD_PORT
SLURMD_PORT=$SLURMD_PORT
MUNGE_SOCKET=$MUNGE_SOCKET
MUNGED_PIDFILE=$MUNGE_PID
PYSLURM_VERSION=$PYSLURM_VERSION
EOF
}

cmd_up() {
    cmd_build
    cmd_instance_up
}

# The instance alone (the prefix must be built; `up` also builds the wheel and the venv).
cmd_instance_up() {
    [[ -f $STAMP && -x $SBIN/slurmctld ]] || die "no Slurm build in $PREFIX: run build first"
    take_lock
    RESTARTED=0
    make_dirs
    choose_ports
    start_munge
    start_slurm
    if ((RESTARTED)) || [[ ! -f $RUN/probe-ok ]]; then probe_job; fi
    write_env
    say "up in $(elapsed)s: env $DIR/env, Slurm $("$BIN/sinfo" --version | awk '{print $2}'), node localhost, partition $PARTITION"
}

# Processes of the test users' jobs on our cluster: their environment names our slurm.conf
# (never another Slurm's job, a login session, or a daemon of ours).
our_job_processes() {
    local d pid uids u
    uids=" "
    for u in alice bob; do uids+="$(id -u "$u" 2>/dev/null) "; done
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $uids == *" $(stat -c %u "$d" 2>/dev/null) "* ]] || continue
        if tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -qxF "SLURM_CONF=$SLURM_CONF"; then
            echo "$pid"
        fi
    done
    return 0
}
# slurmstepd processes of our slurmd (they log to our slurmd log file).
our_stepds() {
    local d pid
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $(cat "$d/comm" 2>/dev/null) == slurmstepd ]] || continue
        find "$d/fd" -maxdepth 1 -lname "$LOG/slurmd.log" -print -quit 2>/dev/null | grep -q . && echo "$pid"
    done
    return 0
}

cmd_down() {
    take_lock
    load_ports
    rm -f "$RUN/probe-ok" "$DIR/env"
    local pid ids
    if [[ -x $BIN/squeue && -f $SLURM_CONF ]] && ctld_pid >/dev/null && ctld_ok; then
        ids=$("$BIN/squeue" -h -t PD,R,CG,S,CF -o %A 2>/dev/null | tr '\n' ' ' || true)
        if [[ -n ${ids// /} ]]; then
            say "cancelling $(wc -w <<<"$ids") job(s)"
            # shellcheck disable=SC2086
            "$BIN/scancel" $ids 2>/dev/null || true
            # shellcheck disable=SC2016
            wait_for 15 "jobs to end" bash -c '[[ -z $("$0" -h -t R,CG,CF -o %A) ]]' "$BIN/squeue" || true
        fi
    fi
    if pid=$(slurmd_pid); then stop_pid "$pid" slurmd 15; say "slurmd: stopped"; fi
    if pid=$(ctld_pid); then stop_pid "$pid" slurmctld 15; say "slurmctld: stopped"; fi
    for pid in $(our_stepds); do stop_pid "$pid" slurmstepd 5; done
    pids=$(our_job_processes)
    if [[ -n $pids ]]; then
        say "stopping $(wc -w <<<"$pids") leftover job process(es)"
        for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
        sleep 1
        for pid in $(our_job_processes); do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    if pid=$(munged_pid); then stop_pid "$pid" munged 10; say "munged: stopped"; fi
    say "down in $(elapsed)s"
}

cmd_status() {
    local rc=0 pid
    load_ports
    line() { printf '%-10s %-5s %s\n' "$1" "$2" "$3"; }
    if [[ -f $STAMP ]]; then line build ok "$PREFIX ($(sed -n 's/^source_sha256 //p' "$STAMP" | cut -c1-12)…)"
    else line build none "$PREFIX"; rc=1; fi
    if PYSLURM_DISABLE_AUTO_INIT=1 "$VENV/bin/python" -c 'import pyslurm' 2>/dev/null; then line venv ok "$VENV (pyslurm $PYSLURM_VERSION)"
    else line venv none "$VENV"; rc=1; fi
    if pid=$(munged_pid) && munge_ok; then line munged up "pid $pid, $MUNGE_SOCKET"
    else line munged down ""; rc=1; fi
    if pid=$(ctld_pid) && ctld_ok; then line slurmctld up "pid $pid, port $SLURMCTLD_PORT"
    else line slurmctld down ""; rc=1; fi
    if pid=$(slurmd_pid) && node_usable; then line slurmd up "pid $pid, port $SLURMD_PORT, node localhost $(node_state)"
    else line slurmd down "${pid:+pid $pid }$(node_state 2>/dev/null || true)"; rc=1; fi
    return $rc
}

# --- main ---------------------------------------------------------------------------------

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

CMD=${1:-}
case $CMD in
    build) require_root_debian; cmd_build ;;
    up) require_root_debian; cmd_up ;;
    instance-up) require_root_debian; cmd_instance_up ;;
    down) require_root_debian; cmd_down ;;
    status) cmd_status ;;
    build-bg) require_root_debian; cmd_build_bg ;;
    wait) cmd_wait "${2:-3600}" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 64 ;;
esac
