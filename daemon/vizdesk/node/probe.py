"""Readiness probes: the RFB banner on a TCP port, and who is listening on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import psutil

RFB_BANNER_PREFIX = b"RFB 003."


async def rfb_banner(host: str, port: int, wait: float = 2.0) -> bytes | None:
    """The 12-byte ProtocolVersion the server sends first, or None (no answer)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait)
    except (OSError, TimeoutError):
        return None
    try:
        return await asyncio.wait_for(reader.readexactly(12), wait)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


def is_rfb3(banner: bytes | None) -> bool:
    return bool(banner) and banner is not None and banner.startswith(RFB_BANNER_PREFIX)


def listener_pids(port: int, pids: Iterable[int]) -> tuple[set[int], bool]:
    """Which of ``pids`` listen on TCP ``port``, and whether any socket info was readable.

    Blocking (reads /proc): call from a thread.
    """
    found: set[int] = set()
    readable = False
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        readable = True
        for c in conns:
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
                found.add(pid)
    return found, readable
