"""Attacks on the running daemon (real Redis, real Slurm, real Xvnc); each must fail.

Module-level checks of the same protections (JWT, tickets, RFB, rate limiter) live in
tests/unit and tests/integration; these prove the daemon wires them in.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from tests.conftest import Daemon, start_daemon, stop_daemon, wait_for_state
from tests.helpers.rfb_client import WsStream, connect_ws, handshake

pytestmark = pytest.mark.e2e


async def create(
    http: aiohttp.ClientSession,
    daemon: Daemon,
    user: str = "alice",
    groups: list[str] | None = None,
    **body: Any,
) -> aiohttp.ClientResponse:
    return await http.post(
        f"{daemon.url}/api/v1/sessions", json=body, headers=daemon.headers(user, groups)
    )


@pytest_asyncio.fixture(scope="module")
async def ready_pair(http, daemon) -> AsyncIterator[tuple[str, str]]:
    """alice and bob each with a READY desktop."""
    ids = []
    for user in ("alice", "bob"):
        async with await create(http, daemon, user, geometry="800x600") as r:
            assert r.status == 201, await r.text()
            ids.append((await r.json())["id"])
    for sid, user in zip(ids, ("alice", "bob"), strict=True):
        await wait_for_state(http, daemon, sid, {"READY"}, user, timeout=20)
    yield ids[0], ids[1]
    for sid, user in zip(ids, ("alice", "bob"), strict=True):
        async with http.delete(f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers(user)):
            pass


async def ticket_for(http, daemon, sid, user="alice", origin=None) -> dict[str, Any]:
    headers = daemon.headers(user)
    if origin:
        headers["Origin"] = origin
    async with http.post(f"{daemon.url}/api/v1/sessions/{sid}/connect", headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def assert_ws_refused(http, url: str, origin: str | None = None, status: int = 403) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await connect_ws(http, url, origin)
    assert err.value.status == status


async def test_ticket_is_single_use(http, daemon, ready_pair) -> None:
    alice, _ = ready_pair
    t = await ticket_for(http, daemon, alice)
    ws = await connect_ws(http, daemon.url + t["ws_path"])
    assert (await handshake(WsStream(ws))).width == 800
    await ws.close()
    await assert_ws_refused(http, daemon.url + t["ws_path"])


async def test_ticket_for_another_session_is_refused(http, daemon, ready_pair) -> None:
    alice, bob = ready_pair
    t = await ticket_for(http, daemon, bob, "bob")
    await assert_ws_refused(http, f"{daemon.url}/api/v1/sessions/{alice}/vnc?ticket={t['ticket']}")
    # A presented ticket is consumed even when refused: it cannot be tried again.
    await assert_ws_refused(http, daemon.url + t["ws_path"])


async def test_expired_ticket_is_refused(http, daemon, ready_pair) -> None:
    alice, _ = ready_pair
    t = await ticket_for(http, daemon, alice)
    assert t["expires_in"] <= 30
    await asyncio.sleep(t["expires_in"] + 1)
    await assert_ws_refused(http, daemon.url + t["ws_path"])


async def test_wrong_origin_is_refused(http, daemon, ready_pair) -> None:
    alice, _ = ready_pair
    own = daemon.url
    t = await ticket_for(http, daemon, alice, origin=own)
    await assert_ws_refused(http, daemon.url + t["ws_path"], origin="https://evil.example")
    # A ticket bound to our origin is not usable from another allowed-looking origin either.
    t2 = await ticket_for(http, daemon, alice, origin=own)
    ws = await connect_ws(http, daemon.url + t2["ws_path"], origin=own)
    await ws.close()


async def test_bob_cannot_touch_alice(http, daemon, ready_pair) -> None:
    alice, _ = ready_pair
    bob = daemon.headers("bob")
    base = f"{daemon.url}/api/v1/sessions/{alice}"
    for method, url in (("GET", base), ("DELETE", base), ("POST", base + "/connect")):
        async with http.request(method, url, headers=bob) as r:
            assert r.status == 404
    await assert_ws_refused(http, base + "/vnc?ticket=" + "A" * 43)
    await wait_for_state(http, daemon, alice, {"READY"}, "alice", timeout=3)


async def test_forged_registration_through_acl_credentials(
    daemon, ready_pair, redis_admin, testbed
) -> None:
    """The job's ACL credentials can write only its own key."""
    alice, bob = ready_pair
    # Re-create the credentials as the daemon does, to get a password for the test.
    from vizdesk.contract.keys import Keys
    from vizdesk.sessions.registrations import RegistrationManager

    keys = Keys(daemon.prefix)
    regs = RegistrationManager(redis_admin, keys, 5901, 5999)
    probe_sid = "f" * 16
    user, password = await regs.create_credentials(probe_sid)
    client = aioredis.Redis.from_url(
        testbed.env["REDIS_URL"], username=user, password=password, decode_responses=True
    )
    try:
        assert await client.set(keys.registration(probe_sid), json.dumps({"x": 1}))
        for target in (
            keys.registration(alice),
            keys.registration(bob),
            keys.session(alice),
            "anything",
        ):
            with pytest.raises((NoPermissionError, ResponseError)) as err:
                await client.set(target, json.dumps({"session_id": alice, "port": 22}))
            assert "NOPERM" in str(err.value) or "permission" in str(err.value).lower()
        # its notice key (the daemon's warnings for the desktop): readable, never writable
        await redis_admin.set(keys.notice(probe_sid), json.dumps({"text": "idle"}))
        assert json.loads(await client.get(keys.notice(probe_sid)))["text"] == "idle"
        for target in (keys.notice(probe_sid), keys.notice(alice)):
            with pytest.raises((NoPermissionError, ResponseError)):
                await client.set(target, json.dumps({"text": "forged"}))
        with pytest.raises((NoPermissionError, ResponseError)):
            await client.get(keys.notice(alice))  # another desktop's notice
        with pytest.raises((NoPermissionError, ResponseError)):
            await client.execute_command("ACL", "LIST")
        with pytest.raises((NoPermissionError, ResponseError)):
            await client.keys("*")
    finally:
        await client.aclose()
        await regs.delete_credentials(probe_sid)
    assert user not in await redis_admin.execute_command("ACL", "USERS")
    assert not await redis_admin.exists(keys.notice(probe_sid))  # removed with the user


@pytest.mark.parametrize("port", [22, 6379])
async def test_registration_outside_port_range_is_rejected(http, daemon, redis_admin, port) -> None:
    async with await create(http, daemon, "alice", geometry="800x600") as r:
        sid = (await r.json())["id"]
    await wait_for_state(http, daemon, sid, {"READY"}, timeout=20)
    key = f"{daemon.prefix}reg:{sid}"
    reg = json.loads(await redis_admin.get(key))
    reg["port"] = port
    await redis_admin.set(key, json.dumps(reg), ex=30)  # as a hostile job would
    final = await wait_for_state(http, daemon, sid, {"FAILED", "ENDED"}, timeout=15)
    assert final["state"] == "FAILED" and "registration rejected" in final["reason"]
    assert str(port) in final["reason"]
    assert '"registration.rejected"' in daemon.log_text()


async def test_policy_violations_are_403_naming_the_limit(http, daemon) -> None:
    cases = [
        ({"gpus": 1}, "gpus"),
        ({"cpus": 5}, "cpus"),
        ({"memory_gb": 9}, "memory_gb"),
        ({"time_limit_minutes": 241}, "time_limit_minutes"),
    ]
    for body, field in cases:
        async with await create(http, daemon, "alice", **body) as r:
            assert r.status == 403, (body, await r.text())
            err = (await r.json())["error"]
            assert err["code"] == "policy_violation" and err["field"] == field
    # gpu-users may ask for up to 2 GPUs (the union of their groups' policies), not 3
    async with await create(http, daemon, "alice", ["gpu-users"], gpus=3) as r:
        assert r.status == 403
        assert (await r.json())["error"]["field"] == "gpus"
    # a GPU request the policy allows reaches Slurm, which has no GPU here: a clear 400
    async with await create(http, daemon, "alice", ["gpu-users"], gpus=1) as r:
        assert r.status == 400, await r.text()
        err = (await r.json())["error"]
        assert err["code"] == "slurm_rejected" and "gres" in err["message"].lower()


async def test_concurrent_session_limit(http, daemon) -> None:
    made = []
    try:
        for _ in range(3):
            async with await create(http, daemon, "bob", geometry="640x480") as r:
                if r.status == 201:
                    made.append((await r.json())["id"])
        async with http.get(
            f"{daemon.url}/api/v1/sessions?state=READY", headers=daemon.headers("bob")
        ):
            pass
        async with await create(http, daemon, "bob") as r:
            assert r.status == 403
            err = (await r.json())["error"]
            assert err["code"] == "policy_violation" and "sessions" in err["message"]
    finally:
        for sid in made:
            async with http.delete(
                f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers("bob")
            ):
                pass
        for sid in made:
            await wait_for_state(http, daemon, sid, {"ENDED", "FAILED"}, "bob", timeout=15)


@pytest.fixture(scope="module")
def limited_daemon(testbed):
    d = start_daemon(
        testbed, "ratelimit", {"limits": {"create_per_window": 2, "window_seconds": 60}}
    )
    yield d
    stop_daemon(d)


async def test_rate_limit_gives_429_with_retry_after(http, limited_daemon) -> None:
    d = limited_daemon
    made = []
    for _ in range(2):
        async with await create(http, d, "alice", geometry="640x480") as r:
            assert r.status == 201
            made.append((await r.json())["id"])
    async with await create(http, d, "alice", geometry="640x480") as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert (await r.json())["error"]["code"] == "rate_limited"
    for sid in made:
        async with http.delete(f"{d.url}/api/v1/sessions/{sid}", headers=d.headers("alice")):
            pass


async def test_jwt_attacks_through_http(http, daemon) -> None:
    secret = daemon.cfg.auth.hs256_secret()
    now = int(time.time())
    good = {"sub": "alice", "exp": now + 60, "iat": now}
    if daemon.cfg.auth.issuer:
        good["iss"] = daemon.cfg.auth.issuer
    tokens = {
        "none": jwt.encode(good, None, algorithm="none"),
        "expired": jwt.encode({**good, "exp": now - 3600}, secret, algorithm="HS256"),
        "no_exp": jwt.encode(
            {k: v for k, v in good.items() if k != "exp"}, secret, algorithm="HS256"
        ),
        "wrong_key": jwt.encode(good, "not-the-secret-but-long-enough-32b", algorithm="HS256"),
        "root": jwt.encode({**good, "sub": "root"}, secret, algorithm="HS256"),
        "nobody_here": jwt.encode({**good, "sub": "mallory"}, secret, algorithm="HS256"),
        "daemon": jwt.encode({**good, "sub": "slurm"}, secret, algorithm="HS256"),
    }
    expected = {
        "none": 401,
        "expired": 401,
        "no_exp": 401,
        "wrong_key": 401,
        "root": 403,
        "nobody_here": 403,
        "daemon": 403,
    }
    for name, token in tokens.items():
        async with http.get(
            f"{daemon.url}/api/v1/sessions", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == expected[name], (name, await r.text())
            assert "error" in await r.json()


async def test_logout_revokes_within_a_second(http, daemon) -> None:
    token = daemon.token("alice")
    hdr = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{daemon.url}/api/v1/me", headers=hdr) as r:
        assert r.status == 200
    async with http.post(f"{daemon.url}/api/v1/auth/logout", headers=hdr) as r:
        assert r.status == 200
    t0 = time.monotonic()
    async with http.get(f"{daemon.url}/api/v1/me", headers=hdr) as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "token_revoked"
    assert time.monotonic() - t0 < 1.0  # informative: revocation is the very next request


async def test_cli_revoke(http, daemon) -> None:
    token = daemon.token("bob")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vizdesk",
            "--config",
            str(daemon.config_path),
            "revoke",
            "--jti",
            jti,
        ],
        check=True,
        capture_output=True,
    )
    async with http.get(
        f"{daemon.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status == 401


async def test_no_secret_in_responses_or_logs(http, daemon, redis_admin) -> None:
    """A full session life: the VNC password, tickets and tokens appear nowhere."""
    token = daemon.token("alice")
    hdr = {"Authorization": f"Bearer {token}"}
    bodies: list[str] = []
    async with http.post(
        f"{daemon.url}/api/v1/sessions", json={"geometry": "800x600"}, headers=hdr
    ) as r:
        bodies.append(await r.text())
        sid = json.loads(bodies[-1])["id"]
    await wait_for_state(http, daemon, sid, {"READY"}, timeout=20)
    password = json.loads(await redis_admin.get(f"{daemon.prefix}reg:{sid}"))["password"]
    async with http.post(f"{daemon.url}/api/v1/sessions/{sid}/connect", headers=hdr) as r:
        connect_body = await r.text()
    ticket = json.loads(connect_body)["ticket"]
    ws = await connect_ws(http, daemon.url + json.loads(connect_body)["ws_path"])
    await handshake(WsStream(ws))
    await ws.close()
    for path in (f"/api/v1/sessions/{sid}", "/api/v1/sessions", "/api/v1/me"):
        async with http.get(daemon.url + path, headers=hdr) as r:
            bodies.append(await r.text())
    async with http.delete(f"{daemon.url}/api/v1/sessions/{sid}", headers=hdr) as r:
        bodies.append(await r.text())
    await wait_for_state(http, daemon, sid, {"ENDED"}, timeout=15)
    async with http.get(f"{daemon.url}/api/v1/sessions/{sid}", headers=hdr) as r:
        bodies.append(await r.text())
    for body in bodies:
        assert password not in body
        assert token not in body
    assert password not in connect_body
    log = daemon.log_text()
    assert sid in log  # the log did record the session's life
    for secret in (password, ticket, token):
        assert secret not in log
    job_log = "".join(
        p.read_text(errors="replace")
        for p in (daemon.config_path.parent.parent / "jobs").rglob(f"*{sid}*")
    )
    assert job_log, "the desktop job's output file was not found"
    assert password not in job_log
