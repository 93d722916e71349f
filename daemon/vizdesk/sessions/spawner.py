"""The spawner role: turn a validated request into a Slurm job, and stop it again.

Like JupyterHub's spawner, this is the one place that knows how a desktop is started;
the API authenticates and validates, the tracker follows the job, the proxy connects.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from ..auth.policy import check_count
from ..contract.jobenv import session_job_env
from ..core.store import LimitReached
from ..core.submit import SubmitError, submit_failure, submit_request, take_job_id
from ..core.userdirs import USER_PLACEHOLDER, ensure_user_dir
from ..slurm.base import SlurmError, SlurmUnavailable, StartEstimate
from .model import Session, SessionState, new_session_id
from .registrations import password_hash
from .role import SessionRole

if TYPE_CHECKING:
    from ..auth.types import Identity
    from .request import SessionRequest

log = structlog.get_logger("vizdesk.spawner")

FINAL_STATES = [s.value for s in SessionState if s.is_final]


@dataclass(eq=False)
class Spawner(SessionRole):
    """Role: start and stop desktops.

    ``create`` makes the session record and its ACL user and submits the job script as
    the caller (credentials only in the job's environment); ``stop`` asks Slurm to
    cancel. Override ``job_env`` to hand a job more (keeping the contract's names).
    """

    def job_env(self, session: Session, acl_user: str, acl_password: str) -> dict[str, str]:
        """What the job gets in its environment (never on a command line)."""
        return session_job_env(
            session_id=session.id,
            redis_url=self.cfg.node_redis_url,
            redis_username=acl_user,
            redis_password=acl_password,
            reg_key=self.registrations.keys.registration(session.id),
            reg_ttl=self.cfg.sessions.registration_ttl_seconds,
            geometry=session.geometry,
            command=self.cfg.node.vizdesk_command or "vizdesk",
            config_path=self.cfg.path,
            image=session.image_path,
            sentinels=self.cfg.redis.node_sentinels(),
            sentinel_master=self.cfg.redis.sentinel_master,
        )

    async def create(
        self,
        identity: Identity,
        req: SessionRequest,
        image_path: str | None = None,
        *,
        max_sessions: int | None = None,
    ) -> Session:
        """Store the session and submit its job. With ``max_sessions``, the record is only
        stored while the caller has fewer live sessions (counted atomically in Redis, so
        parallel requests cannot exceed it); otherwise 403 ``policy_violation``."""
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
        output = await self._output_path(identity, session.id)  # before anything is stored
        acl_user, acl_password = await self.registrations.create_credentials(session.id)
        session.acl_hash = password_hash(acl_password)
        try:
            if max_sessions is None:
                await self.store.create(session)
            else:
                await self.store.create_within(session, max_sessions, FINAL_STATES)
        except LimitReached as exc:
            await self.registrations.delete_credentials(session.id)
            check_count(exc.live, exc.limit, "session", "max_sessions")
            raise
        except BaseException:
            await self.registrations.delete_credentials(session.id)
            raise
        submit = submit_request(
            session,
            script=self.cfg.sessions.jobscript,
            job_name=f"{self.cfg.slurm.job_name_prefix}-{session.id}",
            workdir=identity.home or self.cfg.sessions.workdir,
            output=output,
            env=self.job_env(session, acl_user, acl_password),
        )
        # A desktop is never requeued: when its node dies, Slurm would otherwise put the
        # job back to PENDING under the same id, and a new VNC server on another node
        # (new port, new password) is not the desktop the user had open.
        submit = dataclasses.replace(submit, requeue=False)
        try:
            job_id = await self.backend.submit(submit)
        except SlurmError as exc:
            status, code, reason = submit_failure(exc)
            if reason is None:  # misconfiguration (job script, submit prefix): logged in full
                log.error("session.submit_error", session=session.id, error=str(exc))
                reason = "submission failed (see the daemon log)"
            failed = await self._fail(session.id, reason)
            self.metrics.session_failed(
                reason="submit_rejected" if code == "slurm_rejected" else "slurm_down"
            )
            raise SubmitError(status, code, reason, failed or session) from exc
        except BaseException:
            await self._fail(session.id, "submission failed")
            raise

        stored = await self.store.update(session.id, take_job_id(job_id))
        self.metrics.sessions_created.inc()
        log.info("session.submitted", session=session.id, user=identity.user, job_id=job_id)
        return stored or session

    async def estimate(
        self, identity: Identity, req: SessionRequest, image_path: str | None = None
    ) -> StartEstimate:
        """When Slurm would start this desktop (``sbatch --test-only`` as the caller);
        nothing is stored or submitted. Raises what ``SlurmBackend.test_only`` raises."""
        probe = Session(
            id="0" * 16,
            user=identity.user,
            partition=req.partition,
            cpus=req.cpus,
            memory_gb=req.memory_gb,
            gpus=req.gpus,
            time_limit_minutes=req.time_limit_minutes,
            geometry=req.geometry,
            image=req.image,
            image_path=image_path,
        )
        submit = submit_request(
            probe,
            script=self.cfg.sessions.jobscript,
            job_name=f"{self.cfg.slurm.job_name_prefix}-estimate",
            workdir=identity.home or self.cfg.sessions.workdir,
            output="",
            env={},
        )
        return await self.backend.test_only(submit)

    async def _output_path(self, identity: Identity, sid: str) -> str:
        """Slurm's --output: in ``sessions.output_dir`` (per user with ``{user}``: created
        0700 for the user and checked), else Slurm's default (the job's own directory)."""
        out = self.cfg.sessions.output_dir
        if not out:
            return ""
        if USER_PLACEHOLDER in out:
            out = await asyncio.to_thread(
                ensure_user_dir, out, identity.user, identity.uid, identity.gid
            )
        return f"{out.rstrip('/')}/vizdesk-{sid}-%j.out"

    async def _fail(self, sid: str, reason: str) -> Session | None:
        await self.registrations.delete_credentials(sid)
        return await self.store.update(sid, lambda s: s.move(SessionState.FAILED, reason))

    async def stop(self, session: Session, by: str) -> Session:
        """Ask Slurm to cancel; the tracker moves STOPPING → ENDED when the job is gone."""
        if session.state.is_final:
            return session
        updated = await self.store.request_stop(
            session, SessionState.STOPPING, f"stop requested by {by}"
        )
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
