"""structlog configuration: JSON lines to stdout (journald-friendly) or console output.

Secrets are redacted by a processor before anything is rendered, whatever the caller
passed: keys that name a token, ticket, password or secret never reach a log line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEY_RE = re.compile(r"(token|ticket|password|passwd|secret|authorization|credential)", re.I)
# Query strings that carry a ticket or token: keep the name, drop the value.
SECRET_QUERY_RE = re.compile(r"((?:ticket|token|access_token|jwt)=)[^&\s\"']+", re.I)
BEARER_RE = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I)
REDACTED = "[redacted]"


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return BEARER_RE.sub(r"\1" + REDACTED, SECRET_QUERY_RE.sub(r"\1" + REDACTED, value))
    if isinstance(value, dict):
        return {
            k: REDACTED if SECRET_KEY_RE.search(str(k)) else redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secret-looking keys and secret query values."""
    return {
        k: (REDACTED if SECRET_KEY_RE.search(k) and k != "event" else redact_value(v))
        for k, v in event.items()
    }


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # aiohttp's own access log would print full URLs; vizdesk logs requests itself.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("aiohttp.access").disabled = True
