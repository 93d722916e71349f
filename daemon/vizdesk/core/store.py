"""One generic record store in Redis: records, a per-user index, an active set, events.

Besides the per-user set (what the live-count script reads), every record is in two
sorted sets scored by creation time: its user's and the kind's global one. Pages
(:meth:`RecordStore.page`, newest first) walk them by keyset (score, id), so a page costs
the same at 20 or 20,000 records; ids whose record expired are dropped from the indexes
when a page meets them.

All state lives in Redis, so the daemon can restart (or run beside a twin) without
losing records. Every update is an optimistic WATCH/MULTI read-modify-write, so the API
(stop, cancel) and the tracker (state moves) never overwrite each other's transitions;
finished records expire after a retention period. Each change is published on the events
channel as ``{"type": KIND, "user": USER, KIND: <public view>}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ..contract.keys import Keys
from .lease import CURRENT_FENCE, FencedOut
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

    Returns the record as stored after the call (None if there is none). Inside a
    tracker tick (:data:`~vizdesk.core.lease.CURRENT_FENCE` set) the lease key is watched
    too and must still hold the tick's fence, else :class:`~vizdesk.core.lease.FencedOut`.
    """
    fence = CURRENT_FENCE.get()
    for _ in range(20):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                if fence is None:
                    await pipe.watch(key)
                else:
                    await pipe.watch(key, fence.key)
                    held = await pipe.get(fence.key)
                    held = held.decode() if isinstance(held, bytes) else held
                    if held != fence.value:
                        await pipe.unwatch()
                        raise FencedOut(f"{key}: the tracker lease is no longer {fence.value}")
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


class BadCursor(ValueError):
    """A page cursor that this store did not hand out."""


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the last record's creation score and id (newest-first order)."""

    score: float
    rid: str

    def encode(self) -> str:
        raw = json.dumps([self.score, self.rid], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        if not text or len(text) > 200:
            raise BadCursor("cursor is not one this API handed out")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            score, rid = json.loads(raw)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise BadCursor("cursor is not one this API handed out") from None
        if (
            not isinstance(score, int | float)
            or isinstance(score, bool)
            or not math.isfinite(score)
            or not isinstance(rid, str)
            or not rid.isalnum()
            or len(rid) > 64
        ):
            raise BadCursor("cursor is not one this API handed out")
        return cls(float(score), rid)


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
        self.user_order, self.all_order = self.order_layout(keys)
        self._all_order_checked = False

    def layout(self, keys: Keys) -> tuple[Callable[[str], str], Callable[[str], str], str]:
        """(record key of an id, user index key of a user, active set key)."""
        raise NotImplementedError

    def order_layout(self, keys: Keys) -> tuple[Callable[[str], str], str]:
        """(sorted set of a user's ids by creation time, sorted set of every id)."""
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
        """Extra writes of a new record: its places in the creation-time indexes."""
        score = record.created_at.timestamp()
        pipe.zadd(self.user_order(record.user), {record.id: score})
        pipe.zadd(self.all_order, {record.id: score})

    async def page(
        self, user: str | None, limit: int, after: Cursor | None = None, state: str = ""
    ) -> tuple[list[R], Cursor | None]:
        """Up to ``limit`` records, newest first, after ``after`` (a user's, or every
        record when ``user`` is None), only those in ``state`` when given; and the cursor
        of the next page (None on the last one)."""
        index = self.all_order if user is None else self.user_order(user)
        if user is not None:
            await self._backfill_user_order(user, index)
        else:
            await self._backfill_all_order()
        out: list[R] = []
        last: Cursor | None = None
        max_score: float | str = "+inf" if after is None else after.score
        skip_from = None if after is None else after
        batch = min(max(limit + 1, 16) * (4 if state else 1), 1000)
        offset = 0
        while len(out) <= limit:
            rows: list[Any] = await self.redis.zrevrangebyscore(
                index, max_score, "-inf", start=offset, num=batch, withscores=True
            )
            if not rows:
                break
            offset += len(rows)
            pairs = [(strs([m])[0], float(sc)) for m, sc in rows]
            if skip_from is not None:  # same score as the cursor: members after it only
                pairs = [
                    (m, sc)
                    for m, sc in pairs
                    if sc < skip_from.score or (sc == skip_from.score and m < skip_from.rid)
                ]
            ids = [m for m, _ in pairs]
            raws = await self.redis.mget([self.key(i) for i in ids]) if ids else []
            gone = [i for i, raw in zip(ids, raws, strict=True) if not raw]
            if gone:  # expired records: drop them from the indexes
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.zrem(index, *gone)
                    if user is not None:
                        pipe.srem(self.user_index(user), *gone)
                    await pipe.execute()
            for (rid, score), raw in zip(pairs, raws, strict=True):
                if not raw:
                    continue
                record = self.record_type.from_json(raw)
                if state and record.state.value != state:
                    continue
                out.append(record)
                if len(out) > limit:
                    break
                last = Cursor(score, rid)
            if len(rows) < batch:
                break
        if len(out) > limit:
            return out[:limit], last
        return out, None

    async def _backfill_all_order(self) -> None:
        """Records stored before the global index existed: index them (one SCAN, once per
        process, and only when the index does not exist at all)."""
        if self._all_order_checked:
            return
        if not await self.redis.exists(self.all_order):
            start = len(self.key(""))
            ids = [strs([k])[0][start:] async for k in self.redis.scan_iter(self.key("*"))]
            ids = [i for i in ids if i.isalnum()]
            records = await self.get_many(ids)
            if records:
                await self.redis.zadd(
                    self.all_order, {r.id: r.created_at.timestamp() for r in records}
                )
        self._all_order_checked = True

    async def _backfill_user_order(self, user: str, index: str) -> None:
        """Records stored before the sorted index existed: index them once."""
        if await self.redis.exists(index):
            return
        ids = strs(await self.redis.smembers(self.user_index(user)))
        records = await self.get_many(ids)
        if records:
            await self.redis.zadd(index, {r.id: r.created_at.timestamp() for r in records})

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
        """The newest ``limit`` records (admins), from the global creation-time index."""
        await self._backfill_all_order()
        ids = strs(await self.redis.zrevrange(self.all_order, 0, limit - 1))
        records = await self.get_many(ids)
        if len(records) < len(ids):  # expired records: drop them from the index
            alive = {r.id for r in records}
            await self.redis.zrem(self.all_order, *[i for i in ids if i not in alive])
        return sorted(records, key=lambda r: r.created_at)

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
