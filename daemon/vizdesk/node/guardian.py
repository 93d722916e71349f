"""Guardian: cleans up after a wrapper that died without cleaning up (e.g. SIGKILL).

The wrapper starts ``python -m vizdesk.node.guardian`` and writes one JSON line to its
stdin: the registration key, the session's ACL credentials (through the pipe, never on
a command line or in the environment), the session id and the private directory. The
guardian then waits on that pipe. On a clean shutdown the wrapper writes ``done`` and
the guardian exits. If the pipe closes without it, the wrapper is gone: the guardian
DELs the registration, ends every process tagged with the session id and removes the
private directory, as the wrapper would have done.

The guardian ignores SIGTERM/SIGINT/SIGHUP (a Slurm cancel signals every process of the
job; the wrapper is the one that handles it) and carries no session tag itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, BinaryIO

import redis
import structlog
from redis.sentinel import Sentinel

from vizdesk.contract.redisconn import db_of, parse_sentinels
from vizdesk.node import procs
from vizdesk.node.logs import setup_logging
from vizdesk.node.sweep import PIDS

log = structlog.get_logger("vizdesk.node.guardian")

DONE = b"done"


def handoff_line(
    *,
    url: str,
    sentinels: list[str] | None = None,
    sentinel_master: str = "",
    username: str,
    password: str,
    key: str,
    session_id: str,
    grace: float,
    private_dir: str,
) -> bytes:
    """The first line the wrapper writes to the guardian's stdin."""
    doc = {
        "url": url,
        "sentinels": sentinels or [],
        "sentinel_master": sentinel_master,
        "username": username,
        "password": password,
        "key": key,
        "session_id": session_id,
        "grace": grace,
        "private_dir": private_dir,
    }
    return json.dumps(doc).encode() + b"\n"


def _client(doc: dict[str, Any]) -> redis.Redis:
    """The registration's Redis: the URL, or the primary the handed-over Sentinels name."""
    creds: dict[str, Any] = {
        "username": str(doc["username"]),
        "password": str(doc["password"]),
        "socket_timeout": 3,
        "socket_connect_timeout": 3,
    }
    sentinels = [str(s) for s in doc.get("sentinels") or []]
    if not sentinels:
        return redis.Redis.from_url(str(doc["url"]), **creds)
    hosts = parse_sentinels(sentinels, "sentinels")
    manager = Sentinel(hosts, sentinel_kwargs={"socket_timeout": 3})
    client: redis.Redis = manager.master_for(
        str(doc["sentinel_master"]), db=db_of(str(doc["url"])), **creds
    )
    return client


def cleanup(doc: dict[str, Any]) -> None:
    sid = str(doc["session_id"])
    try:
        client = _client(doc)
        client.delete(str(doc["key"]))
        client.close()
        log.info("registration_deleted", key=doc["key"])
    except (redis.RedisError, OSError, ValueError) as exc:
        log.warning("registration_delete_failed", error=f"{type(exc).__name__}: {exc}")
    private = str(doc.get("private_dir") or "")
    ours = os.path.basename(private).startswith("vizdesk-")
    # The wrapper's record finds orphans whose environment (and tag) we cannot read.
    known = procs.read_record(Path(private) / PIDS) if ours else []
    left = procs.terminate_session(sid, grace=float(doc.get("grace", 3.0)), known=known)
    if left:
        log.error("processes_left", pids=left)
    if ours:
        shutil.rmtree(private, ignore_errors=True)


def run(stdin: BinaryIO) -> int:
    first = stdin.readline()
    try:
        doc = json.loads(first)
        sid = str(doc["session_id"])
    except (ValueError, KeyError, TypeError):
        setup_logging("info")
        log.error("guardian_bad_handoff")
        return 2
    setup_logging("info", session_id=sid, process="guardian")
    rest = stdin.readline()
    if rest.strip() == DONE:
        return 0
    log.warning("wrapper_vanished", action="cleaning up in its place")
    cleanup(doc)
    return 0


def main() -> int:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    return run(sys.stdin.buffer)


if __name__ == "__main__":
    sys.exit(main())
