"""Per-user cap on open event streams on a real Redis (atomic Lua leases, server clock)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from vizdesk.auth.ratelimit import StreamLimiter
from vizdesk.auth.types import AuthError
from vizdesk.contract.keys import Keys


async def refused(limiter: StreamLimiter, user: str = "alice") -> AuthError:
    with pytest.raises(AuthError) as ei:
        await limiter.acquire(user)
    e = ei.value
    assert (e.status, e.code) == (429, "too_many_streams")
    return e


async def test_cap_then_429_and_release(redis: aioredis.Redis, keys: Keys) -> None:
    limiter = StreamLimiter(redis, keys, 2, 45)
    a = await limiter.acquire("alice")
    await limiter.acquire("alice")
    e = await refused(limiter)
    assert e.retry_after == 45 and "at most 2" in e.message
    assert await limiter.acquire("bob")  # per user
    await limiter.release("alice", a)
    await limiter.acquire("alice")
    assert await redis.zcard(keys.streams("alice")) == 2
    ttl = await redis.pttl(keys.streams("alice"))
    assert 0 < ttl <= 45_000


async def test_two_replicas_share_the_count(redis: aioredis.Redis, keys: Keys) -> None:
    one, two = StreamLimiter(redis, keys, 2, 45), StreamLimiter(redis, keys, 2, 45)
    await one.acquire("alice")
    await two.acquire("alice")
    await refused(one)
    await refused(two)


async def test_a_lease_not_renewed_lapses(redis: aioredis.Redis, keys: Keys) -> None:
    limiter = StreamLimiter(redis, keys, 1, 0.3)
    lost = await limiter.acquire("alice")  # a replica that died without releasing
    await refused(limiter)
    await asyncio.sleep(0.5)
    taken = await limiter.acquire("alice")
    assert not await limiter.renew("alice", lost)  # its slot is taken meanwhile
    assert await limiter.renew("alice", taken)


async def test_renewal_keeps_the_slot(redis: aioredis.Redis, keys: Keys) -> None:
    limiter = StreamLimiter(redis, keys, 1, 0.3)
    held = await limiter.acquire("alice")
    for _ in range(8):
        await asyncio.sleep(0.1)
        assert await limiter.renew("alice", held)
    await refused(limiter)
    await limiter.release("alice", held)
    await limiter.acquire("alice")
