"""TurboVNC 3.3 versus TigerVNC 1.12, side by side, through vizdesk's proxy; VirtualGL fps.

Run (as root, inside the test-bed lock): ``python bench/vnc_flavors.py [--quick] [--json F]``.
Needs the builds of ``testbed/vgl.sh build`` (TurboVNC, VirtualGL under
``$VIZDESK_VGL_DIR``) and Debian's TigerVNC ``Xvnc``.

Both servers are started with the argv of vizdesk's own adapters
(:mod:`vizdesk.node.vnc_server`: TigerVNC ``Xvnc :N``, TurboVNC ``vncserver :N -fg``),
1920x1080 depth 24, VNC authentication, each desktop only the program measured (no
window manager). The client is this process, behind the real proxy
(:func:`vizdesk.proxy.bridge.bridge_vnc`, as in ``proxy_vs_websockify.py``), and asks for
what noVNC asks for: Tight with JPEG quality 6 and compression level 2 (pixel format
32 bpp, depth 24). Interleaved A, B, A, B so the machine's other load hits both alike.

(a) start: spawn → ``RFB 003.`` banner on the port (what the wrapper waits for).
(b) full-frame throughput: non-incremental 1920x1080 updates back to back while
    ``glxspheres64 -fs`` runs under ``vglrun -d egl`` (Mesa's software EGL device): MB/s,
    frames/s, and the VNC server's CPU seconds per frame.
(c) streaming as noVNC does (incremental updates, one outstanding request) during the same
    glxspheres run: updates/s, MB/s, VNC server CPU %.
(d) ``glxspheres64 -w 800x600`` frame rate with ``vglrun -d egl`` and without (the VNC
    server's own GLX: Mesa swrast, indirect for TigerVNC).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _common import (
    REPO,
    cpu_snapshot,
    cpu_used,
    free_port,
    machine,
    median,
    ratio,
    table,
    write_json,
)
from proxy_vs_websockify import Conn, Rig, free_display, serve_vizdesk, wait_listening

sys.path.insert(0, str(REPO))  # tests.helpers.rfb_client

from vizdesk.node.password import generate_password, write_vncpasswd, write_xauthority
from vizdesk.node.vnc_server import ServerSpec, TigerVNCServer, TurboVNCServer

WIDTH, HEIGHT = 1920, 1080
VGL_DIR = Path(os.environ.get("VIZDESK_VGL_DIR", "/var/lib/vizdesk-vgl"))
TURBOVNC = VGL_DIR / "turbovnc"
VIRTUALGL = VGL_DIR / "virtualgl"
FLAVORS = ("tigervnc", "turbovnc")
# noVNC's defaults: Tight, JPEG quality 6 (-32 + 6), compression level 2 (-256 + 2).
ENCODINGS = (7, -26, -254)
PIXEL_FORMAT = struct.pack("!BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- servers -----------------------------------------------------------------------------------


class Server:
    """One VNC server started exactly as the wrapper's adapter starts it."""

    def __init__(self, rig: Rig, flavor: str, desktop: list[str], name: str) -> None:
        self.flavor = flavor
        d = rig.tmp / name
        d.mkdir()
        self.password = generate_password()
        write_vncpasswd(d / "passwd", self.password)
        write_xauthority(d / "Xauthority", os.urandom(16))
        self.display = free_display()
        self.port = free_port()
        spec = ServerSpec(
            port=self.port,
            display=self.display,
            width=WIDTH,
            height=HEIGHT,
            depth=24,
            password_file=str(d / "passwd"),
            xauthority=str(d / "Xauthority"),
            private_dir=str(d),
            desktop=desktop,
        )
        env = {**os.environ, "XAUTHORITY": spec.xauthority, "HOME": str(d)}
        self.env = {**env, "DISPLAY": f":{self.display}"}
        adapter = (
            TurboVNCServer(str(TURBOVNC / "bin" / "vncserver"))
            if flavor == "turbovnc"
            else TigerVNCServer("Xvnc")
        )
        adapter.prepare(spec)
        self.t0 = time.perf_counter()
        self.proc = rig.start(name, adapter.server_argv(spec), env=env)
        wait_listening(self.proc, self.port, b"RFB 003.", timeout=30)
        self.start_seconds = time.perf_counter() - self.t0
        self.desktop = None
        if not adapter.runs_desktop and desktop:
            self.desktop = rig.start(name + "-desktop", desktop, env=self.env)

    def xvnc_pid(self) -> int:
        """The Xvnc process of our display (TurboVNC's vncserver starts it detached)."""
        import psutil

        for p in psutil.process_iter(["name", "cmdline"]):
            if p.info["name"] in ("Xvnc", "Xtigervnc") and f":{self.display}" in (
                p.info["cmdline"] or []
            ):
                return int(p.pid)
        raise RuntimeError(f"no Xvnc on :{self.display} ({self.flavor})")

    def stop(self) -> None:
        for p in (self.desktop, self.proc):
            if p is not None and p.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGTERM)
        for p in (self.desktop, self.proc):
            if p is not None:
                try:
                    p.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.proc.pid, signal.SIGKILL)
                    p.proc.wait()
        # TurboVNC's vncserver leaves Xvnc to exit by itself after its xstartup ended.
        deadline = time.monotonic() + 10
        while Path(f"/tmp/.X11-unix/X{self.display}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


# -- a Tight-reading client --------------------------------------------------------------------


async def compact_len(c: Conn) -> int:
    n = 0
    for shift in (0, 7, 14):
        b = (await c.read_exactly(1))[0]
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            break
    return n


async def tight_rect(c: Conn, w: int, h: int) -> None:
    """Skip one Tight rectangle (32 bpp depth 24: TPIXEL is 3 bytes)."""
    ctl = (await c.read_exactly(1))[0] >> 4
    if ctl == 8:  # fill
        await c.discard(3)
        return
    if ctl == 9:  # JPEG
        await c.discard(await compact_len(c))
        return
    if ctl > 9:
        raise ConnectionError(f"bad Tight control {ctl}")
    filt = (await c.read_exactly(1))[0] if ctl & 4 else 0
    size = w * h * 3
    if filt == 1:  # palette
        colours = (await c.read_exactly(1))[0] + 1
        await c.discard(colours * 3)
        size = ((w + 7) // 8 if colours == 2 else w) * h
    if size < 12:
        await c.discard(size)
    else:
        await c.discard(await compact_len(c))


async def read_update(c: Conn) -> int:
    """Read one FramebufferUpdate; the pixels it covered."""
    while True:
        mtype = (await c.read_exactly(1))[0]
        if mtype == 0:
            break
        if mtype == 2:
            continue
        if mtype == 3:
            (length,) = struct.unpack("!I", (await c.read_exactly(7))[3:])
            await c.discard(length)
            continue
        raise ConnectionError(f"unexpected server message {mtype}")
    (nrects,) = struct.unpack("!H", (await c.read_exactly(3))[1:])
    covered = 0
    for _ in range(nrects):
        _x, _y, w, h, enc = struct.unpack("!HHHHi", await c.read_exactly(12))
        if enc == 7:
            await tight_rect(c, w, h)
        elif enc == 0:
            await c.discard(w * h * 4)
        else:
            raise ConnectionError(f"encoding {enc} not asked for")
        covered += w * h
    return covered


async def connect(http: aiohttp.ClientSession, url: str) -> Conn:
    from tests.helpers.rfb_client import handshake

    ws = await http.ws_connect(url, protocols=("binary",), max_msg_size=0, compress=0)

    async def recv() -> bytes:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.BINARY:
            raise ConnectionError(f"websocket: {msg.type} {msg.data!r}")
        data: bytes = msg.data
        return data

    async def close() -> None:
        await ws.close()

    conn = Conn(recv, ws.send_bytes, close)
    init = await handshake(conn, None)  # type: ignore[arg-type]
    assert (init.width, init.height) == (WIDTH, HEIGHT), init
    await conn.write(b"\x00\x00\x00\x00" + PIXEL_FORMAT)
    await conn.write(
        struct.pack("!BBH", 2, 0, len(ENCODINGS))
        + b"".join(struct.pack("!i", e) for e in ENCODINGS)
    )
    return conn


async def full_frames(c: Conn, seconds: float) -> tuple[int, int, float]:
    start, frames, t0 = c.received, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await c.write(struct.pack("!BBHHHH", 3, 0, 0, 0, WIDTH, HEIGHT))
        covered = 0
        while covered < WIDTH * HEIGHT:
            covered += await read_update(c)
        frames += 1
    return c.received - start, frames, time.perf_counter() - t0


async def stream(c: Conn, seconds: float) -> tuple[int, int, float]:
    start, updates, t0 = c.received, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await c.write(struct.pack("!BBHHHH", 3, 1, 0, 0, WIDTH, HEIGHT))
        await read_update(c)
        updates += 1
    return c.received - start, updates, time.perf_counter() - t0


# -- the runs ---------------------------------------------------------------------------------


def vglrun() -> list[str]:
    return [str(VIRTUALGL / "bin" / "vglrun"), "-d", "egl"]


def spheres() -> str:
    return str(VIRTUALGL / "bin" / "glxspheres64")


def bench_start(rig: Rig, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {f: [] for f in FLAVORS}
    for i in range(rounds):
        for f in FLAVORS:
            s = Server(rig, f, ["sleep", "600"], f"start-{f}-{i}")
            out[f].append(s.start_seconds)
            s.stop()
    return out


def glx_fps(env: dict[str, str], with_vgl: bool) -> float:
    argv = [*(vglrun() if with_vgl else []), spheres(), "-w", "800x600", "-f", "80", "-bt", "1"]
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, check=False)
    values = [float(v) for v in re.findall(r"([0-9.]+) frames/sec", p.stdout)]
    return median(values[1:] or values) if values else float("nan")


async def bench_stream(rig: Rig, seconds: float, rounds: int) -> dict[str, dict[str, Any]]:
    desktop = [*vglrun(), spheres(), "-fs"]
    servers = {f: Server(rig, f, desktop, f"spheres-{f}") for f in FLAVORS}
    res: dict[str, dict[str, Any]] = {
        f: {"full": [0, 0, 0.0, 0.0], "inc": [0, 0, 0.0, 0.0]} for f in FLAVORS
    }
    proxies = {}
    try:
        for f, s in servers.items():
            port = free_port()
            env = {**os.environ, "BENCH_VNC_PASSWORD": s.password, "PYTHONUNBUFFERED": "1"}
            p = rig.start(
                f"proxy-{f}", [sys.executable, __file__, "--serve", str(port), str(s.port)], env=env
            )
            wait_listening(p, port)
            proxies[f] = f"http://127.0.0.1:{port}/vnc"
        await asyncio.sleep(3)  # glxspheres up and drawing
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            conns = {f: await connect(http, proxies[f]) for f in FLAVORS}
            for f in FLAVORS:  # warm-up
                await full_frames(conns[f], 0.5)
            for _ in range(rounds):
                for kind, fn in (("full", full_frames), ("inc", stream)):
                    for f in FLAVORS:
                        pid = servers[f].xvnc_pid()
                        before = cpu_snapshot(pid)
                        nbytes, n, dt = await fn(conns[f], seconds)
                        acc = res[f][kind]
                        acc[0] += nbytes
                        acc[1] += n
                        acc[2] += dt
                        acc[3] += cpu_used(before, cpu_snapshot(pid))
            for c in conns.values():
                await c.close()
    finally:
        for s in servers.values():
            s.stop()
    return res


def bench_fps(rig: Rig, rounds: int) -> dict[str, dict[str, list[float]]]:
    servers = {f: Server(rig, f, ["sleep", "600"], f"fps-{f}") for f in FLAVORS}
    out: dict[str, dict[str, list[float]]] = {f: {"vglrun": [], "plain": []} for f in FLAVORS}
    try:
        for _ in range(rounds):
            for f in FLAVORS:
                for mode in ("vglrun", "plain"):
                    out[f][mode].append(glx_fps(servers[f].env, mode == "vglrun"))
    finally:
        for s in servers.values():
            s.stop()
    return out


def report(start: dict[str, list[float]], st: dict[str, Any], fps: dict[str, Any]) -> str:
    t, g = "tigervnc", "turbovnc"
    rows: list[list[Any]] = []
    a, b = median(start[t]) * 1000, median(start[g]) * 1000
    rows.append(["(a) start → RFB banner, ms (median)", a, b, ratio(b, a)])
    for kind, label in (("full", "(b) full frames"), ("inc", "(c) noVNC-like stream")):
        x, y = st[t][kind], st[g][kind]
        rows.append(
            [
                f"{label}: MB/s",
                x[0] / x[2] / 1e6,
                y[0] / y[2] / 1e6,
                ratio(y[0] / y[2], x[0] / x[2]),
            ]
        )
        unit = "frames/s" if kind == "full" else "updates/s"
        rows.append([f"{label}: {unit}", x[1] / x[2], y[1] / y[2], ratio(y[1] / y[2], x[1] / x[2])])
        rows.append(
            [
                f"{label}: KB per {unit[:-2]}",
                x[0] / max(x[1], 1) / 1e3,
                y[0] / max(y[1], 1) / 1e3,
                ratio(y[0] / max(y[1], 1), x[0] / max(x[1], 1)),
            ]
        )
        rows.append(
            [
                f"{label}: VNC server CPU %",
                100 * x[3] / x[2],
                100 * y[3] / y[2],
                ratio(y[3] / y[2], x[3] / x[2]),
            ]
        )
    for mode in ("vglrun", "plain"):
        label = "with vglrun -d egl" if mode == "vglrun" else "without vglrun (server GLX)"
        x, y = median(fps[t][mode]), median(fps[g][mode])
        rows.append([f"(d) glxspheres64 800x600 fps, {label}", x, y, ratio(y, x)])
    return table(["measure", "TigerVNC", "TurboVNC", "TurboVNC/TigerVNC"], rows)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_vizdesk(args.serve[0], args.serve[1])
        return 0
    if not (TURBOVNC / "bin" / "Xvnc").exists() or not (VIRTUALGL / "bin" / "vglrun").exists():
        print(
            f"no TurboVNC/VirtualGL build under {VGL_DIR}: run testbed/vgl.sh build",
            file=sys.stderr,
        )
        return 2
    meta = machine()
    rounds = 2 if args.quick else 5
    seconds = 2.0 if args.quick else 4.0
    rig = Rig(Path(tempfile.mkdtemp(prefix="vizdesk-bench-vnc-")))
    try:
        log("(a) start")
        start = bench_start(rig, rounds)
        log("(b, c) throughput during glxspheres")
        st = asyncio.run(bench_stream(rig, seconds, max(1, rounds // 2)))
        log("(d) glxspheres fps")
        fps = bench_fps(rig, max(1, rounds // 2))
    finally:
        rig.stop_all()
    meta["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print(f"machine: {meta}")
    print(report(start, st, fps))
    write_json(args.json, {"meta": meta, "start": start, "stream": st, "fps": fps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
