"""Batch job persistence: the generic record store with the job keys (admins list all
jobs by SCAN over ``keys.job("*")``)."""

from __future__ import annotations

import redis.asyncio as aioredis

from ..contract.keys import Keys
from ..core.store import RecordStore
from .model import BatchJob


class JobStore(RecordStore[BatchJob]):
    """Batch jobs in Redis under ``keys.job(id)``; see :class:`RecordStore`."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, retention_seconds: int) -> None:
        super().__init__(
            redis,
            BatchJob,
            "job",
            key=keys.job,
            user_index=keys.user_jobs,
            active_set=keys.active_jobs,
            events_channel=keys.events_channel,
            retention_seconds=retention_seconds,
        )
        self.keys = keys
