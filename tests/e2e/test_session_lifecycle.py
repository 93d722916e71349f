"""A real desktop session end to end: API → Slurm → Xvnc → registration → proxy → stop.

The lifecycle tests run once per VNC server: TigerVNC's Xvnc (Debian's package) and
TurboVNC 3.3's ``vncserver -fg`` (built from source by ``testbed/vgl.sh``), each with a
daemon of its own whose ``node.vnc_flavor`` forces the flavour.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from typing import Any

import aiohttp
import psutil
import pytest

from tests.conftest import Daemon, cleanup_jobs, start_daemon, stop_daemon, wait_for_state
from tests.helpers.rfb_client import (
    RfbAuthFailed,
    TcpStream,
    WsStream,
    connect_ws,
    full_framebuffer,
    handshake,
)
from tests.helpers.vglbed import require_vgl_bed

pytestmark = pytest.mark.e2e

FLAVORS = ("tigervnc", "turbovnc")


@pytest.fixture(scope="module", params=FLAVORS)
def flavor_daemon(request: pytest.FixtureRequest, testbed: Any) -> Any:
    """A daemon whose desktops run on TigerVNC or on TurboVNC (built by testbed/vgl.sh)."""
    flavor: str = request.param
    node: dict[str, Any] = {"vnc_flavor": flavor}
    if flavor == "turbovnc":
        node["turbovnc_vncserver"] = require_vgl_bed()["TURBOVNC_PREFIX"] + "/bin/vncserver"
    d = start_daemon(testbed, f"e2e-{flavor}", {"node": node})
    d.flavor = flavor  # type: ignore[attr-defined]
    yield d
    stop_daemon(d)
    cleanup_jobs(d.prefix)


def vnc_exe(pid: int) -> str:
    return psutil.Process(pid).exe()


def squeue_job(job_id: str) -> dict[str, Any] | None:
    out = subprocess.run(["squeue", "--json"], capture_output=True, text=True, check=True).stdout
    for job in json.loads(out).get("jobs", []):
        if str(job.get("job_id")) == str(job_id):
            return job  # type: ignore[no-any-return]
    return None


def job_state(job: dict[str, Any]) -> str:
    st = job.get("job_state")
    return st[0] if isinstance(st, list) else str(st)


def session_processes(sid: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if (
                p.environ().get("VIZDESK_SESSION_ID") == sid
                or p.environ().get("VIZDESK_SESSION_TAG") == sid
            ):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


async def create(
    http: aiohttp.ClientSession, daemon: Daemon, user: str = "alice", **body: Any
) -> dict[str, Any]:
    async with http.post(
        f"{daemon.url}/api/v1/sessions",
        json=body or {"geometry": "1024x768"},
        headers=daemon.headers(user),
    ) as r:
        data = await r.json()
        assert r.status == 201, data
        return data  # type: ignore[no-any-return]


async def open_desktop(
    http: aiohttp.ClientSession, daemon: Daemon, sid: str, user: str = "alice"
) -> aiohttp.ClientWebSocketResponse:
    async with http.post(
        f"{daemon.url}/api/v1/sessions/{sid}/connect", headers=daemon.headers(user)
    ) as r:
        ticket = await r.json()
        assert r.status == 200, ticket
    return await connect_ws(http, daemon.url + ticket["ws_path"])


async def test_desktop_session_end_to_end(http, flavor_daemon, redis_admin, testbed) -> None:
    daemon = flavor_daemon
    t0 = time.monotonic()
    created = await create(http, daemon)
    sid = created["id"]
    assert created["state"] in ("PENDING", "STARTING", "READY")
    assert created["user"] == "alice" and created["job_id"]
    assert "password" not in json.dumps(created)

    ready = await wait_for_state(http, daemon, sid, {"READY", "FAILED", "ENDED"}, timeout=15)
    assert ready["state"] == "READY", ready
    ready_after = time.monotonic() - t0
    assert ready["node"] == testbed.node
    assert ready["ready_at"] and ready["started_at"]

    # The job runs as alice, not root.
    job = squeue_job(ready["job_id"])
    assert job is not None and job.get("user_name") == "alice", job
    procs = session_processes(sid)
    assert procs, "no process carries the session tag"
    assert {p.username() for p in procs} == {"alice"}

    # Registration: written by the job through its own ACL user, port in range.
    reg = json.loads(await redis_admin.get(f"{daemon.prefix}reg:{sid}"))
    assert reg["session_id"] == sid and 5901 <= reg["port"] <= 5999
    assert await redis_admin.ttl(f"{daemon.prefix}reg:{sid}") > 0
    # The server is the flavour asked for: TurboVNC's Xvnc from its prefix, or TigerVNC's.
    assert reg["vnc"] == daemon.flavor
    exe = vnc_exe(reg["vnc_pid"])
    if daemon.flavor == "turbovnc":
        assert exe.startswith(require_vgl_bed()["TURBOVNC_PREFIX"] + "/bin/Xvnc"), exe
    else:
        assert "turbovnc" not in exe, exe

    # Through the proxy: security None offered to the client, full framebuffer comes back.
    ws = await open_desktop(http, daemon, sid)
    stream = WsStream(ws)
    init = await handshake(stream)
    assert init.security_types == [1]
    assert (init.width, init.height) == (1024, 768)
    covered, pixels = await full_framebuffer(stream, init)
    assert covered >= init.width * init.height
    # The desktop paints itself within seconds of READY: a later full frame is not uniform.
    deadline = time.monotonic() + 20
    while len(set(pixels)) <= 1 and time.monotonic() < deadline:
        await asyncio.sleep(1)
        covered, pixels = await full_framebuffer(stream, init, set_encodings=False)
    assert len(set(pixels)) > 1, "the desktop never drew anything"
    await ws.close()

    # Direct TCP to the VNC port: works with the password, fails without it.
    reader, writer = await asyncio.open_connection(testbed.node, reg["port"])
    direct = await handshake(TcpStream(reader, writer), password=reg["password"])
    assert direct.width == 1024
    # ExtendedMouseButtons (-316): TurboVNC confirms it when asked directly, and then
    # takes 7-byte PointerEvents the proxy's 6-byte parser would cut; through the proxy it
    # is never offered (the filter removes it from SetEncodings).
    direct_confirmed: set[int] = set()
    await full_framebuffer(
        TcpStream(reader, writer), direct, pseudo=(-316,), confirmed=direct_confirmed
    )
    assert (-316 in direct_confirmed) == (daemon.flavor == "turbovnc"), direct_confirmed
    writer.close()
    ws = await open_desktop(http, daemon, sid)
    stream = WsStream(ws)
    proxied: set[int] = set()
    await full_framebuffer(stream, await handshake(stream), pseudo=(-316,), confirmed=proxied)
    assert proxied == set(), proxied
    await ws.close()
    reader, writer = await asyncio.open_connection(testbed.node, reg["port"])
    with pytest.raises(RfbAuthFailed):
        await handshake(TcpStream(reader, writer), password=None)
    writer.close()

    # Stop: job, processes, registration, ACL user all gone within 10 s; state ENDED.
    t_stop = time.monotonic()
    async with http.delete(
        f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers("alice")
    ) as r:
        assert r.status == 202
        assert (await r.json())["state"] in ("STOPPING", "ENDED")
    ended = await wait_for_state(http, daemon, sid, {"ENDED", "FAILED"}, timeout=10)
    assert ended["state"] == "ENDED" and ended["reason"] == "stopped by user"
    deadline = time.monotonic() + 10 - (time.monotonic() - t_stop)
    while time.monotonic() < deadline:
        job = squeue_job(ready["job_id"])
        gone = job is None or job_state(job) in ("CANCELLED", "COMPLETED")
        if gone and not session_processes(sid):
            break
        await asyncio.sleep(0.2)
    assert job is None or job_state(job) in ("CANCELLED", "COMPLETED"), job
    assert not session_processes(sid)
    assert await redis_admin.get(f"{daemon.prefix}reg:{sid}") is None
    users = await redis_admin.execute_command("ACL", "USERS")
    assert f"vizdesk-s-{sid}" not in users
    print(
        f"\n{daemon.flavor}: READY after {ready_after:.2f}s; "
        f"stopped in {time.monotonic() - t_stop:.2f}s"
    )


async def test_users_cannot_see_each_others_sessions(http, flavor_daemon) -> None:
    daemon = flavor_daemon
    a = (await create(http, daemon, "alice"))["id"]
    b = (await create(http, daemon, "bob"))["id"]
    try:
        await wait_for_state(http, daemon, a, {"READY"}, "alice", timeout=20)
        await wait_for_state(http, daemon, b, {"READY"}, "bob", timeout=20)
        bob = daemon.headers("bob")
        base = f"{daemon.url}/api/v1/sessions/{a}"
        for method, url in (("GET", base), ("DELETE", base), ("POST", base + "/connect")):
            async with http.request(method, url, headers=bob) as r:
                assert r.status == 404, (method, url, await r.text())
                assert (await r.json())["error"]["code"] == "not_found"
        async with http.get(f"{daemon.url}/api/v1/sessions", headers=bob) as r:
            assert a not in {s["id"] for s in (await r.json())["sessions"]}
        # bob's own ticket does not open alice's desktop; no ticket does not either.
        async with http.post(f"{daemon.url}/api/v1/sessions/{b}/connect", headers=bob) as r:
            ticket = (await r.json())["ticket"]
        for q in (f"?ticket={ticket}", "", "?ticket=forged"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await connect_ws(http, f"{base}/vnc{q}")
            assert err.value.status in (403, 404)
        state = await wait_for_state(http, daemon, a, {"READY"}, "alice", timeout=5)
        assert state["state"] == "READY"
    finally:
        for sid, user in ((a, "alice"), (b, "bob")):
            async with http.delete(
                f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers(user)
            ):
                pass


async def test_admin_scancel_ends_session(http, flavor_daemon) -> None:
    daemon = flavor_daemon
    sid = (await create(http, daemon))["id"]
    ready = await wait_for_state(http, daemon, sid, {"READY"}, timeout=20)
    subprocess.run(["scancel", ready["job_id"]], check=True)
    ended = await wait_for_state(http, daemon, sid, {"ENDED", "FAILED"}, timeout=15)
    assert ended["state"] == "ENDED"
    assert "cancelled" in ended["reason"]


async def test_killed_wrapper_leaves_ready(http, flavor_daemon, redis_admin) -> None:
    daemon = flavor_daemon
    sid = (await create(http, daemon))["id"]
    await wait_for_state(http, daemon, sid, {"READY"}, timeout=20)
    reg = json.loads(await redis_admin.get(f"{daemon.prefix}reg:{sid}"))
    os.kill(reg["pid"], signal.SIGKILL)
    after = await wait_for_state(http, daemon, sid, {"ENDED", "FAILED", "STARTING"}, timeout=20)
    assert after["state"] != "READY"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and await redis_admin.exists(f"{daemon.prefix}reg:{sid}"):
        await asyncio.sleep(0.2)
    assert not await redis_admin.exists(f"{daemon.prefix}reg:{sid}")
    final = await wait_for_state(http, daemon, sid, {"ENDED", "FAILED"}, timeout=20)
    assert final["reason"]
    # The guardian ended the server (for TurboVNC: vncserver, its Xvnc and the xstartup).
    deadline = time.monotonic() + 15
    while session_processes(sid) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not session_processes(sid)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"colour": "blue"}, 400, "colour"),
        ({"cpus": -1}, 400, "cpus"),
        ({"cpus": "2"}, 400, "cpus"),
        ({"cpus": True}, 400, "cpus"),
        ({"geometry": "1920x1080;id"}, 400, "geometry"),
        ({"geometry": "$(id)x1"}, 400, "geometry"),
        ({"partition": "viz --uid=0"}, 400, "partition"),
        ({"partition": "nosuch"}, 400, "partition"),
        ({"image": "../../etc/passwd"}, 400, "image"),
        ({"time_limit_minutes": 0}, 400, "time_limit_minutes"),
        ([1, 2], 400, None),
    ],
)
async def test_bad_input_is_rejected_and_nothing_submitted(
    http, daemon, body, status, field
) -> None:
    before = await _alice_session_count(http, daemon)
    async with http.post(
        f"{daemon.url}/api/v1/sessions", json=body, headers=daemon.headers("alice")
    ) as r:
        assert r.status == status, await r.text()
        err = (await r.json())["error"]
        assert err["code"] and err["message"]
        assert err.get("field") == field
    assert await _alice_session_count(http, daemon) == before


async def test_non_json_and_huge_bodies(http, daemon) -> None:
    before = await _alice_session_count(http, daemon)
    hdr = {**daemon.headers("alice"), "Content-Type": "application/json"}
    async with http.post(f"{daemon.url}/api/v1/sessions", data=b"{not json", headers=hdr) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_json"
    big = b'{"geometry": "' + b"1" * (1024 * 1024) + b'"}'
    async with http.post(f"{daemon.url}/api/v1/sessions", data=big, headers=hdr) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "body_too_large"
    async with http.post(
        f"{daemon.url}/api/v1/sessions",
        data=b"cpus=1",
        headers={**daemon.headers("alice"), "Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        assert r.status == 415
        assert "error" in await r.json()
    assert await _alice_session_count(http, daemon) == before


async def test_requests_without_valid_token_get_401(http, daemon) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
        async with http.get(f"{daemon.url}/api/v1/sessions", headers=headers) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"]


async def _alice_session_count(http: aiohttp.ClientSession, daemon: Daemon) -> int:
    async with http.get(f"{daemon.url}/api/v1/sessions", headers=daemon.headers("alice")) as r:
        return len((await r.json())["sessions"])
