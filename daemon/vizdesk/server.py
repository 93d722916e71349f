"""`vizdesk serve`: logging, the app, and a clean shutdown on SIGTERM."""

from __future__ import annotations

import structlog
from aiohttp import web

from .api.app import create_app
from .config import Config
from .logsetup import configure_logging


def serve(cfg: Config) -> int:
    configure_logging(cfg.log.level, cfg.log.format)
    app = create_app(cfg)
    structlog.get_logger("vizdesk").info(
        "daemon.listen", host=cfg.server.host, port=cfg.server.port, config=cfg.path or None
    )
    web.run_app(
        app,
        host=cfg.server.host,
        port=cfg.server.port,
        print=None,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=5.0,
        max_line_size=cfg.server.max_header_bytes,
        max_field_size=cfg.server.max_header_bytes,
    )
    return 0
