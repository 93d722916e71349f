"""Share links and viewers of a desktop: create / list / revoke links, a viewer's ticket,
who is connected, kick one viewer.

The owner makes a link (``POST /sessions/{id}/shares``); a viewer (authenticated, never
anonymous, inside the link's named users/groups if any) asks ``POST /shares/{id}/ticket``
for their own one-time ticket and opens the same websocket the owner does
(``/sessions/{id}/vnc?ticket=``), where the proxy enforces the link's scope. Revoking a
link or kicking a viewer closes the connections on every replica (``proxy_close`` on the
events channel, see :mod:`vizdesk.sessions.sharing`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..auth.types import Identity
from ..sessions.model import Session, SessionState
from ..sessions.sharing import publish_close, validate_share_request
from .audit import audit, denied_on_error
from .base import identity_of, owned_record, read_json
from .context import CTX, ctx
from .errors import ApiError
from .events import HUB

routes = web.RouteTableDef()


async def _owner_session(request: web.Request, action: str, *, admin_ok: bool) -> Session:
    """The desktop in the path; the caller must own it (admins too when ``admin_ok``)."""
    c, identity = ctx(request), identity_of(request)
    try:
        session = await owned_record(request, identity, c.store, "session")
    except ApiError:
        audit(request, action, "denied", session=request.match_info["id"][:32])
        raise
    if session.user != identity.user and not admin_ok:
        audit(request, action, "denied", session=session.id, reason="not_owner")
        raise ApiError(403, "forbidden", "only the desktop's owner may share it")
    return session


@routes.post("/api/v1/sessions/{id}/shares")
async def create_share(request: web.Request) -> web.Response:
    c, identity = ctx(request), identity_of(request)
    session = await _owner_session(request, "share.create", admin_ok=False)
    with denied_on_error(request, "share.create"):
        req = validate_share_request(await read_json(request), c.cfg)
        if session.state.is_final:
            raise ApiError(409, "ended", f"session is {session.state.value}")
        share = await c.shares.create(session, identity, req)
    audit(
        request,
        "share.create",
        "ok",
        session=session.id,
        share=share.id,
        scope=share.scope,
        users=share.users,
        groups=share.groups,
        expires_at=share.to_public()["expires_at"],
    )
    return web.json_response(share.to_public(), status=201)


@routes.get("/api/v1/sessions/{id}/shares")
async def list_shares(request: web.Request) -> web.Response:
    session = await _owner_session(request, "share.list", admin_ok=True)
    found = await ctx(request).shares.list_for(session.id)
    return web.json_response({"shares": [s.to_public() for s in found]})


@routes.delete("/api/v1/sessions/{id}/shares/{share_id}")
async def revoke_share(request: web.Request) -> web.Response:
    c = ctx(request)
    session = await _owner_session(request, "share.revoke", admin_ok=True)
    share = await c.shares.get(request.match_info["share_id"])
    if share is None or share.session_id != session.id:
        raise ApiError(404, "not_found", "no such share link")
    share = await c.shares.revoke(share)
    audit(request, "share.revoke", "ok", session=session.id, share=share.id)
    return web.json_response(share.to_public())


@routes.get("/api/v1/sessions/{id}/viewers")
async def list_viewers(request: web.Request) -> web.Response:
    session = await _owner_session(request, "viewer.list", admin_ok=True)
    return web.json_response({"viewers": await ctx(request).viewers.list(session.id)})


@routes.delete("/api/v1/sessions/{id}/viewers/{conn_id}")
async def kick_viewer(request: web.Request) -> web.Response:
    c = ctx(request)
    session = await _owner_session(request, "viewer.kick", admin_ok=True)
    conn_id = request.match_info["conn_id"]
    known = {v["id"]: v for v in await c.viewers.list(session.id)}
    if conn_id not in known:
        raise ApiError(404, "not_found", "no such viewer")
    await publish_close(c.redis, c.keys, conn=conn_id, reason="kicked by the owner")
    audit(
        request, "viewer.kick", "ok", session=session.id, viewer=known[conn_id].get("user"),
        conn=conn_id,
    )  # fmt: skip
    return web.json_response({"kicked": conn_id}, status=202)


def _share_view(share_public: dict[str, object], session: Session | None) -> dict[str, object]:
    out = dict(share_public)
    out["session_state"] = session.state.value if session is not None else "ENDED"
    return out


async def _open_share(request: web.Request, identity: Identity, session_id: str | None) -> Session:
    c = ctx(request)
    share_id = request.match_info["share_id"]
    try:
        share = await c.shares.open_for(share_id, identity, session_id)
    except Exception as exc:
        audit(request, "share.open", "denied", share=share_id[:40], reason=getattr(exc, "code", ""))
        raise
    session = await c.store.get(share.session_id)
    if session is None or session.state.is_final:
        raise ApiError(410, "ended", "the shared desktop has ended")
    request["share"] = share
    return session


@routes.get("/api/v1/shares/{share_id}")
async def get_share(request: web.Request) -> web.Response:
    """What a link opens (for the viewer's page): owner, scope, expiry, desktop state."""
    identity = identity_of(request)
    session = await _open_share(request, identity, None)
    return web.json_response(_share_view(request["share"].to_public(), session))


@routes.post("/api/v1/shares/{share_id}/ticket")
async def share_ticket(request: web.Request) -> web.Response:
    c, identity = ctx(request), identity_of(request)
    body = await read_json(request)
    sid = body.get("session_id") if isinstance(body, dict) else None
    if sid is not None and not isinstance(sid, str):
        raise ApiError(400, "invalid_field", "session_id must be a string", field="session_id")
    session = await _open_share(request, identity, sid)
    share = request["share"]
    if session.state != SessionState.READY:
        raise ApiError(409, "not_ready", f"session is {session.state.value}, not READY")
    ticket = await c.tickets.issue(
        identity.user, session.id, request.headers.get("Origin"), share_id=share.id,
        scope=share.scope,
    )  # fmt: skip
    audit(request, "share.ticket", "ok", session=session.id, share=share.id, scope=share.scope)
    return web.json_response(
        {
            "ticket": ticket,
            "ws_path": f"/api/v1/sessions/{session.id}/vnc?ticket={ticket}",
            "expires_in": c.cfg.tickets.ttl_seconds,
            "session_id": session.id,
            "scope": share.scope,
            "owner": session.user,
        }
    )


def proxy_control(app: web.Application) -> Callable[[], Awaitable[None]]:
    """The loop that closes this replica's proxy connections on ``proxy_close`` events
    and re-checks shared connections' links."""

    async def run() -> None:
        c = app[CTX]
        hub = app[HUB]
        q = hub.subscribe()
        checker = asyncio.create_task(c.connections.run())
        try:
            while True:
                c.connections.handle(await q.get())
        finally:
            hub.unsubscribe(q)
            checker.cancel()
            await asyncio.gather(checker, return_exceptions=True)

    return run


def setup_routes(app: web.Application) -> None:
    app.add_routes(routes)
