"""A desktop session in the Apptainer image, end to end, on Slurm 26.05 in the sid root.

`vizdesk serve` runs inside the root (sid's Python 3.14, this checkout), submits
jobscripts/vnc.sbatch as alice; the job's `vizdesk node vnc` starts Xvnc and XFCE with
`apptainer exec` from containers/vnc.def (VNC=tigervnc); the test, outside the root,
opens the desktop through the daemon's websocket proxy and gets a full framebuffer.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import aiohttp
import pytest
import pytest_asyncio
import yaml

from tests.container.sid import OUTPUT, VNC_SIF, Sid, free_port, record_timing
from tests.helpers.rfb_client import WsStream, connect_ws, full_framebuffer, handshake
from vizdesk.auth.tokens import mint_token
from vizdesk.config import AuthConfig


@dataclass
class SidDaemon:
    url: str
    prefix: str
    secret: str
    config_path: str

    def headers(self, user: str, groups: list[str] | None = None) -> dict[str, str]:
        with mock.patch.dict("os.environ", {"VIZDESK_JWT_SECRET": self.secret}):
            token = mint_token(AuthConfig(), user, groups or [], 3600)
        return {"Authorization": f"Bearer {token}"}


def daemon_config(sid: Sid, port: int, prefix: str) -> dict[str, Any]:
    e = sid.env
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "log": {"format": "json", "level": "debug"},
        "redis": {
            "url": e["SID_REDIS_URL"],
            "password_file": e["SID_REDIS_PASSWORD_FILE"],
            "key_prefix": prefix,
        },
        "auth": {"hs256_secret_file": "/etc/vizdesk-sid/jwt_secret"},
        "slurm": {
            "backend": "cli",
            "submit_prefix": ["runuser", "-u", "{user}", "--"],
            "partitions": [e["SID_SLURM_PARTITION"]],
            "default_partition": e["SID_SLURM_PARTITION"],
            "poll_interval_seconds": 0.5,
        },
        "sessions": {"jobscript": "/repo/jobscripts/vnc.sbatch", "registration_ttl_seconds": 15},
        "node": {
            "vizdesk_command": "/opt/vizdesk-venv/bin/vizdesk",
            "desktop_command": ["startxfce4"],
            "port_min": int(e["SID_VNC_PORT_MIN"]),
            "port_max": int(e["SID_VNC_PORT_MIN"]) + 48,
        },
        "images": {"dirs": [e["SID_IMAGES_DIR"]]},
        "limits": {"create_per_window": 1000},
        "policy": {
            "groups": {
                "*": {"partitions": ["*"], "images": ["*"], "max_sessions": 3, "max_cpus": 2}
            }
        },
    }


def start_sid_daemon(sid: Sid, overrides: dict[str, Any] | None = None) -> Iterator[SidDaemon]:
    """`vizdesk serve` inside the root with the tier's config (plus ``overrides``)."""
    tag = secrets.token_hex(3)
    prefix = f"vzc-{tag}:"
    secret = secrets.token_hex(32)
    sid.write_file("/etc/vizdesk-sid/jwt_secret", secret, 0o600)
    port = free_port(int(sid.env["SID_DAEMON_PORT"]), int(sid.env["SID_DAEMON_PORT"]) + 15)
    config_path = f"/etc/vizdesk-sid/daemon-{tag}.yaml"
    cfg = daemon_config(sid, port, prefix)
    for section, values in (overrides or {}).items():
        cfg[section] = {**cfg.get(section, {}), **values}
    sid.write_file(config_path, yaml.safe_dump(cfg), 0o644)
    sid.run("/opt/vizdesk-venv/bin/vizdesk", "--config", config_path, "check-config")
    log = OUTPUT / f"container-daemon-{tag}.log"
    pidfile = f"/run/vizdesk-sid-daemon-{tag}.pid"  # the daemon is ours by this file
    proc = sid.popen(
        "sh", "-c", 'echo $$ > "$0"; exec "$@"', pidfile,
        "/opt/vizdesk-venv/bin/vizdesk", "--config", config_path, "serve",
        env={"PYTHONUNBUFFERED": "1"}, log=log,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vizdesk serve exited in the sid root:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        pytest.fail(f"vizdesk serve did not listen within 60 s:\n{log.read_text()[-3000:]}")
    yield SidDaemon(f"http://127.0.0.1:{port}", prefix, secret, config_path)
    sid.run("sh", "-c", 'kill -INT "$(cat "$0")"', pidfile, check=False)
    try:
        proc.wait(timeout=20)
    except Exception:
        sid.run("sh", "-c", 'kill -KILL "$(cat "$0")"', pidfile, check=False)
    sid.run("rm", "-f", config_path, pidfile, check=False)


@pytest.fixture(scope="module")
def sid_daemon(sid_venv: Sid) -> Iterator[SidDaemon]:
    yield from start_sid_daemon(sid_venv)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


async def wait_state(
    http: aiohttp.ClientSession, d: SidDaemon, sid: str, states: set[str], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with http.get(f"{d.url}/api/v1/sessions/{sid}", headers=d.headers("alice")) as r:
            body = await r.json()
        if body.get("state") in states:
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"session {sid} not in {states} after {timeout}s: {body}")


async def test_images_endpoint_lists_the_built_images(
    http: aiohttp.ClientSession, sid_daemon: SidDaemon
) -> None:
    async with http.get(
        f"{sid_daemon.url}/api/v1/images", headers=sid_daemon.headers("alice")
    ) as r:
        assert r.status == 200
        images = (await r.json())["images"]
    kinds = {i["name"]: (i["kind"], i["vnc"]) for i in images}
    assert kinds["desktop-tigervnc"] == ("viz", "tigervnc")
    assert kinds["compute-debian12"] == ("compute", "")
    assert all("path" not in i for i in images)  # users do not see paths
    # a path is never accepted as an image
    async with http.post(
        f"{sid_daemon.url}/api/v1/sessions",
        json={"image": VNC_SIF},
        headers=sid_daemon.headers("alice"),
    ) as r:
        assert r.status == 400, await r.text()


@pytest.fixture(params=["usable", "root-only", "missing"])
def fuse_mode(request: pytest.FixtureRequest, sid_venv: Sid) -> Iterator[str]:
    """The compute node's /dev/fuse as sites have it: usable by users, root-only, absent."""
    mode: str = request.param
    state = sid_venv.fuse(mode)
    assert state == {"usable": "666 root", "root-only": "600 root", "missing": "missing"}[mode]
    try:
        yield mode
    finally:
        sid_venv.fuse("host")


async def test_session_in_container_reaches_ready_and_streams_a_desktop(
    http: aiohttp.ClientSession, sid_daemon: SidDaemon, sid_venv: Sid, fuse_mode: str
) -> None:
    d, sid = sid_daemon, sid_venv
    async with http.get(f"{d.url}/api/v1/images", headers=d.headers("alice")) as r:
        vnc = next(i for i in (await r.json())["images"] if i["kind"] == "viz")
    t0 = time.monotonic()
    async with http.post(
        f"{d.url}/api/v1/sessions",
        json={"image": vnc["id"], "geometry": "1024x768"},
        headers=d.headers("alice"),
    ) as r:
        created = await r.json()
        assert r.status == 201, created
    session_id = created["id"]
    try:
        ready = await wait_state(http, d, session_id, {"READY", "FAILED", "ENDED"}, timeout=90)
        assert ready["state"] == "READY", ready
        record_timing(
            "container session POST to READY (sid root, Slurm 26.05)", time.monotonic() - t0
        )
        assert ready["node"] == sid.env["SID_SLURM_NODE"]

        procs = sid.processes("alice")
        cmds = [cmd for _, _, cmd in procs]
        assert any("Apptainer runtime parent: vnc.sif" in c for c in cmds), cmds
        assert any("Xvnc" in c for c in cmds), cmds
        assert {u for _, u, _ in procs} == {"alice"}
        # The image is FUSE-mounted where users may use FUSE, else extracted (--unsquash).
        fuse_mounted = any(c.split()[0].rsplit("/", 1)[-1].startswith("squashfuse") for c in cmds)
        assert fuse_mounted == (fuse_mode == "usable"), cmds

        async with http.post(
            f"{d.url}/api/v1/sessions/{session_id}/connect", headers=d.headers("alice")
        ) as r:
            ticket = await r.json()
            assert r.status == 200, ticket
        ws = await connect_ws(http, d.url + ticket["ws_path"])
        stream = WsStream(ws)
        init = await handshake(stream)
        assert init.security_types == [1]  # the proxy did the VNC auth
        assert (init.width, init.height) == (1024, 768)
        covered, pixels = await full_framebuffer(stream, init)
        assert covered >= 1024 * 768
        deadline = time.monotonic() + 45
        while len(set(pixels)) <= 1 and time.monotonic() < deadline:
            await asyncio.sleep(1)
            covered, pixels = await full_framebuffer(stream, init, set_encodings=False)
        assert len(set(pixels)) > 1, "the containerised desktop never drew anything"
        await ws.close()
    finally:
        t_stop = time.monotonic()
        async with http.delete(
            f"{d.url}/api/v1/sessions/{session_id}", headers=d.headers("alice")
        ) as r:
            assert r.status in (202, 404, 409), await r.text()
    ended = await wait_state(http, d, session_id, {"ENDED", "FAILED"}, timeout=20)
    assert ended["state"] == "ENDED", ended
    deadline = time.monotonic() + 15
    while sid.processes("alice") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not sid.processes("alice"), sid.processes("alice")
    record_timing("container session DELETE to no process left", time.monotonic() - t_stop)
    reg = sid.run(
        "bash", "-c",
        'REDISCLI_AUTH=$(cat /etc/vizdesk-sid/redis_password) redis-cli --no-auth-warning '
        '-p "$1" exists "$2"', "_", sid.env["SID_REDIS_PORT"], f"{d.prefix}reg:{session_id}",
    ).stdout.strip()  # fmt: skip
    assert reg == "0"
    print(json.dumps({"ready": ready.get("ready_at"), "ended": ended.get("ended_at")}))


async def test_session_without_fuse_and_unsquash_never_fails_with_the_reason(
    http: aiohttp.ClientSession, sid_venv: Sid
) -> None:
    """Where the node may not extract images either, the session says why, not 'exit 3'."""
    sid = sid_venv
    sid.fuse("root-only")
    daemons = start_sid_daemon(sid, {"node": {"apptainer_unsquash": "never"}})
    d = next(daemons)
    try:
        async with http.get(f"{d.url}/api/v1/images", headers=d.headers("alice")) as r:
            vnc = next(i for i in (await r.json())["images"] if i["kind"] == "viz")
        async with http.post(
            f"{d.url}/api/v1/sessions", json={"image": vnc["id"]}, headers=d.headers("alice")
        ) as r:
            created = await r.json()
            assert r.status == 201, created
        failed = await wait_state(http, d, created["id"], {"READY", "FAILED", "ENDED"}, 90)
        assert failed["state"] == "FAILED", failed
        reason = failed["reason"]
        assert reason.startswith("desktop did not start: "), reason
        assert "/dev/fuse (crw------- root) is not accessible to this user" in reason, reason
        assert "node.apptainer_unsquash is never" in reason, reason
        assert "failed to open /dev/fuse: Permission denied" in reason, reason
        deadline = time.monotonic() + 15
        while sid.processes("alice") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not sid.processes("alice"), sid.processes("alice")
    finally:
        sid.fuse("host")
        next(daemons, None)
