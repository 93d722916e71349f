"""How a desktop session follows its Slurm job: the session kind of :class:`RecordTracker`.

``PENDING`` (queued, with Slurm's reason) → ``STARTING`` (running, no registration yet)
→ ``READY`` (registration seen and valid) → ``STOPPING`` (cancel requested) → ``ENDED``,
or ``FAILED`` (with a reason). A registration seen while Slurm says the job is not
running is dropped; one that is invalid fails the session; a READY desktop whose
registration stays away longer than its TTL is cancelled.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from ..config import Config, IdlePartition
from ..contract.registration import (
    GpuUsage,
    NodeReportedFailure,
    Registration,
    RegistrationRejected,
)
from ..core.records import iso, utcnow
from ..core.tracked import Outcome, Outcomes, RecordTracker, TrackEvents
from ..slurm.base import JobState, JobStatus
from ..slurm.reasons import reason_words
from .model import Session, SessionState
from .notices import write_notice
from .sharing import ActivityClock, publish_close

if TYPE_CHECKING:
    from .role import SessionRole
    from .store import SessionStore

log = structlog.get_logger("vizdesk.tracker")

# Slurm's final states → (session state, reason). Stop requests, vizdesk's own cancels
# and a job that completed before its desktop was ready come first (see finished()).
FINISHED: dict[JobState, tuple[SessionState, str]] = {
    JobState.CANCELLED: (SessionState.ENDED, "job cancelled outside vizdesk (scancel or admin)"),
    JobState.COMPLETED: (SessionState.ENDED, "desktop session ended"),
    JobState.TIMEOUT: (SessionState.ENDED, "time limit reached"),
    JobState.PREEMPTED: (SessionState.ENDED, "preempted by Slurm"),
    JobState.DEADLINE: (SessionState.ENDED, "deadline reached"),
    JobState.NODE_FAIL: (SessionState.FAILED, "node failure"),
    JobState.OUT_OF_MEMORY: (SessionState.FAILED, "out of memory"),
    JobState.BOOT_FAIL: (SessionState.FAILED, "node boot failure"),
}

#: States in which the desktop has not come up yet (a node-reported failure explains an end).
STARTING_STATES = (SessionState.PENDING, SessionState.STARTING)

OUTCOMES = Outcomes(
    queued=(SessionState.PENDING, "queued"),  # or "suspended"
    gone=(SessionState.ENDED, "job no longer known to Slurm"),
    failed=SessionState.FAILED,
)


def idle_policy(cfg: Config, partition: str) -> IdlePartition | None:
    """The idle settings of ``partition`` (or of "*"); None when idle reclaim is off."""
    parts = cfg.idle.partitions
    found = parts.get(partition) or parts.get("*")
    if found is None or not (found.warn_minutes or found.end_minutes):
        return None
    return found


def stopped_reason(session: Session) -> str:
    """ "stopped by user" or "stopped by admin NAME", from the STOPPING reason (or the
    reclaim reason, "idle for N min")."""
    if session.reclaim_reason:
        return session.reclaim_reason
    by = session.reason.removeprefix("stop requested by ")
    return f"stopped by {by}" if by != session.reason else "stopped by user"


def finished_outcome(status: JobStatus, session: Session) -> tuple[SessionState, str]:
    """Final session state and reason for a job Slurm reports as finished."""
    if session.stop_requested_at is not None:
        return SessionState.ENDED, stopped_reason(session)
    if session.cancel_reason and status.state == JobState.CANCELLED:
        return SessionState.FAILED, session.cancel_reason
    if status.state == JobState.COMPLETED and session.ready_at is None:
        return SessionState.FAILED, "job ended before the desktop was ready"
    if status.state == JobState.NODE_FAIL and session.node:
        return SessionState.FAILED, f"node failure ({session.node})"
    if status.state in FINISHED:
        return FINISHED[status.state]
    code = f" (exit code {status.exit_code})" if status.exit_code is not None else ""
    return SessionState.FAILED, f"job failed{code}"


class SessionTracking(RecordTracker[Session, SessionState]):
    """The tracked source of desktop sessions (registrations, start timeout, usage)."""

    KIND = "session"
    OUTCOMES = OUTCOMES
    # user mismatch, cancel failed, tracking error, finished
    EVENTS = TrackEvents(
        "tracker.job_user_mismatch",
        "tracker.cancel_failed",
        "tracker.session_error",
        "session.finished",
    )
    START_BEFORE_RUNNING = True

    def __init__(self, role: SessionRole) -> None:
        super().__init__(role.backend, role.store, SessionState, role.metrics.sessions_active)
        self.store: SessionStore = role.store
        self.cfg, self.registrations, self.metrics = role.cfg, role.registrations, role.metrics
        self.activity = ActivityClock(
            role.store.redis, role.store.keys, role.cfg.idle.write_interval_seconds
        )

    async def restore_credentials(self) -> int:
        """Re-create the ACL user of every live session (they live in Redis's memory
        only); returns how many."""
        restored = 0
        for s in await self.store.get_many(await self.store.active_ids()):
            if s.acl_hash and not s.state.is_final:
                await self.registrations.restore_credentials(s.id, s.acl_hash)
                restored += 1
        return restored

    # ------------------------------------------------------------ outcomes

    async def finished(self, record: Session, status: JobStatus) -> Outcome[SessionState]:
        state, reason = finished_outcome(status, record)
        if state == SessionState.FAILED and record.state in STARTING_STATES:
            # The wrapper may have said why before its job ended (a failure record).
            failure = await self.registrations.failure(record.id)
            if failure:
                reason = f"desktop did not start: {failure}"
        return state, reason

    def stopped(self, record: Session) -> Outcome[SessionState]:
        return SessionState.ENDED, stopped_reason(record)

    async def queued(self, record: Session, status: JobStatus) -> Session | None:
        if record.ready_at is not None and record.state == SessionState.READY:
            return await self._requeued(record, status)
        await self._reject_early_registration(record, status)
        state, default = self.OUTCOMES.queued
        if status.state == JobState.SUSPENDED:
            default = "suspended"
        words = reason_words(status.reason)

        def queue_info(s: Session) -> bool:
            changed = s.expected_start_at != status.expected_start or s.queue_reason != words
            s.expected_start_at, s.queue_reason = status.expected_start, words
            return changed

        reason = f"queued: {status.reason or default}"
        return await self._observe(record, state, reason, status, also=queue_info)

    async def running(self, record: Session, status: JobStatus) -> Session | None:
        session = record
        try:
            reg = await self.registrations.load(session.id)
        except NodeReportedFailure as exc:
            return await self._fail_running(
                session, status, "session.node_failed", exc.error, "desktop did not start"
            )
        except RegistrationRejected as exc:
            return await self._fail_running(
                session, status, "registration.rejected", str(exc), "registration rejected"
            )
        if reg is not None:
            self._observe_usage(session, status, reg)
            updated = await self._apply(session, SessionState.READY, "desktop ready", status, reg)
            if updated is not None and updated.state == SessionState.READY:
                updated = await self._walltime(updated)
                updated = await self._idle(updated) if updated is not None else None
            return updated
        if session.state == SessionState.READY:
            # The wrapper removed its registration (it is shutting down: scancel, time
            # limit, logout: Slurm's final job state will say why) or its heartbeat stopped
            # (or Redis restarted: the wrapper re-registers within a heartbeat). After a
            # grace of one registration TTL the job is cancelled.
            return await self._missing_registration(session)
        started = status.start_time or session.started_at or utcnow()
        if utcnow() - started > timedelta(seconds=self.cfg.sessions.start_timeout_seconds):
            await self.cancel_in_slurm(session)
            return await self._finish(
                session, SessionState.FAILED, "desktop did not start in time", status
            )
        node = status.batch_host or status.nodes
        return await self._apply(session, SessionState.STARTING, f"starting on {node}", status)

    async def _requeued(self, session: Session, status: JobStatus) -> Session | None:
        """A READY desktop's job is queued again: Slurm requeued it (its node failed, or
        an admin's ``scontrol requeue``). Whatever starts next is another desktop (another
        node, port, password): this one ended. vizdesk submits desktops with
        ``--no-requeue``; this covers jobs submitted before that or requeued by hand."""
        node = session.node or "its node"
        reason = f"node failure ({node}): Slurm requeued the desktop's job"
        log.warning(
            "session.requeued", session=session.id, user=session.user,
            job_id=session.job_id, node=session.node, slurm_reason=status.reason,
        )  # fmt: skip
        await self.cancel_in_slurm(session)
        return await self._finish(session, SessionState.FAILED, reason, status)

    async def _fail_running(
        self, session: Session, status: JobStatus, event: str, error: str, what: str
    ) -> Session | None:
        """Log ``event``, cancel the running job and fail the session with ``what: error``."""
        log.warning(
            event, session=session.id, user=session.user, job_id=session.job_id, error=error
        )
        await self.cancel_in_slurm(session)
        return await self._finish(session, SessionState.FAILED, f"{what}: {error}", status)

    async def on_finished(
        self, record: Session, updated: Session | None, state: SessionState, reason: str
    ) -> None:
        await self.registrations.delete_credentials(record.id)
        keys = self.store.keys
        await self.store.redis.delete(keys.activity(record.id), keys.viewers(record.id))
        self.activity.forget(record.id)
        await publish_close(self.store.redis, keys, session_id=record.id, reason="desktop ended")
        self._forget_usage(record.id)
        if updated and state == SessionState.FAILED:
            self.metrics.session_failed(reason.split(":")[0].split(" (")[0])

    # ------------------------------------------------------------ registrations

    async def _reject_early_registration(self, session: Session, status: JobStatus) -> None:
        """A registration while Slurm says the job is not running is not trusted: drop it."""
        key = self.registrations.keys.registration(session.id)
        if await self.store.redis.exists(key):
            log.warning(
                "registration.rejected",
                session=session.id,
                user=session.user,
                job_id=session.job_id,
                error=f"job is {status.state.value}, not running",
            )
            await self.store.redis.delete(key)

    async def _missing_registration(self, session: Session) -> Session | None:
        now = utcnow()
        since = session.reg_missing_since
        grace = timedelta(seconds=self.cfg.sessions.registration_ttl_seconds)
        if since is None:

            def mark(s: Session) -> bool:
                if s.state != SessionState.READY or s.reg_missing_since is not None:
                    return False
                s.reg_missing_since = now
                return True

            log.info("session.registration_missing", session=session.id, user=session.user)
            return await self.store.update(session.id, mark)
        if now - since <= grace:
            return session
        reason = "desktop stopped responding (heartbeat lost" + (
            f" from {session.node})" if session.node else ")"
        )

        def stopping(s: Session) -> bool:
            if s.state != SessionState.READY:
                return False
            s.cancel_reason = reason
            return s.move(SessionState.STOPPING, reason)

        log.warning("session.heartbeat_lost", session=session.id, user=session.user)
        updated = await self.store.update(session.id, stopping)
        await self.cancel_in_slurm(updated or session)
        return updated

    async def _apply(
        self,
        session: Session,
        state: SessionState,
        reason: str,
        status: JobStatus,
        reg: Registration | None = None,
    ) -> Session | None:
        def registered(s: Session) -> bool:
            changed = False
            if status.expected_end is not None and s.ends_at != status.expected_end:
                s.ends_at, changed = status.expected_end, True
            if s.expected_start_at is not None or s.queue_reason is not None:
                s.expected_start_at, s.queue_reason, changed = None, None, True
            if reg is not None and s.port != reg.port:
                s.port, changed = reg.port, True
            if reg is not None and s.reg_missing_since is not None:
                s.reg_missing_since, changed = None, True
            return changed

        before = session.state
        updated = await self._observe(session, state, reason, status, also=registered)
        if updated and before != SessionState.READY and updated.state == SessionState.READY:
            elapsed = ((updated.ready_at or utcnow()) - updated.created_at).total_seconds()
            self.metrics.session_start.observe(elapsed)
            log.info(
                "session.ready",
                session=updated.id,
                user=updated.user,
                node=updated.node,
                start_seconds=round(elapsed, 3),
            )
        return updated

    # ------------------------------------------------------------ walltime and idle

    async def _publish(self, session: Session, kind: str, body: dict[str, Any]) -> None:
        """An event for the owner's streams (SSE ``kind``)."""
        event = {"type": kind, "user": session.user, kind: {"session_id": session.id, **body}}
        await self.store.redis.publish(self.store.keys.events_channel, json.dumps(event))
        if kind in ("idle_warning", "walltime_warning"):
            # and on the desktop itself: the node shows it at its next heartbeat
            await write_notice(self.store.redis, self.store.keys, session.id, kind, body)

    async def _walltime(self, session: Session) -> Session | None:
        """Warn once at each configured point before the time limit ends the desktop."""
        if session.ends_at is None:
            return session
        remaining = (session.ends_at - utcnow()).total_seconds()
        crossed = [
            p
            for p in self.cfg.sessions.walltime_warn_minutes
            if remaining <= p * 60 and p not in session.walltime_warned
        ]
        if not crossed:
            return session

        def mark(s: Session) -> bool:
            s.walltime_warned = sorted({*s.walltime_warned, *crossed}, reverse=True)
            return True

        updated = await self.store.update(session.id, mark)
        point = min(crossed)
        log.info("session.walltime_warning", session=session.id, user=session.user, point=point)
        await self._publish(
            session,
            "walltime_warning",
            {
                "ends_at": iso(session.ends_at),
                "remaining_seconds": max(0, round(remaining)),
                "point_minutes": point,
            },
        )
        return updated

    async def _idle(self, session: Session) -> Session | None:
        """Warn, then reclaim a desktop nobody gave input to (per partition config)."""
        policy = idle_policy(self.cfg, session.partition)
        if policy is None:
            return session
        warn_s, end_s = policy.warn_minutes * 60, policy.end_minutes * 60
        last = (await self.activity.last([session.id])).get(session.id, 0.0)
        if session.ready_at is not None:
            last = max(last, session.ready_at.timestamp())
        now = time.time()
        idle = now - last
        if end_s and idle >= end_s:
            return await self._reclaim(session, policy.end_minutes)
        warned = session.idle_warned_at
        if warn_s and idle >= warn_s and (warned is None or warned.timestamp() < last):
            at = utcnow()

            def mark(s: Session) -> bool:
                s.idle_warned_at = at
                return True

            updated = await self.store.update(session.id, mark)
            log.info("session.idle_warning", session=session.id, user=session.user)
            await self._publish(
                session,
                "idle_warning",
                {
                    "idle_seconds": round(idle),
                    "ends_in_seconds": round(end_s - idle) if end_s else None,
                },
            )
            return updated
        return session

    async def _reclaim(self, session: Session, minutes: float) -> Session | None:
        reason = f"idle for {minutes:g} min"
        now = utcnow()

        def stopping(s: Session) -> bool:
            if s.state != SessionState.READY:
                return False
            s.reclaim_reason = reason
            s.stop_requested_at = now
            return s.move(SessionState.STOPPING, reason)

        updated = await self.store.update(session.id, stopping)
        if updated is None or updated.reclaim_reason != reason:
            return updated
        log.warning("session.reclaimed", session=session.id, user=session.user, reason=reason)
        self.metrics.sessions_reclaimed.labels(reason="idle").inc()
        await self.cancel_in_slurm(updated)
        return updated

    # ------------------------------------------------------------ usage gauges

    def update_gauge(self, records: list[Session]) -> None:
        super().update_gauge(records)
        # a session that left the active set by any path takes its usage series along
        self.metrics.keep_sessions({r.id for r in records if not r.state.is_final})

    def _observe_usage(self, session: Session, status: JobStatus, reg: Registration) -> None:
        """The registration's usage numbers on /metrics (labels: hashed id and node)."""
        gpus = {
            str(g.index): (g.utilization, g.memory_used)
            for g in reg.gpus
            if isinstance(g, GpuUsage)  # what parse_registration returns: bounded
        }
        self.metrics.set_session_usage(
            session.id, status.batch_host or "", reg.cpu_percent, reg.memory_bytes, gpus
        )

    def _forget_usage(self, sid: str) -> None:
        self.metrics.forget_session(sid)
