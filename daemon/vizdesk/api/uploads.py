"""Resumable uploads over tus 1.0 (core, creation, termination, checksum, expiration).

| method and path | what |
| --- | --- |
| ``OPTIONS /api/v1/uploads`` | tus discovery: versions, extensions, max size, checksum algorithms (204) |
| ``POST /api/v1/uploads`` | create (``Upload-Length``, ``Upload-Metadata`` filename/slot/template) → 201 + Location |
| ``HEAD /api/v1/uploads/{id}`` | ``Upload-Offset`` / ``Upload-Length`` (resume from here) |
| ``PATCH /api/v1/uploads/{id}`` | append the body at ``Upload-Offset`` (``application/offset+octet-stream``) → 204 |
| ``DELETE /api/v1/uploads/{id}`` | terminate: the upload and its file are removed → 204 |
| ``GET /api/v1/uploads`` | the caller's uploads (JSON) |
| ``GET /api/v1/uploads/{id}`` | one upload (JSON) |

Bodies stream from the socket into the user-file helper (run as the user): never read
into memory, never limited by ``server.max_body_bytes``. An upload is the caller's alone:
another user's id is the same 404 as an unknown one. One request writes an upload at a
time (423 otherwise); a PATCH cut short keeps what arrived (unless it carried a checksum:
then nothing of it), so the client resumes at the offset HEAD reports.
"""  # noqa: E501

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from ..core.errors import VizdeskError
from ..core.validate import ValidationError
from ..files import names
from ..files.errors import FileMissing, OffsetConflict
from ..files.paths import user_dir
from ..files.uploads import LOCK_SECONDS, UPLOADING, USED, Upload, UploadError
from . import tus
from .audit import audit
from .base import caller
from .context import Context, ctx
from .errors import ApiError

log = structlog.get_logger("vizdesk.uploads")
BODY_CHUNK = 1 << 20
TUS = {"Tus-Resumable": tus.TUS_VERSION}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def tus_headers(handler: Handler) -> Handler:
    """Every answer of a tus route carries ``Tus-Resumable``, errors included."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except VizdeskError as exc:
            exc.headers.setdefault("Tus-Resumable", tus.TUS_VERSION)
            raise
        response.headers.setdefault("Tus-Resumable", tus.TUS_VERSION)
        return response

    return wrapped


def require_tus(request: web.Request) -> None:
    if request.headers.get("Tus-Resumable") != tus.TUS_VERSION:
        raise ApiError(
            412,
            "unsupported_tus_version",
            f"send Tus-Resumable: {tus.TUS_VERSION}",
            field="Tus-Resumable",
            headers={"Tus-Version": tus.TUS_VERSION, **TUS},
        )


def upload_headers(upload: Upload) -> dict[str, str]:
    meta: dict[str, str | None] = {"filename": upload.filename}
    if upload.slot:
        meta["slot"] = upload.slot
    if upload.template:
        meta["template"] = upload.template
    return {
        **TUS,
        "Upload-Offset": str(upload.offset),
        "Upload-Length": str(upload.length),
        "Upload-Expires": tus.http_date(upload.expires_at),
        "Upload-Metadata": tus.encode_metadata(meta),
        "Cache-Control": "no-store",
    }


@tus_headers
async def options(request: web.Request) -> web.StreamResponse:
    """tus discovery (no token needed, like any OPTIONS)."""
    c = ctx(request)
    return web.Response(
        status=204,
        headers={
            **TUS,
            "Tus-Version": tus.TUS_VERSION,
            "Tus-Extension": tus.TUS_EXTENSIONS,
            "Tus-Max-Size": str(c.cfg.uploads.max_file_bytes),
            "Tus-Checksum-Algorithm": ",".join(tus.CHECKSUM_ALGORITHMS),
        },
    )


@tus_headers
async def create_upload(request: web.Request) -> web.StreamResponse:
    c, identity = caller(request)
    require_tus(request)
    if "Upload-Defer-Length" in request.headers:
        raise ValidationError("Upload-Defer-Length", "deferred lengths are not supported")
    length = tus.parse_int(request.headers.get("Upload-Length"), "Upload-Length")
    meta = tus.parse_metadata(request.headers.get("Upload-Metadata"))
    filename = meta.get("filename")
    if filename is None:
        raise ValidationError(
            "Upload-Metadata.filename", "Upload-Metadata must give a filename", code="missing_field"
        )
    names.check_filename(filename)
    slot = meta.get("slot")
    template = meta.get("template")
    if slot is not None:
        names.check_slot(slot)
    if template is not None:
        names.check_template_name(template)
    root = await user_dir(c.cfg.uploads.dir, identity.user)
    try:
        upload = await c.uploads.create(
            identity.user, filename, length, root, slot=slot or None, template=template or None
        )
    except UploadError as exc:
        audit(request, "upload.create", "denied", reason=exc.code, field=exc.field)
        raise
    try:  # the staging file exists (empty) before 201: the user's directory works
        await c.files.mkdir(identity.user, root)
        await c.files.create(identity.user, root, upload.rel)
    except VizdeskError:
        await c.uploads.forget(upload)
        raise
    audit(request, "upload.create", "ok", upload=upload.id, length=length)
    return web.json_response(
        upload.to_public(),
        status=201,
        headers={
            **TUS,
            "Location": f"/api/v1/uploads/{upload.id}",
            "Upload-Expires": tus.http_date(upload.expires_at),
        },
    )


async def _owned(request: web.Request) -> tuple[Context, Upload]:
    c, identity = caller(request)
    return c, await c.uploads.get_owned(identity.user, request.match_info["id"])


@tus_headers
async def head_upload(request: web.Request) -> web.StreamResponse:
    require_tus(request)
    c, upload = await _owned(request)
    if upload.state == UPLOADING and not await c.uploads.locked(upload.id):
        # The file is the truth: a daemon that died mid-PATCH left more than its record says.
        with contextlib.suppress(FileMissing):
            info = await c.files.size(upload.user, upload.root, upload.rel)
            if info.size != upload.offset and info.size <= upload.length:
                upload = await c.uploads.update(upload.id, offset=info.size) or upload
    return web.Response(status=200, headers=upload_headers(upload))


@tus_headers
async def patch_upload(request: web.Request) -> web.StreamResponse:
    c, identity = caller(request)
    require_tus(request)
    if request.content_type != tus.OFFSET_TYPE:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"PATCH bodies are {tus.OFFSET_TYPE}",
            field="Content-Type",
        )
    offset = tus.parse_int(request.headers.get("Upload-Offset"), "Upload-Offset")
    checksum = tus.parse_checksum(request.headers.get("Upload-Checksum"))
    upload = await c.uploads.get_owned(identity.user, request.match_info["id"])
    if upload.state == USED:
        raise ApiError(409, "upload_used", "the upload is used by a job already")
    if offset != upload.offset:
        raise OffsetConflict(upload.offset)
    remaining = upload.length - upload.offset
    declared = request.content_length
    if declared is not None and declared > remaining:
        raise ApiError(
            413,
            "body_too_large",
            f"the body ({declared} bytes) is longer than the rest of the upload ({remaining})",
            field="Content-Length",
        )
    count = declared if declared is not None else remaining
    if count == 0:
        if await c.uploads.locked(upload.id):
            raise ApiError(
                423, "upload_locked", "another request is writing this upload", retry_after=1
            )
        return web.Response(status=204, headers=upload_headers(upload))
    token = await c.uploads.lock(upload.id)
    if token is None:
        raise ApiError(
            423, "upload_locked", "another request is writing this upload", retry_after=1
        )
    stop = asyncio.Event()
    task = asyncio.create_task(_write_body(c, request, upload, count, checksum, token, stop))
    try:
        updated = await asyncio.shield(task)
    except asyncio.CancelledError:  # the client went away: end the body, keep what came
        stop.set()
        task.add_done_callback(_log_orphan)
        raise
    return web.Response(status=204, headers=upload_headers(updated))


def _log_orphan(task: asyncio.Task[Upload]) -> None:
    """The outcome of a write whose client went away (nobody else will see it)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("uploads.interrupted_write_failed", error=str(exc), kind=type(exc).__name__)


async def _write_body(
    c: Context,
    request: web.Request,
    upload: Upload,
    count: int,
    checksum: str | None,
    token: str,
    stop: asyncio.Event,
) -> Upload:
    """Stream ``count`` bytes of the body into the upload's file (a task of its own, so a
    client that goes away cannot cut it short between the write and the record update)."""
    interval = c.cfg.uploads.progress_interval_seconds
    last = time.monotonic()
    pending: set[asyncio.Task[Any]] = set()

    def progress(fed: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < interval:
            return
        last = now
        view = dataclasses.replace(upload, offset=upload.offset + fed)
        t = asyncio.create_task(c.uploads.publish(view))
        pending.add(t)
        t.add_done_callback(pending.discard)

    async def keep_lock() -> None:
        while True:
            await asyncio.sleep(LOCK_SECONDS / 3)
            if not await c.uploads.renew(upload.id, token):
                log.warning("uploads.lock_lost", upload=upload.id)
                stop.set()
                return

    renewer = asyncio.create_task(keep_lock())
    try:
        try:
            result = await c.files.write(
                upload.user,
                upload.root,
                upload.rel,
                upload.offset,
                count,
                request.content.iter_chunked(BODY_CHUNK),
                checksum=checksum,
                fsync=upload.offset + count == upload.length,
                progress=progress,
                stop=stop,
                idle_timeout=c.cfg.uploads.helper_timeout_seconds,
            )
        except OffsetConflict as exc:  # the file is not where the record says: heal it
            if exc.size is not None and exc.size <= upload.length and exc.size != upload.offset:
                await c.uploads.update(upload.id, offset=exc.size)
            raise
        updated = await c.uploads.update(upload.id, offset=result.offset)
        if updated is None:
            raise FileMissing("the upload was terminated meanwhile")
        log.info(
            "uploads.patch",
            upload=upload.id,
            offset=result.offset,
            length=upload.length,
            interrupted=not result.complete,
        )
        if result.overflow:
            raise ApiError(
                413, "body_too_large", "the body is longer than the upload", field="Content-Length"
            )
        return updated
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        await c.uploads.unlock(upload.id, token)


@tus_headers
async def delete_upload(request: web.Request) -> web.StreamResponse:
    require_tus(request)
    c, upload = await _owned(request)
    token = await c.uploads.lock(upload.id)
    if token is None:
        raise ApiError(
            423, "upload_locked", "another request is writing this upload", retry_after=1
        )
    try:
        if upload.state != USED:
            with contextlib.suppress(FileMissing):
                await c.files.remove(upload.user, upload.root, upload.rel)
        await c.uploads.forget(upload)
        await c.uploads.publish(upload, state="terminated")
    finally:
        await c.uploads.unlock(upload.id, token)
    audit(request, "upload.delete", "ok", upload=upload.id)
    return web.Response(status=204, headers=TUS)


async def list_uploads(request: web.Request) -> web.StreamResponse:
    c, identity = caller(request)
    found = await c.uploads.list_user(identity.user)
    return web.json_response({"uploads": [u.to_public() for u in found]})


async def get_upload(request: web.Request) -> web.StreamResponse:
    _, upload = await _owned(request)
    return web.json_response(upload.to_public())


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_route("OPTIONS", "/api/v1/uploads", options)
    r.add_post("/api/v1/uploads", create_upload)
    r.add_get("/api/v1/uploads", list_uploads, allow_head=False)
    r.add_route("OPTIONS", "/api/v1/uploads/{id}", options)
    r.add_head("/api/v1/uploads/{id}", head_upload)
    r.add_get("/api/v1/uploads/{id}", get_upload, allow_head=False)
    r.add_patch("/api/v1/uploads/{id}", patch_upload)
    r.add_delete("/api/v1/uploads/{id}", delete_upload)
