"""Share links to a desktop, who is connected, and the idle clock the proxy feeds.

A **share link** (:class:`Share`, in Redis under ``keys.share(id)``) lets other
authenticated users of the site (all of them, or only named users / groups) open the
owner's desktop with a scope: ``view`` (the proxy drops every input message) or
``control``. Its id (128 random bits) is not a credential on its own: a viewer still needs
their JWT to get a one-time ticket for it. Links expire (at most
``sharing.max_expiry_minutes``) and can be revoked; then every connection made through it
closes at once, on every replica: :class:`Connections` hears the ``proxy_close`` event on
the events channel and also re-checks its links every ``sharing.check_interval_seconds``.

**Viewers** (:class:`Viewers`): every open proxy connection of a desktop, owner's and
viewers', in one Redis hash per desktop so that every replica lists them all; joins and
leaves are published to the owner as ``viewer`` events.

The **idle clock** (:class:`ActivityClock`): the time of the last input message the
proxy forwarded to a desktop, written at most every ``idle.write_interval_seconds`` per
desktop; a connect, a disconnect and "keep it" set it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import redis.asyncio as aioredis
import structlog

from ..config import Config
from ..contract.jsonsafe import loads_bounded
from ..contract.keys import Keys
from ..core.errors import VizdeskError
from ..core.records import JsonRecord, iso, utcnow
from ..core.store import strs
from ..core.validate import ValidationError, reject_unknown, require_object
from ..proxy.bridge import Stop

if TYPE_CHECKING:
    from ..auth.types import Identity
    from .model import Session

log = structlog.get_logger("vizdesk.sharing")

SCOPES = ("view", "control")
SHARE_ID_BYTES = 16
SHARE_FIELDS = frozenset({"scope", "expires_in_minutes", "users", "groups"})
MAX_NAMES = 100
RETAIN_EXPIRED = timedelta(days=1)  # an expired link is kept this long (403, not 404)
VIEWER_STALE_SECONDS = 30.0  # a viewer entry no replica refreshed for this long is gone
PROXY_CLOSE = "proxy_close"  # event type: close connections (by conn, share or session)


# KEYS: the desktop's viewers hash; ARGV: connection id, its entry JSON, the cap, the
# oldest "seen" still alive. Counts live entries (drops stale ones), adds ours below cap.
JOIN_WITHIN = """
local live = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local ok, doc = pcall(cjson.decode, fields[i + 1])
  if ok and type(doc) == 'table' and tonumber(doc['seen'] or 0) >= tonumber(ARGV[4]) then
    live = live + 1
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
if live >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def share_denied(message: str, field: str | None = None) -> VizdeskError:
    return VizdeskError(403, "share_forbidden", message, field=field)


@dataclass(kw_only=True)
class Share(JsonRecord):
    """One share link of a desktop."""

    PUBLIC_FIELDS: ClassVar[tuple[str, ...]] = (
        "id",
        "session_id",
        "owner",
        "scope",
        "users",
        "groups",
        "created_at",
        "expires_at",
        "revoked_at",
    )

    id: str
    session_id: str
    owner: str
    scope: str
    expires_at: datetime
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    created_at: datetime = field(default_factory=utcnow)
    revoked_at: datetime | None = None

    def problem(self, now: datetime | None = None) -> str | None:
        """Why the link no longer opens anything (None: it does)."""
        if self.revoked_at is not None:
            return "revoked"
        if (now or utcnow()) >= self.expires_at:
            return "expired"
        return None

    def admits(self, identity: Identity) -> bool:
        """Whether ``identity`` is in the link's named set (no names: everybody)."""
        if not self.users and not self.groups:
            return True
        return identity.user in self.users or bool(set(identity.groups) & set(self.groups))

    def to_public(self) -> dict[str, Any]:
        out = super().to_public()
        out["link_path"] = f"/?share={self.id}"
        out["active"] = self.problem() is None
        return out


@dataclass(frozen=True)
class ShareRequest:
    """A validated ``POST /api/v1/sessions/{id}/shares`` body."""

    scope: str
    expires_in_minutes: float
    users: list[str]
    groups: list[str]


def _names(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_NAMES:
        raise ValidationError(name, f"{name} must be a list of at most {MAX_NAMES} names")
    out: list[str] = []
    for v in value:
        if not isinstance(v, str) or not v or len(v) > 64 or not v.isprintable():
            raise ValidationError(name, f"{name} must hold non-empty names")
        out.append(v)
    return sorted(set(out))


def validate_share_request(body: Any, cfg: Config) -> ShareRequest:
    body = require_object(body)
    reject_unknown(body, SHARE_FIELDS)
    scope = body.get("scope", "view")
    if scope not in SCOPES:
        raise ValidationError("scope", "scope must be 'view' or 'control'")
    limit = cfg.sharing.max_expiry_minutes
    minutes = body.get("expires_in_minutes", min(60.0, limit))
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
        raise ValidationError("expires_in_minutes", "expires_in_minutes must be a number")
    if not 0 < minutes <= limit:
        raise ValidationError(
            "expires_in_minutes", f"expires_in_minutes must be > 0 and at most {limit:g}"
        )
    return ShareRequest(scope, float(minutes), _names(body, "users"), _names(body, "groups"))


def _in_groups(identity: Identity, allowed: list[str]) -> bool:
    return "*" in allowed or bool(set(identity.groups) & set(allowed))


class ShareStore:
    """Role: share links in Redis (create, list, revoke) and the check of a viewer."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, cfg: Config) -> None:
        self.redis, self.keys, self.cfg = redis, keys, cfg

    def check_may_share(self, identity: Identity, scope: str) -> None:
        """Policy: sharing on, the owner's groups may share, ``control`` allowed."""
        s = self.cfg.sharing
        if not s.enabled:
            raise share_denied("sharing is disabled on this site")
        if not _in_groups(identity, s.groups):
            raise share_denied("your groups may not share desktops")
        if scope == "control" and not (s.allow_control and _in_groups(identity, s.control_groups)):
            raise share_denied("control links are not allowed", "scope")

    async def create(self, session: Session, identity: Identity, req: ShareRequest) -> Share:
        self.check_may_share(identity, req.scope)
        key = self.keys.session_shares(session.id)
        if await self.redis.scard(key) >= self.cfg.sharing.max_links_per_session:
            await self._prune(session.id)
            if await self.redis.scard(key) >= self.cfg.sharing.max_links_per_session:
                raise VizdeskError(429, "too_many_links", "too many share links for this desktop")
        now = utcnow()
        share = Share(
            id=secrets.token_hex(SHARE_ID_BYTES),
            session_id=session.id,
            owner=session.user,
            scope=req.scope,
            users=req.users,
            groups=req.groups,
            created_at=now,
            expires_at=now + timedelta(minutes=req.expires_in_minutes),
        )
        ttl = int((share.expires_at - now + RETAIN_EXPIRED).total_seconds())
        set_ttl = max(ttl, int(await self.redis.ttl(key)))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.share(share.id), share.to_json(), ex=ttl)
            pipe.sadd(key, share.id)
            pipe.expire(key, set_ttl)
            await pipe.execute()
        return share

    async def get(self, share_id: str) -> Share | None:
        if not isinstance(share_id, str) or len(share_id) != 2 * SHARE_ID_BYTES:
            return None
        raw = await self.redis.get(self.keys.share(share_id))
        return Share.from_json(raw) if raw else None

    async def get_many(self, ids: list[str]) -> dict[str, Share]:
        if not ids:
            return {}
        raws = await self.redis.mget([self.keys.share(i) for i in ids])
        return {i: Share.from_json(r) for i, r in zip(ids, raws, strict=True) if r}

    async def list_for(self, sid: str) -> list[Share]:
        ids = strs(await self.redis.smembers(self.keys.session_shares(sid)))
        found = await self.get_many(ids)
        return sorted(found.values(), key=lambda s: s.created_at)

    async def _prune(self, sid: str) -> None:
        """Drop links that are gone, revoked or expired from the desktop's set."""
        ids = strs(await self.redis.smembers(self.keys.session_shares(sid)))
        found = await self.get_many(ids)
        dead = [i for i in ids if i not in found or found[i].problem() is not None]
        if dead:
            await self.redis.srem(self.keys.session_shares(sid), *dead)

    async def revoke(self, share: Share) -> Share:
        """Revoke ``share`` and close every connection made through it (all replicas)."""
        if share.revoked_at is None:
            share.revoked_at = utcnow()
            ttl = await self.redis.ttl(self.keys.share(share.id))
            await self.redis.set(self.keys.share(share.id), share.to_json(), ex=max(int(ttl), 60))
        await publish_close(self.redis, self.keys, share_id=share.id, reason="link revoked")
        return share

    async def open_for(self, share_id: str, identity: Identity, session_id: str | None) -> Share:
        """The link ``identity`` may open (404 unknown; 403 revoked, expired, another
        desktop's, or the caller outside its named set)."""
        share = await self.get(share_id)
        if share is None:
            raise VizdeskError(404, "not_found", "no such share link")
        problem = share.problem()
        if problem is not None:
            raise share_denied(f"this share link is {problem}")
        if session_id is not None and share.session_id != session_id:
            raise share_denied("this share link is for another desktop", "session_id")
        if not share.admits(identity):
            raise share_denied("this share link is not for you")
        return share


async def publish_close(
    redis: aioredis.Redis,
    keys: Keys,
    *,
    share_id: str | None = None,
    conn: str | None = None,
    session_id: str | None = None,
    reason: str,
) -> None:
    """Ask every replica to close the matching proxy connections."""
    event = {"type": PROXY_CLOSE, "share_id": share_id, "conn": conn, "session": session_id}
    event["reason"] = reason
    await redis.publish(keys.events_channel, json.dumps(event))


@dataclass
class Connection:
    """One open proxy connection on this replica."""

    id: str
    session_id: str
    owner: str
    user: str
    scope: str  # owner | view | control
    share_id: str | None
    since: datetime = field(default_factory=utcnow)
    stop: Stop = field(default_factory=Stop)

    def entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "scope": self.scope,
            "share_id": self.share_id,
            "since": iso(self.since),
            "seen": time.time(),
        }


class Viewers:
    """Role: who is connected to a desktop, across replicas (a Redis hash per desktop)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys

    async def join(self, conn: Connection) -> None:
        await self.redis.hset(self.keys.viewers(conn.session_id), conn.id, json.dumps(conn.entry()))
        await self._publish(conn, "join", "")

    async def join_within(self, conn: Connection, cap: int) -> bool:
        """Join unless ``cap`` live connections (any replica's) are open to the desktop
        already; counted and added in one script, so parallel opens through different
        replicas cannot pass the cap together. False (nothing written) when at the cap."""
        joined = await self.redis.eval(
            JOIN_WITHIN,
            1,
            self.keys.viewers(conn.session_id),
            conn.id,
            json.dumps(conn.entry()),
            str(cap),
            repr(time.time() - VIEWER_STALE_SECONDS),
        )
        if not int(joined):
            return False
        await self._publish(conn, "join", "")
        return True

    async def leave(self, conn: Connection, reason: str) -> None:
        await self.redis.hdel(self.keys.viewers(conn.session_id), conn.id)
        await self._publish(conn, "leave", reason)

    async def touch(self, conns: list[Connection]) -> None:
        if not conns:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for c in conns:
                pipe.hset(self.keys.viewers(c.session_id), c.id, json.dumps(c.entry()))
            await pipe.execute()

    async def list(self, sid: str) -> list[dict[str, Any]]:
        raw = await self.redis.hgetall(self.keys.viewers(sid))
        now = time.time()
        out, stale = [], []
        for conn_id, value in raw.items():
            try:
                entry = loads_bounded(value)
            except (ValueError, TypeError):
                stale.append(conn_id)
                continue
            if now - float(entry.pop("seen", 0)) > VIEWER_STALE_SECONDS:
                stale.append(conn_id)  # its replica died
                continue
            out.append(entry)
        if stale:
            await self.redis.hdel(self.keys.viewers(sid), *stale)
        return sorted(out, key=lambda e: str(e.get("since")))

    async def _publish(self, conn: Connection, what: str, reason: str) -> None:
        event = {
            "type": "viewer",
            "user": conn.owner,
            "viewer": {
                "session_id": conn.session_id,
                "event": what,
                "reason": reason,
                **{k: v for k, v in conn.entry().items() if k != "seen"},
            },
        }
        await self.redis.publish(self.keys.events_channel, json.dumps(event))


class Connections:
    """Role: this replica's open proxy connections, and closing them on demand.

    ``handle`` takes events of the events channel (``proxy_close``: by connection, link
    or desktop); ``run`` re-checks the links of shared connections every
    ``sharing.check_interval_seconds`` (a lost pub/sub message, an expiry) and keeps the
    viewer entries fresh.
    """

    def __init__(self, shares: ShareStore, viewers: Viewers, interval: float) -> None:
        self.shares, self.viewers, self.interval = shares, viewers, interval
        self.open: dict[str, Connection] = {}
        self._last_touch = 0.0

    def add(self, conn: Connection) -> None:
        self.open[conn.id] = conn

    def discard(self, conn: Connection) -> None:
        self.open.pop(conn.id, None)

    def handle(self, event: dict[str, Any]) -> None:
        if event.get("type") != PROXY_CLOSE:
            return
        reason = str(event.get("reason") or "closed")
        for conn in list(self.open.values()):
            if (
                (event.get("conn") and conn.id == event["conn"])
                or (event.get("share_id") and conn.share_id == event["share_id"])
                or (event.get("session") and conn.session_id == event["session"])
            ):
                conn.stop.stop(reason)

    async def check(self) -> None:
        shared = [c for c in self.open.values() if c.share_id]
        if shared:
            found = await self.shares.get_many(sorted({c.share_id for c in shared if c.share_id}))
            now = utcnow()
            for c in shared:
                share = found.get(c.share_id or "")
                problem = "gone" if share is None else share.problem(now)
                if problem is not None:
                    c.stop.stop(f"link {problem}")
        if time.monotonic() - self._last_touch > VIEWER_STALE_SECONDS / 3:
            self._last_touch = time.monotonic()
            await self.viewers.touch(list(self.open.values()))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:  # Redis away: try again next round
                log.warning("sharing.check_failed", error=str(exc))


class ActivityClock:
    """Role: the idle clock of each desktop (epoch seconds in Redis, throttled writes)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, interval: float) -> None:
        self.redis, self.keys, self.interval = redis, keys, interval
        self._written: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def input(self, sid: str) -> None:
        """An input message was forwarded (called by the proxy; never blocks)."""
        now = time.monotonic()
        if now - self._written.get(sid, -1e9) < self.interval:
            return
        self._written[sid] = now
        task = asyncio.create_task(self._write(sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def mark(self, sid: str) -> None:
        """Reset the clock now (connect, disconnect, keep it)."""
        self._written[sid] = time.monotonic()
        await self._write(sid)

    async def _write(self, sid: str) -> None:
        with contextlib.suppress(Exception):
            await self.redis.set(self.keys.activity(sid), f"{time.time():.3f}", ex=7 * 24 * 3600)

    async def last(self, sids: list[str]) -> dict[str, float]:
        if not sids:
            return {}
        raws = await self.redis.mget([self.keys.activity(s) for s in sids])
        out: dict[str, float] = {}
        for sid, raw in zip(sids, raws, strict=True):
            if raw is not None:
                with contextlib.suppress(TypeError, ValueError):
                    out[sid] = float(raw)
        return out

    def forget(self, sid: str) -> None:
        self._written.pop(sid, None)
