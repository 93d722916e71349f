"""A job that writes its registration in a loop pokes the tracker on every write: ticks
still start at least MIN_TICK_GAP_SECONDS apart (each one is a Slurm query)."""

from __future__ import annotations

import asyncio
import itertools
import time

import redis.asyncio as aioredis

from vizdesk.config import Config
from vizdesk.contract.keys import Keys
from vizdesk.metrics import Metrics
from vizdesk.sessions.registrations import RegistrationManager
from vizdesk.sessions.store import SessionStore
from vizdesk.slurm.base import SlurmBackend
from vizdesk.tracker import MIN_TICK_GAP_SECONDS, Tracker


class NoSlurm(SlurmBackend):
    name = "none"

    async def submit(self, req):  # type: ignore[no-untyped-def]
        raise AssertionError

    async def info_many(self, job_ids):  # type: ignore[no-untyped-def]
        return {}

    async def cancel(self, job_id, user):  # type: ignore[no-untyped-def]
        return None


async def test_a_storm_of_pokes_does_not_tick_back_to_back() -> None:
    cfg = Config()
    cfg.slurm.poll_interval_seconds = 5.0
    redis = aioredis.Redis()  # never connected: tick is replaced
    keys = Keys("vzt:")
    tracker = Tracker(
        cfg,
        NoSlurm(),
        SessionStore(redis, keys, 60),
        RegistrationManager(redis, keys, 5901, 5999),
        Metrics(),
    )
    ticks: list[float] = []

    async def tick() -> None:
        ticks.append(time.monotonic())

    async def lease_held() -> bool:  # this replica leads (the lease has its own tests)
        tracker.lease._valid_until = time.monotonic() + 3600
        tracker.lease._set(True, "test 1")
        return True

    tracker.tick = tick  # type: ignore[method-assign]
    tracker.lease.attempt = lease_held  # type: ignore[method-assign]
    tracker.start()
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            tracker.poke()
            await asyncio.sleep(0.005)
    finally:
        await tracker.stop()
    assert 2 <= len(ticks) <= 1.0 / MIN_TICK_GAP_SECONDS + 2, ticks
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert min(gaps) >= MIN_TICK_GAP_SECONDS * 0.9
