"""What a job can do with its own registration key, and what /metrics shows (issue 17,
items 4-6), against the running daemon on the real test bed.

A desktop's job holds the Redis credentials of its registration key; a hostile one can
write anything there. As in test_api_attacks, the forged value is written with the
admin connection (the session's ACL user may write exactly that key and nothing else,
which test_api_attacks proves), over a real READY desktop whose wrapper keeps
heartbeating its genuine registration.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import Daemon, free_port, start_daemon, stop_daemon, wait_for_state

pytestmark = pytest.mark.e2e

USAGE_METRICS = (
    "vizdesk_session_cpu_percent",
    "vizdesk_session_memory_bytes",
    "vizdesk_session_gpu_utilization_percent",
    "vizdesk_session_gpu_memory_bytes",
)


def hashed(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()[:12]


def usage_series(text: str) -> list[str]:
    names = "|".join(USAGE_METRICS)
    return re.findall(rf"^(?:{names})\{{[^}}]*\}}", text, re.M)


def series_of(text: str, sid: str) -> list[str]:
    """The usage series of one session, whether labelled by its id or its hash."""
    return [
        s for s in usage_series(text) if f'session="{sid}"' in s or f'session="{hashed(sid)}"' in s
    ]


async def metrics_text(http: aiohttp.ClientSession, daemon: Daemon) -> str:
    async with http.get(f"{daemon.url}/metrics") as r:
        assert r.status == 200
        return await r.text()


async def ready_session(http: aiohttp.ClientSession, daemon: Daemon, user: str) -> str:
    async with http.post(
        f"{daemon.url}/api/v1/sessions",
        json={"geometry": "800x600"},
        headers=daemon.headers(user),
    ) as r:
        assert r.status == 201, await r.text()
        sid: str = (await r.json())["id"]
    await wait_for_state(http, daemon, sid, {"READY"}, user, timeout=30)
    return sid


async def end_session(http: aiohttp.ClientSession, daemon: Daemon, sid: str, user: str) -> None:
    async with http.delete(f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers(user)):
        pass
    await wait_for_state(http, daemon, sid, {"ENDED", "FAILED"}, user, timeout=20)


def reg_key(daemon: Daemon, sid: str) -> str:
    from vizdesk.contract.keys import Keys

    return Keys(daemon.prefix).registration(sid)


async def genuine_registration(redis_admin: Any, daemon: Daemon, sid: str) -> dict[str, Any]:
    raw = await redis_admin.get(reg_key(daemon, sid))
    assert raw, "the READY desktop has no registration"
    doc: dict[str, Any] = json.loads(raw)
    return doc


async def forge_until_final(
    http: aiohttp.ClientSession,
    daemon: Daemon,
    redis_admin: Any,
    sid: str,
    user: str,
    value: str,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """SET the forged value (again after each wrapper heartbeat) until the session ends;
    the session's final record (AssertionError if it stays alive)."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with http.get(
            f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers(user)
        ) as r:
            body = await r.json()
        if body.get("state") in {"FAILED", "ENDED"}:
            return body
        await redis_admin.set(reg_key(daemon, sid), value, ex=30)
        await asyncio.sleep(1.0)
    raise AssertionError(f"session {sid} still {body.get('state')} with a forged registration")


async def test_registration_with_500_gpus_fails_the_session_and_adds_no_series(
    http, daemon, redis_admin
) -> None:
    sid = await ready_session(http, daemon, "alice")
    try:
        before = usage_series(await metrics_text(http, daemon))
        doc = await genuine_registration(redis_admin, daemon, sid)
        doc["gpus"] = [{"index": 1000 + i, "utilization": 99, "memory_used": 1} for i in range(500)]
        final = await forge_until_final(http, daemon, redis_admin, sid, "alice", json.dumps(doc))
        assert final["state"] == "FAILED", final
        assert final["reason"].startswith("registration rejected: gpus has 500 entries")
        after = usage_series(await metrics_text(http, daemon))
        assert not [s for s in after if 'gpu="1' in s], "forged GPU indices reached /metrics"
        assert len(after) <= len(before)
        assert series_of("\n".join(after), sid) == []
    finally:
        await end_session(http, daemon, sid, "alice")


async def test_gpu_series_vanish_with_the_registration_and_the_session(
    http, daemon, redis_admin
) -> None:
    """Valid GPU entries reach /metrics, and leave it when the registration drops them
    and when the session ends (they used to stay forever)."""
    sid = await ready_session(http, daemon, "bob")
    try:
        doc = await genuine_registration(redis_admin, daemon, sid)
        two = {**doc, "gpus": [{"index": i, "utilization": 40, "memory_used": 1} for i in (0, 1)]}
        deadline = time.monotonic() + 15
        seen: list[str] = []
        while time.monotonic() < deadline and not seen:
            await redis_admin.set(reg_key(daemon, sid), json.dumps(two), ex=30)
            await asyncio.sleep(0.5)
            seen = [s for s in series_of(await metrics_text(http, daemon), sid) if "gpu=" in s]
        assert len(seen) == 4, seen  # utilisation and memory of GPUs 0 and 1
        none = {**doc, "gpus": []}
        deadline = time.monotonic() + 15
        left = seen
        while time.monotonic() < deadline and left:
            await redis_admin.set(reg_key(daemon, sid), json.dumps(none), ex=30)
            await asyncio.sleep(0.5)
            left = [s for s in series_of(await metrics_text(http, daemon), sid) if "gpu=" in s]
        assert left == [], f"series of GPUs no longer registered stay: {left}"
        assert series_of(await metrics_text(http, daemon), sid)  # cpu and memory still there
    finally:
        await end_session(http, daemon, sid, "bob")
    assert series_of(await metrics_text(http, daemon), sid) == []


async def test_oversized_registration_fails_the_session_unread(http, daemon, redis_admin) -> None:
    sid = await ready_session(http, daemon, "alice")
    try:
        doc = await genuine_registration(redis_admin, daemon, sid)
        # valid JSON, 900 KB (Redis itself refuses more than 1 MB: test below)
        value = json.dumps({**doc, "image": "x" * (900 << 10)})
        stop = asyncio.Event()

        async def probe() -> list[int]:
            statuses = []
            timeout = aiohttp.ClientTimeout(total=5)  # generous: ~5 ms when healthy
            while not stop.is_set():
                async with http.get(f"{daemon.url}/healthz", timeout=timeout) as r:
                    statuses.append(r.status)
                await asyncio.sleep(0.05)
            return statuses

        prober = asyncio.create_task(probe())
        try:
            final = await forge_until_final(http, daemon, redis_admin, sid, "alice", value)
        finally:
            stop.set()
            statuses = await prober
        assert final["state"] == "FAILED", final
        assert final["reason"] == (
            f"registration rejected: value of {len(value)} bytes exceeds 65536"
        )
        assert statuses and set(statuses) == {200}
        assert '"registration.rejected"' in daemon.log_text()
    finally:
        await end_session(http, daemon, sid, "alice")


async def test_metrics_name_no_user_and_no_session_id(http, daemon) -> None:
    sid = await ready_session(http, daemon, "alice")
    try:
        deadline = time.monotonic() + 10
        text = await metrics_text(http, daemon)
        while time.monotonic() < deadline and not series_of(text, sid):
            await asyncio.sleep(0.5)
            text = await metrics_text(http, daemon)
        assert series_of(text, sid), "the desktop's usage is not exported"
        assert sid not in text, "a session id is on /metrics"
        assert "alice" not in text and 'user="' not in text, "a user name is on /metrics"
        assert f'session="{hashed(sid)}"' in text
    finally:
        await end_session(http, daemon, sid, "alice")


async def test_metrics_listener_with_token_and_allow_list(http, testbed, tmp_path) -> None:
    token = "metrics-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()
    token_file = tmp_path / "metrics-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    d = start_daemon(
        testbed,
        "metrics",
        {
            "server": {"trusted_proxies": ["127.0.0.1"]},
            "metrics": {
                "listen": f"127.0.0.1:{port}",
                "token_file": str(token_file),
                "allow": ["127.0.0.0/8", "::1"],
            },
        },
    )
    try:
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 10
        while True:  # the listener starts with the app
            try:
                async with http.get(metrics_url) as r:
                    status = r.status
                break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline, "metrics listener not up"
                await asyncio.sleep(0.2)
        assert status == 401
        async with http.get(f"{d.url}/metrics") as r:
            assert r.status == 401  # not a route of the main port any more: needs a token
        async with http.get(f"{d.url}/metrics", headers=d.headers("alice")) as r:
            assert r.status == 404  # ... and there is none with one
        async with http.get(f"{d.url}/healthz") as r:
            assert r.status == 200
        good = {"Authorization": f"Bearer {token}"}
        async with http.get(metrics_url, headers=good) as r:
            assert r.status == 200
            assert "vnc_sessions_active" in await r.text()
        async with http.get(metrics_url, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        # through a trusted proxy, for a client outside metrics.allow
        async with http.get(metrics_url, headers={**good, "X-Forwarded-For": "192.0.2.7"}) as r:
            assert r.status == 403
        async with http.get(f"http://127.0.0.1:{port}/healthz", headers=good) as r:
            assert r.status == 404  # the listener serves /metrics only
    finally:
        stop_daemon(d)


async def test_redis_refuses_a_10_mb_value(testbed) -> None:
    """The test bed's Redis (like the Ansible one) caps a request's bulk strings at 1 MB."""
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError

    r = aioredis.Redis.from_url(testbed.env["REDIS_URL"], password=testbed.redis_password)
    try:
        with pytest.raises((ResponseError, RedisConnectionError)):
            await r.set("vzt-bulk-cap-probe", b"x" * (10 << 20), ex=10)
        assert await r.exists("vzt-bulk-cap-probe") == 0
    finally:
        await r.aclose(close_connection_pool=True)
