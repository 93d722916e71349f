"""Shows the daemon's notices (idle and walltime warnings) inside the desktop.

The daemon writes a notice to the session's notice key
(:func:`vizdesk.contract.keys.notice_key`); the wrapper reads it with the session's ACL
user on every heartbeat and, when the value changed, runs ``node.notify_command``
(default ``notify-send``) with the summary and the text, in the desktop's own X and
D-Bus session (and inside the image when there is one), so the desktop's notification
daemon pops it up. A missing ``notify-send`` is logged once and the notices are dropped:
the portal's banner still tells the user.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import psutil
import structlog

from vizdesk.contract.jsonsafe import loads_bounded
from vizdesk.node import procs

log = structlog.get_logger("vizdesk.node.notice")

MAX_TEXT = 500
COMMAND_TIMEOUT_SECONDS = 15.0
NOT_FOUND = 127  # what a shell / apptainer exec returns for a missing command
SUMMARY = "vizdesk"

Wrap = Callable[[list[str], dict[str, str]], tuple[list[str], dict[str, str]]]


def notice_text(raw: str | None) -> str | None:
    """The text of a stored notice (JSON ``{at, kind, text}``), or None if unusable."""
    if not raw:
        return None
    try:
        value = loads_bounded(raw)
    except ValueError:
        return None
    text = value.get("text") if isinstance(value, dict) else None
    if not isinstance(text, str) or not text.strip():
        return None
    return "".join(c for c in text if c.isprintable())[:MAX_TEXT]


def session_bus(session_id: str) -> str | None:
    """DBUS_SESSION_BUS_ADDRESS of the desktop's session (its tagged processes)."""
    for proc in procs.tagged_processes(session_id):
        try:
            address = proc.environ().get("DBUS_SESSION_BUS_ADDRESS")
        except (psutil.Error, OSError):
            continue
        if address:
            return address
    return None


class DesktopNotifier:
    """Role: one desktop's notices: read on each heartbeat, shown once per new value."""

    def __init__(
        self,
        command: Sequence[str],
        session_id: str,
        key: str,
        env: dict[str, str],
        wrap: Wrap,
    ) -> None:
        self.command = list(command)
        self.session_id = session_id
        self.key = key
        self.env = env  # the desktop's environment (DISPLAY, XAUTHORITY, tag)
        self.wrap = wrap
        self.last: str | None = None
        self.unavailable = not self.command
        self.shown = 0

    async def poll(self, read: Callable[[str], Awaitable[str | None]]) -> bool:
        """Reads the notice; shows it when it changed. True when a notice was shown."""
        if self.unavailable:
            return False
        raw = await read(self.key)
        if raw is None or raw == self.last:
            return False
        self.last = raw
        text = notice_text(raw)
        if text is None:
            return False
        return await self.show(text)

    async def show(self, text: str) -> bool:
        env = dict(self.env)
        bus = await asyncio.to_thread(session_bus, self.session_id)
        if bus:
            env["DBUS_SESSION_BUS_ADDRESS"] = bus
        argv, env = self.wrap([*self.command, SUMMARY, text], env)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except (FileNotFoundError, PermissionError) as exc:
            self._give_up(f"{type(exc).__name__}: {exc}")
            return False
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_SECONDS)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning("notice_timeout", command=self.command[0])
            return False
        if proc.returncode == NOT_FOUND:
            self._give_up(out.decode(errors="replace")[-300:])
            return False
        if proc.returncode != 0:
            log.warning(
                "notice_failed",
                returncode=proc.returncode,
                output=out.decode(errors="replace")[-300:],
                session_bus=bool(bus),
            )
            return False
        self.shown += 1
        log.info("notice_shown", text=text[:120], session_bus=bool(bus))
        return True

    def _give_up(self, why: str) -> None:
        self.unavailable = True
        log.info("notice_command_unavailable", command=self.command[0], error=why)
