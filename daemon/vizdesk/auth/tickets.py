"""One-time websocket tickets: bound to user + session + browser origin, valid for seconds.

The browser gets a random 256-bit ticket from ``POST /sessions/{id}/connect`` (JWT
authenticated) and presents it once in the websocket URL. Redis stores only its SHA-256
(under ``keys.ticket(digest)``, with a TTL), so neither a Redis dump nor a log line can be
replayed. Redeeming is atomic (GETDEL): a ticket works once, even under concurrent use.
Tickets are never logged.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis

from ..contract.jsonsafe import loads_bounded
from ..contract.keys import Keys
from .types import AuthError

TICKET_BYTES = 32
# token_urlsafe(32) gives 43 characters of the URL-safe base64 alphabet.
_TICKET_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def ticket_digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    """What a redeemed ticket grants: ``user`` may open the desktop; through a share link
    (``share_id``) with its ``scope`` ("view" or "control"), else as its owner."""

    user: str
    share_id: str | None = None
    scope: str = "owner"


class TicketIssuer:
    """Issues and redeems websocket tickets in Redis."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ticket ttl must be positive")
        self.redis = redis
        self.keys = keys
        self.ttl = int(ttl_seconds)

    async def issue(
        self,
        user: str,
        session_id: str,
        origin: str | None,
        *,
        share_id: str | None = None,
        scope: str = "owner",
    ) -> str:
        """A fresh ticket for ``user`` to open ``session_id``'s websocket from ``origin``
        (through share link ``share_id`` with ``scope`` when given)."""
        data: dict[str, str | None] = {"user": user, "session_id": session_id, "origin": origin}
        if share_id is not None:
            data.update(share_id=share_id, scope=scope)
        value = json.dumps(data)
        while True:
            ticket = secrets.token_urlsafe(TICKET_BYTES)
            ok = await self.redis.set(
                self.keys.ticket(ticket_digest(ticket)), value, ex=self.ttl, nx=True
            )
            if ok:  # a collision of 256 random bits does not happen; NX makes sure anyway
                return ticket

    async def redeem(self, ticket: str, session_id: str, origin: str | None) -> str:
        """Consume ``ticket`` and return its user (see :meth:`redeem_grant`)."""
        return (await self.redeem_grant(ticket, session_id, origin)).user

    async def redeem_grant(self, ticket: str, session_id: str, origin: str | None) -> Grant:
        """Consume ``ticket`` and return what it grants; raise ``AuthError(403, "bad_ticket")``.

        Unknown, expired, already used, issued for another session or presented from
        another ``Origin`` than it was issued to: all refused alike.
        """
        if not isinstance(ticket, str) or not _TICKET_RE.fullmatch(ticket):
            raise AuthError(403, "bad_ticket", "invalid or expired ticket")
        raw = await self.redis.getdel(self.keys.ticket(ticket_digest(ticket)))
        if raw is None:
            raise AuthError(403, "bad_ticket", "invalid or expired ticket")
        try:
            data = loads_bounded(raw)
            user = data["user"]
            bound_session = data["session_id"]
            bound_origin = data.get("origin")
            share_id = data.get("share_id")
            scope = data.get("scope", "owner")
        except (ValueError, KeyError, TypeError):
            raise AuthError(403, "bad_ticket", "invalid or expired ticket") from None
        if bound_session != session_id:
            raise AuthError(403, "bad_ticket", "ticket was issued for another session")
        if bound_origin != origin:
            raise AuthError(403, "bad_ticket", "ticket was issued to another origin")
        if not isinstance(user, str) or not user:
            raise AuthError(403, "bad_ticket", "invalid or expired ticket")
        if share_id is not None and (
            not isinstance(share_id, str) or scope not in ("view", "control")
        ):
            raise AuthError(403, "bad_ticket", "invalid or expired ticket")
        return Grant(user, share_id, scope if share_id is not None else "owner")
