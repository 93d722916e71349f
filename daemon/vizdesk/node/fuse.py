"""Whether this user may use FUSE here, which unprivileged Apptainer needs to mount a SIF.

On some compute nodes ``/dev/fuse`` is missing, on some it is ``crw------- root`` (then
Apptainer's ``squashfuse_ll`` fails with "failed to open /dev/fuse: Permission denied"
instead of falling back), on some it is usable. Where it is not usable, Apptainer is
asked to extract the image to a temporary sandbox (``--unsquash``): slower to start (the
image is unpacked), but the desktop runs. ``node.apptainer_unsquash`` forces either way.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass

FUSE_DEVICE = "/dev/fuse"

#: Values of ``node.apptainer_unsquash``.
UNSQUASH_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class FuseCheck:
    """The outcome of trying to open the FUSE device as this process's user."""

    usable: bool
    reason: str = ""  # why not (for the log and the session's reason); "" when usable


def _describe(device: str) -> str:
    try:
        st = os.stat(device)
    except OSError:
        return device
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return f"{device} ({stat.filemode(st.st_mode)} {owner})"


def check_fuse(device: str = FUSE_DEVICE) -> FuseCheck:
    """Open ``device`` read-write, as Apptainer's FUSE helpers would, and close it again."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return FuseCheck(False, f"{device} does not exist on this node")
    except PermissionError:
        return FuseCheck(False, f"{_describe(device)} is not accessible to this user")
    except OSError as exc:
        return FuseCheck(False, f"{_describe(device)} cannot be opened: {exc.strerror}")
    os.close(fd)
    return FuseCheck(True)


def wants_unsquash(mode: str, check: FuseCheck) -> bool:
    """Whether to pass ``--unsquash`` to Apptainer, for ``node.apptainer_unsquash``."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return not check.usable
