"""Value types shared by the authenticator, the policy and the API: Identity, AuthError."""

from __future__ import annotations

from dataclasses import dataclass, field


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


class AuthError(Exception):
    """Authentication/authorisation failure, rendered as an HTTP error by the API.

    ``status`` is 401 (who are you?), 403 (not allowed) or 429 (slow down).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
