"""Tracked sources: records whose Slurm jobs ride on the tracker's ONE query per tick.

:class:`TrackedSource` is what the tracker's loop needs. :class:`RecordTracker` is the
one implementation of the state machine that follows a record's Slurm job — the same
for desktop sessions and batch jobs — driven by each kind's outcome tables
(``{Slurm state: (our state, reason)}``, as Open OnDemand's ``ood_core`` maps states)
and a few hooks. Nothing here changes a record while Slurm cannot be asked.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import structlog
from prometheus_client import Gauge

from ..slurm.base import JobState, JobStatus, SlurmBackend, SlurmError
from .records import RecordState, SlurmRecord, utcnow
from .store import RecordStore

log = structlog.get_logger("vizdesk.tracked")

CANCEL_RETRY = timedelta(seconds=10)  # a record still stopping gets scancel again after this
SUBMIT_TIMEOUT = timedelta(seconds=120)  # a record without a Slurm id after this failed

R = TypeVar("R", bound=SlurmRecord[Any])
S = TypeVar("S", bound=RecordState)

Outcome = tuple[S, str]


class TrackedSource(Protocol):
    """Something whose Slurm jobs ride on the tracker's one query (sessions, batch jobs)."""

    async def active_job_ids(self) -> list[str]:
        """The Slurm ids to ask about in this tick's query."""
        ...

    def job_owners(self) -> dict[str, str]:
        """``{Slurm id: user}`` of the ids :meth:`active_job_ids` just returned."""
        ...

    async def apply(self, statuses: dict[str, JobStatus]) -> None:
        """Statuses of its active ids that Slurm knows; an absent id is gone from Slurm."""
        ...

    def keep(self) -> None:
        """Slurm could not be asked: change nothing (only refresh what is reported)."""
        ...


QUEUED = frozenset({JobState.PENDING, JobState.SUSPENDED})


@dataclass(frozen=True)
class Outcomes(Generic[S]):
    """A record kind's answers to the cases every kind shares."""

    queued: Outcome[S]  # pending in Slurm: (state, reason when Slurm gives none)
    gone: Outcome[S]  # Slurm no longer knows the job (and no stop was requested)
    failed: S  # the job runs as somebody else, or was never submitted

    @property
    def wrong_user(self) -> Outcome[S]:
        return self.failed, "job belongs to another user"

    @property
    def stale_submission(self) -> Outcome[S]:
        return self.failed, "submission never completed"


@dataclass(frozen=True)
class TrackEvents:
    """The log event names of one record kind (they are part of the interface)."""

    user_mismatch: str
    cancel_failed: str
    track_error: str
    finished: str


class RecordTracker(Generic[R, S]):
    """Follows one record kind's Slurm jobs; a :class:`TrackedSource`.

    Override these (the class attributes describe the kind):

    * ``KIND`` (the log field naming the record), ``OUTCOMES``, ``EVENTS``;
    * ``FOLLOW_WHILE_STOPPING``: node and start time are still recorded while stopping;
    * ``START_BEFORE_RUNNING``: Slurm's start time is recorded before the job runs;
    * :meth:`finished` (required): the final (state, reason) of a job Slurm ended;
    * :meth:`stopped` (required): the final (state, reason) when a stop was requested;
    * :meth:`running`: what a running job means (default: ``running_state``);
    * :meth:`queued`, :meth:`record_final`, :meth:`on_finished`, :meth:`finish_fields`.
    """

    KIND: ClassVar[str]
    OUTCOMES: ClassVar[Outcomes[Any]]
    EVENTS: ClassVar[TrackEvents]
    FOLLOW_WHILE_STOPPING: ClassVar[bool] = False
    START_BEFORE_RUNNING: ClassVar[bool] = False

    def __init__(
        self,
        backend: SlurmBackend,
        store: RecordStore[R],
        states: type[S],
        gauge: Gauge | None,
    ) -> None:
        self.backend = backend
        self.store = store
        self.states = states
        self.gauge = gauge
        self._queried: set[str] = set()  # Slurm ids in the tracker's current query
        self._records: list[R] = []

    # ------------------------------------------------------------ TrackedSource

    async def active_job_ids(self) -> list[str]:
        self._records = await self.store.get_many(await self.store.active_ids())
        ids = [r.job_id for r in self._records if r.job_id]
        self._queried = set(ids)
        return ids

    def job_owners(self) -> dict[str, str]:
        return {r.job_id: r.user for r in self._records if r.job_id}

    def keep(self) -> None:
        self.update_gauge(self._records)

    async def apply(self, statuses: dict[str, JobStatus]) -> None:
        """Move every active record according to Slurm's answer (absent = gone).

        Only records whose ids were in the query count: one submitted while the query
        ran is absent from the answer without being gone.
        """
        queried, self._queried = self._queried, set()
        records = await self.store.get_many(await self.store.active_ids())
        tracked = [r for r in records if r.job_id is None or r.job_id in queried]
        results = await asyncio.gather(
            *(self.advance(r, statuses.get(r.job_id) if r.job_id else None) for r in tracked),
            return_exceptions=True,
        )
        tracked_ids = {r.id for r in tracked}
        current = [r for r in records if r.id not in tracked_ids]  # not asked about: as is
        for record, result in zip(tracked, results, strict=True):
            if isinstance(result, BaseException):
                log.error(self.EVENTS.track_error, **{self.KIND: record.id}, error=repr(result))
                current.append(record)
            elif result is not None:
                current.append(result)
        self.update_gauge(current)

    def update_gauge(self, records: list[R]) -> None:
        if self.gauge is None:
            return
        tally = Counter(r.state.value for r in records if not r.state.is_final)
        for state in self.states:
            if not state.is_final:
                self.gauge.labels(state=state.value).set(tally.get(state.value, 0))

    # ------------------------------------------------------------ the state machine

    async def advance(self, record: R, status: JobStatus | None) -> R | None:
        """One record, one Slurm answer (None: Slurm does not know the job)."""
        now = utcnow()
        outcomes = self.OUTCOMES
        if record.job_id is None:
            # Submission in flight (or the daemon died during it).
            if now - record.created_at > SUBMIT_TIMEOUT:
                return await self._finish(record, *outcomes.stale_submission)
            return record
        if status is None:
            gone = self.stopped(record) if record.stop_requested_at else outcomes.gone
            return await self._finish(record, *gone)
        if status.user and status.user != record.user:
            log.error(self.EVENTS.user_mismatch, **{self.KIND: record.id}, job_user=status.user)
            await self.cancel_in_slurm(record)
            return await self._finish(record, *outcomes.wrong_user)
        if status.state.is_finished:
            state, reason = await self.finished(record, status)
            return await self._finish(record, state, reason, status)
        if record.state == record.MACHINE.stopping:
            if record.last_cancel_at is None or now - record.last_cancel_at > CANCEL_RETRY:
                await self.cancel_in_slurm(record)
            if self.FOLLOW_WHILE_STOPPING:
                return await self._observe(record, None, "", status)
            return record
        if status.state in QUEUED:
            return await self.queued(record, status)
        if status.state.is_running:
            return await self.running(record, status)
        return record

    async def finished(self, record: R, status: JobStatus) -> Outcome[S]:
        """The final state and reason of a job Slurm reports as finished."""
        raise NotImplementedError

    def stopped(self, record: R) -> Outcome[S]:
        """The final state and reason of a job gone after a stop was requested."""
        raise NotImplementedError

    async def queued(self, record: R, status: JobStatus) -> R | None:
        """A pending or suspended job: the ``queued`` outcome with Slurm's reason."""
        state, default = self.OUTCOMES.queued
        if status.state == JobState.SUSPENDED:
            default = "suspended"
        return await self._observe(record, state, f"queued: {status.reason or default}", status)

    async def running(self, record: R, status: JobStatus) -> R | None:
        """A running job (override: the default leaves the record as it is)."""
        return record

    async def _observe(
        self,
        record: R,
        state: S | None,
        reason: str,
        status: JobStatus,
        also: Callable[[R], bool] | None = None,
    ) -> R | None:
        """Move a live record to ``state`` (None: keep it) and copy node and start time;
        ``also`` may change more in the same atomic update."""

        def mutate(r: R) -> bool:
            stopping = r.state == r.MACHINE.stopping
            if r.state.is_final or (stopping and not self.FOLLOW_WHILE_STOPPING):
                return False
            changed = False
            if state is not None and not stopping:
                changed = r.move(state, reason)
            node = status.batch_host or None
            if node and r.node != node:
                r.node, changed = node, True
            started = status.state.is_running or self.START_BEFORE_RUNNING
            if status.start_time and r.started_at is None and started:
                r.started_at, changed = status.start_time, True
            if also is not None:
                changed = also(r) or changed
            return changed

        return await self.store.update(record.id, mutate)

    async def _finish(
        self, record: R, state: S, reason: str, status: JobStatus | None = None
    ) -> R | None:
        """Move to a final state (with what Slurm said last), then :meth:`on_finished`."""

        def mutate(r: R) -> bool:
            if status is not None:
                self.record_final(r, status)
            return r.move(state, reason)

        updated = await self.store.update(record.id, mutate)
        if updated is None:
            await self.store.forget_active(record.id)
        await self.on_finished(record, updated, state, reason)
        log.info(
            self.EVENTS.finished,
            **{self.KIND: record.id},
            user=record.user,
            state=state.value,
            reason=reason,
            **self.finish_fields(updated),
        )
        return updated

    def record_final(self, record: R, status: JobStatus) -> None:
        """Copy Slurm's last word onto a record that is about to end."""
        if status.start_time and record.started_at is None:
            record.started_at = status.start_time

    async def on_finished(self, record: R, updated: R | None, state: S, reason: str) -> None:
        """Side effects of a record that ended (credentials, metrics)."""

    def finish_fields(self, updated: R | None) -> dict[str, Any]:
        """Extra fields of the ``finished`` log event."""
        return {}

    async def cancel_in_slurm(self, record: R) -> None:
        """scancel the record's job (logged and retried later when Slurm fails)."""
        if not record.job_id:
            return
        try:
            await self.backend.cancel(record.job_id, record.user)
        except SlurmError as exc:
            log.warning(
                self.EVENTS.cancel_failed,
                **{self.KIND: record.id},
                job_id=record.job_id,
                error=str(exc),
            )
            return
        now = utcnow()

        def mark(r: R) -> bool:
            r.last_cancel_at = now
            return True

        await self.store.update(record.id, mark)
