"""Where jobs may write: never a directory other users can write, never a planted path.

A job's output file is opened by slurmstepd *as the user* at a path the daemon chooses. In
a directory others can write (``/tmp``, a 1777 "shared output" directory) another user
can plant a symlink or file at that name first and have the owner's job clobber their own
files or fail. So:

* ``sessions.output_dir`` / ``jobs.output_dir`` that other users can write are refused at
  start (:func:`shared_dir_problem`), unless the path contains ``{user}``;
* with ``{user}``, each user's directory must be a real directory owned by that user and
  writable by nobody else (:func:`ensure_user_dir`); the daemon creates it (0700) when it
  runs as root, otherwise the site creates it.

Blocking: call these through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import stat
from typing import Protocol

from .errors import VizdeskError

USER_PLACEHOLDER = "{user}"
HOME_PLACEHOLDER = "{home}"


class _Named(Protocol):
    @property
    def user(self) -> str: ...
    @property
    def home(self) -> str: ...


def expand_user_path(template: str, who: _Named) -> str:
    """``template`` with ``{user}`` and ``{home}`` (the account's home) filled in; an
    account without a home cannot use a ``{home}`` path (503 ``output_dir_unsafe``)."""
    path = template.replace(USER_PLACEHOLDER, who.user)
    if HOME_PLACEHOLDER in path:
        if not who.home or not who.home.startswith("/"):
            raise OutputDirError(f"{who.user} has no home directory for {template}")
        path = path.replace(HOME_PLACEHOLDER, who.home.rstrip("/") or "/")
    if not path.startswith("/"):
        raise OutputDirError(f"{template} does not expand to an absolute path")
    return path


class OutputDirError(VizdeskError):
    """A job's output directory is missing or unsafe (503: the site must fix it)."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "output_dir_unsafe", message)


def shared_dir_problem(path: str) -> str | None:
    """Why ``path`` (a configured output directory without ``{user}``) must not be used."""
    if not path or USER_PLACEHOLDER in path:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None  # Slurm will say so (the job fails); nothing to plant into either
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}): another "
            "user could plant files at a job's output path; use a path with {user} in it "
            "(one 0700 directory per user) or leave it empty (the job's own directory)"
        )
    return None


def ensure_user_dir(template: str, user: str, uid: int, gid: int) -> str:
    """The user's own directory for ``template`` (``{user}`` expanded), created 0700 and
    owned by the user when the daemon is root; refused unless it is safe."""
    path = template.replace(USER_PLACEHOLDER, user)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if os.geteuid() != 0:
            raise OutputDirError(f"output directory {path} does not exist") from None
        parent = os.path.dirname(path.rstrip("/"))
        os.makedirs(parent, mode=0o755, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # raced with another request (or a planted entry: checked below)
        else:
            os.chown(path, uid, gid)
        st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OutputDirError(f"output directory {path} is not a directory (or is a symlink)")
    if st.st_uid != uid:
        raise OutputDirError(f"output directory {path} is not owned by {user}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OutputDirError(f"output directory {path} is writable by other users")
    return path
