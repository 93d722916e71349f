"""A job's results: its directory listed, one file downloaded (HTTP Range), all as a zip.

| method and path | what |
| --- | --- |
| ``GET /api/v1/jobs/{id}/files`` | the job directory's entries: path, type, size, mtime, matching ``outputs`` patterns |
| ``GET /api/v1/jobs/{id}/files/{path}`` | one regular file (``Range: bytes=A-B``, ``A-``, ``-N`` → 206; outside → 416) |
| ``GET /api/v1/jobs/{id}/files.zip`` | a streamed zip of every regular file (``?outputs=true``: the results only) |

Read AS THE USER by the user-file helper, confined to ``job.workdir``: a path with ``..``,
an absolute path, a symlink anywhere on the way (to ``/etc/shadow``, another user's
directory, the daemon's secrets, ``../..``) or anything but a regular file is a 404, never
its content. The job's owner only: an admin gets 403 (as for ``/output``), another user 404.
Several ranges in one Range header are answered with the whole file (200).
"""  # noqa: E501

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from urllib.parse import quote

import structlog
from aiohttp import web

from ..files import helper
from ..files.errors import FileMissing, FilesError
from ..files.patterns import matching
from ..files.runner import Download
from ..jobs.model import BatchJob
from . import base, tus
from .audit import audit
from .context import Context
from .errors import ApiError

log = structlog.get_logger("vizdesk.job_files")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


async def _job(request: web.Request) -> tuple[Context, BatchJob]:
    c, identity = base.caller(request)
    job = await base.owned_record(request, identity, c.jobs.store, "job")
    if job.user != identity.user:
        # Like desktops and /output: admins may cancel others' jobs but not read results.
        audit(request, "job.files", "denied", job=job.id, reason="not_owner")
        raise ApiError(403, "forbidden", "only the job's owner may read its files")
    if not job.workdir:
        raise ApiError(404, "no_workdir", "the job has no working directory")
    return c, job


def disposition(path: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact one (RFC 6266/8187)."""
    name = path.rpartition("/")[2]
    fallback = _UNSAFE.sub("_", name).strip("._") or "download"
    return (
        f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(os.fsencode(name), safe='')}"
    )


async def list_files(request: web.Request) -> web.StreamResponse:
    c, job = await _job(request)
    listing = await c.files.list(job.user, job.workdir)
    files = []
    for e in listing.entries:
        entry = {
            "path": e.path,
            "name": e.path.rpartition("/")[2],
            "type": e.type,
            "size": e.size,
            "mtime": _iso(e.mtime),
            "outputs": matching(job.outputs, e.path) if e.type == "file" else [],
        }
        files.append(entry)
    return web.json_response(
        {"job": job.id, "outputs": job.outputs, "files": files, "truncated": listing.truncated}
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


async def _stream(request: web.Request, response: web.StreamResponse, dl: Download) -> None:
    """Copy the helper's output to the client; a failure after the headers went out can
    only cut the connection (the length promised would be a lie)."""
    try:
        async for chunk in dl.chunks():
            await response.write(chunk)
        await response.write_eof()
    except FilesError as exc:
        log.warning("job_files.stream_failed", error=exc.message)
        if request.transport is not None:
            request.transport.abort()


async def download(request: web.Request) -> web.StreamResponse:
    c, job = await _job(request)
    rel = request.match_info["path"]
    try:
        helper.components(rel)
    except helper.Fail:
        raise FileMissing() from None
    spec = tus.parse_range(request.headers.get("Range"))
    async with c.files.read(job.user, job.workdir, rel, spec) as dl:
        h = dl.header
        assert h is not None
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(h.length),
            "Content-Disposition": disposition(rel),
            "Accept-Ranges": "bytes",
            "Last-Modified": tus.http_date(h.mtime),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }
        status = 200
        if spec is not None:
            status = 206
            headers["Content-Range"] = f"bytes {h.start}-{h.end}/{h.size}"
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if request.method != "HEAD":
            await _stream(request, response, dl)
    audit(request, "job.files.download", "ok", job=job.id)
    return response


async def download_zip(request: web.Request) -> web.StreamResponse:
    c, job = await _job(request)
    only_outputs = request.query.get("outputs", "").lower() in ("1", "true", "yes")
    rels: list[str] | None = None
    if only_outputs:
        listing = await c.files.list(job.user, job.workdir)
        rels = [
            e.path for e in listing.entries if e.type == "file" and matching(job.outputs, e.path)
        ]
    async with c.files.zip(job.user, job.workdir, rels) as dl:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "application/zip",
                "Content-Disposition": f'attachment; filename="job-{job.id}.zip"',
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            },
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        if request.method != "HEAD":
            await _stream(request, response, dl)
    audit(request, "job.files.zip", "ok", job=job.id, outputs_only=only_outputs)
    return response


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/jobs/{id}/files", list_files)
    app.router.add_get("/api/v1/jobs/{id}/files.zip", download_zip)
    app.router.add_get("/api/v1/jobs/{id}/files/{path:.+}", download)
