"""The tracker: one batched Slurm query per tick moves every tracked record's state.

Never one query per session, never per browser tab: every tracked source (desktop
sessions first, then batch jobs and whatever else registers in ``sources``) contributes
its Slurm ids to the same query, then gets the answer. If Slurm cannot be asked, nothing
changes (a slurmctld restart must not end anybody's desktop) and readiness says so.

With several daemon replicas only the holder of the leader lease
(:class:`~vizdesk.core.lease.LeaderLease`) ticks, and every write of its tick is fenced:
one batched query per tick cluster-wide. The leader publishes what it saw
(``Keys.tracker_status``) for the other replicas' readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisError

from .core.background import Background
from .core.lease import CURRENT_FENCE, FencedOut, LeaderLease, fenced, fenced_set
from .core.tracked import TrackedSource
from .sessions.advance import SessionTracking
from .sessions.role import SessionRole
from .slurm.base import SlurmError

log = structlog.get_logger("vizdesk.tracker")

#: A poke (a create, a job writing its registration) ticks early, but ticks start at
#: least this far apart: a job SETting its key in a loop cannot make the daemon query
#: Slurm back to back.
MIN_TICK_GAP_SECONDS = 0.25


@dataclass(eq=False)
class Tracker(SessionRole):
    """Role: the loop. Ticks every ``slurm.poll_interval_seconds`` (or at once after
    :meth:`poke`), asks Slurm once for the ids of every source in ``sources`` and hands
    each source its answer; notices a Redis restart or failover and has the session ACL
    users re-created. Ticks only while this replica holds the leader lease, each tick's
    writes fenced by it. Add a source by appending a :class:`TrackedSource` to
    ``sources``."""

    def __post_init__(self) -> None:
        self.sessions = SessionTracking(self)
        self.sources: list[TrackedSource] = [self.sessions]
        self.slurm_ok: bool | None = None  # None until the first query
        self.last_tick: float = 0.0
        self.ticks = 0
        self.slurm_queries = 0
        self._wake = asyncio.Event()
        self._loop = Background("vizdesk-tracker", self._run)
        self._redis_run_id: str | None = None
        self.replica = self.cfg.replica_name
        self.lease = LeaderLease(
            self.store.redis,
            self.store.keys,
            self.replica,
            self.cfg.tracker.lease_seconds,
            on_change=self._leadership_changed,
        )
        self._lease_loop = Background("vizdesk-tracker-lease", self._hold_lease)
        self.metrics.tracker_leader.labels(replica=self.replica).set(0)

    def start(self) -> None:
        self._lease_loop.start()
        self._loop.start()

    async def stop(self) -> None:
        """Stop ticking and give the lease up, so another replica takes over at once."""
        await self._loop.stop()
        await self._lease_loop.stop()
        await self.lease.release()

    async def _hold_lease(self) -> None:
        await self.lease.run(on_acquired=self.poke)

    def _leadership_changed(self, leader: bool) -> None:
        self.metrics.tracker_leader.labels(replica=self.replica).set(1 if leader else 0)
        self.metrics.tracker_leader_changes.labels(change="acquired" if leader else "lost").inc()
        if leader:
            self._redis_run_id = None  # a new leader re-creates the ACL users first

    def poke(self) -> None:
        """Run the next tick now (after a create or delete)."""
        self._wake.set()

    async def _run(self) -> None:
        interval = self.cfg.slurm.poll_interval_seconds
        min_gap = min(interval, MIN_TICK_GAP_SECONDS)
        while True:
            started = time.monotonic()
            fence = self.lease.fence
            try:
                if fence is not None:
                    with fenced(fence):
                        await self.tick()
            except FencedOut as exc:
                self.metrics.tracker_fenced_out.inc()
                log.warning("tracker.fenced_out", replica=self.replica, error=str(exc))
                self.lease.lost()
            except RedisError as exc:
                self.metrics.redis_errors.inc()
                log.warning("tracker.redis_error", error=str(exc))
            except Exception:  # never let the loop die
                log.exception("tracker.error")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            gap = min_gap - (time.monotonic() - started)
            if gap > 0:
                await asyncio.sleep(gap)

    async def tick(self) -> None:
        self.ticks += 1
        await self._restore_acl_after_redis_restart()
        source_ids = [await src.active_job_ids() for src in self.sources]
        owners: dict[str, str] = {}
        for src in self.sources:
            owners.update(src.job_owners())
        for ids in source_ids:  # every id is asked about, owner known or not
            for j in ids:
                owners.setdefault(j, "")
        started = time.monotonic()
        try:
            self.slurm_queries += 1
            statuses = await self.backend.info_owned(owners)
        except SlurmError as exc:
            if self.slurm_ok is not False:
                log.warning("tracker.slurm_unreachable", error=str(exc))
                await self._publish_status(False)
            self.slurm_ok = False
            for src in self.sources:
                src.keep()
            self.last_tick = time.time()
            await self._write_status()
            return
        finally:
            self.last_tick = time.time()
        if self.slurm_ok is not True:
            if self.slurm_ok is False:
                log.info("tracker.slurm_back", seconds=round(time.monotonic() - started, 3))
            await self._publish_status(True)
        self.slurm_ok = True
        for src, ids in zip(self.sources, source_ids, strict=True):
            try:
                await src.apply({j: statuses[j] for j in ids if j in statuses})
            except FencedOut:
                raise
            except Exception:
                log.exception("tracker.source_error", source=type(src).__name__)
        await self._write_status()

    async def _write_status(self) -> None:
        """What the other replicas' /readyz report: who ticked, when, Slurm reachable."""
        doc = {"replica": self.replica, "slurm": self.slurm_ok, "tick": self.last_tick}
        ttl = max(30, int(self.cfg.slurm.poll_interval_seconds * 5))
        key, value = self.store.keys.tracker_status, json.dumps(doc)
        fence = CURRENT_FENCE.get()
        if fence is None:  # a tick outside the loop (tests, tools)
            await self.store.redis.set(key, value, ex=ttl)
        else:  # every tick ends with a fenced write: a deposed leader finds out here
            await fenced_set(self.store.redis, fence, key, value, ttl)

    async def shared_status(self) -> tuple[bool | None, float]:
        """(Slurm reachable, last tick epoch): this replica's own while it leads, else
        what the leader last published (None, 0.0 when nobody has lately)."""
        if self.lease.leader:
            return self.slurm_ok, self.last_tick
        raw = await self.store.redis.get(self.store.keys.tracker_status)
        try:
            doc = json.loads(raw) if raw else {}
            slurm = doc.get("slurm")
            return (slurm if isinstance(slurm, bool) else None), float(doc.get("tick") or 0)
        except (ValueError, TypeError, AttributeError):
            return None, 0.0

    async def _restore_acl_after_redis_restart(self) -> None:
        """ACL users live in Redis's memory only: when Redis's run id changes (or on the
        daemon's first tick), re-create them for every live session from the stored hash."""
        run_id = str((await self.store.redis.info("server")).get("run_id", ""))
        if run_id == self._redis_run_id:
            return
        restored = await self.sessions.restore_credentials()
        if self._redis_run_id is not None:
            log.warning("tracker.redis_restarted", acl_users_restored=restored)
        self._redis_run_id = run_id

    async def _publish_status(self, slurm_ok: bool) -> None:
        event = {"type": "status", "slurm": "ok" if slurm_ok else "unreachable"}
        await self.store.redis.publish(self.store.keys.events_channel, json.dumps(event))
