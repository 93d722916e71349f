"""The OpenAPI document describes exactly the routes the app serves."""

from __future__ import annotations

import re

import pytest
import redis.asyncio as aioredis

from vizdesk.api.app import create_app
from vizdesk.api.openapi import load_spec
from vizdesk.config import Config
from vizdesk.slurm.base import SlurmBackend


class NoSlurm(SlurmBackend):
    name = "none"

    async def submit(self, req):  # type: ignore[no-untyped-def]
        raise AssertionError

    async def info_many(self, job_ids):  # type: ignore[no-untyped-def]
        return {}

    async def cancel(self, job_id, user):  # type: ignore[no-untyped-def]
        return None


def app_routes(monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str]]:
    monkeypatch.setenv("VIZDESK_JWT_SECRET", "x" * 40)
    cfg = Config()
    app = create_app(cfg, backend=NoSlurm(), redis=aioredis.Redis(), run_tracker=False)
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path")
        if (
            not path
            or route.method in ("HEAD", "*")
            or not path.startswith(("/api", "/healthz", "/readyz", "/metrics"))
        ):
            continue
        routes.add((route.method.lower(), path))
    return routes


def spec_routes() -> set[tuple[str, str]]:
    spec = load_spec()
    out = set()
    for path, item in spec["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "delete", "patch", "options"):
                out.add((method, path))
    return out


def test_spec_matches_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    served, documented = app_routes(monkeypatch), spec_routes()
    assert served - documented == set(), "served but undocumented"
    assert documented - served == set(), "documented but not served"


def test_spec_is_openapi_3_and_errors_are_described() -> None:
    spec = load_spec()
    assert re.match(r"^3\.\d+\.\d+$", spec["openapi"])
    err = spec["components"]["schemas"]["Error"]
    assert err["properties"]["error"]["required"] == ["code", "message"]
