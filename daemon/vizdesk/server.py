"""`vizdesk serve`: logging, the app, and a clean shutdown on SIGTERM."""

from __future__ import annotations

import structlog

from .api.app import create_app, run_app
from .config import Config
from .logsetup import configure_logging


def serve(cfg: Config) -> int:
    configure_logging(cfg.log.level, cfg.log.format)
    app = create_app(cfg)
    structlog.get_logger("vizdesk").info(
        "daemon.listen", host=cfg.server.host, port=cfg.server.port, config=cfg.path or None
    )
    run_app(app, cfg)
    return 0
