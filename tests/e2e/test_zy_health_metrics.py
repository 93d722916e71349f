"""Health, readiness, OpenAPI and the Prometheus metrics after real sessions have run.

Named to run after the lifecycle tests of the same daemon, so the counters have moved.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.e2e


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)}\s+([0-9.e+-]+)$"
    values = [float(m.group(1)) for m in re.finditer(pattern, text, re.M)]
    assert values, f"{name}{labels} not exported"
    return sum(values)


async def test_health_ready_openapi(http, daemon) -> None:
    async with http.get(f"{daemon.url}/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    async with http.get(f"{daemon.url}/readyz") as r:
        body = await r.json()
        assert r.status == 200 and body == {**body, "status": "ok", "redis": True, "slurm": True}
        assert body["slurm_backend"] == "slurm-cli" or body["slurm_backend"]
    async with http.get(f"{daemon.url}/api/v1/openapi.json") as r:
        spec = await r.json()
        assert "/api/v1/sessions" in spec["paths"]


async def test_metrics_after_sessions(http, daemon) -> None:
    async with http.get(f"{daemon.url}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    assert metric(text, "vnc_sessions_created_total") >= 1
    assert metric(text, "vnc_session_start_seconds_count") >= 1
    assert metric(text, "vizdesk_proxy_bytes_total", '{direction="down"}') > 0
    assert metric(text, "vizdesk_proxy_bytes_total", '{direction="up"}') > 0
    assert metric(text, "vizdesk_slurm_call_seconds_count", '{op="info_many"}') >= 1
    assert metric(text, "vizdesk_slurm_call_seconds_count", '{op="submit"}') >= 1
    assert "vnc_sessions_active{" in text
    assert "vizdesk_http_request_seconds_bucket{" in text
    assert "vizdesk_proxy_connections_open" in text
