"""The tracker leader lease and its fencing on the test bed's real Redis: one holder, a
takeover after expiry with a new fence, a release handing over at once, and every write
of a deposed leader refused (record updates and the fenced SET alike)."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from vizdesk.contract.keys import Keys
from vizdesk.core.lease import FencedOut, LeaderLease, fenced, fenced_set
from vizdesk.core.store import atomic_update


def lease(redis: aioredis.Redis, keys: Keys, name: str, seconds: float = 1.0) -> LeaderLease:
    return LeaderLease(redis, keys, name, seconds)


def save(pipe: aioredis.client.Pipeline, doc: dict[str, int]) -> None:
    pipe.set("k", json.dumps(doc))


async def bump(redis: aioredis.Redis, key: str) -> dict[str, int] | None:
    def mutate(doc: dict[str, int]) -> bool:
        doc["n"] += 1
        return True

    def queue(pipe: aioredis.client.Pipeline, doc: dict[str, int]) -> None:
        pipe.set(key, json.dumps(doc))

    return await atomic_update(redis, key, json.loads, mutate, queue)


async def test_one_holder_then_takeover_with_a_new_fence(redis: aioredis.Redis, keys: Keys) -> None:
    a, b = lease(redis, keys, "a"), lease(redis, keys, "b")
    changes: list[bool] = []
    a.on_change = changes.append
    assert await a.attempt()
    assert not await b.attempt()
    assert b.holder == "a" and a.holder == "a"
    fence_a = a.fence
    assert fence_a is not None and fence_a.value == "a 1"
    assert await a.attempt()  # renewal keeps the same fence
    assert a.fence == fence_a
    await asyncio.sleep(1.2)  # a stops renewing (paused): its lease runs out
    assert not a.leader  # and a knows it from its own clock
    assert await b.attempt()
    assert b.fence is not None and b.fence.value == "b 2"
    assert not await a.attempt()
    assert a.holder == "b" and changes == [True, False]


async def test_a_deposed_leader_cannot_write(redis: aioredis.Redis, keys: Keys) -> None:
    key = keys.prefix + "record"
    await redis.set(key, json.dumps({"n": 0}))
    a, b = lease(redis, keys, "a"), lease(redis, keys, "b")
    assert await a.attempt()
    fence_a = a.fence
    assert fence_a is not None
    with fenced(fence_a):
        assert await bump(redis, key) == {"n": 1}
        await fenced_set(redis, fence_a, keys.tracker_status, "a", 30)
    await asyncio.sleep(1.2)
    assert await b.attempt()
    with fenced(fence_a):  # a resumes with the fence of its old tick
        with pytest.raises(FencedOut):
            await bump(redis, key)
        with pytest.raises(FencedOut):
            await fenced_set(redis, fence_a, keys.tracker_status, "a again", 30)
    assert json.loads(await redis.get(key)) == {"n": 1}
    assert (await redis.get(keys.tracker_status)) == b"a"
    fence_b = b.fence
    assert fence_b is not None
    with fenced(fence_b):
        assert await bump(redis, key) == {"n": 2}
    assert await bump(redis, key) == {"n": 3}  # outside a tick (the API): never fenced


async def test_even_an_expired_lease_nobody_took_fences(redis: aioredis.Redis, keys: Keys) -> None:
    key = keys.prefix + "record"
    await redis.set(key, json.dumps({"n": 0}))
    a = lease(redis, keys, "a")
    assert await a.attempt()
    fence_a = a.fence
    assert fence_a is not None
    await asyncio.sleep(1.2)
    with fenced(fence_a), pytest.raises(FencedOut):
        await bump(redis, key)


async def test_renewal_racing_a_write_only_retries_it(redis: aioredis.Redis, keys: Keys) -> None:
    key = keys.prefix + "record"
    await redis.set(key, json.dumps({"n": 0}))
    a = lease(redis, keys, "a", seconds=5)
    assert await a.attempt()
    fence_a = a.fence
    assert fence_a is not None

    async def renew_often() -> None:
        for _ in range(50):
            await a.attempt()
            await asyncio.sleep(0)

    with fenced(fence_a):
        renewals = asyncio.create_task(renew_often())
        for _ in range(50):
            await bump(redis, key)
        await renewals
    assert json.loads(await redis.get(key)) == {"n": 50}


async def test_release_hands_over_at_once(redis: aioredis.Redis, keys: Keys) -> None:
    a, b = lease(redis, keys, "a", 30), lease(redis, keys, "b", 30)
    assert await a.attempt()
    assert not await b.attempt()
    await a.release()
    assert not a.leader
    assert await b.attempt()
    await a.release()  # not ours any more: b's lease stays
    assert await redis.get(keys.tracker_lease) == b"b 2"
