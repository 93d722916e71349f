"""Notices for the desktop itself: the key, the words, and the node's notifier (which
runs a real command: here a small recorder script instead of notify-send)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vizdesk.contract.keys import Keys, notice_key
from vizdesk.node.notice import DesktopNotifier, notice_text
from vizdesk.sessions import notices

SID = "0123456789abcdef"


def test_notice_key_goes_with_the_registration_key() -> None:
    keys = Keys("vzt-x:")
    assert keys.notice(SID) == "vzt-x:notice:" + SID
    assert notice_key(keys.registration(SID)) == keys.notice(SID)
    with pytest.raises(ValueError):
        notice_key("vzt-x:session:" + SID)


def test_notice_words() -> None:
    idle = notices.notice_text("idle_warning", {"idle_seconds": 900, "ends_in_seconds": 300})
    assert idle.startswith("No keyboard or mouse input for 15 minutes.")
    assert "stopped in 5 minutes" in idle
    assert "stopped" not in notices.notice_text(
        "idle_warning", {"idle_seconds": 20, "ends_in_seconds": None}
    )
    wall = notices.notice_text("walltime_warning", {"remaining_seconds": 110})
    assert wall == "This desktop reaches its time limit in 2 minutes. Save your work."
    assert "less than a minute" in notices.notice_text(
        "walltime_warning", {"remaining_seconds": 20}
    )
    with pytest.raises(ValueError):
        notices.notice_text("viewer", {})


def test_node_reads_only_usable_text() -> None:
    assert notice_text(json.dumps({"text": "hello\x1b[31m there"})) == "hello[31m there"
    assert notice_text(json.dumps({"text": "x" * 2000})) == "x" * 500
    for raw in (None, "", "not json", "[]", json.dumps({"text": "  "}), json.dumps({"t": 1})):
        assert notice_text(raw) is None


def _recorder(tmp_path: Path) -> tuple[list[str], Path]:
    log = tmp_path / "calls.jsonl"
    code = (
        "import json,os,sys\n"
        f"open({str(log)!r},'a').write(json.dumps([sys.argv[1:], os.environ.get('DISPLAY')])+'\\n')"
    )
    return [sys.executable, "-c", code], log


async def test_notifier_shows_each_new_notice_once(tmp_path: Path) -> None:
    command, log = _recorder(tmp_path)
    store: dict[str, str] = {}

    async def read(key: str) -> str | None:
        return store.get(key)

    n = DesktopNotifier(command, SID, "k", {"DISPLAY": ":7", "PATH": "/usr/bin:/bin"},
                        lambda argv, env: (argv, env))  # fmt: skip
    assert await n.poll(read) is False  # nothing yet
    store["k"] = json.dumps({"at": "1", "text": "first"})
    assert await n.poll(read) is True
    assert await n.poll(read) is False  # same value: not shown again
    store["k"] = json.dumps({"at": "2", "text": "first"})  # a new warning, same words
    assert await n.poll(read) is True
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [[["vizdesk", "first"], ":7"], [["vizdesk", "first"], ":7"]]
    assert n.shown == 2


async def test_notifier_without_notify_send_gives_up_quietly(tmp_path: Path) -> None:
    store = {"k": json.dumps({"at": "1", "text": "hi"})}

    async def read(key: str) -> str | None:
        return store.get(key)

    missing = DesktopNotifier([str(tmp_path / "no-notify-send")], SID, "k", {},
                              lambda argv, env: (argv, env))  # fmt: skip
    assert await missing.poll(read) is False
    assert missing.unavailable
    store["k"] = json.dumps({"at": "2", "text": "again"})
    assert await missing.poll(read) is False  # not retried for every heartbeat
    # a command that answers 127 (apptainer exec of a command missing in the image)
    in_image = DesktopNotifier(["/bin/sh", "-c", "exit 127"], SID, "k", {},
                               lambda argv, env: (argv, env))  # fmt: skip
    assert await in_image.poll(read) is False and in_image.unavailable
