"""Token revocation (jti deny-list) on a real Redis: effective on the very next request."""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from vizdesk.auth import revocation
from vizdesk.auth.jwt_auth import JwtAuthenticator
from vizdesk.auth.types import AuthError
from vizdesk.config import AuthConfig
from vizdesk.keys import Keys
from vizdesk.tokens import mint_token

# --- Redis for these tests: the test bed's if it is up, else a private redis-server. ---
TESTBED_ENV = Path(os.environ.get("VIZDESK_TESTBED_DIR", "/var/lib/vizdesk-testbed")) / "env"


def _testbed_redis() -> tuple[str, str | None] | None:
    if not TESTBED_ENV.is_file():
        return None
    env = dict(line.split("=", 1) for line in TESTBED_ENV.read_text().splitlines() if "=" in line)
    url = env.get("REDIS_URL", "").strip().strip("'\"")
    pw_file = env.get("REDIS_PASSWORD_FILE", "").strip().strip("'\"")
    if not url:
        return None
    return url, (Path(pw_file).read_text().strip() if pw_file else None)


def _private_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed and the test bed is not up")
    password = secrets.token_urlsafe(16)
    for port in random.sample(range(16400, 16500), 100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
                "--requirepass",
                password,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return proc, f"redis://127.0.0.1:{port}/0", password
            except OSError:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
    pytest.skip("could not start a private redis-server on 16400-16499")


@pytest.fixture(scope="module")
async def redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[aioredis.Redis]:
    proc = None
    found = _testbed_redis()
    if found is None:
        proc, url, password = _private_redis(tmp_path_factory.mktemp("redis"))
    else:
        url, password = found
    client = aioredis.Redis.from_url(url, password=password)
    await client.ping()
    yield client
    await client.aclose()
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def keys(redis: aioredis.Redis) -> AsyncIterator[Keys]:
    k = Keys(f"vzt-{secrets.token_hex(4)}:")
    yield k
    async for name in redis.scan_iter(match=f"{k.prefix}*"):
        await redis.delete(name)


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
