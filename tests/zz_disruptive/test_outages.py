"""slurmctld briefly unreachable: nothing ends, readiness says degraded, desktops work.

Runs last of the whole suite (its folder sorts last): it stops the real slurmctld and
Redis and starts them again with the test bed's own script.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.conftest import REPO, wait_for_state
from tests.e2e.test_session_lifecycle import create, open_desktop
from tests.helpers.rfb_client import WsStream, handshake

pytestmark = pytest.mark.e2e


def slurmctld_pids(testbed) -> list[int]:
    """The test bed's slurmctld (not another one, e.g. the container tier's, by name)."""
    pidfile = Path(testbed.env["SLURMCTLD_PIDFILE"])
    return [int(pidfile.read_text().split()[0])] if pidfile.is_file() else []


async def test_slurmctld_outage_keeps_sessions(http, daemon, testbed) -> None:
    sid = (await create(http, daemon))["id"]
    await wait_for_state(http, daemon, sid, {"READY"}, timeout=20)
    pids = slurmctld_pids(testbed)
    assert pids, "slurmctld is not running"
    # A controlled slurmctld stop (as in an upgrade or failover): it saves its state.
    subprocess.run(["kill", "-TERM", *map(str, pids)], check=True)
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            async with http.get(f"{daemon.url}/readyz") as r:
                status, body = r.status, await r.json()
            if status == 503:
                break
            await asyncio.sleep(0.5)
        assert status == 503 and body["status"] == "degraded" and body["slurm"] is False
        assert body["redis"] is True
        # Keep it down over several tracker ticks: the session must stay READY.
        await asyncio.sleep(3)
        async with http.get(
            f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers("alice")
        ) as r:
            assert (await r.json())["state"] == "READY"
        ws = await open_desktop(http, daemon, sid)
        init = await handshake(WsStream(ws))
        assert init.width > 0
        await ws.close()
    finally:
        subprocess.run(
            [str(REPO / "testbed" / "testbed.sh"), "up"], check=True, capture_output=True
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with http.get(f"{daemon.url}/readyz") as r:
            if r.status == 200:
                break
        await asyncio.sleep(0.5)
    else:
        pytest.fail("readiness did not come back after slurmctld restart")
    state = await wait_for_state(http, daemon, sid, {"READY", "ENDED", "FAILED"}, timeout=10)
    assert state["state"] == "READY", state
    async with http.delete(
        f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers("alice")
    ) as r:
        assert r.status == 202
    await wait_for_state(http, daemon, sid, {"ENDED"}, timeout=15)


async def test_redis_restart_keeps_desktops(http, daemon, testbed) -> None:
    """Redis restarts with its data (RDB): ACL users are restored, the desktop stays READY."""
    sid = (await create(http, daemon))["id"]
    await wait_for_state(http, daemon, sid, {"READY"}, timeout=20)
    password = testbed.redis_password
    subprocess.run(
        ["redis-cli", "-p", testbed.env["REDIS_PORT"], "-a", password, "--no-auth-warning",
         "SHUTDOWN", "SAVE"], capture_output=True
    )
    subprocess.run([str(REPO / "testbed" / "testbed.sh"), "up"], check=True, capture_output=True)
    # Longer than the registration TTL: without restored ACL users the heartbeat would fail
    # and the session would leave READY.
    await asyncio.sleep(daemon.cfg.sessions.registration_ttl_seconds + 5)
    state = await wait_for_state(http, daemon, sid, {"READY", "STOPPING", "ENDED", "FAILED"})
    assert state["state"] == "READY", state
    fresh = aioredis.Redis.from_url(
        testbed.env["REDIS_URL"], password=password, decode_responses=True
    )  # the old connections died
    try:
        assert f"vizdesk-s-{sid}" in await fresh.execute_command("ACL", "USERS")
    finally:
        await fresh.aclose()
    ws = await open_desktop(http, daemon, sid)
    assert (await handshake(WsStream(ws))).width > 0
    await ws.close()
    assert '"tracker.redis_restarted"' in daemon.log_text()
    async with http.delete(
        f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers("alice")
    ) as r:
        assert r.status == 202
    await wait_for_state(http, daemon, sid, {"ENDED"}, timeout=15)
