"""The proxy's browser → server message filter: view-only connections lose every input
message, everything else passes intact, however the stream is split into frames."""

from __future__ import annotations

import struct
import zlib

import pytest

from vizdesk.proxy.rfb import ClientMessageFilter, RfbClientError
from vizdesk.proxy.thumbnail import downscale, png
from vizdesk.slurm.reasons import reason_words
from vizdesk.slurm.squeue_json import job_status_from_json

SET_PIXEL_FORMAT = b"\x00\x00\x00\x00" + bytes(range(16))
SET_ENCODINGS = struct.pack(">BBHii", 2, 0, 2, 0, -239)
FBUR = struct.pack(">BBHHHH", 3, 1, 0, 0, 640, 480)
KEY = struct.pack(">BBxxI", 4, 1, 0x61)
POINTER = struct.pack(">BBHH", 5, 1, 10, 20)
CUT = struct.pack(">Bxxxi", 6, 5) + b"hello"
EXT_CUT = struct.pack(">Bxxxi", 6, -8) + b"\x00\x00\x00\x01abcd"
QEMU_KEY = struct.pack(">BBHII", 255, 0, 1, 0x61, 30)
XVP = bytes([250, 0, 1, 2])
DESKTOP_SIZE = struct.pack(">BxHHBx", 251, 800, 600, 1) + bytes(16)
FENCE = struct.pack(">BxxxIB", 248, 0, 3) + b"abc"
CONT = struct.pack(">BBHHHH", 150, 1, 0, 0, 640, 480)
PASSIVE = SET_PIXEL_FORMAT + SET_ENCODINGS + FBUR + FENCE + CONT
INPUT = KEY + POINTER + CUT + EXT_CUT + QEMU_KEY + XVP + DESKTOP_SIZE


def run(f: ClientMessageFilter, data: bytes, step: int) -> tuple[bytes, int, int]:
    out, seen, dropped = bytearray(), 0, 0
    for i in range(0, len(data), step):
        o, s, d = f.feed(data[i : i + step])
        out += o
        seen, dropped = seen + s, dropped + d
    return bytes(out), seen, dropped


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_view_drops_every_input_message_and_passes_the_rest(step: int) -> None:
    stream = b"\x00" + PASSIVE + INPUT + FBUR + INPUT + FBUR
    out, seen, dropped = run(
        ClientMessageFilter(allow_input=False, force_shared=True), stream, step
    )
    assert out == b"\x01" + PASSIVE + FBUR + FBUR  # ClientInit forced shared
    assert seen == dropped == 14


@pytest.mark.parametrize("step", [1, 5, 1000])
def test_control_passes_everything_and_counts_input(step: int) -> None:
    stream = b"\x01" + PASSIVE + INPUT + FBUR
    out, seen, dropped = run(ClientMessageFilter(allow_input=True), stream, step)
    assert out == stream
    assert (seen, dropped) == (7, 0)


@pytest.mark.parametrize("message", [KEY, POINTER, CUT, EXT_CUT, QEMU_KEY, XVP])
def test_forwarded_input_is_presence(message: bytes) -> None:
    f = ClientMessageFilter(allow_input=True)
    f.feed(b"\x01" + PASSIVE)
    assert not f.take_presence()
    f.feed(message[:1])
    f.feed(message[1:] + FBUR)
    assert f.take_presence()
    assert not f.take_presence()  # taken


def test_desktop_size_requests_are_not_presence() -> None:
    # noVNC sends them by itself (a banner changes the page's layout; it repeats them every
    # 100 ms while the server's size differs): they must not keep an unused desktop alive
    f = ClientMessageFilter(allow_input=True)
    out, seen, _ = f.feed(b"\x01" + DESKTOP_SIZE * 50 + FBUR)
    assert out == b"\x01" + DESKTOP_SIZE * 50 + FBUR and seen == 50  # still forwarded
    assert not f.take_presence()
    f.feed(DESKTOP_SIZE + POINTER)
    assert f.take_presence()


@pytest.mark.parametrize("allow_input", [False, True])
@pytest.mark.parametrize("step", [1, 5, 1000])
def test_extended_mouse_buttons_are_never_negotiated(allow_input: bool, step: int) -> None:
    # noVNC 1.7 offers -316; TurboVNC 3.3 would then accept 7-byte PointerEvents, which
    # this filter would cut at 6 bytes. The encoding never reaches the server.
    offer = struct.pack(">BBH4i", 2, 0, 4, 16, -316, 0, -239)
    kept = struct.pack(">BBH3i", 2, 0, 3, 16, 0, -239)
    f = ClientMessageFilter(allow_input=allow_input)
    out, _, _ = run(f, b"\x01" + offer + FBUR + POINTER, step)
    assert out == b"\x01" + kept + FBUR + (POINTER if allow_input else b"")
    only = struct.pack(">BBHi", 2, 0, 1, -316)
    assert ClientMessageFilter(allow_input=True).feed(b"\x01" + only)[0] == b"\x01\x02\x00\x00\x00"


def ext_cut(actions: int, payload: bytes = b"") -> bytes:
    body = struct.pack(">I", actions | 1) + payload  # | text format
    return struct.pack(">Bxxxi", 6, -len(body)) + body


@pytest.mark.parametrize("step", [1, 9, 1000])
def test_clipboard_answers_noVNC_sends_by_itself_are_not_presence(step: int) -> None:
    caps, request, peek = 1 << 24, 1 << 25, 1 << 26
    notify, provide = 1 << 27, 1 << 28
    automatic = ext_cut(caps, bytes(4)) + ext_cut(request) + ext_cut(provide, b"zlib..")
    f = ClientMessageFilter(allow_input=True)
    out, seen, _ = run(f, b"\x01" + automatic + ext_cut(peek) + FBUR, step)
    assert out == b"\x01" + automatic + ext_cut(peek) + FBUR and seen == 4  # forwarded
    assert not f.take_presence()
    run(f, ext_cut(notify), step)  # the browser's clipboard changed: someone copied
    assert f.take_presence()
    run(f, CUT, step)  # the classic message is always a person's
    assert f.take_presence()


def test_view_input_is_never_presence() -> None:
    f = ClientMessageFilter(allow_input=False)
    f.feed(b"\x00" + INPUT)
    assert not f.take_presence()


def test_view_closes_on_unknown_type_and_unknown_qemu_submessage() -> None:
    f = ClientMessageFilter(allow_input=False)
    f.feed(b"\x01")
    with pytest.raises(RfbClientError):
        f.feed(bytes([252, 0, 0, 0]))  # gii: not in the table
    f = ClientMessageFilter(allow_input=False)
    f.feed(b"\x01")
    with pytest.raises(RfbClientError):
        f.feed(bytes([255, 1, 0, 0]))  # QEMU audio


def test_input_allowed_steps_aside_on_unknown_type() -> None:
    f = ClientMessageFilter(allow_input=True)
    assert f.feed(b"\x01" + FBUR + bytes([252, 9, 9])) == (
        b"\x01" + FBUR + bytes([252, 9, 9]),
        1,
        0,
    )
    assert f.take_presence()  # an unknown message may be anything
    assert f.feed(KEY) == (KEY, 1, 0)  # passthrough from now on
    assert f.take_presence()


def test_huge_clipboard_is_refused_and_long_one_streams() -> None:
    f = ClientMessageFilter(allow_input=False, max_cut_text=10)
    f.feed(b"\x01")
    with pytest.raises(RfbClientError):
        f.feed(struct.pack(">Bxxxi", 6, 11))
    f = ClientMessageFilter(allow_input=False)
    f.feed(b"\x01")
    assert f.feed(struct.pack(">Bxxxi", 6, 100_000)) == (b"", 1, 1)
    assert f.feed(b"x" * 99_999) == (b"", 0, 0)
    assert f.feed(b"x" + FBUR) == (FBUR, 0, 0)


def test_png_and_downscale() -> None:
    w, h = 1024, 768
    rgb = bytes((x * 7 + y) % 256 for y in range(h) for x in range(0, w * 3))[: w * h * 3]
    sw, sh, small = downscale(w, h, rgb, 320)
    assert (sw, sh) == (256, 192) and len(small) == sw * sh * 3
    assert small[:3] == rgb[:3] and small[3:6] == rgb[12:15]
    data = png(sw, sh, small)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", data[16:24]) == (256, 192)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_len])
    assert len(raw) == sh * (1 + sw * 3)


def test_reason_words_and_pending_estimates() -> None:
    assert "busy" in reason_words("Resources")
    assert reason_words("SomethingNew") == "SomethingNew"
    pending = job_status_from_json(
        {"job_id": 7, "job_state": "PENDING", "state_reason": "Resources",
         "start_time": 1795305133, "end_time": 1795308733}
    )  # fmt: skip
    assert pending is not None and pending.expected_start is not None
    assert pending.start_time is None and pending.expected_end is None
    running = job_status_from_json(
        {"job_id": 8, "job_state": ["RUNNING"], "batch_host": "vm", "nodes": "vm",
         "start_time": {"set": True, "number": 1795305133},
         "end_time": {"set": True, "number": 1795308733}}
    )  # fmt: skip
    assert running is not None and running.expected_end is not None
    assert running.expected_start is None
