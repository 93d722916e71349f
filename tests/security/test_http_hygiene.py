"""HTTP hygiene and abuse limits of the running daemon: headers, CORS, sizes, websockets,
and the audit trail."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.conftest import start_daemon, stop_daemon, wait_for_state
from tests.helpers.rfb_client import WsStream, connect_ws, handshake

pytestmark = pytest.mark.e2e


async def test_security_headers_on_html_and_api(http, daemon) -> None:
    async with http.get(f"{daemon.url}/") as r:
        assert r.status == 200
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
    async with http.get(f"{daemon.url}/api/v1/me", headers=daemon.headers("alice")) as r:
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Request-Id"]


async def test_cors_is_off_by_default(http, daemon) -> None:
    hdr = {**daemon.headers("alice"), "Origin": "https://portal.example"}
    async with http.get(f"{daemon.url}/api/v1/me", headers=hdr) as r:
        assert "Access-Control-Allow-Origin" not in r.headers


@pytest.fixture(scope="module")
def cors_daemon(testbed):
    d = start_daemon(testbed, "cors", {"server": {"cors_origins": ["https://portal.example"]}})
    yield d
    stop_daemon(d)


async def test_cors_allow_list(http, cors_daemon) -> None:
    d = cors_daemon
    pre = {
        "Origin": "https://portal.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    async with http.options(f"{d.url}/api/v1/sessions", headers=pre) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://portal.example"
    async with http.options(
        f"{d.url}/api/v1/sessions", headers={**pre, "Origin": "https://evil.example"}
    ) as r:
        assert "Access-Control-Allow-Origin" not in r.headers
    # tus from the allowed origin: PATCH/HEAD and the Upload-* headers, Location readable
    tus = {**pre, "Access-Control-Request-Method": "PATCH",
           "Access-Control-Request-Headers": "upload-offset, tus-resumable, content-type"}
    async with http.options(f"{d.url}/api/v1/uploads/abcdefgh12345678", headers=tus) as r:
        assert r.status == 204
        assert "PATCH" in r.headers["Access-Control-Allow-Methods"]
        allowed = r.headers["Access-Control-Allow-Headers"].lower()
        assert "upload-offset" in allowed and "tus-resumable" in allowed
        assert "Upload-Offset" in r.headers["Access-Control-Expose-Headers"]
        assert "Location" in r.headers["Access-Control-Expose-Headers"]


async def test_oversized_headers_are_refused(http, daemon) -> None:
    hdr = {**daemon.headers("alice"), "X-Big": "a" * 20000}
    async with http.get(f"{daemon.url}/api/v1/me", headers=hdr) as r:
        assert r.status in (400, 431)


async def test_unknown_routes_and_methods_are_json(http, daemon) -> None:
    async with http.get(f"{daemon.url}/api/v1/nope", headers=daemon.headers("alice")) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    async with http.put(f"{daemon.url}/api/v1/sessions", headers=daemon.headers("alice")) as r:
        assert r.status == 405 and (await r.json())["error"]["code"] == "method_not_allowed"


async def test_websocket_limit_per_session_and_audit_trail(http, daemon) -> None:
    hdr = daemon.headers("alice")
    async with http.post(
        f"{daemon.url}/api/v1/sessions", json={"geometry": "640x480"}, headers=hdr
    ) as r:
        sid = (await r.json())["id"]
    await wait_for_state(http, daemon, sid, {"READY"}, timeout=20)
    limit = daemon.cfg.limits.max_websockets_per_session
    open_ws = []
    try:
        for _ in range(limit):
            async with http.post(f"{daemon.url}/api/v1/sessions/{sid}/connect", headers=hdr) as r:
                t = await r.json()
            ws = await connect_ws(http, daemon.url + t["ws_path"])
            await handshake(WsStream(ws))
            open_ws.append(ws)
        async with http.post(f"{daemon.url}/api/v1/sessions/{sid}/connect", headers=hdr) as r:
            t = await r.json()
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await connect_ws(http, daemon.url + t["ws_path"])
        assert err.value.status == 429
    finally:
        for ws in open_ws:
            await ws.close()
        async with http.delete(f"{daemon.url}/api/v1/sessions/{sid}", headers=hdr):
            pass
    await wait_for_state(http, daemon, sid, {"ENDED"}, timeout=15)
    events = [
        json.loads(line)
        for line in daemon.log_text().splitlines()
        if line.startswith("{") and '"audit"' in line and sid in line
    ]
    actions = {(e["action"], e["outcome"]) for e in events}
    for wanted in (
        ("session.create", "ok"),
        ("session.connect", "ok"),
        ("session.websocket", "open"),
        ("session.websocket", "closed"),
        ("session.delete", "ok"),
    ):
        assert wanted in actions, (wanted, actions)
    for e in events:
        assert e["user"] == "alice" and e["source"] and e["session"] == sid
        assert "ticket" not in json.dumps(e).replace('"bad_ticket"', "")


async def test_denials_are_audited(http, daemon) -> None:
    async with http.post(
        f"{daemon.url}/api/v1/sessions", json={"gpus": 7}, headers=daemon.headers("bob")
    ) as r:
        assert r.status == 403
    denied = [
        json.loads(line)
        for line in daemon.log_text().splitlines()
        if line.startswith("{") and '"audit"' in line and '"denied"' in line
    ]
    assert any(e["user"] == "bob" and e["action"] == "session.create" for e in denied)


async def test_forwarded_for_is_ignored_unless_from_a_trusted_proxy(http, daemon) -> None:
    async with http.get(
        f"{daemon.url}/api/v1/me",
        headers={**daemon.headers("alice"), "X-Forwarded-For": "203.0.113.9"},
    ):
        pass
    lines = [
        json.loads(line)
        for line in daemon.log_text().splitlines()
        if line.startswith("{") and '"http.request"' in line and '"/api/v1/me"' in line
    ]
    assert lines and lines[-1]["remote"] == "127.0.0.1"  # a client cannot forge its address


@pytest.fixture(scope="module")
def proxied_daemon(testbed):
    d = start_daemon(testbed, "proxied", {"server": {"trusted_proxies": ["127.0.0.0/8"]}})
    yield d
    stop_daemon(d)


async def test_forwarded_for_from_trusted_proxy_names_the_client(http, proxied_daemon) -> None:
    d = proxied_daemon
    hdr = {**d.headers("bob"), "X-Forwarded-For": "198.51.100.7, 203.0.113.9, 127.0.0.1"}
    async with http.post(f"{d.url}/api/v1/sessions", json={"gpus": 7}, headers=hdr) as r:
        assert r.status == 403
    denied = [
        json.loads(line)
        for line in d.log_text().splitlines()
        if line.startswith("{") and '"audit"' in line and '"denied"' in line
    ]
    assert denied[-1]["source"] == "203.0.113.9"  # right-most hop not a trusted proxy
