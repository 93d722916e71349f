"""Live session state changes: one Redis subscription fanned out to SSE/websocket clients.

Browsers get pushed changes instead of polling per session; the daemon holds a single
pub/sub connection however many tabs are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from aiohttp import web

from ..contract.jsonsafe import loads_bounded
from ..core.background import Background
from .base import identity_of
from .context import ctx

log = structlog.get_logger("vizdesk.events")
KEEPALIVE_SECONDS = 15.0


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

    def publish_local(self, event: dict[str, Any]) -> None:
        for q in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(event)

    async def _run(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
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
                await asyncio.sleep(1.0)


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
    Slurm reachability (`status`)."""
    c = ctx(request)
    identity = identity_of(request)
    want_all = identity.is_admin and request.query.get("all", "").lower() in ("1", "true")
    hub = request.app[HUB]
    q = hub.subscribe()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        sessions = await (c.store.list_all() if want_all else c.store.list_user(identity.user))
        for s in sessions:
            await response.write(_sse("session", s.to_public()))
        slurm_ok = c.tracker.slurm_ok
        await response.write(
            _sse("status", {"slurm": "unreachable" if slurm_ok is False else "ok"})
        )
        while True:
            try:
                event = await asyncio.wait_for(q.get(), timeout=KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            kind = event.get("type")
            if kind == "status":
                await response.write(_sse("status", {"slurm": event.get("slurm")}))
            elif kind in ("session", "job") and (want_all or event.get("user") == identity.user):
                await response.write(_sse(kind, event[kind]))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(q)
    return response


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/events", events)
