"""Batch job endpoints: submit (from a template or image + command), list, get, cancel,
and read the output (the templates are :mod:`.job_templates`).

| method and path | what |
| --- | --- |
| ``POST /api/v1/jobs`` | ``{template, parameters, partition?, cpus?, memory_gb?, gpus?, time_limit_minutes?}`` or ``{image, command, app?, mode?, ...}`` → 201 job |
| ``GET /api/v1/jobs`` | the caller's jobs (admins: ``?all=true``; ``?state=`` filters) |
| ``GET /api/v1/jobs/{id}`` | one job (another user's → 404) |
| ``DELETE /api/v1/jobs/{id}`` | cancel → 202, ``CANCELLING`` then ``CANCELLED`` |
| ``GET /api/v1/jobs/{id}/output`` | tail of the output file as text (owner only; ``?tail_bytes=``) |
| ``GET /api/v1/jobs/{id}/request`` | what was asked for: template, version, parameters, resources, files (owner only) |
"""  # noqa: E501

from __future__ import annotations

from aiohttp import web

from ..auth.policy import ask
from ..jobs.manager import JobSubmitError
from ..jobs.request import validate_job_request
from ..slurm.base import SlurmRejected
from . import base
from .audit import audit, denied_on_error
from .context import ctx
from .errors import ApiError

routes = web.RouteTableDef()


@routes.get("/api/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    return await base.list_records(request, ctx(request).jobs.store, "jobs")


@routes.get("/api/v1/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    return await base.get_record(request, ctx(request).jobs.store, "job")


@routes.delete("/api/v1/jobs/{id}")
async def delete_job(request: web.Request) -> web.Response:
    jobs = ctx(request).jobs
    return await base.delete_record(
        request, jobs.store, "job", jobs.cancel, job_id=lambda job: job.job_id
    )


@routes.post("/api/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    c, identity = base.caller(request)
    dry_run = base.query_bool(request, "dry_run")
    with denied_on_error(request, "job.create"):
        req = validate_job_request(await base.read_json(request), c.cfg)
        spec = await c.jobs.resolve(identity, req, c.images)
        active = 0 if dry_run else await c.jobs.count_active(identity.user)
        c.policy.check_job(identity, active_jobs=active, **ask(spec.partition, spec.image, spec))
        c.policy.check_batch(identity, spec)
        inputs = await c.jobs.check_inputs(identity.user, spec.definition, spec.files)
        inputs.report.raise_if_invalid()  # 400 naming files.<slot> (and the JSON path)
        await c.ratelimiter.hit(identity.user, "job_create")
    if dry_run:
        try:
            preview = await c.jobs.preview(identity, spec)
        except SlurmRejected as exc:
            raise ApiError(400, "slurm_rejected", f"Slurm would refuse the job: {exc}") from exc
        return web.json_response({"dry_run": True, **preview})
    try:
        # The count above is a fast refusal; this one is atomic with storing the record.
        job = await c.jobs.create(
            identity, spec, max_jobs=c.policy.effective(identity).max_jobs, inputs=inputs
        )
    except JobSubmitError as exc:
        audit(request, "job.create", "failed", job=exc.job.id, reason=exc.code)
        raise
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


@routes.get("/api/v1/jobs/{id}/output")
async def job_output(request: web.Request) -> web.Response:
    c = ctx(request)
    identity = base.identity_of(request)
    most = c.cfg.jobs.max_output_bytes
    limit = base.query_int(request, "tail_bytes", 1, most) or most  # checked before lookup
    job = await base.owned_record(request, identity, c.jobs.store, "job")
    if job.user != identity.user:
        # Like desktops: admins may cancel others' jobs but not read their results.
        audit(request, "job.output", "denied", job=job.id, reason="not_owner")
        raise ApiError(403, "forbidden", "only the job's owner may read its output")
    try:
        result = await c.jobs.read_output(job, limit)
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


@routes.get("/api/v1/jobs/{id}/request")
async def job_request(request: web.Request) -> web.Response:
    """What the owner asked for (template, version, parameters, resources, file names):
    the portal's "submit again". Parameters are the owner's own data: owner only."""
    identity = base.identity_of(request)
    job = await base.owned_record(request, identity, ctx(request).jobs.store, "job")
    if job.user != identity.user:
        raise ApiError(403, "forbidden", "only the job's owner may read its request")
    return web.json_response(job.request_view())


def setup_routes(app: web.Application) -> None:
    app.add_routes(routes)
