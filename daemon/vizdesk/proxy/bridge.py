"""Websocket ↔ VNC bridge: the browser's (already authorised) websocket to the desktop.

The API handler checks the ticket, prepares the websocket (subprotocol ``binary``) and
calls :func:`bridge_vnc` with the host Slurm reports for the job and the registered port
and password. The bridge opens the TCP connection, performs the RFB security handshake
itself (:mod:`vizdesk.proxy.rfb`: VNC Authentication toward the server, security type None
toward the browser, so the password never leaves the head node) and then copies bytes
both ways: binary frames ↔ TCP stream. Frames need not align with RFB messages;
handshake bytes are reassembled in a buffer and whatever the browser sent beyond the
handshake is forwarded first. The browser → server direction is parsed message by
message (:class:`vizdesk.proxy.rfb.ClientMessageFilter`): view-only connections lose
every input message, and forwarded input feeds the idle clock. ``stop`` (a
:class:`Stop`) ends a bridge from outside: a kicked viewer, a revoked link.

Limits: a text frame closes with 1003, an oversized message with 1009, no traffic in either
direction for ``ws_idle_timeout_seconds`` closes (1000), a browser that does not accept
data for ``ws_slow_client_timeout_seconds`` is cut (1008), the whole handshake must finish
within ``ws_handshake_timeout_seconds``. Both ends are always closed when the bridge
returns; the return value is a short reason for logs and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from aiohttp import WebSocketError, WSCloseCode, WSMsgType

from ..config import LimitsConfig
from . import rfb

log = structlog.get_logger("vizdesk.proxy")

CHUNK_BYTES = 256 * 1024
STREAM_LIMIT = 1024 * 1024
CLOSE_TIMEOUT = 5.0

# Close reasons returned by bridge_vnc (besides the rfb error codes of a failed handshake).
SERVER_CLOSED = "server_closed"
CLIENT_CLOSED = "client_closed"
IDLE_TIMEOUT = "idle_timeout"
SLOW_CLIENT = "slow_client"
TEXT_FRAME = "text_frame"
MESSAGE_TOO_BIG = "message_too_big"
HANDSHAKE_TIMEOUT = "handshake_timeout"
CONNECT_FAILED = "connect_failed"
SERVER_ERROR = "server_error"
INPUT_REFUSED = "input_refused"  # a view-only connection sent a message it may not send


#: The reason of a websocket closed because its daemon replica is stopping (with 1012,
#: "service restart": the browser reconnects, through another replica).
SHUTDOWN = "daemon stopping"


class Stop:
    """Ends one bridge from outside: ``stop(reason)`` (kick, revoked link) closes the
    websocket with 1008 and ``reason`` at once; ``restart()`` (the replica is stopping)
    with 1012, which tells the browser to reconnect."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason = ""
        self.code: int = WSCloseCode.POLICY_VIOLATION

    def stop(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def restart(self) -> None:
        if not self.event.is_set():
            self.code = WSCloseCode.SERVICE_RESTART
            self.stop(SHUTDOWN)


class BrowserSocket(Protocol):
    """The browser's side: a prepared websocket (the API hands in aiohttp's
    ``web.WebSocketResponse``; the bridge needs only this, so it does not import the
    web framework)."""

    @property
    def closed(self) -> bool: ...

    async def receive(self) -> Any: ...

    async def send_bytes(self, data: bytes, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ..., drain: bool = True) -> bool: ...


class WebSocketClosed(Exception):
    """The browser side ended (or must be ended): ``reason`` and the close ``code`` to send."""

    def __init__(self, reason: str, code: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class WebSocketByteStream:
    """:class:`vizdesk.proxy.rfb.ByteStream` over a websocket's binary frames, with a buffer."""

    def __init__(self, ws: BrowserSocket, max_message_bytes: int) -> None:
        self.ws = ws
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray()

    async def receive_frame(self) -> bytes:
        """The payload of the next binary frame; raises :class:`WebSocketClosed`."""
        while True:
            msg = await self.ws.receive()
            if msg.type is WSMsgType.BINARY:
                data: bytes = msg.data
                if self.max_message_bytes and len(data) > self.max_message_bytes:
                    raise WebSocketClosed(MESSAGE_TOO_BIG, WSCloseCode.MESSAGE_TOO_BIG)
                if data:
                    return data
                continue
            if msg.type is WSMsgType.TEXT:
                raise WebSocketClosed(TEXT_FRAME, WSCloseCode.UNSUPPORTED_DATA)
            if msg.type is WSMsgType.ERROR:
                error = msg.data
                if isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG:
                    raise WebSocketClosed(MESSAGE_TOO_BIG, WSCloseCode.MESSAGE_TOO_BIG)
                raise WebSocketClosed(CLIENT_CLOSED, None)
            if msg.type in (WSMsgType.PING, WSMsgType.PONG):
                continue
            # CLOSE, CLOSING, CLOSED
            raise WebSocketClosed(CLIENT_CLOSED, None)

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._buf += await self.receive_frame()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def write(self, data: bytes) -> None:
        try:
            await self.ws.send_bytes(data)
        except ConnectionError:
            raise WebSocketClosed(CLIENT_CLOSED, None) from None

    def take_buffer(self) -> bytes:
        """Bytes received beyond what the handshake consumed (to forward first)."""
        out = bytes(self._buf)
        self._buf.clear()
        return out


async def _close_ws(ws: BrowserSocket, code: int | None, message: str) -> None:
    """Close the websocket (bounded in time; aborts the connection if it cannot be clean)."""
    if ws.closed:
        return
    task = asyncio.current_task()
    stalled = message == SLOW_CLIENT  # it will neither drain nor answer our close frame
    try:
        async with asyncio.timeout(1.0 if stalled else CLOSE_TIMEOUT):
            await ws.close(
                code=code or WSCloseCode.OK, message=message.encode()[:120], drain=not stalled
            )
    except asyncio.CancelledError:
        # aiohttp shares one drain future per connection: a send cancelled in another task
        # (our slow-client timeout) leaves it cancelled, and close() then raises
        # CancelledError without this task being cancelled. aiohttp has closed the
        # transport by then; only a real cancellation of this task propagates.
        if task is not None and task.cancelling():
            raise
    except (TimeoutError, ConnectionError, RuntimeError):
        pass


def _close_writer(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None and not writer.is_closing():
        writer.close()


async def _pump(
    ws: BrowserSocket,
    browser: WebSocketByteStream,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    limits: LimitsConfig,
    on_bytes: Callable[[str, int], None] | None,
    filt: rfb.ClientMessageFilter,
    on_input: Callable[[], None] | None,
    stop: Stop | None,
) -> tuple[str, int | None]:
    loop = asyncio.get_running_loop()
    last_activity = loop.time()
    slow = float(limits.ws_slow_client_timeout_seconds) or None
    idle = float(limits.ws_idle_timeout_seconds)

    def count(direction: str, n: int) -> None:
        if on_bytes is not None:
            with contextlib.suppress(Exception):
                on_bytes(direction, n)

    async def up() -> tuple[str, int | None]:
        nonlocal last_activity
        raw = browser.take_buffer()
        while True:
            try:
                pending, _inputs, _dropped = filt.feed(raw)
            except rfb.RfbClientError as exc:
                log.info("proxy_input_refused", error=str(exc))
                return INPUT_REFUSED, WSCloseCode.POLICY_VIOLATION
            if filt.take_presence() and on_input is not None:
                with contextlib.suppress(Exception):
                    on_input()
            if pending:
                writer.write(pending)
                try:
                    async with asyncio.timeout(slow):
                        await writer.drain()
                except TimeoutError:
                    return SERVER_ERROR, WSCloseCode.INTERNAL_ERROR
                except ConnectionError:
                    return SERVER_CLOSED, WSCloseCode.OK
                count("up", len(pending))
            try:
                raw = await browser.receive_frame()
            except WebSocketClosed as exc:
                return exc.reason, exc.code
            last_activity = loop.time()

    async def down() -> tuple[str, int | None]:
        nonlocal last_activity
        while True:
            try:
                data = await reader.read(CHUNK_BYTES)
            except ConnectionError:
                data = b""
            if not data:
                return SERVER_CLOSED, WSCloseCode.OK
            last_activity = loop.time()
            try:
                async with asyncio.timeout(slow):
                    await ws.send_bytes(data)
            except TimeoutError:
                return SLOW_CLIENT, WSCloseCode.POLICY_VIOLATION
            except ConnectionError:
                return CLIENT_CLOSED, None
            count("down", len(data))

    async def watchdog() -> tuple[str, int | None]:
        while True:
            remaining = last_activity + idle - loop.time()
            if remaining <= 0:
                return IDLE_TIMEOUT, WSCloseCode.OK
            await asyncio.sleep(remaining)

    async def stopped() -> tuple[str, int | None]:
        assert stop is not None
        await stop.event.wait()
        return stop.reason or "stopped", stop.code

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    if idle > 0:
        tasks.append(asyncio.create_task(watchdog()))
    if stop is not None:
        tasks.append(asyncio.create_task(stopped()))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(t for t in tasks if t in done)
    exc = first.exception()
    if exc is not None:
        log.warning("proxy_pump_error", error=f"{exc.__class__.__name__}: {exc}")
        return SERVER_ERROR, WSCloseCode.INTERNAL_ERROR
    return first.result()


async def bridge_vnc(
    ws: BrowserSocket,
    host: str,
    port: int,
    password: str,
    *,
    limits: LimitsConfig,
    on_bytes: Callable[[str, int], None] | None = None,
    connect_timeout: float = 10.0,
    allow_input: bool = True,
    force_shared: bool = False,
    on_input: Callable[[], None] | None = None,
    stop: Stop | None = None,
) -> str:
    """Bridge a prepared websocket to the VNC server at ``host:port``; return why it ended.

    Reasons: ``server_closed``, ``client_closed``, ``idle_timeout``, ``slow_client``,
    ``text_frame``, ``message_too_big``, ``handshake_timeout``, ``server_error``, or the
    :class:`vizdesk.proxy.rfb.RfbError` code of a failed handshake (``connect_failed``,
    ``vnc_auth_failed``, ``vnc_refused``, ``vnc_security_type``, ``vnc_protocol``,
    ``vnc_eof``, ``client_protocol_error``), ``input_refused`` (a view-only connection
    sent a message it may not), or the reason given to ``stop``.

    After the handshake the browser's stream goes through
    :class:`vizdesk.proxy.rfb.ClientMessageFilter`: with ``allow_input=False`` every
    input message is dropped (view-only share); ``on_input`` is called for each chunk
    carrying forwarded input that shows a person (the idle clock: key, pointer, clipboard,
    not the resize requests noVNC sends by itself); ``force_shared`` makes the ClientInit
    shared.
    """
    filt = rfb.ClientMessageFilter(allow_input=allow_input, force_shared=force_shared)
    browser = WebSocketByteStream(ws, limits.ws_max_message_bytes)
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None

    async def connect() -> rfb.ByteStream:
        nonlocal reader, writer
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=STREAM_LIMIT)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return rfb.StreamByteStream(reader, writer)

    # What the websocket is closed with if this task is cancelled (daemon shutdown).
    reason: str = "shutdown"
    code: int | None = WSCloseCode.GOING_AWAY
    try:
        try:
            async with asyncio.timeout(limits.ws_handshake_timeout_seconds or None):
                await rfb.proxy_handshake(browser, connect, password)
        except TimeoutError:
            reason, code = HANDSHAKE_TIMEOUT, WSCloseCode.POLICY_VIOLATION
        except WebSocketClosed as exc:
            reason, code = exc.reason, exc.code
        except rfb.RfbClientError as exc:
            reason, code = exc.code, WSCloseCode.PROTOCOL_ERROR
        except rfb.RfbServerError as exc:
            log.warning("vnc_handshake_failed", host=host, port=port, code=exc.code, error=str(exc))
            reason, code = exc.code, WSCloseCode.TRY_AGAIN_LATER
        except rfb.RfbError as exc:
            reason, code = exc.code, WSCloseCode.PROTOCOL_ERROR
        else:
            assert reader is not None and writer is not None
            reason, code = await _pump(
                ws, browser, reader, writer, limits, on_bytes, filt, on_input, stop
            )
    finally:
        _close_writer(writer)
        await _close_ws(ws, code, reason)
    if writer is not None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await writer.wait_closed()
        except Exception:  # a stalled VNC server must not keep the handler alive
            writer.transport.abort()
    return reason
