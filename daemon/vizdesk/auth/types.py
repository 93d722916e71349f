"""Value types shared by the authenticator, the policy and the API: Identity, AuthError."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import VizdeskError


@dataclass(frozen=True)
class Identity:
    """An authenticated caller, mapped to a local POSIX account."""

    user: str
    groups: tuple[str, ...] = ()
    uid: int = -1
    gid: int = -1
    home: str = ""
    jti: str | None = None
    exp: int | None = None
    is_admin: bool = False
    claims: dict[str, object] = field(default_factory=dict, compare=False, repr=False)


class AuthError(VizdeskError):
    """Authentication/authorisation failure, rendered as an HTTP error by the API.

    ``status`` is 401 (who are you?, with ``WWW-Authenticate``), 403 (not allowed) or 429
    (slow down, with ``Retry-After`` when ``retry_after`` is set).
    """

    def more_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer error="invalid_token"'} if self.status == 401 else {}
