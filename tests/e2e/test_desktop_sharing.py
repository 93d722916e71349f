"""Share links enforced by the proxy, viewers, kick and revoke, thumbnails (real Slurm,
real Xvnc + XFCE). What reached the desktop is read from its X server (pointer position,
pressed keys, clipboard: tests/helpers/xprobe.py), so "nothing arrived" is proven where
it matters, not inferred from the proxy's own counters."""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from typing import Any

import aiohttp
import pytest

from tests.conftest import Daemon, wait_for_state
from tests.helpers.rfb_client import ServerInit, WsStream, connect_ws, full_framebuffer, handshake
from tests.helpers.xprobe import clipboard, desktop_env, probe

pytestmark = pytest.mark.e2e

KEYSYM_A = 0x61


async def create(http: aiohttp.ClientSession, daemon: Daemon, user: str = "alice") -> str:
    async with http.post(
        f"{daemon.url}/api/v1/sessions", json={"geometry": "1024x768"}, headers=daemon.headers(user)
    ) as r:
        body = await r.json()
        assert r.status == 201, body
    ready = await wait_for_state(http, daemon, body["id"], {"READY", "FAILED"}, user, timeout=60)
    assert ready["state"] == "READY", ready
    return str(body["id"])


async def api(
    http: aiohttp.ClientSession, daemon: Daemon, method: str, path: str, user: str,
    body: Any = None, groups: list[str] | None = None,
) -> tuple[int, Any]:  # fmt: skip
    async with http.request(
        method, daemon.url + path, json=body, headers=daemon.headers(user, groups)
    ) as r:
        return r.status, await r.json()


async def share(
    http: aiohttp.ClientSession, daemon: Daemon, sid: str, **body: Any
) -> dict[str, Any]:
    status, link = await api(http, daemon, "POST", f"/api/v1/sessions/{sid}/shares", "alice", body)
    assert status == 201, link
    return link  # type: ignore[no-any-return]


async def open_link(
    http: aiohttp.ClientSession, daemon: Daemon, link: dict[str, Any], user: str = "bob"
) -> tuple[aiohttp.ClientWebSocketResponse, WsStream, ServerInit]:
    status, t = await api(http, daemon, "POST", f"/api/v1/shares/{link['id']}/ticket", user)
    assert status == 200, t
    ws = await connect_ws(http, daemon.url + t["ws_path"])
    stream = WsStream(ws)
    init = await handshake(stream)
    return ws, stream, init


async def send_input(stream: WsStream, x: int, y: int, text: str, extensions: bool) -> None:
    await stream.write(struct.pack(">BBHH", 5, 0, x, y))  # PointerEvent: move
    await stream.write(struct.pack(">BBxxI", 4, 1, KEYSYM_A))  # KeyEvent: 'a' down
    raw = text.encode()
    await stream.write(struct.pack(">Bxxxi", 6, len(raw)) + raw)  # ClientCutText
    if not extensions:
        return
    # QEMU extended key event and an xvp reboot request: dropped as well for view (not
    # sent on control: TigerVNC does not speak xvp and would drop the connection)
    await stream.write(struct.pack(">BBHII", 255, 0, 1, KEYSYM_A, 30))
    await stream.write(bytes([250, 0, 1, 3]))


async def wait_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> tuple[float, Any]:
    t0 = time.monotonic()
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ):
            return time.monotonic() - t0, msg.extra


async def test_view_link_drops_input_control_link_types(http, daemon) -> None:
    sid = await create(http, daemon)
    env = desktop_env(sid)
    view = await share(http, daemon, sid, scope="view", expires_in_minutes=30)
    control = await share(http, daemon, sid, scope="control", expires_in_minutes=30)
    assert view["link_path"] == f"/?share={view['id']}" and "ticket" not in str(view)

    before = probe(env, KEYSYM_A)
    ws, stream, init = await open_link(http, daemon, view)
    await send_input(stream, 123, 45, "vizdesk-view-secret", extensions=True)
    # the framebuffer still flows to the view-only viewer
    covered, pixels = await full_framebuffer(stream, init)
    deadline = time.monotonic() + 25  # XFCE paints within seconds of READY
    while len(set(pixels)) <= 1 and time.monotonic() < deadline:
        await asyncio.sleep(1)
        covered, pixels = await full_framebuffer(stream, init, set_encodings=False)
    assert covered >= init.width * init.height and len(set(pixels)) > 1
    await asyncio.sleep(1.0)
    after = probe(env, KEYSYM_A)
    assert (after["x"], after["y"]) == (before["x"], before["y"]) != (123, 45)
    assert after["pressed"] is False
    assert "vizdesk-view-secret" not in clipboard(env)
    # an unknown message type closes a view-only connection
    await stream.write(bytes([252, 0, 0, 0]))
    _, why = await wait_closed(ws, 5)
    assert why == "input_refused"

    ws2, stream2, _ = await open_link(http, daemon, control)
    await send_input(stream2, 123, 45, "vizdesk-control-text", extensions=False)
    deadline = time.monotonic() + 5
    seen = probe(env, KEYSYM_A)
    while time.monotonic() < deadline and not (
        (seen["x"], seen["y"]) == (123, 45) and seen["pressed"]
    ):
        await asyncio.sleep(0.2)
        seen = probe(env, KEYSYM_A)
    assert (seen["x"], seen["y"]) == (123, 45) and seen["pressed"] is True
    await stream2.write(struct.pack(">BBxxI", 4, 0, KEYSYM_A))  # release
    deadline = time.monotonic() + 5
    while "vizdesk-control-text" not in clipboard(env) and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    assert "vizdesk-control-text" in clipboard(env)

    status, viewers = await api(http, daemon, "GET", f"/api/v1/sessions/{sid}/viewers", "alice")
    assert status == 200
    assert [(v["user"], v["scope"]) for v in viewers["viewers"]] == [("bob", "control")]
    await ws2.close()
    await api(http, daemon, "DELETE", f"/api/v1/sessions/{sid}", "alice")


async def read_sse(resp: aiohttp.ClientResponse, sink: list[tuple[str, Any]]) -> None:
    import json

    event = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            sink.append((event, json.loads(line[6:])))


async def test_revoke_and_kick_close_viewers_within_a_second(http, daemon) -> None:
    sid = await create(http, daemon)
    events: list[tuple[str, Any]] = []
    sse = await http.get(f"{daemon.url}/api/v1/events", headers=daemon.headers("alice"))
    reader = asyncio.create_task(read_sse(sse, events))
    try:
        link = await share(http, daemon, sid, scope="view", expires_in_minutes=10)
        ws_a, _, _ = await open_link(http, daemon, link)
        ws_b, _, _ = await open_link(http, daemon, link)  # two connections through one link
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
            e == "viewer" and d["event"] == "join" and d["user"] == "bob" for e, d in events
        ):
            await asyncio.sleep(0.1)
        join = next(d for e, d in events if e == "viewer" and d["event"] == "join")
        assert join["session_id"] == sid and join["scope"] == "view" and join["since"]

        t0 = time.monotonic()
        status, revoked = await api(
            http, daemon, "DELETE", f"/api/v1/sessions/{sid}/shares/{link['id']}", "alice"
        )
        assert status == 200 and revoked["revoked_at"] and revoked["active"] is False
        closed = await asyncio.gather(wait_closed(ws_a, 3), wait_closed(ws_b, 3))
        why_a, why_b = (why for _, why in closed)
        latency = time.monotonic() - t0
        print(f"revocation closed 2 viewers in {latency * 1000:.0f} ms")
        assert latency < 1.0 and why_a == why_b == "link revoked"
        status, err = await api(http, daemon, "POST", f"/api/v1/shares/{link['id']}/ticket", "bob")
        assert status == 403 and err["error"]["code"] == "share_forbidden"

        control = await share(http, daemon, sid, scope="control", expires_in_minutes=10)
        ws_c, _, _ = await open_link(http, daemon, control)
        _, viewers = await api(http, daemon, "GET", f"/api/v1/sessions/{sid}/viewers", "alice")
        (v,) = viewers["viewers"]
        t0 = time.monotonic()
        status, _ = await api(
            http, daemon, "DELETE", f"/api/v1/sessions/{sid}/viewers/{v['id']}", "alice"
        )
        assert status == 202
        _took, why = await wait_closed(ws_c, 3)
        assert time.monotonic() - t0 < 1.0 and why == "kicked by the owner"
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(
            e == "viewer" and d["event"] == "leave" and d["reason"] == "kicked by the owner"
            for e, d in events
        ):
            await asyncio.sleep(0.1)
        assert any(e == "viewer" and d["event"] == "leave" for e, d in events)
    finally:
        reader.cancel()
        sse.close()
        await api(http, daemon, "DELETE", f"/api/v1/sessions/{sid}", "alice")


async def test_refusals_expired_revoked_other_desktop_outside_set(http, daemon) -> None:
    sid = await create(http, daemon)
    bob_sid = await create(http, daemon, "bob")
    try:
        # expired
        short = await share(http, daemon, sid, expires_in_minutes=0.02)
        await asyncio.sleep(1.5)
        status, err = await api(http, daemon, "POST", f"/api/v1/shares/{short['id']}/ticket", "bob")
        assert status == 403 and "expired" in err["error"]["message"]
        # outside the named set (users and groups)
        named = await share(http, daemon, sid, users=["carol"], groups=["viz-team"])
        status, _ = await api(http, daemon, "POST", f"/api/v1/shares/{named['id']}/ticket", "bob")
        assert status == 403
        status, _ = await api(
            http, daemon, "POST", f"/api/v1/shares/{named['id']}/ticket", "bob", groups=["viz-team"]
        )
        assert status == 200
        # a link for another desktop
        link = await share(http, daemon, sid)
        status, err = await api(
            http, daemon, "POST", f"/api/v1/shares/{link['id']}/ticket", "bob",
            {"session_id": bob_sid},
        )  # fmt: skip
        assert status == 403 and err["error"]["field"] == "session_id"
        # bob's own link to his own desktop gives nothing of alice's
        status, bob_link = await api(
            http, daemon, "POST", f"/api/v1/sessions/{bob_sid}/shares", "bob", {"scope": "view"}
        )
        assert status == 201
        status, t = await api(
            http, daemon, "POST", f"/api/v1/shares/{bob_link['id']}/ticket", "bob"
        )
        assert status == 200 and t["session_id"] == bob_sid
        swapped = t["ws_path"].replace(bob_sid, sid)
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await connect_ws(http, daemon.url + swapped)
        assert exc.value.status == 403
        for method, path in [
            ("POST", f"/api/v1/sessions/{sid}/shares"),
            ("GET", f"/api/v1/sessions/{sid}/shares"),
            ("GET", f"/api/v1/sessions/{sid}/viewers"),
            ("GET", f"/api/v1/sessions/{sid}/thumbnail"),
            ("POST", f"/api/v1/sessions/{sid}/keep"),
        ]:
            status, _ = await api(
                http, daemon, method, path, "bob", {} if method == "POST" else None
            )
            assert status == 404, (method, path)
        # a revoked link's ticket, issued before the revocation, no longer opens the desktop
        status, t = await api(http, daemon, "POST", f"/api/v1/shares/{link['id']}/ticket", "bob")
        assert status == 200
        await api(http, daemon, "DELETE", f"/api/v1/sessions/{sid}/shares/{link['id']}", "alice")
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await connect_ws(http, daemon.url + t["ws_path"])
        assert exc.value.status == 403
        # policy: scope and expiry checked
        status, err = await api(
            http, daemon, "POST", f"/api/v1/sessions/{sid}/shares", "alice",
            {"expires_in_minutes": 100000},
        )  # fmt: skip
        assert status == 400 and err["error"]["field"] == "expires_in_minutes"
    finally:
        await api(http, daemon, "DELETE", f"/api/v1/sessions/{sid}", "alice")
        await api(http, daemon, "DELETE", f"/api/v1/sessions/{bob_sid}", "bob")


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + n]
        pos += 12 + n
    return width, height, zlib.decompress(idat)


async def test_thumbnail_png_size_not_uniform_owner_only(http, daemon) -> None:
    sid = await create(http, daemon)
    try:
        url = f"{daemon.url}/api/v1/sessions/{sid}/thumbnail"
        deadline = time.monotonic() + 20
        while True:
            t0 = time.monotonic()
            async with http.get(url, headers=daemon.headers("alice")) as r:
                assert r.status == 200, await r.text()
                assert r.headers["Content-Type"] == "image/png"
                assert r.headers["Cache-Control"] == "private, no-store"
                data = await r.read()
            took = time.monotonic() - t0
            width, height, raw = png_pixels(data)
            rows = {raw[y * (1 + width * 3) + 1 : (y + 1) * (1 + width * 3)] for y in range(height)}
            if len(rows) > 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(11)  # the desktop had not painted yet; the cache holds 10 s
        print(f"thumbnail {width}x{height}, {len(data)} bytes, first request {took * 1000:.0f} ms")
        assert (width, height) == (256, 192)  # 1024x768 / 4
        assert len(rows) > 1, "uniform thumbnail"
        async with http.get(url, headers=daemon.headers("alice")) as r:
            assert r.status == 200 and float(r.headers["X-Thumbnail-Age"]) >= 0
            assert await r.read() == data  # cached: no second grab within the interval
        async with http.get(url, headers=daemon.headers("bob")) as r:
            assert r.status == 404
    finally:
        await api(http, daemon, "DELETE", f"/api/v1/sessions/{sid}", "alice")
