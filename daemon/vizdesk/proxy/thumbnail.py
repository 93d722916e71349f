"""Thumbnails of a desktop: one framebuffer over the daemon's own RFB connection, as PNG.

The daemon connects to the VNC server exactly as the proxy does (VNC Authentication with
the registered password, :func:`vizdesk.proxy.rfb.authenticate_to_server`), sends a
*shared* ClientInit (so nobody else is disconnected), asks for 32-bit true colour in a
known layout and Raw encoding, reads one full non-incremental FramebufferUpdate, scales it
down by an integer step (column/row decimation done with C-speed slices) to at most
``max_width`` pixels wide and encodes a PNG with zlib. Nothing but the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib

from . import rfb

#: Our SetPixelFormat: 32 bpp, depth 24, little-endian, true colour, 8 bits per channel
#: with red at bit 16, green at 8, blue at 0 → bytes B, G, R, X in memory.
PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
RAW = 0
MAX_PIXELS = 8192 * 8192


class ThumbnailError(Exception):
    """The framebuffer could not be read (server gone, protocol, too large)."""


async def capture_rgb(
    host: str, port: int, password: str, seconds: float
) -> tuple[int, int, bytes]:
    """(width, height, RGB bytes) of the desktop's whole framebuffer, within ``seconds``."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(seconds):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
            stream = rfb.StreamByteStream(reader, writer)
            await rfb.authenticate_to_server(stream, password)
            await stream.write(b"\x01")  # ClientInit: shared
            head = await stream.read_exactly(24)
            width, height = struct.unpack(">HH", head[:4])
            name_len = struct.unpack(">I", head[20:24])[0]
            await stream.read_exactly(name_len)
            if not width or not height or width * height > MAX_PIXELS:
                raise ThumbnailError(f"framebuffer {width}x{height} out of range")
            await stream.write(b"\x00\x00\x00\x00" + PIXEL_FORMAT)
            await stream.write(struct.pack(">BBHi", 2, 0, 1, RAW))
            await stream.write(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
            fb = bytearray(width * height * 4)
            covered = 0
            while covered < width * height:
                covered += await _read_update(stream, fb, width, height)
    except (OSError, rfb.RfbError, struct.error) as exc:
        raise ThumbnailError(f"{exc.__class__.__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise ThumbnailError("the desktop did not send its framebuffer in time") from exc
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    rgb = bytearray(width * height * 3)
    rgb[0::3], rgb[1::3], rgb[2::3] = fb[2::4], fb[1::4], fb[0::4]
    return width, height, bytes(rgb)


async def _read_update(stream: rfb.StreamByteStream, fb: bytearray, width: int, height: int) -> int:
    """Read one server message into ``fb``; returns the pixels a FramebufferUpdate covered."""
    mtype = (await stream.read_exactly(1))[0]
    if mtype == 2:  # Bell
        return 0
    if mtype == 3:  # ServerCutText
        await stream.read_exactly(3)
        size = struct.unpack(">i", await stream.read_exactly(4))[0]
        await stream.read_exactly(abs(size))
        return 0
    if mtype == 1:  # SetColourMapEntries (not for true colour, but legal)
        _, _, n = struct.unpack(">BHH", await stream.read_exactly(5))
        await stream.read_exactly(6 * n)
        return 0
    if mtype != 0:
        raise ThumbnailError(f"unexpected server message {mtype}")
    _, nrects = struct.unpack(">BH", await stream.read_exactly(3))
    covered = 0
    for _ in range(nrects):
        x, y, w, h, enc = struct.unpack(">HHHHi", await stream.read_exactly(12))
        if enc != RAW:
            if w == 0 and h == 0:
                continue  # a pseudo-encoding rectangle without data (we asked for none)
            raise ThumbnailError(f"server sent encoding {enc}, asked for Raw only")
        if x + w > width or y + h > height:
            raise ThumbnailError("rectangle outside the framebuffer")
        data = await stream.read_exactly(w * h * 4)
        for row in range(h):
            start = ((y + row) * width + x) * 4
            fb[start : start + w * 4] = data[row * w * 4 : (row + 1) * w * 4]
        covered += w * h
    return covered


def downscale(width: int, height: int, rgb: bytes, max_width: int) -> tuple[int, int, bytes]:
    """Decimate by the smallest integer step that makes the width ≤ ``max_width``."""
    step = max(1, -(-width // max_width))
    if step == 1:
        return width, height, rgb
    out_w, out_h = width // step, height // step
    rows = []
    stride = width * 3
    for oy in range(out_h):
        start = oy * step * stride
        row = rgb[start : start + out_w * step * 3]
        small = bytearray(out_w * 3)
        for c in range(3):
            small[c::3] = row[c :: 3 * step]
        rows.append(bytes(small))
    return out_w, out_h, b"".join(rows)


def png(width: int, height: int, rgb: bytes) -> bytes:
    """An 8-bit RGB PNG (filter type 0 on every row), compressed with zlib."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


async def thumbnail_png(
    host: str, port: int, password: str, *, max_width: int = 320, seconds: float = 5.0
) -> bytes:
    """The desktop's framebuffer as a PNG at most ``max_width`` pixels wide."""
    width, height, rgb = await capture_rgb(host, port, password, seconds)
    return await asyncio.to_thread(lambda: png(*downscale(width, height, rgb, max_width)))
