"""How head and node reach Redis: one URL directly, or the current primary through Sentinel.

The same rule on both sides, so a failover moves the daemon and every node wrapper to the
new primary the same way: with Sentinel, each new connection asks a Sentinel for the
primary's address (redis-py's ``SentinelConnectionPool``); a connection to a demoted
primary fails (READONLY, reset) and the command is retried on a fresh one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from ..config import host_port


class BlockingSentinelConnectionPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A Sentinel pool that waits for a free connection (``timeout``) instead of
    raising "Too many connections" at ``max_connections`` commands in flight."""


def parse_sentinels(hosts: Iterable[str], where: str) -> list[tuple[str, int]]:
    """``["h:26379", "[::1]:26380"]`` → ``[("h", 26379), ("::1", 26380)]``; a ValueError
    (:class:`~vizdesk.config.ConfigError`) names ``where`` and the bad entry."""
    return [host_port(text, where) for text in hosts]


def db_of(url: str) -> int:
    """The database number of a ``redis://host:port/N`` URL (0 when absent)."""
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def connect(
    url: str,
    *,
    sentinels: Sequence[tuple[str, int]] = (),
    master: str = "",
    sentinel_password: str | None = None,
    blocking: bool = False,
    max_connections: int | None = None,
    pool_timeout: float | None = None,
    **kwargs: Any,
) -> aioredis.Redis:
    """A client for ``url`` — or, when ``sentinels`` are given, for the primary of
    ``master`` they report, with ``url``'s database. ``kwargs`` (username, password,
    timeouts, retry, decode_responses…) go to every data connection; Sentinels get only
    ``sentinel_password`` and the timeouts. ``blocking``: the pool waits up to
    ``pool_timeout`` for a free one of its ``max_connections``."""
    if not sentinels:
        if blocking:
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections or 100, timeout=pool_timeout, **kwargs
            )
            return aioredis.Redis.from_pool(pool)
        return aioredis.Redis.from_url(url, max_connections=max_connections, **kwargs)
    sentinel_kwargs: dict[str, Any] = {
        k: v for k, v in kwargs.items() if k in {"socket_timeout", "socket_connect_timeout"}
    }
    if sentinel_password:
        sentinel_kwargs["password"] = sentinel_password
    manager = Sentinel(list(sentinels), sentinel_kwargs=sentinel_kwargs)
    pool_kwargs: dict[str, Any] = {"db": db_of(url), **kwargs}
    if max_connections:
        pool_kwargs["max_connections"] = max_connections
    if blocking:
        pool_kwargs["timeout"] = pool_timeout
    pool_class = BlockingSentinelConnectionPool if blocking else SentinelConnectionPool
    sentinel_pool: aioredis.ConnectionPool = pool_class(  # type: ignore[no-untyped-call]
        master, manager, **pool_kwargs
    )
    return aioredis.Redis.from_pool(sentinel_pool)
