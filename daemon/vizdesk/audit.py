"""Audit trail: one structured event per create/connect/delete/deny, never with secrets."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

_log = structlog.get_logger("vizdesk.audit")


def client_address(request: web.Request) -> str:
    return request.remote or "?"


def audit(
    request: web.Request,
    action: str,
    outcome: str,
    *,
    user: str | None = None,
    session: str | None = None,
    **fields: Any,
) -> None:
    """Log an audit event. ``outcome`` is e.g. "ok", "denied", "invalid", "error"."""
    identity = request.get("identity")
    _log.info(
        "audit",
        action=action,
        outcome=outcome,
        user=user or (identity.user if identity is not None else None),
        session=session,
        source=client_address(request),
        method=request.method,
        path=request.path,  # never the query string: it may carry a ticket
        **fields,
    )
