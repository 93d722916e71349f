"""Apptainer argv building: run the VNC server and the desktop inside an image.

``apptainer exec --cleanenv [--nv] [--bind B ...] --bind PRIVATE IMAGE CMD ...``: the
environment is cleaned, so the few variables the processes need inside (``DISPLAY``,
``XAUTHORITY``, the session tag) are passed as ``APPTAINERENV_*`` variables in the
environment of the ``apptainer`` process, never on its command line. The wrapper's
private directory (password and Xauthority files) is bound at the same path. No PID
namespace is requested, so the host-side clean-up sees and ends every container process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import structlog

log = structlog.get_logger("vizdesk.node.container")

#: Image label naming the VNC server flavour the image was built with (containers/vnc.def).
VNC_FLAVOR_LABEL = "org.vizdesk.vnc"

#: Variables the processes inside the container need (values come from the wrapper).
PASSTHROUGH = ("DISPLAY", "XAUTHORITY", "VIZDESK_SESSION_TAG", "HOME", "USER", "LANG")

# Inside the image we cannot ask the host whether vglrun exists: this tiny script does,
# taking everything as positional parameters (nothing is interpolated into it).
VGL_IF_PRESENT = (
    'vgl="$1"; dev="$2"; shift 2; '
    'if command -v "$vgl" >/dev/null 2>&1; then exec "$vgl" -d "$dev" "$@"; fi; '
    'exec "$@"'
)


def existing_binds(binds: Iterable[str]) -> list[str]:
    """The configured ``--bind`` specs whose source path exists on this node."""
    out: list[str] = []
    for spec in binds:
        src = spec.split(":", 1)[0]
        if src and os.path.exists(src):
            out.append(spec)
        else:
            log.warning("apptainer_bind_skipped", bind=spec, reason="source does not exist")
    return out


def apptainer_exec_argv(
    apptainer: str,
    image: str,
    inner: Sequence[str],
    *,
    gpu: bool,
    binds: Sequence[str] = (),
    private_dir: str | None = None,
    unsquash: bool = False,
) -> list[str]:
    """argv running ``inner`` inside ``image`` with a clean environment.

    ``unsquash``: extract the SIF to a temporary sandbox instead of mounting it with FUSE
    (for nodes where users may not use FUSE, see :mod:`vizdesk.node.fuse`).
    """
    argv = [apptainer, "exec", "--cleanenv"]
    if unsquash:
        argv.append("--unsquash")
    if gpu:
        argv.append("--nv")
    for spec in binds:
        argv += ["--bind", spec]
    if private_dir:
        argv += ["--bind", private_dir]
    argv.append(image)
    argv += list(inner)
    return argv


def container_environ(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus ``APPTAINERENV_<NAME>`` copies of the variables needed inside."""
    out = dict(env)
    for name in PASSTHROUGH:
        if name in env:
            out[f"APPTAINERENV_{name}"] = env[name]
    return out


def vgl_if_present_argv(vglrun: str, device: str, command: Sequence[str]) -> list[str]:
    """argv that runs ``command`` under ``vglrun -d device`` if vglrun exists in the image."""
    return ["/bin/sh", "-c", VGL_IF_PRESENT, "vizdesk-vgl", vglrun, device, *command]


def inspect_labels_argv(apptainer: str, image: str) -> list[str]:
    """argv printing the image's labels as JSON (reads SIF metadata, starts nothing)."""
    return [apptainer, "inspect", "--json", "--labels", image]


def vnc_flavor_from_inspect(output: str | bytes) -> str | None:
    """The ``org.vizdesk.vnc`` label from ``apptainer inspect --json --labels`` output."""
    try:
        doc: Any = json.loads(output)
        labels = doc["data"]["attributes"]["labels"]
    except (ValueError, KeyError, TypeError):
        return None
    flavor = labels.get(VNC_FLAVOR_LABEL) if isinstance(labels, dict) else None
    return flavor if flavor in ("tigervnc", "turbovnc") else None
