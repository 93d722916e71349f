"""The daemon's idle warning shows up inside the desktop itself (real Slurm, Xvnc + XFCE,
real notify-send and the desktop's real notification daemon, xfce4-notifyd).

The daemon of this test has ``node.notify_command`` pointing at a recorder script that
writes down what it was asked and then runs the real ``notify-send`` with the desktop's
DISPLAY and D-Bus session; ``notify-send`` exits 0 only when a notification server on
that bus accepted the notification, and xfce4-notifyd is then running in the session.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.conftest import Daemon, start_daemon, stop_daemon, wait_for_state

pytestmark = pytest.mark.e2e

RECORDER = """#!/bin/sh
log={log}
printf 'summary=%s|body=%s|display=%s|bus=%s\\n' "$1" "$2" "$DISPLAY" \\
    "${{DBUS_SESSION_BUS_ADDRESS:-}}" >>"$log"
notify-send --expire-time=5000 "$@" >>"$log" 2>&1
rc=$?
echo "rc=$rc" >>"$log"
exit $rc
"""


@pytest.fixture
def notice_dir() -> Iterator[Path]:
    # the job runs as alice: the recorder and its log must be hers to use
    d = Path(tempfile.mkdtemp(prefix="vizdesk-notice-"))
    d.chmod(0o777)
    script = d / "notify-recorder"
    script.write_text(RECORDER.format(log=d / "notify.log"))
    script.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def notice_daemon(testbed: Any, notice_dir: Path) -> Iterator[Daemon]:
    d = start_daemon(
        testbed,
        "notice",
        {
            "idle": {"partitions": {"*": {"warn_minutes": 0.2, "end_minutes": 5}},
                     "write_interval_seconds": 1.0},
            "node": {"notify_command": [str(notice_dir / "notify-recorder")],
                     "heartbeat_interval_seconds": 1.0},
        },
    )  # fmt: skip
    yield d
    stop_daemon(d)


def notifyd_of(sid: str) -> list[str]:
    """Names of the session's processes that are its notification daemon."""
    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if "notifyd" in (p.info["name"] or "") and (
                p.environ().get("VIZDESK_SESSION_TAG") == sid
            ):
                found.append(p.info["name"])
        except (psutil.Error, OSError):
            continue
    return found


async def test_idle_warning_is_shown_on_the_desktop(
    http: aiohttp.ClientSession, notice_daemon: Daemon, notice_dir: Path
) -> None:
    assert shutil.which("notify-send"), "libnotify-bin missing (testbed/testbed.sh installs it)"
    d = notice_daemon
    async with http.post(
        f"{d.url}/api/v1/sessions", json={"geometry": "800x600"}, headers=d.headers("alice")
    ) as r:
        s = await r.json()
        assert r.status == 201, s
    try:
        ready = await wait_for_state(http, d, s["id"], {"READY", "FAILED"}, timeout=60)
        assert ready["state"] == "READY", ready
        log = notice_dir / "notify.log"
        deadline = time.monotonic() + 45  # warning after 12 s, then the next heartbeat
        while not (log.exists() and "rc=" in log.read_text()):
            assert time.monotonic() < deadline, "no notice reached the desktop"
            await asyncio.sleep(0.5)
        text = log.read_text()
        assert "summary=vizdesk|body=No keyboard or mouse input for" in text, text
        assert "It will be stopped in 5 minutes" in text, text
        assert "display=:" in text and "bus=unix:" in text, text
        assert "rc=0" in text, text  # a notification server on the desktop's bus took it
        assert notifyd_of(s["id"]), "no notification daemon runs in the desktop session"
        # shown once per warning: later heartbeats do not repeat it
        await asyncio.sleep(3)
        assert log.read_text().count("summary=") == 1
    finally:
        async with http.delete(f"{d.url}/api/v1/sessions/{s['id']}", headers=d.headers("alice")):
            pass

