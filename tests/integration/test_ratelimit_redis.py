"""Per-user sliding-window rate limit on a real Redis (atomic Lua, server clock)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from vizdesk.auth.ratelimit import RateLimiter
from vizdesk.auth.types import AuthError
from vizdesk.contract.keys import Keys

# --- tests ---------------------------------------------------------------------------------


async def limited(rl: RateLimiter, user: str = "alice", action: str = "create") -> AuthError:
    with pytest.raises(AuthError) as ei:
        await rl.hit(user, action)
    e = ei.value
    assert (e.status, e.code) == (429, "rate_limited")
    assert e.retry_after is not None and e.retry_after >= 1
    return e


async def test_limit_then_429(redis: aioredis.Redis, keys: Keys) -> None:
    rl = RateLimiter(redis, keys, 3, 60)
    for _ in range(3):
        await rl.hit("alice", "create")
    e = await limited(rl)
    assert 1 <= (e.retry_after or 0) <= 60
    assert "3 per 60 s" in e.message
    ttl = await redis.pttl(keys.rate("alice", "create"))
    assert 0 < ttl <= 60_000


async def test_per_user_and_action(redis: aioredis.Redis, keys: Keys) -> None:
    rl = RateLimiter(redis, keys, 1, 60)
    await rl.hit("alice", "create")
    await limited(rl, "alice", "create")
    await rl.hit("bob", "create")
    await rl.hit("alice", "job")
    await rl.reset("alice", "create")
    await rl.hit("alice", "create")


async def test_concurrent_hits_are_atomic(redis: aioredis.Redis, keys: Keys) -> None:
    rl = RateLimiter(redis, keys, 5, 60)
    results = await asyncio.gather(
        *(rl.hit("alice", "create") for _ in range(40)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 5
    assert all(isinstance(r, AuthError) and r.status == 429 for r in results if r is not None)


async def wait_allowed(rl: RateLimiter, limit_s: float = 15) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            await rl.hit("alice", "create")
            return
        except AuthError:
            assert time.monotonic() < deadline, "never allowed again"
            await asyncio.sleep(0.1)


async def test_window_slides(redis: aioredis.Redis, keys: Keys) -> None:
    """A fixed window would let a burst through at the boundary; a sliding one does not."""
    rl = RateLimiter(redis, keys, 2, 2)
    await rl.hit("alice", "create")  # A
    await asyncio.sleep(1.2)
    await rl.hit("alice", "create")  # B, ~1.2 s after A
    e = await limited(rl)
    assert e.retry_after == 1  # until A leaves the window (~0.8 s), rounded up
    await wait_allowed(rl)  # A has left the window: C allowed
    # B is still inside its window: still limited (a fixed window would have reset to 0).
    await limited(rl)


async def test_refused_hits_do_not_extend(redis: aioredis.Redis, keys: Keys) -> None:
    rl = RateLimiter(redis, keys, 1, 1)
    await rl.hit("alice", "create")
    for _ in range(20):
        await limited(rl)
    assert await redis.zcard(keys.rate("alice", "create")) == 1
    await wait_allowed(rl, 5)


async def test_disabled(redis: aioredis.Redis, keys: Keys) -> None:
    rl = RateLimiter(redis, keys, 0, 60)
    for _ in range(50):
        await rl.hit("alice", "create")
    assert not await redis.exists(keys.rate("alice", "create"))
