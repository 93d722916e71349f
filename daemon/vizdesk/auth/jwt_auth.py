"""JWT bearer authentication: verify a token (PyJWT), map it to a local account, check revocation.

Hardening, in the order the checks run:

* The header's ``alg`` must be in ``auth.algorithms`` (only HS256, RS256 and ES256 exist
  here; ``none`` never). The verification key is chosen from the header *and* must have
  the matching type: HS256 only ever verifies with the configured HS secret; RS256 only
  with an RSA public key (>= 2048 bits); ES256 only with a P-256 public key. A public key
  can therefore never be abused as an HMAC secret (algorithm confusion), and an RS256 key
  named by ``kid`` never verifies an ES256 token.
* Asymmetric keys come from PEM files (``auth.public_key_files``: kid → path; public keys
  or X.509 certificates) and/or a JWKS file (``auth.jwks_file``), selected by ``kid``: two
  keys may be live at once for rotation. Unknown ``kid`` → 401. A token without ``kid`` is
  accepted only when exactly one key of its algorithm is configured.
* ``exp`` is required; ``nbf``/``iat`` are checked; ``iss``/``aud`` when configured; the
  leeway is ``auth.leeway_seconds``. Tokens valid for longer than
  ``auth.max_token_lifetime_seconds`` from now are refused (so a revocation by ``jti``
  alone has a bounded lifetime).
* The username claim must name a local account allowed by :mod:`.accounts`; the groups
  claim is a list of strings, or one string: a single group, unless
  ``auth.groups_claim_separator`` names the characters that split it (never split by
  default: "Research Staff" is one group, and a crafted name cannot smuggle in an admin
  group).
* ``jti`` must not be on the Redis deny-list (:mod:`.revocation`).

Keys are loaded once (at construction; blocking file reads are fine at startup) and again
only on :meth:`JwtAuthenticator.reload`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import redis.asyncio as aioredis
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ..config import AuthConfig, ConfigError
from ..contract.keys import Keys
from . import revocation
from .accounts import AccountResolver
from .types import AuthError, Identity

log = structlog.get_logger("vizdesk.auth")

SUPPORTED_ALGORITHMS = frozenset({"HS256", "RS256", "ES256"})
MAX_TOKEN_BYTES = 16 * 1024
MIN_RSA_BITS = 2048
MIN_HS_SECRET_BYTES = 32

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class _VerifyKey:
    kid: str | None
    alg: str  # RS256 | ES256
    key: PublicKey
    source: str


@dataclass(frozen=True)
class _KeySet:
    hs_secret: bytes | None
    by_kid: dict[str, _VerifyKey]
    without_kid: tuple[_VerifyKey, ...]

    def all_keys(self) -> Iterable[_VerifyKey]:
        yield from self.by_kid.values()
        yield from self.without_kid


def _key_alg(key: object) -> str | None:
    """RS256 / ES256 for a usable public key, else None."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256" if key.key_size >= MIN_RSA_BITS else None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ES256" if isinstance(key.curve, ec.SECP256R1) else None
    return None


def _load_pem(kid: str, path: str) -> _VerifyKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"auth.public_key_files.{kid}: cannot read {path}: {exc.strerror}"
        ) from exc
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except ValueError as exc:
        hint = (
            " (that is a private key: configure the public key)" if b"PRIVATE KEY" in data else ""
        )
        raise ConfigError(
            f"auth.public_key_files.{kid}: {path} is not a PEM public key or certificate{hint}"
        ) from exc
    alg = _key_alg(key)
    if alg is None:
        raise ConfigError(
            f"auth.public_key_files.{kid}: {path}: only RSA >= {MIN_RSA_BITS} bits (RS256) "
            "and EC P-256 (ES256) public keys are supported"
        )
    assert isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey))
    return _VerifyKey(kid=kid, alg=alg, key=key, source=path)


def _load_jwks(path: str) -> list[_VerifyKey]:
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"auth.jwks_file: cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"auth.jwks_file: {path} is not JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ConfigError(f"auth.jwks_file: {path} has no 'keys' list")
    out: list[_VerifyKey] = []
    for i, jwk in enumerate(doc["keys"]):
        where = f"auth.jwks_file {path} key #{i}"
        if not isinstance(jwk, dict):
            raise ConfigError(f"{where}: not an object")
        if jwk.get("use", "sig") != "sig":
            continue  # encryption keys are not for us
        if jwk.get("kty") not in ("RSA", "EC"):
            # Symmetric ("oct") keys do not belong in a key set that is usually public.
            log.warning("jwks_key_skipped", file=path, index=i, kty=jwk.get("kty"))
            continue
        if "d" in jwk:
            raise ConfigError(f"{where}: contains a private key")
        try:
            parsed = jwt.PyJWK(jwk)
        except jwt.PyJWTError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        key = parsed.key
        alg = _key_alg(key)
        declared = jwk.get("alg")
        if alg is None or (declared is not None and declared != alg):
            log.warning("jwks_key_skipped", file=path, index=i, kty=jwk.get("kty"), alg=declared)
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ConfigError(f"{where}: kid must be a string")
        out.append(_VerifyKey(kid=kid, alg=alg, key=key, source=path))
    return out


def _load_hs_secret(cfg: AuthConfig) -> bytes | None:
    secret = cfg.hs256_secret()
    if not secret:
        return None
    if "-----BEGIN" in secret or secret.startswith(("ssh-", "ecdsa-")):
        raise ConfigError("auth.hs256_secret_file: looks like a public/private key, not a secret")
    raw = secret.encode()
    if len(raw) < MIN_HS_SECRET_BYTES:
        log.warning("hs256_secret_short", bytes=len(raw), recommended=MIN_HS_SECRET_BYTES)
    return raw


def load_keys(cfg: AuthConfig) -> _KeySet:
    """Read every configured key (blocking). Raises ConfigError on a bad key."""
    bad = [a for a in cfg.algorithms if a not in SUPPORTED_ALGORITHMS]
    if bad:
        raise ConfigError(f"auth.algorithms: unsupported {bad}")
    hs = _load_hs_secret(cfg) if "HS256" in cfg.algorithms else None
    keys: list[_VerifyKey] = [_load_pem(kid, p) for kid, p in cfg.public_key_files.items()]
    if cfg.jwks_file:
        keys.extend(_load_jwks(cfg.jwks_file))
    by_kid: dict[str, _VerifyKey] = {}
    without: list[_VerifyKey] = []
    for k in keys:
        if k.kid is None:
            without.append(k)
        elif k.kid in by_kid:
            raise ConfigError(f"auth: key id {k.kid!r} is configured twice")
        else:
            by_kid[k.kid] = k
    return _KeySet(hs_secret=hs, by_kid=by_kid, without_kid=tuple(without))


def _splitter(separator: str) -> re.Pattern[str] | None:
    """The pattern splitting on any character of ``separator`` (a space: any whitespace)."""
    chars = "".join(re.escape(c) for c in dict.fromkeys(separator) if not c.isspace())
    if any(c.isspace() for c in separator):
        chars += r"\s"
    return re.compile(f"[{chars}]+") if chars else None


def parse_groups(value: object, separator: str = "") -> tuple[str, ...]:
    """Groups from a claim: a list of strings, or one string that is one group unless
    ``separator`` (``auth.groups_claim_separator``) names the characters splitting it."""
    items: list[str]
    if value is None:
        return ()
    if isinstance(value, str):
        splitter = _splitter(separator)
        items = splitter.split(value) if splitter else [value]
    elif isinstance(value, (list, tuple)):
        items = [v for v in value if isinstance(v, str)]
    else:
        raise AuthError(401, "invalid_token", "groups claim must be a list or a string")
    seen: dict[str, None] = {}
    for item in items:
        item = item.strip()
        if item and len(item) <= 256:
            seen.setdefault(item, None)
    return tuple(seen)


class JwtAuthenticator:
    """Turns a bearer token into an :class:`Identity` or raises :class:`AuthError`."""

    def __init__(self, cfg: AuthConfig, redis: aioredis.Redis, keys: Keys) -> None:
        self.cfg = cfg
        self.redis = redis
        self.keys = keys
        self.accounts = AccountResolver(cfg)
        self._keyset = load_keys(cfg)
        self._log_keys()

    def _log_keys(self) -> None:
        ks = self._keyset
        log.info(
            "jwt_keys_loaded",
            algorithms=list(self.cfg.algorithms),
            hs256=ks.hs_secret is not None,
            kids=sorted(ks.by_kid),
            keys_without_kid=len(ks.without_kid),
        )

    def reload(self) -> None:
        """Re-read the keys (e.g. on SIGHUP); on error the old keys stay, ConfigError is raised."""
        self._keyset = load_keys(self.cfg)
        self.accounts.clear()
        self._log_keys()

    # -- verification ------------------------------------------------------------------

    def _select_key(self, header: dict[str, Any]) -> tuple[str, Any]:
        alg = header.get("alg")
        if (
            not isinstance(alg, str)
            or alg not in SUPPORTED_ALGORITHMS
            or (alg not in self.cfg.algorithms)
        ):
            raise AuthError(
                401, "invalid_token", f"token algorithm {str(alg)[:16]!r} is not allowed"
            )
        ks = self._keyset
        if alg == "HS256":
            if ks.hs_secret is None:
                raise AuthError(401, "invalid_token", "HS256 tokens are not accepted")
            return alg, ks.hs_secret
        kid = header.get("kid")
        if kid is not None:
            if not isinstance(kid, str):
                raise AuthError(401, "invalid_token", "kid must be a string")
            key = ks.by_kid.get(kid)
            if key is None:
                raise AuthError(401, "invalid_token", "unknown key id (kid)")
        else:
            candidates = [k for k in ks.all_keys() if k.alg == alg]
            if len(candidates) != 1:
                raise AuthError(401, "invalid_token", "token has no key id (kid)")
            key = candidates[0]
        if key.alg != alg or _key_alg(key.key) != alg:
            raise AuthError(401, "invalid_token", "token algorithm does not match its key")
        return alg, key.key

    def decode(self, token: str) -> dict[str, Any]:
        """Verify signature and registered claims; return the payload (no account checks)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
            raise AuthError(401, "invalid_token", "malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, RecursionError):  # older PyJWT lets "[[[[..." recurse out
            raise AuthError(401, "invalid_token", "malformed token") from None
        alg, key = self._select_key(header)
        cfg = self.cfg
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=cfg.audience or None,
                issuer=cfg.issuer or None,
                leeway=cfg.leeway_seconds,
                options={
                    "require": ["exp"],
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_iss": bool(cfg.issuer),
                    "verify_aud": bool(cfg.audience),
                },
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token_expired", "token has expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(401, "invalid_token", f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise AuthError(401, "invalid_token", "token audience is not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, "invalid_token", "token issuer is not accepted") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "invalid_token", "token is not valid yet") from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, "invalid_token", "token signature is invalid") from None
        except (jwt.PyJWTError, RecursionError):
            raise AuthError(401, "invalid_token", "token is invalid") from None
        max_life = cfg.max_token_lifetime_seconds
        if max_life > 0 and int(payload["exp"]) > time.time() + max_life + cfg.leeway_seconds:
            raise AuthError(
                401, "invalid_token", "token lifetime exceeds auth.max_token_lifetime_seconds"
            )
        return payload

    async def authenticate(self, token: str) -> Identity:
        """Verify ``token`` and return the caller's identity, or raise :class:`AuthError`."""
        payload = self.decode(token)
        cfg = self.cfg
        user = payload.get(cfg.username_claim)
        if not isinstance(user, str) or not user:
            raise AuthError(
                401, "invalid_token", f"token lacks the username claim {cfg.username_claim!r}"
            )
        groups = parse_groups(payload.get(cfg.groups_claim), cfg.groups_claim_separator)
        jti = payload.get("jti")
        if jti is not None and (not isinstance(jti, str) or not jti or len(jti) > 256):
            raise AuthError(401, "invalid_token", "jti must be a short string")
        if jti is None and cfg.require_jti:
            raise AuthError(401, "invalid_token", "token lacks the 'jti' claim")
        if jti is not None and await revocation.is_revoked(self.redis, self.keys, jti):
            raise AuthError(401, "token_revoked", "token has been revoked")
        account = await self.accounts.resolve(user)
        return Identity(
            user=account.name,
            groups=groups,
            uid=account.uid,
            gid=account.gid,
            home=account.home,
            jti=jti,
            exp=int(payload["exp"]),
            is_admin=any(g in cfg.admin_groups for g in groups),
            claims=payload,
        )

    async def revoke_jti(self, jti: str, exp: int | None = None) -> None:
        """Deny ``jti`` for as long as a token carrying it could be accepted.

        Without ``exp`` (admin revoking by id), the longest lifetime a token may have is used.
        """
        if exp is None:
            max_life = self.cfg.max_token_lifetime_seconds or 7 * 24 * 3600
            exp = int(time.time()) + max_life
        await revocation.revoke(
            self.redis,
            self.keys,
            jti,
            exp,
            margin_seconds=max(self.cfg.leeway_seconds, 0) + 5,
        )
