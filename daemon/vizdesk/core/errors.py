"""The root of every error a caller may see: one class, one rendering.

Every error that the API turns into a response derives from :class:`VizdeskError`
(validation, authentication and policy, spawn and submit failures, plain API errors), so
the middleware catches exactly one class and renders ``{"error": {code, message,
field?}}`` with ``status`` and ``headers``. Errors that never reach a caller as such
(Slurm, Redis, registration checks) are not part of this tree.
"""

from __future__ import annotations

from typing import Any


class VizdeskError(Exception):
    """An error with an HTTP status, a stable code and a message for people.

    Contract for subclasses: set ``status`` (HTTP status), ``code`` (stable, machine
    readable), ``message`` (for people, never a secret), ``field`` (the offending request
    field, or None), ``headers`` (extra response headers), ``retry_after`` (seconds,
    sent as ``Retry-After``) and ``details`` (optional JSON the caller can act on, e.g. a
    per-slot file report; sent as ``error.details``).
    """

    details: dict[str, Any] | None = None

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)} if retry_after else {}
        self.headers.update(headers or self.more_headers())

    def more_headers(self) -> dict[str, str]:
        """Headers a subclass adds when the raiser gives none (default: none)."""
        return {}
