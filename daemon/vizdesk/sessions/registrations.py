"""Per-session registration credentials (Redis 7 ACL users) and loading registrations.

Each session gets its own Redis ACL user that may only GET/SET/DEL/EXPIRE its one
registration key. The job receives those credentials in its environment; nobody else
holds them, so nobody else can point the proxy at a port. What a valid registration is
lives in :mod:`vizdesk.contract.registration`.
"""

from __future__ import annotations

import hashlib
import secrets

import redis.asyncio as aioredis

from ..contract.keys import Keys
from ..contract.registration import Registration, parse_failure, parse_registration


def password_hash(password: str) -> str:
    """The form Redis ACL rules take (``#<sha256 hex>``) for a password."""
    return hashlib.sha256(password.encode()).hexdigest()


class RegistrationManager:
    """Role: the ACL user of each session and the check of what its job registered.

    ``create_credentials`` / ``delete_credentials`` / ``restore_credentials`` manage the
    per-session ACL user; ``load`` returns a session's registration if it is valid
    (``RegistrationRejected`` when it exists but must not be used).
    """

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
        return parse_registration(sid, raw, self.port_min, self.port_max)

    async def failure(self, sid: str) -> str | None:
        """The failure the session's wrapper reported, if its key holds a failure record."""
        raw = await self.redis.get(self.keys.registration(sid))
        return None if raw is None else parse_failure(sid, raw)
