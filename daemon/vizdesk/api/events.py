"""Live session state changes: one Redis subscription fanned out to SSE/websocket clients.

Browsers get pushed changes instead of polling per session; the daemon holds a single
pub/sub connection however many tabs are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from ..contract.jsonsafe import loads_bounded
from ..core.background import Background
from .base import identity_of
from .context import Context, ctx

log = structlog.get_logger("vizdesk.events")
KEEPALIVE_SECONDS = 15.0
# A stream's slot in limits.max_event_streams_per_user: renewed with every keepalive,
# so a daemon that dies without releasing it frees it within this long.
STREAM_LEASE_SECONDS = 3 * KEEPALIVE_SECONDS
#: Events only a desktop's owner gets (never through an admin's ?all=true).
OWNER_EVENTS = frozenset({"viewer", "idle_warning", "walltime_warning"})

#: Put into every stream's queue when the replica stops: the stream ends at once (the
#: browser's EventSource reconnects, through another replica).
END_OF_STREAM: dict[str, Any] = {"type": "end_of_stream"}


class EventHub:
    """Fan-out of the Redis events channel to in-process subscriber queues.

    With ``registration_pattern`` (a keyspace-notification pattern for the registration
    keys) it also calls ``on_registration`` when a job writes its registration, so the
    tracker ticks at once instead of at its next poll.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        channel: str,
        registration_pattern: str | None = None,
        on_registration: Callable[[], None] | None = None,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.registration_pattern = registration_pattern
        self.on_registration = on_registration
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.closing = False
        self._loop = Background("vizdesk-events", self._run)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self.subscribers.discard(q)

    def end_streams(self) -> None:
        """End every open stream (the replica is stopping); new ones end at once too."""
        self.closing = True
        for q in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(END_OF_STREAM)

    def publish_local(self, event: dict[str, Any]) -> None:
        for q in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(event)

    async def _run(self) -> None:
        while True:
            # Closed on every way out: a lost subscription's connection goes back to the
            # (bounded) pool instead of staying checked out until garbage collection.
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if self.registration_pattern:
                    await pubsub.psubscribe(self.registration_pattern)
                async for message in pubsub.listen():
                    if message["type"] == "pmessage":
                        if message["data"] == "set" and self.on_registration:
                            self.on_registration()
                        continue
                    try:
                        event = loads_bounded(message["data"])
                    except (ValueError, TypeError):
                        continue
                    self.publish_local(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("events.subscription_lost", error=str(exc))
            finally:
                await self._close(pubsub)
            await asyncio.sleep(1.0)

    @staticmethod
    async def _close(pubsub: aioredis.client.PubSub) -> None:
        # redis-py before 6 leaves PubSub.aclose unannotated, later versions annotate it;
        # binding it to a typed name keeps mypy strict quiet on both.
        close: Callable[[], Awaitable[None]] = pubsub.aclose
        with contextlib.suppress(Exception):
            await close()


HUB: web.AppKey[EventHub] = web.AppKey("vizdesk_event_hub", EventHub)


async def enable_registration_notifications(redis: aioredis.Redis) -> bool:
    """Make Redis publish keyspace events for string SETs (flags K and $), if allowed.

    Best effort: a Redis that refuses CONFIG (managed services) leaves the tracker on
    its poll interval, which is still correct, just slower to notice a new desktop.
    """
    try:
        got = await redis.config_get("notify-keyspace-events")
        flags = set(str(got.get("notify-keyspace-events") or ""))
        if "K" in flags and ("$" in flags or "A" in flags):
            return True
        await redis.config_set("notify-keyspace-events", "".join(sorted(flags | {"K", "$"})))
        return True
    except Exception as exc:
        log.info("events.keyspace_notifications_unavailable", error=str(exc))
        return False


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    """SSE stream: a snapshot of the caller's sessions, then every session/job change, plus
    Slurm reachability (`status`) and, to a desktop's owner, `viewer`, `idle_warning` and
    `walltime_warning`. At most ``limits.max_event_streams_per_user`` open per
    user across all replicas (429 ``too_many_streams`` beyond); a stream's slot is held
    by a lease in Redis, renewed with each keepalive and given back when it closes."""
    c = ctx(request)
    identity = identity_of(request)
    want_all = identity.is_admin and request.query.get("all", "").lower() in ("1", "true")
    hub = request.app[HUB]
    lease = await c.streams.acquire(identity.user)  # 429 before anything is sent
    q = hub.subscribe()
    loop = asyncio.get_running_loop()
    opened = False
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        c.metrics.event_streams_open.inc()
        opened = True
        sessions = await (c.store.list_all() if want_all else c.store.list_user(identity.user))
        for s in sessions:
            await response.write(_sse("session", s.to_public()))
        try:
            slurm_ok, _ = await c.tracker.shared_status()
        except (RedisError, OSError):
            slurm_ok = c.tracker.slurm_ok
        await response.write(
            _sse("status", {"slurm": "unreachable" if slurm_ok is False else "ok"})
        )
        keepalive_at = loop.time() + KEEPALIVE_SECONDS
        while not hub.closing:
            event: dict[str, Any] | None = None
            try:
                event = await asyncio.wait_for(q.get(), max(0.0, keepalive_at - loop.time()))
            except TimeoutError:
                pass
            if loop.time() >= keepalive_at:  # also while events flow: the lease must live
                await response.write(b": keepalive\n\n")
                if not await _renew(c, identity.user, lease):
                    break
                keepalive_at = loop.time() + KEEPALIVE_SECONDS
            if event is None:
                continue
            if event is END_OF_STREAM:
                break
            kind = event.get("type")
            if kind == "status":
                await response.write(_sse("status", {"slurm": event.get("slurm")}))
            elif kind in ("session", "job") and (want_all or event.get("user") == identity.user):
                await response.write(_sse(kind, event[kind]))
            elif kind in OWNER_EVENTS and event.get("user") == identity.user:
                # A desktop's viewers, idle and walltime warnings: its owner's only.
                await response.write(_sse(kind, event[kind]))
            elif kind == "upload" and event.get("user") == identity.user:
                # Uploads are their owner's only: not even an admin's ?all=true stream.
                await response.write(_sse(kind, event[kind]))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if opened:
            c.metrics.event_streams_open.dec()
        hub.unsubscribe(q)
        await _release(c, identity.user, lease)
    return response


async def _renew(c: Context, user: str, lease: str) -> bool:
    """Renew the stream's lease; False (end the stream) when it was lost. A Redis error
    keeps the stream: the lease then lapses on its own, which errs on the user's side."""
    try:
        if await c.streams.renew(user, lease):
            return True
    except RedisError as exc:
        log.warning("events.lease_renew_failed", error=str(exc))
        return True
    log.info("events.lease_lost", user=user)
    return False


async def _release(c: Context, user: str, lease: str) -> None:
    try:
        await c.streams.release(user, lease)
    except (RedisError, OSError) as exc:  # the lease lapses by itself
        log.warning("events.lease_release_failed", error=str(exc))


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/events", events)
