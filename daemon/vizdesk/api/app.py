"""Application factory: wires the roles (authenticator, spawner, tracker, job manager,
image catalog, proxy) together, once, into a typed :class:`~.context.Context`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from ..auth.jwt_auth import JwtAuthenticator
from ..auth.policy import Policy
from ..auth.ratelimit import RateLimiter, StreamLimiter
from ..auth.tickets import TicketIssuer
from ..config import Config
from ..contract import redisconn
from ..contract.keys import Keys
from ..core.background import Background
from ..files.runner import UserFiles
from ..files.sweeper import UploadSweeper
from ..files.uploads import UploadStore
from ..images.catalog import ImageCatalog
from ..jobs.inputs import JobInputs
from ..jobs.manager import JobManager
from ..jobs.store import JobStore
from ..jobs.template_library import TemplateLibrary
from ..jobs.templates import TemplateRegistry
from ..jobs.user_templates import UserTemplateStore
from ..metrics import Metrics
from ..sessions.registrations import RegistrationManager, url_db
from ..sessions.sharing import Connections, ShareStore, Viewers
from ..sessions.spawner import Spawner
from ..sessions.store import SessionStore
from ..sessions.thumbnails import Thumbnails
from ..slurm import make_backend
from ..slurm.base import SlurmBackend
from ..tracker import Tracker
from . import (
    events,
    health,
    images,
    job_files,
    job_templates,
    jobs,
    me,
    openapi,
    sessions,
    shares,
    uploads,
)
from .audit import TRUSTED_PROXIES, trusted_networks
from .context import CTX, Context
from .middleware import (
    HTML_CSP,
    authenticate,
    connection_cap,
    cors,
    json_errors,
    request_context,
)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
log = structlog.get_logger("vizdesk.app")


#: Retries of a command whose connection failed (after a reconnect, with a short
#: backoff). A Redis restart leaves every pooled connection dead; without retries
#: redis-py (``from_url``/``from_pool``: none) fails the first command on each of them,
#: and every such failure is a 503 ``storage_unavailable`` although Redis is back.
REDIS_RETRIES = 2


def redis_retry() -> Retry:
    """Connection and timeout errors: reconnect and try again, 0.1 s then 0.2 s later."""
    return Retry(ExponentialBackoff(cap=0.5, base=0.1), REDIS_RETRIES)


def redis_client(cfg: Config) -> aioredis.Redis:
    """The daemon's Redis client: ``redis.url`` directly or, with ``redis.sentinel_hosts``,
    the primary the Sentinels name (each new connection asks them, so a failover moves
    the pool). Its pool blocks (up to ``redis.pool_timeout_seconds``) when all
    ``redis.max_connections`` are busy: redis-py's default pool raises "Too many
    connections" at 100 commands in flight, which a burst of requests reaches at once.
    A command on a connection that died (Redis restarted, primary demoted) is retried on
    a fresh one (:func:`redis_retry`)."""
    return redisconn.connect(
        cfg.redis.url,
        sentinels=cfg.redis.sentinels(),
        master=cfg.redis.sentinel_master,
        sentinel_password=cfg.redis.sentinel_password(),
        blocking=True,
        max_connections=cfg.redis.max_connections,
        pool_timeout=cfg.redis.pool_timeout_seconds,
        username=cfg.redis.username or None,
        password=cfg.redis.password(),
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=5,
        retry=redis_retry(),
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
    backend.on_call = metrics.on_slurm_call
    store = SessionStore(redis, keys, cfg.sessions.ended_retention_seconds)
    regs = RegistrationManager(
        redis, keys, cfg.node.port_min, cfg.node.port_max, node_db=url_db(cfg.node_redis_url)
    )
    spawner = Spawner(cfg, backend, store, regs, metrics)
    tracker = Tracker(cfg, backend, store, regs, metrics)
    job_store = JobStore(redis, keys, cfg.jobs.ended_retention_seconds)
    registry = TemplateRegistry(cfg)
    library = TemplateLibrary(cfg, registry, UserTemplateStore(redis, keys))
    files = UserFiles(
        cfg.slurm.submit_prefix, cfg.uploads.helper_command, cfg.uploads.helper_timeout_seconds
    )
    upload_store = UploadStore(
        redis,
        keys,
        max_file_bytes=cfg.uploads.max_file_bytes,
        quota_bytes=cfg.uploads.quota_bytes,
        max_uploads=cfg.uploads.max_uploads_per_user,
        expire_seconds=cfg.uploads.expire_hours * 3600,
    )
    job_manager = JobManager(
        cfg,
        backend,
        job_store,
        registry,
        metrics,
        make_dir=lambda _prefix, user, path: files.mkdir(user, path),
        library=library,
        inputs=JobInputs(cfg, files, upload_store),
    )
    tracker.sources.append(job_manager)  # rides on the tracker's one Slurm query per tick
    catalog = ImageCatalog(cfg, redis, keys) if cfg.images.dirs or cfg.sessions.images else None
    share_store = ShareStore(redis, keys, cfg)
    viewers = Viewers(redis, keys)
    return Context(
        shares=share_store,
        viewers=viewers,
        connections=Connections(share_store, viewers, cfg.sharing.check_interval_seconds),
        activity=tracker.sessions.activity,
        thumbnails=Thumbnails(
            cfg.sessions.thumbnail_interval_seconds,
            cfg.sessions.thumbnail_max_width,
            cfg.sessions.thumbnail_timeout_seconds,
            metrics,
        ),
        files=files,
        uploads=upload_store,
        upload_sweeper=UploadSweeper(upload_store, files, cfg.uploads.cleanup_interval_seconds),
        images=catalog,
        jobs=job_manager,
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
        streams=StreamLimiter(
            redis, keys, cfg.limits.max_event_streams_per_user, events.STREAM_LEASE_SECONDS
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
        middlewares=[request_context, json_errors, connection_cap, cors, authenticate],
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

    metrics_access = health.MetricsAccess.from_config(cfg.metrics)
    metrics_listen = cfg.metrics.listen_address()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await context.redis.ping()  # fail fast on a wrong password / unreachable Redis
        metrics_runner: web.AppRunner | None = None
        if metrics_listen is not None:
            metrics_runner = web.AppRunner(
                health.metrics_app(context, metrics_access, app[TRUSTED_PROXIES]),
                access_log=None,
            )
            await metrics_runner.setup()
            await web.TCPSite(metrics_runner, *metrics_listen).start()
            log.info("metrics.listening", host=metrics_listen[0], port=metrics_listen[1])
        if not cfg.redis.keyspace_notifications or not (
            await events.enable_registration_notifications(context.redis)
        ):
            app[events.HUB].registration_pattern = None
        app[events.HUB].start()
        proxy_control = Background("vizdesk-proxy-control", shares.proxy_control(app))
        proxy_control.start()
        if run_tracker:
            context.tracker.start()
            context.upload_sweeper.start()
        log.info("daemon.started", slurm_backend=context.backend.name)
        yield
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await context.tracker.stop()
        await context.upload_sweeper.stop()
        await proxy_control.stop()
        await app[events.HUB].stop()
        await context.backend.close()
        await context.redis.aclose()

    async def release_clients(app: web.Application) -> None:
        """SIGTERM (a rolling restart): give the tracker lease up, close every desktop
        websocket with 1012 and end every events stream, so browsers reconnect through
        another replica at once; the desktops themselves keep running."""
        log.info("daemon.stopping", websockets=len(context.connections.open))
        await context.tracker.stop()
        for conn in list(context.connections.open.values()):
            conn.stop.restart()
        app[events.HUB].end_streams()

    app.on_shutdown.append(release_clients)
    app.cleanup_ctx.append(lifecycle)
    job_files.setup_routes(app)
    jobs.setup_routes(app)
    job_templates.setup_routes(app)
    uploads.setup_routes(app)
    health.setup_routes(app, metrics_access, serve_metrics=metrics_listen is None)
    sessions.setup_routes(app)
    shares.setup_routes(app)
    me.setup_routes(app)
    events.setup_routes(app)
    openapi.setup_routes(app)
    images.setup_routes(app)
    app.router.add_get("/", index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app


def run_app(app: web.Application, cfg: Config) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (``vizdesk serve``)."""
    web.run_app(
        app,
        host=cfg.server.host,
        port=cfg.server.port,
        print=None,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=5.0,
        max_line_size=cfg.server.max_header_bytes,
        max_field_size=cfg.server.max_header_bytes,
    )
