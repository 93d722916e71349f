"""Token revocation: a deny-list of ``jti`` values in Redis, each kept as long as the token
could still be accepted (its remaining lifetime plus the verifier's leeway).

No local cache: a revocation takes effect on the very next request.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from ..contract.keys import Keys

MAX_JTI_LENGTH = 256
# Extra lifetime of a deny-list entry beyond ``exp``: a verifier accepts a token up to its
# leeway after ``exp``, so the entry must outlive that (auth.leeway_seconds is 30 by default).
DEFAULT_MARGIN_SECONDS = 300


async def revoke(
    redis: aioredis.Redis,
    keys: Keys,
    jti: str,
    exp: int,
    *,
    margin_seconds: int = DEFAULT_MARGIN_SECONDS,
) -> None:
    """Deny ``jti`` until ``exp`` + ``margin_seconds`` (at least one second from now)."""
    if not jti or len(jti) > MAX_JTI_LENGTH:
        raise ValueError("jti must be a non-empty string of at most 256 characters")
    ttl = max(1, int(exp) + max(0, margin_seconds) - int(time.time()))
    await redis.set(keys.revoked(jti), b"1", ex=ttl)


async def is_revoked(redis: aioredis.Redis, keys: Keys, jti: str) -> bool:
    """True when ``jti`` is on the deny-list."""
    return bool(await redis.exists(keys.revoked(jti)))
