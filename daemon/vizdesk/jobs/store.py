"""Batch job persistence: the generic record store with the job keys (admins list all
jobs from the ``jobs:all`` index, sorted by creation time)."""

from __future__ import annotations

from collections.abc import Callable

from ..contract.keys import Keys
from ..core.store import RecordStore
from .model import BatchJob


class JobStore(RecordStore[BatchJob]):
    """Batch jobs in Redis under ``keys.job(id)``; see :class:`RecordStore`."""

    record_type = BatchJob
    kind = "job"

    def layout(self, keys: Keys) -> tuple[Callable[[str], str], Callable[[str], str], str]:
        return keys.job, keys.user_jobs, keys.active_jobs

    def order_layout(self, keys: Keys) -> tuple[Callable[[str], str], str]:
        return keys.user_jobs_by_time, keys.all_jobs
