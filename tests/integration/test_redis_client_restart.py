"""The daemon's Redis client (``api.app.redis_client``: a blocking pool) against a private
real redis-server that is restarted under it, as the test bed's Redis is in
tests/zz_disruptive/test_outages.py and the Ansible-installed one in tests/ops.

A restart leaves every pooled connection dead. Without retries, redis-py fails the first
command on each of them ("Connection closed by server."), and the API answers each such
failure with 503 ``storage_unavailable`` although Redis is back. Needs only
``redis-server`` (not the test bed).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from vizdesk.api import events
from vizdesk.api.app import create_app, redis_client
from vizdesk.api.context import CTX
from vizdesk.auth.types import Identity
from vizdesk.config import Config
from vizdesk.slurm.base import SlurmBackend

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")

PASSWORD = "restart-test-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test only (own port, own directory, password), restartable
    on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "redis-server exited"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("redis-server did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    srv = PrivateRedis(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def config(srv: PrivateRedis, **redis: Any) -> Config:
    cfg = Config()
    cfg.redis.url = srv.url
    for k, v in redis.items():
        setattr(cfg.redis, k, v)
    return cfg


@pytest_asyncio.fixture
async def client(
    server: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[aioredis.Redis]:
    monkeypatch.setenv("VIZDESK_REDIS_PASSWORD_DAEMON", PASSWORD)
    r = redis_client(config(server, max_connections=40))
    try:
        yield r
    finally:
        await r.aclose()


async def fill_pool(r: aioredis.Redis, n: int) -> None:
    """``n`` connections open at once (then idle in the pool)."""
    await asyncio.gather(*(r.set(f"k{i}", i) for i in range(n)))
    assert len(r.connection_pool._available_connections) >= n  # type: ignore[attr-defined]


async def test_no_command_fails_after_a_restart(
    client: aioredis.Redis, server: PrivateRedis
) -> None:
    await fill_pool(client, 30)
    server.restart()  # every pooled connection is dead now
    results = await asyncio.gather(
        *(client.set(f"k{i}", "again") for i in range(30)),
        *(client.get(f"k{i}") for i in range(30)),
        return_exceptions=True,
    )
    assert [r for r in results if isinstance(r, BaseException)] == []
    # transactions and scripts too (a MULTI/EXEC pipeline, a Lua script)
    server.restart()
    await fill_pool(client, 10)
    server.restart()
    async with client.pipeline(transaction=True) as pipe:
        pipe.set("a", "1")
        pipe.zadd("z", {"a": 1.0})
        assert await pipe.execute() == [True, 1]
    assert await client.eval("return redis.call('GET', KEYS[1])", 1, "a") == "1"


async def test_commands_wait_for_a_busy_pool_instead_of_failing(
    server: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIZDESK_REDIS_PASSWORD_DAEMON", PASSWORD)
    r = redis_client(config(server, max_connections=4, pool_timeout_seconds=10.0))
    try:
        got = await asyncio.gather(*(r.incr("n") for _ in range(200)))
        assert sorted(got) == list(range(1, 201))
        pool = r.connection_pool
        assert len(pool._available_connections) <= 4  # type: ignore[attr-defined]
    finally:
        await r.aclose()


async def test_down_then_back_at_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client made before Redis listens (a daemon that starts first) fails quickly while
    Redis is down, and works as soon as it is up."""
    srv = PrivateRedis(tmp_path)
    monkeypatch.setenv("VIZDESK_REDIS_PASSWORD_DAEMON", PASSWORD)
    r = redis_client(config(srv))
    try:
        started = time.monotonic()
        with pytest.raises(aioredis.ConnectionError):
            await r.ping()
        assert time.monotonic() - started < 5
        srv.start()
        assert await r.ping()
    finally:
        await r.aclose()
        srv.stop()


async def test_event_hub_follows_a_restart_without_holding_connections(
    client: aioredis.Redis, server: PrivateRedis
) -> None:
    hub = events.EventHub(client, "vztest:events")
    q = hub.subscribe()
    hub.start()
    pool: Any = client.connection_pool
    try:

        async def delivered(n: int) -> None:
            """Publish event ``n`` until the hub hands it on (it may be resubscribing)."""
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                await client.publish("vztest:events", f'{{"n": {n}}}')
                try:
                    while True:
                        event = await asyncio.wait_for(q.get(), 0.3)
                        if event == {"n": n}:
                            return
                except TimeoutError:
                    continue
            raise AssertionError(f"event {n} not delivered")

        await delivered(0)
        for n in range(1, 4):
            server.restart()
            await delivered(n)
        # One subscription's connection in use at most, whatever the restarts did.
        assert len(pool._in_use_connections) <= 1
    finally:
        await hub.stop()
    assert len(pool._in_use_connections) == 0


class NoSlurm(SlurmBackend):
    name = "none"

    async def submit(self, req):  # type: ignore[no-untyped-def]
        raise AssertionError

    async def info_many(self, job_ids):  # type: ignore[no-untyped-def]
        return {}

    async def cancel(self, job_id, user):  # type: ignore[no-untyped-def]
        return None


async def test_the_api_answers_after_a_restart(
    server: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole app (its own client from the config): lists after a Redis restart are
    200, not 503 storage_unavailable."""
    monkeypatch.setenv("VIZDESK_JWT_SECRET", "x" * 40)
    monkeypatch.setenv("VIZDESK_REDIS_PASSWORD_DAEMON", PASSWORD)
    app = create_app(config(server), backend=NoSlurm(), run_tracker=False)

    async def authenticate(token: str) -> Identity:
        return Identity(user="alice", uid=2000, gid=2000, is_admin=False)

    monkeypatch.setattr(app[CTX].authenticator, "authenticate", authenticate)
    headers = {"Authorization": "Bearer t"}
    paths = ["/api/v1/sessions", "/api/v1/jobs", "/api/v1/jobs?limit=5", "/readyz"]
    async with TestClient(TestServer(app)) as http:

        async def burst() -> list[tuple[str, int]]:
            async def one(path: str) -> tuple[str, int]:
                async with http.get(path, headers=headers) as resp:
                    await resp.read()
                    return path, resp.status

            return list(await asyncio.gather(*(one(p) for _ in range(10) for p in paths)))

        assert {s for _, s in await burst()} == {200}
        for _ in range(2):
            server.restart()
            got = await burst()
            assert [x for x in got if x[1] != 200] == []
