"""JSON error bodies (``{"error": {code, message, field?}}``), never a traceback or HTML."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..core.errors import VizdeskError


class ApiError(VizdeskError):
    """An error a handler raises itself (not found, conflict, forbidden...)."""


def error_body(
    code: str, message: str, field: str | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    if details is not None:
        err["details"] = details
    return {"error": err}


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(error_body(code, message, field, details)),
        content_type="application/json",
        headers=headers,
    )


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "headers_too_large",
}
