"""bridge_vnc behind a tiny aiohttp app, against an in-process fake VNC server (TCP on
localhost). The real-Xvnc counterpart is tests/integration/test_proxy_xvnc.py.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from vizdesk.config import LimitsConfig
from vizdesk.contract.vncauth import vnc_auth_response
from vizdesk.proxy import rfb
from vizdesk.proxy.bridge import bridge_vnc

PASSWORD = "Zq8#kL2p"
SERVER_INIT = struct.pack(">HH", 320, 200) + bytes(16) + struct.pack(">I", 4) + b"fake"


@dataclass
class FakeVnc:
    password: str = PASSWORD
    mode: str = "echo"  # echo | close | flood
    received: bytearray = field(default_factory=bytearray)
    eof: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            writer.write(b"RFB 003.008\n")
            assert await reader.readexactly(12) == b"RFB 003.008\n"
            writer.write(b"\x01\x02")
            assert await reader.readexactly(1) == b"\x02"
            challenge = os.urandom(16)
            writer.write(challenge)
            if await reader.readexactly(16) != vnc_auth_response(self.password, challenge):
                writer.write(struct.pack(">I", 1) + struct.pack(">I", 6) + b"denied")
                await writer.drain()
                return
            writer.write(struct.pack(">I", 0))
            self.received += await reader.readexactly(1)  # ClientInit
            writer.write(SERVER_INIT)
            await writer.drain()
            if self.mode == "close":
                return
            if self.mode == "flood":
                chunk = b"\xab" * (1 << 20)
                while True:
                    writer.write(chunk)
                    await writer.drain()
            while data := await reader.read(65536):
                self.received += data
                writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.eof.set()
            writer.close()


@dataclass
class World:
    vnc: FakeVnc
    vnc_port: int
    url: str
    http: aiohttp.ClientSession
    limits: LimitsConfig
    results: asyncio.Queue[str]
    counted: dict[str, int]
    ws_max_msg: int = 4 * 1024 * 1024
    target_port: int = 0
    password: str = PASSWORD

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(self.url, protocols=("binary",), max_msg_size=0)

    async def result(self) -> str:
        return await asyncio.wait_for(self.results.get(), 30)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    vnc = FakeVnc()
    server = await asyncio.start_server(vnc.handle, "127.0.0.1", 0)
    vnc_port = server.sockets[0].getsockname()[1]
    w: World

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=w.ws_max_msg)
        await ws.prepare(request)

        def count(direction: str, n: int) -> None:
            w.counted[direction] = w.counted.get(direction, 0) + n

        reason = await bridge_vnc(
            ws,
            "127.0.0.1",
            w.target_port or vnc_port,
            w.password,
            limits=w.limits,
            on_bytes=count,
            connect_timeout=5,
        )
        w.results.put_nowait(reason)
        return ws

    app = web.Application()
    app.router.add_get("/vnc", handler)
    # Like production (and unlike aiohttp's TestServer): handlers are not cancelled when the
    # client goes away, so bridge_vnc's own close handling is what is tested.
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        w = World(
            vnc, vnc_port, f"http://127.0.0.1:{port}/vnc", http, LimitsConfig(), asyncio.Queue(), {}
        )
        yield w
    await runner.cleanup()
    server.close()


class Reader:
    """Reassembles the proxy's binary frames into exact reads."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.buf = ws, bytearray()

    async def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            msg = await asyncio.wait_for(self.ws.receive(), 20)
            assert msg.type is WSMsgType.BINARY, (msg.type, msg.data, msg.extra)
            self.buf += msg.data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


async def handshake(ws: aiohttp.ClientWebSocketResponse, *, split: bool = True) -> Reader:
    r = Reader(ws)
    assert await r.read(12) == b"RFB 003.008\n"
    if split:  # frames need not align with RFB messages
        for b in b"RFB 003.008\n":
            await ws.send_bytes(bytes([b]))
    else:
        await ws.send_bytes(b"RFB 003.008\n")
    assert await r.read(2) == b"\x01\x01"  # security type None only
    # security choice + ClientInit + a first client message, all in one frame
    await ws.send_bytes(b"\x01" + b"\x01" + struct.pack(">BBHi", 2, 0, 1, 0))
    assert await r.read(4) == bytes(4)
    assert await r.read(len(SERVER_INIT)) == SERVER_INIT
    return r


async def test_roundtrip(world: World) -> None:
    ws = await world.connect()
    assert ws.protocol == "binary"
    r = await handshake(ws)
    # A message type the input filter does not know makes it step aside, so the random
    # rest passes verbatim (a random first byte of a known type, e.g. a ClientCutText with
    # a huge length, got the stream refused about once in a hundred runs).
    payload = b"\x7f" + os.urandom(99_999)
    await ws.send_bytes(payload[:1])
    await ws.send_bytes(payload[1:])
    assert await r.read(8) == struct.pack(">BBHi", 2, 0, 1, 0)  # forwarded leftover, echoed
    assert await r.read(len(payload)) == payload
    assert world.vnc.received == b"\x01" + struct.pack(">BBHi", 2, 0, 1, 0) + payload
    await ws.close()
    assert await world.result() == "client_closed"
    await asyncio.wait_for(world.vnc.eof.wait(), 10)
    assert world.counted["up"] == 9 + len(payload)
    assert world.counted["down"] >= 8 + len(payload)


async def test_password_never_sent_to_browser(world: World) -> None:
    ws = await world.connect()
    r = await handshake(ws, split=False)
    seen = bytes(r.buf)
    await ws.send_bytes(b"ping")
    seen += await r.read(4)
    assert PASSWORD.encode() not in seen
    await ws.close()
    await world.result()


async def test_text_frame_closes_1003(world: World) -> None:
    ws = await world.connect()
    await handshake(ws)
    await ws.send_str("hello")
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1003
    assert await world.result() == "text_frame"
    await asyncio.wait_for(world.vnc.eof.wait(), 10)


async def test_text_frame_during_handshake(world: World) -> None:
    ws = await world.connect()
    await Reader(ws).read(12)
    await ws.send_str("RFB 003.008\n")
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1003
    assert await world.result() == "text_frame"


@pytest.mark.parametrize("aiohttp_limit", [True, False])
async def test_oversized_message_closes_1009(world: World, aiohttp_limit: bool) -> None:
    world.limits = LimitsConfig(ws_max_message_bytes=4096)
    world.ws_max_msg = 4096 if aiohttp_limit else 0  # ours applies even if aiohttp's is off
    ws = await world.connect()
    await handshake(ws)
    await ws.send_bytes(b"x" * 5000)
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1009
    assert await world.result() == "message_too_big"
    assert b"x" * 5000 not in world.vnc.received


async def test_idle_timeout(world: World) -> None:
    world.limits = LimitsConfig(ws_idle_timeout_seconds=1)
    ws = await world.connect()
    await handshake(ws)
    msg = await asyncio.wait_for(ws.receive(), 20)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1000
    assert await world.result() == "idle_timeout"
    await asyncio.wait_for(world.vnc.eof.wait(), 10)


async def test_server_closes(world: World) -> None:
    world.vnc.mode = "close"
    ws = await world.connect()
    await handshake(ws)
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1000
    assert await world.result() == "server_closed"


async def test_wrong_password(world: World) -> None:
    world.password = "not-it"
    ws = await world.connect()
    r = Reader(ws)
    assert await r.read(12) == b"RFB 003.008\n"
    await ws.send_bytes(b"RFB 003.008\n")
    assert await r.read(1) == b"\x00"  # zero security types: failure, then the reason
    (n,) = struct.unpack(">I", await r.read(4))
    assert (await r.read(n)).decode() == rfb.REASON_AUTH_FAILED
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type is WSMsgType.CLOSE
    assert await world.result() == "vnc_auth_failed"


async def test_unreachable(world: World) -> None:
    s = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    world.target_port = s.sockets[0].getsockname()[1]
    s.close()
    await s.wait_closed()
    ws = await world.connect()
    r = Reader(ws)
    await r.read(12)
    await ws.send_bytes(b"RFB 003.008\n")
    assert await r.read(1) == b"\x00"
    (n,) = struct.unpack(">I", await r.read(4))
    assert (await r.read(n)).decode() == rfb.REASON_UNREACHABLE
    assert await world.result() == "connect_failed"


async def test_handshake_timeout(world: World) -> None:
    world.limits = LimitsConfig(ws_handshake_timeout_seconds=1)
    ws = await world.connect()
    await Reader(ws).read(12)  # ... and never answer
    msg = await asyncio.wait_for(ws.receive(), 20)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1008
    assert await world.result() == "handshake_timeout"


async def test_large_stream_in_order(world: World) -> None:
    world.vnc.mode = "flood"
    ws = await world.connect()
    r = await handshake(ws)
    data = await r.read(5 * (1 << 20))
    assert data == b"\xab" * len(data)
    await ws.close()
    assert await world.result() == "client_closed"
    await asyncio.wait_for(world.vnc.eof.wait(), 10)


async def test_slow_client_is_cut(world: World) -> None:
    world.vnc.mode = "flood"
    world.limits = LimitsConfig(ws_slow_client_timeout_seconds=1)
    ws = await world.connect()
    await handshake(ws)
    # Stop reading: socket buffers fill up and the proxy's sends stall.
    assert await world.result() == "slow_client"
    await asyncio.wait_for(world.vnc.eof.wait(), 10)
    ws._response.connection.transport.abort()  # type: ignore[union-attr]
