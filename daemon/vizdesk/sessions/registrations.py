"""Per-session registration credentials (Redis 7 ACL users) and loading registrations.

Each session gets its own Redis ACL user that may only GET/SET/DEL/EXPIRE its one
registration key, and only read its notice key (warnings the daemon writes for the
desktop itself, :mod:`vizdesk.sessions.notices`). The job receives those credentials in
its environment; nobody else holds them, so nobody else can point the proxy at a port.
What a valid registration is lives in :mod:`vizdesk.contract.registration`.

The job writes that key, so its value is read only after its length is checked, in the
same round trip (:data:`BOUNDED_GET`): a value over ``MAX_VALUE_BYTES`` is never fetched
nor parsed on the event loop.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url

from ..contract.keys import Keys
from ..contract.registration import (
    MAX_VALUE_BYTES,
    Registration,
    RegistrationRejected,
    parse_failure,
    parse_registration,
)

#: GET that never returns a value over ARGV[1] bytes: ``{}`` when the key is absent,
#: ``{length}`` when it is too long (or not a string), else ``{length, value}``.
BOUNDED_GET = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {} end
if t ~= 'string' then return {-1} end
local n = redis.call('STRLEN', KEYS[1])
if n > tonumber(ARGV[1]) then return {n} end
return {n, redis.call('GET', KEYS[1])}
"""


def url_db(url: str) -> int:
    """The database number a Redis URL selects (0 when it names none)."""
    return int(parse_url(url).get("db") or 0)


class ValueTooLarge(RegistrationRejected):
    """The job's key holds more than the daemon reads (or not a string)."""


def password_hash(password: str) -> str:
    """The form Redis ACL rules take (``#<sha256 hex>``) for a password."""
    return hashlib.sha256(password.encode()).hexdigest()


class RegistrationManager:
    """Role: the ACL user of each session and the check of what its job registered.

    ``create_credentials`` / ``delete_credentials`` / ``restore_credentials`` manage the
    per-session ACL user; ``load`` returns a session's registration if it is valid
    (``RegistrationRejected`` when it exists but must not be used).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        port_min: int,
        port_max: int,
        *,
        node_db: int = 0,
        max_value_bytes: int = MAX_VALUE_BYTES,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.port_min = port_min
        self.port_max = port_max
        self.node_db = node_db  # the DB the nodes' URL selects: SELECT is granted only if not 0
        self.max_value_bytes = max_value_bytes
        self._bounded_get = redis.register_script(BOUNDED_GET)

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
        # SELECT only when the nodes use another DB than 0 (redis-py sends it only then).
        select = ["+select"] if self.node_db else []
        await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", self.keys.acl_user(sid), "reset", "on", password_rule,
            f"~{self.keys.registration(sid)}", f"%R~{self.keys.notice(sid)}",
            "resetchannels", "-@all",
            "+get", "+set", "+del", "+expire", "+ping", "+hello", *select,
        )  # fmt: skip
        # (CLIENT SETINFO, which redis-py sends on connect, is unknown to Redis 7.0's ACL
        # rules; redis-py ignores its refusal, so it is not granted.)

    async def delete_credentials(self, sid: str) -> None:
        await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "DELUSER", self.keys.acl_user(sid)
        )
        await self.redis.delete(self.keys.registration(sid), self.keys.notice(sid))

    async def read(self, sid: str) -> str | bytes | None:
        """The raw value of the session's key (None if absent), fetched only when at most
        ``max_value_bytes`` long; :class:`ValueTooLarge` (unread) otherwise."""
        reply: list[Any] = await self._bounded_get(
            keys=[self.keys.registration(sid)], args=[self.max_value_bytes]
        )
        if not reply:
            return None
        if len(reply) == 1:
            n = int(reply[0])
            if n < 0:
                raise ValueTooLarge("registration is not a string value")
            raise ValueTooLarge(f"value of {n} bytes exceeds {self.max_value_bytes}")
        value: str | bytes = reply[1]
        return value

    async def load(self, sid: str) -> Registration | None:
        """The session's registration, or None if absent. Raises RegistrationRejected
        (also for a value too large to read), or NodeReportedFailure when the wrapper left
        a failure record instead."""
        raw = await self.read(sid)
        if raw is None:
            return None
        return parse_registration(sid, raw, self.port_min, self.port_max)

    async def failure(self, sid: str) -> str | None:
        """The failure the session's wrapper reported, if its key holds a failure record
        (a value too large to read is none)."""
        try:
            raw = await self.read(sid)
        except ValueTooLarge:
            return None
        return None if raw is None else parse_failure(sid, raw)
