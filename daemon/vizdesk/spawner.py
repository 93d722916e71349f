"""The spawner role: turn a validated request into a Slurm job, and stop it again.

Like JupyterHub's spawner, this is the one place that knows how a desktop is started;
the API authenticates and validates, the tracker follows the job, the proxy connects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from .models import Session, SessionState, new_session_id, utcnow
from .registrations import password_hash
from .slurm.base import SlurmBackend, SlurmError, SlurmRejected, SlurmUnavailable, SubmitRequest

if TYPE_CHECKING:
    from .api.validation import SessionRequest
    from .auth.types import Identity
    from .config import Config
    from .metrics import Metrics
    from .registrations import RegistrationManager
    from .store import SessionStore

log = structlog.get_logger("vizdesk.spawner")


class SpawnError(Exception):
    """Slurm refused or could not be reached; the session was marked FAILED."""

    def __init__(self, status: int, code: str, message: str, session: Session) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.session = session


class Spawner:
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

    def job_env(self, session: Session, acl_user: str, acl_password: str) -> dict[str, str]:
        """What the job gets in its environment (never on a command line)."""
        env = {
            "VIZDESK_SESSION_ID": session.id,
            "VIZDESK_REDIS_URL": self.cfg.node_redis_url,
            "VIZDESK_REDIS_USERNAME": acl_user,
            "VIZDESK_REDIS_PASSWORD": acl_password,
            "VIZDESK_REG_KEY": self.registrations.keys.registration(session.id),
            "VIZDESK_REG_TTL": str(self.cfg.sessions.registration_ttl_seconds),
            "VIZDESK_GEOMETRY": session.geometry,
            "VIZDESK_COMMAND": self.cfg.node.vizdesk_command or "vizdesk",
        }
        if self.cfg.path:
            env["VIZDESK_CONFIG"] = self.cfg.path
        if session.image_path:
            env["VIZDESK_IMAGE"] = session.image_path
        return env

    async def create(
        self,
        identity: Identity,
        req: SessionRequest,
        image_path: str | None = None,
    ) -> Session:
        session = Session(
            id=new_session_id(),
            user=identity.user,
            partition=req.partition,
            cpus=req.cpus,
            memory_gb=req.memory_gb,
            gpus=req.gpus,
            time_limit_minutes=req.time_limit_minutes,
            geometry=req.geometry,
            image=req.image,
            image_path=image_path,
            reason="submitting to Slurm",
        )
        acl_user, acl_password = await self.registrations.create_credentials(session.id)
        session.acl_hash = password_hash(acl_password)
        try:
            await self.store.create(session)
        except BaseException:
            await self.registrations.delete_credentials(session.id)
            raise
        submit = SubmitRequest(
            user=identity.user,
            script=self.cfg.sessions.jobscript,
            job_name=f"{self.cfg.slurm.job_name_prefix}-{session.id}",
            cpus=req.cpus,
            memory_mb=req.memory_gb * 1024,
            time_limit_minutes=req.time_limit_minutes,
            gpus=req.gpus,
            partition=req.partition,
            workdir=identity.home or self.cfg.sessions.workdir,
            output=self._output_path(session.id),
            env=self.job_env(session, acl_user, acl_password),
        )
        try:
            job_id = await self.backend.submit(submit)
        except SlurmError as exc:
            rejected = isinstance(exc, SlurmRejected)
            if rejected:
                reason = f"Slurm refused the job: {exc}"
            elif isinstance(exc, SlurmUnavailable):
                reason = "scheduler unreachable"
            else:  # misconfiguration (job script, submit prefix): logged in full
                log.error("session.submit_error", session=session.id, error=str(exc))
                reason = "submission failed (see the daemon log)"
            failed = await self._fail(session.id, reason)
            self.metrics.session_failed(reason="submit_rejected" if rejected else "slurm_down")
            raise SpawnError(
                400 if rejected else 503,
                "slurm_rejected" if rejected else "scheduler_unreachable",
                reason,
                failed or session,
            ) from exc
        except BaseException:
            await self._fail(session.id, "submission failed")
            raise

        def set_job(s: Session) -> bool:
            s.job_id = job_id
            if s.reason == "submitting to Slurm":
                s.reason = "queued in Slurm"
            return True

        stored = await self.store.update(session.id, set_job)
        self.metrics.sessions_created.inc()
        log.info("session.submitted", session=session.id, user=identity.user, job_id=job_id)
        return stored or session

    def _output_path(self, sid: str) -> str:
        out = self.cfg.sessions.output_dir
        return f"{out.rstrip('/')}/vizdesk-{sid}-%j.out" if out else ""

    async def _fail(self, sid: str, reason: str) -> Session | None:
        await self.registrations.delete_credentials(sid)
        return await self.store.update(sid, lambda s: s.move(SessionState.FAILED, reason))

    async def stop(self, session: Session, by: str) -> Session:
        """Ask Slurm to cancel; the tracker moves STOPPING → ENDED when the job is gone."""
        if session.state.is_final:
            return session
        now = utcnow()

        def mark(s: Session) -> bool:
            if s.state.is_final:
                return False
            s.stop_requested_at = s.stop_requested_at or now
            s.last_cancel_at = now
            return s.move(SessionState.STOPPING, f"stop requested by {by}") or True

        updated = await self.store.update(session.id, mark) or session
        if updated.job_id:
            try:
                await self.backend.cancel(updated.job_id, updated.user)
            except SlurmUnavailable:
                log.warning("session.cancel_deferred", session=session.id, job_id=updated.job_id)
        else:
            updated = (
                await self.store.update(
                    session.id, lambda s: s.move(SessionState.ENDED, f"stopped by {by}")
                )
                or updated
            )
        return updated
