"""GET /api/v1/sessions and /api/v1/jobs by pages, on the real daemon and Redis: limit and
opaque cursor walk every record once, newest first; admins page through everybody's from
the global index; bad limit or cursor → 400 naming the field; without limit/cursor the
answer keeps its former shape (every record, oldest first: what the portal reads).

The records are written straight into the daemon's Redis prefix as ENDED (no Slurm job
behind them, so the tracker leaves them alone)."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import Daemon
from vizdesk.contract.keys import Keys
from vizdesk.jobs.model import BatchJob, BatchJobState
from vizdesk.jobs.store import JobStore
from vizdesk.sessions.model import Session, SessionState
from vizdesk.sessions.store import SessionStore

pytestmark = pytest.mark.e2e
T0 = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
ADMIN = ["vizdesk-admins"]


def fields(i: int, user: str, at: dt.datetime) -> dict[str, Any]:
    return dict(
        id=f"{i:016x}",
        user=user,
        partition="viz",
        cpus=1,
        memory_gb=1,
        gpus=0,
        time_limit_minutes=10,
        created_at=at,
    )


async def seed(redis: aioredis.Redis, daemon: Daemon, user: str, n: int) -> list[str]:
    keys = Keys(daemon.prefix)
    sessions, jobs = SessionStore(redis, keys, 600), JobStore(redis, keys, 600)
    base = secrets.randbelow(1 << 40) << 16
    ids = []
    for k, i in enumerate(range(base, base + n)):
        at = T0 + dt.timedelta(seconds=k)
        s = Session(**fields(i, user, at), geometry="800x600", state=SessionState.ENDED)
        await sessions.create(s)
        await jobs.create(BatchJob(**fields(i, user, at), state=BatchJobState.COMPLETED))
        ids.append(s.id)
    await redis.srem(keys.active_sessions, *ids)
    await redis.srem(keys.active_jobs, *ids)
    return ids[::-1]  # newest first


async def walk(
    http: aiohttp.ClientSession, daemon: Daemon, path: str, plural: str, query: str, groups: Any
) -> list[str]:
    seen: list[str] = []
    url = f"{daemon.url}{path}?{query}"
    for _ in range(200):
        async with http.get(url, headers=daemon.headers(seen_user(query), groups)) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        assert set(body) == {plural, "next_cursor"}
        seen += [x["id"] for x in body[plural]]
        if body["next_cursor"] is None:
            return seen
        url = f"{daemon.url}{path}?{query}&cursor={body['next_cursor']}"
    raise AssertionError("pages never ended")


def seen_user(query: str) -> str:
    return "alice" if "all=" not in query else "bob"


@pytest.mark.parametrize(
    ("path", "plural"), [("/api/v1/sessions", "sessions"), ("/api/v1/jobs", "jobs")]
)
async def test_pages_walk_every_record_once(
    http: aiohttp.ClientSession, daemon: Daemon, redis_admin: aioredis.Redis, path: str, plural: str
) -> None:
    alice = await seed(redis_admin, daemon, "alice", 23)
    bob = await seed(redis_admin, daemon, "bob", 5)
    got = await walk(http, daemon, path, plural, "limit=4", None)
    assert [i for i in got if i in set(alice)] == alice and not set(got) & set(bob)
    everybody = await walk(http, daemon, path, plural, "limit=10&all=true", ADMIN)
    assert len(everybody) == len(set(everybody))
    assert [i for i in everybody if i in set(alice)] == alice
    assert [i for i in everybody if i in set(bob)] == bob
    # The former shape without limit/cursor: everything, oldest first, no next_cursor.
    async with http.get(f"{daemon.url}{path}", headers=daemon.headers("alice")) as r:
        body = await r.json()
    assert set(body) == {plural}
    ids = [x["id"] for x in body[plural] if x["id"] in set(alice)]
    assert ids == alice[::-1]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("limit=5&cursor=WzEsMl0", "cursor"),
        ("cursor=", "cursor"),
    ],
)
async def test_bad_limit_or_cursor_is_400_naming_the_field(
    http: aiohttp.ClientSession, daemon: Daemon, query: str, field: str
) -> None:
    for path in ("/api/v1/sessions", "/api/v1/jobs"):
        async with http.get(f"{daemon.url}{path}?{query}", headers=daemon.headers("alice")) as r:
            assert r.status == 400 and r.content_type == "application/json", await r.text()
            err = (await r.json())["error"]
        assert err["field"] == field, err
