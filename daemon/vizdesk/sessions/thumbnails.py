"""Thumbnails of READY desktops, taken only when somebody asks, at most every N seconds.

Role :class:`Thumbnails`: one PNG per desktop kept in memory for
``sessions.thumbnail_interval_seconds``; concurrent requests for the same desktop share
one grab (a lock per desktop); nothing runs when nobody asks. The grab itself is
:func:`vizdesk.proxy.thumbnail.thumbnail_png` over the daemon's own RFB connection to
the node Slurm reports, with the registered password (which never leaves the daemon).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from ..metrics import Metrics
from ..proxy.thumbnail import thumbnail_png

MAX_CACHED = 1000


@dataclass
class Thumbnails:
    """Role: the per-desktop thumbnail cache (memory, per replica, with a TTL)."""

    interval: float
    max_width: int
    timeout: float
    metrics: Metrics
    _cache: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def get(self, sid: str, host: str, port: int, password: str) -> tuple[bytes, float]:
        """(PNG, its age in seconds) of desktop ``sid``; raises ThumbnailError."""
        lock = self._locks.setdefault(sid, asyncio.Lock())
        async with lock:
            hit = self._cache.get(sid)
            now = time.monotonic()
            if hit is not None and now - hit[0] < self.interval:
                return hit[1], now - hit[0]
            started = time.perf_counter()
            data = await thumbnail_png(
                host, port, password, max_width=self.max_width, seconds=self.timeout
            )
            self.metrics.thumbnail_seconds.observe(time.perf_counter() - started)
            if len(self._cache) >= MAX_CACHED:
                self._expire()
            self._cache[sid] = (time.monotonic(), data)
            return data, 0.0

    def forget(self, sid: str) -> None:
        self._cache.pop(sid, None)
        self._locks.pop(sid, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid, (at, _) in list(self._cache.items()):
            if now - at >= self.interval:
                self.forget(sid)
        while len(self._cache) >= MAX_CACHED:
            self.forget(next(iter(self._cache)))
