"""The HTTP layer refuses hostile requests with JSON 4xx, never a 500 (issue 17).

The real app (create_app) on aiohttp's TestServer, with the authenticator stubbed and a
Redis address nothing listens on: each request here is decided before any Redis call.
The same attacks against the real daemon on the test bed: tests/security/test_issue17_api.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import structlog.testing
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from vizdesk.api import base, events
from vizdesk.api.app import create_app
from vizdesk.api.context import CTX
from vizdesk.api.errors import ApiError
from vizdesk.api.middleware import PUBLIC_ROUTES, needs_auth, route_of
from vizdesk.auth.ratelimit import StreamLimiter
from vizdesk.auth.types import AuthError, Identity
from vizdesk.config import Config
from vizdesk.contract.keys import Keys
from vizdesk.core.validate import ValidationError
from vizdesk.slurm.base import SlurmBackend

GOOD = {"Authorization": "Bearer good"}
ADMIN = {"Authorization": "Bearer admin"}
SID = "0123456789abcdef"


class NoSlurm(SlurmBackend):
    name = "none"

    async def submit(self, req):  # type: ignore[no-untyped-def]
        raise AssertionError

    async def info_many(self, job_ids):  # type: ignore[no-untyped-def]
        return {}

    async def cancel(self, job_id, user):  # type: ignore[no-untyped-def]
        return None


def make_app(monkeypatch: pytest.MonkeyPatch, cfg: Config | None = None) -> web.Application:
    monkeypatch.setenv("VIZDESK_JWT_SECRET", "x" * 40)
    cfg = cfg or Config()
    # Port 1: refused at once; nothing here may depend on Redis.
    app = create_app(cfg, backend=NoSlurm(), redis=aioredis.Redis(port=1), run_tracker=False)
    app.cleanup_ctx.clear()  # no Redis ping, no event hub

    async def authenticate(token: str) -> Identity:
        if token not in ("good", "admin"):
            raise AuthError(401, "invalid_token", "token is invalid")
        return Identity(user="alice", uid=2000, gid=2000, is_admin=token == "admin")

    monkeypatch.setattr(app[CTX].authenticator, "authenticate", authenticate)
    return app


@pytest_asyncio.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_app(monkeypatch))) as c:
        yield c


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    err: dict[str, Any] = body["error"]
    assert err["code"] and err["message"]
    return err


# -- item 7: auth by the matched route, never by the path string ---------------------------


async def resolved(app: web.Application, method: str, path: str) -> web.Request:
    req = make_mocked_request(method, path, app=app)
    match_info = await app.router.resolve(req)
    match_info.add_app(app)
    req._match_info = match_info
    return req


async def test_encoded_slash_is_not_the_public_websocket_route(
    client: TestClient[Any, Any],
) -> None:
    # The router matches the raw path: ".../{id}%2Fvnc" is /sessions/{id}, not .../vnc.
    r = await client.get(f"/api/v1/sessions/{SID}%2Fvnc")
    assert (await error_of(r, 401))["code"] == "missing_token"
    assert "WWW-Authenticate" in r.headers
    r = await client.delete(f"/api/v1/sessions/{SID}%2Fvnc")
    await error_of(r, 401)
    r = await client.get(f"/api/v1/jobs/{SID}%2Fvnc")
    await error_of(r, 401)
    # With a token it is simply no such session (not a 500).
    r = await client.get(f"/api/v1/sessions/{SID}%2Fvnc", headers=GOOD)
    assert (await error_of(r, 404))["code"] == "not_found"


async def test_encoded_prefix_does_not_dodge_auth(client: TestClient[Any, Any]) -> None:
    for path in ("/api%2Fv1/sessions", "/api/v1%2Fsessions", "/nope", "/api/v1/nope"):
        r = await client.get(path)
        assert (await error_of(r, 401))["code"] == "missing_token", path


async def test_public_routes_stay_public(client: TestClient[Any, Any]) -> None:
    r = await client.get("/healthz")
    assert r.status == 200
    r = await client.get("/api/v1/openapi.json")
    assert r.status == 200
    # The websocket route takes a ticket instead of a token: refused for the ticket.
    r = await client.get(f"/api/v1/sessions/{SID}/vnc")
    assert (await error_of(r, 403))["code"] == "bad_ticket"


async def test_every_route_is_public_only_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(monkeypatch)
    canonicals = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert PUBLIC_ROUTES <= canonicals, PUBLIC_ROUTES - canonicals  # no stale entry
    req = await resolved(app, "GET", f"/api/v1/sessions/{SID}%2Fvnc")
    assert route_of(req) == "/api/v1/sessions/{id}" and needs_auth(req)
    req = await resolved(app, "GET", f"/api/v1/sessions/{SID}/vnc")
    assert route_of(req) == "/api/v1/sessions/{id}/vnc" and not needs_auth(req)
    req = await resolved(app, "GET", "/api%2Fv1/sessions")
    assert route_of(req) is None and needs_auth(req)
    req = await resolved(app, "PUT", "/healthz")  # 405: no route matched
    assert route_of(req) is None and needs_auth(req)


def test_identity_of_without_identity_is_401() -> None:
    req = make_mocked_request("GET", "/api/v1/sessions")
    with pytest.raises(ApiError) as err:
        base.identity_of(req)
    assert (err.value.status, err.value.code) == (401, "missing_token")


async def test_access_log_keeps_the_raw_path(client: TestClient[Any, Any]) -> None:
    with structlog.testing.capture_logs() as logs:
        await client.get(f"/api/v1/sessions/{SID}%2Fvnc?ticket=secret")
    paths = [e["path"] for e in logs if e.get("event") == "http.request"]
    assert paths == [f"/api/v1/sessions/{SID}%2Fvnc"]  # as sent; never the query string


# -- item 8: nesting depth of bodies --------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/api/v1/jobs", "/api/v1/admin/revoke"])
async def test_deeply_nested_body_is_400_naming_the_body(
    client: TestClient[Any, Any], path: str
) -> None:
    hdr = {**ADMIN, "Content-Type": "application/json"}
    r = await client.post(path, data=b"[" * 60000, headers=hdr)
    err = await error_of(r, 400)
    assert (err["code"], err["field"]) == ("json_too_deep", "body")
    r = await client.post(path, data=b'{"a":' * 65 + b"1" + b"}" * 65, headers=hdr)
    assert (await error_of(r, 400))["field"] == "body"


# -- item 9: query integers are ASCII digits ------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "²",
        "\u0661\u0662",
        "\U0001d7d9",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1_0",
        "0x1",
        "",
        "0",
        "1e3",
        "9" * 40,
        "11",
    ],
)
def test_query_int_refuses_all_but_ascii_digits_in_range(raw: str) -> None:
    req = make_mocked_request("GET", "/x?" + urlencode({"n": raw}))
    with pytest.raises(ValidationError) as err:
        base.query_int(req, "n", 1, 10)
    assert (err.value.status, err.value.field) == (400, "n")
    assert "between 1 and 10" in err.value.message


def test_query_int_accepts_digits() -> None:
    assert base.query_int(make_mocked_request("GET", "/x?n=7"), "n", 1, 10) == 7
    assert base.query_int(make_mocked_request("GET", "/x?n=07"), "n", 1, 10) == 7
    assert base.query_int(make_mocked_request("GET", "/x?n=10"), "n", 1, 10) == 10
    assert base.query_int(make_mocked_request("GET", "/x"), "n", 1, 10) is None


@pytest.mark.parametrize("raw", ["²", "%C2%B2", "\u0661", "-5", "0", "99999999999999999999"])
async def test_tail_bytes_is_400_naming_it(client: TestClient[Any, Any], raw: str) -> None:
    r = await client.get(f"/api/v1/jobs/{SID}/output?tail_bytes={raw}", headers=GOOD)
    err = await error_of(r, 400)
    assert (err["code"], err["field"]) == ("invalid_field", "tail_bytes")


@pytest.mark.parametrize("rid", ["²²", "ab cd", "a" * 65, "id\u00e9", "x\u0661"])
async def test_foreign_request_ids_are_replaced(client: TestClient[Any, Any], rid: str) -> None:
    r = await client.get("/healthz", headers={"X-Request-Id": rid})
    assert r.status == 200
    got = r.headers["X-Request-Id"]
    assert got != rid and len(got) == 16 and got.isascii()
    r = await client.get("/healthz", headers={"X-Request-Id": "trace-123-ABC"})
    assert r.headers["X-Request-Id"] == "trace-123-ABC"


# -- hardening: event streams per user, requests in progress per client --------------------


class FakeLeases:
    """The lease script of StreamLimiter in Python (the Lua itself runs against the real
    Redis in tests/integration/test_streams_redis.py), plus ZREM."""

    def __init__(self) -> None:
        self.sets: dict[str, dict[str, float]] = {}

    async def __call__(self, keys: list[str], args: list[Any]) -> list[int]:
        limit, lease_ms, member = int(args[0]), int(args[1]), str(args[2])
        now = time.monotonic() * 1000
        leases = self.sets.setdefault(keys[0], {})
        for m in [m for m, end in leases.items() if end <= now]:
            del leases[m]
        if member not in leases and len(leases) >= limit:
            return [0, len(leases)]
        leases[member] = now + lease_ms
        return [1, len(leases)]

    async def zrem(self, key: str, member: str) -> int:
        return 1 if self.sets.get(key, {}).pop(member, None) is not None else 0


def fake_leases(limiter: StreamLimiter) -> FakeLeases:
    fake = FakeLeases()
    limiter._script = fake  # type: ignore[assignment]
    limiter.redis = fake  # type: ignore[assignment]
    return fake


async def test_stream_limiter_leases() -> None:
    limiter = StreamLimiter(aioredis.Redis(port=1), Keys("t:"), 2, 45)
    fake = fake_leases(limiter)
    a = await limiter.acquire("alice")
    b = await limiter.acquire("alice")
    assert a and b and a != b
    with pytest.raises(AuthError) as err:
        await limiter.acquire("alice")
    e = err.value
    assert (e.status, e.code, e.retry_after) == (429, "too_many_streams", 45)
    assert "at most 2" in e.message
    assert await limiter.acquire("bob")  # per user
    assert await limiter.renew("alice", a)  # a held lease is always renewed
    await limiter.release("alice", a)
    await limiter.release("alice", a)  # idempotent
    c = await limiter.acquire("alice")
    assert set(fake.sets["t:streams:alice"]) == {b, c}
    off = StreamLimiter(aioredis.Redis(port=1), Keys("t:"), 0, 45)  # 0: no cap, no Redis
    assert await off.acquire("alice") == "" and await off.renew("alice", "")
    await off.release("alice", "")


@pytest_asyncio.fixture
async def limited(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient[Any, Any]]:
    cfg = Config()
    cfg.limits.max_event_streams_per_user = 2
    cfg.limits.max_connections_per_client = 3
    app = make_app(monkeypatch, cfg)
    c = app[CTX]
    fake_leases(c.streams)

    async def no_sessions(user: str) -> list[Any]:
        return []

    monkeypatch.setattr(c.store, "list_user", no_sessions)
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.05)  # closed streams notice soon
    async with TestClient(TestServer(app)) as client:
        yield client


async def open_stream(client: TestClient[Any, Any]) -> Any:
    r = await client.get("/api/v1/events", headers=GOOD)
    assert r.status == 200, await r.text()
    assert b"event: status" in await r.content.readuntil(b"\n\n")
    return r


async def eventually(probe: Any, timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        r = await probe()
        if r.status < 400 or time.monotonic() > deadline:
            return r
        r.release()
        await asyncio.sleep(0.05)


async def test_event_streams_per_user_are_capped(limited: TestClient[Any, Any]) -> None:
    first, second = await open_stream(limited), await open_stream(limited)
    r = await limited.get("/api/v1/events", headers=GOOD)
    err = await error_of(r, 429)
    assert err["code"] == "too_many_streams" and int(r.headers["Retry-After"]) >= 1
    first.close()  # the slot comes back when the stream ends
    r = await eventually(lambda: limited.get("/api/v1/events", headers=GOOD))
    assert r.status == 200
    r.close()
    second.close()


async def test_requests_in_progress_per_client_are_capped(limited: TestClient[Any, Any]) -> None:
    app = limited.server.app
    assert app is not None
    clients = app[CTX].clients
    streams = [await open_stream(limited), await open_stream(limited)]
    r = await limited.get("/api/v1/events", headers=GOOD)  # the per-user cap first
    assert (await error_of(r, 429))["code"] == "too_many_streams"
    gate = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"no_such_field": '
        await gate.wait()
        yield b"1}"

    upload = asyncio.create_task(
        limited.post(
            "/api/v1/sessions",
            data=slow_body(),
            headers={**GOOD, "Content-Type": "application/json"},
        )
    )
    deadline = time.monotonic() + 3
    while clients.get("127.0.0.1", 0) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert clients == {"127.0.0.1": 3}  # two streams and the slow upload
    r = await limited.get("/healthz")
    err = await error_of(r, 429)
    assert err["code"] == "too_many_client_connections" and r.headers["Retry-After"] == "5"
    gate.set()
    (await upload).close()
    r = await eventually(lambda: limited.get("/healthz"))
    assert r.status == 200
    for stream in streams:
        stream.close()
    deadline = time.monotonic() + 3
    while clients and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert clients == {}  # every slot given back
