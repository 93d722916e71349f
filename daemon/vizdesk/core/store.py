"""One generic record store in Redis: records, a per-user index, an active set, events.

All state lives in Redis, so the daemon can restart (or run beside a twin) without
losing records. Every update is an optimistic WATCH/MULTI read-modify-write, so the API
(stop, cancel) and the tracker (state moves) never overwrite each other's transitions;
finished records expire after a retention period. Each change is published on the events
channel as ``{"type": KIND, "user": USER, KIND: <public view>}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ..contract.keys import Keys
from .records import SlurmRecord, utcnow

R = TypeVar("R", bound=SlurmRecord[Any])
T = TypeVar("T")


def strs(values: Iterable[Any]) -> list[str]:
    """Redis replies as str, whether the client decodes responses or not."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


async def atomic_update(
    redis: Any,
    key: str,
    parse: Callable[[Any], T],
    mutate: Callable[[T], bool],
    queue_save: Callable[[Any, T], None],
) -> T | None:
    """WATCH/MULTI read-modify-write of one record; ``mutate`` returns True if it changed.

    Returns the record as stored after the call (None if there is none).
    """
    for _ in range(20):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw = await pipe.get(key)
                if not raw:
                    await pipe.unwatch()
                    return None
                record = parse(raw)
                if not mutate(record):
                    await pipe.unwatch()
                    return record
                pipe.multi()
                queue_save(pipe, record)
                await pipe.execute()
                return record
            except WatchError:
                continue
    raise RuntimeError(f"{key}: too much contention")


# Count the user's live records (through their index: every record whose JSON "state" is
# not final) and store the new one only if that count stays below the limit. One script,
# so that parallel creates cannot all pass a count taken before any of them was stored.
# KEYS: record key, user index, active set; ARGV: limit, id, record JSON, key prefix of
# records, then the final state values. Returns -1 when stored, else the live count.
CREATE_WITHIN_LIMIT = """
local limit = tonumber(ARGV[1])
local final = {}
for i = 5, #ARGV do final[ARGV[i]] = true end
local live = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local raw = redis.call('GET', ARGV[4] .. id)
  if raw then
    local ok, doc = pcall(cjson.decode, raw)
    if ok and type(doc) == 'table' and not final[doc['state']] then live = live + 1 end
  end
end
if live >= limit then return live end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
return -1
"""


class LimitReached(Exception):
    """:meth:`RecordStore.create_within` found ``live`` records, at the limit already."""

    def __init__(self, live: int, limit: int) -> None:
        super().__init__(f"{live} live records, limit {limit}")
        self.live, self.limit = live, limit


class RecordStore(Generic[R]):
    """Persistence of one record kind.

    Override: ``record_type``, ``kind`` (the event type) and :meth:`layout` (the kind's
    keys); optionally :meth:`list_all` (how every record is found) and
    :meth:`_queue_create` (extra indexes written with a new record).
    """

    record_type: type[R]
    kind: str

    def __init__(self, redis: aioredis.Redis, keys: Keys, retention_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.retention = retention_seconds
        self.events_channel = keys.events_channel
        self.key, self.user_index, self.active_set = self.layout(keys)

    def layout(self, keys: Keys) -> tuple[Callable[[str], str], Callable[[str], str], str]:
        """(record key of an id, user index key of a user, active set key)."""
        raise NotImplementedError

    async def create(self, record: R) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key(record.id), record.to_json())
            pipe.sadd(self.user_index(record.user), record.id)
            pipe.sadd(self.active_set, record.id)
            self._queue_create(pipe, record)
            pipe.publish(self.events_channel, self.event(record))
            await pipe.execute()

    async def create_within(self, record: R, limit: int, final_states: Iterable[str]) -> None:
        """Store a new record unless its user already has ``limit`` live ones (atomic:
        counted and stored by one Redis script). Raises :class:`LimitReached`."""
        live = await self.redis.eval(
            CREATE_WITHIN_LIMIT,
            3,
            self.key(record.id),
            self.user_index(record.user),
            self.active_set,
            limit,
            record.id,
            record.to_json(),
            self.key(""),
            *final_states,
        )
        if int(live) >= 0:
            raise LimitReached(int(live), limit)
        async with self.redis.pipeline(transaction=True) as pipe:
            self._queue_create(pipe, record)
            pipe.publish(self.events_channel, self.event(record))
            await pipe.execute()

    def _queue_create(self, pipe: aioredis.client.Pipeline, record: R) -> None:
        """Extra writes of a new record (none by default)."""

    async def get(self, rid: str) -> R | None:
        raw = await self.redis.get(self.key(rid))
        return self.record_type.from_json(raw) if raw else None

    async def get_many(self, rids: Iterable[str]) -> list[R]:
        ids = list(rids)
        if not ids:
            return []
        raws = await self.redis.mget([self.key(r) for r in ids])
        return [self.record_type.from_json(r) for r in raws if r]

    async def list_user(self, user: str) -> list[R]:
        ids = strs(await self.redis.smembers(self.user_index(user)))
        records = await self.get_many(ids)
        if len(records) < len(ids):  # expired records: drop them from the index
            alive = {r.id for r in records}
            await self.redis.srem(self.user_index(user), *[i for i in ids if i not in alive])
        return sorted(records, key=lambda r: r.created_at)

    async def list_all(self, limit: int = 1000) -> list[R]:
        """Every stored record (admins), found by SCAN over the record keys."""
        ids: list[str] = []
        start = len(self.key(""))
        async for key in self.redis.scan_iter(match=self.key("*"), count=500):
            ids.append(strs([key])[0][start:])
            if len(ids) >= limit:
                break
        return sorted(await self.get_many(ids), key=lambda r: r.created_at)

    async def active_ids(self) -> list[str]:
        return sorted(strs(await self.redis.smembers(self.active_set)))

    async def count_active_for_user(self, user: str) -> int:
        return sum(1 for r in await self.list_user(user) if not r.state.is_final)

    async def update(self, rid: str, mutate: Callable[[R], bool]) -> R | None:
        """Read-modify-write one record atomically. ``mutate`` returns True if it changed.

        Returns the record as stored after the call (None if it does not exist).
        """
        return await atomic_update(
            self.redis, self.key(rid), self.record_type.from_json, mutate, self._queue_save
        )

    async def request_stop(self, record: R, state: Any, reason: str) -> R:
        """Mark a live record as stopping: stop requested (once) and a cancel sent now."""
        if record.state.is_final:
            return record
        now = utcnow()

        def mark(r: R) -> bool:
            if r.state.is_final:
                return False
            r.stop_requested_at = r.stop_requested_at or now
            r.last_cancel_at = now
            r.move(state, reason)
            return True

        return await self.update(record.id, mark) or record

    async def forget_active(self, rid: str) -> None:
        """Drop an id from the active set (its record is gone)."""
        await self.redis.srem(self.active_set, rid)

    def _queue_save(self, pipe: aioredis.client.Pipeline, record: R) -> None:
        if record.state.is_final:
            pipe.set(self.key(record.id), record.to_json(), ex=self.retention)
            pipe.srem(self.active_set, record.id)
        else:
            pipe.set(self.key(record.id), record.to_json())
        pipe.publish(self.events_channel, self.event(record))

    def event(self, record: R) -> str:
        return json.dumps({"type": self.kind, "user": record.user, self.kind: record.to_public()})
