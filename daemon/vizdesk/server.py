"""`vizdesk serve`: logging, the app, and a clean shutdown on SIGTERM."""

from __future__ import annotations

import sys

import structlog

from .api.app import create_app, run_app
from .config import Config
from .core.userdirs import shared_dir_problem
from .logsetup import configure_logging


def unsafe_paths(cfg: Config) -> list[str]:
    """Configured places jobs would write into that other users can write too."""
    out = []
    for key, path in (
        ("sessions.output_dir", cfg.sessions.output_dir),
        ("jobs.output_dir", cfg.jobs.output_dir),
    ):
        problem = shared_dir_problem(path)
        if problem:
            out.append(f"{key}: {problem}")
    return out


def serve(cfg: Config) -> int:
    configure_logging(cfg.log.level, cfg.log.format)
    problems = unsafe_paths(cfg)
    if problems:
        for p in problems:
            structlog.get_logger("vizdesk").error("daemon.unsafe_config", problem=p)
            print(f"vizdesk: refusing to start: {p}", file=sys.stderr)
        return 2
    app = create_app(cfg)
    structlog.get_logger("vizdesk").info(
        "daemon.listen", host=cfg.server.host, port=cfg.server.port, config=cfg.path or None
    )
    run_app(app, cfg)
    return 0
