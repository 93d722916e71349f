"""Finding and ending every process of a session.

A session's processes are (1) the wrapper's descendants (the wrapper makes itself a
child subreaper, so double-forked daemons stay below it instead of moving to init),
(2) any process of the same uid whose environment carries
``VIZDESK_SESSION_TAG=<sid>`` (catches anything that escaped anyway, e.g. a D-Bus
daemon launched by an activation helper), and (3) the processes of a *record*: the
wrapper keeps a file of its descendants' (pid, start time) so that whoever cleans up
after a killed wrapper still finds the orphans whose environment it cannot read
(ssh-agent and gpg-agent make themselves non-dumpable, which hides their environment
from their own user). Ending is SIGTERM, a grace period, then SIGKILL.

All functions here block (they read ``/proc``): call them from a thread in asyncio code.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

import psutil
import structlog

from vizdesk.contract.jobenv import ENV_SESSION_TAG

log = structlog.get_logger("vizdesk.node.procs")

PR_SET_CHILD_SUBREAPER = 36

ProcId = tuple[int, float]  # (pid, create time): a pid alone may be reused


def set_child_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def proc_id(proc: psutil.Process) -> ProcId | None:
    try:
        return (proc.pid, proc.create_time())
    except psutil.Error:
        return None


def from_ids(ids: Iterable[ProcId], uid: int | None = None) -> list[psutil.Process]:
    """The still-running processes of ``ids`` (same pid AND start time) owned by ``uid``."""
    uid = os.getuid() if uid is None else uid
    out: list[psutil.Process] = []
    for pid, ctime in ids:
        try:
            proc = psutil.Process(int(pid))
            if abs(proc.create_time() - float(ctime)) > 0.05 or proc.uids().real != uid:
                continue
        except (psutil.Error, ValueError, TypeError):
            continue
        if _alive(proc):
            out.append(proc)
    return out


def write_record(path: Path, procs: Iterable[psutil.Process]) -> list[ProcId]:
    """Atomically write the (pid, start time) list of ``procs`` to ``path`` (mode 0600)."""
    ids = sorted(i for i in (proc_id(p) for p in procs) if i is not None)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(ids, fh)
    os.replace(tmp, path)
    return ids


def read_record(path: Path) -> list[ProcId]:
    try:
        data = json.loads(path.read_text())
        return [(int(pid), float(ctime)) for pid, ctime in data]
    except (OSError, ValueError, TypeError):
        return []


def descendants(pid: int | None = None) -> list[psutil.Process]:
    try:
        return psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.Error:
        return []


def tagged_processes(session_id: str, uid: int | None = None) -> list[psutil.Process]:
    """Processes of ``uid`` (default: ours) whose environment has the session's tag."""
    uid = os.getuid() if uid is None else uid
    me = os.getpid()
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["uids"]):
        if proc.pid == me:
            continue
        try:
            uids = proc.info["uids"]
            if uids is None or uids.real != uid:
                continue
            if proc.environ().get(ENV_SESSION_TAG) == session_id:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def session_processes(
    session_id: str,
    root: int | None = None,
    exclude: Iterable[int] = (),
    known: Iterable[ProcId] = (),
    with_descendants: bool = True,
) -> list[psutil.Process]:
    """Every live process of the session (descendants of ``root``, tagged, ``known``)."""
    me = root or os.getpid()
    skip = {me, os.getpid(), *exclude}
    seen: dict[int, psutil.Process] = {}
    below = descendants(me) if with_descendants else []
    for proc in [*below, *tagged_processes(session_id), *from_ids(known)]:
        if proc.pid not in skip and proc.pid not in seen and _alive(proc):
            seen[proc.pid] = proc
    return list(seen.values())


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid}:{proc.name()}"
    except psutil.Error:
        return str(proc.pid)


def _signal_all(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            proc.send_signal(sig)


def _signal_groups(pgids: Iterable[int], sig: int) -> None:
    for pgid in pgids:
        if pgid > 1 and pgid != os.getpgrp():
            with contextlib.suppress(OSError):
                os.killpg(pgid, sig)


def reap_zombie_children(exclude: Iterable[int] = ()) -> int:
    """Collect exited direct children that nobody else waits for (adopted orphans).

    ``exclude``: pids whose exit status asyncio's child watcher collects.
    """
    skip = set(exclude)
    reaped = 0
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return 0
    for child in children:
        if child.pid in skip:
            continue
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                continue
            pid, _ = os.waitpid(child.pid, os.WNOHANG)
            reaped += int(pid == child.pid)
        except (psutil.Error, ChildProcessError, OSError):
            continue
    return reaped


def terminate_session(
    session_id: str,
    *,
    grace: float = 3.0,
    pgids: Iterable[int] = (),
    managed: Iterable[int] = (),
    exclude: Iterable[int] = (),
    known: Iterable[ProcId] = (),
    with_descendants: bool = True,
    poll: float = 0.1,
) -> list[int]:
    """SIGTERM every session process (and the given process groups), SIGKILL after
    ``grace`` seconds, and return the pids that still survive (normally none).

    ``managed``: pids of children that asyncio reaps itself (not reaped here).
    ``exclude``: pids left alone (the guardian).
    ``known``: recorded (pid, start time) pairs of the session (see ``write_record``).
    ``with_descendants``: also our own descendants (False when cleaning up after another
    process, e.g. a stale session found at start-up).
    """
    started = time.monotonic()
    groups = list(pgids)
    managed_pids = set(managed)
    skip = set(exclude)
    recorded = list(known)

    def current() -> list[psutil.Process]:
        return session_processes(
            session_id, exclude=skip, known=recorded, with_descendants=with_descendants
        )

    procs = current()
    log.info("terminating", count=len(procs), pids=sorted(p.pid for p in procs))
    _signal_groups(groups, signal.SIGTERM)
    _signal_all(procs, signal.SIGTERM)
    signalled = {p.pid for p in procs}
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap_zombie_children(managed_pids)
        procs = current()
        if not procs:
            break
        # Processes forked while we were signalling get their SIGTERM too (once).
        fresh = [p for p in procs if p.pid not in signalled]
        _signal_all(fresh, signal.SIGTERM)
        signalled.update(p.pid for p in fresh)
        time.sleep(poll)
    procs = current()
    if procs:
        log.warning("killing", processes=sorted(_describe(p) for p in procs))
        _signal_groups(groups, signal.SIGKILL)
        end = time.monotonic() + 2.0
        while procs and time.monotonic() < end:
            _signal_all(procs, signal.SIGKILL)
            time.sleep(poll)
            reap_zombie_children(managed_pids)
            procs = current()
    reap_zombie_children(managed_pids)
    left = sorted(p.pid for p in current())
    log.info("terminated", seconds=round(time.monotonic() - started, 3), left=left)
    return left
