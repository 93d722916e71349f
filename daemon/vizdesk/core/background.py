"""A long-running task of the daemon (the tracker loop, the events subscription)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class Background:
    """One named task: :meth:`start` runs ``body`` in it, :meth:`stop` cancels it and
    waits until it has ended."""

    def __init__(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.body = body
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        async def run() -> None:
            await self.body()

        self._task = asyncio.create_task(run(), name=self.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
