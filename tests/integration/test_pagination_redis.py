"""Pages of sessions and batch jobs from the creation-time indexes, on the real Redis:
newest first, no record twice or missing across pages, expired records dropped from the
indexes, state filters, old records indexed on first use, and bad cursors refused."""

from __future__ import annotations

import datetime as dt

import pytest
import redis.asyncio as aioredis

from vizdesk.contract.keys import Keys
from vizdesk.core.store import BadCursor, Cursor
from vizdesk.jobs.model import BatchJob, BatchJobState
from vizdesk.jobs.store import JobStore
from vizdesk.sessions.model import Session, SessionState
from vizdesk.sessions.store import SessionStore

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def session(i: int, user: str = "alice", same_time: bool = False) -> Session:
    return Session(
        id=f"{i:016x}",
        user=user,
        partition="viz",
        cpus=1,
        memory_gb=1,
        gpus=0,
        time_limit_minutes=10,
        geometry="800x600",
        state=SessionState.ENDED if i % 3 == 0 else SessionState.PENDING,
        created_at=T0 if same_time else T0 + dt.timedelta(seconds=i),
    )


async def walk(store: SessionStore, user: str | None, limit: int, state: str = "") -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        page, cursor = await store.page(user, limit, cursor, state=state)
        assert len(page) <= limit
        seen += [s.id for s in page]
        if cursor is None:
            return seen
        cursor = Cursor.decode(cursor.encode())  # through its opaque form, as clients do
    raise AssertionError("pages never ended")


async def test_pages_walk_every_record_newest_first(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, 3600)
    for i in range(1, 121):
        await store.create(session(i, "alice" if i % 4 else "bob"))
    alice = [f"{i:016x}" for i in range(120, 0, -1) if i % 4]
    assert await walk(store, "alice", 7) == alice
    assert await walk(store, "alice", 500) == alice
    assert await walk(store, None, 50) == [f"{i:016x}" for i in range(120, 0, -1)]
    pending = [f"{i:016x}" for i in range(120, 0, -1) if i % 4 and i % 3]
    assert await walk(store, "alice", 5, state="PENDING") == pending
    # The unpaged list (the portal's) still answers everything, oldest first.
    assert [s.id for s in await store.list_user("alice")] == alice[::-1]
    assert [s.id for s in await store.list_all()] == [f"{i:016x}" for i in range(1, 121)]


async def test_equal_creation_times_are_neither_lost_nor_repeated(
    redis: aioredis.Redis, keys: Keys
) -> None:
    store = SessionStore(redis, keys, 3600)
    for i in range(1, 31):
        await store.create(session(i, same_time=True))
    got = await walk(store, "alice", 4)
    assert sorted(got) == [f"{i:016x}" for i in range(1, 31)] and len(set(got)) == 30


async def test_expired_records_leave_the_indexes(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, 3600)
    for i in range(1, 11):
        await store.create(session(i))
    for i in (2, 5, 9):
        await redis.delete(keys.session(f"{i:016x}"))  # what the retention TTL does
    assert await walk(store, "alice", 3) == [f"{i:016x}" for i in (10, 8, 7, 6, 4, 3, 1)]
    left = {m.decode() for m in await redis.zrange(keys.user_sessions_by_time("alice"), 0, -1)}
    assert f"{5:016x}" not in left and len(left) == 7
    assert await redis.scard(keys.user_sessions("alice")) == 7
    await redis.delete(keys.session(f"{1:016x}"))
    assert len(await store.list_all()) == 6
    assert await redis.zcard(keys.all_sessions) == 6


async def test_jobs_use_their_own_indexes_and_old_records_are_indexed(
    redis: aioredis.Redis, keys: Keys
) -> None:
    store = JobStore(redis, keys, 3600)
    for i in range(1, 6):
        job = BatchJob(
            id=f"{i:016x}",
            user="alice",
            partition="batch",
            cpus=1,
            memory_gb=1,
            gpus=0,
            time_limit_minutes=5,
            state=BatchJobState.QUEUED,
            created_at=T0 + dt.timedelta(seconds=i),
        )
        await store.create(job)
    assert await redis.zcard(keys.all_jobs) == 5
    assert await redis.zcard(keys.user_jobs_by_time("alice")) == 5
    # A record stored by an older vizdesk (no sorted indexes yet) is found once indexed.
    await redis.delete(keys.user_jobs_by_time("alice"), keys.all_jobs)
    page, nxt = await store.page("alice", 2)
    assert [j.id for j in page] == [f"{5:016x}", f"{4:016x}"] and nxt is not None
    fresh = JobStore(redis, keys, 3600)
    assert [j.id for j in await fresh.list_all()] == [f"{i:016x}" for i in range(1, 6)]


@pytest.mark.parametrize(
    "text", ["", "x", "%%%", "W10", "WzEsMl0", "WyJhIiwiYiJd", "WzEuMCwiYS1iIl0", "a" * 300]
)
def test_bad_cursors(text: str) -> None:
    with pytest.raises(BadCursor):
        Cursor.decode(text)
