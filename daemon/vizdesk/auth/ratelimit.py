"""Per-user rate limits in Redis: an exact sliding window (a sorted-set log per user+action).

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
