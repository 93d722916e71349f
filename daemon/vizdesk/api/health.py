"""Liveness, readiness (Redis + Slurm, as the tracker last saw it) and Prometheus metrics.

``/metrics`` answers only what ``metrics.*`` allows: the client address must be in
``metrics.allow`` (when set) and the request must carry ``metrics.token_file``'s token as
``Authorization: Bearer`` (when set). With ``metrics.listen`` it is served by a listener
of its own (:func:`metrics_app`) and the main port answers 404 for it.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from ipaddress import ip_address

from aiohttp import web
from redis.exceptions import RedisError

from ..config import MetricsConfig
from .audit import TRUSTED_PROXIES, IPNetwork, client_address, trusted_networks
from .context import CTX, Context, ctx


@dataclass(frozen=True)
class MetricsAccess:
    """Who may scrape: client networks (empty: any) and the Bearer token (None: none)."""

    networks: tuple[IPNetwork, ...] = ()
    token: str | None = None

    @classmethod
    def from_config(cls, cfg: MetricsConfig) -> MetricsAccess:
        return cls(trusted_networks(cfg.allow), cfg.token())

    def refusal(self, request: web.Request) -> web.Response | None:
        """The response refusing ``request``, or None when it may scrape."""
        if self.networks and not _address_in(client_address(request), self.networks):
            return web.Response(status=403, text="metrics: client address not allowed\n")
        if self.token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            ok = scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            )
            if not ok:
                return web.Response(
                    status=401,
                    text="metrics: a valid Authorization: Bearer token is required\n",
                    headers={"WWW-Authenticate": 'Bearer realm="vizdesk-metrics"'},
                )
        return None


METRICS_ACCESS: web.AppKey[MetricsAccess] = web.AppKey("vizdesk_metrics_access")


def _address_in(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    c = ctx(request)
    try:
        redis_ok = bool(await c.redis.ping())
    except (RedisError, OSError):
        redis_ok = False
        c.metrics.redis_errors.inc()
    slurm_ok: bool | None = None
    last_tick = 0.0
    if redis_ok:
        try:
            slurm_ok, last_tick = await c.tracker.shared_status()
        except (RedisError, OSError):
            redis_ok = False
    if slurm_ok is None:  # no tick yet (or no leader lately): ask now
        slurm_ok = await c.backend.ping()
    age = time.time() - last_tick if last_tick else None
    ok = redis_ok and bool(slurm_ok)
    lease = c.tracker.lease
    body = {
        "status": "ok" if ok else "degraded",
        "redis": redis_ok,
        "slurm": bool(slurm_ok),
        "slurm_backend": c.backend.name,
        "tracker_last_tick_seconds_ago": round(age, 3) if age is not None else None,
        "replica": c.tracker.replica,
        "tracker_leader": lease.holder or None,
        "is_leader": lease.leader,
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    refusal = request.app.get(METRICS_ACCESS, MetricsAccess()).refusal(request)
    if refusal is not None:
        return refusal
    body = ctx(request).metrics.render()
    return web.Response(
        body=body,
        headers={"Content-Type": "text/plain; version=0.0.4", "Cache-Control": "no-store"},
    )


def setup_routes(app: web.Application, access: MetricsAccess, *, serve_metrics: bool) -> None:
    """Health routes; ``/metrics`` too unless it has a listener of its own."""
    app[METRICS_ACCESS] = access
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if serve_metrics:
        app.router.add_get("/metrics", metrics)


def metrics_app(
    context: Context, access: MetricsAccess, trusted: tuple[IPNetwork, ...]
) -> web.Application:
    """The application of the ``metrics.listen`` listener: ``/metrics`` and nothing else."""
    app = web.Application(client_max_size=1024)
    app[CTX] = context
    app[TRUSTED_PROXIES] = trusted
    app[METRICS_ACCESS] = access
    app.router.add_get("/metrics", metrics)
    return app
