"""Fixtures for the integration tier: the test bed's real Redis, with a key prefix per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from tests.conftest import Testbed
from vizdesk.contract.keys import Keys


@pytest_asyncio.fixture(scope="module")
async def redis(testbed: Testbed) -> AsyncIterator[aioredis.Redis]:
    """A bytes client on the test bed's Redis (password-protected, as in production)."""
    client = aioredis.Redis.from_url(testbed.env["REDIS_URL"], password=testbed.redis_password)
    await client.ping()
    yield client
    await client.aclose()


@pytest.fixture
async def keys(redis: aioredis.Redis) -> AsyncIterator[Keys]:
    """A fresh key prefix; everything under it is deleted afterwards."""
    k = Keys(f"vzt-{secrets.token_hex(4)}:")
    yield k
    async for name in redis.scan_iter(match=f"{k.prefix}*"):
        await redis.delete(name)
