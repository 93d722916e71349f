"""Development tokens: mint an HS256 JWT with the configured secret (``vizdesk token``).

The token carries exactly what :class:`vizdesk.auth.jwt_auth.JwtAuthenticator` checks with
the same configuration: the username and groups claims it reads, ``iss`` (``auth.issuer``
when set, else ``auth.dev_token_issuer``), ``aud`` when configured, ``exp``, ``iat``, ``nbf``
and a random ``jti`` (so it can be revoked).
"""

from __future__ import annotations

import secrets
import time

import jwt

from ..config import AuthConfig, ConfigError


def mint_token(
    cfg: AuthConfig, user: str, groups: list[str], ttl: int, *, jti: str | None = None
) -> str:
    """An HS256 token for ``user`` in ``groups``, valid for ``ttl`` seconds."""
    if "HS256" not in cfg.algorithms:
        raise ConfigError("auth.algorithms does not allow HS256: cannot mint a dev token")
    secret = cfg.hs256_secret()
    if not secret:
        raise ConfigError("no HS256 secret configured (auth.hs256_secret_file)")
    if not user:
        raise ValueError("user must not be empty")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if cfg.max_token_lifetime_seconds > 0 and ttl > cfg.max_token_lifetime_seconds:
        raise ValueError(
            f"ttl {ttl} exceeds auth.max_token_lifetime_seconds ({cfg.max_token_lifetime_seconds})"
        )
    now = int(time.time())
    claims: dict[str, object] = {
        cfg.username_claim: user,
        cfg.groups_claim: list(groups),
        "iss": cfg.issuer or cfg.dev_token_issuer,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl),
        "jti": jti or secrets.token_urlsafe(16),
    }
    if cfg.audience:
        claims["aud"] = cfg.audience
    return jwt.encode(claims, secret.encode(), algorithm="HS256", headers={"typ": "JWT"})
