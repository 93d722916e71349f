"""Audit trail: one structured event per create/connect/delete/deny, never with secrets."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from typing import Any

import structlog
from aiohttp import web

from ..core.errors import VizdeskError

_log = structlog.get_logger("vizdesk.audit")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
TRUSTED_PROXIES: web.AppKey[tuple[IPNetwork, ...]] = web.AppKey("vizdesk_trusted_proxies")


def client_address(request: web.Request) -> str:
    """The client's address: the peer, or behind trusted reverse proxies the right-most
    X-Forwarded-For entry that is not itself a trusted proxy."""
    remote = request.remote or "?"
    trusted = request.app.get(TRUSTED_PROXIES, ())
    if not trusted or not _in(remote, trusted):
        return remote
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop if _is_ip(hop) else "?"
    return remote


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _in(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def trusted_networks(entries: list[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


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
        path=request.rel_url.raw_path,  # as sent, never the query string (tickets)
        **fields,
    )


@contextlib.contextmanager
def denied_on_error(request: web.Request, action: str) -> Iterator[None]:
    """Audit ``action`` as denied (with the error's code and field) when the block raises
    an error the caller sees; the error propagates."""
    try:
        yield
    except VizdeskError as exc:
        audit(request, action, "denied", reason=exc.code, field=exc.field)
        raise
