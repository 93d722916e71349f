"""Session persistence in Redis: records, per-user indexes, active set, change events.

All state lives in Redis, so the daemon can restart (or run beside a twin) without
losing sessions. Updates are optimistic (WATCH/MULTI) so the API and the tracker never
overwrite each other's transitions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis

from .keys import Keys
from .models import Session
from .records import atomic_update


class SessionStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, retention_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.retention = retention_seconds

    async def create(self, session: Session) -> None:
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(k.session(session.id), session.to_json())
            pipe.sadd(k.user_sessions(session.user), session.id)
            pipe.sadd(k.active_sessions, session.id)
            pipe.zadd(k.all_sessions, {session.id: session.created_at.timestamp()})
            pipe.publish(k.events_channel, self._event(session))
            await pipe.execute()

    async def get(self, sid: str) -> Session | None:
        raw = await self.redis.get(self.keys.session(sid))
        return Session.from_json(raw) if raw else None

    async def get_many(self, sids: Iterable[str]) -> list[Session]:
        ids = list(sids)
        if not ids:
            return []
        raws = await self.redis.mget([self.keys.session(s) for s in ids])
        return [Session.from_json(r) for r in raws if r]

    async def list_user(self, user: str) -> list[Session]:
        ids: set[str] = await self.redis.smembers(self.keys.user_sessions(user))  # type: ignore[assignment]
        sessions = await self.get_many(ids)
        if len(sessions) < len(ids):  # expired records: drop them from the index
            alive = {s.id for s in sessions}
            stale = [i for i in ids if i not in alive]
            await self.redis.srem(self.keys.user_sessions(user), *stale)
        return sorted(sessions, key=lambda s: s.created_at)

    async def list_all(self, limit: int = 1000) -> list[Session]:
        ids: list[str] = await self.redis.zrevrange(  # type: ignore[assignment]
            self.keys.all_sessions, 0, limit - 1
        )
        return sorted(await self.get_many(ids), key=lambda s: s.created_at)

    async def active_ids(self) -> list[str]:
        members: set[str] = await self.redis.smembers(self.keys.active_sessions)  # type: ignore[assignment]
        return sorted(members)

    async def count_active_for_user(self, user: str) -> int:
        return sum(1 for s in await self.list_user(user) if not s.state.is_final)

    async def update(self, sid: str, mutate: Callable[[Session], bool]) -> Session | None:
        """Read-modify-write one session atomically. ``mutate`` returns True if it changed.

        Returns the session as stored after the call (None if it does not exist).
        """
        return await atomic_update(
            self.redis, self.keys.session(sid), Session.from_json, mutate, self._queue_save
        )

    def _queue_save(self, pipe: aioredis.client.Pipeline, session: Session) -> None:
        k = self.keys
        if session.state.is_final:
            pipe.set(k.session(session.id), session.to_json(), ex=self.retention)
            pipe.srem(k.active_sessions, session.id)
        else:
            pipe.set(k.session(session.id), session.to_json())
        pipe.publish(k.events_channel, self._event(session))

    @staticmethod
    def _event(session: Session) -> str:
        return json.dumps({"type": "session", "user": session.user, "session": session.to_public()})
