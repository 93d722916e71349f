"""The daemon on Slurm 25.11 through the pyslurm backend (``slurm.backend: auto``).

A desktop session READY through the proxy, batch jobs (exit codes, cancel), the tracker
(one ``Jobs.load`` per tick), admin scancel, and a slurmctld outage: the same behaviour the
22.05 test bed checks through the CLI backend, here on the 25.11 instance of
testbed/slurm2511.sh. Ordered: the outage test runs last (it stops slurmctld).
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from tests.conftest import wait_for_state
from tests.e2e.test_batch_jobs import FINAL, submit, wait_job
from tests.e2e.test_session_lifecycle import create, open_desktop
from tests.helpers.rfb_client import WsStream, full_framebuffer, handshake

pytestmark = pytest.mark.e2e


async def readyz(http, d) -> tuple[int, dict]:
    async with http.get(f"{d.url}/readyz") as r:
        return r.status, await r.json()


async def test_auto_chose_pyslurm(http, daemon2511) -> None:
    status, body = await readyz(http, daemon2511)
    assert (status, body["slurm_backend"], body["slurm"]) == (200, "pyslurm", True), body


async def test_desktop_session_ready_through_the_proxy(
    http, daemon2511, slurm2511, redis_admin
) -> None:
    d = daemon2511
    created = await create(http, d)
    sid = created["id"]
    try:
        ready = await wait_for_state(http, d, sid, {"READY", "FAILED", "ENDED"}, timeout=30)
        assert ready["state"] == "READY", ready
        assert ready["node"] == slurm2511.node
        # Slurm 25.11 ran it as alice, in the 25.11 partition.
        line = slurm2511.run("squeue", "-h", "-j", ready["job_id"], "-o", "%u %P %T")
        assert line.split() == ["alice", slurm2511.partition, "RUNNING"], line
        reg = json.loads(await redis_admin.get(f"{d.prefix}reg:{sid}"))
        assert reg["session_id"] == sid
        ws = await open_desktop(http, d, sid)
        stream = WsStream(ws)
        init = await handshake(stream)
        assert (init.width, init.height) == (1024, 768)
        covered, _ = await full_framebuffer(stream, init)
        assert covered >= init.width * init.height
        await ws.close()
    finally:
        async with http.delete(f"{d.url}/api/v1/sessions/{sid}", headers=d.headers("alice")):
            pass
    ended = await wait_for_state(http, d, sid, {"ENDED", "FAILED"}, timeout=15)
    assert ended["state"] == "ENDED" and ended["reason"] == "stopped by user", ended


async def test_batch_jobs_exit_codes_and_cancel(http, daemon2511, slurm2511) -> None:
    d = daemon2511
    part = slurm2511.partition
    ok = await submit(http, d, {"template": "hello", "partition": part,
                                "parameters": {"message": "hi 25.11", "count": 2}})
    bad = await submit(http, d, {"template": "hello", "partition": part,
                                 "parameters": {"message": "bye", "exit_code": 3}})
    long = await submit(http, d, {"template": "python-script", "partition": part,
                                  "parameters": {"sleep_seconds": 300}})
    done = await wait_job(http, d, ok["id"], FINAL)
    assert (done["state"], done["exit_code"], done["node"]) == ("COMPLETED", 0, slurm2511.node)
    assert done["started_at"] and done["ended_at"]
    failed = await wait_job(http, d, bad["id"], FINAL)
    assert (failed["state"], failed["exit_code"]) == ("FAILED", 3), failed
    assert "exit code 3" in failed["reason"]
    await wait_job(http, d, long["id"], {"RUNNING"})
    async with http.delete(f"{d.url}/api/v1/jobs/{long['id']}", headers=d.headers("alice")) as r:
        assert r.status in (200, 202), await r.text()
    cancelled = await wait_job(http, d, long["id"], FINAL, timeout=30)
    assert cancelled["state"] == "CANCELLED", cancelled
    # bob cannot cancel alice's job (the pyslurm backend checks the owner itself).
    async with http.delete(f"{d.url}/api/v1/jobs/{ok['id']}", headers=d.headers("bob")) as r:
        assert r.status == 404


async def info_many_calls(http, d) -> int:
    async with http.get(f"{d.url}/metrics") as r:
        text = await r.text()
    m = re.search(r'^vizdesk_slurm_call_seconds_count\{op="info_many"\} (\S+)$', text, re.M)
    return int(float(m.group(1))) if m else 0


async def test_tracker_one_load_per_tick(http, daemon2511, slurm2511) -> None:
    """The tracker's tick is one pyslurm call whatever the number of sessions and jobs."""
    d = daemon2511
    jobs = [await submit(http, d, {"template": "python-script", "partition": slurm2511.partition,
                                   "parameters": {"sleep_seconds": 1}}) for _ in range(3)]
    for j in jobs:
        done = await wait_job(http, d, j["id"], FINAL)
        assert done["state"] == "COMPLETED", done
    t0, n0 = time.monotonic(), await info_many_calls(http, d)
    await asyncio.sleep(5)
    n1, t1 = await info_many_calls(http, d), time.monotonic()
    ticks = (t1 - t0) / d.cfg.slurm.poll_interval_seconds
    # One call per tick (plus at most a poke or two), not one per job.
    assert 0 < n1 - n0 <= ticks + 3, (n1 - n0, ticks)


async def test_admin_scancel_is_seen(http, daemon2511, slurm2511) -> None:
    d = daemon2511
    sid = (await create(http, d))["id"]
    ready = await wait_for_state(http, d, sid, {"READY", "FAILED", "ENDED"}, timeout=30)
    assert ready["state"] == "READY", ready
    slurm2511.run("scancel", ready["job_id"])  # the admin, outside vizdesk
    ended = await wait_for_state(http, d, sid, {"ENDED", "FAILED"}, timeout=15)
    assert ended["state"] == "ENDED", ended
    job = await submit(http, d, {"template": "python-script", "partition": slurm2511.partition,
                                 "parameters": {"sleep_seconds": 300}})
    running = await wait_job(http, d, job["id"], {"RUNNING"})
    slurm2511.run("scancel", running["job_id"])
    gone = await wait_job(http, d, job["id"], FINAL, timeout=15)
    assert gone["state"] == "CANCELLED", gone


async def test_zz_slurmctld_outage_keeps_sessions(http, daemon2511, slurm2511) -> None:
    d = daemon2511
    sid = (await create(http, d))["id"]
    ready = await wait_for_state(http, d, sid, {"READY", "FAILED", "ENDED"}, timeout=30)
    assert ready["state"] == "READY", ready
    slurm2511.stop_slurmctld()
    try:
        deadline = time.monotonic() + 60
        status, body = 0, {}
        while time.monotonic() < deadline:
            status, body = await readyz(http, d)
            if status == 503:
                break
            await asyncio.sleep(0.5)
        assert status == 503 and body["status"] == "degraded" and body["slurm"] is False, body
        assert body["redis"] is True
        await asyncio.sleep(3)  # several ticks with slurmctld down
        st = await get_session(http, d, sid)
        assert st["state"] == "READY", st
        ws = await open_desktop(http, d, sid)
        assert (await handshake(WsStream(ws))).width > 0
        await ws.close()
    finally:
        slurm2511.up()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (await readyz(http, d))[0] == 200:
            break
        await asyncio.sleep(0.5)
    else:
        pytest.fail("readiness did not come back after slurmctld restart")
    st = await wait_for_state(http, d, sid, {"READY", "ENDED", "FAILED"}, timeout=10)
    assert st["state"] == "READY", st
    async with http.delete(f"{d.url}/api/v1/sessions/{sid}", headers=d.headers("alice")) as r:
        assert r.status == 202
    await wait_for_state(http, d, sid, {"ENDED"}, timeout=15)


async def get_session(http, d, sid: str) -> dict:
    async with http.get(f"{d.url}/api/v1/sessions/{sid}", headers=d.headers("alice")) as r:
        return await r.json()
