"""The daemon's components, wired once by :func:`.app.build_context` and shared by every
handler (via an AppKey). Every seam is typed: handlers never duck-type a component."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ..auth.jwt_auth import JwtAuthenticator
    from ..auth.policy import Policy
    from ..auth.ratelimit import RateLimiter, StreamLimiter
    from ..auth.tickets import TicketIssuer
    from ..config import Config
    from ..contract.keys import Keys
    from ..files.runner import UserFiles
    from ..files.sweeper import UploadSweeper
    from ..files.uploads import UploadStore
    from ..images.catalog import ImageCatalog
    from ..jobs.manager import JobManager
    from ..metrics import Metrics
    from ..sessions.registrations import RegistrationManager
    from ..sessions.sharing import ActivityClock, Connections, ShareStore, Viewers
    from ..sessions.spawner import Spawner
    from ..sessions.store import SessionStore
    from ..sessions.thumbnails import Thumbnails
    from ..slurm.base import SlurmBackend
    from ..tracker import Tracker


@dataclass
class Context:
    """Every component a handler may use, typed (built once per app)."""

    cfg: Config
    redis: aioredis.Redis
    keys: Keys
    metrics: Metrics
    backend: SlurmBackend
    store: SessionStore
    registrations: RegistrationManager
    spawner: Spawner
    tracker: Tracker
    jobs: JobManager
    authenticator: JwtAuthenticator
    policy: Policy
    tickets: TicketIssuer
    ratelimiter: RateLimiter
    streams: StreamLimiter  # open event streams per user (in Redis: all replicas)
    images: ImageCatalog | None  # None when no catalog is configured
    files: UserFiles  # every file operation on a user's directories, as the user
    uploads: UploadStore  # tus upload records
    upload_sweeper: UploadSweeper  # removes expired uploads
    shares: ShareStore  # share links of desktops
    viewers: Viewers  # who is connected to which desktop (all replicas)
    connections: Connections  # this replica's open proxy connections (kick, revoke)
    activity: ActivityClock  # the idle clock the proxy feeds
    thumbnails: Thumbnails  # desktop thumbnails (on demand, cached)
    clients: dict[str, int] = field(default_factory=dict)  # requests in progress per address


CTX: web.AppKey[Context] = web.AppKey("vizdesk_context", Context)


def ctx(request: web.Request) -> Context:
    return request.app[CTX]
