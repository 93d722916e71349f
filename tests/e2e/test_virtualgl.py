"""OpenGL through VirtualGL without a GPU, inside real desktops (TigerVNC and TurboVNC).

The daemon's node config says ``node.virtualgl: always``, so the wrapper starts the
desktop under ``vglrun -d DEVICE`` exactly as it does on a GPU node, on Mesa's software
renderer instead of a GPU: ``egl`` (VirtualGL's EGL back end on Mesa's software EGL
device: the path GPU nodes take with ``node.vgl_device: egl``), and the GLX back end on a
"3D X server" (``node.virtualgl_display``: the test bed's Xvfb with GLX, whose cookie
``node.virtualgl_xauthority`` the wrapper adds to the session's Xauthority).

Inside each desktop (the environment of the session's own desktop process, as a terminal
in it would have): ``vglrun glxinfo -B`` renders through VirtualGL on llvmpipe (VirtualGL's
verbose log names the EGL device or the 3D X server; the full ``glxinfo`` names VirtualGL
as the server GLX vendor — ``-B`` does not print that string); ``glxspheres64`` runs and
its frames reach the VNC framebuffer, read over RFB through the proxy (the picture is not
uniform and changes between frames while it runs, and stops changing once it ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.conftest import cleanup_jobs, start_daemon, stop_daemon, wait_for_state
from tests.e2e.test_session_lifecycle import create, open_desktop, session_processes
from tests.helpers.rfb_client import WsStream, full_framebuffer, handshake
from tests.helpers.vglbed import require_vgl_bed

pytestmark = pytest.mark.e2e

CASES = [
    ("tigervnc", "egl"),
    ("turbovnc", "egl"),
    ("tigervnc", "glx"),
    ("turbovnc", "glx"),
]
WIDTH, HEIGHT = 1024, 768


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}-{b}" for f, b in CASES])
def vgl_daemon(request: pytest.FixtureRequest, testbed: Any) -> Iterator[Any]:
    flavor, backend = request.param
    bed = require_vgl_bed()
    node: dict[str, Any] = {
        "vnc_flavor": flavor,
        "turbovnc_vncserver": bed["TURBOVNC_PREFIX"] + "/bin/vncserver",
        "vglrun": bed["VIRTUALGL_PREFIX"] + "/bin/vglrun",
        "virtualgl": "always",
        "vgl_device": "egl",
    }
    if backend == "glx":
        node["virtualgl_display"] = bed["VGL_DISPLAY"]
        node["virtualgl_xauthority"] = bed["VGL_XAUTHORITY"]
    d = start_daemon(testbed, f"vgl-{flavor}-{backend}", {"node": node})
    d.flavor, d.backend, d.bed = flavor, backend, bed  # type: ignore[attr-defined]
    d.device = bed["VGL_DISPLAY"] if backend == "glx" else "egl"  # type: ignore[attr-defined]
    yield d
    stop_daemon(d)
    cleanup_jobs(d.prefix)


def desktop_environ(sid: str) -> tuple[psutil.Process, dict[str, str]]:
    """The session's desktop process started under vglrun, and its environment."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for proc in session_processes(sid):
            try:
                env = proc.environ()
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if "libvglfaker" in env.get("LD_PRELOAD", "") and "xfce4-session" in cmd:
                return proc, env
        time.sleep(0.3)
    seen = [(p.pid, p.cmdline()[:3]) for p in session_processes(sid)]
    raise AssertionError(f"no desktop process runs under vglrun: {seen}")


def run_in_desktop(
    env: dict[str, str], argv: list[str], timeout: float = 60, drop_vgl: bool = False
) -> subprocess.CompletedProcess[str]:
    env = dict(env)
    if drop_vgl:  # the same desktop, without VirtualGL (for the fps comparison)
        for key in ("LD_PRELOAD", "VGL_DISPLAY", "VGL_ISACTIVE"):
            env.pop(key, None)
    words = [f"{k}={v}" for k, v in env.items() if "\n" not in v]
    return subprocess.run(
        ["runuser", "-u", "alice", "--", "env", "-i", *words, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def popen_in_desktop(env: dict[str, str], argv: list[str]) -> subprocess.Popen[str]:
    words = [f"{k}={v}" for k, v in env.items() if "\n" not in v]
    return subprocess.Popen(
        ["runuser", "-u", "alice", "--", "env", "-i", *words, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def fps(output: str) -> float:
    values = [float(m) for m in re.findall(r"([0-9.]+) frames/sec", output)]
    assert values, f"glxspheres64 reported no frame rate: {output[-1500:]}"
    return sum(values[1:] or values) / len(values[1:] or values)


def changed(a: bytes, b: bytes, bpp: int = 4) -> int:
    """Pixels that differ between two frames of the same size."""
    n = 0
    for i in range(0, min(len(a), len(b)), bpp):
        if a[i : i + 3] != b[i : i + 3]:
            n += 1
    return n


async def test_opengl_through_virtualgl_reaches_the_framebuffer(http, vgl_daemon) -> None:
    daemon = vgl_daemon
    bed, device = daemon.bed, daemon.device
    vglrun = bed["VIRTUALGL_PREFIX"] + "/bin/vglrun"
    spheres = bed["VIRTUALGL_PREFIX"] + "/bin/glxspheres64"
    sid = (await create(http, daemon, geometry=f"{WIDTH}x{HEIGHT}"))["id"]
    try:
        ready = await wait_for_state(http, daemon, sid, {"READY", "FAILED", "ENDED"}, timeout=30)
        assert ready["state"] == "READY", ready

        # The wrapper started the desktop under `vglrun -d DEVICE`: VGL_DISPLAY is set for
        # the whole session, never VirtualGL's default :0.
        _proc, env = await asyncio.to_thread(desktop_environ, sid)
        assert env.get("VGL_DISPLAY") == device, env.get("VGL_DISPLAY")
        assert env["DISPLAY"].startswith(":")

        # `vglrun glxinfo -B` as typed in a terminal of the desktop.
        info = await asyncio.to_thread(
            run_in_desktop, {**env, "VGL_VERBOSE": "1"}, [vglrun, "glxinfo", "-B"]
        )
        text = info.stdout + info.stderr
        assert info.returncode == 0, text
        assert "OpenGL renderer string: llvmpipe" in text, text
        opened = (
            "[VGL] Opening EGL device egl"
            if device == "egl"
            else f"[VGL] Opening connection to 3D X server {device}"
        )
        assert opened in text, text
        full = await asyncio.to_thread(run_in_desktop, env, [vglrun, "glxinfo"])
        assert "server glx vendor string: VirtualGL" in full.stdout, full.stdout[:2000]
        without = await asyncio.to_thread(run_in_desktop, env, ["glxinfo"], drop_vgl=True)
        assert "server glx vendor string: VirtualGL" not in without.stdout

        # glxspheres64's frames in the VNC framebuffer, through the proxy.
        ws = await open_desktop(http, daemon, sid)
        stream = WsStream(ws)
        init = await handshake(stream)
        assert (init.width, init.height) == (WIDTH, HEIGHT)
        await full_framebuffer(stream, init)
        app = popen_in_desktop(env, [vglrun, spheres, "-w", "640x480", "-f", "100000"])
        try:
            await asyncio.sleep(3)
            assert app.poll() is None, "glxspheres64 ended early"
            _, a = await full_framebuffer(stream, init, set_encodings=False)
            await asyncio.sleep(1)
            _, b = await full_framebuffer(stream, init, set_encodings=False)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(app.pid, signal.SIGTERM)
            await asyncio.to_thread(app.wait, 10)
        moving = changed(a, b)
        colours = len({a[i : i + 3] for i in range(0, len(a), 4)})
        assert colours > 50, f"only {colours} colours on the desktop with glxspheres"
        assert moving > 20_000, f"only {moving} pixels changed between two frames"
        # With glxspheres gone, the desktop is still: the motion was glxspheres'.
        await asyncio.sleep(2)
        _, c = await full_framebuffer(stream, init, set_encodings=False)
        await asyncio.sleep(1)
        _, d = await full_framebuffer(stream, init, set_encodings=False)
        still = changed(c, d)
        assert still < moving // 10, f"{still} pixels changed after glxspheres ended"
        await ws.close()

        # Frame rates with and without VirtualGL (printed, never asserted on).
        bench = [spheres, "-w", "640x480", "-f", "60", "-bt", "1"]
        with_vgl = await asyncio.to_thread(run_in_desktop, env, [vglrun, *bench])
        assert with_vgl.returncode == 0, with_vgl.stdout + with_vgl.stderr
        plain = await asyncio.to_thread(run_in_desktop, env, bench, 120, True)
        plain_fps = f"{fps(plain.stdout):.1f}" if plain.returncode == 0 else "failed"
        print(
            f"\n{daemon.flavor}/{daemon.backend}: glxspheres64 640x480 "
            f"{fps(with_vgl.stdout):.1f} fps with vglrun, {plain_fps} fps without; "
            f"{moving} pixels changed between frames 1 s apart"
        )
    finally:
        async with http.delete(
            f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers("alice")
        ):
            pass
        await wait_for_state(http, daemon, sid, {"ENDED", "FAILED"}, timeout=15)
