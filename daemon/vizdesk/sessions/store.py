"""Session persistence: the generic record store with the session keys, plus the
``sessions:all`` index (sorted by creation time) that admins list from."""

from __future__ import annotations

import redis.asyncio as aioredis

from ..contract.keys import Keys
from ..core.store import RecordStore, strs
from .model import Session


class SessionStore(RecordStore[Session]):
    """Sessions in Redis under ``keys.session(id)``; see :class:`RecordStore`."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, retention_seconds: int) -> None:
        super().__init__(
            redis,
            Session,
            "session",
            key=keys.session,
            user_index=keys.user_sessions,
            active_set=keys.active_sessions,
            events_channel=keys.events_channel,
            retention_seconds=retention_seconds,
        )
        self.keys = keys

    def _queue_create(self, pipe: aioredis.client.Pipeline, record: Session) -> None:
        pipe.zadd(self.keys.all_sessions, {record.id: record.created_at.timestamp()})

    async def list_all(self, limit: int = 1000) -> list[Session]:
        ids = strs(await self.redis.zrevrange(self.keys.all_sessions, 0, limit - 1))
        return sorted(await self.get_many(ids), key=lambda s: s.created_at)
