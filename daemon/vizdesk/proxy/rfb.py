"""The RFB (VNC) handshake of a proxy that keeps the VNC password away from the browser.

Toward the VNC server the proxy is an RFB client: it negotiates the version (the server
may speak 3.3, 3.7 or 3.8; newer announcements are treated as 3.8), chooses VNC
Authentication (security type 2) with the session's password and checks the
SecurityResult. Toward the browser it is an RFB 3.8 server that offers only security
type None (1) — in the 3.7/3.8 list form or the 3.3 single-word form, whichever the
browser speaks — and, for 3.8, a SecurityResult OK. After that the two sides are joined:
ClientInit, ServerInit and every later message pass unchanged (their format does not
depend on the protocol version).

If the server side fails (unreachable, wrong password, no VNC Authentication offered,
protocol error) the browser gets a proper RFB failure with a short, generic reason (no
host, port or password) and :class:`RfbError` is raised.

Both sides are :class:`ByteStream` objects so that transports plug in: asyncio streams
(:class:`StreamByteStream`) for TCP, a websocket adapter in :mod:`vizdesk.proxy.bridge`,
in-memory pipes in the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ..contract.vncauth import vnc_auth_response

SEC_INVALID = 0
SEC_NONE = 1
SEC_VNC_AUTH = 2

PROXY_VERSION = b"RFB 003.008\n"
VERSION_RE = re.compile(rb"^RFB (\d{3})\.(\d{3})\n$")
MAX_REASON_BYTES = 4096

# Reasons the browser may see (deliberately generic).
REASON_UNREACHABLE = "the desktop is not reachable"
REASON_AUTH_FAILED = "the desktop refused the proxy's credentials"
REASON_PROTOCOL = "the desktop's VNC server spoke an unexpected protocol"
REASON_BAD_CHOICE = "only security type None is offered"


class ByteStream(Protocol):
    """A byte stream that can read exactly ``n`` bytes (raising on EOF) and write."""

    async def read_exactly(self, n: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


class RfbError(Exception):
    """A failed RFB handshake. ``code`` is a short machine-readable cause for logs."""

    code = "rfb_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class RfbEOF(RfbError):
    """The peer closed the connection during the handshake."""

    code = "eof"


class RfbServerError(RfbError):
    """The VNC server side failed (unreachable, protocol, security types)."""

    code = "vnc_server_error"


class RfbAuthFailed(RfbServerError):
    """The VNC server rejected the password."""

    code = "vnc_auth_failed"


class RfbClientError(RfbError):
    """The browser side broke the protocol."""

    code = "client_protocol_error"


class StreamByteStream:
    """:class:`ByteStream` over an asyncio ``StreamReader``/``StreamWriter`` pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read_exactly(self, n: int) -> bytes:
        try:
            return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise RfbEOF("connection closed during the RFB handshake") from exc

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


def parse_version(data: bytes) -> tuple[int, int]:
    """``b"RFB 003.008\\n"`` → ``(3, 8)``; ValueError when it is not a ProtocolVersion."""
    m = VERSION_RE.fullmatch(data)
    if m is None:
        raise ValueError("not an RFB ProtocolVersion message")
    return int(m.group(1)), int(m.group(2))


def _u32(data: bytes) -> int:
    return int(struct.unpack(">I", data)[0])


def _reason_bytes(reason: str) -> bytes:
    raw = reason.encode("utf-8")[:MAX_REASON_BYTES]
    return struct.pack(">I", len(raw)) + raw


async def _read_reason(stream: ByteStream) -> str:
    length = _u32(await stream.read_exactly(4))
    if length > MAX_REASON_BYTES:
        raise RfbServerError("VNC server sent an oversized reason string", code="vnc_protocol")
    return (await stream.read_exactly(length)).decode("utf-8", errors="replace")


# -- toward the VNC server ----------------------------------------------------------------


async def authenticate_to_server(server: ByteStream, password: str) -> int:
    """Run the client side of the handshake through a successful SecurityResult.

    Returns the negotiated minor version (3, 7 or 8). Raises :class:`RfbAuthFailed` when
    the password is refused and :class:`RfbServerError` for everything else.
    """
    try:
        major, minor = parse_version(await server.read_exactly(12))
    except ValueError:
        raise RfbServerError(
            "VNC server did not send an RFB version", code="vnc_protocol"
        ) from None
    if major < 3:
        raise RfbServerError(f"VNC server speaks RFB {major}.{minor}", code="vnc_protocol")
    if major > 3 or minor >= 8:
        use = 8  # RealVNC 4+/5+ and Apple's 3.889 accept 3.8
    elif minor == 7:
        use = 7
    else:
        use = 3
    await server.write(b"RFB 003.%03d\n" % use)

    if use == 3:
        sec = _u32(await server.read_exactly(4))
        if sec == SEC_INVALID:
            reason = await _read_reason(server)
            raise RfbServerError(f"VNC server refused the connection: {reason}", code="vnc_refused")
        if sec != SEC_VNC_AUTH:
            raise RfbServerError(
                f"VNC server requires security type {sec}, not VNC Authentication",
                code="vnc_security_type",
            )
    else:
        count = (await server.read_exactly(1))[0]
        if count == 0:
            reason = await _read_reason(server)
            raise RfbServerError(f"VNC server refused the connection: {reason}", code="vnc_refused")
        types = await server.read_exactly(count)
        if SEC_VNC_AUTH not in types:
            raise RfbServerError(
                f"VNC server does not offer VNC Authentication (offers {list(types)})",
                code="vnc_security_type",
            )
        await server.write(bytes([SEC_VNC_AUTH]))

    challenge = await server.read_exactly(16)
    await server.write(vnc_auth_response(password, challenge))
    result = _u32(await server.read_exactly(4))
    if result != 0:
        reason = ""
        if use == 8:
            with contextlib.suppress(RfbError, OSError):
                reason = await _read_reason(server)
        raise RfbAuthFailed("VNC server rejected the password" + (f": {reason}" if reason else ""))
    return use


# -- toward the browser -------------------------------------------------------------------


async def greet_client(browser: ByteStream) -> int:
    """Send our ProtocolVersion and read the browser's; returns its minor version (3, 7, 8)."""
    await browser.write(PROXY_VERSION)
    try:
        major, minor = parse_version(await browser.read_exactly(12))
    except ValueError:
        raise RfbClientError("client did not send an RFB version") from None
    if major != 3:
        raise RfbClientError(f"client speaks RFB {major}.{minor}")
    if minor >= 8:
        return 8
    if minor == 7:
        return 7
    return 3  # RFC 6143: any other 3.x is treated as 3.3


async def accept_client(browser: ByteStream, minor: int) -> None:
    """Offer security type None only and finish the browser's security phase."""
    if minor == 3:
        await browser.write(struct.pack(">I", SEC_NONE))
        return
    await browser.write(bytes([1, SEC_NONE]))
    choice = (await browser.read_exactly(1))[0]
    if choice != SEC_NONE:
        if minor >= 8:
            await browser.write(struct.pack(">I", 1) + _reason_bytes(REASON_BAD_CHOICE))
        raise RfbClientError(f"client chose security type {choice}")
    if minor >= 8:
        await browser.write(struct.pack(">I", 0))


async def refuse_client(browser: ByteStream, minor: int, reason: str) -> None:
    """Tell the browser the connection failed (before any security type is chosen)."""
    if minor == 3:
        await browser.write(struct.pack(">I", SEC_INVALID) + _reason_bytes(reason))
    else:
        await browser.write(b"\x00" + _reason_bytes(reason))


# -- both ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """The outcome of a successful :func:`proxy_handshake`."""

    client_minor: int
    server_minor: int
    server: ByteStream


def browser_reason(exc: BaseException) -> str:
    """The generic reason a browser is shown for a server-side failure."""
    if isinstance(exc, RfbAuthFailed):
        return REASON_AUTH_FAILED
    if isinstance(exc, RfbServerError) and not isinstance(exc, RfbEOF):
        return REASON_PROTOCOL
    return REASON_UNREACHABLE


async def proxy_handshake(
    browser: ByteStream,
    connect: Callable[[], Awaitable[ByteStream]],
    password: str,
) -> Handshake:
    """Greet the browser while connecting and authenticating to the VNC server, then let
    the browser in with security type None.

    ``connect`` opens the server stream (its OSError/TimeoutError count as "unreachable").
    On a server-side failure the browser receives an RFB failure reason and
    :class:`RfbServerError` (or :class:`RfbAuthFailed`) is raised; browser-side failures
    propagate as raised by the browser stream or as :class:`RfbClientError`.
    """

    async def server_side() -> tuple[ByteStream, int]:
        stream = await connect()
        return stream, await authenticate_to_server(stream, password)

    task = asyncio.create_task(server_side())
    try:
        minor = await greet_client(browser)
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    try:
        server, server_minor = await task
    except (RfbError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await refuse_client(browser, minor, browser_reason(exc))
        if isinstance(exc, RfbServerError):
            raise
        if isinstance(exc, RfbEOF):
            raise RfbServerError(
                "VNC server closed the connection during the handshake", code="vnc_eof"
            ) from exc
        if isinstance(exc, RfbError):
            raise RfbServerError(str(exc), code=exc.code) from exc
        raise RfbServerError(
            f"cannot reach the VNC server: {exc.__class__.__name__}: {exc}", code="connect_failed"
        ) from exc
    await accept_client(browser, minor)
    return Handshake(client_minor=minor, server_minor=server_minor, server=server)


# -- the browser's messages after the handshake -------------------------------------------

# Client → server message types (RFC 6143 §7.5 and the community extensions noVNC and
# TigerVNC speak). Each entry: (name, is input, fixed header length). Variable parts are
# read by :class:`ClientMessageFilter` from the header.
MSG_SET_PIXEL_FORMAT = 0
MSG_SET_ENCODINGS = 2
MSG_FB_UPDATE_REQUEST = 3
MSG_KEY_EVENT = 4
MSG_POINTER_EVENT = 5
MSG_CLIENT_CUT_TEXT = 6
MSG_ENABLE_CONTINUOUS_UPDATES = 150
MSG_CLIENT_FENCE = 248
MSG_XVP = 250
MSG_SET_DESKTOP_SIZE = 251
MSG_QEMU = 255

#: type → (name, whether it changes the desktop: dropped for view-only connections,
#: header bytes including the type byte). The table is the whole of what a view-only
#: connection may send; any other type closes it.
CLIENT_MESSAGES: dict[int, tuple[str, bool, int]] = {
    MSG_SET_PIXEL_FORMAT: ("SetPixelFormat", False, 20),
    MSG_SET_ENCODINGS: ("SetEncodings", False, 4),  # + 4 * count
    MSG_FB_UPDATE_REQUEST: ("FramebufferUpdateRequest", False, 10),
    MSG_KEY_EVENT: ("KeyEvent", True, 8),
    MSG_POINTER_EVENT: ("PointerEvent", True, 6),
    MSG_CLIENT_CUT_TEXT: ("ClientCutText", True, 8),  # + |length|
    MSG_ENABLE_CONTINUOUS_UPDATES: ("EnableContinuousUpdates", False, 10),
    MSG_CLIENT_FENCE: ("ClientFence", False, 9),  # + length (<= 64)
    MSG_XVP: ("xvp", True, 4),  # shutdown / reboot / reset requests
    MSG_SET_DESKTOP_SIZE: ("SetDesktopSize", True, 8),  # + 16 * screens
    MSG_QEMU: ("QEMU", True, 2),  # sub-type decides the rest (extended key event: 12)
}
QEMU_SUBMESSAGE_BYTES = {0: 12}  # extended key event (the only one noVNC sends)
#: Input messages a page sends by itself, not someone at the keyboard: noVNC asks for a
#: new desktop size whenever the page's layout changes (a warning banner, a panel, the
#: window) and asks again every 100 ms while the server's size differs from the one it
#: asked for. A view-only connection still loses them; the idle clock ignores them.
NOT_PRESENCE = frozenset({MSG_SET_DESKTOP_SIZE})
MAX_FENCE_BYTES = 64
STEP_ASIDE = -1  # a message whose length the filter cannot know
#: The ExtendedMouseButtons pseudo-encoding (TurboVNC 3.x, noVNC 1.7): once the server
#: confirms it, a PointerEvent whose mask has bit 7 set carries a 7th byte, which this
#: filter could only tell from the server → browser stream it does not parse. It is taken
#: out of every SetEncodings, so PointerEvent stays 6 bytes (buttons 8 and 9 are lost).
ENCODING_EXTENDED_MOUSE_BUTTONS = -316
#: Extended clipboard actions (the flags word of a ClientCutText with a negative length)
#: noVNC sends by itself: its capabilities, asking for the server's new clipboard after
#: the server's notice, and handing over its own on the server's request. Only a notice
#: of the browser's clipboard (someone pasted) shows a person at the keyboard.
CLIPBOARD_ACTION_NOTIFY = 1 << 27
CLIPBOARD_ACTIONS = 0x1F << 24  # caps, request, peek, notify, provide


def without_extended_mouse_buttons(message: bytes | bytearray) -> bytes:
    """A whole SetEncodings message without :data:`ENCODING_EXTENDED_MOUSE_BUTTONS`."""
    count = int.from_bytes(message[2:4], "big")
    encodings = struct.unpack(f">{count}i", bytes(message[4 : 4 + 4 * count]))
    kept = [e for e in encodings if e != ENCODING_EXTENDED_MOUSE_BUTTONS]
    return struct.pack(f">BBH{len(kept)}i", MSG_SET_ENCODINGS, message[1], len(kept), *kept)


def cut_text_shows_presence(flags: int) -> bool:
    """Whether an extended ClientCutText with these flags was a person's doing."""
    actions = flags & CLIPBOARD_ACTIONS
    return not actions or bool(actions & CLIPBOARD_ACTION_NOTIFY)


class ClientMessageFilter:
    """Reads the browser → server stream message by message (after the handshake).

    ``allow_input=False`` (a view-only share) drops every message that would change the
    desktop (key, pointer, clipboard, resize, xvp power requests, QEMU key events) and
    closes on a type it does not know, because an unknown message's length cannot be
    known. With input allowed, input messages pass and are counted; an unknown type makes
    the filter step aside (the rest of the stream passes unparsed, every chunk counts as
    input), which is what the bridge did before the filter existed.

    ``force_shared`` rewrites the ClientInit (the first byte) to shared: a viewer must not
    be able to disconnect the owner with an exclusive ClientInit.

    ``feed`` returns ``(bytes to forward, input messages seen, input messages dropped)``
    and raises :class:`RfbClientError` for a message a view-only connection may not send.
    Fragmented messages are reassembled; a long clipboard text is streamed, not buffered.
    :meth:`take_presence` says whether forwarded input since the last call showed someone
    at the keyboard (the idle clock): every input message but :data:`NOT_PRESENCE` and
    the clipboard answers noVNC sends by itself (:func:`cut_text_shows_presence`).
    Every SetEncodings loses :data:`ENCODING_EXTENDED_MOUSE_BUTTONS`, so the filter's
    idea of where a PointerEvent ends is always the server's.
    """

    def __init__(
        self, *, allow_input: bool, force_shared: bool = False, max_cut_text: int = 1 << 24
    ) -> None:
        self.allow_input = allow_input
        self.force_shared = force_shared
        self.max_cut_text = max_cut_text
        self._buf = bytearray()
        self._client_init = True
        self._body_left = 0  # bytes of a ClientCutText body still to pass or drop
        self._body_forward = False
        self._passthrough = False
        self._presence = False

    def take_presence(self) -> bool:
        """Whether input that shows a person was forwarded since the last call."""
        seen, self._presence = self._presence, False
        return seen

    def feed(self, data: bytes) -> tuple[bytes, int, int]:
        if self._passthrough:
            self._presence = True  # only with input allowed
            return data, 1, 0
        self._buf += data
        out = bytearray()
        seen = dropped = 0
        while self._buf:
            if self._body_left:
                n = min(self._body_left, len(self._buf))
                if self._body_forward:
                    out += self._buf[:n]
                del self._buf[:n]
                self._body_left -= n
                continue
            if self._client_init:
                shared = 1 if self.force_shared else self._buf[0]
                out.append(shared)
                del self._buf[:1]
                self._client_init = False
                continue
            mtype = self._buf[0]
            spec = CLIENT_MESSAGES.get(mtype)
            length: int | None = STEP_ASIDE
            if spec is not None and len(self._buf) < spec[2]:
                break  # more header needed
            if spec is not None:
                length = self._message_length(mtype, spec[2])
            if length == STEP_ASIDE:
                if not self.allow_input:
                    raise RfbClientError(f"client message type {mtype} is not allowed here")
                self._passthrough = True
                self._presence = True  # an unknown message: it may be anything
                out += self._buf
                self._buf.clear()
                seen += 1
                break
            if length is None or spec is None:
                break  # more header needed
            _name, is_input, head = spec
            body = 0
            presence = mtype not in NOT_PRESENCE
            if mtype == MSG_CLIENT_CUT_TEXT:
                body = length - head
                if int.from_bytes(self._buf[4:8], "big", signed=True) < 0 and body >= 4:
                    if len(self._buf) < head + 4:
                        break  # the extended clipboard's flags decide presence
                    presence = cut_text_shows_presence(_u32(bytes(self._buf[head : head + 4])))
                length = head
            elif len(self._buf) < length:
                break
            forward = self.allow_input or not is_input
            if is_input:
                seen += 1
                if not forward:
                    dropped += 1
                elif presence:
                    self._presence = True
            if forward and mtype == MSG_SET_ENCODINGS:
                out += without_extended_mouse_buttons(self._buf[:length])
            elif forward:
                out += self._buf[:length]
            del self._buf[:length]
            if body:
                self._body_left, self._body_forward = body, forward
        return bytes(out), seen, dropped

    def _message_length(self, mtype: int, head: int) -> int | None:
        """The whole message's length from its header (None: the header is incomplete;
        :data:`STEP_ASIDE`: a message this filter cannot measure)."""
        b = self._buf
        if mtype == MSG_SET_ENCODINGS:
            return head + 4 * int.from_bytes(b[2:4], "big")
        if mtype == MSG_CLIENT_CUT_TEXT:
            raw = int.from_bytes(b[4:8], "big", signed=True)  # < 0: extended clipboard
            size = abs(raw)
            if size > self.max_cut_text:
                raise RfbClientError(f"clipboard text of {size} bytes is too large")
            return head + size
        if mtype == MSG_CLIENT_FENCE:
            size = b[8]
            if size > MAX_FENCE_BYTES:
                raise RfbClientError("fence payload too long")
            return head + size
        if mtype == MSG_SET_DESKTOP_SIZE:
            return head + 16 * b[6]
        if mtype == MSG_QEMU:
            return QEMU_SUBMESSAGE_BYTES.get(b[1], STEP_ASIDE)
        return head
