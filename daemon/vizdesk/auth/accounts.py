"""Identity → local POSIX account: the account a token names must exist and be allowed.

A user is allowed when the name is a well-formed POSIX user name, the account exists
(``pwd``, i.e. NSS: files, LDAP, SSSD), its uid is at least ``auth.min_uid`` and never 0,
its primary gid is not 0, and neither the name nor the uid is denied (``auth.denied_users``
and the account the daemon itself runs as). Anything else is ``403 account_denied``.

NSS lookups can block (LDAP), so they run in a worker thread and are cached briefly
(positive and negative results separately).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import time
from dataclasses import dataclass

from ..config import AuthConfig
from .types import AuthError

# Portable user names (POSIX portable filename characters, no leading '-' or '.'); upper
# case is allowed for directory-backed sites, the passwd lookup must match exactly anyway.
USERNAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


@dataclass(frozen=True)
class PosixAccount:
    """The local account a caller maps to."""

    name: str
    uid: int
    gid: int
    home: str


def _own_account() -> tuple[int, str | None]:
    uid = os.geteuid()
    try:
        return uid, pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid, None


def valid_username(name: object) -> bool:
    """True for a well-formed POSIX user name (at most 32 characters)."""
    return isinstance(name, str) and USERNAME_RE.fullmatch(name) is not None


def check_account(cfg: AuthConfig, user: str) -> PosixAccount:
    """Blocking lookup and check of ``user``; raises ``AuthError(403, "account_denied")``."""
    if not valid_username(user):
        raise AuthError(403, "account_denied", "user name is not a valid local account name")
    own_uid, own_name = _own_account()
    if user in cfg.denied_users or user == own_name:
        raise AuthError(403, "account_denied", f"account {user!r} may not use vizdesk")
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise AuthError(403, "account_denied", f"no local account {user!r}") from None
    if pw.pw_name != user:  # NSS backends may match case-insensitively
        raise AuthError(403, "account_denied", f"no local account {user!r}")
    if pw.pw_uid == 0 or pw.pw_gid == 0 or pw.pw_uid == own_uid:
        raise AuthError(403, "account_denied", f"account {user!r} may not use vizdesk")
    if pw.pw_uid < cfg.min_uid:
        raise AuthError(
            403, "account_denied", f"account {user!r} has a uid below auth.min_uid ({cfg.min_uid})"
        )
    return PosixAccount(name=pw.pw_name, uid=pw.pw_uid, gid=pw.pw_gid, home=pw.pw_dir)


class AccountResolver:
    """Async, cached front of :func:`check_account` (lookups in a worker thread)."""

    def __init__(
        self, cfg: AuthConfig, *, ttl_seconds: float = 60.0, negative_ttl_seconds: float = 5.0
    ) -> None:
        self.cfg = cfg
        self.ttl = ttl_seconds
        self.negative_ttl = negative_ttl_seconds
        self._cache: dict[str, tuple[float, PosixAccount | AuthError]] = {}
        self._max_entries = 10000

    def clear(self) -> None:
        self._cache.clear()

    async def resolve(self, user: str) -> PosixAccount:
        """The account of ``user``, or ``AuthError(403, "account_denied")``."""
        if not valid_username(user):  # never cache (or look up) garbage
            raise AuthError(403, "account_denied", "user name is not a valid local account name")
        now = time.monotonic()
        hit = self._cache.get(user)
        if hit is not None and hit[0] > now:
            result = hit[1]
        else:
            try:
                result = await asyncio.to_thread(check_account, self.cfg, user)
                expires = now + self.ttl
            except AuthError as exc:
                result = exc
                expires = now + self.negative_ttl
            if len(self._cache) >= self._max_entries:
                self._cache.clear()
            self._cache[user] = (expires, result)
        if isinstance(result, AuthError):
            raise AuthError(result.status, result.code, result.message)
        return result
