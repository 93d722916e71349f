"""Per-user limits in Redis: an exact sliding window of creations (a sorted-set log per
user+action) and a cap on concurrently open streams (leases in a sorted set per user).

One Lua script does everything atomically on the server, with the server's clock (so
several daemons and clock skew do not matter): drop entries older than the window,
count, and either record the hit or refuse it with the time until a slot frees up.
Refused hits are not recorded, so hammering does not extend the penalty.
"""

from __future__ import annotations

import math
import secrets

import redis.asyncio as aioredis

from ..contract.keys import Keys
from .types import AuthError

_SLIDING_WINDOW = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local member = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count >= limit then
  local idx = count - limit
  local entry = redis.call('ZRANGE', key, idx, idx, 'WITHSCORES')
  local retry = window
  if entry[2] then retry = tonumber(entry[2]) + window - now end
  return {0, retry, count}
end
redis.call('ZADD', key, now, member)
redis.call('PEXPIRE', key, window)
return {1, 0, count + 1}
"""


class RateLimiter:
    """At most ``limit`` hits per user and action in any ``window_seconds``; 0 disables."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, limit: int, window_seconds: int) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.redis = redis
        self.keys = keys
        self.limit = int(limit)
        self.window_ms = int(window_seconds) * 1000
        self._script = redis.register_script(_SLIDING_WINDOW)

    async def hit(self, user: str, action: str) -> None:
        """Record one ``action`` by ``user``; raise ``AuthError(429, "rate_limited")`` when over."""
        if self.limit <= 0:
            return
        member = secrets.token_hex(8)
        res = await self._script(
            keys=[self.keys.rate(user, action)], args=[self.limit, self.window_ms, member]
        )
        allowed, retry_ms = int(res[0]), int(res[1])
        if not allowed:
            retry_after = max(1, math.ceil(retry_ms / 1000))
            raise AuthError(
                429,
                "rate_limited",
                f"too many {action} requests: at most {self.limit} per "
                f"{self.window_ms // 1000} s; retry in {retry_after} s",
                retry_after=retry_after,
            )

    async def reset(self, user: str, action: str) -> None:
        """Forget ``user``'s history for ``action``."""
        await self.redis.delete(self.keys.rate(user, action))


# Take or renew lease ARGV[3] in a user's set of open streams: drop expired leases,
# refuse a new one when ``limit`` are live, else (re)write it to end ``lease`` ms from
# now. A lease already held is always renewed. Server clock, like the window above.
_LEASE = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local member = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if not redis.call('ZSCORE', key, member) then
  local count = redis.call('ZCARD', key)
  if count >= limit then return {0, count} end
end
redis.call('ZADD', key, now + lease, member)
redis.call('PEXPIRE', key, lease)
return {1, redis.call('ZCARD', key)}
"""


class StreamLimiter:
    """At most ``limit`` long-lived streams per user at once, counted in Redis so that
    every daemon replica sees the same count; 0 disables.

    A stream holds a *lease* (a member of the user's sorted set, scored with its end)
    that it renews (:meth:`renew`) more often than ``lease_seconds`` and gives back when
    it closes (:meth:`release`). A replica that dies without releasing costs the user
    that slot for at most ``lease_seconds``.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, limit: int, lease_seconds: float) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.redis = redis
        self.keys = keys
        self.limit = int(limit)
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self._script = redis.register_script(_LEASE)

    async def _take(self, user: str, lease: str) -> bool:
        res = await self._script(
            keys=[self.keys.streams(user)], args=[self.limit, self.lease_ms, lease]
        )
        return bool(int(res[0]))

    async def acquire(self, user: str, what: str = "event streams") -> str:
        """A new lease for one of ``user``'s streams; ``AuthError(429,
        "too_many_streams")`` when ``limit`` are open ("" when the limit is off)."""
        if self.limit <= 0:
            return ""
        lease = secrets.token_hex(8)
        if not await self._take(user, lease):
            raise AuthError(
                429,
                "too_many_streams",
                f"too many open {what}: at most {self.limit} per user; close one first",
                retry_after=max(1, math.ceil(self.lease_ms / 1000)),
            )
        return lease

    async def renew(self, user: str, lease: str) -> bool:
        """Extend ``lease``; False when it had expired and its slot is taken meanwhile."""
        return not lease or await self._take(user, lease)

    async def release(self, user: str, lease: str) -> None:
        """Give ``lease`` back (idempotent)."""
        if lease:
            await self.redis.zrem(self.keys.streams(user), lease)
