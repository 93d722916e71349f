"""Token revocation (jti deny-list) on a real Redis: effective on the very next request."""

from __future__ import annotations

import asyncio
import pwd
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from vizdesk.auth import revocation
from vizdesk.auth.jwt_auth import JwtAuthenticator
from vizdesk.auth.tokens import mint_token
from vizdesk.auth.types import AuthError
from vizdesk.config import AuthConfig
from vizdesk.contract.keys import Keys

# --- tests ---------------------------------------------------------------------------------

SECRET = "integration-secret-0123456789abcdefghij"


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AuthConfig:
    monkeypatch.delenv("VIZDESK_JWT_SECRET", raising=False)
    try:
        pwd.getpwnam("daemon")
    except KeyError:
        pytest.skip("no local account 'daemon' to authenticate as")
    p = tmp_path / "secret"
    p.write_text(SECRET)
    # "daemon" (uid 1) stands in for a real user: a real passwd entry, nothing created.
    return AuthConfig(hs256_secret_file=str(p), min_uid=1, denied_users=[], leeway_seconds=10)


async def test_revoke_and_is_revoked(redis: aioredis.Redis, keys: Keys) -> None:
    exp = int(time.time()) + 100
    assert not await revocation.is_revoked(redis, keys, "j-1")
    await revocation.revoke(redis, keys, "j-1", exp, margin_seconds=0)
    assert await revocation.is_revoked(redis, keys, "j-1")
    assert not await revocation.is_revoked(redis, keys, "j-2")
    assert 95 <= await redis.ttl(keys.revoked("j-1")) <= 100
    await revocation.revoke(redis, keys, "j-3", exp)  # default margin covers the leeway
    assert 100 < await redis.ttl(keys.revoked("j-3")) <= 100 + revocation.DEFAULT_MARGIN_SECONDS


async def test_entry_expires_with_the_token(redis: aioredis.Redis, keys: Keys) -> None:
    await revocation.revoke(redis, keys, "gone", int(time.time()) - 50, margin_seconds=0)
    assert await redis.ttl(keys.revoked("gone")) == 1  # at least one second
    deadline = time.monotonic() + 10
    while await revocation.is_revoked(redis, keys, "gone"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)


async def test_bad_jti(redis: aioredis.Redis, keys: Keys) -> None:
    for bad in ("", "x" * 257):
        with pytest.raises(ValueError):
            await revocation.revoke(redis, keys, bad, int(time.time()) + 10)


async def test_revocation_takes_effect_on_next_request(
    redis: aioredis.Redis, keys: Keys, cfg: AuthConfig
) -> None:
    a = JwtAuthenticator(cfg, redis, keys)
    other_daemon = JwtAuthenticator(cfg, redis, keys)
    token = mint_token(cfg, "daemon", ["staff"], 600)
    ident = await a.authenticate(token)
    assert ident.user == "daemon" and ident.jti and ident.exp
    assert (await other_daemon.authenticate(token)).user == "daemon"
    await a.revoke_jti(ident.jti, ident.exp)
    for auth in (a, other_daemon):
        with pytest.raises(AuthError) as ei:
            await auth.authenticate(token)
        assert (ei.value.status, ei.value.code) == (401, "token_revoked")
    ttl = await redis.ttl(keys.revoked(ident.jti))
    assert ident.exp - time.time() + cfg.leeway_seconds - 2 <= ttl <= 600 + cfg.leeway_seconds + 5
    # Other tokens of the same user are unaffected.
    assert (await a.authenticate(mint_token(cfg, "daemon", [], 600))).user == "daemon"


async def test_revoke_by_jti_only(redis: aioredis.Redis, keys: Keys, cfg: AuthConfig) -> None:
    a = JwtAuthenticator(cfg, redis, keys)
    token = mint_token(cfg, "daemon", [], 600, jti="admin-revokes-this")
    await a.revoke_jti("admin-revokes-this")  # no exp known: the longest possible lifetime
    with pytest.raises(AuthError) as ei:
        await a.authenticate(token)
    assert ei.value.code == "token_revoked"
    ttl = await redis.ttl(keys.revoked("admin-revokes-this"))
    assert ttl >= cfg.max_token_lifetime_seconds


async def test_denied_account_with_real_redis(
    redis: aioredis.Redis, keys: Keys, cfg: AuthConfig
) -> None:
    a = JwtAuthenticator(cfg, redis, keys)
    for user in ("root", "no-such-user-vz"):
        with pytest.raises(AuthError) as ei:
            await a.authenticate(mint_token(cfg, user, [], 60))
        assert (ei.value.status, ei.value.code) == (403, "account_denied")
