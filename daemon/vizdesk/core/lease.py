"""The tracker's leader lease and the fencing token every tracker write is checked with.

One replica at a time holds ``Keys.tracker_lease`` (``SET NX PX``, renewed every third
of the lease); its value is ``<replica> <fence>``, the fence being a counter incremented
by each new holder. A tick runs under :func:`fenced` and every record write
(:func:`vizdesk.core.store.atomic_update`) made inside it WATCHes the lease key and
checks it still holds exactly this replica's value: a leader paused past its lease (or
cut off from Redis) and then resumed cannot write, even if no other replica has taken
the lease yet, and a renewal racing a write only retries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from ..contract.keys import Keys

log = structlog.get_logger("vizdesk.lease")

# KEYS: lease, fence counter; ARGV: replica name, lease ms, the value this replica holds
# ("" if none). Renews our own lease, or takes a free one with a new fence. Returns
# {1, value} when we hold it, {0, holder's value or ""} otherwise.
ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur and ARGV[3] ~= '' and cur == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, cur}
end
if cur then return {0, cur} end
local fence = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ' ' .. fence
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value}
"""

# KEYS: lease; ARGV: our value. Deletes the lease only if it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# KEYS: lease, key; ARGV: the fence's lease value, value, ttl seconds. SET only while
# the lease still holds exactly that value.
FENCED_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 1
"""


class FencedOut(Exception):
    """A tracker write was refused: this replica no longer holds the lease it ticked under."""


@dataclass(frozen=True)
class Fence:
    """What a write inside a tick checks: the lease key still holds ``value``."""

    key: str
    value: str


#: The fence of the tick running in this task (None outside a tick: API writes).
CURRENT_FENCE: ContextVar[Fence | None] = ContextVar("vizdesk_fence", default=None)


@contextlib.contextmanager
def fenced(fence: Fence) -> Iterator[None]:
    """Run the block's writes under ``fence``."""
    token = CURRENT_FENCE.set(fence)
    try:
        yield
    finally:
        CURRENT_FENCE.reset(token)


async def fenced_set(redis: aioredis.Redis, fence: Fence, key: str, value: str, ttl: int) -> None:
    """SET ``key`` (with a TTL) only while the lease holds ``fence``; else FencedOut."""
    if not int(await redis.eval(FENCED_SET, 2, fence.key, key, fence.value, value, str(ttl))):
        raise FencedOut(f"{key}: the tracker lease is no longer {fence.value}")


class LeaderLease:
    """Role: hold or watch the leader lease. :meth:`run` renews it while held and tries
    to take it when free; :attr:`fence` is the fence of a lease held now (None when not
    leader, or when the last renewal is older than the lease: then it may be lost).
    ``on_change(leader)`` is called on each change of leadership."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        replica: str,
        lease_seconds: float,
        on_change: Callable[[bool], None] = lambda _leader: None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.replica = replica
        self.lease_ms = int(lease_seconds * 1000)
        self.on_change = on_change
        self.holder = ""  # replica name of the current leader, as last seen ("" = none)
        self._value = ""  # our lease value while we hold it
        self._valid_until = 0.0  # monotonic: our lease surely lives until then
        self.changes = 0

    @property
    def leader(self) -> bool:
        return bool(self._value) and time.monotonic() < self._valid_until

    @property
    def fence(self) -> Fence | None:
        return Fence(self.keys.tracker_lease, self._value) if self.leader else None

    async def attempt(self) -> bool:
        """Renew or take the lease once; True when held afterwards."""
        sent = time.monotonic()
        try:
            held, value = await self.redis.eval(
                ACQUIRE,
                2,
                self.keys.tracker_lease,
                self.keys.tracker_fence,
                self.replica,
                str(self.lease_ms),
                self._value,
            )
        except (RedisError, OSError) as exc:
            log.warning("lease.redis_error", error=str(exc))
            if time.monotonic() >= self._valid_until:
                self._set(False, "")
            return self.leader
        value = value.decode() if isinstance(value, bytes) else str(value)
        if int(held):
            # The lease runs from when Redis set it, which is after we sent the script.
            self._valid_until = sent + self.lease_ms / 1000
            self._set(True, value)
        else:
            self._set(False, value)
        return self.leader

    def _set(self, held: bool, value: str) -> None:
        was = bool(self._value)
        self._value = value if held else ""
        self.holder = value.rpartition(" ")[0] if value else ""
        if held != was:
            self.changes += 1
            log.info(
                "lease.leader" if held else "lease.follower",
                replica=self.replica,
                leader=self.holder or None,
            )
            self.on_change(held)

    def lost(self) -> None:
        """A write found the lease gone: stop acting as leader until :meth:`attempt`
        says otherwise."""
        if self._value:
            self._set(False, "")

    async def release(self) -> None:
        """Give the lease up now (a clean stop): another replica takes it at its next try."""
        if not self._value:
            return
        value, self._value = self._value, ""
        with contextlib.suppress(RedisError, OSError):
            await self.redis.eval(RELEASE, 1, self.keys.tracker_lease, value)
        self._set(False, "")

    async def run(self, on_acquired: Callable[[], None]) -> None:
        """Forever: renew every third of the lease while leader, else try every eighth
        (so a dead leader is replaced within about 1.125 lease times at most)."""
        while True:
            was = self.leader
            if await self.attempt() and not was:
                on_acquired()
            step = self.lease_ms / 1000 / (3 if self.leader else 8)
            await asyncio.sleep(step)
