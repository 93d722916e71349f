"""The batch job manager: validate → resolve → submit, list, cancel, and track.

Requests are checked strictly (every field typed and ranged, the template's parameters
typed, the image resolved through the catalog), then submitted as the caller with the
fixed launcher script of :mod:`.script` and everything else in the job's environment.
The manager is a :class:`~vizdesk.tracker.TrackedSource`: its Slurm jobs ride on the
tracker's ONE batched query per tick, together with the desktop sessions.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from ..api.validation import NAME_RE, ValidationError, reject_unknown, require_object
from ..auth.types import AuthError
from ..models import utcnow
from ..slurm.base import (
    JobState,
    JobStatus,
    SlurmError,
    SlurmRejected,
    SlurmUnavailable,
    SubmitRequest,
)
from .model import BatchJob, BatchJobState, final_outcome, new_job_id
from .script import default_script_dir, install_script, job_environment
from .templates import (
    APP_RE,
    MODES,
    RESOURCES,
    Template,
    TemplateRegistry,
    param_env,
    validate_parameters,
)

if TYPE_CHECKING:
    from ..auth.types import Identity
    from ..config import Config
    from ..metrics import Metrics
    from ..slurm.base import SlurmBackend
    from ..tracker import TrackedSource
    from .store import JobStore

log = structlog.get_logger("vizdesk.jobs")

JOB_FIELDS = frozenset(
    {"template", "parameters", "image", "command", "app", "mode", "partition", *RESOURCES}
)
TEMPLATE_ONLY = frozenset({"parameters"})
ADHOC_ONLY = ("image", "command", "app", "mode")
SUBMIT_TIMEOUT = timedelta(seconds=120)
CANCEL_RETRY = timedelta(seconds=10)


class JobSubmitError(Exception):
    """Slurm refused the job or could not be reached; the job was marked FAILED."""

    def __init__(self, status: int, code: str, message: str, job: BatchJob) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.job = job


@dataclass(frozen=True)
class JobRequest:
    """A POST body, typed and ranged (nothing resolved yet)."""

    template: str | None = None
    parameters: dict[str, Any] | None = None
    image: str | None = None
    command: tuple[str, ...] | None = None
    app: str | None = None
    mode: str | None = None
    partition: str | None = None
    cpus: int | None = None
    memory_gb: int | None = None
    gpus: int | None = None
    time_limit_minutes: int | None = None


@dataclass(frozen=True)
class JobSpec:
    """Everything a submission needs, resolved and checked."""

    template: str | None
    image: str | None
    image_path: str | None
    app: str | None
    mode: str
    argv: tuple[str, ...]
    values: dict[str, Any]
    env: dict[str, str]  # VIZDESK_PARAM_* of the values
    partition: str
    cpus: int
    memory_gb: int
    gpus: int
    time_limit_minutes: int


def _opt_int(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(name, f"{name} must be an integer")
    if not lo <= value <= hi:
        raise ValidationError(name, f"{name} must be between {lo} and {hi}")
    return value


def _opt_name(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValidationError(
            name, f"{name} must be 1-64 characters of letters, digits, '_', '.', '-'"
        )
    return value


def check_argv(argv: Any, cfg: Config, field: str, *, allow_empty: bool) -> tuple[str, ...]:
    """A command line: a list of strings within the configured size limits, no NUL."""
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValidationError(field, f"{field} must be a list of strings (an argv)")
    if not argv and not allow_empty:
        raise ValidationError(field, f"{field} must not be empty")
    limits = cfg.jobs
    if len(argv) > limits.max_command_args:
        raise ValidationError(field, f"{field} has more than {limits.max_command_args} elements")
    size = sum(len(a.encode()) for a in argv)
    if size > limits.max_command_bytes:
        raise ValidationError(field, f"{field} is {size} bytes; at most {limits.max_command_bytes}")
    if any("\x00" in a for a in argv):
        raise ValidationError(field, f"{field} must not contain NUL characters")
    return tuple(argv)


def validate_job_request(body: Any, cfg: Config) -> JobRequest:
    """Type-check a POST /api/v1/jobs body; every error names its field."""
    body = require_object(body)
    reject_unknown(body, JOB_FIELDS)
    s = cfg.sessions
    template = body.get("template")
    if template is not None and (not isinstance(template, str) or not NAME_RE.fullmatch(template)):
        raise ValidationError("template", "template must be a template name")
    if template is not None:
        for name in ADHOC_ONLY:
            if body.get(name) is not None:
                raise ValidationError(name, f"{name} is set by the template; leave it out")
    else:
        if body.get("parameters") is not None:
            raise ValidationError("parameters", "parameters need a template")
        if body.get("image") is None and not cfg.jobs.allow_host_commands:
            raise ValidationError("image", "give a template, or an image and a command")
    image = body.get("image")
    if image is not None and (not isinstance(image, str) or not 0 < len(image) <= 256):
        raise ValidationError("image", "image must be an image catalog id or name")
    mode = body.get("mode")
    if mode is not None and mode not in MODES:
        raise ValidationError("mode", "mode must be exec or run")
    app = body.get("app")
    if app is not None and (not isinstance(app, str) or not APP_RE.fullmatch(app)):
        raise ValidationError("app", "app must be 1-64 letters, digits, '_', '.', '-'")
    if app is not None and image is None:
        raise ValidationError("app", "an app needs an image")
    command: tuple[str, ...] | None = None
    if template is None:
        if mode == "run" and image is None:
            raise ValidationError("mode", "mode run needs an image")
        raw = body.get("command")
        if raw is None and mode != "run":
            raise ValidationError("command", "command is required (an argv list)")
        command = check_argv(
            raw if raw is not None else [], cfg, "command", allow_empty=mode == "run"
        )
    parameters = body.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ValidationError("parameters", "parameters must be a JSON object")
    return JobRequest(
        template=template,
        parameters=parameters,
        image=image,
        command=command,
        app=app,
        mode=mode,
        partition=_opt_name(body, "partition"),
        cpus=_opt_int(body, "cpus", 1, s.max_cpus),
        memory_gb=_opt_int(body, "memory_gb", 1, s.max_memory_gb),
        gpus=_opt_int(body, "gpus", 0, s.max_gpus),
        time_limit_minutes=_opt_int(body, "time_limit_minutes", 1, s.max_time_limit_minutes),
    )


def read_tail(path: str, uid: int, max_bytes: int) -> tuple[bytes, int]:
    """The last ``max_bytes`` of a job's output file and its size (blocking).

    The daemon may run as root and the path is in a place the user controls, so the
    file is opened without following a symlink and must be a regular file owned by the
    job's user (a link to someone else's file is refused).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            raise PermissionError(f"{path}: not a regular file owned by the job's user")
        start = max(0, st.st_size - max_bytes)
        os.lseek(fd, start, os.SEEK_SET)
        chunks = []
        left = st.st_size - start
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st.st_size
    finally:
        os.close(fd)


class JobManager:
    """Create/list/get/cancel batch jobs; a tracked source for the tracker."""

    def __init__(
        self,
        cfg: Config,
        backend: SlurmBackend,
        store: JobStore,
        templates: TemplateRegistry | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.store = store
        self.templates = templates or TemplateRegistry(cfg)
        self.metrics = metrics
        self._script: str | None = None
        self._script_lock = asyncio.Lock()
        self._queried: set[str] = set()  # Slurm ids in the tracker's current query

    # ------------------------------------------------------------ resolve a request

    async def resolve(self, identity: Identity, req: JobRequest, images: Any) -> JobSpec:
        """Template + parameters + resources + image → a :class:`JobSpec` (400 on errors)."""
        tmpl: Template | None = None
        if req.template is not None:
            tmpl = await self.templates.get(req.template)
            if not tmpl.usable_by(identity.groups):
                raise AuthError(
                    403,
                    "policy_violation",
                    f"template {tmpl.name!r} is not available to your groups",
                    field="template",
                )
        values = validate_parameters(tmpl, req.parameters, self.cfg) if tmpl else {}
        res = self._resources(tmpl, req)
        partition = (
            req.partition
            or (tmpl.partition if tmpl else None)
            or (self.cfg.slurm.default_partition or None)
        )
        if partition is None:
            raise ValidationError("partition", "partition is required (no default configured)")
        offered = self.cfg.slurm.partitions
        if offered and partition not in offered:
            raise ValidationError(
                "partition", f"unknown partition {partition!r}; offered: {offered}"
            )
        image_ref = tmpl.image if tmpl else req.image
        app = tmpl.app if tmpl else req.app
        mode = (tmpl.mode if tmpl else req.mode) or "exec"
        image_path: str | None = None
        if image_ref is not None:
            # The catalog name (not the id the caller may have sent) is what policy matches.
            image_ref, image_path = await self._resolve_image(
                images, image_ref, app, from_template=tmpl
            )
        if tmpl is not None:
            argv = check_argv(tmpl.argv(values), self.cfg, "parameters", allow_empty=mode == "run")
        else:
            argv = req.command or ()
        return JobSpec(
            template=tmpl.name if tmpl else None,
            image=image_ref,
            image_path=image_path,
            app=app,
            mode=mode,
            argv=argv,
            values=values,
            env=param_env(tmpl, values),
            partition=partition,
            **res,
        )

    def _resources(self, tmpl: Template | None, req: JobRequest) -> dict[str, int]:
        s = self.cfg.sessions
        out: dict[str, int] = {}
        fallback = {
            "cpus": (1, s.max_cpus),
            "memory_gb": (s.default_memory_gb, s.max_memory_gb),
            "gpus": (0, s.max_gpus),
            "time_limit_minutes": (s.default_time_limit_minutes, s.max_time_limit_minutes),
        }
        for key in RESOURCES:
            asked = getattr(req, key)
            if tmpl is not None:
                r = tmpl.resources[key]
                default, hi = r.default, r.max
            else:
                default, hi = fallback[key]
            value = default if asked is None else asked
            if value > hi:
                where = f" for template {tmpl.name!r}" if tmpl else ""
                raise ValidationError(key, f"{key} must be at most {hi}{where}")
            out[key] = value
        return out

    async def _resolve_image(
        self, images: Any, ref: str, app: str | None, from_template: Template | None
    ) -> tuple[str, str]:
        """Catalog id or name → (catalog name, .sif path); unknown → 400 naming the field."""
        field = "template" if from_template else "image"
        where = f" (template {from_template.name!r})" if from_template else ""
        path: str | None = None
        name = ref
        apps: Any = None
        if images is not None:
            image = await images.resolve(ref)
            if image is not None:
                path, apps = str(image.path), getattr(image, "apps", None)
                name = str(getattr(image, "name", ref))
        elif ref in self.cfg.sessions.images:
            path = self.cfg.sessions.images[ref]
        if path is None:
            raise ValidationError(field, f"unknown image {ref!r}{where}", "unknown_image")
        if app is not None and apps is not None and app not in apps:
            raise ValidationError(
                "template" if from_template else "app",
                f"image {ref!r} has no app {app!r}{where}",
                "unknown_app",
            )
        return name, path

    # ------------------------------------------------------------ submit

    async def script_path(self) -> str:
        async with self._script_lock:
            if self._script is None:
                directory = self.cfg.jobs.script_dir or default_script_dir()
                self._script = await asyncio.to_thread(install_script, directory)
            return self._script

    def output_path(self, identity: Identity, jid: str) -> str:
        base = self.cfg.jobs.output_dir.replace("{user}", identity.user)
        base = base or identity.home or self.cfg.sessions.workdir
        return f"{base.rstrip('/')}/vizdesk-job-{jid}.out"

    async def create(self, identity: Identity, spec: JobSpec) -> BatchJob:
        jid = new_job_id()
        job = BatchJob(
            id=jid,
            user=identity.user,
            partition=spec.partition,
            cpus=spec.cpus,
            memory_gb=spec.memory_gb,
            gpus=spec.gpus,
            time_limit_minutes=spec.time_limit_minutes,
            template=spec.template,
            image=spec.image,
            image_path=spec.image_path,
            app=spec.app,
            mode=spec.mode,
            command=list(spec.argv),
            parameters=dict(spec.values),
            output_path=self.output_path(identity, jid),
            reason="submitting to Slurm",
        )
        await self.store.create(job)
        try:
            script = await self.script_path()
            env = job_environment(
                job_id=jid,
                argv=spec.argv,
                params=spec.env,
                values=spec.values,
                image_path=spec.image_path,
                mode=spec.mode,
                app=spec.app,
                gpus=spec.gpus,
                apptainer=self.cfg.node.apptainer,
                binds=self.cfg.node.apptainer_binds,
                unsquash=self.cfg.node.apptainer_unsquash,
            )
            submit = SubmitRequest(
                user=identity.user,
                script=script,
                job_name=f"{self.cfg.slurm.job_name_prefix}-job-{jid}",
                cpus=spec.cpus,
                memory_mb=spec.memory_gb * 1024,
                time_limit_minutes=spec.time_limit_minutes,
                gpus=spec.gpus,
                partition=spec.partition,
                workdir=identity.home or self.cfg.sessions.workdir,
                output=job.output_path,
                env=env,
            )
            job_id = await self.backend.submit(submit)
        except (SlurmRejected, SlurmUnavailable) as exc:
            rejected = isinstance(exc, SlurmRejected)
            reason = f"Slurm refused the job: {exc}" if rejected else "scheduler unreachable"
            failed = await self.store.update(jid, lambda j: j.move(BatchJobState.FAILED, reason))
            raise JobSubmitError(
                400 if rejected else 503,
                "slurm_rejected" if rejected else "scheduler_unreachable",
                reason,
                failed or job,
            ) from exc
        except BaseException:
            await self.store.update(
                jid, lambda j: j.move(BatchJobState.FAILED, "submission failed")
            )
            raise

        def set_job(j: BatchJob) -> bool:
            j.job_id = job_id
            if j.reason == "submitting to Slurm":
                j.reason = "queued in Slurm"
            return True

        stored = await self.store.update(jid, set_job) or job
        if stored.stop_requested_at is not None:  # cancelled while being submitted
            await self._cancel_in_slurm(stored)
        log.info(
            "job.submitted",
            job=jid,
            user=identity.user,
            job_id=job_id,
            template=spec.template,
            image=spec.image,
        )
        return stored

    # ------------------------------------------------------------ read

    async def get(self, jid: str) -> BatchJob | None:
        return await self.store.get(jid)

    async def list_user(self, user: str) -> list[BatchJob]:
        return await self.store.list_user(user)

    async def list_all(self) -> list[BatchJob]:
        return await self.store.list_all()

    async def count_active(self, user: str) -> int:
        return await self.store.count_active_for_user(user)

    async def read_output(self, job: BatchJob, max_bytes: int) -> tuple[bytes, int] | None:
        """Tail of the job's output file, read safely (None when it does not exist yet)."""
        if not job.output_path or "%" in job.output_path:
            return None
        try:
            uid = (await asyncio.to_thread(pwd.getpwnam, job.user)).pw_uid
            return await asyncio.to_thread(read_tail, job.output_path, uid, max_bytes)
        except FileNotFoundError:
            return None
        except (KeyError, OSError) as exc:
            log.warning("job.output_refused", job=job.id, user=job.user, error=str(exc))
            raise PermissionError("output file not readable") from exc

    # ------------------------------------------------------------ cancel

    async def cancel(self, job: BatchJob, by: str) -> BatchJob:
        """Ask Slurm to cancel; the tracker moves CANCELLING → CANCELLED when it is gone."""
        if job.state.is_final:
            return job
        now = utcnow()

        def mark(j: BatchJob) -> bool:
            if j.state.is_final:
                return False
            j.stop_requested_at = j.stop_requested_at or now
            j.last_cancel_at = now
            j.move(BatchJobState.CANCELLING, f"cancel requested by {by}")
            return True

        updated = await self.store.update(job.id, mark) or job
        if updated.job_id and not updated.state.is_final:
            await self._cancel_in_slurm(updated)
        return updated

    async def _cancel_in_slurm(self, job: BatchJob) -> None:
        if not job.job_id:
            return
        try:
            await self.backend.cancel(job.job_id, job.user)
        except SlurmError as exc:
            log.warning("job.cancel_deferred", job=job.id, job_id=job.job_id, error=str(exc))

    # ------------------------------------------------------------ tracked source

    async def active_job_ids(self) -> list[str]:
        """Slurm ids of the active jobs (the tracker's one query covers them)."""
        jobs = await self.store.get_many(await self.store.active_ids())
        now = utcnow()
        ids: list[str] = []
        for job in jobs:
            if job.job_id:
                ids.append(job.job_id)
            elif now - job.created_at > SUBMIT_TIMEOUT:
                await self.store.update(
                    job.id, lambda j: j.move(BatchJobState.FAILED, "submission never completed")
                )
        self._queried = set(ids)
        return ids

    async def apply(self, statuses: dict[str, JobStatus]) -> None:
        """Move every active job according to Slurm's answer (absent = gone from Slurm).

        Only the jobs whose ids were in the query count: one submitted while the query
        ran is absent from the answer without being gone.
        """
        queried, self._queried = self._queried, set()
        jobs = await self.store.get_many(await self.store.active_ids())
        results = await asyncio.gather(
            *(self._advance(j, statuses.get(j.job_id)) for j in jobs if j.job_id in queried),
            return_exceptions=True,
        )
        current: list[BatchJob] = []
        for job, r in zip([j for j in jobs if j.job_id in queried], results, strict=True):
            if isinstance(r, BaseException):
                log.error("job.track_error", job=job.id, error=repr(r))
                current.append(job)
            elif r is not None:
                current.append(r)
        current += [j for j in jobs if j.job_id not in queried]
        self._update_gauge(current)

    def _update_gauge(self, jobs: list[BatchJob]) -> None:
        if self.metrics is None:
            return
        tally = Counter(j.state.value for j in jobs if not j.state.is_final)
        for state in BatchJobState:
            if not state.is_final:
                self.metrics.jobs.labels(state=state.value).set(tally.get(state.value, 0))

    async def _advance(self, job: BatchJob, status: JobStatus | None) -> BatchJob | None:
        now = utcnow()
        if status is None:
            if job.stop_requested_at is not None:
                return await self._finish(job, BatchJobState.CANCELLED, "cancelled by request")
            return await self._finish(
                job, BatchJobState.FAILED, "job vanished from Slurm; its outcome is unknown"
            )
        if status.user and status.user != job.user:
            log.error("job.user_mismatch", job=job.id, job_user=status.user)
            await self._cancel_in_slurm(job)
            return await self._finish(job, BatchJobState.FAILED, "job belongs to another user")
        if status.state.is_finished:
            state, reason = final_outcome(status, job.stop_requested_at is not None)
            return await self._finish(job, state, reason, status)
        if job.state == BatchJobState.CANCELLING:
            if job.last_cancel_at is None or now - job.last_cancel_at > CANCEL_RETRY:
                await self._cancel_in_slurm(job)

                def mark(j: BatchJob) -> bool:
                    j.last_cancel_at = now
                    return True

                await self.store.update(job.id, mark)
            return await self._observe(job, None, "", status)
        if status.state in (JobState.PENDING, JobState.SUSPENDED):
            why = status.reason or ("suspended" if status.state == JobState.SUSPENDED else "")
            return await self._observe(
                job, BatchJobState.QUEUED, f"queued: {why or 'waiting'}", status
            )
        if status.state.is_running:
            node = status.batch_host or status.nodes
            return await self._observe(job, BatchJobState.RUNNING, f"running on {node}", status)
        return job

    async def _observe(
        self, job: BatchJob, state: BatchJobState | None, reason: str, status: JobStatus
    ) -> BatchJob | None:
        def mutate(j: BatchJob) -> bool:
            if j.state.is_final:
                return False
            changed = False
            if state is not None and j.state != BatchJobState.CANCELLING:
                changed = j.move(state, reason)
            node = status.batch_host or None
            if node and j.node != node:
                j.node, changed = node, True
            if status.start_time and j.started_at is None and status.state.is_running:
                j.started_at, changed = status.start_time, True
            return changed

        return await self.store.update(job.id, mutate)

    async def _finish(
        self,
        job: BatchJob,
        state: BatchJobState,
        reason: str,
        status: JobStatus | None = None,
    ) -> BatchJob | None:
        def mutate(j: BatchJob) -> bool:
            if status is not None:
                if status.batch_host and not j.node:
                    j.node = status.batch_host
                if status.start_time and j.started_at is None and status.batch_host:
                    j.started_at = status.start_time
                j.exit_code = status.exit_code
                j.signal = status.signal
                if status.end_time and j.ended_at is None and not j.state.is_final:
                    j.ended_at = status.end_time
            return j.move(state, reason)

        updated = await self.store.update(job.id, mutate)
        if updated is None:
            await self.store.forget_active(job.id)
        log.info(
            "job.finished",
            job=job.id,
            user=job.user,
            state=state.value,
            reason=reason,
            exit_code=updated.exit_code if updated else None,
        )
        return updated


if TYPE_CHECKING:

    def _is_tracked_source(manager: JobManager) -> TrackedSource:
        return manager  # mypy proves JobManager implements the tracker's protocol
