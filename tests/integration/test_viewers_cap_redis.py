"""The per-desktop websocket cap on the test bed's real Redis: counted over every
replica's entries in one script (parallel opens cannot pass it together), stale entries
of a dead replica no longer counted."""

from __future__ import annotations

import asyncio
import json
import time

import redis.asyncio as aioredis

from vizdesk.contract.keys import Keys
from vizdesk.sessions.sharing import VIEWER_STALE_SECONDS, Connection, Viewers

SID = "0123456789abcdef"


def conn(i: int) -> Connection:
    return Connection(id=f"c{i}", session_id=SID, owner="alice", user="alice",
                      scope="owner", share_id=None)  # fmt: skip


async def test_the_cap_holds_for_parallel_joins(redis: aioredis.Redis, keys: Keys) -> None:
    # Two "replicas" (clients of their own) opening at once.
    other = aioredis.Redis(connection_pool=redis.connection_pool)
    a, b = Viewers(redis, keys), Viewers(other, keys)
    results = await asyncio.gather(
        *[(a if i % 2 else b).join_within(conn(i), 4) for i in range(12)]
    )
    assert sum(results) == 4
    assert await redis.hlen(keys.viewers(SID)) == 4
    for i, joined in enumerate(results):
        if joined:
            await a.leave(conn(i), "closed")
            break
    assert await b.join_within(conn(99), 4)
    assert not await b.join_within(conn(100), 4)


async def test_stale_entries_do_not_count(redis: aioredis.Redis, keys: Keys) -> None:
    viewers = Viewers(redis, keys)
    dead = conn(1).entry() | {"seen": time.time() - VIEWER_STALE_SECONDS - 5}
    await redis.hset(keys.viewers(SID), "c1", json.dumps(dead))
    await redis.hset(keys.viewers(SID), "junk", "not json")
    assert await viewers.join_within(conn(2), 1)
    assert await redis.hkeys(keys.viewers(SID)) == [b"c2"]
