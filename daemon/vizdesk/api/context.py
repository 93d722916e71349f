"""The daemon's components, wired once and shared by every handler (via an AppKey)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ..auth.jwt_auth import JwtAuthenticator
    from ..auth.policy import Policy
    from ..config import Config
    from ..keys import Keys
    from ..metrics import Metrics
    from ..ratelimit import RateLimiter
    from ..registrations import RegistrationManager
    from ..slurm.base import SlurmBackend
    from ..spawner import Spawner
    from ..store import SessionStore
    from ..tickets import TicketIssuer
    from ..tracker import Tracker


@dataclass
class Context:
    cfg: Config
    redis: aioredis.Redis
    keys: Keys
    metrics: Metrics
    backend: SlurmBackend
    store: SessionStore
    registrations: RegistrationManager
    spawner: Spawner
    tracker: Tracker
    authenticator: JwtAuthenticator
    policy: Policy
    tickets: TicketIssuer
    ratelimiter: RateLimiter
    images: Any = None  # ImageCatalog when the catalog is configured
    jobs: Any = None  # batch-job manager when configured
    websockets: dict[str, int] = field(default_factory=dict)  # open proxies per session


CTX: web.AppKey[Context] = web.AppKey("vizdesk_context", Context)


def ctx(request: web.Request) -> Context:
    return request.app[CTX]
