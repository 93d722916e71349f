"""The tracker: one batched Slurm query per tick moves every active session's state.

Never one query per session, never per browser tab. If Slurm cannot be asked, nothing
changes (a slurmctld restart must not end anybody's desktop) and readiness says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter as TallyCounter
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import structlog
from redis.exceptions import RedisError

from .models import Session, SessionState, utcnow
from .registrations import NodeReportedFailure, Registration, RegistrationRejected
from .slurm.base import JobState, JobStatus, SlurmError

if TYPE_CHECKING:
    from .config import Config
    from .metrics import Metrics
    from .registrations import RegistrationManager
    from .slurm.base import SlurmBackend
    from .store import SessionStore

log = structlog.get_logger("vizdesk.tracker")


class TrackedSource(Protocol):
    """Something else whose Slurm jobs ride on the tracker's one query (e.g. batch jobs)."""

    async def active_job_ids(self) -> list[str]: ...

    async def apply(self, statuses: dict[str, JobStatus]) -> None:
        """Statuses of its active ids that Slurm knows; an absent id is gone from Slurm."""
        ...


CANCEL_RETRY = timedelta(seconds=10)
#: States in which the desktop has not come up yet (a node-reported failure explains an end).
STARTING_STATES = (SessionState.PENDING, SessionState.STARTING)


def stopped_reason(session: Session) -> str:
    """ "stopped by user" or "stopped by admin NAME", from the STOPPING reason."""
    by = session.reason.removeprefix("stop requested by ")
    return f"stopped by {by}" if by != session.reason else "stopped by user"


def finished_outcome(status: JobStatus, session: Session) -> tuple[SessionState, str]:
    """Final session state and reason for a job Slurm reports as finished."""
    st = status.state
    if session.stop_requested_at is not None:
        return SessionState.ENDED, stopped_reason(session)
    if session.cancel_reason and st == JobState.CANCELLED:
        return SessionState.FAILED, session.cancel_reason
    if st == JobState.CANCELLED:
        return SessionState.ENDED, "job cancelled outside vizdesk (scancel or admin)"
    if st == JobState.COMPLETED:
        if session.ready_at is None:
            return SessionState.FAILED, "job ended before the desktop was ready"
        return SessionState.ENDED, "desktop session ended"
    if st == JobState.TIMEOUT:
        return SessionState.ENDED, "time limit reached"
    if st == JobState.PREEMPTED:
        return SessionState.ENDED, "preempted by Slurm"
    if st == JobState.DEADLINE:
        return SessionState.ENDED, "deadline reached"
    if st == JobState.NODE_FAIL:
        return SessionState.FAILED, "node failure"
    if st == JobState.OUT_OF_MEMORY:
        return SessionState.FAILED, "out of memory"
    if st == JobState.BOOT_FAIL:
        return SessionState.FAILED, "node boot failure"
    code = f" (exit code {status.exit_code})" if status.exit_code is not None else ""
    return SessionState.FAILED, f"job failed{code}"


class Tracker:
    def __init__(
        self,
        cfg: Config,
        backend: SlurmBackend,
        store: SessionStore,
        registrations: RegistrationManager,
        metrics: Metrics,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.store = store
        self.registrations = registrations
        self.metrics = metrics
        self.slurm_ok: bool | None = None  # None until the first query
        self.last_tick: float = 0.0
        self.ticks = 0
        self.slurm_queries = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gauge_labels: dict[str, tuple[str, str, str]] = {}
        self._gpu_labels: dict[str, list[tuple[str, str, str, str]]] = {}
        self.sources: list[TrackedSource] = []
        self._redis_run_id: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="vizdesk-tracker")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def poke(self) -> None:
        """Run the next tick now (after a create or delete)."""
        self._wake.set()

    async def _run(self) -> None:
        interval = self.cfg.slurm.poll_interval_seconds
        while True:
            try:
                await self.tick()
            except RedisError as exc:
                self.metrics.redis_errors.inc()
                log.warning("tracker.redis_error", error=str(exc))
            except Exception:  # never let the loop die
                log.exception("tracker.error")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    async def tick(self) -> None:
        self.ticks += 1
        sessions = await self.store.get_many(await self.store.active_ids())
        await self._restore_acl_after_redis_restart(sessions)
        job_ids = [s.job_id for s in sessions if s.job_id]
        source_ids = [await src.active_job_ids() for src in self.sources]
        for ids in source_ids:
            job_ids.extend(ids)
        started = time.monotonic()
        try:
            self.slurm_queries += 1
            statuses = await self.backend.info_many(job_ids)
        except SlurmError as exc:
            if self.slurm_ok is not False:
                log.warning("tracker.slurm_unreachable", error=str(exc))
                await self._publish_status(False)
            self.slurm_ok = False
            self._update_gauges(sessions)
            return
        finally:
            self.last_tick = time.time()
        if self.slurm_ok is not True:
            if self.slurm_ok is False:
                log.info("tracker.slurm_back", seconds=round(time.monotonic() - started, 3))
            await self._publish_status(True)
        self.slurm_ok = True
        for src, ids in zip(self.sources, source_ids, strict=True):
            if ids:
                try:
                    await src.apply({j: statuses[j] for j in ids if j in statuses})
                except Exception:
                    log.exception("tracker.source_error", source=type(src).__name__)
        results = await asyncio.gather(
            *(self._advance(s, statuses.get(s.job_id) if s.job_id else None) for s in sessions),
            return_exceptions=True,
        )
        current: list[Session] = []
        for s, r in zip(sessions, results, strict=True):
            if isinstance(r, BaseException):
                log.error("tracker.session_error", session=s.id, error=repr(r))
                current.append(s)
            elif r is not None:
                current.append(r)
        self._update_gauges(current)

    async def _restore_acl_after_redis_restart(self, sessions: list[Session]) -> None:
        """ACL users live in Redis's memory only: when Redis's run id changes (or on the
        daemon's first tick), re-create them for every live session from the stored hash."""
        run_id = str((await self.store.redis.info("server")).get("run_id", ""))
        if run_id == self._redis_run_id:
            return
        restored = 0
        for s in sessions:
            if s.acl_hash and not s.state.is_final:
                await self.registrations.restore_credentials(s.id, s.acl_hash)
                restored += 1
        if self._redis_run_id is not None:
            log.warning("tracker.redis_restarted", acl_users_restored=restored)
        self._redis_run_id = run_id

    async def _publish_status(self, slurm_ok: bool) -> None:
        event = {"type": "status", "slurm": "ok" if slurm_ok else "unreachable"}
        await self.store.redis.publish(self.store.keys.events_channel, json.dumps(event))

    async def _advance(self, session: Session, status: JobStatus | None) -> Session | None:
        now = utcnow()
        if session.job_id is None:
            # Submission in flight (or the daemon died during it).
            if now - session.created_at > timedelta(seconds=120):
                return await self._finish(
                    session, SessionState.FAILED, "submission never completed"
                )
            return session
        if status is None:
            reason = (
                stopped_reason(session)
                if session.stop_requested_at
                else "job no longer known to Slurm"
            )
            return await self._finish(session, SessionState.ENDED, reason)
        if status.user and status.user != session.user:
            log.error("tracker.job_user_mismatch", session=session.id, job_user=status.user)
            await self._cancel(session)
            return await self._finish(session, SessionState.FAILED, "job belongs to another user")
        if status.state.is_finished:
            state, reason = finished_outcome(status, session)
            if state == SessionState.FAILED and session.state in STARTING_STATES:
                failure = await self.registrations.failure(session.id)
                if failure:
                    reason = f"desktop did not start: {failure}"
            return await self._finish(session, state, reason, status)
        if session.state == SessionState.STOPPING:
            if session.last_cancel_at is None or now - session.last_cancel_at > CANCEL_RETRY:
                await self._cancel(session)
            return session
        if status.state in (JobState.PENDING, JobState.SUSPENDED):
            await self._reject_early_registration(session, status)
            reason = status.reason or (
                "suspended" if status.state == JobState.SUSPENDED else "queued"
            )
            return await self._apply(session, SessionState.PENDING, f"queued: {reason}", status)
        if status.state.is_running:
            return await self._running(session, status)
        return session

    async def _running(self, session: Session, status: JobStatus) -> Session | None:
        try:
            reg = await self.registrations.load(session.id)
        except NodeReportedFailure as exc:
            log.warning(
                "session.node_failed",
                session=session.id,
                user=session.user,
                job_id=session.job_id,
                error=exc.error,
            )
            await self._cancel(session)
            return await self._finish(
                session, SessionState.FAILED, f"desktop did not start: {exc.error}", status
            )
        except RegistrationRejected as exc:
            log.warning(
                "registration.rejected",
                session=session.id,
                user=session.user,
                job_id=session.job_id,
                error=str(exc),
            )
            await self._cancel(session)
            return await self._finish(
                session, SessionState.FAILED, f"registration rejected: {exc}", status
            )
        if reg is not None:
            self._observe_usage(session, status, reg)
            return await self._apply(session, SessionState.READY, "desktop ready", status, reg)
        if session.state == SessionState.READY:
            # The wrapper removed its registration (it is shutting down: scancel, time
            # limit, logout: Slurm's final job state will say why) or its heartbeat stopped
            # (or Redis restarted: the wrapper re-registers within a heartbeat). After a
            # grace of one registration TTL the job is cancelled.
            return await self._missing_registration(session)
        started = status.start_time or session.started_at or utcnow()
        if utcnow() - started > timedelta(seconds=self.cfg.sessions.start_timeout_seconds):
            await self._cancel(session)
            return await self._finish(
                session, SessionState.FAILED, "desktop did not start in time", status
            )
        node = status.batch_host or status.nodes
        return await self._apply(session, SessionState.STARTING, f"starting on {node}", status)

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
        reason = "desktop stopped responding (heartbeat lost)"

        def stopping(s: Session) -> bool:
            if s.state != SessionState.READY:
                return False
            s.cancel_reason = reason
            return s.move(SessionState.STOPPING, reason)

        log.warning("session.heartbeat_lost", session=session.id, user=session.user)
        updated = await self.store.update(session.id, stopping)
        await self._cancel(updated or session)
        return updated

    async def _apply(
        self,
        session: Session,
        state: SessionState,
        reason: str,
        status: JobStatus,
        reg: Registration | None = None,
    ) -> Session | None:
        def mutate(s: Session) -> bool:
            if s.state.is_final or s.state == SessionState.STOPPING:
                return False
            changed = s.move(state, reason)
            node = status.batch_host or None
            if node and s.node != node:
                s.node, changed = node, True
            if status.start_time and s.started_at is None:
                s.started_at, changed = status.start_time, True
            if reg is not None and s.port != reg.port:
                s.port, changed = reg.port, True
            if reg is not None and s.reg_missing_since is not None:
                s.reg_missing_since, changed = None, True
            return changed

        before = session.state
        updated = await self.store.update(session.id, mutate)
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

    async def _finish(
        self,
        session: Session,
        state: SessionState,
        reason: str,
        status: JobStatus | None = None,
    ) -> Session | None:
        def mutate(s: Session) -> bool:
            if status and status.start_time and s.started_at is None:
                s.started_at = status.start_time
            return s.move(state, reason)

        updated = await self.store.update(session.id, mutate)
        await self.registrations.delete_credentials(session.id)
        self._forget_usage(session.id)
        if updated and state == SessionState.FAILED:
            self.metrics.session_failed(reason.split(":")[0].split(" (")[0])
        log.info(
            "session.finished",
            session=session.id,
            user=session.user,
            state=state.value,
            reason=reason,
        )
        return updated

    async def _cancel(self, session: Session) -> None:
        if not session.job_id:
            return
        try:
            await self.backend.cancel(session.job_id, session.user)
        except SlurmError as exc:
            log.warning("tracker.cancel_failed", session=session.id, error=str(exc))
            return
        now = utcnow()

        def mark(s: Session) -> bool:
            s.last_cancel_at = now
            return True

        await self.store.update(session.id, mark)

    def _observe_usage(self, session: Session, status: JobStatus, reg: Registration) -> None:
        node = status.batch_host or ""
        labels = (session.id, session.user, node)
        self._gauge_labels[session.id] = labels
        cpu = reg.raw.get("cpu_percent")
        mem = reg.raw.get("memory_bytes")
        if isinstance(cpu, (int, float)):
            self.metrics.session_cpu.labels(*labels).set(cpu)
        if isinstance(mem, (int, float)):
            self.metrics.session_mem.labels(*labels).set(mem)
        gpu_labels = []
        for gpu in reg.raw.get("gpus") or []:
            if not isinstance(gpu, dict):
                continue
            gl = (*labels, str(gpu.get("index", "?")))
            gpu_labels.append(gl)
            if isinstance(gpu.get("utilization"), (int, float)):
                self.metrics.session_gpu_util.labels(*gl).set(gpu["utilization"])
            if isinstance(gpu.get("memory_used"), (int, float)):
                self.metrics.session_gpu_mem.labels(*gl).set(gpu["memory_used"])
        self._gpu_labels[session.id] = gpu_labels

    def _forget_usage(self, sid: str) -> None:
        labels = self._gauge_labels.pop(sid, None)
        if labels:
            for g in (self.metrics.session_cpu, self.metrics.session_mem):
                with contextlib.suppress(KeyError):
                    g.remove(*labels)
        for gl in self._gpu_labels.pop(sid, []):
            for g in (self.metrics.session_gpu_util, self.metrics.session_gpu_mem):
                with contextlib.suppress(KeyError):
                    g.remove(*gl)

    def _update_gauges(self, sessions: list[Session]) -> None:
        tally = TallyCounter(s.state.value for s in sessions if not s.state.is_final)
        for state in SessionState:
            if not state.is_final:
                self.metrics.sessions_active.labels(state=state.value).set(
                    tally.get(state.value, 0)
                )
