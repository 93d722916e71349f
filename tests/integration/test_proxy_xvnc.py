"""bridge_vnc against a REAL TigerVNC Xvnc protected by VNC Authentication.

A websocket client behind a tiny aiohttp app sees security type None only, completes
ClientInit/ServerInit and gets a full-screen FramebufferUpdate; the password never
crosses the websocket. With a wrong password the browser gets a clean RFB failure.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.helpers.rfb_client import (
    RfbAuthFailed,
    TcpStream,
    WsStream,
    full_framebuffer,
    handshake,
)
from vizdesk.config import LimitsConfig
from vizdesk.contract.vncauth import vncpasswd_obfuscate
from vizdesk.proxy import rfb
from vizdesk.proxy.bridge import bridge_vnc

WIDTH, HEIGHT = 640, 480


@dataclass
class Xvnc:
    port: int
    password: str
    proc: subprocess.Popen[bytes]


def _free_display() -> int:
    for n in random.sample(range(60, 200), 140):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def xvnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Xvnc]:
    if shutil.which("Xvnc") is None:
        pytest.skip("TigerVNC Xvnc is not installed")
    tmp = tmp_path_factory.mktemp("xvnc")
    password = secrets.token_urlsafe(6)[:8]
    pwfile = tmp / "passwd"
    pwfile.write_bytes(vncpasswd_obfuscate(password))
    pwfile.chmod(0o600)
    for _attempt in range(3):
        display, port = _free_display(), _free_port()
        log = (tmp / f"xvnc-{display}.log").open("wb")
        proc = subprocess.Popen(
            [
                "Xvnc",
                f":{display}",
                "-rfbport",
                str(port),
                "-interface",
                "127.0.0.1",
                "-SecurityTypes",
                "VncAuth",
                "-PasswordFile",
                str(pwfile),
                "-geometry",
                f"{WIDTH}x{HEIGHT}",
                "-depth",
                "24",
                "-nolisten",
                "tcp",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    if s.recv(12).startswith(b"RFB 003."):
                        break
            except OSError:
                time.sleep(0.1)
        if proc.poll() is None:
            break
        log.close()
    else:
        pytest.fail(f"Xvnc did not start: {(tmp / f'xvnc-{display}.log').read_text()[-2000:]}")
    yield Xvnc(port, password, proc)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class App:
    url: str
    http: aiohttp.ClientSession
    results: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    counted: dict[str, int] = field(default_factory=dict)
    password: str = ""


@pytest.fixture
async def app(xvnc: Xvnc) -> AsyncIterator[App]:
    state: App

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=1 << 20)
        await ws.prepare(request)

        def count(direction: str, n: int) -> None:
            state.counted[direction] = state.counted.get(direction, 0) + n

        reason = await bridge_vnc(
            ws, "127.0.0.1", xvnc.port, state.password, limits=LimitsConfig(), on_bytes=count
        )
        state.results.put_nowait(reason)
        return ws

    web_app = web.Application()
    web_app.router.add_get("/vnc", handler)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        state = App(f"http://127.0.0.1:{port}/vnc", http, password=xvnc.password)
        yield state
    await runner.cleanup()


class RecordingWs(WsStream):
    """The test helper's websocket stream, also keeping every byte the browser received."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__(ws)
        self.seen = bytearray()

    async def read_exactly(self, n: int) -> bytes:
        data = await super().read_exactly(n)
        self.seen += data
        return data


async def test_full_framebuffer_through_proxy(app: App, xvnc: Xvnc) -> None:
    ws = await app.http.ws_connect(app.url, protocols=("binary",), max_msg_size=0)
    assert ws.protocol == "binary"
    stream = RecordingWs(ws)
    init = await asyncio.wait_for(handshake(stream, password=None), 30)
    assert init.security_types == [rfb.SEC_NONE]  # the browser is offered None only
    assert (init.width, init.height) == (WIDTH, HEIGHT)
    covered, _ = await asyncio.wait_for(full_framebuffer(stream, init), 60)
    assert covered >= WIDTH * HEIGHT
    assert xvnc.password.encode() not in stream.seen
    await ws.close()
    assert await asyncio.wait_for(app.results.get(), 20) == "client_closed"
    assert app.counted["down"] >= WIDTH * HEIGHT * init.bpp // 8
    assert app.counted["up"] > 0


async def test_wrong_password_fails_cleanly(app: App) -> None:
    app.password = "wrong-pw"
    ws = await app.http.ws_connect(app.url, protocols=("binary",), max_msg_size=0)
    with pytest.raises(RfbAuthFailed) as ei:
        await asyncio.wait_for(handshake(WsStream(ws), password=None), 30)
    assert str(ei.value) == rfb.REASON_AUTH_FAILED
    assert await asyncio.wait_for(app.results.get(), 20) == "vnc_auth_failed"
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_direct_tcp_without_password_still_fails(xvnc: Xvnc) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", xvnc.port)
    try:
        with pytest.raises(RfbAuthFailed, match="no usable security type"):
            await asyncio.wait_for(handshake(TcpStream(reader, writer), password=None), 20)
    finally:
        writer.close()


async def test_direct_tcp_with_password_works(xvnc: Xvnc) -> None:
    """Sanity check of the fixture: the server really is protected by this password."""
    reader, writer = await asyncio.open_connection("127.0.0.1", xvnc.port)
    try:
        init = await asyncio.wait_for(handshake(TcpStream(reader, writer), xvnc.password), 20)
        assert init.security_types == [rfb.SEC_VNC_AUTH]
    finally:
        writer.close()
