"""The desktop image (containers/vnc.def, VNC=tigervnc) under real Apptainer, as alice."""

from __future__ import annotations

import asyncio
import statistics
import time

from tests.container.sid import (
    COMPUTE_SIF,
    OUTPUT,
    VNC_SIF,
    Sid,
    free_port,
    record_timing,
    wait_for_banner,
)
from tests.helpers.rfb_client import TcpStream, full_framebuffer, handshake


def test_images_pass_their_own_test_section(sid: Sid) -> None:
    res = sid.run("apptainer", "test", *sid.unsquash(), VNC_SIF, user="alice")
    assert "vnc image test passed (tigervnc)" in res.stdout + res.stderr
    sid.run("apptainer", "test", *sid.unsquash(), COMPUTE_SIF, user="alice")


def test_images_carry_the_catalog_labels(sid: Sid) -> None:
    out = sid.run("apptainer", "inspect", "--labels", VNC_SIF, user="alice").stdout
    assert "org.vizdesk.kind: viz" in out
    assert "org.vizdesk.vnc: tigervnc" in out
    help_text = sid.run("apptainer", "run-help", VNC_SIF, user="alice").stdout
    assert "XFCE" in help_text


def start_xvnc(sid: Sid, port: int, *, container: bool, tag: str) -> float:
    """Start Xvnc (inside the image or the root's own) and return seconds to the RFB banner."""
    display = f":{port - 6000}"
    xvnc = ["Xvnc", display, "-rfbport", str(port), "-SecurityTypes", "None"]
    xvnc += ["-geometry", "800x600", "-depth", "24", "-desktop", tag]
    flags = sid.unsquash()
    cmd = ["apptainer", "exec", "--cleanenv", *flags, VNC_SIF, *xvnc] if container else xvnc
    t0 = time.monotonic()
    sid.popen(*cmd, user="alice", log=OUTPUT / f"container-{tag}.log")
    banner = wait_for_banner(port)
    assert banner == b"RFB 003.008\n", banner
    return time.monotonic() - t0


def stop_xvnc(sid: Sid, port: int) -> None:
    sid.kill_matching(f"Xvnc :{port - 6000} ")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not [p for p in sid.processes("alice") if f"-rfbport {port}" in p[2]]:
            return
        time.sleep(0.1)
    raise AssertionError(f"Xvnc on {port} still running")


async def test_xvnc_from_the_image_serves_a_full_framebuffer(sid: Sid) -> None:
    port = free_port(6150, 6199)
    try:
        start_xvnc(sid, port, container=True, tag="vzc-fb")
        # it runs as alice, inside the container (Apptainer's runtime is its parent)
        procs = sid.processes("alice")
        assert any(f"-rfbport {port}" in cmd for _, _, cmd in procs), procs
        assert any("Apptainer runtime parent: vnc.sif" in cmd for _, _, cmd in procs), procs
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        stream = TcpStream(reader, writer)
        init = await handshake(stream)
        assert (init.width, init.height) == (800, 600)
        assert init.name.startswith("vzc-fb")
        covered, _ = await full_framebuffer(stream, init)
        assert covered == 800 * 600
        writer.close()
    finally:
        stop_xvnc(sid, port)
    # killing Xvnc ends the container: no runtime, no squashfuse left behind (with
    # --unsquash the runtime first removes its extracted sandbox: a moment)
    deadline = time.monotonic() + 15
    while [p for p in sid.processes("alice") if "vnc.sif" in p[2]]:
        assert time.monotonic() < deadline, sid.processes("alice")
        await asyncio.sleep(0.2)


def test_start_time_container_vs_bare(sid: Sid) -> None:
    """Seconds from exec to the RFB banner: `apptainer exec vnc.sif Xvnc` vs sid's Xvnc."""
    runs: dict[str, list[float]] = {"container": [], "bare": []}
    for _ in range(3):
        for kind in ("container", "bare"):
            port = free_port(6150, 6199)
            try:
                runs[kind].append(start_xvnc(sid, port, container=kind == "container", tag=kind))
            finally:
                stop_xvnc(sid, port)
    for kind, values in runs.items():
        record_timing(
            f"Xvnc to RFB banner, {kind} (median of 3, max {max(values):.2f}s)",
            statistics.median(values),
        )
    assert all(runs.values())


async def test_xfce_desktop_runs_inside_the_image(sid: Sid) -> None:
    """The session command of the image draws a desktop on the container's Xvnc."""
    port = free_port(6150, 6199)
    display = f":{port - 6000}"
    try:
        start_xvnc(sid, port, container=True, tag="vzc-xfce")
        sid.popen(
            "apptainer", "exec", "--cleanenv", *sid.unsquash(), "--env", f"DISPLAY={display}",
            VNC_SIF, "dbus-launch", "--exit-with-session", "startxfce4",
            user="alice", log=OUTPUT / "container-xfce.log",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        names: set[str] = set()
        while time.monotonic() < deadline:
            names = {cmd.split()[0].rsplit("/", 1)[-1] for _, _, cmd in sid.processes("alice")}
            if {"xfce4-session", "xfwm4"} <= names:
                break
            time.sleep(0.5)
        assert {"xfce4-session", "xfwm4"} <= names, names
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        stream = TcpStream(reader, writer)
        init = await handshake(stream)
        _, pixels = await full_framebuffer(stream, init)
        deadline = time.monotonic() + 30
        while len(set(pixels)) <= 1 and time.monotonic() < deadline:
            await asyncio.sleep(1)
            _, pixels = await full_framebuffer(stream, init, set_encodings=False)
        assert len(set(pixels)) > 1, "XFCE never drew anything"
        writer.close()
    finally:
        sid.kill_matching("startxfce4|xfce4-|xfwm4|xfdesktop|Thunar|dbus-")
        stop_xvnc(sid, port)
