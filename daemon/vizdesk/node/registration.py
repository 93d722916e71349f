"""The writer that keeps the session's registration alive in Redis.

The value (:class:`vizdesk.contract.registration.Registration`) is written with
``SET key value EX ttl`` by the per-session ACL user (which may only GET/SET/DEL/EXPIRE
that one key), refreshed every heartbeat and deleted on exit. Redis being briefly
unreachable is logged and retried; it never stops the desktop.
The value contains the VNC password (the daemon hands it to the user's browser) and
nothing else secret: never the Redis credentials.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from ..contract.redisconn import connect

log = structlog.get_logger("vizdesk.node.registration")


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
        sentinels: Sequence[tuple[str, int]] = (),
        sentinel_master: str = "",
    ) -> None:
        self.key = key
        self.ttl = ttl
        self.timeout = timeout
        # Behind Sentinel every new connection asks for the current primary, so after a
        # failover the next heartbeat reaches the new one (once the tracker leader has
        # re-created this session's ACL user there, the write succeeds again).
        self._client = client or connect(
            url,
            sentinels=sentinels,
            master=sentinel_master,
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

    async def read(self, key: str) -> str | None:
        """GET another key the ACL user may read (the session's notice); None when it is
        absent or Redis could not be reached (a notice is best effort)."""
        try:
            value = await asyncio.wait_for(self._client.get(key), timeout=self.timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            log.info("notice_read_failed", error=f"{type(exc).__name__}: {exc}")
            return None
        return value if isinstance(value, str) else None

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
