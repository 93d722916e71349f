"""Per-session registration credentials (Redis 7 ACL users) and registration checks.

Each session gets its own Redis ACL user that may only GET/SET/DEL/EXPIRE its one
registration key. The job receives those credentials in its environment; nobody else
holds them, so nobody else can point the proxy at a port.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from .keys import Keys


@dataclass(frozen=True)
class Registration:
    """A validated registration, as the daemon uses it (the host is NOT taken from it)."""

    session_id: str
    port: int
    display: int | None
    password: str
    vnc: str
    raw: dict[str, Any]


class RegistrationRejected(ValueError):
    """The registration exists but must not be used (port out of range, wrong session...)."""


#: The longest node-reported failure text taken into a session's reason.
MAX_FAILURE_CHARS = 500


class NodeReportedFailure(Exception):
    """The node's wrapper could not start the desktop and left why in the registration key
    (``{"session_id", "error", "at"}``, written with the session's own credentials)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def failure_text(data: dict[str, Any]) -> str:
    err = data.get("error")
    if not isinstance(err, str) or not err.strip():
        return "the node reported an unspecified error"
    return " ".join(err.split())[:MAX_FAILURE_CHARS]


def password_hash(password: str) -> str:
    """The form Redis ACL rules take (``#<sha256 hex>``) for a password."""
    return hashlib.sha256(password.encode()).hexdigest()


class RegistrationManager:
    def __init__(self, redis: aioredis.Redis, keys: Keys, port_min: int, port_max: int) -> None:
        self.redis = redis
        self.keys = keys
        self.port_min = port_min
        self.port_max = port_max

    async def create_credentials(self, sid: str) -> tuple[str, str]:
        """Create the session's ACL user; returns (username, password)."""
        password = secrets.token_urlsafe(32)
        await self._setuser(sid, f">{password}")
        return self.keys.acl_user(sid), password

    async def restore_credentials(self, sid: str, password_hash: str) -> None:
        """Re-create the ACL user from the stored hash (after a Redis restart: ACL users
        live in memory only), so running desktops can keep heartbeating."""
        await self._setuser(sid, f"#{password_hash}")

    async def _setuser(self, sid: str, password_rule: str) -> None:
        await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", self.keys.acl_user(sid), "reset", "on", password_rule,
            f"~{self.keys.registration(sid)}", "resetchannels", "-@all",
            "+get", "+set", "+del", "+expire", "+ping", "+hello", "+select",
        )  # fmt: skip
        # (CLIENT SETINFO, which redis-py sends on connect, is unknown to Redis 7.0's ACL
        # rules; redis-py ignores its refusal, so it is not granted.)

    async def delete_credentials(self, sid: str) -> None:
        await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "DELUSER", self.keys.acl_user(sid)
        )
        await self.redis.delete(self.keys.registration(sid))

    async def load(self, sid: str) -> Registration | None:
        """The session's registration, or None if absent. Raises RegistrationRejected, or
        NodeReportedFailure when the wrapper left a failure record instead."""
        raw = await self.redis.get(self.keys.registration(sid))
        if raw is None:
            return None
        return self.validate(sid, raw)

    async def failure(self, sid: str) -> str | None:
        """The failure the session's wrapper reported, if its key holds a failure record."""
        raw = await self.redis.get(self.keys.registration(sid))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if isinstance(data, dict) and data.get("session_id") == sid and "error" in data:
            return failure_text(data)
        return None

    def validate(self, sid: str, raw: str | bytes) -> Registration:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RegistrationRejected("registration is not JSON") from exc
        if not isinstance(data, dict):
            raise RegistrationRejected("registration is not an object")
        if data.get("session_id") != sid:
            raise RegistrationRejected("registration names another session")
        if "error" in data:
            raise NodeReportedFailure(failure_text(data))
        port = data.get("port")
        if not isinstance(port, int) or isinstance(port, bool):
            raise RegistrationRejected("registration port is not an integer")
        if not self.port_min <= port <= self.port_max:
            raise RegistrationRejected(
                f"registered port {port} outside {self.port_min}-{self.port_max}"
            )
        password = data.get("password")
        if not isinstance(password, str) or not password:
            raise RegistrationRejected("registration has no VNC password")
        display = data.get("display")
        return Registration(
            session_id=sid,
            port=port,
            display=display if isinstance(display, int) else None,
            password=password,
            vnc=str(data.get("vnc", "")),
            raw=data,
        )
