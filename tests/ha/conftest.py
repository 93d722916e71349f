"""The HA tier: three daemon replicas behind real HAProxy, Redis x3 under Sentinel x3, the
single-node bed's real Slurm and Xvnc (testbed/ha.sh). Collected only when
VIZDESK_HA_TIER=1 (testbed/ha-tier.sh sets it after `ha.sh up`): its tests kill daemons
and Redis primaries, which the rest of the suite must not see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import REPO, read_env
from tests.helpers.rfb_client import WsStream, connect_ws, handshake

HA_DIR = Path(os.environ.get("VIZDESK_HA_DIR", "/var/lib/vizdesk-ha"))

if os.environ.get("VIZDESK_HA_TIER") != "1":
    collect_ignore_glob = ["test_*.py"]


@dataclass
class HaBed:
    env: dict[str, str]
    cfg: Any = field(repr=False)

    @property
    def url(self) -> str:
        """HAProxy's frontend: what browsers use."""
        return self.env["HA_URL"]

    def replica_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.env['HA_REPLICA_PORTS'].split()[i - 1]}"

    def token(self, user: str, ttl: int = 3600) -> str:
        from vizdesk.auth.tokens import mint_token

        return mint_token(self.cfg.auth, user, [], ttl)

    def headers(self, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    @property
    def password(self) -> str:
        return Path(self.env["REDIS_PASSWORD_FILE"]).read_text().strip()

    def pid(self, name: str) -> int | None:
        """Pid of one of ha.sh's processes (replica-N, redis-N) from its pid file, if alive."""
        try:
            pid = int((HA_DIR / "run" / f"{name}.pid").read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def ha(self, *args: str, timeout: float = 120) -> str:
        res = subprocess.run(
            [str(REPO / "testbed" / "ha.sh"), *args],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert res.returncode == 0, f"ha.sh {' '.join(args)}: {res.stdout}{res.stderr}"
        return res.stdout

    def kill9(self, name: str) -> None:
        pid = self.pid(name)
        assert pid is not None, f"{name} is not running"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.02)

    def squeue_calls(self, since: float = 0.0) -> list[tuple[float, str]]:
        """(epoch, replicaN) of every squeue a replica ran, oldest first."""
        out = []
        path = Path(self.env["HA_SQUEUE_LOG"])
        if path.exists():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2 and float(parts[0]) >= since:
                    out.append((float(parts[0]), parts[1]))
        return out

    def sentinels(self) -> list[tuple[str, int]]:
        return [
            (h, int(p)) for h, p in (s.rsplit(":", 1) for s in self.env["HA_SENTINELS"].split())
        ]

    async def primary_port(self) -> int:
        host, port = self.sentinels()[0]
        s = aioredis.Redis(host=host, port=port, decode_responses=True)
        try:
            addr = await s.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.env["HA_MASTER"]
            )
        finally:
            await s.aclose()
        return int(addr[1])

    def redis_index(self, port: int) -> int:
        return self.env["HA_REDIS_PORTS"].split().index(str(port)) + 1

    def redis_at(self, port: int) -> aioredis.Redis:
        return aioredis.Redis(port=port, password=self.password, decode_responses=True)

    def primary(self) -> aioredis.Redis:
        """A client that follows the primary through Sentinel (as the daemon does)."""
        from vizdesk.contract.redisconn import connect

        return connect(
            "redis://127.0.0.1/0", sentinels=self.sentinels(), master=self.env["HA_MASTER"],
            password=self.password, decode_responses=True, socket_timeout=3,
        )  # fmt: skip


@pytest.fixture(scope="session")
def ha() -> HaBed:
    env_file = HA_DIR / "env"
    if not env_file.is_file():
        pytest.fail(f"HA bed not up ({env_file} missing): testbed/ha-tier.sh brings it up")
    from vizdesk.config import load_config

    return HaBed(read_env(env_file), load_config(str(HA_DIR / "replica-1.yaml")))


# --- API helpers --------------------------------------------------------------------------


async def api(
    http: aiohttp.ClientSession, ha: HaBed, method: str, path: str, user: str = "alice",
    base: str | None = None, **kw: Any,
) -> tuple[int, Any]:  # fmt: skip
    async with http.request(method, (base or ha.url) + path, headers=ha.headers(user), **kw) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text) if text else None
        except ValueError:
            return r.status, text


async def create_desktop(http: aiohttp.ClientSession, ha: HaBed, user: str = "alice") -> str:
    status, body = await api(
        http, ha, "POST", "/api/v1/sessions", user, json={"geometry": "800x600"}
    )
    assert status == 201, body
    return str(body["id"])


async def wait_ready(
    http: aiohttp.ClientSession, ha: HaBed, sid: str, user: str = "alice", timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            status, body = await api(http, ha, "GET", f"/api/v1/sessions/{sid}", user)
            if status == 200 and body["state"] == "READY":
                return dict(body)
            assert status != 200 or body["state"] not in ("FAILED", "ENDED"), body
        await asyncio.sleep(0.3)
    raise AssertionError(f"session {sid} not READY after {timeout}s: {body}")


async def delete_all(
    http: aiohttp.ClientSession, ha: HaBed, sids: list[str], user: str = "alice"
) -> None:
    for sid in sids:
        with contextlib.suppress(Exception):
            await api(http, ha, "DELETE", f"/api/v1/sessions/{sid}", user)


async def open_vnc(
    http: aiohttp.ClientSession, ha: HaBed, sid: str, user: str = "alice", base: str | None = None,
    ws_base: str | None = None,
) -> aiohttp.ClientWebSocketResponse:  # fmt: skip
    """A fresh ticket (through ``base``) and the desktop websocket (through ``ws_base``),
    RFB handshake done (the daemon does the VNC authentication itself)."""
    status, ticket = await api(http, ha, "POST", f"/api/v1/sessions/{sid}/connect", user, base=base)
    assert status == 200, ticket
    ws = await connect_ws(http, (ws_base or base or ha.url) + ticket["ws_path"])
    await handshake(WsStream(ws))
    return ws


def update_request(incremental: bool = True) -> bytes:
    return struct.pack("!BBHHHH", 3, 1 if incremental else 0, 0, 0, 64, 64)


def key_event(down: bool, keysym: int = 0x61) -> bytes:
    return struct.pack("!BBxxI", 4, 1 if down else 0, keysym)


async def metric(http: aiohttp.ClientSession, ha: HaBed, i: int, name: str) -> float:
    """One sample of a replica's /metrics (its own port: HAProxy refuses /metrics)."""
    async with http.get(ha.replica_url(i) + "/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if m:
            total += float(m.group(2))
    return total


async def readyz(
    http: aiohttp.ClientSession, ha: HaBed, i: int, timeout: float = 3.0
) -> dict[str, Any] | None:
    try:
        async with http.get(
            ha.replica_url(i) + "/readyz", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            return dict(await r.json())
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


async def leader(http: aiohttp.ClientSession, ha: HaBed) -> int | None:
    """The replica (1-3) that says it holds the lease now (asked at once: a paused replica
    must not delay the answer of the others)."""
    bodies = await asyncio.gather(*(readyz(http, ha, i, timeout=0.5) for i in (1, 2, 3)))
    for i, body in enumerate(bodies, 1):
        if body and body.get("is_leader"):
            return i
    return None


def single_writer(calls: list[tuple[float, str]]) -> bool:
    """Slurm was asked by one replica at a time: the run of names never comes back to a
    replica after another one took over (A A B B, never A B A)."""
    seen: list[str] = []
    for _, name in calls:
        if not seen or seen[-1] != name:
            if name in seen:
                return False
            seen.append(name)
    return True


async def carrier(http: aiohttp.ClientSession, ha: HaBed, name: str) -> list[int]:
    """The replicas where the gauge ``name`` is above 0 (who carries a websocket/stream)."""
    return [i for i in (1, 2, 3) if await metric(http, ha, i, name) > 0]
