"""Session persistence: the generic record store with the session keys, plus the
``sessions:all`` index (sorted by creation time) that admins list from."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from ..contract.keys import Keys
from ..core.store import RecordStore, strs
from .model import Session


class SessionStore(RecordStore[Session]):
    """Sessions in Redis under ``keys.session(id)``; see :class:`RecordStore`."""

    record_type = Session
    kind = "session"

    def layout(self, keys: Keys) -> tuple[Callable[[str], str], Callable[[str], str], str]:
        return keys.session, keys.user_sessions, keys.active_sessions

    def _queue_create(self, pipe: aioredis.client.Pipeline, record: Session) -> None:
        pipe.zadd(self.keys.all_sessions, {record.id: record.created_at.timestamp()})

    async def list_all(self, limit: int = 1000) -> list[Session]:
        ids = strs(await self.redis.zrevrange(self.keys.all_sessions, 0, limit - 1))
        return sorted(await self.get_many(ids), key=lambda s: s.created_at)
