"""The session's registration in Redis: its JSON value and the writer that keeps it alive.

The value is ``SET key value EX ttl`` with the per-session ACL user (which may only
GET/SET/DEL/EXPIRE that one key), refreshed every heartbeat and deleted on exit. Redis
being briefly unreachable is logged and retried; it never stops the desktop.
The value contains the VNC password (the daemon hands it to the user's browser) and
nothing else secret: never the Redis credentials.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from vizdesk.node.gpu import GpuInfo

log = structlog.get_logger("vizdesk.node.registration")

#: The exact key set of a registration (the daemon's contract).
FIELDS = (
    "session_id",
    "port",
    "display",
    "password",
    "pid",
    "vnc_pid",
    "host",
    "vnc",
    "gpus",
    "cpu_percent",
    "memory_bytes",
    "started_at",
    "heartbeat_at",
    "image",
)


#: A wrapper that cannot start its desktop writes ``{"session_id", "error", "at"}`` to the
#: registration key instead (the daemon fails the session with that reason); it stays this
#: long, past the job's end, for the daemon to read.
FAILURE_TTL_SECONDS = 600
#: The longest failure text written (the daemon bounds what it reads as well).
MAX_FAILURE_CHARS = 500


def failure_json(session_id: str, error: str) -> str:
    """The failure record for ``session_id``: why its desktop could not start."""
    text = " ".join(error.split())[:MAX_FAILURE_CHARS]
    doc = {"session_id": session_id, "error": text, "at": utc_now_iso()}
    return json.dumps(doc, separators=(",", ":"))


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Registration:
    session_id: str
    port: int
    display: int  # the X display number N (DISPLAY=:N)
    password: str = field(repr=False)
    pid: int
    vnc_pid: int
    host: str  # informational only: the daemon uses the node Slurm reports
    vnc: str  # "tigervnc" | "turbovnc"
    started_at: str
    image: str | None = None
    gpus: list[GpuInfo] = field(default_factory=list)
    cpu_percent: float = 0.0
    memory_bytes: int = 0
    heartbeat_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "port": self.port,
            "display": self.display,
            "password": self.password,
            "pid": self.pid,
            "vnc_pid": self.vnc_pid,
            "host": self.host,
            "vnc": self.vnc,
            "gpus": [g.to_json() for g in self.gpus],
            "cpu_percent": self.cpu_percent,
            "memory_bytes": self.memory_bytes,
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at or utc_now_iso(),
            "image": self.image,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def for_log(self) -> dict[str, Any]:
        """The registration without the password, for logging."""
        d = self.to_dict()
        d["password"] = "***"  # noqa: S105 - redaction marker
        return d


def _no_client_setinfo() -> dict[str, Any]:
    """Client options that skip CLIENT SETINFO on connect.

    The session's ACL user need not be allowed that command (Redis 7.0 does not even
    know it, so an ACL rule for it cannot be written there); redis-py would ignore the
    error, but skipping it saves a round trip per connection.
    """
    params = inspect.signature(aioredis.Redis.__init__).parameters
    if "driver_info" in params:  # newer redis-py
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


class Registrar:
    """Writes, refreshes and deletes one registration key with the session's ACL user."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        key: str,
        ttl: int,
        *,
        timeout: float = 5.0,
        client: aioredis.Redis | None = None,
    ) -> None:
        self.key = key
        self.ttl = ttl
        self.timeout = timeout
        self._client = client or aioredis.Redis.from_url(
            url,
            username=username,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            **_no_client_setinfo(),
        )
        self.failures = 0  # consecutive failed writes

    async def put(self, value: str, ttl: int | None = None) -> bool:
        """SET the key with its TTL; False (logged) if Redis could not be reached."""
        try:
            await asyncio.wait_for(
                self._client.set(self.key, value, ex=ttl or self.ttl), timeout=self.timeout * 2
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            log.warning(
                "registration_write_failed",
                error=f"{type(exc).__name__}: {exc}",
                consecutive_failures=self.failures,
            )
            return False
        if self.failures:
            log.info("registration_write_recovered", after_failures=self.failures)
        self.failures = 0
        return True

    async def delete(self) -> bool:
        try:
            await asyncio.wait_for(self._client.delete(self.key), timeout=self.timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("registration_delete_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, OSError):
            pass
