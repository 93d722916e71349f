"""Removal of expired uploads: their staged file (by the helper, as the user) and record.

Runs in every daemon replica; an upload another request holds the lock of (a PATCH in
progress) is left for the next round, and one replica's removal races nobody's: each
upload is taken under its lock.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.exceptions import RedisError

from ..core.background import Background
from .errors import FileMissing, FilesError
from .runner import UserFiles
from .uploads import USED, UploadStore

log = structlog.get_logger("vizdesk.uploads")


class UploadSweeper:
    """Every ``interval`` seconds: remove uploads whose expiry passed (file, then record),
    publishing an ``upload`` event with state ``expired``."""

    def __init__(self, store: UploadStore, files: UserFiles, interval: float) -> None:
        self.store = store
        self.files = files
        self.interval = interval
        self._loop = Background("vizdesk-upload-sweeper", self._run)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except (RedisError, OSError) as exc:
                log.warning("uploads.sweep_failed", error=str(exc))
            await asyncio.sleep(self.interval)

    async def sweep(self, now: float | None = None) -> int:
        """One round; the number of uploads removed."""
        removed = 0
        for uid in await self.store.expired(now):
            upload = await self.store.get(uid)
            if upload is None:
                await self.store.redis.zrem(self.store.keys.uploads_expiry, uid)
                continue
            token = await self.store.lock(uid)
            if token is None:
                continue  # in use right now: next round
            try:
                if upload.state != USED:
                    try:
                        await self.files.remove(upload.user, upload.root, upload.rel)
                    except FileMissing:
                        pass
                    except FilesError as exc:
                        log.warning("uploads.remove_failed", upload=uid, error=exc.message)
                        continue
                await self.store.forget(upload)
                await self.store.publish(upload, state="expired")
                removed += 1
                log.info("uploads.expired", upload=uid, user=upload.user)
            finally:
                await self.store.unlock(uid, token)
        return removed
