"""VNC server adapters: argv of TigerVNC Xvnc and TurboVNC vncserver, and the choice."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vizdesk.config import NodeConfig
from vizdesk.node.vnc_server import (
    ServerSpec,
    TigerVNCServer,
    TurboVNCServer,
    choose_server,
    desktop_argv,
    is_clash,
)


def spec(tmp_path: Path, display: int | None = None, desktop: tuple[str, ...] = ()) -> ServerSpec:
    return ServerSpec(
        port=5911,
        display=display,
        width=1280,
        height=800,
        depth=24,
        password_file=str(tmp_path / "passwd"),
        xauthority=str(tmp_path / "Xauthority"),
        private_dir=str(tmp_path),
        desktop=desktop,
    )


def opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_tigervnc_argv_with_displayfd(tmp_path: Path) -> None:
    argv = TigerVNCServer("/usr/bin/Xvnc").server_argv(spec(tmp_path), displayfd=7)
    assert argv[0] == "/usr/bin/Xvnc"
    assert opt(argv, "-displayfd") == "7"
    assert not [a for a in argv if a.startswith(":")]
    assert opt(argv, "-rfbport") == "5911"
    assert opt(argv, "-SecurityTypes") == "VncAuth"  # no None, no TLS the proxy can't speak
    assert opt(argv, "-PasswordFile") == str(tmp_path / "passwd")
    assert opt(argv, "-auth") == str(tmp_path / "Xauthority")
    assert opt(argv, "-geometry") == "1280x800"
    assert opt(argv, "-depth") == "24"
    assert opt(argv, "-desktop") == "vizdesk"
    assert opt(argv, "-nolisten") == "tcp"
    assert "-localhost=0" in argv and "-AlwaysShared" in argv
    assert "-UseBlacklist=0" in argv  # the proxy must not be locked out by others' attempts


def test_tigervnc_argv_with_display(tmp_path: Path) -> None:
    argv = TigerVNCServer().server_argv(spec(tmp_path, display=12))
    assert argv[1] == ":12" and "-displayfd" not in argv


def test_tigervnc_needs_display_or_fd(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        TigerVNCServer().server_argv(spec(tmp_path))


def test_turbovnc_argv_and_xstartup(tmp_path: Path) -> None:
    server = TurboVNCServer("/opt/TurboVNC/bin/vncserver")
    s = spec(tmp_path, display=7, desktop=("vglrun", "-d", "egl", "startxfce4", "--x y'z"))
    server.prepare(s)
    argv = server.server_argv(s)
    assert argv[:3] == ["/opt/TurboVNC/bin/vncserver", ":7", "-fg"]
    assert opt(argv, "-rfbport") == "5911"
    assert opt(argv, "-securitytypes") == "vnc"
    assert opt(argv, "-rfbauth") == str(tmp_path / "passwd")
    assert opt(argv, "-geometry") == "1280x800"
    assert opt(argv, "-depth") == "24"
    assert opt(argv, "-name") == "vizdesk"
    xstartup = Path(opt(argv, "-xstartup"))
    assert xstartup.parent == tmp_path
    assert opt(argv, "-log").startswith(str(tmp_path))
    assert server.runs_desktop and not server.supports_displayfd
    # The xstartup script is executable and runs exactly the desktop argv (quoted).
    assert os.stat(xstartup).st_mode & 0o777 == 0o700
    text = xstartup.read_text()
    assert text.startswith("#!/bin/sh\nexec ")
    out = subprocess.run(
        ["sh", "-c", text.replace("exec ", "exec printf '%s\\n' ", 1)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == ["vglrun", "-d", "egl", "startxfce4", "--x y'z"]


def test_turbovnc_needs_display(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        TurboVNCServer().server_argv(spec(tmp_path))


def test_choose_server(tmp_path: Path) -> None:
    fake = tmp_path / "vncserver"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    auto = NodeConfig(vnc_flavor="auto", turbovnc_vncserver=str(fake), xvnc="/usr/bin/Xvnc")
    assert isinstance(choose_server(auto), TurboVNCServer)
    missing = NodeConfig(vnc_flavor="auto", turbovnc_vncserver=str(tmp_path / "nope"))
    chosen = choose_server(missing)
    assert isinstance(chosen, TigerVNCServer) and chosen.flavor == "tigervnc"
    forced = NodeConfig(vnc_flavor="tigervnc", turbovnc_vncserver=str(fake))
    assert isinstance(choose_server(forced), TigerVNCServer)
    assert isinstance(choose_server(missing, turbovnc_present=True), TurboVNCServer)
    assert choose_server(NodeConfig(vnc_flavor="turbovnc")).flavor == "turbovnc"


def test_desktop_under_virtualgl_only_with_a_device_and_vglrun() -> None:
    cmd = ["startxfce4"]
    assert desktop_argv(cmd, vglrun="/usr/bin/vglrun", device="egl") == [
        "/usr/bin/vglrun",
        "-d",
        "egl",
        "startxfce4",
    ]
    assert desktop_argv(cmd, vglrun=None, device="egl") == cmd
    assert desktop_argv(cmd, vglrun="/usr/bin/vglrun", device=None) == cmd


def test_clash_detection() -> None:
    assert is_clash(["(EE) vncExtInit: failed to bind socket: Address already in use (98)"])
    assert is_clash(["_XSERVTransMakeAllCOTSServerListeners: server already running"])
    assert is_clash(["A VNC server is already running as :7"])
    assert not is_clash(["(EE) Fatal server error:", "no screens found"])
