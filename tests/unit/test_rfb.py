"""RFB handshake of the proxy, against an in-memory fake VNC server and a fake browser.

The fake server speaks RFB 3.3, 3.7 or 3.8 with VNC Authentication and checks the DES
response itself; the fake browser records every byte it receives, so the tests can
assert that only security type None is offered and that the password never shows up.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Awaitable, Callable

import pytest

from vizdesk.contract.vncauth import vnc_auth_response
from vizdesk.proxy import rfb

PASSWORD = "pw123456"
SERVER_INIT = struct.pack(">HH", 640, 480) + bytes(16) + struct.pack(">I", 4) + b"desk"


class Pipe:
    """One direction of an in-memory connection."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.closed = False
        self.cond = asyncio.Condition()
        self.log = bytearray()  # everything ever written

    async def feed(self, data: bytes) -> None:
        async with self.cond:
            if self.closed:
                raise ConnectionResetError("pipe closed")
            self.buf += data
            self.log += data
            self.cond.notify_all()

    async def close(self) -> None:
        async with self.cond:
            self.closed = True
            self.cond.notify_all()

    async def take(self, n: int) -> bytes:
        async with self.cond:
            await self.cond.wait_for(lambda: len(self.buf) >= n or self.closed)
            if len(self.buf) < n:
                raise rfb.RfbEOF("eof")
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out


class End:
    """A ByteStream end: reads from one pipe, writes to the other."""

    def __init__(self, inbox: Pipe, outbox: Pipe) -> None:
        self.inbox, self.outbox = inbox, outbox

    async def read_exactly(self, n: int) -> bytes:
        return await self.inbox.take(n)

    async def write(self, data: bytes) -> None:
        await self.outbox.feed(data)

    async def close(self) -> None:
        await self.outbox.close()


def pair() -> tuple[End, End]:
    a, b = Pipe(), Pipe()
    return End(a, b), End(b, a)


async def fake_vnc_server(
    s: End,
    *,
    version: bytes = b"RFB 003.008\n",
    types: bytes = bytes([rfb.SEC_VNC_AUTH]),
    password: str = PASSWORD,
    refuse: str | None = None,
) -> bytes:
    """Serve one client; returns the ClientInit byte it got (after a good auth)."""
    await s.write(version)
    client_version = await s.read_exactly(12)
    minor = int(client_version[8:11])
    if minor == 3:
        if refuse is not None:
            await s.write(struct.pack(">I", 0) + struct.pack(">I", len(refuse)) + refuse.encode())
            await s.close()
            return b""
        await s.write(struct.pack(">I", types[0]))
        chosen = types[0]
    else:
        if refuse is not None:
            await s.write(b"\x00" + struct.pack(">I", len(refuse)) + refuse.encode())
            await s.close()
            return b""
        await s.write(bytes([len(types)]) + types)
        chosen = (await s.read_exactly(1))[0]
        assert chosen in types
    assert chosen == rfb.SEC_VNC_AUTH
    challenge = os.urandom(16)
    await s.write(challenge)
    response = await s.read_exactly(16)
    if response != vnc_auth_response(password, challenge):
        msg = b"Authentication failed"
        tail = struct.pack(">I", len(msg)) + msg if minor == 8 else b""
        await s.write(struct.pack(">I", 1) + tail)
        await s.close()
        return b""
    await s.write(struct.pack(">I", 0))
    client_init = await s.read_exactly(1)
    await s.write(SERVER_INIT)
    return client_init


class FakeBrowser:
    """Client side of the browser: records every byte the proxy sends."""

    def __init__(self, end: End, log: Pipe) -> None:
        self.end, self.log = end, log

    @property
    def received(self) -> bytes:
        return bytes(self.log.log)

    async def hello(self, version: bytes = b"RFB 003.008\n") -> bytes:
        assert await self.end.read_exactly(12) == rfb.PROXY_VERSION
        await self.end.write(version)
        return version


async def run(
    server_kw: dict[str, object] | None = None,
    browser_version: bytes = b"RFB 003.008\n",
    password: str = PASSWORD,
    connect: Callable[[], Awaitable[rfb.ByteStream]] | None = None,
) -> tuple[asyncio.Task[rfb.Handshake], FakeBrowser, End, asyncio.Task[bytes] | None]:
    b_proxy, b_client = pair()
    browser = FakeBrowser(b_client, b_client.inbox)
    server_task: asyncio.Task[bytes] | None = None
    if connect is None:
        s_proxy, s_server = pair()
        server_task = asyncio.create_task(fake_vnc_server(s_server, **(server_kw or {})))

        async def connect_() -> rfb.ByteStream:
            return s_proxy

        connect = connect_
    task = asyncio.create_task(rfb.proxy_handshake(b_proxy, connect, password))
    await browser.hello(browser_version)
    return task, browser, b_client, server_task


@pytest.mark.parametrize(
    "server_version",
    [b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 003.008\n", b"RFB 003.889\n", b"RFB 004.001\n"],
)
async def test_browser_38_any_server(server_version: bytes) -> None:
    task, _browser, b, server_task = await run(
        {"version": server_version, "types": bytes([rfb.SEC_VNC_AUTH])}
    )
    assert await b.read_exactly(2) == b"\x01\x01"  # exactly one type: None
    await b.write(b"\x01")
    assert await b.read_exactly(4) == b"\x00\x00\x00\x00"  # SecurityResult OK
    hs = await task
    assert hs.client_minor == 8
    assert hs.server_minor == {3: 3, 7: 7}.get(int(server_version[8:11]), 8)
    # ClientInit / ServerInit now pass through unchanged.
    await hs.server.write(b"\x01")
    assert server_task is not None
    assert await server_task == b"\x01"
    assert await hs.server.read_exactly(len(SERVER_INIT)) == SERVER_INIT


async def test_server_offers_several_types() -> None:
    task, _, b, server_task = await run({"types": bytes([19, 18, rfb.SEC_VNC_AUTH, 1])})
    assert await b.read_exactly(2) == b"\x01\x01"
    await b.write(b"\x01")
    assert await b.read_exactly(4) == bytes(4)
    await task
    assert server_task is not None
    server_task.cancel()


async def test_browser_37() -> None:
    task, _browser, b, server_task = await run(browser_version=b"RFB 003.007\n")
    assert await b.read_exactly(2) == b"\x01\x01"
    await b.write(b"\x01")
    hs = await task  # no SecurityResult for None in 3.7
    assert hs.client_minor == 7
    await b.write(b"\x01")  # ClientInit reaches the proxy's browser side, not consumed yet
    assert server_task is not None
    server_task.cancel()


@pytest.mark.parametrize("version", [b"RFB 003.003\n", b"RFB 003.005\n"])
async def test_browser_33(version: bytes) -> None:
    task, _, b, server_task = await run(browser_version=version)
    assert await b.read_exactly(4) == struct.pack(">I", rfb.SEC_NONE)
    hs = await task
    assert hs.client_minor == 3
    assert server_task is not None
    server_task.cancel()


async def test_password_never_reaches_browser() -> None:
    task, browser, b, server_task = await run()
    await b.read_exactly(2)
    await b.write(b"\x01")
    await b.read_exactly(4)
    hs = await task
    await hs.server.write(b"\x01")
    assert server_task is not None
    await server_task
    seen = browser.received
    assert PASSWORD.encode() not in seen
    assert bytes([rfb.SEC_VNC_AUTH]) not in seen[12:]  # type 2 never offered


@pytest.mark.parametrize("browser_version", [b"RFB 003.008\n", b"RFB 003.007\n", b"RFB 003.003\n"])
async def test_wrong_password_fails_cleanly(browser_version: bytes) -> None:
    task, _, b, _ = await run(password="wrong", browser_version=browser_version)
    if browser_version == b"RFB 003.003\n":
        assert await b.read_exactly(4) == struct.pack(">I", 0)
    else:
        assert await b.read_exactly(1) == b"\x00"  # no security types = failure
    (n,) = struct.unpack(">I", await b.read_exactly(4))
    reason = (await b.read_exactly(n)).decode()
    assert reason == rfb.REASON_AUTH_FAILED
    with pytest.raises(rfb.RfbAuthFailed) as ei:
        await task
    assert ei.value.code == "vnc_auth_failed"
    assert "Authentication failed" in str(ei.value)


async def test_server_refuses_connection() -> None:
    task, _, b, _ = await run({"refuse": "Too many security failures"})
    assert await b.read_exactly(1) == b"\x00"
    (n,) = struct.unpack(">I", await b.read_exactly(4))
    assert (await b.read_exactly(n)).decode() == rfb.REASON_PROTOCOL
    with pytest.raises(rfb.RfbServerError, match="Too many security failures"):
        await task


@pytest.mark.parametrize("version", [b"RFB 003.008\n", b"RFB 003.003\n"])
async def test_server_without_vnc_auth(version: bytes) -> None:
    b_proxy, b_client = pair()
    s_proxy, s_server = pair()

    async def server() -> None:
        await s_server.write(version)
        await s_server.read_exactly(12)
        if version.endswith(b"003\n"):
            await s_server.write(struct.pack(">I", rfb.SEC_NONE))
        else:
            await s_server.write(b"\x01\x01")  # None only: an unprotected server

    async def connect() -> rfb.ByteStream:
        return s_proxy

    st = asyncio.create_task(server())
    task = asyncio.create_task(rfb.proxy_handshake(b_proxy, connect, PASSWORD))
    await FakeBrowser(b_client, b_client.inbox).hello()
    assert await b_client.read_exactly(1) == b"\x00"
    with pytest.raises(rfb.RfbServerError) as ei:
        await task
    assert ei.value.code == "vnc_security_type"
    await st


async def test_not_an_rfb_server() -> None:
    b_proxy, b_client = pair()
    s_proxy, s_server = pair()
    await s_server.write(b"SSH-2.0-Open")

    async def connect() -> rfb.ByteStream:
        return s_proxy

    task = asyncio.create_task(rfb.proxy_handshake(b_proxy, connect, PASSWORD))
    await FakeBrowser(b_client, b_client.inbox).hello()
    assert await b_client.read_exactly(1) == b"\x00"
    with pytest.raises(rfb.RfbServerError) as ei:
        await task
    assert ei.value.code == "vnc_protocol"


async def test_server_closes_midway() -> None:
    b_proxy, b_client = pair()
    s_proxy, s_server = pair()
    await s_server.write(b"RFB 003.008\n")
    await s_server.close()

    async def connect() -> rfb.ByteStream:
        return s_proxy

    task = asyncio.create_task(rfb.proxy_handshake(b_proxy, connect, PASSWORD))
    await FakeBrowser(b_client, b_client.inbox).hello()
    assert await b_client.read_exactly(1) == b"\x00"
    (n,) = struct.unpack(">I", await b_client.read_exactly(4))
    assert (await b_client.read_exactly(n)).decode() == rfb.REASON_UNREACHABLE
    with pytest.raises(rfb.RfbServerError) as ei:
        await task
    assert ei.value.code == "vnc_eof"


async def test_connect_failure() -> None:
    async def connect() -> rfb.ByteStream:
        raise ConnectionRefusedError(111, "Connection refused")

    task, _, b, _ = await run(connect=connect)
    assert await b.read_exactly(1) == b"\x00"
    (n,) = struct.unpack(">I", await b.read_exactly(4))
    assert (await b.read_exactly(n)).decode() == rfb.REASON_UNREACHABLE
    with pytest.raises(rfb.RfbServerError) as ei:
        await task
    assert ei.value.code == "connect_failed"


async def test_connect_failure_browser_33() -> None:
    async def connect() -> rfb.ByteStream:
        raise TimeoutError()

    task, _, b, _ = await run(connect=connect, browser_version=b"RFB 003.003\n")
    assert await b.read_exactly(4) == bytes(4)  # security type 0 = failure, then a reason
    (n,) = struct.unpack(">I", await b.read_exactly(4))
    assert (await b.read_exactly(n)).decode() == rfb.REASON_UNREACHABLE
    with pytest.raises(rfb.RfbServerError):
        await task


@pytest.mark.parametrize("choice", [b"\x02", b"\x00", b"\x10"])
async def test_browser_picks_other_type(choice: bytes) -> None:
    task, _, b, server_task = await run()
    assert await b.read_exactly(2) == b"\x01\x01"
    await b.write(choice)
    assert await b.read_exactly(4) == struct.pack(">I", 1)  # SecurityResult failed
    (n,) = struct.unpack(">I", await b.read_exactly(4))
    assert await b.read_exactly(n) == rfb.REASON_BAD_CHOICE.encode()
    with pytest.raises(rfb.RfbClientError):
        await task
    assert server_task is not None
    server_task.cancel()


@pytest.mark.parametrize("version", [b"GET / HTTP/1.", b"RFB 004.000\n", b"RFB 03.008\n\n"])
async def test_browser_bad_version(version: bytes) -> None:
    b_proxy, b_client = pair()
    s_proxy, s_server = pair()
    connected = asyncio.Event()

    async def connect() -> rfb.ByteStream:
        connected.set()
        return s_proxy

    server = asyncio.create_task(fake_vnc_server(s_server))
    task = asyncio.create_task(rfb.proxy_handshake(b_proxy, connect, PASSWORD))
    await b_client.read_exactly(12)
    await b_client.write(version)
    with pytest.raises(rfb.RfbClientError):
        await task
    server.cancel()


def test_parse_version() -> None:
    assert rfb.parse_version(b"RFB 003.008\n") == (3, 8)
    assert rfb.parse_version(b"RFB 003.889\n") == (3, 889)
    for bad in (b"RFB 3.8\n", b"RFB 003.008", b"rfb 003.008\n", b"RFB 003.008\r"):
        with pytest.raises(ValueError):
            rfb.parse_version(bad)


async def test_authenticate_to_server_direct() -> None:
    """The client half alone, as the proxy uses it, against each server version."""
    for version in (b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 003.008\n"):
        proxy, server = pair()
        st = asyncio.create_task(fake_vnc_server(server, version=version))
        minor = await rfb.authenticate_to_server(proxy, PASSWORD)
        assert minor == int(version[8:11])
        await proxy.write(b"\x00")
        assert await st == b"\x00"
