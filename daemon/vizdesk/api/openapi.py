"""Serves the OpenAPI 3 document (daemon/vizdesk/openapi.yaml) as JSON."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


@functools.cache
def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return spec


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(load_spec())


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi)
