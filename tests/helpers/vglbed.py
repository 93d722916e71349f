"""TurboVNC 3.3 and VirtualGL 3.1.4 for the tests: built by ``testbed/vgl.sh``.

``require_vgl_bed()`` runs ``testbed/vgl.sh up``: seconds when the builds are cached by
checksum; otherwise it waits for the background build ``make test`` starts early
(``vgl.sh build-bg``) or builds itself. It skips the calling test only when vgl.sh says
the sources can be obtained neither from the vendor directory nor by download (exit 3);
any other failure fails the test. The returned mapping is ``$VIZDESK_VGL_DIR/env``:
``TURBOVNC_PREFIX``, ``VIRTUALGL_PREFIX``, ``VGL_DISPLAY`` (the 3D X server, an Xvfb
with GLX on llvmpipe) and ``VGL_XAUTHORITY`` (its cookie file).
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VGL_DIR = Path(os.environ.get("VIZDESK_VGL_DIR", "/var/lib/vizdesk-vgl"))
UNBUILDABLE = 3


@functools.cache
def _bring_up() -> tuple[int, str]:
    proc = subprocess.run(
        [str(REPO / "testbed" / "vgl.sh"), "up"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def require_vgl_bed() -> dict[str, str]:
    rc, out = _bring_up()
    if rc == UNBUILDABLE:
        pytest.skip(f"TurboVNC/VirtualGL cannot be built here (no source, no download): {out}")
    if rc != 0:
        pytest.fail(f"testbed/vgl.sh up failed (exit {rc}): {out[-2000:]}")
    env: dict[str, str] = {}
    for line in (VGL_DIR / "env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = " ".join(shlex.split(value))
    return env
