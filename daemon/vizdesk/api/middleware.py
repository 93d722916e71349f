"""Request middleware: request ids, access log, JSON errors, a per-client cap on requests
in progress, CORS, bearer auth (decided by the matched route), security headers."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from ..core.errors import VizdeskError
from .audit import client_address
from .context import ctx
from .errors import HTTP_CODES, ApiError, error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Methods kept as a metric label; any other name a client sends counts as "other" (aiohttp
#: accepts arbitrary method tokens: one series set per name would be unbounded).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

log = structlog.get_logger("vizdesk.http")

# Routes that need no bearer token, by the canonical pattern of the route the router
# MATCHED (never by the request's path string: the router matches the raw path, where
# "%2F" is no separator, so ".../{id}%2Fvnc" is the route /sessions/{id}, not .../vnc).
# The websocket takes a one-time ticket instead; "/static" is the static files' prefix.
# Everything else, unmatched paths included, needs a token.
PUBLIC_ROUTES = frozenset(
    {
        "/",
        "/static",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/sessions/{id}/vnc",
    }
)
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9-]{1,64}")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HTML_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def route_of(request: web.Request) -> str | None:
    """The canonical pattern of the route the router matched (e.g.
    ``/api/v1/sessions/{id}``); None when none matched (404, 405)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def needs_auth(request: web.Request) -> bool:
    """Whether the matched route needs a bearer token (see :data:`PUBLIC_ROUTES`)."""
    return route_of(request) not in PUBLIC_ROUTES


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "missing_token",
            "an Authorization: Bearer <JWT> header is required",
            headers={"WWW-Authenticate": 'Bearer realm="vizdesk"'},
        )
    return token.strip()


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id + access log + latency metric + security headers."""
    rid = request.headers.get("X-Request-Id", "")
    if not _REQUEST_ID_RE.fullmatch(rid):  # ASCII only: str.isalnum() takes "²", "é"...
        rid = secrets.token_hex(8)
    request["request_id"] = rid
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers["X-Request-Id"] = rid
            for k, v in SECURITY_HEADERS.items():
                response.headers.setdefault(k, v)
            if response.content_type == "text/html":
                response.headers.setdefault("Content-Security-Policy", HTML_CSP)
            route = route_of(request)
            if route is None or route.startswith("/api/"):
                response.headers.setdefault("Cache-Control", "no-store")
        return response
    finally:
        elapsed = time.perf_counter() - started
        route_name = route_of(request) or "unmatched"
        method = request.method if request.method in HTTP_METHODS else "other"
        ctx(request).metrics.http.labels(method, route_name, str(status)).observe(elapsed)
        identity = request.get("identity")
        log.info(
            "http.request",
            method=request.method,
            path=request.rel_url.raw_path,  # as sent (%2F stays), never the query string
            status=status,
            ms=round(elapsed * 1000, 2),
            user=identity.user if identity is not None else None,
            remote=client_address(request),
        )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes ``{"error": {...}}`` with a 4xx/5xx; no traceback ever leaks."""
    try:
        return await handler(request)
    except VizdeskError as exc:  # the one root of every error a caller may see
        return error_response(
            exc.status, exc.code, exc.message, exc.field, exc.headers, exc.details
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 413:
            message = "request body too large"
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(exc.status, code, message, headers=headers)
    except RedisError:
        ctx(request).metrics.redis_errors.inc()
        log.exception("http.redis_error", path=request.rel_url.raw_path)
        return error_response(503, "storage_unavailable", "session store unavailable, retry")
    except Exception:
        log.exception("http.internal_error", path=request.rel_url.raw_path)
        return error_response(500, "internal_error", "internal error; see the daemon log")


# tus (uploads) needs its own methods and headers across origins, and the client must be
# able to read Location / Upload-Offset; the job output's size headers for the portal.
CORS_ALLOW_HEADERS = (
    "Authorization, Content-Type, Range, Tus-Resumable, Upload-Length, Upload-Offset, "
    "Upload-Metadata, Upload-Checksum, X-Request-Id"
)
CORS_ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_EXPOSE_HEADERS = (
    "Location, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Upload-Offset, "
    "Upload-Length, Upload-Expires, Content-Range, X-Output-Size, X-Output-Truncated, "
    "X-Request-Id"
)


@web.middleware
async def connection_cap(request: web.Request, handler: Handler) -> web.StreamResponse:
    """At most ``limits.max_connections_per_client`` requests in progress per client
    address (behind trusted proxies: the forwarded address), else 429. Long-lived ones
    (event streams, desktop websockets, slow uploads) count for as long as they last.

    Counted per daemon process: with several replicas a client may hold that many on
    each (it reaches each one over its own connections, so each protects itself).
    """
    c = ctx(request)
    cap = c.cfg.limits.max_connections_per_client
    if cap <= 0:
        return await handler(request)
    who = client_address(request)
    held = c.clients.get(who, 0)
    if held >= cap:
        raise ApiError(
            429,
            "too_many_client_connections",
            f"too many requests in progress from {who}: at most {cap}",
            retry_after=5,
        )
    c.clients[who] = held + 1
    try:
        return await handler(request)
    finally:
        left = c.clients.get(who, 1) - 1
        if left > 0:
            c.clients[who] = left
        else:
            c.clients.pop(who, None)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if needs_auth(request) and request.method != "OPTIONS":
        token = bearer_token(request)
        request["identity"] = await ctx(request).authenticator.authenticate(token)
        structlog.contextvars.bind_contextvars(user=request["identity"].user)
    return await handler(request)


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS for an allow-list of origins (off when the list is empty)."""
    allowed = ctx(request).cfg.server.cors_origins
    origin = request.headers.get("Origin")
    if not allowed or not origin or origin not in allowed:
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response: web.StreamResponse = web.Response(status=204)
    else:
        response = await handler(request)
    if not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        response.headers["Access-Control-Allow-Methods"] = CORS_ALLOW_METHODS
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    return response
