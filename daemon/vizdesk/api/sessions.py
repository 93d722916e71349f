"""Session endpoints: create, list, inspect, stop, connect (ticket) and the VNC websocket."""

from __future__ import annotations

from aiohttp import web

from ..auth.policy import ask
from ..auth.types import AuthError
from ..contract.registration import NodeReportedFailure, RegistrationRejected
from ..core.submit import SubmitError
from ..images.resolve import resolve_image
from ..proxy.bridge import bridge_vnc
from ..sessions.model import SessionState
from ..sessions.request import validate_session_request
from .audit import audit, denied_on_error
from .base import (
    RECORD_ID_RE,
    caller,
    delete_record,
    get_record,
    identity_of,
    list_records,
    owned_record,
    read_json,
)
from .context import ctx
from .errors import ApiError

routes = web.RouteTableDef()


@routes.post("/api/v1/sessions")
async def create_session(request: web.Request) -> web.Response:
    c, identity = caller(request)
    with denied_on_error(request, "session.create"):
        req = validate_session_request(await read_json(request), c.cfg)
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
        user = await c.tickets.redeem(
            request.query.get("ticket", ""), sid, request.headers.get("Origin")
        )
    except AuthError:
        audit(request, "session.websocket", "denied", session=sid, reason="bad_ticket")
        raise
    session = await c.store.get(sid)
    if session is None or session.user != user:
        raise ApiError(404, "not_found", "no such session")
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
    if c.websockets.get(sid, 0) >= c.cfg.limits.max_websockets_per_session:
        raise ApiError(429, "too_many_connections", "too many open connections to this desktop")
    ws = web.WebSocketResponse(
        protocols=("binary",),
        max_msg_size=c.cfg.limits.ws_max_message_bytes,
        heartbeat=30.0,
        compress=False,  # RFB data is already compressed; deflate halves throughput
    )
    await ws.prepare(request)
    c.websockets[sid] = c.websockets.get(sid, 0) + 1
    c.metrics.proxy_open.inc()
    audit(request, "session.websocket", "open", user=user, session=sid, node=session.node)

    counters = {d: c.metrics.proxy_bytes.labels(direction=d) for d in ("up", "down")}

    def on_bytes(direction: str, n: int) -> None:
        counters[direction].inc(n)

    reason = "error"
    try:
        # The target host is the node Slurm reports, never one from the registration.
        reason = await bridge_vnc(
            ws, session.node, reg.port, reg.password, limits=c.cfg.limits, on_bytes=on_bytes
        )
    finally:
        c.metrics.proxy_open.dec()
        left = c.websockets.get(sid, 1) - 1
        if left > 0:
            c.websockets[sid] = left
        else:
            c.websockets.pop(sid, None)
        audit(request, "session.websocket", "closed", user=user, session=sid, reason=reason)
    return ws


def setup_routes(app: web.Application) -> None:
    app.add_routes(routes)
