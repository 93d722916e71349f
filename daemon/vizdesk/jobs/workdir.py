"""A job's own directory, made by the user: ``mkdir`` run through the submit prefix.

The daemon never creates a directory in a user's area as itself: the directory (and any
missing parent, e.g. ``~/vizdesk-jobs``) is made by ``mkdir -p`` running as the user
(``slurm.submit_prefix``), with umask 077, so it is the user's own, mode 0700, and a
planted symlink can only lead where the user could write anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from ..core.errors import VizdeskError

MKDIR_TIMEOUT_SECONDS = 30.0

#: (submit prefix, user, path) → the directory exists, made as the user.
MakeDir = Callable[[Sequence[str], str, str], Awaitable[None]]


class JobDirError(VizdeskError):
    """The job's directory could not be made (503: the site's file system or config)."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "job_dir_failed", message)


async def make_job_dir(prefix: Sequence[str], user: str, path: str) -> None:
    """``mkdir -p -m 0700 -- path`` as ``user`` (``{user}`` in ``prefix`` is replaced)."""
    if not path.startswith("/") or "\x00" in path:
        raise JobDirError(f"job directory {path!r} is not an absolute path")
    argv = [p.replace("{user}", user) for p in prefix]
    proc = await asyncio.create_subprocess_exec(
        *argv, "mkdir", "-p", "-m", "0700", "--", path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        cwd="/",
        umask=0o077,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), MKDIR_TIMEOUT_SECONDS)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0:
        text = err.decode(errors="replace").strip()[-300:]
        raise JobDirError(f"cannot create the job directory {path} as {user}: {text}")
