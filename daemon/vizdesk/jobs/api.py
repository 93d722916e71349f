"""Batch job endpoints: submit (from a template or image + command), list, get, cancel,
read the output, and list the templates the caller may use.

| method and path | what |
| --- | --- |
| ``POST /api/v1/jobs`` | ``{template, parameters, partition?, cpus?, memory_gb?, gpus?, time_limit_minutes?}`` or ``{image, command, app?, mode?, ...}`` → 201 job |
| ``GET /api/v1/jobs`` | the caller's jobs (admins: ``?all=true``; ``?state=`` filters) |
| ``GET /api/v1/jobs/{id}`` | one job (another user's → 404) |
| ``DELETE /api/v1/jobs/{id}`` | cancel → 202, ``CANCELLING`` then ``CANCELLED`` |
| ``GET /api/v1/jobs/{id}/output`` | tail of the output file as text (owner only; ``?tail_bytes=``) |
| ``GET /api/v1/job-templates`` | the templates the caller's groups and policy allow |
"""  # noqa: E501

from __future__ import annotations

import structlog
from aiohttp import web

from ..api.context import Context, ctx
from ..api.errors import ApiError
from ..api.sessions import identity_of, read_json
from ..api.validation import ValidationError
from ..audit import audit
from ..auth.types import AuthError, Identity
from ..keys import SESSION_ID_RE
from .manager import JobManager, JobSubmitError, validate_job_request
from .model import BatchJob
from .store import JobStore

log = structlog.get_logger("vizdesk.jobs.api")
JOB_ID_RE = SESSION_ID_RE  # 16 lowercase hex digits, like session ids


def manager(request: web.Request) -> JobManager:
    jobs = ctx(request).jobs
    if not isinstance(jobs, JobManager):
        raise ApiError(503, "jobs_disabled", "batch jobs are not enabled on this server")
    return jobs


async def owned_job(request: web.Request, identity: Identity) -> BatchJob:
    """The job in the path if the caller may see it; otherwise 404 (never 403)."""
    jid = request.match_info["id"]
    if not JOB_ID_RE.fullmatch(jid):
        raise ApiError(404, "not_found", "no such job")
    job = await manager(request).get(jid)
    if job is None or (job.user != identity.user and not identity.is_admin):
        raise ApiError(404, "not_found", "no such job")
    return job


async def create_job(request: web.Request) -> web.Response:
    c = ctx(request)
    jobs = manager(request)
    identity = identity_of(request)
    try:
        req = validate_job_request(await read_json(request), c.cfg)
        spec = await jobs.resolve(identity, req, c.images)
        active = await jobs.count_active(identity.user)
        c.policy.check_job(
            identity,
            partition=spec.partition,
            image=spec.image,
            cpus=spec.cpus,
            memory_gb=spec.memory_gb,
            gpus=spec.gpus,
            time_limit_minutes=spec.time_limit_minutes,
            active_jobs=active,
        )
        await c.ratelimiter.hit(identity.user, "job_create")
    except (ValidationError, ApiError, AuthError) as exc:
        audit(
            request,
            "job.create",
            "denied",
            reason=getattr(exc, "code", "invalid"),
            field=getattr(exc, "field", None),
        )
        raise
    try:
        job = await jobs.create(identity, spec)
    except JobSubmitError as exc:
        audit(request, "job.create", "failed", job=exc.job.id, reason=exc.code)
        raise ApiError(exc.status, exc.code, exc.message) from exc
    c.tracker.poke()
    audit(
        request,
        "job.create",
        "ok",
        job=job.id,
        job_id=job.job_id,
        template=job.template,
        image=job.image,
    )
    return web.json_response(job.to_public(), status=201)


async def list_jobs(request: web.Request) -> web.Response:
    jobs = manager(request)
    identity = identity_of(request)
    want_all = request.query.get("all", "").lower() in ("1", "true", "yes")
    if want_all and not identity.is_admin:
        raise ApiError(403, "forbidden", "only admins may list all jobs", field="all")
    found = await (jobs.list_all() if want_all else jobs.list_user(identity.user))
    state = request.query.get("state")
    if state:
        found = [j for j in found if j.state.value == state.upper()]
    return web.json_response({"jobs": [j.to_public() for j in found]})


async def get_job(request: web.Request) -> web.Response:
    job = await owned_job(request, identity_of(request))
    return web.json_response(job.to_public())


async def delete_job(request: web.Request) -> web.Response:
    c = ctx(request)
    identity = identity_of(request)
    try:
        job = await owned_job(request, identity)
    except ApiError:
        audit(request, "job.delete", "denied", job=request.match_info["id"][:32])
        raise
    by = "admin " + identity.user if job.user != identity.user else "user"
    updated = await manager(request).cancel(job, by=by)
    c.tracker.poke()
    audit(request, "job.delete", "ok", job=job.id, owner=job.user, job_id=job.job_id)
    return web.json_response(updated.to_public(), status=202)


async def job_output(request: web.Request) -> web.Response:
    c = ctx(request)
    identity = identity_of(request)
    job = await owned_job(request, identity)
    if job.user != identity.user:
        # Like desktops: admins may cancel others' jobs but not read their results.
        audit(request, "job.output", "denied", job=job.id, reason="not_owner")
        raise ApiError(403, "forbidden", "only the job's owner may read its output")
    limit = c.cfg.jobs.max_output_bytes
    raw = request.query.get("tail_bytes")
    if raw is not None:
        if not raw.isdigit() or not 0 < int(raw) <= limit:
            raise ValidationError("tail_bytes", f"tail_bytes must be between 1 and {limit}")
        limit = int(raw)
    try:
        result = await manager(request).read_output(job, limit)
    except PermissionError:
        audit(request, "job.output", "denied", job=job.id, reason="unsafe_file")
        raise ApiError(
            403, "forbidden", "the output file is not the job's own regular file"
        ) from None
    if result is None:
        raise ApiError(404, "no_output", "the job has no output file (yet)")
    data, size = result
    return web.Response(
        body=data,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Output-Size": str(size), "X-Output-Truncated": str(size > len(data)).lower()},
    )


async def list_templates(request: web.Request) -> web.Response:
    c = ctx(request)
    identity = identity_of(request)
    out = []
    for tmpl in await manager(request).templates.all():
        if not tmpl.usable_by(identity.groups):
            continue
        res = tmpl.resources
        try:  # offered only if its defaults are within the caller's policy
            c.policy.check_job(
                identity,
                partition=tmpl.partition or c.cfg.slurm.default_partition,
                image=tmpl.image,
                cpus=res["cpus"].default,
                memory_gb=res["memory_gb"].default,
                gpus=res["gpus"].default,
                time_limit_minutes=res["time_limit_minutes"].default,
                active_jobs=0,
            )
        except AuthError:
            continue
        out.append(tmpl.to_public())
    return web.json_response({"templates": out})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/jobs", create_job)
    app.router.add_get("/api/v1/jobs", list_jobs)
    app.router.add_get("/api/v1/jobs/{id}", get_job)
    app.router.add_delete("/api/v1/jobs/{id}", delete_job)
    app.router.add_get("/api/v1/jobs/{id}/output", job_output)
    app.router.add_get("/api/v1/job-templates", list_templates)


def install(app: web.Application, context: Context) -> JobManager:
    """Wire batch jobs into the daemon: manager in the context, tracker source, routes."""
    jobs = JobManager(
        context.cfg,
        context.backend,
        JobStore(context.redis, context.keys, context.cfg.jobs.ended_retention_seconds),
        metrics=context.metrics,
    )
    context.jobs = jobs
    context.tracker.sources.append(jobs)  # rides on the tracker's one Slurm query per tick
    setup_routes(app)
    return jobs
