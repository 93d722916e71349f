"""The batch script of every job: ONE fixed text, with all inputs in the environment.

No user string is ever written into a script or onto a shell command line. The daemon
puts the job's command into the environment one argv element per variable
(``VIZDESK_ARGC``, ``VIZDESK_ARGV_0`` ...: plain bash indirection reads them back, no
JSON decoder or Python needed on the node, and any byte but NUL survives), the
parameters as ``VIZDESK_PARAM_<NAME>`` plus ``VIZDESK_PARAMS_JSON``, and the image
settings as further variables. The script then ``exec``s either the argv itself (no
image) or ``apptainer exec|run --cleanenv --no-eval`` with the parameters handed into
the container as ``APPTAINERENV_*`` variables (``--no-eval`` keeps Apptainer from
shell-evaluating their values). Exec-ing keeps the command's exit status as the job's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# The whole launcher. It is the same for every job (tests assert that no request value
# ever appears in it); changing it changes its file name (content hash).
BATCH_SCRIPT = r"""#!/bin/bash
# vizdesk batch job launcher. This text is FIXED: nothing a user sends is ever written
# into it. Everything arrives in the environment, set by the vizdesk daemon:
#   VIZDESK_ARGC, VIZDESK_ARGV_0 .. VIZDESK_ARGV_<ARGC-1>   the command, one element each
#   VIZDESK_IMAGE            .sif path of the image; empty: run the command on the host
#   VIZDESK_MODE             exec | run   (apptainer exec / apptainer run)
#   VIZDESK_APP              SCIF app inside the image (optional)
#   VIZDESK_APPTAINER        the apptainer binary (default: apptainer)
#   VIZDESK_APPTAINER_BINDS  bind specs, one per line (used when their source exists)
#   VIZDESK_GPUS             GPUs requested (more than 0 adds --nv)
#   VIZDESK_APPTAINER_UNSQUASH  auto | always | never: extract the image (--unsquash);
#                            auto: where this user may not open /dev/fuse
#   VIZDESK_LAUNCHER         direct | srun (srun: the command runs once per task, e.g. MPI
#                            ranks, each rank its own apptainer with Slurm's/PMI's variables)
#   VIZDESK_PARAM_NAMES      names of the VIZDESK_PARAM_<NAME>/VIZDESK_FILE_<SLOT> variables
#                            to pass on into the container
#   VIZDESK_PARAM_<NAME>, VIZDESK_PARAMS_JSON, VIZDESK_FILE_<SLOT>, VIZDESK_FILES_JSON,
#   VIZDESK_JOB_DIR, VIZDESK_JOB_ID   data for the command
set -u
fail() {
    printf 'vizdesk: %s\n' "$1" >&2
    exit 125
}

argc=${VIZDESK_ARGC:-0}
[[ $argc =~ ^[0-9]{1,5}$ ]] || fail "bad VIZDESK_ARGC"
argc=$((10#$argc))
argv=()
for ((i = 0; i < argc; i++)); do
    var=VIZDESK_ARGV_$i
    [[ -n ${!var+set} ]] || fail "missing $var"
    argv+=("${!var}")
    unset "$var"
done
image=${VIZDESK_IMAGE:-}
mode=${VIZDESK_MODE:-exec}
app=${VIZDESK_APP:-}
apptainer=${VIZDESK_APPTAINER:-apptainer}
binds=${VIZDESK_APPTAINER_BINDS:-}
gpus=${VIZDESK_GPUS:-0}
unsquash=${VIZDESK_APPTAINER_UNSQUASH:-auto}
names=${VIZDESK_PARAM_NAMES:-}
launcher=${VIZDESK_LAUNCHER:-direct}
unset VIZDESK_ARGC VIZDESK_IMAGE VIZDESK_MODE VIZDESK_APP VIZDESK_APPTAINER \
    VIZDESK_APPTAINER_BINDS VIZDESK_GPUS VIZDESK_APPTAINER_UNSQUASH VIZDESK_LAUNCHER

# srun: one copy per task. Each rank hands Slurm's and the MPI launchers' variables (its
# rank, PMI/PMIx endpoints) into its container, which --cleanenv would otherwise drop.
rank_env='for v in $(compgen -e); do
    case $v in SLURM_* | PMI_* | PMIX_* | OMPI_* | I_MPI_*) export "APPTAINERENV_$v=${!v}" ;; esac
done
exec "$@"'
case $launcher in
    direct) launch=() ;;
    srun) launch=(srun --export=ALL --kill-on-bad-exit=1 bash -c "$rank_env" vizdesk-rank) ;;
    *) fail "bad VIZDESK_LAUNCHER" ;;
esac

if [[ -z $image ]]; then
    ((${#argv[@]} > 0)) || fail "no command to run"
    exec -- "${launch[@]}" "${argv[@]}"
fi

case $mode in
    exec | run) ;;
    *) fail "bad VIZDESK_MODE" ;;
esac
[[ $mode == run ]] || ((${#argv[@]} > 0)) || fail "no command to run"
cmd=("$apptainer" "$mode" --cleanenv --no-eval)
if [[ $gpus =~ ^[0-9]{1,3}$ ]] && ((10#$gpus > 0)); then
    cmd+=(--nv)
fi
# Without a /dev/fuse this user may open, Apptainer cannot mount the SIF (and does not fall
# back by itself): have it extract the image to a temporary sandbox.
case $unsquash in
    always) cmd+=(--unsquash) ;;
    never) ;;
    *)
        if ! [[ -r /dev/fuse && -w /dev/fuse ]]; then
            printf 'vizdesk: /dev/fuse is not usable here: extracting the image (--unsquash)\n' >&2
            cmd+=(--unsquash)
        fi
        ;;
esac
if [[ -n $app ]]; then
    cmd+=(--app "$app")
fi
while IFS= read -r bind; do
    [[ -n $bind ]] || continue
    if [[ -e ${bind%%:*} ]]; then
        cmd+=(--bind "$bind")
    else
        printf 'vizdesk: bind %s skipped (no such path on this node)\n' "$bind" >&2
    fi
done <<<"$binds"
for name in VIZDESK_JOB_ID VIZDESK_JOB_DIR VIZDESK_PARAMS_JSON VIZDESK_FILES_JSON $names; do
    [[ $name =~ ^VIZDESK_[A-Z0-9_]{1,64}$ ]] || fail "bad parameter name"
    if [[ -n ${!name+set} ]]; then
        export "APPTAINERENV_$name=${!name}"
    fi
done
exec -- "${launch[@]}" "${cmd[@]}" "$image" "${argv[@]}"
"""

SCRIPT_HASH = hashlib.sha256(BATCH_SCRIPT.encode()).hexdigest()[:16]
SCRIPT_NAME = f"vizdesk-batch-{SCRIPT_HASH}.sh"


def default_script_dir(environ: Mapping[str, str] | None = None) -> str:
    """A directory only the daemon's user owns: ``$STATE_DIRECTORY/jobs`` under systemd
    (``StateDirectory=vizdesk``), else ``$XDG_STATE_HOME`` or ``~/.local/state`` +
    ``/vizdesk/jobs``. Never a predictable name in a shared place such as /tmp, which
    another user could create first."""
    env = os.environ if environ is None else environ
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return os.path.join(state, "jobs")
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "vizdesk", "jobs")


def install_script(directory: str) -> str:
    """Write :data:`BATCH_SCRIPT` into ``directory`` (once) and return its path.

    The directory is created ``0755`` and must belong to this process's user and be
    writable by nobody else (it may be under /tmp); the file is ``0644`` so the users'
    ``sbatch`` can read it. Blocking: call it in a thread.
    """
    d = Path(directory)
    d.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    d.mkdir(mode=0o755, exist_ok=True)
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"jobs.script_dir {d} is not a directory")
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RuntimeError(
            f"jobs.script_dir {d} must be owned by uid {os.geteuid()} and writable by nobody else"
        )
    if stat.S_IMODE(st.st_mode) & 0o555 != 0o555:
        os.chmod(d, 0o755)  # noqa: S103 - users' sbatch must read the script
    path = d / SCRIPT_NAME
    try:
        if path.read_text() == BATCH_SCRIPT and not path.is_symlink():
            return str(path)
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".batch-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(BATCH_SCRIPT)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return str(path)


def job_environment(
    *,
    job_id: str,
    argv: Sequence[str],
    params: Mapping[str, str],
    values: Mapping[str, Any],
    image_path: str | None,
    mode: str,
    app: str | None,
    gpus: int,
    apptainer: str,
    binds: Sequence[str],
    unsquash: str = "auto",
    launcher: str = "direct",
    workdir: str = "",
    files: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """The job's environment for :data:`BATCH_SCRIPT` (handed to sbatch, never argv).

    ``files`` (slot → names in the job directory) become ``VIZDESK_FILE_<SLOT>`` (the
    names, one per line) and ``VIZDESK_FILES_JSON``."""
    file_env = {
        "VIZDESK_FILE_" + slot.upper(): "\n".join(names) for slot, names in (files or {}).items()
    }
    env: dict[str, str] = {
        "VIZDESK_JOB_ID": job_id,
        "VIZDESK_ARGC": str(len(argv)),
        "VIZDESK_PARAMS_JSON": json.dumps(dict(values), ensure_ascii=False, separators=(",", ":")),
        "VIZDESK_PARAM_NAMES": " ".join(sorted([*params, *file_env])),
    }
    if launcher != "direct":
        env["VIZDESK_LAUNCHER"] = launcher
    if workdir:
        env["VIZDESK_JOB_DIR"] = workdir
    if files:
        env["VIZDESK_FILES_JSON"] = json.dumps(
            {slot: list(names) for slot, names in files.items()},
            ensure_ascii=False,
            separators=(",", ":"),
        )
    for i, element in enumerate(argv):
        env[f"VIZDESK_ARGV_{i}"] = element
    env.update(params)
    env.update(file_env)
    if image_path:
        env["VIZDESK_IMAGE"] = image_path
        env["VIZDESK_MODE"] = mode
        env["VIZDESK_APPTAINER"] = apptainer
        env["VIZDESK_GPUS"] = str(gpus)
        env["VIZDESK_APPTAINER_UNSQUASH"] = unsquash
        if app:
            env["VIZDESK_APP"] = app
        if binds:
            env["VIZDESK_APPTAINER_BINDS"] = "\n".join(b for b in binds if "\n" not in b)
    return env
