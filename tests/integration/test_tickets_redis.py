"""Websocket tickets on a real Redis: one-time, bound to user + session + origin, short-lived."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time

import pytest
import redis.asyncio as aioredis

from vizdesk.auth.tickets import TicketIssuer
from vizdesk.auth.types import AuthError
from vizdesk.contract.keys import Keys

# --- tests ---------------------------------------------------------------------------------

SID = "0123456789abcdef"
OTHER_SID = "fedcba9876543210"
ORIGIN = "https://viz.example.org"


async def test_issue_and_redeem_once(redis: aioredis.Redis, keys: Keys) -> None:
    t = TicketIssuer(redis, keys, 15)
    ticket = await t.issue("alice", SID, ORIGIN)
    assert len(ticket) == 43 and ticket.replace("-", "").replace("_", "").isalnum()
    assert await t.redeem(ticket, SID, ORIGIN) == "alice"
    with pytest.raises(AuthError) as ei:  # reuse
        await t.redeem(ticket, SID, ORIGIN)
    assert (ei.value.status, ei.value.code) == (403, "bad_ticket")


async def test_stored_hashed_with_ttl(redis: aioredis.Redis, keys: Keys) -> None:
    t = TicketIssuer(redis, keys, 15)
    ticket = await t.issue("alice", SID, ORIGIN)
    names = [n.decode() async for n in redis.scan_iter(match=f"{keys.prefix}*")]
    digest = hashlib.sha256(ticket.encode()).hexdigest()
    assert names == [keys.ticket(digest)]
    assert ticket not in names[0]
    raw = await redis.get(names[0])
    assert raw is not None and ticket.encode() not in raw
    assert json.loads(raw) == {"user": "alice", "session_id": SID, "origin": ORIGIN}
    assert 0 < await redis.ttl(names[0]) <= 15


async def test_foreign_session(redis: aioredis.Redis, keys: Keys) -> None:
    t = TicketIssuer(redis, keys, 15)
    ticket = await t.issue("alice", SID, ORIGIN)
    with pytest.raises(AuthError) as ei:
        await t.redeem(ticket, OTHER_SID, ORIGIN)
    assert ei.value.code == "bad_ticket" and ei.value.status == 403
    with pytest.raises(AuthError):  # and it is burnt: no second try for the right session
        await t.redeem(ticket, SID, ORIGIN)


@pytest.mark.parametrize(
    ("issued", "presented"),
    [
        (ORIGIN, "https://evil.example"),
        (ORIGIN, None),
        (None, ORIGIN),
        (ORIGIN, ORIGIN + ":443"),
        (ORIGIN, ORIGIN.upper()),
    ],
)
async def test_origin_mismatch(
    redis: aioredis.Redis, keys: Keys, issued: str | None, presented: str | None
) -> None:
    t = TicketIssuer(redis, keys, 15)
    ticket = await t.issue("alice", SID, issued)
    with pytest.raises(AuthError) as ei:
        await t.redeem(ticket, SID, presented)
    assert ei.value.code == "bad_ticket"


async def test_no_origin_both_sides(redis: aioredis.Redis, keys: Keys) -> None:
    t = TicketIssuer(redis, keys, 15)
    assert await t.redeem(await t.issue("bob", SID, None), SID, None) == "bob"


async def test_expired(redis: aioredis.Redis, keys: Keys) -> None:
    t = TicketIssuer(redis, keys, 1)
    ticket = await t.issue("alice", SID, ORIGIN)
    deadline = time.monotonic() + 10
    while await redis.exists(keys.ticket(hashlib.sha256(ticket.encode()).hexdigest())):
        assert time.monotonic() < deadline, "ticket did not expire"
        await asyncio.sleep(0.2)
    with pytest.raises(AuthError) as ei:
        await t.redeem(ticket, SID, ORIGIN)
    assert ei.value.code == "bad_ticket"


@pytest.mark.parametrize(
    "bad", ["", "x", "a" * 42, "a" * 44, "a" * 42 + "=", "a" * 42 + "/", "../" * 20]
)
async def test_malformed(redis: aioredis.Redis, keys: Keys, bad: str) -> None:
    with pytest.raises(AuthError) as ei:
        await TicketIssuer(redis, keys, 15).redeem(bad, SID, ORIGIN)
    assert ei.value.code == "bad_ticket"


async def test_unknown_ticket(redis: aioredis.Redis, keys: Keys) -> None:
    with pytest.raises(AuthError):
        await TicketIssuer(redis, keys, 15).redeem(secrets.token_urlsafe(32), SID, ORIGIN)


async def test_concurrent_redeem_only_one_wins(redis: aioredis.Redis, keys: Keys) -> None:
    t = TicketIssuer(redis, keys, 15)
    ticket = await t.issue("alice", SID, ORIGIN)
    results = await asyncio.gather(
        *(t.redeem(ticket, SID, ORIGIN) for _ in range(20)), return_exceptions=True
    )
    assert results.count("alice") == 1
    assert all(isinstance(r, AuthError) for r in results if r != "alice")


async def test_tickets_are_unique(redis: aioredis.Redis, keys: Keys) -> None:
    t = TicketIssuer(redis, keys, 15)
    tickets = {await t.issue("alice", SID, None) for _ in range(50)}
    assert len(tickets) == 50
