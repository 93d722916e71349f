"""Liveness, readiness (Redis + Slurm, as the tracker last saw it) and Prometheus metrics."""

from __future__ import annotations

import time

from aiohttp import web
from redis.exceptions import RedisError

from .context import ctx


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    c = ctx(request)
    try:
        redis_ok = bool(await c.redis.ping())
    except (RedisError, OSError):
        redis_ok = False
        c.metrics.redis_errors.inc()
    slurm_ok = c.tracker.slurm_ok
    if slurm_ok is None:  # no tick yet: ask now
        slurm_ok = await c.backend.ping()
    age = time.time() - c.tracker.last_tick if c.tracker.last_tick else None
    ok = redis_ok and bool(slurm_ok)
    body = {
        "status": "ok" if ok else "degraded",
        "redis": redis_ok,
        "slurm": bool(slurm_ok),
        "slurm_backend": c.backend.name,
        "tracker_last_tick_seconds_ago": round(age, 3) if age is not None else None,
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = ctx(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
