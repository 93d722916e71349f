"""Notices for the desktop itself: the daemon writes the text of an idle or walltime
warning to the session's notice key (:meth:`vizdesk.contract.keys.Keys.notice`); the
node wrapper reads it on its next heartbeat with the session's own ACL user (read-only on
that key) and shows it inside the desktop (``notify-send``, :mod:`vizdesk.node.notice`).
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from ..contract.keys import Keys
from ..core.records import iso, utcnow

#: A notice outlives any heartbeat interval; the node compares values, not ages.
NOTICE_TTL_SECONDS = 3600


def _minutes(seconds: float) -> str:
    m = max(0, round(seconds / 60))
    if m < 1:
        return "less than a minute"
    return f"{m} minute{'s' if m != 1 else ''}"


def notice_text(kind: str, body: dict[str, Any]) -> str:
    """The words shown on the desktop for an ``idle_warning`` / ``walltime_warning``."""
    if kind == "idle_warning":
        ends = body.get("ends_in_seconds")
        tail = (
            f" It will be stopped in {_minutes(float(ends))} unless you use it"
            " (or press Keep in the portal)."
            if ends is not None
            else ""
        )
        return f"No keyboard or mouse input for {_minutes(float(body['idle_seconds']))}.{tail}"
    if kind == "walltime_warning":
        left = _minutes(float(body["remaining_seconds"]))
        return f"This desktop reaches its time limit in {left}. Save your work."
    raise ValueError(f"no notice for {kind!r}")


async def write_notice(
    redis: aioredis.Redis, keys: Keys, sid: str, kind: str, body: dict[str, Any]
) -> None:
    """Stores the notice for the desktop (a new value each time: the node shows changes)."""
    value = {"at": iso(utcnow()), "kind": kind, "text": notice_text(kind, body)}
    await redis.set(keys.notice(sid), json.dumps(value), ex=NOTICE_TTL_SECONDS)
