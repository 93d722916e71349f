# Shell functions the test-bed scripts share (sourced, not run).

# nolock COMMAND...: run a command (a program or a shell function such as cluster.sh's `on`) that may leave a daemon behind with no descriptor of ours
# but stdin/stdout/stderr: not our own lock (fd 9), and not a lock an outer caller holds
# (`flock FILE make test` hands its fd down; a daemon keeping it would hold that lock forever).
nolock() {
    local fd fds=()
    for fd in /proc/$BASHPID/fd/*; do
        fd=${fd##*/}
        ((fd > 2)) && fds+=("$fd")
    done
    (
        for fd in "${fds[@]}"; do eval "exec $fd>&-" 2>/dev/null || true; done
        if declare -F "$1" >/dev/null; then
            "$@"
            exit
        fi
        exec "$@"
    )
}
