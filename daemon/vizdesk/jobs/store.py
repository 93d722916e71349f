"""Batch job persistence in Redis: records, per-user index, active set, change events.

Same rules as the session store: every update is an optimistic WATCH/MULTI
read-modify-write, so the API (cancel) and the tracker (state moves) never overwrite
each other; finished records expire after a retention period.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis

from ..keys import Keys
from ..records import atomic_update
from .model import BatchJob


def _strs(values: Iterable[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class JobStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, retention_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.retention = retention_seconds

    async def create(self, job: BatchJob) -> None:
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(k.job(job.id), job.to_json())
            pipe.sadd(k.user_jobs(job.user), job.id)
            pipe.sadd(k.active_jobs, job.id)
            pipe.publish(k.events_channel, self._event(job))
            await pipe.execute()

    async def get(self, jid: str) -> BatchJob | None:
        raw = await self.redis.get(self.keys.job(jid))
        return BatchJob.from_json(raw) if raw else None

    async def get_many(self, jids: Iterable[str]) -> list[BatchJob]:
        ids = list(jids)
        if not ids:
            return []
        raws = await self.redis.mget([self.keys.job(j) for j in ids])
        return [BatchJob.from_json(r) for r in raws if r]

    async def list_user(self, user: str) -> list[BatchJob]:
        ids = _strs(await self.redis.smembers(self.keys.user_jobs(user)))
        jobs = await self.get_many(ids)
        if len(jobs) < len(ids):  # expired records: drop them from the index
            alive = {j.id for j in jobs}
            await self.redis.srem(self.keys.user_jobs(user), *[i for i in ids if i not in alive])
        return sorted(jobs, key=lambda j: j.created_at)

    async def list_all(self, limit: int = 1000) -> list[BatchJob]:
        """Every stored job (admins), found by SCAN over the job keys."""
        ids: list[str] = []
        start = len(self.keys.job(""))
        async for key in self.redis.scan_iter(match=self.keys.job("*"), count=500):
            ids.append(_strs([key])[0][start:])
            if len(ids) >= limit:
                break
        return sorted(await self.get_many(ids), key=lambda j: j.created_at)

    async def active_ids(self) -> list[str]:
        return sorted(_strs(await self.redis.smembers(self.keys.active_jobs)))

    async def count_active_for_user(self, user: str) -> int:
        return sum(1 for j in await self.list_user(user) if not j.state.is_final)

    async def update(self, jid: str, mutate: Callable[[BatchJob], bool]) -> BatchJob | None:
        """Read-modify-write one job atomically; ``mutate`` returns True if it changed it.

        Returns the job as stored after the call (None if it does not exist).
        """
        return await atomic_update(
            self.redis, self.keys.job(jid), BatchJob.from_json, mutate, self._queue_save
        )

    async def forget_active(self, jid: str) -> None:
        """Drop an id from the active set (its record is gone)."""
        await self.redis.srem(self.keys.active_jobs, jid)

    def _queue_save(self, pipe: aioredis.client.Pipeline, job: BatchJob) -> None:
        k = self.keys
        if job.state.is_final:
            pipe.set(k.job(job.id), job.to_json(), ex=self.retention)
            pipe.srem(k.active_jobs, job.id)
        else:
            pipe.set(k.job(job.id), job.to_json())
        pipe.publish(k.events_channel, self._event(job))

    @staticmethod
    def _event(job: BatchJob) -> str:
        return json.dumps({"type": "job", "user": job.user, "job": job.to_public()})
