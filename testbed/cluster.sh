#!/usr/bin/env bash
# vizdesk cluster test bed: a head node and 3 compute nodes on one machine, joined by a
# private network that exists only inside it. Beside the single-node bed (testbed.sh),
# whose packages, users (alice, bob) and install functions it reuses.
#
#   cluster.sh up        build the network, start head and nodes, wait until all answer
#   cluster.sh down      stop everything it started, remove namespaces, veths and bridge
#   cluster.sh status    one line per component; exit 0 when all are up
#   cluster.sh exec HOST CMD...   run CMD on HOST (head, node1, node2, node3)
#   cluster.sh delay NODE MS|off  NODE's cable through a userspace delay line (+MS RTT)
#
# Every host is a network namespace (/run/netns/vzc-HOST) plus a mount and UTS namespace
# held by one "holder" process (pid file run/hold-HOST.pid): its own hostname, its own
# /etc/hosts (bind-mounted), its own /tmp and its own munged socket at one path. A host is
# entered with nsenter on the holder (never `ip netns exec`: it remounts /sys, hides
# /sys/fs/cgroup, and slurmd 22.05 then refuses to start). The hosts' eth0 are veth pairs
# to a bridge in a namespace of its own (vzc-sw), subnet 10.199.0.0/24: head .1, nodeN
# .1N. Nothing is added to the machine's own network namespace.
#
# head:  munged, slurmctld (SlurmctldHost=head), Redis (10.199.0.1:6379), vizdesk serve
#        (10.199.0.1:8080); nodeN: munged, slurmd (NodeName=nodeN). One venv ($DIR/venv)
#        from this checkout serves the daemon and the nodes' wrapper (as a shared
#        /opt would on a real cluster). All state under $VIZDESK_CLUSTER_DIR (default
#        /var/lib/vizdesk-cluster); after `up` it holds env (KEY=VALUE lines for tests).
set -euo pipefail
umask 022

CLUSTER_DIR=${VIZDESK_CLUSTER_DIR:-/var/lib/vizdesk-cluster}
CHERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The single-node bed's functions (packages, users, venv, pid and config helpers), with
# every path it derives from its directory pointing into ours.
# shellcheck source=testbed.sh
VIZDESK_TESTBED_DIR=$CLUSTER_DIR source "$CHERE/testbed.sh"
[[ $DIR == "$CLUSTER_DIR" ]] || { echo "cluster: testbed.sh did not take our directory" >&2; exit 1; }
BED=cluster # say/die (testbed/common.sh) name us

SUBNET=10.199.0
HEAD_IP=$SUBNET.1
NODES=(node1 node2 node3)
HOSTS=(head "${NODES[@]}")
NS_PREFIX=vzc-
SW_NS=${NS_PREFIX}sw
BRIDGE=br0
DAEMON_PORT=8080
REDIS_PORT=6379
SLURMCTLD_PORT=6817
SLURMD_PORT=6818
REDIS_URL="redis://$HEAD_IP:$REDIS_PORT/0"
HOSTS_FILE=$ETC/hosts
HOSTDIR=$DIR/hosts
# One path, a different munged behind it on every host (bind-mounted from hosts/HOST/munge).
MUNGE_RUN=$RUN/munge
MUNGE_SOCKET=$MUNGE_RUN/munge.socket.2
DAEMON_PID=$RUN/vizdesk.pid
CTLD_PID=$RUN/slurmctld.pid
export SLURM_CONF=$ETC/slurm.conf

ip_of() {
    case $1 in
        head) echo "$HEAD_IP" ;;
        node*) echo "$SUBNET.1${1#node}" ;;
        *) die "unknown host $1" ;;
    esac
}
ns_of() { echo "$NS_PREFIX$1"; }

# --- namespaces and network ---------------------------------------------------------------

ns_exists() { [[ -e /run/netns/$1 ]]; }
netns_inode() { stat -L -c %i "/run/netns/$1" 2>/dev/null; }
# pid_in_ns PID NS: PID's network namespace is /run/netns/NS.
pid_in_ns() {
    local want have
    want=$(netns_inode "$2") || return 1
    have=$(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null) || return 1
    [[ $want == "$have" ]]
}

offloads_off() { ip netns exec "$1" "$PYTHON" "$CHERE/offloads_off.py" "${@:2}"; }

net_up() {
    if ! ns_exists "$SW_NS"; then ip netns add "$SW_NS"; fi
    ip -n "$SW_NS" link set lo up
    if ! ip -n "$SW_NS" link show "$BRIDGE" >/dev/null 2>&1; then
        ip -n "$SW_NS" link add "$BRIDGE" type bridge
    fi
    ip -n "$SW_NS" link set "$BRIDGE" up
    local h ns veth
    for h in "${HOSTS[@]}"; do
        ns=$(ns_of "$h")
        veth=v-$h
        if ! ns_exists "$ns"; then ip netns add "$ns"; fi
        ip -n "$ns" link set lo up
        if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
            ip -n "$SW_NS" link del "$veth" 2>/dev/null || true
            ip -n "$SW_NS" link add "$veth" type veth peer name eth0 netns "$ns"
        fi
        if [[ $h != head ]] && delay_pid "$h" >/dev/null; then
            ip -n "$SW_NS" link set "$veth" up # through its delay line (cluster.sh delay)
        else
            ip -n "$SW_NS" link set "$veth" master "$BRIDGE" up
        fi
        ip -n "$ns" addr replace "$(ip_of "$h")/24" dev eth0
        ip -n "$ns" link set eth0 up
        # `ip netns exec` is fine for this one ioctl (nothing here needs /sys/fs/cgroup)
        offloads_off "$ns" eth0 || die "could not turn off offloads on eth0 of $h"
        offloads_off "$SW_NS" "$veth" || die "could not turn off offloads on $veth"
    done
}

net_down() {
    local h
    for h in "${HOSTS[@]}"; do
        if ns_exists "$(ns_of "$h")"; then ip netns del "$(ns_of "$h")"; fi
    done
    if ns_exists "$SW_NS"; then ip netns del "$SW_NS"; fi
}

hosts_text() {
    echo "# Generated by testbed/cluster.sh: the cluster's names (bind-mounted as /etc/hosts)"
    echo "127.0.0.1 localhost"
    local h
    for h in "${HOSTS[@]}"; do echo "$(ip_of "$h") $h"; done
}

# --- holders: one process per host keeps its mount and UTS namespace --------------------

hold_pid() { pid_of "$RUN/hold-$1.pid" sleep "vzc-hold-$1"; }

# on HOST CMD...: run CMD on HOST (its network, mount and UTS namespace).
on() {
    local pid
    pid=$(hold_pid "$1") || die "host $1 is not up"
    nsenter -t "$pid" -n -m -u -- "${@:2}"
}

start_holder() {
    local h=$1 pid ns
    ns=$(ns_of "$h")
    if pid=$(hold_pid "$h") && pid_in_ns "$pid" "$ns"; then
        return 0
    fi
    [[ -n ${pid:-} ]] && stop_pid "$pid" "holder of $h" 5
    install -d -m 1777 -o root -g root "$HOSTDIR/$h/tmp"
    install -d -m 0755 -o munge -g munge "$HOSTDIR/$h/munge"
    # nsenter and unshare exec (no fork): $! is the holder itself once bash execs sleep.
    # The host's own /etc/nftables.conf (the node role's firewall tasks add a line to it).
    [[ -e $HOSTDIR/$h/nftables.conf ]] || printf '#!/usr/sbin/nft -f\n# %s of the vizdesk cluster test bed\n' "$h" >"$HOSTDIR/$h/nftables.conf"
    setsid nsenter --net="/run/netns/$ns" unshare --mount --uts --propagation private -- \
        bash -c 'set -e; hostname "$1"; mount --bind "$2" /etc/hosts; mount --bind "$3" /tmp
                 mount --bind "$4" "$5"; if [[ -e /etc/nftables.conf ]]; then mount --bind "$6" /etc/nftables.conf; fi
                 exec -a "vzc-hold-$1" sleep infinity' \
        _ "$h" "$HOSTS_FILE" "$HOSTDIR/$h/tmp" "$HOSTDIR/$h/munge" "$MUNGE_RUN" "$HOSTDIR/$h/nftables.conf" \
        </dev/null >>"$LOG/holders.log" 2>&1 9>&- &
    echo $! >"$RUN/hold-$h.pid"
    wait_for 10 "holder of $h" hold_pid "$h" || die "host $h did not come up, see $LOG/holders.log"
    say "$h: namespaces up (holder pid $(cat "$RUN/hold-$h.pid"), $(ip_of "$h"))"
    RESTARTED=1
}

# --- munged, one per host -----------------------------------------------------------------

host_munged_pid() {
    local pid
    pid=$(pid_of "$HOSTDIR/$1/munge/munged.pid" munged "$HOSTDIR/$1/munge/munged.log") || return 1
    pid_in_ns "$pid" "$(ns_of "$1")" || return 1
    echo "$pid"
}
host_munge_ok() {
    on "$1" bash -c 'munge --socket="$1" -n -t 10 | unmunge --socket="$1"' _ "$MUNGE_SOCKET" >/dev/null 2>&1
}

start_host_munged() {
    local h=$1 pid
    if pid=$(host_munged_pid "$h") && host_munge_ok "$h"; then
        return 0
    fi
    [[ -n ${pid:-} ]] && stop_pid "$pid" munged 5
    rm -f "$HOSTDIR/$h/munge/munge.socket.2" "$HOSTDIR/$h/munge/munge.socket.2.lock"
    nolock on "$h" runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
        --pid-file="$HOSTDIR/$h/munge/munged.pid" --seed-file="$HOSTDIR/$h/munge/munged.seed" \
        --log-file="$HOSTDIR/$h/munge/munged.log" ||
        die "munged on $h failed to start: $(tail -n 3 "$HOSTDIR/$h/munge/munged.log" 2>/dev/null)"
    wait_for 10 "munge on $h" host_munge_ok "$h" || die "munged on $h does not answer"
    RESTARTED=1
}

munge_key() {
    install -d -m 0755 -o root -g root "$ETC/munge"
    if [[ ! -s $MUNGE_KEY ]]; then
        dd if=/dev/urandom of="$MUNGE_KEY.tmp" bs=1024 count=1 status=none
        mv -f "$MUNGE_KEY.tmp" "$MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
}

# --- Redis on the head --------------------------------------------------------------------

cluster_redis_conf() {
    cat <<EOF
# Generated by testbed/cluster.sh. Contains the Redis password: root/redis only.
bind 127.0.0.1 $HEAD_IP
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
proto-max-bulk-len 1mb
user default on >$(cat "$SECRETS/redis_password") ~* &* +@all
EOF
}

head_redis_cli() {
    on head env REDISCLI_AUTH="$(cat "$SECRETS/redis_password")" redis-cli --no-auth-warning \
        -h "$HEAD_IP" -p "$REDIS_PORT" "$@"
}
cluster_redis_pid() {
    local pid info
    pid=$(pid_of "$REDIS_PID" redis-server) || return 1
    pid_in_ns "$pid" "$(ns_of head)" || return 1
    info=$(head_redis_cli info server 2>/dev/null | tr -d '\r') || return 1
    grep -qx "process_id:$pid" <<<"$info" || return 1
    grep -qx "config_file:$REDIS_CONF" <<<"$info" || return 1
    echo "$pid"
}

start_cluster_redis() {
    local changed=0 pid
    install -d -m 0750 -o redis -g redis "$REDIS_DIR" "$REDIS_DIR/data"
    [[ -e $LOG/redis.log ]] || install -m 0640 -o redis -g redis /dev/null "$LOG/redis.log"
    if cluster_redis_conf | write_if_changed "$REDIS_CONF" 0600 redis:redis; then changed=1; fi
    if pid=$(cluster_redis_pid); then
        ((changed)) || return 0
        stop_pid "$pid" redis-server 10
    fi
    nolock on head runuser -u redis -- redis-server "$REDIS_CONF" >/dev/null ||
        die "redis-server failed to start: $(tail -n 3 "$LOG/redis.log")"
    wait_for 10 redis cluster_redis_pid || die "redis does not answer, see $LOG/redis.log"
    say "head: redis started (pid $(cat "$REDIS_PID"), $HEAD_IP:$REDIS_PORT)"
    RESTARTED=1
}

# --- Slurm --------------------------------------------------------------------------------

cluster_slurm_conf() {
    cat <<EOF
# Generated by testbed/cluster.sh: the vizdesk cluster test bed (head + ${#NODES[@]} nodes). Do not edit.
ClusterName=vizdeskc
SlurmctldHost=head($HEAD_IP)
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/slurm/state
SlurmdSpoolDir=$HOSTDIR/%n/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$HOSTDIR/%n/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
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
# A cut node is DOWN within ~SlurmdTimeout (+ one ping interval): the failure tests wait for it.
SlurmdTimeout=15
MessageTimeout=5
Waittime=0
EOF
    local n
    for n in "${NODES[@]}"; do
        echo "NodeName=$n NodeAddr=$(ip_of "$n") NodeHostname=$n CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=16384 State=UNKNOWN"
    done
    local list
    list=$(IFS=,; echo "${NODES[*]}")
    # LLN: desktops go to the least loaded node (they spread over the cluster)
    echo "PartitionName=viz Nodes=$list Default=YES MaxTime=INFINITE State=UP LLN=YES"
    echo "PartitionName=batch Nodes=$list Default=NO MaxTime=INFINITE State=UP"
}

cluster_ctld_pid() {
    local pid
    pid=$(pid_of "$CTLD_PID" slurmctld "$SLURM_CONF") || return 1
    pid_in_ns "$pid" "$(ns_of head)" || return 1
    echo "$pid"
}
cluster_ctld_ok() { on head scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_slurmd_pid() {
    local pid
    pid=$(pid_of "$HOSTDIR/$1/slurmd.pid" slurmd "$SLURM_CONF") || return 1
    pid_in_ns "$pid" "$(ns_of "$1")" || return 1
    echo "$pid"
}
node_state_of() { on head sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n 1; }
all_nodes_idle() {
    local n
    for n in "${NODES[@]}"; do
        [[ $(node_state_of "$n") =~ ^(idle|mixed|allocated|completing)$ ]] || return 1
    done
}

start_cluster_slurm() {
    local changed=0 pid n
    install -d -m 0755 -o root -g root "$DIR/slurm"
    install -d -m 0700 -o slurm -g slurm "$DIR/slurm/state"
    [[ -e $LOG/slurmctld.log ]] || install -m 0640 -o slurm -g slurm /dev/null "$LOG/slurmctld.log"
    for n in "${NODES[@]}"; do install -d -m 0755 -o root -g root "$HOSTDIR/$n/spool"; done
    if cluster_slurm_conf | write_if_changed "$SLURM_CONF" 0644 root:root; then changed=1; fi
    if ((changed)); then
        for n in "${NODES[@]}"; do
            if pid=$(node_slurmd_pid "$n"); then stop_pid "$pid" "slurmd on $n" 15; fi
        done
        if pid=$(cluster_ctld_pid); then stop_pid "$pid" slurmctld 15; fi
    fi
    if ! { pid=$(cluster_ctld_pid) && cluster_ctld_ok; }; then
        [[ -n ${pid:-} ]] && stop_pid "$pid" slurmctld 15
        nolock on head slurmctld -f "$SLURM_CONF" ||
            die "slurmctld failed to start: $(tail -n 5 "$LOG/slurmctld.log")"
        wait_for 30 slurmctld cluster_ctld_ok || die "slurmctld does not answer, see $LOG/slurmctld.log"
        say "head: slurmctld started (pid $(cat "$CTLD_PID"))"
        RESTARTED=1
    fi
    for n in "${NODES[@]}"; do
        node_slurmd_pid "$n" >/dev/null && continue
        nolock on "$n" slurmd -f "$SLURM_CONF" -N "$n" ||
            die "slurmd on $n failed to start: $(tail -n 5 "$LOG/slurmd-$n.log")"
        wait_for 10 "slurmd on $n" node_slurmd_pid "$n" || die "slurmd on $n did not start, see $LOG/slurmd-$n.log"
        say "$n: slurmd started (pid $(cat "$HOSTDIR/$n/slurmd.pid"))"
        RESTARTED=1
    done
    local deadline=$(($(date +%s) + 60)) resumed=0 st
    until all_nodes_idle; do
        if ((!resumed)) && (($(date +%s) >= deadline - 50)); then
            for n in "${NODES[@]}"; do
                st=$(node_state_of "$n")
                if [[ $st =~ ^(down|drained|draining|drain|fail|failing)\*?$ ]]; then
                    say "$n is $st, resuming it"
                    on head scontrol update nodename="$n" state=resume >/dev/null 2>&1 || true
                fi
            done
            resumed=1
        fi
        (($(date +%s) < deadline)) || die "nodes not idle: $(on head sinfo -h -N -o '%N %T' | tr '\n' ' ')"
        sleep 0.3
    done
}

# A job as alice on every node (munge, slurmd, users, the network both ways).
cluster_probe() {
    local out n who
    for n in "${NODES[@]}"; do
        out=$(on head runuser -u alice -- srun --chdir=/tmp -w "$n" -N1 -n1 -t 1 bash -c 'echo "$(id -un)@$(hostname)"' 2>&1) ||
            die "srun on $n failed: $out"
        who=$(tail -n 1 <<<"$out")
        [[ $who == "alice@$n" ]] || die "probe on $n ran as '$who', expected alice@$n"
    done
    say "probe: alice ran a job on ${NODES[*]}"
    date +%s >"$RUN/probe-ok"
}

# --- the node role's firewall, for real, in each node ------------------------------------

OPS_VENV=${VIZDESK_OPS_VENV:-/var/lib/vizdesk-ops-venv}
FIREWALL=off # "on" once every node has the role's rules loaded

node_rules_loaded() { on "$1" nft list table inet vizdesk_node >/dev/null 2>&1; }

# The firewall tasks of ansible/roles/vizdesk_node, run by ansible-playbook inside each
# node (see cluster-firewall.yml); skipped, and said so, without the ops tools venv
# (tests/ops builds it) or without nftables in this kernel.
apply_node_firewall() {
    local n want stamp
    if [[ ! -x $OPS_VENV/bin/ansible-playbook ]]; then
        say "WARNING: no $OPS_VENV/bin/ansible-playbook (tests/ops builds it): node firewall not applied"
        return 0
    fi
    if ! on "${NODES[0]}" nft list tables >/dev/null 2>&1; then
        say "WARNING: nftables does not work in the node namespaces here: node firewall not applied"
        return 0
    fi
    if ! grep -q . /etc/nftables.conf 2>/dev/null; then
        say "WARNING: no /etc/nftables.conf to bind the nodes' copies over: node firewall not applied"
        return 0
    fi
    want=$(cat "$CHERE/cluster-firewall.yml" "$REPO"/ansible/roles/vizdesk_node/{tasks/firewall.yml,templates/vizdesk-node.nft.j2,handlers/main.yml} |
        sha256sum | cut -d' ' -f1)
    for n in "${NODES[@]}"; do
        stamp=$HOSTDIR/$n/firewall.applied
        if [[ -f $stamp && $(cat "$stamp") == "$want" && -f $HOSTDIR/$n/nftables.d/vizdesk-node.nft ]]; then
            node_rules_loaded "$n" && continue
            # What the role set up for boot: the node's /etc/nftables.conf includes its rules.
            if on "$n" nft -f /etc/nftables.conf && node_rules_loaded "$n"; then
                say "$n: node firewall loaded at 'boot' (its /etc/nftables.conf, as the role set it up)"
                continue
            fi
        fi
        # The role loads the rules from a handler, i.e. when its template task changed the file.
        rm -f "$HOSTDIR/$n/nftables.d/vizdesk-node.nft"
        # ANSIBLE_UNSAFE_WRITES: /etc/nftables.conf is a bind mount there (no rename over it)
        on "$n" env ANSIBLE_ROLES_PATH="$REPO/ansible/roles" ANSIBLE_LOCAL_TEMP="$HOSTDIR/$n/ansible-tmp" ANSIBLE_UNSAFE_WRITES=1 \
            ANSIBLE_NOCOLOR=1 "$OPS_VENV/bin/ansible-playbook" -i localhost, -c local \
            "$CHERE/cluster-firewall.yml" --start-at-task "vizdesk_node : Install nftables (Debian family)" \
            -e "ansible_python_interpreter=$OPS_VENV/bin/python" -e vizdesk_manage_packages=false \
            -e vizdesk_manage_firewall=true -e vizdesk_node_firewall_apply=true \
            -e "{\"vizdesk_node_firewall_proxy_sources\": [\"$HEAD_IP\"]}" \
            -e "vizdesk_node_nft_dir=$HOSTDIR/$n/nftables.d" >"$LOG/firewall-$n.log" 2>&1 ||
            die "the node role's firewall failed on $n, see $LOG/firewall-$n.log"
        node_rules_loaded "$n" || die "no vizdesk_node table on $n after the role ran, see $LOG/firewall-$n.log"
        echo "$want" >"$stamp"
        say "$n: node role's firewall applied (nft table inet vizdesk_node)"
    done
    FIREWALL=on
}

# --- the vizdesk daemon on the head -------------------------------------------------------

daemon_config() {
    cat <<EOF
# Generated by testbed/cluster.sh for the cluster test bed. No secrets here (only *_file paths).
server:
  host: $HEAD_IP
  port: $DAEMON_PORT
redis:
  url: $REDIS_URL
  password_file: $SECRETS/redis_password
auth:
  hs256_secret_file: $SECRETS/jwt_secret
slurm:
  submit_prefix: [runuser, -u, "{user}", --]
  partitions: [viz, batch]
  default_partition: viz
  conf_path: $SLURM_CONF
sessions:
  jobscript: $REPO/jobscripts/vnc.sbatch
  output_dir: $DIR/jobs/{user}
  registration_ttl_seconds: 15
node:
  vizdesk_command: $VENV/bin/vizdesk
  desktop_command: [startxfce4]
  port_min: 5901
  port_max: 5999
  vnc_listen: hostname
EOF
}

cluster_daemon_pid() {
    local pid
    pid=$(pid_of "$DAEMON_PID" vizdesk "$DIR/vizdesk.yaml") || pid=$(pid_of "$DAEMON_PID" python "$DIR/vizdesk.yaml") || return 1
    pid_in_ns "$pid" "$(ns_of head)" || return 1
    echo "$pid"
}
daemon_ok() {
    on head "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2).read()' \
        "http://$HEAD_IP:$DAEMON_PORT/healthz" >/dev/null 2>&1
}

start_cluster_daemon() {
    local changed=0 pid
    if daemon_config | write_if_changed "$DIR/vizdesk.yaml" 0644 root:root; then changed=1; fi
    "$VENV/bin/python" -c 'import sys; from vizdesk.config import load_config; load_config(sys.argv[1])' \
        "$DIR/vizdesk.yaml" || die "$DIR/vizdesk.yaml does not validate"
    if pid=$(cluster_daemon_pid); then
        if ((changed || VENV_CHANGED)); then stop_pid "$pid" vizdesk 15; else return 0; fi
    fi
    install -d -m 0755 -o root -g root "$DIR/jobs"
    local holder
    holder=$(hold_pid head)
    setsid nsenter -t "$holder" -n -m -u -- \
        "$VENV/bin/vizdesk" --config "$DIR/vizdesk.yaml" serve </dev/null >>"$LOG/vizdesk.log" 2>&1 9>&- &
    echo $! >"$DAEMON_PID"
    wait_for 30 "vizdesk daemon" daemon_ok || die "vizdesk daemon does not answer, see $LOG/vizdesk.log"
    say "head: vizdesk daemon started (pid $(cat "$DAEMON_PID"), http://$HEAD_IP:$DAEMON_PORT)"
}

write_cluster_env() {
    local n ips=()
    for n in "${NODES[@]}"; do ips+=("$(ip_of "$n")"); done
    write_if_changed "$DIR/env" 0644 root:root <<EOF || true
VIZDESK_TESTBED_DIR=$DIR
VIZDESK_CLUSTER_DIR=$DIR
VIZDESK_CONFIG=$DIR/vizdesk.yaml
VIZDESK_VENV=$VENV
VIZDESK_REPO=$REPO
VIZDESK_TEST_USERS=${TEST_USERS[*]}
REDIS_URL=$REDIS_URL
REDIS_PASSWORD_FILE=$SECRETS/redis_password
JWT_SECRET_FILE=$SECRETS/jwt_secret
SLURM_CONF=$SLURM_CONF
SLURM_NODE=${NODES[0]}
SLURM_VERSION=$(on head sinfo --version | awk '{print $2}')
CLUSTER_HEAD=head
CLUSTER_HEAD_IP=$HEAD_IP
CLUSTER_NODES=${NODES[*]}
CLUSTER_NODE_IPS=${ips[*]}
CLUSTER_SWITCH_NS=$SW_NS
CLUSTER_NS_PREFIX=$NS_PREFIX
CLUSTER_HOLD_DIR=$RUN
CLUSTER_DAEMON_URL=http://$HEAD_IP:$DAEMON_PORT
CLUSTER_FIREWALL=$FIREWALL
MUNGE_SOCKET=$MUNGE_SOCKET
EOF
}

# --- a slow node: a userspace delay line in its cable ------------------------------------

delay_pid() { pid_of "$RUN/delay-$1.pid" python3 "delay_relay.py" || pid_of "$RUN/delay-$1.pid" python "delay_relay.py"; }

# delay NODE MS: NODE's port on the bridge goes through delay_relay.py (+MS round trip);
# delay NODE off: straight to the bridge again.
cmd_delay() {
    local n=$1 ms=$2 pid a=d-$1-a b=d-$1-b
    take_lock
    if pid=$(delay_pid "$n"); then stop_pids 5 "$pid"; fi
    rm -f "$RUN/delay-$n.pid"
    ip -n "$SW_NS" link del "$a" 2>/dev/null || true
    if [[ $ms == off ]]; then
        ip -n "$SW_NS" link set "v-$n" master "$BRIDGE" up
        ip -n "$SW_NS" link set "v-$n" promisc off
        say "$n: cable straight to the bridge"
        return 0
    fi
    [[ $ms =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "delay: MS must be a number or 'off'"
    ip -n "$SW_NS" link set "v-$n" nomaster
    ip -n "$SW_NS" link add "$a" type veth peer name "$b"
    ip -n "$SW_NS" link set "$b" master "$BRIDGE" up
    ip -n "$SW_NS" link set "$a" up
    local dev
    for dev in "v-$n" "$a" "$b"; do
        offloads_off "$SW_NS" --gro "$dev" || die "could not turn off offloads on $dev"
        ip -n "$SW_NS" link set "$dev" promisc on
    done
    setsid ip netns exec "$SW_NS" "$PYTHON" "$CHERE/delay_relay.py" "v-$n" "$a" "$ms" \
        </dev/null >>"$LOG/delay-$n.log" 2>&1 9>&- &
    echo $! >"$RUN/delay-$n.pid"
    wait_for 10 "delay relay" delay_pid "$n" || die "delay relay did not start, see $LOG/delay-$n.log"
    say "$n: cable through a ${ms} ms delay line (pid $(cat "$RUN/delay-$n.pid"))"
}

# --- commands -----------------------------------------------------------------------------

cluster_install() {
    mkdir -p "$LOG"
    chmod 0755 "$DIR" "$LOG"
    install_packages "${PACKAGES[@]}"
    create_users
    local before=""
    [[ -f $VENV/.vizdesk-testbed-hash ]] && before=$(cat "$VENV/.vizdesk-testbed-hash")
    install_venv
    VENV_CHANGED=0
    [[ $(cat "$VENV/.vizdesk-testbed-hash") == "$before" ]] || VENV_CHANGED=1
}

cmd_cluster_up() {
    take_lock
    RESTARTED=0
    cluster_install
    install -d -m 0755 -o root -g root "$DIR" "$ETC" "$RUN" "$LOG" "$HOSTDIR"
    install -d -m 0700 -o root -g root "$SECRETS"
    install -d -m 0755 -o root -g root "$MUNGE_RUN"
    make_secret "$SECRETS/redis_password"
    make_secret "$SECRETS/jwt_secret"
    xfce_defaults
    munge_key
    hosts_text | write_if_changed "$HOSTS_FILE" 0644 root:root || true
    net_up
    local h
    for h in "${HOSTS[@]}"; do start_holder "$h"; done
    for h in "${HOSTS[@]}"; do start_host_munged "$h"; done
    start_cluster_redis
    start_cluster_slurm
    apply_node_firewall
    if ((RESTARTED)) || [[ ! -f $RUN/probe-ok ]]; then cluster_probe; fi
    start_cluster_daemon
    write_cluster_env
    say "up in $(elapsed)s: $(on head sinfo -h -o '%D nodes %T' | tr '\n' ' '), daemon http://$HEAD_IP:$DAEMON_PORT, env $DIR/env"
}

# our_ns_pids: every process in one of the cluster's network namespaces (holders last).
our_ns_pids() {
    local d pid ino h inos=() holders=()
    for h in "${HOSTS[@]}"; do
        ino=$(netns_inode "$(ns_of "$h")") && inos+=("$ino")
        pid=$(hold_pid "$h") && holders+=("$pid")
    done
    ((${#inos[@]})) || return 0
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        ino=$(stat -L -c %i "$d/ns/net" 2>/dev/null) || continue
        for h in "${inos[@]}"; do
            if [[ $ino == "$h" ]] && [[ " ${holders[*]} " != *" $pid "* ]]; then echo "$pid"; fi
        done
    done
}

# alive PID: PID exists and is not a zombie (this sandbox's init reaps orphans slowly).
alive() {
    local state
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# stop_pids TIMEOUT PID...: SIGTERM to all at once, wait for all, SIGKILL what is left.
stop_pids() {
    local timeout=$1 pid i left
    shift
    (($#)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        left=0
        for pid in "$@"; do alive "$pid" && left=1; done
        ((left)) || return 0
        sleep 0.1
    done
    for pid in "$@"; do
        if alive "$pid"; then
            say "pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) did not stop in ${timeout}s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

cmd_cluster_down() {
    take_lock
    rm -f "$RUN/probe-ok" "$DIR/env"
    local pid n ids pids=()
    if pid=$(cluster_daemon_pid); then pids+=("$pid"); fi
    if cluster_ctld_pid >/dev/null && cluster_ctld_ok; then
        ids=$(on head squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
        if [[ -n ${ids// /} ]]; then
            say "cancelling jobs: $ids"
            # shellcheck disable=SC2086
            on head scancel $ids 2>/dev/null || true
            # shellcheck disable=SC2016 # expanded by the inner bash
            wait_for 15 "jobs to end" on head bash -c '[[ -z $(squeue -h -t R,CG,CF -o %A) ]]' || true
        fi
    fi
    for n in "${NODES[@]}"; do
        if pid=$(node_slurmd_pid "$n"); then pids+=("$pid"); fi
    done
    stop_pids 15 "${pids[@]}"
    pids=()
    if pid=$(cluster_ctld_pid); then pids+=("$pid"); fi
    if [[ -r $SECRETS/redis_password ]] && pid=$(cluster_redis_pid); then pids+=("$pid"); fi
    for n in "${HOSTS[@]}"; do
        if pid=$(host_munged_pid "$n"); then pids+=("$pid"); fi
    done
    stop_pids 15 "${pids[@]}"
    say "daemons stopped (vizdesk, slurmd, slurmctld, redis, munged)"
    # What is left in the cluster's namespaces (job processes, stepds) is ours too.
    local left=()
    for pid in $(our_ns_pids); do alive "$pid" && left+=("$pid"); done
    if ((${#left[@]})); then
        say "stopping leftover processes in the cluster's namespaces: ${left[*]}"
        stop_pids 5 "${left[@]}"
    fi
    pids=()
    for n in "${HOSTS[@]}"; do
        if pid=$(hold_pid "$n"); then pids+=("$pid"); fi
    done
    for n in "${NODES[@]}"; do
        if pid=$(delay_pid "$n"); then pids+=("$pid"); fi
        rm -f "$RUN/delay-$n.pid"
    done
    stop_pids 5 "${pids[@]}"
    for n in "${HOSTS[@]}"; do rm -f "$RUN/hold-$n.pid"; done
    net_down
    say "down in $(elapsed)s"
}

cmd_cluster_status() {
    local rc=0 pid h
    line() { printf '%-16s %-5s %s\n' "$1" "$2" "$3"; }
    if ns_exists "$SW_NS" && ip -n "$SW_NS" link show "$BRIDGE" >/dev/null 2>&1; then
        line bridge up "$SW_NS/$BRIDGE $SUBNET.0/24"
    else line bridge down ""; rc=1; fi
    for h in "${HOSTS[@]}"; do
        if pid=$(hold_pid "$h"); then line "$h" up "holder pid $pid, $(ip_of "$h")"
        else line "$h" down ""; rc=1; continue; fi
        if pid=$(host_munged_pid "$h") && host_munge_ok "$h"; then line "  munged" up "pid $pid"
        else line "  munged" down ""; rc=1; fi
    done
    if hold_pid head >/dev/null; then
        if pid=$(cluster_ctld_pid) && cluster_ctld_ok; then line slurmctld up "pid $pid"
        else line slurmctld down ""; rc=1; fi
        for h in "${NODES[@]}"; do
            if pid=$(node_slurmd_pid "$h"); then line "slurmd $h" up "pid $pid, $(node_state_of "$h")"
            else line "slurmd $h" down ""; rc=1; fi
        done
        if [[ -r $SECRETS/redis_password ]] && pid=$(cluster_redis_pid); then line redis up "pid $pid, $HEAD_IP:$REDIS_PORT"
        else line redis down ""; rc=1; fi
        if pid=$(cluster_daemon_pid) && daemon_ok; then line vizdesk up "pid $pid, http://$HEAD_IP:$DAEMON_PORT"
        else line vizdesk down ""; rc=1; fi
    fi
    [[ -f $DIR/env ]] || { line env missing "$DIR/env"; rc=1; }
    return $rc
}

CCMD=${1:-}
case $CCMD in
    up) require_root_debian; cmd_cluster_up ;;
    down) require_root_debian; cmd_cluster_down ;;
    status) require_root_debian; cmd_cluster_status ;;
    delay)
        require_root_debian
        [[ $# -eq 3 ]] || die "usage: cluster.sh delay NODE MS|off"
        cmd_delay "$2" "$3"
        ;;
    exec)
        [[ $# -ge 3 ]] || die "usage: cluster.sh exec HOST CMD..."
        on "$2" "${@:3}"
        ;;
    -h | --help | help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *)
        sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
        exit 64
        ;;
esac
