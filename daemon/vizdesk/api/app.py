"""Application factory: wires the roles (authenticator, spawner, tracker, proxy) together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis
import structlog
from aiohttp import web

from ..audit import TRUSTED_PROXIES, trusted_networks
from ..auth.jwt_auth import JwtAuthenticator
from ..auth.policy import Policy
from ..config import Config
from ..keys import Keys
from ..metrics import Metrics
from ..ratelimit import RateLimiter
from ..registrations import RegistrationManager
from ..slurm import make_backend
from ..slurm.base import SlurmBackend
from ..spawner import Spawner
from ..store import SessionStore
from ..tickets import TicketIssuer
from ..tracker import Tracker
from . import events, health, images, me, openapi, sessions
from .context import CTX, Context
from .middleware import HTML_CSP, authenticate, cors, json_errors, request_context

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
log = structlog.get_logger("vizdesk.app")


def redis_client(cfg: Config) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        cfg.redis.url,
        username=cfg.redis.username or None,
        password=cfg.redis.password(),
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=5,
    )


def build_context(
    cfg: Config,
    redis: aioredis.Redis,
    backend: SlurmBackend | None = None,
    metrics: Metrics | None = None,
) -> Context:
    keys = Keys(cfg.redis.key_prefix)
    metrics = metrics or Metrics()
    backend = backend or make_backend(cfg.slurm, cfg.auth.min_uid)
    if hasattr(backend, "on_call"):
        backend.on_call = metrics.on_slurm_call
    store = SessionStore(redis, keys, cfg.sessions.ended_retention_seconds)
    regs = RegistrationManager(redis, keys, cfg.node.port_min, cfg.node.port_max)
    spawner = Spawner(cfg, backend, store, regs, metrics)
    tracker = Tracker(cfg, backend, store, regs, metrics)
    catalog = None
    if cfg.images.dirs or cfg.sessions.images:
        from ..images import ImageCatalog

        catalog = ImageCatalog(cfg, redis, keys)
    return Context(
        images=catalog,
        cfg=cfg,
        redis=redis,
        keys=keys,
        metrics=metrics,
        backend=backend,
        store=store,
        registrations=regs,
        spawner=spawner,
        tracker=tracker,
        authenticator=JwtAuthenticator(cfg.auth, redis, keys),
        policy=Policy(cfg.policy),
        tickets=TicketIssuer(redis, keys, cfg.tickets.ttl_seconds),
        ratelimiter=RateLimiter(
            redis, keys, cfg.limits.create_per_window, cfg.limits.window_seconds
        ),
    )


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(
        page,
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "no-cache",
            "Content-Security-Policy": HTML_CSP,
        },
    )


def create_app(
    cfg: Config,
    *,
    backend: SlurmBackend | None = None,
    redis: aioredis.Redis | None = None,
    run_tracker: bool = True,
) -> web.Application:
    app = web.Application(
        client_max_size=cfg.server.max_body_bytes,
        middlewares=[request_context, json_errors, cors, authenticate],
    )
    context = build_context(cfg, redis or redis_client(cfg), backend)
    app[CTX] = context
    app[TRUSTED_PROXIES] = trusted_networks(cfg.server.trusted_proxies)
    db = context.redis.connection_pool.connection_kwargs.get("db", 0)
    app[events.HUB] = events.EventHub(
        context.redis,
        context.keys.events_channel,
        registration_pattern=f"__keyspace@{db}__:{context.keys.registration('*')}",
        on_registration=context.tracker.poke,
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await context.redis.ping()  # fail fast on a wrong password / unreachable Redis
        if not cfg.redis.keyspace_notifications or not (
            await events.enable_registration_notifications(context.redis)
        ):
            app[events.HUB].registration_pattern = None
        app[events.HUB].start()
        if run_tracker:
            context.tracker.start()
        log.info("daemon.started", slurm_backend=context.backend.name)
        yield
        await context.tracker.stop()
        await app[events.HUB].stop()
        await context.redis.aclose()

    app.cleanup_ctx.append(lifecycle)
    # --- batch jobs (vizdesk.jobs): manager + tracker source + /api/v1/jobs routes ---
    from ..jobs import api as jobs_api

    jobs_api.install(app, context)
    # --- end batch jobs ---
    health.setup_routes(app)
    sessions.setup_routes(app)
    me.setup_routes(app)
    events.setup_routes(app)
    openapi.setup_routes(app)
    images.setup_routes(app)
    app.router.add_get("/", index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app
