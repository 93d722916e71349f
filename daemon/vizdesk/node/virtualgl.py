"""Whether and how a desktop runs under VirtualGL (``vglrun -d DEVICE``).

With a GPU (``node.virtualgl: gpu``, the default, or ``always``) the device is
``node.vgl_device``: ``egl`` (VirtualGL's EGL back end, no X server on the GPU) or an X
display. Without a GPU only ``node.virtualgl: always`` uses VirtualGL, on Mesa's
software renderer (llvmpipe): on ``node.virtualgl_display`` (a "3D X server" with GLX,
e.g. a per-node Xvfb: VirtualGL's GLX back end) when set, else on ``node.vgl_device``
(``egl``: Mesa's software EGL device, no X server and no ``/dev/dri`` needed; verified
with VirtualGL 3.1.4 and Mesa 22.3). ``vglrun -d`` exports ``VGL_DISPLAY`` to the whole
session, so a later ``vglrun app`` inside the desktop uses the same device and never
VirtualGL's default ``:0`` (which may be another user's display).

A GLX 3D X server needs its cookie in the session's Xauthority: the entries of
``node.virtualgl_xauthority`` are put in front of the session's own (the file format is a
plain sequence of entries). In front, because libXau uses the first entry that matches,
and the session's entry is a wildcard (any address, any display): behind it, the 3D X
server would be sent the VNC display's cookie (verified: "Invalid MIT-MAGIC-COOKIE-1 key"
with TigerVNC, whose Xvnc leaves the file as it is; TurboVNC's vncserver happens to
rewrite it with its own entries first).
"""

from __future__ import annotations

import os

from vizdesk.config import NodeConfig


def vgl_device(node: NodeConfig, gpu: bool) -> str | None:
    """The ``vglrun -d`` device for a desktop, or None when it runs without VirtualGL."""
    if node.virtualgl == "never":
        return None
    if gpu:
        return node.vgl_device
    if node.virtualgl == "always":
        return node.virtualgl_display or node.vgl_device
    return None


def is_x_display(device: str) -> bool:
    """True for an X display (``:93``, ``host:0.0``), false for ``egl`` or a DRI device."""
    return ":" in device and not device.startswith("/")


def xauthority_to_merge(node: NodeConfig, device: str | None) -> str | None:
    """The cookie file to append to the session's Xauthority for ``device`` (or None)."""
    if device is None or not is_x_display(device) or not node.virtualgl_xauthority:
        return None
    if device != node.virtualgl_display:
        return None
    return node.virtualgl_xauthority


def merge_xauthority(session_xauthority: str, extra: str) -> None:
    """Put the entries of ``extra`` in front of those of the session's Xauthority file.

    Raises OSError when ``extra`` cannot be read (the caller reports it as the reason).
    """
    with open(extra, "rb") as src:
        data = src.read()
    fd = os.open(session_xauthority, os.O_RDWR | os.O_NOFOLLOW)
    try:
        own = b""
        while chunk := os.read(fd, 65536):
            own += chunk
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, data + own)
    finally:
        os.close(fd)
