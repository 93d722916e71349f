"""Session endpoints: create (or estimate), list, inspect, stop, connect (ticket), the VNC
websocket (the owner's and share-link viewers'), keep it, relaunch, extend, thumbnail."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from ..auth.policy import ask
from ..auth.types import AuthError
from ..contract.registration import NodeReportedFailure, RegistrationRejected
from ..core.records import iso, utcnow
from ..core.submit import SubmitError
from ..images.resolve import resolve_image
from ..proxy.bridge import bridge_vnc
from ..proxy.thumbnail import ThumbnailError
from ..sessions.model import Session, SessionState
from ..sessions.request import validate_session_request
from ..sessions.sharing import Connection
from ..slurm.base import SlurmError, SlurmRejected, SlurmUnavailable
from .audit import audit, denied_on_error
from .base import (
    RECORD_ID_RE,
    caller,
    delete_record,
    get_record,
    identity_of,
    list_records,
    owned_record,
    query_bool,
    read_json,
)
from .context import ctx
from .errors import ApiError

routes = web.RouteTableDef()
log = structlog.get_logger("vizdesk.api")


@routes.post("/api/v1/sessions")
async def create_session(request: web.Request) -> web.Response:
    """Create a desktop; ``?dry_run=true``: only Slurm's start estimate (nothing stored)."""
    body = await read_json(request)
    if query_bool(request, "dry_run"):
        return await _estimate(request, body)
    return await _create(request, body)


async def _estimate(request: web.Request, body: Any) -> web.Response:
    c, identity = caller(request)
    with denied_on_error(request, "session.estimate"):
        req = validate_session_request(body, c.cfg)
        image_name: str | None = None
        image_path: str | None = None
        if req.image is not None:
            image_name, image_path = await resolve_image(
                c.images, c.cfg.sessions.images, req.image, field="image", desktop=True
            )
        active = await c.store.count_active_for_user(identity.user)
        c.policy.check_session(
            identity, active_sessions=active, **ask(req.partition, image_name, req)
        )
    out: dict[str, Any] = {"dry_run": True, "estimate": None}
    try:
        est = await c.spawner.estimate(identity, req, image_path)
    except SlurmRejected as exc:
        raise ApiError(400, "slurm_rejected", f"Slurm would refuse the desktop: {exc}") from exc
    except SlurmUnavailable:
        out["estimate_error"] = "scheduler unreachable"
    except NotImplementedError as exc:
        out["estimate_error"] = str(exc)
    except SlurmError as exc:
        out["estimate_error"] = str(exc)[:300]
    else:
        out["estimate"] = {
            "start_time": iso(est.start_time),
            "processors": est.processors,
            "nodes": est.nodes,
            "partition": est.partition,
            "message": est.message,
        }
    return web.json_response(out)


async def _create(request: web.Request, body: Any) -> web.Response:
    c, identity = caller(request)
    with denied_on_error(request, "session.create"):
        req = validate_session_request(body, c.cfg)
        image_name: str | None = None
        image_path: str | None = None
        if req.image is not None:
            image_name, image_path = await resolve_image(
                c.images, c.cfg.sessions.images, req.image, field="image", desktop=True
            )
        active = await c.store.count_active_for_user(identity.user)
        # Policy patterns match the catalog name, whatever reference was sent.
        c.policy.check_session(
            identity, active_sessions=active, **ask(req.partition, image_name, req)
        )
        await c.ratelimiter.hit(identity.user, "create")
    try:
        # The count above is a fast refusal; this one is atomic with storing the record.
        limit = c.policy.effective(identity).max_sessions
        session = await c.spawner.create(identity, req, image_path, max_sessions=limit)
    except SubmitError as exc:  # Slurm refused or was unreachable: the session FAILED
        audit(request, "session.create", "failed", session=exc.record.id, reason=exc.code)
        raise
    c.tracker.poke()
    audit(request, "session.create", "ok", session=session.id, job_id=session.job_id)
    return web.json_response(session.to_public(), status=201)


@routes.get("/api/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    return await list_records(request, ctx(request).store, "sessions")


@routes.get("/api/v1/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    return await get_record(request, ctx(request).store, "session")


@routes.delete("/api/v1/sessions/{id}")
async def delete_session(request: web.Request) -> web.Response:
    c = ctx(request)
    return await delete_record(request, c.store, "session", c.spawner.stop)


@routes.post("/api/v1/sessions/{id}/connect")
async def connect_session(request: web.Request) -> web.Response:
    c = ctx(request)
    identity = identity_of(request)
    try:
        session = await owned_record(request, identity, c.store, "session")
    except ApiError:
        audit(request, "session.connect", "denied", session=request.match_info["id"][:32])
        raise
    if session.user != identity.user:
        # Admins may stop others' desktops but never look into them.
        audit(request, "session.connect", "denied", session=session.id, reason="not_owner")
        raise ApiError(403, "forbidden", "only the session's owner may connect")
    if session.state != SessionState.READY:
        raise ApiError(409, "not_ready", f"session is {session.state.value}, not READY")
    ticket = await c.tickets.issue(identity.user, session.id, request.headers.get("Origin"))
    audit(request, "session.connect", "ok", session=session.id)
    return web.json_response(
        {
            "ticket": ticket,
            "ws_path": f"/api/v1/sessions/{session.id}/vnc?ticket={ticket}",
            "expires_in": c.cfg.tickets.ttl_seconds,
        }
    )


def origin_allowed(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    allowed = ctx(request).cfg.server.allowed_origins
    if origin is None:
        return True  # non-browser client; the ticket still binds it
    if allowed:
        return origin in allowed
    return origin in {f"{request.scheme}://{request.host}", f"https://{request.host}"}


@routes.get("/api/v1/sessions/{id}/vnc")
async def vnc_websocket(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    sid = request.match_info["id"]
    if not RECORD_ID_RE.fullmatch(sid):
        raise ApiError(404, "not_found", "no such session")
    if not origin_allowed(request):
        audit(request, "session.websocket", "denied", session=sid, reason="origin")
        raise ApiError(403, "bad_origin", "websocket Origin not allowed")
    try:
        grant = await c.tickets.redeem_grant(
            request.query.get("ticket", ""), sid, request.headers.get("Origin")
        )
    except AuthError:
        audit(request, "session.websocket", "denied", session=sid, reason="bad_ticket")
        raise
    user = grant.user
    session = await c.store.get(sid)
    if session is None or (grant.share_id is None and session.user != user):
        raise ApiError(404, "not_found", "no such session")
    if grant.share_id is not None:
        # The link is checked again now: revoked or expired since the ticket → 403.
        share = await c.shares.get(grant.share_id)
        problem = "gone" if share is None else share.problem()
        if share is None or problem is not None or share.session_id != sid:
            audit(request, "session.websocket", "denied", session=sid, reason=f"link {problem}")
            raise ApiError(403, "share_forbidden", "this share link no longer opens the desktop")
    if session.state != SessionState.READY or not session.node:
        raise ApiError(409, "not_ready", f"session is {session.state.value}, not READY")
    try:
        reg = await c.registrations.load(sid)
    except (RegistrationRejected, NodeReportedFailure) as exc:
        # the tracker fails the session on its next tick; never connect to it
        c.tracker.poke()
        raise ApiError(409, "not_ready", "desktop registration rejected") from exc
    if reg is None:
        raise ApiError(409, "not_ready", "desktop not registered")
    conn = Connection(
        id=secrets.token_hex(8),
        session_id=sid,
        owner=session.user,
        user=user,
        scope=grant.scope,
        share_id=grant.share_id,
    )
    # The cap counts every replica's connections (the viewers hash in Redis).
    if not await c.viewers.join_within(conn, c.cfg.limits.max_websockets_per_session):
        raise ApiError(429, "too_many_connections", "too many open connections to this desktop")
    ws = web.WebSocketResponse(
        protocols=("binary",),
        max_msg_size=c.cfg.limits.ws_max_message_bytes,
        heartbeat=30.0,
        compress=False,  # RFB data is already compressed; deflate halves throughput
    )
    try:
        await ws.prepare(request)
    except BaseException:
        await c.viewers.leave(conn, "error")
        raise
    c.metrics.proxy_open.inc()
    may_type = conn.scope != "view"
    c.connections.add(conn)
    audit(
        request, "session.websocket", "open", user=user, session=sid, node=session.node,
        scope=conn.scope, share=conn.share_id, conn=conn.id,
    )  # fmt: skip

    counters = {d: c.metrics.proxy_bytes.labels(direction=d) for d in ("up", "down")}
    shared = c.metrics.share_connections.labels(scope=conn.scope) if conn.share_id else None

    def on_bytes(direction: str, n: int) -> None:
        counters[direction].inc(n)

    def on_input() -> None:
        c.activity.input(sid)

    reason = "error"
    try:
        if shared is not None:
            shared.inc()
        if may_type:
            await c.activity.mark(sid)
        # The target host is the node Slurm reports, never one from the registration.
        reason = await bridge_vnc(
            ws,
            session.node,
            reg.port,
            reg.password,
            limits=c.cfg.limits,
            on_bytes=on_bytes,
            allow_input=may_type,
            force_shared=conn.share_id is not None,
            on_input=on_input,
            stop=conn.stop,
        )
    finally:
        c.connections.discard(conn)
        if shared is not None:
            shared.dec()
        try:
            await c.viewers.leave(conn, reason)
            if may_type:
                await c.activity.mark(sid)  # nobody connected: idle from the disconnect
        except Exception as exc:  # Redis away: the entry goes stale, dropped when listed
            log.warning("proxy.viewer_leave_failed", session=sid, error=str(exc))
        c.metrics.proxy_open.dec()
        audit(
            request, "session.websocket", "closed", user=user, session=sid, reason=reason,
            scope=conn.scope, share=conn.share_id, conn=conn.id,
        )  # fmt: skip
    return ws


async def _own(request: web.Request, action: str, *, admin_ok: bool = False) -> Session:
    """The caller's own desktop in the path (another user's: 404; admins: 403 unless
    ``admin_ok``)."""
    c, identity = caller(request)
    try:
        session = await owned_record(request, identity, c.store, "session")
    except ApiError:
        audit(request, action, "denied", session=request.match_info["id"][:32])
        raise
    if session.user != identity.user and not admin_ok:
        audit(request, action, "denied", session=session.id, reason="not_owner")
        raise ApiError(403, "forbidden", "only the session's owner may do this")
    return session


@routes.post("/api/v1/sessions/{id}/keep")
async def keep_session(request: web.Request) -> web.Response:
    """ "Keep it": reset the desktop's idle clock."""
    c = ctx(request)
    session = await _own(request, "session.keep")
    if session.state != SessionState.READY:
        raise ApiError(409, "not_ready", f"session is {session.state.value}, not READY")
    await c.activity.mark(session.id)
    audit(request, "session.keep", "ok", session=session.id)
    return web.json_response({"id": session.id, "kept_at": iso(utcnow())})


@routes.post("/api/v1/sessions/{id}/relaunch")
async def relaunch_session(request: web.Request) -> web.Response:
    """A new desktop with the same request as this one (image, partition, size, time,
    geometry); policy, rate limit and max_sessions apply as for any create. The time is
    the one asked for: minutes added with extend were for the old desktop only."""
    session = await _own(request, "session.relaunch")
    body: dict[str, Any] = {
        "partition": session.partition or None,
        "cpus": session.cpus,
        "memory_gb": session.memory_gb,
        "gpus": session.gpus,
        "time_limit_minutes": max(1, session.time_limit_minutes - session.extended_minutes),
        "geometry": session.geometry,
    }
    if session.image:
        body["image"] = session.image
    response = await _create(request, body)
    audit(request, "session.relaunch", "ok", session=session.id)
    return response


@routes.post("/api/v1/sessions/{id}/extend")
async def extend_session(request: web.Request) -> web.Response:
    """Add ``minutes`` to a running desktop's time limit (scontrol update TimeLimit, as
    the daemon: needs ``slurm.allow_extend`` and the group's ``max_extension_minutes``)."""
    c, identity = caller(request)
    session = await _own(request, "session.extend")
    with denied_on_error(request, "session.extend"):
        body = await read_json(request)
        minutes = body.get("minutes") if isinstance(body, dict) else None
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
            raise ApiError(
                400, "invalid_field", "minutes must be a positive integer", field="minutes"
            )
        allowed = c.policy.effective(identity).max_extension_minutes
        if not c.cfg.slurm.allow_extend or allowed <= 0:
            raise ApiError(
                403, "policy_violation", "extending desktops is not allowed", field="minutes"
            )
        if session.extended_minutes + minutes > allowed:
            left = allowed - session.extended_minutes
            raise ApiError(
                403,
                "policy_violation",
                f"at most {left} more minutes may be added",
                field="minutes",
            )
        if session.state != SessionState.READY or not session.job_id:
            raise ApiError(409, "not_ready", f"session is {session.state.value}, not READY")
    new_limit = session.time_limit_minutes + minutes
    try:
        await c.backend.extend(session.job_id, new_limit)
    except NotImplementedError as exc:
        raise ApiError(501, "not_supported", str(exc)) from exc
    except SlurmRejected as exc:
        audit(request, "session.extend", "failed", session=session.id, reason=str(exc)[:200])
        raise ApiError(409, "slurm_rejected", f"Slurm refused: {exc}") from exc
    except SlurmError as exc:
        raise ApiError(503, "scheduler_unreachable", "scheduler unreachable") from exc

    def extended(s: Session) -> bool:
        s.time_limit_minutes = new_limit
        s.extended_minutes += minutes
        if s.ends_at is not None:
            s.ends_at = s.ends_at + timedelta(minutes=minutes)
            remaining = (s.ends_at - utcnow()).total_seconds()
            s.walltime_warned = [p for p in s.walltime_warned if p * 60 >= remaining]
        return True

    updated = await c.store.update(session.id, extended) or session
    c.tracker.poke()
    audit(request, "session.extend", "ok", session=session.id, minutes=minutes, limit=new_limit)
    return web.json_response(updated.to_public())


@routes.get("/api/v1/sessions/{id}/thumbnail")
async def session_thumbnail(request: web.Request) -> web.Response:
    """A PNG (≤ sessions.thumbnail_max_width wide) of a READY desktop, owner only."""
    c = ctx(request)
    session = await _own(request, "session.thumbnail")
    if session.state != SessionState.READY or not session.node:
        raise ApiError(409, "not_ready", f"session is {session.state.value}, not READY")
    try:
        reg = await c.registrations.load(session.id)
    except (RegistrationRejected, NodeReportedFailure) as exc:
        raise ApiError(409, "not_ready", "desktop registration rejected") from exc
    if reg is None:
        raise ApiError(409, "not_ready", "desktop not registered")
    try:
        data, age = await c.thumbnails.get(session.id, session.node, reg.port, reg.password)
    except ThumbnailError as exc:
        raise ApiError(502, "thumbnail_failed", "the desktop did not send a picture") from exc
    return web.Response(
        body=data,
        content_type="image/png",
        headers={
            "Cache-Control": "private, no-store",
            "Vary": "Authorization",
            "X-Thumbnail-Age": f"{age:.1f}",
        },
    )


def setup_routes(app: web.Application) -> None:
    app.add_routes(routes)
