"""VNC server adapters: TigerVNC ``Xvnc`` and TurboVNC ``vncserver -fg`` behind one interface.

An adapter only builds argv lists and knows its server's conventions; starting, waiting
and clean-up are the wrapper's job. ``choose_server`` applies ``node.vnc_flavor``
(``auto`` = TurboVNC when ``node.turbovnc_vncserver`` exists, else TigerVNC).

TigerVNC (tested here with 1.12): ``Xvnc -displayfd FD`` lets the X server choose a free
display and report it when it is ready; the desktop session is a separate process.
TurboVNC (written against its ``vncserver`` script; not installable on the test bed):
``vncserver :N -fg`` starts Xvnc in the background and runs the ``-xstartup`` script in
the foreground, killing Xvnc when that script ends; the desktop runs inside it.
"""

from __future__ import annotations

import os
import shlex
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from vizdesk.config import NodeConfig

DESKTOP_NAME = "vizdesk"

# Output of a server that lost a race for its port or display: retry with another one.
CLASH_MARKERS = (
    "address already in use",
    "server already running",
    "server is already active",
    "already running as :",
    "is taken because",
)


@dataclass(frozen=True)
class ServerSpec:
    """What one VNC server start needs (all values chosen by the wrapper)."""

    port: int
    display: int | None  # None: let the server pick it (-displayfd)
    width: int
    height: int
    depth: int
    password_file: str
    xauthority: str
    private_dir: str
    desktop: Sequence[str]  # final desktop argv (already wrapped in vglrun if wanted)
    listen: str | None = None  # address to listen on (None: every interface)

    @property
    def geometry(self) -> str:
        return f"{self.width}x{self.height}"


class VncServer(ABC):
    """One VNC server implementation."""

    flavor: str = ""
    #: the server can report its display through -displayfd (only used outside containers)
    supports_displayfd: bool = False
    #: the server process runs the desktop session itself (no separate desktop process)
    runs_desktop: bool = False

    @abstractmethod
    def server_argv(self, spec: ServerSpec, displayfd: int | None = None) -> list[str]:
        """argv of the VNC server process."""

    def prepare(self, spec: ServerSpec) -> None:  # noqa: B027 - optional hook
        """Write any helper file the server needs (called before ``server_argv``)."""

    def find_vnc_pid(self, root_pid: int, display: int, extra: Iterable[int] = ()) -> int | None:
        """The pid of the X VNC server process for ``display`` (or None)."""
        candidates: list[psutil.Process] = []
        try:
            root = psutil.Process(root_pid)
            candidates = [root, *root.children(recursive=True)]
        except psutil.Error:
            pass
        for pid in extra:
            try:
                candidates.append(psutil.Process(pid))
            except psutil.Error:
                continue
        for proc in candidates:
            try:
                cmd = proc.cmdline()
                name = proc.name()
            except psutil.Error:
                continue
            base = os.path.basename(cmd[0]) if cmd else name
            if (base in {"Xvnc", "Xtigervnc"} or name in {"Xvnc", "Xtigervnc"}) and (
                f":{display}" in cmd or "-displayfd" in cmd
            ):
                return proc.pid
        return None


def is_clash(output: Iterable[str]) -> bool:
    """True if the server's output says its port or display was taken."""
    text = "\n".join(output).lower()
    return any(marker in text for marker in CLASH_MARKERS)


class TigerVNCServer(VncServer):
    flavor = "tigervnc"
    supports_displayfd = True
    runs_desktop = False

    def __init__(self, xvnc: str = "Xvnc") -> None:
        self.xvnc = xvnc

    def server_argv(self, spec: ServerSpec, displayfd: int | None = None) -> list[str]:
        if spec.display is None and displayfd is None:
            raise ValueError("TigerVNC needs a display number or a -displayfd descriptor")
        where = [f":{spec.display}"] if spec.display is not None else ["-displayfd", str(displayfd)]
        return [
            self.xvnc,
            *where,
            "-rfbport",
            str(spec.port),
            "-SecurityTypes",
            "VncAuth",
            "-PasswordFile",
            spec.password_file,
            "-auth",
            spec.xauthority,
            "-geometry",
            spec.geometry,
            "-depth",
            str(spec.depth),
            "-localhost=0",  # the head node's proxy connects over the network
            *(["-interface", spec.listen] if spec.listen else []),  # node.vnc_listen
            "-AlwaysShared",  # a second browser tab must not kick the first one out
            "-nolisten",
            "tcp",  # no X11 over TCP
            "-noreset",  # the desktop process, not the X client count, ends the session
            # All connections come from the head node's proxy: with the blacklist, anyone
            # on the head node could lock the proxy out with 5 wrong passwords. The 8
            # random characters (~47 bits) need no attempt limit against guessing.
            "-UseBlacklist=0",
            "-desktop",
            DESKTOP_NAME,
        ]


class TurboVNCServer(VncServer):
    flavor = "turbovnc"
    supports_displayfd = False
    runs_desktop = True

    def __init__(self, vncserver: str = "/opt/TurboVNC/bin/vncserver") -> None:
        self.vncserver = vncserver

    @staticmethod
    def xstartup_path(spec: ServerSpec) -> str:
        return str(Path(spec.private_dir) / "xstartup.sh")

    @staticmethod
    def log_path(spec: ServerSpec) -> str:
        return str(Path(spec.private_dir) / "turbovnc.log")

    @staticmethod
    def xstartup_script(desktop: Sequence[str]) -> str:
        """A shell script running the desktop (every word shell-quoted)."""
        return "#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in desktop) + "\n"

    def prepare(self, spec: ServerSpec) -> None:
        path = self.xstartup_path(spec)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o700)
        try:
            os.fchmod(fd, 0o700)
            os.write(fd, self.xstartup_script(spec.desktop).encode())
        finally:
            os.close(fd)

    def server_argv(self, spec: ServerSpec, displayfd: int | None = None) -> list[str]:
        if spec.display is None:
            raise ValueError("TurboVNC needs an explicit display number")
        return [
            self.vncserver,
            f":{spec.display}",  # first non-option argument: the display
            "-fg",
            "-rfbport",
            str(spec.port),
            "-securitytypes",
            "vnc",
            "-rfbauth",
            spec.password_file,
            "-geometry",
            spec.geometry,
            "-depth",
            str(spec.depth),
            "-name",
            DESKTOP_NAME,
            "-xstartup",
            self.xstartup_path(spec),
            "-log",
            self.log_path(spec),
            # the rest is passed on to TurboVNC's Xvnc
            "-alwaysshared",
            "-nolisten",
            "tcp",
            *(["-interface", spec.listen] if spec.listen else []),  # node.vnc_listen
        ]


def turbovnc_available(node: NodeConfig) -> bool:
    return os.path.isfile(node.turbovnc_vncserver) and os.access(node.turbovnc_vncserver, os.X_OK)


def make_server(flavor: str, node: NodeConfig) -> VncServer:
    if flavor == "turbovnc":
        return TurboVNCServer(node.turbovnc_vncserver)
    if flavor == "tigervnc":
        return TigerVNCServer(node.xvnc)
    raise ValueError(f"unknown VNC flavour {flavor!r}")


def choose_server(node: NodeConfig, turbovnc_present: bool | None = None) -> VncServer:
    """The adapter for ``node.vnc_flavor`` (``auto``: TurboVNC if its vncserver exists)."""
    flavor = node.vnc_flavor
    if flavor == "auto":
        present = turbovnc_available(node) if turbovnc_present is None else turbovnc_present
        flavor = "turbovnc" if present else "tigervnc"
    return make_server(flavor, node)


def desktop_argv(
    command: Sequence[str],
    *,
    vglrun: str | None,
    device: str | None,
) -> list[str]:
    """The desktop command, under ``vglrun -d DEVICE`` when a device and vglrun are given.

    ``device`` comes from :func:`vizdesk.node.virtualgl.vgl_device` (None: no VirtualGL).
    """
    if device is not None and vglrun:
        return [vglrun, "-d", device, *command]
    return list(command)
