"""A minimal RFB client for tests: handshake (None or VNC auth) and one full framebuffer."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from vizdesk.contract.vncauth import vnc_auth_response


class WsStream:
    """Byte stream over a websocket's binary frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.buf = bytearray()

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            msg = await asyncio.wait_for(self.ws.receive(), timeout=20)
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise ConnectionError(f"websocket closed or non-binary: {msg.type} {msg.data!r}")
            self.buf.extend(msg.data)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def write(self, data: bytes) -> None:
        await self.ws.send_bytes(data)


class TcpStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read_exactly(self, n: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), timeout=20)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


@dataclass
class ServerInit:
    width: int
    height: int
    bpp: int
    name: str
    security_types: list[int]


class RfbAuthFailed(Exception):
    pass


async def handshake(stream: WsStream | TcpStream, password: str | None = None) -> ServerInit:
    version = await stream.read_exactly(12)
    if not version.startswith(b"RFB 003."):
        raise ConnectionError(f"not RFB: {version!r}")
    await stream.write(b"RFB 003.008\n")
    (count,) = struct.unpack("!B", await stream.read_exactly(1))
    if count == 0:
        (length,) = struct.unpack("!I", await stream.read_exactly(4))
        raise RfbAuthFailed((await stream.read_exactly(length)).decode(errors="replace"))
    types = list(await stream.read_exactly(count))
    if 1 in types and password is None:
        await stream.write(b"\x01")
    elif 2 in types and password is not None:
        await stream.write(b"\x02")
        challenge = await stream.read_exactly(16)
        await stream.write(vnc_auth_response(password, challenge))
    else:
        raise RfbAuthFailed(f"no usable security type in {types}")
    (result,) = struct.unpack("!I", await stream.read_exactly(4))
    if result != 0:
        try:
            (length,) = struct.unpack("!I", await stream.read_exactly(4))
            reason = (await stream.read_exactly(length)).decode(errors="replace")
        except Exception:
            reason = "security result failed"
        raise RfbAuthFailed(reason)
    await stream.write(b"\x01")  # ClientInit: shared
    head = await stream.read_exactly(24)
    width, height = struct.unpack("!HH", head[:4])
    bpp = head[4]
    (name_len,) = struct.unpack("!I", head[20:24])
    name = (await stream.read_exactly(name_len)).decode(errors="replace")
    return ServerInit(width, height, bpp, name, types)


async def full_framebuffer(
    stream: WsStream | TcpStream,
    init: ServerInit,
    *,
    set_encodings: bool = True,
    pseudo: tuple[int, ...] = (),
    confirmed: set[int] | None = None,
) -> tuple[int, bytes]:
    """Request a non-incremental update with Raw encoding; return (covered pixels, pixels).

    ``pseudo`` encodings are offered too; the empty rectangles by which the server confirms
    one (e.g. ExtendedMouseButtons, -316) are added to ``confirmed``."""
    if set_encodings:
        encs = (0, *pseudo)  # Raw first
        await stream.write(struct.pack(f"!BBH{len(encs)}i", 2, 0, len(encs), *encs))
    await stream.write(struct.pack("!BBHHHH", 3, 0, 0, 0, init.width, init.height))
    covered = 0
    sample = bytearray()
    bytes_pp = init.bpp // 8
    while covered < init.width * init.height:
        mtype = (await stream.read_exactly(1))[0]
        if mtype == 2:  # Bell
            continue
        if mtype == 3:  # ServerCutText
            await stream.read_exactly(3)
            (length,) = struct.unpack("!I", await stream.read_exactly(4))
            await stream.read_exactly(length)
            continue
        if mtype == 1:  # SetColourMapEntries
            _, _, n = struct.unpack("!BHH", await stream.read_exactly(5))
            await stream.read_exactly(6 * n)
            continue
        if mtype != 0:
            raise ConnectionError(f"unexpected server message {mtype}")
        _, nrects = struct.unpack("!BH", await stream.read_exactly(3))
        for _ in range(nrects):
            _x, _y, w, h, enc = struct.unpack("!HHHHi", await stream.read_exactly(12))
            if enc in pseudo and w * h == 0 and confirmed is not None:
                confirmed.add(enc)
                continue
            if enc != 0:
                raise ConnectionError(f"server sent encoding {enc}, asked Raw only")
            data = await stream.read_exactly(w * h * bytes_pp)
            covered += w * h
            sample.extend(data)
    return covered, bytes(sample)


async def connect_ws(
    session: aiohttp.ClientSession, url: str, origin: str | None = None
) -> aiohttp.ClientWebSocketResponse:
    headers = {"Origin": origin} if origin else {}
    return await session.ws_connect(url, protocols=("binary",), headers=headers, max_msg_size=0)


Connector = Callable[[], Awaitable[aiohttp.ClientWebSocketResponse]]
