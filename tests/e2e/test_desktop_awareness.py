"""Idle reclaim from the input the proxy sees, queue and walltime awareness, relaunch and
extend, each with a daemon of its own (seconds-scale settings; real Slurm and Xvnc)."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import (
    TEST_POLICY,
    Daemon,
    deep_merge,
    start_daemon,
    stop_daemon,
    wait_for_state,
)
from tests.helpers.rfb_client import WsStream, connect_ws, handshake

pytestmark = pytest.mark.e2e


async def api(
    http: aiohttp.ClientSession, d: Daemon, method: str, path: str, body: Any = None,
    user: str = "alice",
) -> tuple[int, Any]:  # fmt: skip
    async with http.request(method, d.url + path, json=body, headers=d.headers(user)) as r:
        return r.status, await r.json()


async def create_ready(http: aiohttp.ClientSession, d: Daemon, **body: Any) -> dict[str, Any]:
    status, s = await api(http, d, "POST", "/api/v1/sessions", {"geometry": "800x600", **body})
    assert status == 201, s
    ready = await wait_for_state(http, d, s["id"], {"READY", "FAILED", "ENDED"}, timeout=60)
    assert ready["state"] == "READY", ready
    return ready


class Events:
    """The owner's SSE stream, collected in the background."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    async def run(self, resp: aiohttp.ClientResponse) -> None:
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                self.items.append((event, json.loads(line[6:])))

    def of(self, kind: str, sid: str) -> list[Any]:
        return [d for e, d in self.items if e == kind and d.get("session_id") == sid]

    async def wait(self, kind: str, sid: str, count: int, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.of(kind, sid)) < count:
            assert time.monotonic() < deadline, f"{count} {kind} for {sid}: {self.items[-5:]}"
            await asyncio.sleep(0.2)
        return self.of(kind, sid)


@pytest_asyncio.fixture
async def events_of(http: aiohttp.ClientSession) -> AsyncIterator[Any]:
    tasks: list[asyncio.Task[None]] = []
    responses: list[aiohttp.ClientResponse] = []

    async def open_stream(d: Daemon) -> Events:
        ev = Events()
        resp = await http.get(f"{d.url}/api/v1/events", headers=d.headers("alice"))
        responses.append(resp)
        tasks.append(asyncio.create_task(ev.run(resp)))
        return ev

    yield open_stream
    for t in tasks:
        t.cancel()
    for r in responses:
        r.close()


@pytest.fixture
def idle_daemon(testbed: Any) -> Iterator[Daemon]:
    d = start_daemon(
        testbed,
        "idle",
        {"idle": {"partitions": {"*": {"warn_minutes": 0.25, "end_minutes": 0.5}},
                  "write_interval_seconds": 1.0}},
    )  # fmt: skip
    yield d
    stop_daemon(d)


async def test_idle_warn_keep_reclaim_and_input_keeps_it(http, idle_daemon, events_of) -> None:
    d = idle_daemon
    ev = await events_of(d)
    idle = await create_ready(http, d)
    busy = await create_ready(http, d)
    t_ready = time.monotonic()

    # busy: the owner's connection sends a pointer event every 10 s (a third of end_minutes)
    async with http.post(
        f"{d.url}/api/v1/sessions/{busy['id']}/connect", headers=d.headers("alice")
    ) as r:
        ticket = await r.json()
    ws = await connect_ws(http, d.url + ticket["ws_path"])
    stream = WsStream(ws)
    await handshake(stream)

    async def wiggle() -> None:
        x = 10
        while True:
            x = 30 - x
            await stream.write(struct.pack(">BBHH", 5, 0, x, x))
            await asyncio.sleep(10)

    wiggler = asyncio.create_task(wiggle())
    try:
        (warning,) = await ev.wait("idle_warning", idle["id"], 1, timeout=30)
        took = time.monotonic() - t_ready
        assert 10 <= took <= 25 and warning["idle_seconds"] >= 15, (took, warning)
        assert warning["ends_in_seconds"] is not None
        status, kept = await api(http, d, "POST", f"/api/v1/sessions/{idle['id']}/keep")
        assert status == 200 and kept["kept_at"]
        t_keep = time.monotonic()
        # keep reset the clock: a second warning ~15 s after the keep, and the end ~30 s after
        await ev.wait("idle_warning", idle["id"], 2, timeout=30)
        assert time.monotonic() - t_keep >= 12
        ended = await wait_for_state(http, d, idle["id"], {"ENDED", "FAILED"}, timeout=40)
        assert time.monotonic() - t_keep >= 27
        assert ended["state"] == "ENDED" and ended["reason"] == "idle for 0.5 min", ended
        # the busy desktop, with input every 10 s, lived through it all untouched
        status, b = await api(http, d, "GET", f"/api/v1/sessions/{busy['id']}")
        assert b["state"] == "READY" and not ev.of("idle_warning", busy["id"]), b
        assert time.monotonic() - t_ready > 35  # longer than end_minutes (30 s)
        async with http.get(f"{d.url}/metrics") as r:
            text = await r.text()
        assert 'vizdesk_sessions_reclaimed_total{reason="idle"} 1.0' in text
    finally:
        wiggler.cancel()
        await ws.close()
        for s in (idle, busy):
            await api(http, d, "DELETE", f"/api/v1/sessions/{s['id']}")


@pytest.fixture
def pending_daemon(testbed: Any) -> Iterator[Daemon]:
    # Every desktop of this daemon asks to begin in an hour: PENDING (BeginTime) with an
    # estimate, without filling the shared node for the other tests.
    d = start_daemon(testbed, "pending", {"slurm": {"extra_sbatch_args": ["--begin=now+3600"]}})
    yield d
    stop_daemon(d)


async def test_pending_shows_estimate_and_reason_cancel_works(http, pending_daemon) -> None:
    d = pending_daemon
    status, est = await api(
        http, d, "POST", "/api/v1/sessions?dry_run=true", {"cpus": 2, "time_limit_minutes": 30}
    )
    assert status == 200 and est["dry_run"] is True, est
    assert est["estimate"] and est["estimate"]["start_time"], est
    status, listed = await api(http, d, "GET", "/api/v1/sessions")
    assert listed["sessions"] == []  # the dry run stored nothing

    status, s = await api(http, d, "POST", "/api/v1/sessions", {"geometry": "800x600"})
    assert status == 201
    deadline = time.monotonic() + 15
    while True:
        status, s = await api(http, d, "GET", f"/api/v1/sessions/{s['id']}")
        if s.get("queue_reason") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert s["state"] == "PENDING" and s["reason"] == "queued: BeginTime", s
    assert s["queue_reason"] == "its requested start time has not come yet"
    assert s["expected_start_at"] and s["expected_start_at"] > s["created_at"]
    status, _stopped = await api(http, d, "DELETE", f"/api/v1/sessions/{s['id']}")
    assert status == 202
    ended = await wait_for_state(http, d, s["id"], {"ENDED", "FAILED"}, timeout=15)
    assert ended["state"] == "ENDED" and ended["reason"] == "stopped by user"


@pytest.fixture
def walltime_daemon(testbed: Any) -> Iterator[Daemon]:
    policy = deep_merge(TEST_POLICY, {"groups": {"*": {"max_extension_minutes": 5}}})
    d = start_daemon(
        testbed,
        "walltime",
        {"sessions": {"walltime_warn_minutes": [0.75, 0.25]}, "policy": policy,
         "slurm": {"allow_extend": True}},
    )  # fmt: skip
    yield d
    stop_daemon(d)


def squeue_time_limit(job_id: str) -> int:
    out = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%l"], capture_output=True, text=True, check=True
    ).stdout.strip()
    h, m, s = ([0, 0, *map(int, out.split(":"))])[-3:]
    return h * 60 + m + (1 if s else 0)


async def test_walltime_warnings_relaunch_and_extend(http, walltime_daemon, events_of) -> None:
    d = walltime_daemon
    ev = await events_of(d)
    short = await create_ready(http, d, time_limit_minutes=1)
    other = await create_ready(http, d, time_limit_minutes=1)
    assert short["ends_at"], short
    try:
        # extend the other one by 2 minutes, for real (scontrol as the daemon, an operator)
        status, ext = await api(
            http, d, "POST", f"/api/v1/sessions/{other['id']}/extend", {"minutes": 2}
        )
        assert status == 200, ext
        assert ext["time_limit_minutes"] == 3 and ext["extended_minutes"] == 2
        assert ext["ends_at"] > other["ends_at"]
        assert squeue_time_limit(other["job_id"]) == 3
        status, err = await api(
            http, d, "POST", f"/api/v1/sessions/{other['id']}/extend", {"minutes": 4}
        )
        assert status == 403 and err["error"]["field"] == "minutes"  # 2 + 4 > 5

        warnings = await ev.wait("walltime_warning", short["id"], 2, timeout=75)
        assert [w["point_minutes"] for w in warnings] == [0.75, 0.25]
        assert 30 <= warnings[0]["remaining_seconds"] <= 46
        assert 0 <= warnings[1]["remaining_seconds"] <= 16
        ended = await wait_for_state(http, d, short["id"], {"ENDED", "FAILED"}, timeout=60)
        assert ended["state"] == "ENDED" and ended["reason"] == "time limit reached", ended
        assert not ev.of("walltime_warning", other["id"])  # its end moved 2 minutes away

        status, again = await api(http, d, "POST", f"/api/v1/sessions/{short['id']}/relaunch")
        assert status == 201, again
        assert again["id"] != short["id"]
        same = ("partition", "cpus", "memory_gb", "gpus", "time_limit_minutes", "geometry", "image")
        assert {k: again[k] for k in same} == {k: short[k] for k in same}
        relaunched = await wait_for_state(http, d, again["id"], {"READY", "FAILED"}, timeout=60)
        assert relaunched["state"] == "READY"
        await api(http, d, "DELETE", f"/api/v1/sessions/{again['id']}")
    finally:
        for s in (short, other):
            await api(http, d, "DELETE", f"/api/v1/sessions/{s['id']}")
