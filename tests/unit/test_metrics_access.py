"""Who may read /metrics: ``metrics.listen``, ``metrics.token_file``, ``metrics.allow``
(issue 17, item 6). The listener itself is tested against the running daemon in
tests/security/test_registration_abuse.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from vizdesk.api.app import create_app
from vizdesk.api.audit import trusted_networks
from vizdesk.api.health import MetricsAccess, metrics_app
from vizdesk.config import Config, ConfigError, MetricsConfig, load_config
from vizdesk.metrics import Metrics
from vizdesk.slurm.base import SlurmBackend


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("metrics: {listen: '9100'}", "metrics.listen"),
        ("metrics: {listen: 'host:'}", "metrics.listen"),
        ("metrics: {listen: ':9100'}", "metrics.listen"),
        ("metrics: {listen: 'h:99999'}", "metrics.listen"),
        ("metrics: {listen: 'h:\uff19\uff11'}", "metrics.listen"),  # fullwidth digits
        ("metrics: {listen: '127.0.0.1:8080'}", "must differ"),
        ("metrics: {allow: [not-a-net]}", "metrics.allow"),
        ("metrics: {lisen: 'x'}", "metrics: unknown key"),
    ],
)
def test_bad_metrics_config_is_refused(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert needle in str(err.value)


def test_listen_addresses() -> None:
    assert MetricsConfig().listen_address() is None
    assert MetricsConfig(listen="127.0.0.1:9100").listen_address() == ("127.0.0.1", 9100)
    assert MetricsConfig(listen="[::1]:9100").listen_address() == ("::1", 9100)
    assert MetricsConfig(listen="0.0.0.0:9100").listen_address() == ("0.0.0.0", 9100)


def test_token_file(tmp_path: Path) -> None:
    assert MetricsConfig().token() is None
    (tmp_path / "t").write_text("s3cret\n")
    assert MetricsConfig(token_file=str(tmp_path / "t")).token() == "s3cret"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        MetricsConfig(token_file=str(tmp_path / "empty")).token()
    with pytest.raises(ConfigError, match=r"metrics\.token_file"):
        MetricsConfig(token_file=str(tmp_path / "missing")).token()


async def scrape(access: MetricsAccess, headers: dict[str, str] | None = None, **kw: Any) -> int:
    context: Any = SimpleNamespace(metrics=Metrics())
    app = metrics_app(context, access, trusted_networks(kw.get("trusted", [])))
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/metrics", headers=headers or {})
        if r.status == 200:
            assert "vnc_sessions_created_total" in await r.text()
            assert r.headers["Cache-Control"] == "no-store"
        return r.status


async def test_open_by_default() -> None:
    assert await scrape(MetricsAccess()) == 200


async def test_token_is_required_when_configured() -> None:
    access = MetricsAccess(token="s3cret")
    assert await scrape(access) == 401
    assert await scrape(access, {"Authorization": "Bearer wrong"}) == 401
    assert await scrape(access, {"Authorization": "Basic s3cret"}) == 401
    assert await scrape(access, {"Authorization": "Bearer s3cret"}) == 200
    assert await scrape(access, {"Authorization": "bearer  s3cret "}) == 200


async def test_allow_list_of_client_addresses() -> None:
    assert await scrape(MetricsAccess(trusted_networks(["10.0.0.0/8"]))) == 403
    assert await scrape(MetricsAccess(trusted_networks(["127.0.0.0/8", "::1"]))) == 200
    # X-Forwarded-For counts only from a trusted proxy
    forged = {"X-Forwarded-For": "10.1.2.3"}
    assert await scrape(MetricsAccess(trusted_networks(["10.0.0.0/8"])), forged) == 403
    access = MetricsAccess(trusted_networks(["10.0.0.0/8"]))
    assert await scrape(access, forged, trusted=["127.0.0.1"]) == 200
    both = MetricsAccess(trusted_networks(["127.0.0.1"]), "t")
    assert await scrape(both) == 401
    assert await scrape(both, {"Authorization": "Bearer t"}) == 200


class NoSlurm(SlurmBackend):
    name = "none"

    async def submit(self, req):  # type: ignore[no-untyped-def]
        raise AssertionError

    async def info_many(self, job_ids):  # type: ignore[no-untyped-def]
        return {}

    async def cancel(self, job_id, user):  # type: ignore[no-untyped-def]
        return None


def paths(cfg: Config) -> set[str]:
    app = create_app(cfg, backend=NoSlurm(), redis=aioredis.Redis(), run_tracker=False)
    return {str(r.resource.get_info().get("path")) for r in app.router.routes() if r.resource}


def test_main_port_serves_metrics_only_without_a_listener(monkeypatch) -> None:
    monkeypatch.setenv("VIZDESK_JWT_SECRET", "x" * 40)
    assert "/metrics" in paths(Config())
    separate = Config(metrics=MetricsConfig(listen="127.0.0.1:9100"))
    assert "/metrics" not in paths(separate) and "/healthz" in paths(separate)
