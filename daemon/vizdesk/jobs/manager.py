"""The batch job manager: resolve → submit, list, cancel; a tracked source.

Requests arrive typed (:mod:`.request`); the manager resolves the template, its
parameters, the resources and the image (through :func:`vizdesk.images.resolve`), then
submits as the caller with the fixed launcher script of :mod:`.script` and everything
else in the job's environment. As a :class:`~.advance.JobTracking` its Slurm jobs ride
on the tracker's ONE batched query per tick, together with the desktop sessions.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from ..auth.policy import check_count
from ..auth.types import AuthError
from ..core.records import iso
from ..core.store import LimitReached
from ..core.submit import SUBMITTING, SubmitError, submit_failure, submit_request, take_job_id
from ..core.userdirs import USER_PLACEHOLDER, ensure_user_dir, expand_user_path
from ..core.validate import ValidationError, check_partition
from ..images.catalog import ImageCatalog
from ..images.resolve import resolve_image
from ..slurm.base import SlurmError, SlurmRejected, SlurmUnavailable, SubmitRequest
from ..slurm.cli import sbatch_options
from ..slurm.validate import check_request
from .advance import JobTracking
from .filecheck import FileReport
from .inputs import CheckedInputs, JobInputs
from .model import BatchJob, BatchJobState, new_job_id
from .output import read_output
from .request import JobRequest, check_argv
from .script import BATCH_SCRIPT, default_script_dir, install_script, job_environment
from .template_library import TemplateLibrary
from .templates import (
    RESOURCES,
    Template,
    TemplateRegistry,
    param_env,
    resource_bounds,
    validate_parameters,
)
from .workdir import MakeDir, make_job_dir

if TYPE_CHECKING:
    from ..auth.types import Identity
    from ..config import Config
    from ..core.tracked import TrackedSource
    from ..metrics import Metrics
    from ..slurm.base import SlurmBackend
    from .store import JobStore

FINAL_STATES = [s.value for s in BatchJobState if s.is_final]
#: A template's ``notify`` → Slurm's --mail-type (mail goes to the submitting user).
MAIL_TYPES = {"email": "END,FAIL"}

log = structlog.get_logger("vizdesk.jobs")


class JobSubmitError(SubmitError[BatchJob]):
    """Slurm refused the job or could not be reached; the job was marked FAILED."""

    @property
    def job(self) -> BatchJob:
        return self.record


@dataclass(frozen=True)
class JobSpec:
    """Everything a submission needs, resolved and checked."""

    template: str | None  # its reference: "name" or "~owner/name"
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
    nodes: int = 1
    ntasks: int = 1
    ntasks_per_node: int | None = None
    constraint: str = ""
    gpu_type: str = ""
    account: str = ""
    qos: str = ""
    job_name: str = ""  # the caller's name for it ("" = vizdesk's own)
    launcher: str = "direct"  # direct | srun (once per task)
    mail_type: str = ""
    requeue: bool | None = None
    template_version: str | None = None
    outputs: tuple[str, ...] = ()
    files: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=dict
    )  # slot -> upload ids
    definition: Template | None = dataclasses.field(default=None, compare=False, repr=False)


class JobManager(JobTracking):
    """Role: batch jobs. ``resolve`` a typed request into a :class:`JobSpec`, ``create``
    (submit), ``get`` / ``list_user`` / ``list_all`` / ``count_active``, ``cancel`` and
    ``read_output``; the tracking half (:class:`JobTracking`) follows them in Slurm."""

    def __init__(
        self,
        cfg: Config,
        backend: SlurmBackend,
        store: JobStore,
        templates: TemplateRegistry | None = None,
        metrics: Metrics | None = None,
        make_dir: MakeDir = make_job_dir,
        library: TemplateLibrary | None = None,
        inputs: JobInputs | None = None,
    ) -> None:
        super().__init__(backend, store, metrics)
        self.make_dir = make_dir  # makes the job's directory AS THE USER
        self.inputs = inputs  # uploads → the job's directory (None: jobs take no files)
        self.cfg = cfg
        self.store: JobStore = store
        self.templates = templates or TemplateRegistry(cfg)
        # admin templates and (when given a store) users' own: the one way to find one
        self.library = library or TemplateLibrary(cfg, self.templates, None)
        self.metrics = metrics
        self._script: str | None = None
        self._script_lock = asyncio.Lock()

    # ------------------------------------------------------------ resolve a request

    async def resolve(
        self, identity: Identity, req: JobRequest, images: ImageCatalog | None
    ) -> JobSpec:
        """Template + parameters + resources + image → a :class:`JobSpec` (400 on errors)."""
        tmpl: Template | None = None
        if req.template is not None:
            tmpl = await self.library.resolve(identity, req.template, req.template_version)
            if not tmpl.usable_by(identity.groups):
                raise AuthError(
                    403,
                    "policy_violation",
                    f"template {tmpl.name!r} is not available to your groups",
                    field="template",
                )
        values = validate_parameters(tmpl, req.parameters, self.cfg) if tmpl else {}
        res = self._resources(tmpl, req)
        partition = check_partition(
            req.partition
            or (tmpl.partition if tmpl else None)
            or (self.cfg.slurm.default_partition or None),
            self.cfg.slurm.partitions,
        )
        image_ref = tmpl.image if tmpl else req.image
        app = tmpl.app if tmpl else req.app
        mode = (tmpl.mode if tmpl else req.mode) or "exec"
        image_path: str | None = None
        if image_ref is not None:
            # The catalog name (not the id the caller may have sent) is what policy matches.
            image_ref, image_path = await resolve_image(
                images,
                self.cfg.sessions.images,
                image_ref,
                field="template" if tmpl else "image",
                where=f" (template {tmpl.name!r})" if tmpl else "",
                app=app,
                app_field="template" if tmpl else "app",
            )
        if tmpl is not None:
            argv = check_argv(tmpl.argv(values), self.cfg, "parameters", allow_empty=mode == "run")
        else:
            argv = req.command or ()
        return JobSpec(
            template=tmpl.ref if tmpl else None,
            template_version=tmpl.version if tmpl else None,
            image=image_ref,
            image_path=image_path,
            app=app,
            mode=mode,
            argv=argv,
            values=values,
            env=param_env(tmpl, values),
            partition=partition,
            constraint=req.constraint or (tmpl.constraint if tmpl else None) or "",
            gpu_type=req.gpu_type or (tmpl.gpu_type if tmpl else None) or "",
            account=req.account or "",
            qos=req.qos or "",
            job_name=req.job_name or "",
            files=dict(req.files or {}),
            launcher=tmpl.launcher if tmpl else "direct",
            mail_type=MAIL_TYPES.get(tmpl.notify or "", "") if tmpl else "",
            # Templates choose (default: never requeue); ad-hoc jobs get the site's default.
            requeue=tmpl.requeue if tmpl else None,
            outputs=tmpl.outputs if tmpl else (),
            definition=tmpl,
            cpus=res["cpus"],
            memory_gb=res["memory_gb"],
            gpus=res["gpus"],
            time_limit_minutes=res["time_limit_minutes"],
            nodes=res["nodes"],
            ntasks=res["ntasks"],
            # Sent only when asked for: with ntasks > nodes a fixed 1 would contradict.
            ntasks_per_node=(
                res["ntasks_per_node"]
                if req.ntasks_per_node is not None or res["ntasks_per_node"] != 1
                else None
            ),
        )

    def _resources(self, tmpl: Template | None, req: JobRequest) -> dict[str, int]:
        out: dict[str, int] = {}
        fallback = {k: (d, hi) for k, (d, _lo, hi) in resource_bounds(self.cfg).items()}
        asked = dataclasses.asdict(req)
        for key in RESOURCES:
            if tmpl is not None:
                r = tmpl.resources[key]
                default, hi = r.default, r.max
            else:
                default, hi = fallback[key]
            value = asked[key]
            value = default if value is None else value
            if value > hi:
                where = f" for template {tmpl.name!r}" if tmpl else ""
                raise ValidationError(key, f"{key} must be at most {hi}{where}")
            out[key] = value
        return out

    async def check_inputs(
        self, user: str, tmpl: Template | None, wanted: Mapping[str, Sequence[str]]
    ) -> CheckedInputs:
        """The caller's uploads ``wanted`` (slot → ids) checked against ``tmpl``'s file
        slots (a report; nothing claimed). A template with required slots gets
        ``missing`` errors when nothing is given."""
        if self.inputs is None:
            if wanted or (tmpl is not None and tmpl.files):
                raise ValidationError("files", "this site does not take input files")
            return CheckedInputs(FileReport())
        return await self.inputs.check(user, tmpl, wanted)

    # ------------------------------------------------------------ submit

    async def script_path(self) -> str:
        async with self._script_lock:
            if self._script is None:
                directory = self.cfg.jobs.script_dir or default_script_dir()
                self._script = await asyncio.to_thread(install_script, directory)
            return self._script

    def workdir(self, identity: Identity, jid: str) -> str:
        """The job's own directory: ``jobs.workdir_root`` ({home}, {user} expanded) / id."""
        root = expand_user_path(self.cfg.jobs.workdir_root, identity)
        return f"{root.rstrip('/')}/{jid}"

    def output_path(self, identity: Identity, jid: str, workdir: str) -> str:
        """Where Slurm writes the job's output: ``jobs.output_dir`` when set, else the
        job's own directory."""
        base = self.cfg.jobs.output_dir.replace("{user}", identity.user) or workdir
        return f"{base.rstrip('/')}/vizdesk-job-{jid}.out"

    def _record(self, identity: Identity, spec: JobSpec, jid: str) -> BatchJob:
        workdir = self.workdir(identity, jid)
        return BatchJob(
            id=jid,
            user=identity.user,
            partition=spec.partition,
            cpus=spec.cpus,
            memory_gb=spec.memory_gb,
            gpus=spec.gpus,
            time_limit_minutes=spec.time_limit_minutes,
            template=spec.template,
            template_version=spec.template_version,
            image=spec.image,
            image_path=spec.image_path,
            app=spec.app,
            mode=spec.mode,
            command=list(spec.argv),
            parameters=dict(spec.values),
            workdir=workdir,
            outputs=list(spec.outputs),
            nodes=spec.nodes,
            ntasks=spec.ntasks,
            ntasks_per_node=spec.ntasks_per_node,
            constraint=spec.constraint,
            gpu_type=spec.gpu_type,
            account=spec.account,
            qos=spec.qos,
            job_name=spec.job_name,
            output_path=self.output_path(identity, jid, workdir),
            reason=SUBMITTING,
        )

    async def create(
        self,
        identity: Identity,
        spec: JobSpec,
        *,
        max_jobs: int | None = None,
        inputs: CheckedInputs | None = None,
    ) -> BatchJob:
        """Store the job and submit it. With ``max_jobs``, only while the caller has fewer
        live jobs (counted atomically in Redis); otherwise 403 ``policy_violation``."""
        if USER_PLACEHOLDER in self.cfg.jobs.output_dir:  # the user's own, safe directory
            await asyncio.to_thread(
                ensure_user_dir, self.cfg.jobs.output_dir, identity.user, identity.uid, identity.gid
            )
        job = self._record(identity, spec, new_job_id())
        jid = job.id
        if max_jobs is None:
            await self.store.create(job)
        else:
            try:
                await self.store.create_within(job, max_jobs, FINAL_STATES)
            except LimitReached as exc:
                check_count(exc.live, exc.limit, "job", "max_jobs")
                raise
        try:
            await self.make_dir(self.cfg.slurm.submit_prefix, identity.user, job.workdir)
            if inputs is not None and inputs.ids:
                assert self.inputs is not None
                job.files = await self.inputs.adopt(identity.user, inputs, job.workdir)
                names = job.files
                await self.store.update(jid, lambda j: _set_files(j, names))
            submit = self.submission(spec, job, await self.script_path())
            job_id = await self.backend.submit(submit)
        except (SlurmRejected, SlurmUnavailable) as exc:
            status, code, reason = submit_failure(exc)
            assert reason is not None  # refused or unreachable
            failed = await self.store.update(jid, lambda j: j.move(BatchJobState.FAILED, reason))
            raise JobSubmitError(status, code, reason, failed or job) from exc
        except BaseException:
            await self.store.update(
                jid, lambda j: j.move(BatchJobState.FAILED, "submission failed")
            )
            raise

        stored = await self.store.update(jid, take_job_id(job_id)) or job
        if stored.stop_requested_at is not None:  # cancelled while being submitted
            await self.cancel_in_slurm(stored)
        log.info(
            "job.submitted",
            job=jid,
            user=identity.user,
            job_id=job_id,
            template=spec.template,
            image=spec.image,
        )
        return stored

    def submission(self, spec: JobSpec, job: BatchJob, script: str) -> SubmitRequest:
        """The Slurm submission of ``job`` (resolved as ``spec``) with the fixed launcher."""
        env = job_environment(
            job_id=job.id,
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
            launcher=spec.launcher,
            workdir=job.workdir,
            files=job.files,
        )
        prefix = self.cfg.slurm.job_name_prefix
        base = submit_request(
            job,
            script=script,
            job_name=f"{prefix}-{spec.job_name}" if spec.job_name else f"{prefix}-job-{job.id}",
            workdir=job.workdir or self.cfg.sessions.workdir,
            output=job.output_path,
            env=env,
        )
        return dataclasses.replace(
            base,
            nodes=spec.nodes,
            ntasks=spec.ntasks,
            ntasks_per_node=spec.ntasks_per_node,
            constraint=spec.constraint,
            gpu_type=spec.gpu_type,
            account=spec.account,
            qos=spec.qos,
            mail_type=spec.mail_type,
            requeue=spec.requeue,
        )

    async def preview(self, identity: Identity, spec: JobSpec) -> dict[str, Any]:
        """A dry run: the exact script, sbatch options and environment names of the job
        ``spec`` would submit, and Slurm's start estimate (``sbatch --test-only``);
        nothing is stored, created or submitted. Slurm refusing it raises SlurmRejected."""
        jid = new_job_id()
        job = self._record(identity, spec, jid)
        script = await self.script_path()
        submit = self.submission(spec, job, script)
        check_request(submit)
        out: dict[str, Any] = {
            "script": BATCH_SCRIPT,
            "script_path": script,
            "sbatch_options": sbatch_options(submit),
            "environment": sorted(submit.env),
            "workdir": job.workdir.removesuffix(jid) + "<job id>",
            "estimate": None,
        }
        try:
            est = await self.backend.test_only(submit)
        except SlurmUnavailable as exc:
            out["estimate_error"] = f"scheduler unreachable: {exc}"
        except NotImplementedError as exc:
            out["estimate_error"] = str(exc)
        except SlurmError as exc:
            if isinstance(exc, SlurmRejected):
                raise
            out["estimate_error"] = str(exc)[:300]
        else:
            out["estimate"] = {
                "start_time": iso(est.start_time),
                "processors": est.processors,
                "nodes": est.nodes,
                "partition": est.partition,
                "message": est.message,
            }
        return out

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
        return await read_output(job, max_bytes)

    # ------------------------------------------------------------ cancel

    async def cancel(self, job: BatchJob, by: str) -> BatchJob:
        """Ask Slurm to cancel; the tracker moves CANCELLING → CANCELLED when it is gone."""
        updated = await self.store.request_stop(
            job, BatchJobState.CANCELLING, f"cancel requested by {by}"
        )
        if updated.job_id and not updated.state.is_final:
            await self.cancel_in_slurm(updated)
        return updated


def _set_files(job: BatchJob, files: dict[str, list[str]]) -> bool:
    job.files = files
    return True


if TYPE_CHECKING:

    def _is_tracked_source(manager: JobManager) -> TrackedSource:
        return manager  # mypy proves JobManager implements the tracker's protocol
