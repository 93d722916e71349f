"""vizdesk's websocket→VNC proxy versus websockify, side by side, in front of one real Xvnc.

Run: ``python bench/proxy_vs_websockify.py [--quick] [--json out.json]``.

What runs (all on loopback):
* one TigerVNC ``Xvnc`` (1920x1080, depth 24, ``-SecurityTypes VncAuth``);
* vizdesk: :func:`vizdesk.proxy.bridge.bridge_vnc` in a tiny aiohttp app, a separate process,
  the websocket prepared exactly as ``api/sessions.py`` does it (subprotocol ``binary``,
  ``max_msg_size`` from the limits, ``heartbeat=30``, ``compress=False``) and the bytes
  counted in a Prometheus counter like the daemon does. It does VNC Authentication itself
  and offers security type None to the client;
* websockify (PyPI, its own venv ``bench/.venv-peers``, created on first use; never a
  project dependency), default mode: one forked process per connection, numpy present.
  The client does VNC Authentication through it;
* ``direct``: the client straight to Xvnc over TCP, the ceiling without any proxy.

The client is this process (aiohttp websockets, a zero-copy RFB reader). Every figure is
measured on both proxies interleaved (A, B, A, B, ...) so that the load other users put on
the machine hits both alike; the table gives the ratio vizdesk/websockify.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from _common import (
    BENCH,
    REPO,
    cpu_snapshot,
    cpu_used,
    fmt,
    free_port,
    machine,
    median,
    mem_snapshot,
    pct,
    ratio,
    table,
    write_json,
)

WIDTH, HEIGHT = 1920, 1080
PEER_VENV = BENCH / ".venv-peers"
WEBSOCKIFY_REQ = ["websockify==0.13.0", "numpy"]


# -- the vizdesk side (runs in its own process) -------------------------------------------


def serve_vizdesk(port: int, vnc_port: int) -> None:
    """The tiny app: one route that does what ``api.sessions.vnc_websocket`` does after auth."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry, Counter

    from vizdesk.config import LimitsConfig
    from vizdesk.proxy.bridge import bridge_vnc

    password = os.environ.pop("BENCH_VNC_PASSWORD")
    limits = LimitsConfig()
    registry = CollectorRegistry()
    proxy_bytes = Counter(
        "vizdesk_proxy_bytes", "Bytes through the websocket proxy", ["direction"], registry=registry
    )

    async def vnc(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            protocols=("binary",),
            max_msg_size=limits.ws_max_message_bytes,
            heartbeat=30.0,
            compress=False,
        )
        await ws.prepare(request)

        def on_bytes(direction: str, n: int) -> None:
            proxy_bytes.labels(direction=direction).inc(n)

        await bridge_vnc(ws, "127.0.0.1", vnc_port, password, limits=limits, on_bytes=on_bytes)
        return ws

    app = web.Application()
    app.router.add_get("/vnc", vnc)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        print=None,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=5.0,
    )


# -- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Rig:
    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        p = Proc(name, proc, log)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.proc.poll() is None:
                # Each was started in its own session: signal its group (websockify children).
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGKILL)
                p.proc.wait()


def wait_listening(p: Proc, port: int, banner: bytes | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"{p.name} exited: {p.log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if banner is None or s.recv(12).startswith(banner):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{p.name} did not listen on {port}: {p.log.read_text()[-2000:]}")


def free_display() -> int:
    for n in random.sample(range(300, 600), 300):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number")


def websockify_path(explicit: str | None) -> str:
    """The websockify executable; creates ``bench/.venv-peers`` with it when missing."""
    if explicit:
        return explicit
    exe = PEER_VENV / "bin" / "websockify"
    if not exe.exists():
        print(f"creating {PEER_VENV} with {' '.join(WEBSOCKIFY_REQ)} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [str(PEER_VENV / "bin" / "pip"), "install", "-q", *WEBSOCKIFY_REQ], check=True
        )
    return str(exe)


def peer_version(exe: str) -> str:
    py = Path(exe).parent / "python"
    out = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('websockify'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


# -- the client --------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    ws_url: str | None  # None: plain TCP to Xvnc
    password: str | None  # what the client authenticates with (None: expects security None)
    pid: int | None  # the proxy process (None for direct)


class Conn:
    """One RFB client connection with a buffered reader that skips pixel data without copying."""

    def __init__(
        self,
        recv: Callable[[], Awaitable[bytes]],
        send: Callable[[bytes], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self._recv, self.write, self._close = recv, send, close
        self.buf = b""
        self.pos = 0
        self.received = 0
        self.bpp = 4

    async def _more(self) -> bytes:
        chunk = await self._recv()
        self.received += len(chunk)
        return chunk

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            chunk = await self._more()
            self.buf = self.buf[self.pos :] + chunk
            self.pos = 0
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    async def discard(self, n: int) -> None:
        avail = len(self.buf) - self.pos
        if avail >= n:
            self.pos += n
            return
        n -= avail
        self.buf, self.pos = b"", 0
        while True:
            chunk = await self._more()
            if len(chunk) >= n:
                self.buf, self.pos = chunk, n
                return
            n -= len(chunk)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._close()

    async def update(self, area: int) -> None:
        """Read FramebufferUpdates until ``area`` pixels were covered (Raw encoding only)."""
        covered = 0
        while covered < area:
            mtype = (await self.read_exactly(1))[0]
            if mtype == 2:  # Bell
                continue
            if mtype == 3:  # ServerCutText
                (length,) = struct.unpack("!I", (await self.read_exactly(7))[3:])
                await self.discard(length)
                continue
            if mtype == 1:  # SetColourMapEntries
                (n,) = struct.unpack("!H", (await self.read_exactly(5))[3:])
                await self.discard(6 * n)
                continue
            if mtype != 0:
                raise ConnectionError(f"unexpected server message {mtype}")
            (nrects,) = struct.unpack("!H", (await self.read_exactly(3))[1:])
            for _ in range(nrects):
                _x, _y, w, h, enc = struct.unpack("!HHHHi", await self.read_exactly(12))
                if enc != 0:
                    raise ConnectionError(f"encoding {enc} although only Raw was asked")
                await self.discard(w * h * self.bpp)
                covered += w * h

    async def request(self, x: int, y: int, w: int, h: int, incremental: bool = False) -> None:
        await self.write(struct.pack("!BBHHHH", 3, int(incremental), x, y, w, h))
        await self.update(w * h)


async def open_conn(t: Target, http: aiohttp.ClientSession) -> Conn:
    """Connect and complete the RFB handshake up to ServerInit; Raw encoding is set."""
    from tests.helpers.rfb_client import handshake

    if t.ws_url is not None:
        ws = await http.ws_connect(t.ws_url, protocols=("binary",), max_msg_size=0, compress=0)

        async def recv() -> bytes:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.BINARY:
                raise ConnectionError(f"websocket: {msg.type} {msg.data!r}")
            data: bytes = msg.data
            return data

        async def close_ws() -> None:
            await ws.close()

        conn = Conn(recv, ws.send_bytes, close_ws)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port, limit=1 << 20)

        async def recv_tcp() -> bytes:
            data = await reader.read(1 << 20)
            if not data:
                raise ConnectionError("EOF")
            return data

        async def send_tcp(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        async def close_tcp() -> None:
            writer.close()
            await writer.wait_closed()

        conn = Conn(recv_tcp, send_tcp, close_tcp)
    try:
        init = await handshake(conn, t.password)  # type: ignore[arg-type]
        if (init.width, init.height) != (WIDTH, HEIGHT):
            raise RuntimeError(f"unexpected geometry {init.width}x{init.height}")
        conn.bpp = init.bpp // 8
        await conn.write(struct.pack("!BBHi", 2, 0, 1, 0))  # SetEncodings: Raw only
    except BaseException:
        await conn.close()
        raise
    return conn


# -- the measurements ------------------------------------------------------------------------


async def bench_setup(targets: list[Target], http: aiohttp.ClientSession, n: int) -> dict[str, Any]:
    """(a) Connect → ServerInit, N times per target, interleaved; proxy CPU per setup."""
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    cpu: dict[str, float] = {t.name: 0.0 for t in targets}
    for _ in range(n):
        for t in targets:
            before = cpu_snapshot(t.pid) if t.pid else None
            t0 = time.perf_counter()
            conn = await open_conn(t, http)
            times[t.name].append(time.perf_counter() - t0)
            await conn.close()
            await asyncio.sleep(0.02)  # let the proxy tear down before the next one
            if t.pid and before is not None:
                cpu[t.name] += cpu_used(before, cpu_snapshot(t.pid))
    return {
        name: {
            "median_ms": median(v) * 1000,
            "p95_ms": pct(v, 95) * 1000,
            "proxy_cpu_ms_per_setup": cpu[name] / n * 1000,
            "n": len(v),
        }
        for name, v in times.items()
    }


@dataclass
class _Acc:
    bytes: int = 0
    frames: int = 0
    secs: float = 0.0
    cpu: float = 0.0
    rounds: list[float] = field(default_factory=list)


async def bench_throughput(
    targets: list[Target], http: aiohttp.ClientSession, rounds: int, seconds: float
) -> dict[str, Any]:
    """(b) Non-incremental full-frame Raw updates back to back, one connection per target."""
    conns = {t.name: await open_conn(t, http) for t in targets}
    acc = {t.name: _Acc() for t in targets}
    try:
        for t in targets:  # warm-up: one frame each
            await conns[t.name].request(0, 0, WIDTH, HEIGHT)
        for _ in range(rounds):
            for t in targets:
                c = conns[t.name]
                before = cpu_snapshot(t.pid) if t.pid else None
                start_bytes, frames = c.received, 0
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    await c.request(0, 0, WIDTH, HEIGHT)
                    frames += 1
                dt = time.perf_counter() - t0
                nbytes = c.received - start_bytes
                a = acc[t.name]
                a.bytes += nbytes
                a.frames += frames
                a.secs += dt
                a.rounds.append(round(nbytes / dt / 1e6, 1))
                if t.pid and before is not None:
                    a.cpu += cpu_used(before, cpu_snapshot(t.pid))
    finally:
        for c in conns.values():
            await c.close()
    return {
        name: {
            "MB_per_s": a.bytes / a.secs / 1e6,
            "frames_per_s": a.frames / a.secs,
            "proxy_cpu_ms_per_MB": a.cpu * 1000 / (a.bytes / 1e6) if a.cpu else float("nan"),
            "per_round_MB_per_s": a.rounds,
            "bytes": a.bytes,
        }
        for name, a in acc.items()
    }


async def bench_rtt(
    targets: list[Target], http: aiohttp.ClientSession, cycles: int, blocks: int
) -> dict[str, Any]:
    """(c) Small round trip: FramebufferUpdateRequest for 1x1 (non-incremental) → its update."""
    conns = {t.name: await open_conn(t, http) for t in targets}
    rtts: dict[str, list[float]] = {t.name: [] for t in targets}
    try:
        for t in targets:
            for _ in range(20):  # warm-up
                await conns[t.name].request(7, 7, 1, 1)
        per_block = max(1, cycles // blocks)
        for _ in range(blocks):
            for t in targets:
                c = conns[t.name]
                for _ in range(per_block):
                    t0 = time.perf_counter()
                    await c.request(7, 7, 1, 1)
                    rtts[t.name].append(time.perf_counter() - t0)
    finally:
        for c in conns.values():
            await c.close()
    return {
        name: {
            "median_us": median(v) * 1e6,
            "p95_us": pct(v, 95) * 1e6,
            "p99_us": pct(v, 99) * 1e6,
            "n": len(v),
        }
        for name, v in rtts.items()
    }


async def bench_concurrent(
    t: Target,
    http: aiohttp.ClientSession,
    n_conns: int,
    seconds: float,
    region: tuple[int, int],
    hz: float,
) -> dict[str, Any]:
    """(d) ``n_conns`` open connections: memory added, CPU idle and under a fixed load."""
    assert t.pid is not None
    await asyncio.sleep(0.5)
    base = mem_snapshot(t.pid)
    conns = [await open_conn(t, http) for _ in range(n_conns)]
    try:
        for c in conns:
            await c.request(0, 0, 16, 16)
        await asyncio.sleep(1.0)
        loaded = mem_snapshot(t.pid)
        # Idle: connections open, nothing asked.
        idle_secs = 2.0
        b0 = cpu_snapshot(t.pid)
        await asyncio.sleep(idle_secs)
        idle_cpu = cpu_used(b0, cpu_snapshot(t.pid))
        # Fixed workload: every connection asks for a w x h Raw region hz times a second.
        w, h = region
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + seconds
        done = [0] * n_conns
        late = [0] * n_conns

        async def worker(i: int, c: Conn) -> None:
            nxt = loop.time() + random.random() / hz
            await asyncio.sleep(max(0.0, nxt - loop.time()))
            x, y = (i * 97) % (WIDTH - w), (i * 53) % (HEIGHT - h)
            while loop.time() < stop_at:
                await c.request(x, y, w, h)
                done[i] += 1
                nxt += 1 / hz
                delay = nxt - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    late[i] += 1

        rx0 = sum(c.received for c in conns)
        b1 = cpu_snapshot(t.pid)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
        wall = time.perf_counter() - t0
        busy_cpu = cpu_used(b1, cpu_snapshot(t.pid))
        rx = sum(c.received for c in conns) - rx0
        after_load = mem_snapshot(t.pid)
    finally:
        for c in conns:
            await c.close()
    return {
        "processes": loaded.processes,
        "uss_MB_per_conn": (loaded.uss - base.uss) / n_conns / 1e6,
        "rss_MB_per_conn": (loaded.rss - base.rss) / n_conns / 1e6,
        "uss_MB_per_conn_after_load": (after_load.uss - base.uss) / n_conns / 1e6,
        "uss_MB_total": loaded.uss / 1e6,
        "idle_cpu_pct": idle_cpu / idle_secs * 100,
        "busy_cpu_pct": busy_cpu / wall * 100,
        "cpu_ms_per_conn_s": busy_cpu * 1000 / (n_conns * wall),
        "workload_MB_per_s": rx / wall / 1e6,
        "requests": sum(done),
        "late_requests": sum(late),
    }


# -- main ------------------------------------------------------------------------------------


def start_rig(rig: Rig, websockify: str) -> tuple[list[Target], str]:
    password = secrets.token_urlsafe(6)[:8]
    from vizdesk.contract.vncauth import vncpasswd_obfuscate

    pwfile = rig.tmp / "passwd"
    pwfile.write_bytes(vncpasswd_obfuscate(password))
    pwfile.chmod(0o600)
    vnc_port = free_port()
    xvnc = rig.start(
        "xvnc",
        [
            "Xvnc",
            f":{free_display()}",
            "-rfbport",
            str(vnc_port),
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
    )
    wait_listening(xvnc, vnc_port, b"RFB 003.")
    viz_port, wsf_port = free_port(), free_port()
    env = {**os.environ, "BENCH_VNC_PASSWORD": password, "PYTHONUNBUFFERED": "1"}
    viz = rig.start(
        "vizdesk",
        [sys.executable, __file__, "--serve-vizdesk", str(viz_port), str(vnc_port)],
        env=env,
    )
    wsf = rig.start("websockify", [websockify, f"127.0.0.1:{wsf_port}", f"127.0.0.1:{vnc_port}"])
    wait_listening(viz, viz_port)
    wait_listening(wsf, wsf_port)
    targets = [
        Target("vizdesk", viz_port, f"http://127.0.0.1:{viz_port}/vnc", None, viz.proc.pid),
        Target("websockify", wsf_port, f"http://127.0.0.1:{wsf_port}/", password, wsf.proc.pid),
        Target("direct", vnc_port, None, password, None),
    ]
    return targets, password


async def run(args: argparse.Namespace, targets: list[Target]) -> dict[str, Any]:
    viz, wsf = targets[0], targets[1]
    res: dict[str, Any] = {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for t in targets:  # warm-up: imports, first allocations
            c = await open_conn(t, http)
            await c.request(0, 0, WIDTH, HEIGHT)
            await c.close()
        log("(d) concurrent connections")
        res["concurrent"] = {}
        for t in (viz, wsf):
            res["concurrent"][t.name] = await bench_concurrent(
                t, http, args.conns, args.load_seconds, (128, 128), 10.0
            )
        log("(a) connection setup")
        res["setup"] = await bench_setup(targets, http, args.setups)
        log("(c) small round trips")
        res["rtt"] = await bench_rtt(targets, http, args.cycles, 4)
        log("(b) full-frame throughput")
        res["throughput"] = await bench_throughput(targets, http, args.rounds, args.seconds)
    return res


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def report(res: dict[str, Any], meta: dict[str, Any]) -> str:
    s, r, tp, cc = res["setup"], res["rtt"], res["throughput"], res["concurrent"]
    v, w, d = "vizdesk", "websockify", "direct"
    rows: list[list[Any]] = []

    def row(label: str, a: Any, b: Any, better: str, direct: Any = float("nan")) -> None:
        rows.append([label, a, b, ratio(a, b), better, direct])

    row(
        "(a) setup to ServerInit, median ms",
        s[v]["median_ms"],
        s[w]["median_ms"],
        "lower",
        s[d]["median_ms"],
    )
    row("(a) setup to ServerInit, p95 ms", s[v]["p95_ms"], s[w]["p95_ms"], "lower", s[d]["p95_ms"])
    row(
        "(a) proxy CPU per setup, ms",
        s[v]["proxy_cpu_ms_per_setup"],
        s[w]["proxy_cpu_ms_per_setup"],
        "lower",
    )
    row(
        "(b) full-frame Raw 1920x1080x32, MB/s",
        tp[v]["MB_per_s"],
        tp[w]["MB_per_s"],
        "higher",
        tp[d]["MB_per_s"],
    )
    row(
        "(b) frames/s",
        tp[v]["frames_per_s"],
        tp[w]["frames_per_s"],
        "higher",
        tp[d]["frames_per_s"],
    )
    row(
        "(b) proxy CPU per MB, ms",
        tp[v]["proxy_cpu_ms_per_MB"],
        tp[w]["proxy_cpu_ms_per_MB"],
        "lower",
    )
    row(
        "(c) 1x1 update round trip, median us",
        r[v]["median_us"],
        r[w]["median_us"],
        "lower",
        r[d]["median_us"],
    )
    row(
        "(c) 1x1 update round trip, p95 us", r[v]["p95_us"], r[w]["p95_us"], "lower", r[d]["p95_us"]
    )
    row(
        "(c) 1x1 update round trip, p99 us", r[v]["p99_us"], r[w]["p99_us"], "lower", r[d]["p99_us"]
    )
    row("(d) proxy processes, 20 conns", cc[v]["processes"], cc[w]["processes"], "lower")
    row("(d) memory per conn, USS MB", cc[v]["uss_MB_per_conn"], cc[w]["uss_MB_per_conn"], "lower")
    row("(d) memory per conn, RSS MB", cc[v]["rss_MB_per_conn"], cc[w]["rss_MB_per_conn"], "lower")
    row(
        "(d) memory per conn after load, USS MB",
        cc[v]["uss_MB_per_conn_after_load"],
        cc[w]["uss_MB_per_conn_after_load"],
        "lower",
    )
    row("(d) CPU idle, 20 open conns, %", cc[v]["idle_cpu_pct"], cc[w]["idle_cpu_pct"], "lower")
    row(
        "(d) CPU, 20 conns x 10 Hz x 128x128, %",
        cc[v]["busy_cpu_pct"],
        cc[w]["busy_cpu_pct"],
        "lower",
    )
    row(
        "(d) CPU per conn, ms per s",
        cc[v]["cpu_ms_per_conn_s"],
        cc[w]["cpu_ms_per_conn_s"],
        "lower",
    )
    row(
        "(d) workload delivered, MB/s",
        cc[v]["workload_MB_per_s"],
        cc[w]["workload_MB_per_s"],
        "equal",
    )
    head = (
        f"proxy_vs_websockify — {meta['date']}, {meta['cores']} cores ({meta['cpu']}), "
        f"load avg at start {meta['loadavg_1m']}, websockify {meta['websockify']}, "
        f"Xvnc {WIDTH}x{HEIGHT}x32, N setups={meta['setups']}, throughput "
        f"{meta['rounds']}x{meta['seconds']} s per target, RTT cycles={meta['cycles']}"
    )
    out = table(
        ["figure", "vizdesk", "websockify", "ratio v/w", "better", "direct (no proxy)"], rows
    )
    per_round = ", ".join(f"{k}: {tp[k]['per_round_MB_per_s']}" for k in (v, w, d))
    return f"{head}\n\n{out}\n\nthroughput per round (MB/s): {per_round}"


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-vizdesk":
        serve_vizdesk(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (~30 s) for a smoke check")
    ap.add_argument("--websockify", help="websockify executable (default: bench/.venv-peers)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()
    args.setups = 15 if args.quick else 50
    args.rounds = 1 if args.quick else 4
    args.seconds = 2.0 if args.quick else 2.5
    args.cycles = 200 if args.quick else 1000
    args.conns = 20
    args.load_seconds = 3.0 if args.quick else 8.0
    if shutil.which("Xvnc") is None:
        print("TigerVNC Xvnc is not installed (tigervnc-standalone-server)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))  # tests.helpers.rfb_client
    exe = websockify_path(args.websockify)
    meta = machine()
    meta.update(
        websockify=peer_version(exe),
        setups=args.setups,
        rounds=args.rounds,
        seconds=args.seconds,
        cycles=args.cycles,
    )
    with tempfile.TemporaryDirectory(prefix="vizdesk-bench-") as tmp:
        rig = Rig(Path(tmp))
        try:
            targets, _ = start_rig(rig, exe)
            started = time.monotonic()
            res = asyncio.run(run(args, targets))
            meta["elapsed_s"] = round(time.monotonic() - started, 1)
        finally:
            rig.stop_all()
    meta["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print(report(res, meta))
    print(f"\n(run took {fmt(meta['elapsed_s'])} s; load avg at end {meta['loadavg_1m_end']})")
    write_json(args.json, {"meta": meta, "results": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
