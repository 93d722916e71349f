"""Look into a desktop's X server from the test (as root, with the session's own
DISPLAY and Xauthority): pointer position, pressed keys, clipboard. What the proxy let
through is what the X server saw: no screen scraping needed.

Run as a script (``python xprobe.py KEYSYM``) it prints ``x y pressed`` as JSON, so that
libX11 reads the environment of the desktop and not the test's.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import psutil


def desktop_env(sid: str) -> dict[str, str]:
    """DISPLAY and XAUTHORITY of the desktop whose processes carry session tag ``sid``."""
    for p in psutil.process_iter(["pid"]):
        try:
            env = p.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        tagged = sid in (env.get("VIZDESK_SESSION_ID"), env.get("VIZDESK_SESSION_TAG"))
        if tagged and env.get("DISPLAY") and env.get("XAUTHORITY"):
            return {
                "DISPLAY": env["DISPLAY"],
                "XAUTHORITY": env["XAUTHORITY"],
                "PATH": "/usr/bin:/bin",
            }
    raise AssertionError(f"no X client of session {sid} found")


def probe(env: dict[str, str], keysym: int) -> dict[str, int | bool]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__)), str(keysym)],
        env=env, capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def clipboard(env: dict[str, str]) -> str:
    out = subprocess.run(
        ["xclip", "-selection", "clipboard", "-o"],
        env=env, capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return out.stdout


def _main(keysym: int) -> None:
    x11 = ctypes.cdll.LoadLibrary("libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XKeysymToKeycode.restype = ctypes.c_ubyte
    x11.XQueryKeymap.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    dpy = x11.XOpenDisplay(None)
    if not dpy:
        raise SystemExit("cannot open display")
    root = x11.XDefaultRootWindow(dpy)
    child, root_ret = ctypes.c_ulong(), ctypes.c_ulong()
    rx, ry, wx, wy, mask = (ctypes.c_int() for _ in range(5))
    x11.XQueryPointer.argtypes = [ctypes.c_void_p, ctypes.c_ulong] + [ctypes.c_void_p] * 7
    x11.XQueryPointer(
        dpy, root, ctypes.byref(root_ret), ctypes.byref(child), ctypes.byref(rx),
        ctypes.byref(ry), ctypes.byref(wx), ctypes.byref(wy), ctypes.byref(mask),
    )  # fmt: skip
    keys = ctypes.create_string_buffer(32)
    x11.XQueryKeymap(dpy, keys)
    code = x11.XKeysymToKeycode(dpy, keysym)
    pressed = bool(keys.raw[code // 8] & (1 << (code % 8))) if code else False
    print(json.dumps({"x": rx.value, "y": ry.value, "pressed": pressed, "keycode": code}))


if __name__ == "__main__":
    _main(int(sys.argv[1]))
