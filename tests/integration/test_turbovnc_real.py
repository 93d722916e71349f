"""The TurboVNC adapter against the real TurboVNC 3.3 (built by ``testbed/vgl.sh``).

Every option :class:`TurboVNCServer` passes is one that TurboVNC's ``vncserver -help`` or
``Xvnc -help`` lists, with a value exactly where the help names one. Then the adapter's
argv is run for real: ``vncserver :N -fg`` answers ``RFB 003.008`` on the port, offers
only VNC authentication (type 2), accepts the one-time password and refuses a wrong one,
has the geometry and the desktop name asked for, runs the xstartup script on the display
with the session's Xauthority, and ends (Xvnc with it) when that script ends — which is
what the wrapper relies on to notice a logout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.rfb_client import RfbAuthFailed, TcpStream, handshake
from tests.helpers.vglbed import require_vgl_bed
from vizdesk.node.display import pick_free_display
from vizdesk.node.password import generate_password, write_vncpasswd, write_xauthority
from vizdesk.node.ports import pick_free_port
from vizdesk.node.vnc_server import ServerSpec, TurboVNCServer


@pytest.fixture(scope="module")
def prefix() -> Path:
    return Path(require_vgl_bed()["TURBOVNC_PREFIX"])


def help_options(text: str, pattern: str) -> dict[str, bool]:
    """Option name → whether the help shows it taking a value."""
    out: dict[str, bool] = {}
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            out[m.group(1)] = out.get(m.group(1), False) or bool(m.group(2))
    return out


def spec(tmp: Path, display: int, port: int, desktop: tuple[str, ...]) -> ServerSpec:
    return ServerSpec(
        port=port,
        display=display,
        width=1111,
        height=777,
        depth=24,
        password_file=str(tmp / "passwd"),
        xauthority=str(tmp / "Xauthority"),
        private_dir=str(tmp),
        desktop=desktop,
    )


def test_every_adapter_option_is_in_turbovncs_help(prefix: Path, tmp_path: Path) -> None:
    vncserver, xvnc = prefix / "bin" / "vncserver", prefix / "bin" / "Xvnc"
    v_run = subprocess.run([vncserver, "-help"], capture_output=True, text=True)
    v_help = v_run.stdout + v_run.stderr
    x_help = subprocess.run([xvnc, "-help"], capture_output=True, text=True)
    x_text = x_help.stdout + x_help.stderr
    # vncserver: "        -depth <DEPTH>"; Xvnc: "-rfbport port          TCP port ..."
    ours = help_options(v_help, r"^\s+(-[\w-]+)(?: (<\S+))?(?: or)?\s*$")
    theirs = help_options(x_text, r"^(-[\w-]+)(?: (\S+))?(?:\s{2,}|$)")
    assert {"-fg", "-xstartup", "-log", "-name", "-geometry", "-depth"} <= set(ours), v_help
    assert {"-rfbport", "-securitytypes", "-rfbauth", "-alwaysshared"} <= set(theirs), x_text
    argv = TurboVNCServer(str(vncserver)).server_argv(spec(tmp_path, 7, 5907, ("true",)))
    assert argv[0] == str(vncserver) and argv[1] == ":7"
    i = 2
    while i < len(argv):
        opt = argv[i]
        assert opt.startswith("-"), f"stray argument {opt!r} in {argv}"
        assert opt in ours or opt in theirs, f"{opt} is in neither vncserver's nor Xvnc's help"
        takes_value = ours.get(opt, False) or theirs.get(opt, False)
        if takes_value:
            assert i + 1 < len(argv) and not argv[i + 1].startswith("-"), (opt, argv)
            i += 2
        else:
            i += 1
    # -securitytypes names a type TurboVNC knows (it logs what it enabled, see below).
    assert argv[argv.index("-securitytypes") + 1] == "vnc"


async def test_the_adapter_argv_runs_turbovnc_for_real(prefix: Path, tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    password = generate_password()
    write_vncpasswd(tmp_path / "passwd", password)
    write_xauthority(tmp_path / "Xauthority", os.urandom(16))
    marker = tmp_path / "xstartup-ran"
    release = tmp_path / "logout"
    desktop = (
        "sh",
        "-c",
        f'echo "$DISPLAY $XAUTHORITY" >{marker}; while [ ! -e {release} ]; do sleep 0.1; done',
    )
    display = pick_free_display()
    port = pick_free_port(15900, 15999)
    server = TurboVNCServer(str(prefix / "bin" / "vncserver"))
    s = spec(tmp_path, display, port, desktop)
    server.prepare(s)
    env = {**os.environ, "XAUTHORITY": s.xauthority, "HOME": str(tmp_path)}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        server.server_argv(s), env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                assert time.monotonic() < deadline, "no listener within 30 s"
                await asyncio.sleep(0.1)
        print(f"\nTurboVNC: vncserver -fg to a listening port in {time.monotonic() - t0:.2f}s")
        init = await handshake(TcpStream(reader, writer), password=password)
        writer.close()
        # VNC authentication, and TurboVNC's Tight security type (16), which only wraps the
        # same enabled list (here: VNC authentication); nothing without a password.
        assert 2 in init.security_types and set(init.security_types) <= {2, 16}
        assert (init.width, init.height) == (1111, 777) and init.bpp == 32
        assert init.name == "vizdesk"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(RfbAuthFailed):
            await handshake(TcpStream(reader, writer), password="wrong123")
        writer.close()
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert marker.read_text().split() == [f":{display}", s.xauthority]
        log = Path(TurboVNCServer.log_path(s)).read_text()
        assert "Enabled security type 'vnc'" in log, log
        # The xstartup script ends (a logout): vncserver -fg returns, Xvnc goes away.
        release.touch()
        proc.wait(timeout=20)
        deadline = time.monotonic() + 10
        while Path(f"/tmp/.X11-unix/X{display}").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not Path(f"/tmp/.X11-unix/X{display}").exists()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
