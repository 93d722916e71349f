"""Clean up what an earlier, killed session of the same user left on this node.

When Slurm SIGKILLs the wrapper and its guardian together (with proctrack/linuxproc it
kills what it still tracks once the batch step's main process is gone), nobody cleans
up: orphaned desktop daemons (ssh-agent, gpg-agent, ...) may live on and the private
directory stays. So each private directory holds two records: ``owner`` (session id,
wrapper pid and start time) and ``pids`` (the session's processes, kept current by the
wrapper). At start-up a wrapper sweeps its user's directories in the same base directory
whose owner is gone: it ends their processes (same uid and start time only, or tagged
with that session) and removes the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import psutil
import structlog

from vizdesk.contract.keys import SESSION_ID_RE
from vizdesk.node import procs

log = structlog.get_logger("vizdesk.node.sweep")

OWNER = "owner"
PIDS = "pids"


def write_owner(private: Path, session_id: str) -> None:
    """Record who owns ``private`` (mode 0600)."""
    me = psutil.Process()
    doc = {"session_id": session_id, "pid": me.pid, "create_time": me.create_time()}
    fd = os.open(private / OWNER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)


def read_owner(private: Path) -> tuple[str, procs.ProcId] | None:
    try:
        doc = json.loads((private / OWNER).read_text())
        sid = str(doc["session_id"])
        owner = (int(doc["pid"]), float(doc["create_time"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (sid, owner) if SESSION_ID_RE.match(sid) else None


def sweep_stale(base: Path, *, grace: float = 3.0) -> list[str]:
    """End the leftovers of dead sessions of our user under ``base``; the ids swept."""
    uid = os.getuid()
    swept: list[str] = []
    try:
        entries = list(base.glob("vizdesk-*"))
    except OSError:
        return swept
    for d in entries:
        try:
            st = d.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            continue
        owned = read_owner(d)
        if owned is None:  # not a wrapper's directory, or one being created right now
            continue
        sid, owner = owned
        if procs.from_ids([owner], uid):
            continue  # its wrapper still runs
        left = procs.terminate_session(
            sid, grace=grace, known=procs.read_record(d / PIDS), with_descendants=False
        )
        shutil.rmtree(d, ignore_errors=True)
        log.warning("stale_session_swept", stale_session=sid, directory=str(d), left=left)
        swept.append(sid)
    return swept
