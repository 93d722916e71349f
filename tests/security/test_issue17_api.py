"""Issue 17, the HTTP-layer findings, against the running daemon on the test bed: each
request got a 500 (items 7-9) or more than it should (groups, stream and connection
limits) before the fix.

Module-level checks of the same fixes: tests/unit/test_api_hardening.py,
tests/unit/test_jsonsafe.py, tests/unit/test_auth_jwt.py (groups claim) and
tests/integration/test_streams_redis.py (the lease script).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from yarl import URL

from tests.conftest import Daemon, start_daemon, stop_daemon

pytestmark = pytest.mark.e2e

SID = "0123456789abcdef"


async def json_error(r: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    text = await r.text()
    assert r.status == status, text
    assert r.content_type == "application/json", text
    assert "Traceback" not in text
    err: dict[str, Any] = (await r.json())["error"]
    assert err["code"] and err["message"]
    return err


def raw(url: str) -> URL:
    """The URL exactly as written: "%2F" must reach the daemon encoded."""
    return URL(url, encoded=True)


def no_internal_errors(daemon: Daemon, since: int) -> None:
    log = daemon.log_text()[since:]
    assert "http.internal_error" not in log and "RecursionError" not in log


# -- item 7 ---------------------------------------------------------------------------------


async def test_encoded_slash_before_vnc_is_401_not_500(http, daemon) -> None:
    """The middleware took the decoded ".../vnc" for the public websocket route while the
    router matched /sessions/{id}: no auth, then a KeyError → 500."""
    mark = len(daemon.log_text())
    for method in ("GET", "DELETE"):
        url = raw(f"{daemon.url}/api/v1/sessions/{SID}%2Fvnc")
        async with http.request(method, url) as r:
            err = await json_error(r, 401)
            assert err["code"] == "missing_token"
            assert "WWW-Authenticate" in r.headers
    async with http.get(raw(f"{daemon.url}/api/v1/jobs/{SID}%2Fvnc")) as r:
        await json_error(r, 401)
    async with http.get(raw(f"{daemon.url}/api%2Fv1/sessions")) as r:  # unmatched: a token too
        await json_error(r, 401)
    async with http.get(
        raw(f"{daemon.url}/api/v1/sessions/{SID}%2Fvnc"), headers=daemon.headers("alice")
    ) as r:
        assert (await json_error(r, 404))["code"] == "not_found"
    # The real websocket route still takes a ticket, not a token.
    async with http.get(f"{daemon.url}/api/v1/sessions/{SID}/vnc") as r:
        assert (await json_error(r, 403))["code"] == "bad_ticket"
    no_internal_errors(daemon, mark)
    assert f"/api/v1/sessions/{SID}%2Fvnc" in daemon.log_text()[mark:]  # logged as sent


# -- item 8 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/api/v1/jobs"])
async def test_deeply_nested_body_is_400_naming_the_body(http, daemon, path) -> None:
    mark = len(daemon.log_text())
    hdr = {**daemon.headers("alice"), "Content-Type": "application/json"}
    async with http.post(f"{daemon.url}{path}", data=b"[" * 60000, headers=hdr) as r:
        err = await json_error(r, 400)
        assert (err["code"], err["field"]) == ("json_too_deep", "body")
        assert "deeper than" in err["message"]
    nested_object = b'{"a":' * 200 + b"1" + b"}" * 200
    async with http.post(f"{daemon.url}{path}", data=nested_object, headers=hdr) as r:
        assert (await json_error(r, 400))["field"] == "body"
    no_internal_errors(daemon, mark)


async def test_deeply_nested_token_header_is_401(http, daemon) -> None:
    # 5000 levels: deep enough to recurse out of json.loads, short enough for one header.
    header = base64.urlsafe_b64encode(b"[" * 5000).rstrip(b"=").decode()
    hdr = {"Authorization": f"Bearer {header}.e30.c2ln"}
    async with http.get(f"{daemon.url}/api/v1/me", headers=hdr) as r:
        assert (await json_error(r, 401))["code"] == "invalid_token"


# -- item 9 ---------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def alice_job(http, daemon) -> AsyncIterator[str]:
    async with http.post(
        f"{daemon.url}/api/v1/jobs",
        json={"template": "hello", "parameters": {"message": "issue 17"}},
        headers=daemon.headers("alice"),
    ) as r:
        body = await r.json()
        assert r.status == 201, body
    yield body["id"]
    async with http.delete(
        f"{daemon.url}/api/v1/jobs/{body['id']}", headers=daemon.headers("alice")
    ):
        pass


@pytest.mark.parametrize(
    "value", ["²", "\u0661\u0662", "\U0001d7d9", "+5", " 5", "1_0", "-1", "0", "9" * 30]
)
async def test_tail_bytes_must_be_ascii_digits(http, daemon, alice_job, value) -> None:
    """'²'.isdigit() is true, int('²') raises: that was a 500 (with a job of one's own;
    the parameter is now checked before the job is looked up)."""
    mark = len(daemon.log_text())
    url = f"{daemon.url}/api/v1/jobs/{alice_job}/output"
    params = {"tail_bytes": value}
    async with http.get(url, params=params, headers=daemon.headers("alice")) as r:
        err = await json_error(r, 400)
        assert (err["code"], err["field"]) == ("invalid_field", "tail_bytes")
        assert "tail_bytes" in err["message"]
    no_internal_errors(daemon, mark)


# -- hardening: a single-string groups claim is one group -----------------------------------


def token_with_groups(daemon: Daemon, groups: object, user: str = "alice") -> str:
    cfg = daemon.cfg.auth
    now = int(time.time())
    claims: dict[str, Any] = {
        cfg.username_claim: user,
        cfg.groups_claim: groups,
        "iss": cfg.issuer or cfg.dev_token_issuer,
        "iat": now,
        "exp": now + 300,
        "jti": f"issue17-{now}-{id(groups)}",
    }
    if cfg.audience:
        claims["aud"] = cfg.audience
    secret = cfg.hs256_secret()
    assert secret
    return jwt.encode(claims, secret.encode(), algorithm="HS256")


async def test_string_groups_claim_is_one_group(http, daemon) -> None:
    assert daemon.cfg.auth.groups_claim_separator == ""  # the default
    admin = daemon.cfg.auth.admin_groups[0]
    hdr = {"Authorization": f"Bearer {token_with_groups(daemon, 'Research Staff')}"}
    async with http.get(f"{daemon.url}/api/v1/me", headers=hdr) as r:
        assert r.status == 200, await r.text()
        me = await r.json()
    assert me["groups"] == ["Research Staff"] and not me["is_admin"]
    # A crafted group name that contains the admin group does not make an admin.
    hdr = {"Authorization": f"Bearer {token_with_groups(daemon, f'staff {admin}')}"}
    async with http.get(f"{daemon.url}/api/v1/me", headers=hdr) as r:
        me = await r.json()
    assert me["groups"] == [f"staff {admin}"] and not me["is_admin"]
    async with http.get(f"{daemon.url}/api/v1/sessions?all=true", headers=hdr) as r:
        assert (await json_error(r, 403))["field"] == "all"
    # The exact name, as a string or in a list, still is the admin group.
    for claim in (admin, [admin]):
        hdr = {"Authorization": f"Bearer {token_with_groups(daemon, claim)}"}
        async with http.get(f"{daemon.url}/api/v1/me", headers=hdr) as r:
            assert (await r.json())["is_admin"], claim


@pytest.fixture(scope="module")
def splitting_daemon(testbed) -> Iterator[Daemon]:
    d = start_daemon(testbed, "groupsplit", {"auth": {"groups_claim_separator": ", "}})
    yield d
    stop_daemon(d)


async def test_groups_claim_split_only_when_configured(http, splitting_daemon) -> None:
    d = splitting_daemon
    hdr = {"Authorization": f"Bearer {token_with_groups(d, 'Research Staff,gpu-users')}"}
    async with http.get(f"{d.url}/api/v1/me", headers=hdr) as r:
        me = await r.json()
    assert me["groups"] == ["Research", "Staff", "gpu-users"]


# -- hardening: event streams per user, requests in progress per client --------------------

STREAMS = 2
CONNECTIONS = 5


@pytest.fixture(scope="module")
def limits_daemons(testbed) -> Iterator[tuple[Daemon, Daemon]]:
    """Two replicas on one Redis prefix: the stream cap holds across both."""
    limits = {
        "limits": {
            "max_event_streams_per_user": STREAMS,
            "max_connections_per_client": CONNECTIONS,
        }
    }
    one = start_daemon(testbed, "limits", limits)
    two = start_daemon(testbed, "limits2", {**limits, "redis": {"key_prefix": one.prefix}})
    yield one, two
    stop_daemon(two)
    stop_daemon(one)


async def open_stream(
    http: aiohttp.ClientSession, d: Daemon, user: str = "alice"
) -> aiohttp.ClientResponse:
    r = await http.get(f"{d.url}/api/v1/events", headers=d.headers(user))
    assert r.status == 200, await r.text()
    assert b"event: status" in await asyncio.wait_for(r.content.readuntil(b"\n\n"), 10)
    return r


async def eventually_ok(
    probe: Callable[[], Awaitable[aiohttp.ClientResponse]], timeout: float = 30.0
) -> aiohttp.ClientResponse:
    """The stream's slot comes back when the daemon notices the close (at its next
    keepalive write, 15 s at most)."""
    deadline = time.monotonic() + timeout
    while True:
        r = await probe()
        if r.status < 400 or time.monotonic() > deadline:
            return r
        r.release()
        await asyncio.sleep(0.5)


async def test_event_streams_per_user_are_capped_across_replicas(
    http, limits_daemons, redis_admin: aioredis.Redis
) -> None:
    one, two = limits_daemons
    streams = [await open_stream(http, one), await open_stream(http, two)]
    try:
        assert await redis_admin.zcard(f"{one.prefix}streams:alice") == STREAMS
        for d in (one, two):
            async with http.get(f"{d.url}/api/v1/events", headers=d.headers("alice")) as r:
                err = await json_error(r, 429)
                assert err["code"] == "too_many_streams"
                assert int(r.headers["Retry-After"]) >= 1
        bob = await open_stream(http, one, "bob")  # per user
        bob.close()
        streams.pop(0).close()
        r = await eventually_ok(
            lambda: http.get(f"{two.url}/api/v1/events", headers=two.headers("alice"))
        )
        assert r.status == 200, await r.text()
        streams.append(r)
    finally:
        for s in streams:
            s.close()


@pytest.fixture(scope="module")
def capped_daemon(testbed) -> Iterator[Daemon]:
    d = start_daemon(testbed, "conncap", {"limits": {"max_connections_per_client": CONNECTIONS}})
    yield d
    stop_daemon(d)


async def test_requests_in_progress_per_client_are_capped(http, capped_daemon) -> None:
    d = capped_daemon
    held = [await open_stream(http, d, user) for user in ("alice", "bob", "alice", "bob")]
    try:
        async with http.get(f"{d.url}/healthz") as r:  # the 5th in progress: allowed
            assert r.status == 200
        # A slow upload holds the 5th slot: the 6th request, of any kind, is refused.
        gate = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:  # a 400 in the end: nothing created
            yield b'{"no_such_field": '
            await gate.wait()
            yield b"1}"

        upload = asyncio.create_task(
            http.post(
                f"{d.url}/api/v1/sessions",
                data=slow_body(),
                headers={**d.headers("alice"), "Content-Type": "application/json"},
            )
        )
        await asyncio.sleep(1.0)
        for path in ("/healthz", "/api/v1/events"):
            async with http.get(f"{d.url}{path}", headers=d.headers("alice")) as r:
                assert (await json_error(r, 429))["code"] == "too_many_client_connections"
                assert r.headers["Retry-After"]
        gate.set()
        (await upload).close()
        held.pop().close()
        r = await eventually_ok(lambda: http.get(f"{d.url}/healthz"))
        assert r.status == 200
        r.close()
    finally:
        for s in held:
            s.close()


async def test_uncommon_http_methods_add_no_metric_series(http, daemon) -> None:
    """The HTTP parser passes WebDAV & co. methods to the app: they must not each become
    a metric label value (a client could add series without end)."""
    odd = ["PROPFIND", "MKCOL", "LOCK", "UNLOCK", "SEARCH", "PURGE", "REPORT", "MKACTIVITY"]
    for method in odd:
        async with http.request(method, f"{daemon.url}/healthz") as r:
            await r.read()
    async with http.get(f"{daemon.url}/metrics") as r:
        text = await r.text()
    assert not [m for m in odd if f'method="{m}"' in text]
    assert 'method="other"' in text
